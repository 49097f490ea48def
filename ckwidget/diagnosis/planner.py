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
from ..fixes.kinds import CastDtype, DropKeys, Fix, ResizeCopy, Transpose


def choose_fixes(findings: Iterable[Finding]) -> list[Fix]:
    singles: list[Fix] = []
    drop_keys: dict[str, None] = {}
    drop_reasons: dict[str, None] = {}
    transpose: dict[str, None] = {}
    resize: dict[str, None] = {}
    casts: dict[str, dict[str, None]] = {}
    for finding in findings:
        # a finding's alternatives are offered (the widget's toggles), not planned
        alternatives = finding.details.get("alternatives") or ()
        for fix in finding.fixes:
            if fix in alternatives:
                continue
            if isinstance(fix, DropKeys):
                drop_keys.update(dict.fromkeys(fix.keys))
                if fix.reason:
                    drop_reasons[fix.reason] = None
            elif isinstance(fix, Transpose):
                transpose.update(dict.fromkeys(fix.keys))
            elif isinstance(fix, ResizeCopy):
                resize.update(dict.fromkeys(fix.keys))
            elif isinstance(fix, CastDtype):
                casts.setdefault(fix.dtype, {}).update(dict.fromkeys(fix.keys))
            elif fix not in singles and not any(type(s) is type(fix) and fix.load_time
                                                for s in singles):
                singles.append(fix)
    out = list(singles)
    if drop_keys or drop_reasons:
        out.append(DropKeys(tuple(drop_keys), "; ".join(drop_reasons)))
    if transpose:
        out.append(Transpose(tuple(transpose)))
    for dtype, keys in casts.items():
        out.append(CastDtype(dtype, tuple(keys)))
    if resize:
        out.append(ResizeCopy(tuple(resize)))
    return out
