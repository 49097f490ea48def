"""Corruption: damaged or wrong files (the reader's findings), and non-finite weights."""

from __future__ import annotations

from ...checkpoint import Finding
from ...formatting import count_noun, summarise_keys
from ...kinds import DAMAGED_FILE_KINDS
from ..context import Context
from ..sampling import sample_values


def check(ctx: Context) -> list[Finding]:
    out = []
    for f in ctx.file_findings(*DAMAGED_FILE_KINDS):
        if f.severity == "error":
            ctx.blockers.append(f.kind)
        out.append(f)
    if not ctx.entry_infos:
        return out
    sample = sample_values(ctx.ckpt, ctx.entry, infos=ctx.entry_infos, members=lambda: ctx.members)
    if sample.nonfinite:
        keys = list(sample.nonfinite)
        nan = sum(n for n, _ in sample.nonfinite.values())
        inf = sum(i for _, i in sample.nonfinite.values())
        coverage = ("all values examined" if sample.examined >= sample.total
                    else f"{sample.examined:,} of {sample.total:,} values sampled")
        out.append(Finding(
            "nonfinite", "error",
            f"{count_noun(len(keys), 'tensor')} hold{'s' if len(keys) == 1 else ''} "
            f"non-finite values ({nan:,} NaN, {inf:,} inf; "
            f"{coverage}): {summarise_keys(keys)}. The model's outputs will be NaN: the "
            "training run diverged before this save or the file is damaged; use an earlier "
            "checkpoint.",
            keys=keys, details={"counts": {k: {"nan": n, "inf": i}
                                           for k, (n, i) in sample.nonfinite.items()},
                                "examined": sample.examined, "total": sample.total}))
    return out
