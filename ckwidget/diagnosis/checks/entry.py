"""The container the caller asked for: an entry= that holds no tensors is a `nested`
error naming the containers that do."""

from __future__ import annotations

from ...checkpoint import Finding
from ..context import Context


def check(ctx: Context) -> list[Finding]:
    wanted = ctx.requested_entry
    if wanted is None or ctx.entry_infos:
        return []
    candidates = ctx.ckpt.candidates
    return [Finding(
        "nested", "error",
        f"The checkpoint has no container {wanted!r} holding tensors; it has "
        f"{', '.join(repr(c) for c in candidates[:6]) or 'none'}. Pass one of those as "
        "entry=, or leave entry out to let ckwidget choose.",
        details={"entry": wanted, "candidates": list(candidates)})]
