"""Integrity: the file's bytes against its own checksums (``Checkpoint.verify``).

torch never checks a zip record's CRC-32, so a storage zero-filled by a crashed copy
loads silently as wrong weights. A checkpoint of at most ``VERIFY_BY_DEFAULT_BYTES`` is
verified on every diagnosis (reading it costs well under a second); a bigger one only
when asked (``ckwidget check --verify``, or ``ckpt.verify()`` before ``diagnose``: a
verification already done is used, not repeated).
"""

from __future__ import annotations

from ...checkpoint import Finding
from ..context import Context

VERIFY_BY_DEFAULT_BYTES = 512 * 1024 * 1024


def check(ctx: Context) -> list[Finding]:
    from ...readers.verify import VERIFIED_FORMATS, unreported

    ckpt = ctx.ckpt
    found = getattr(ckpt, "verified", None)
    if found is None:
        if (ckpt.format not in VERIFIED_FORMATS or ckpt.path is None
                or ckpt.size > VERIFY_BY_DEFAULT_BYTES
                or "url" in ckpt.metadata):  # remote: verify() downloads every byte
            return []
        found = ckpt.verify()
    # the reader already reports the small records it read at open (data.pkl...), and a
    # caller may have added the verification's findings to the file's own
    out = unreported(found, ckpt.findings)
    for f in out:
        if f.severity == "error":
            ctx.blockers.append(f.kind)  # damaged weights: the report says broken
    return out
