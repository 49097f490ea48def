"""Choose the plan: one fix per kind, merged from the findings, in the order they apply.

Each finding proposes the fixes that repair it; those also named in its
``details["alternatives"]`` are offered (as the widget's toggles) but not planned. The
plan merges per-key fixes of one kind into a single fix, so it holds the fewest fixes
that load the most model tensors; partial loading (drop-keys) appears only where no
other fix serves a key.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..checkpoint import Finding
from ..fixes.kinds import Fix


def choose_fixes(findings: Iterable[Finding]) -> list[Fix]:
    singles: list[Fix] = []
    mergeable: dict[type[Fix], list[Fix]] = {}
    for finding in findings:
        # a finding's alternatives are offered (the widget's toggles), not planned
        alternatives = finding.details.get("alternatives") or ()
        for fix in finding.fixes:
            if fix in alternatives:
                continue
            if fix.merges:
                mergeable.setdefault(type(fix), []).append(fix)
            elif fix not in singles and not any(type(s) is type(fix) and fix.load_time
                                                for s in singles):
                singles.append(fix)
    out = list(singles)
    for kind in sorted(mergeable, key=lambda k: k.rank):
        out += kind.merged(mergeable[kind])
    return out
