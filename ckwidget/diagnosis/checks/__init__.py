"""The checks, one module per cause, and the order they run in.

Each module exposes ``check(ctx) -> list[Finding]``: it reads the Context (the file, the
chosen entry, the model, the key alignment) and returns findings, most often with the
fixes that repair them. A check that finds something a later check or the summary needs
writes it to a typed field of the Context (``ctx.needs_reader``, ``ctx.codes``...), never
anywhere else.

How to add a cause:

1. Add its finding kind to ``ckwidget/kinds.py``: one line, its group and its meaning.
2. Write ``diagnosis/checks/<cause>.py`` with ``check(ctx)``; build the fixes it offers
   from ``ckwidget.fixes.kinds`` (or add a fix kind: see that package's guide).
3. Put ``check`` in the stage below where it belongs, and give the kind a row in
   docs/reference.md (the reference test checks every kind has one).
"""

from __future__ import annotations

from ...checkpoint import Finding
from ..context import Context
from ..planner import choose_fixes
from . import (
    adapters,
    architecture,
    corruption,
    entry,
    format,
    hardware,
    integrity,
    preprocessing,
    training,
    version,
)

# About the file itself; every diagnosis runs them (they fill ctx.blockers).
FILE_CHECKS = (entry.check, format.check, corruption.check, integrity.check, version.check,
               hardware.check)
# About the model against the entry's tensors: run when the entry holds tensors, or
# nothing about the file stands in the way.
MODEL_CHECKS = (architecture.check, adapters.check)
# About training state beside the weights (an optimizer's state).
TRAINING_CHECKS = (training.check,)
# After the plan is chosen (they read ctx.plan_fixes).
AFTER_PLAN_CHECKS = (preprocessing.check,)


def run(ctx: Context) -> list[Finding]:
    """Every check in its stage's order; sets ``ctx.plan_fixes`` between the stages
    (none for a file that names code to run: nothing should read it)."""
    findings: list[Finding] = []
    for check in FILE_CHECKS:
        findings += check(ctx)
    if ctx.entry_infos or not ctx.blockers:
        for check in MODEL_CHECKS:
            findings += check(ctx)
    for check in TRAINING_CHECKS:
        findings += check(ctx)
    ctx.plan_fixes = [] if "malicious" in ctx.blockers else choose_fixes(findings)
    for check in AFTER_PLAN_CHECKS:
        findings += check(ctx)
    return findings
