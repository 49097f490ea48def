"""How numbers, sizes and shapes are written, once for every view (widget, static report,
CLI, finding messages): a user reading two of them side by side sees one notation.

Counts get thousands separators (100,000), byte sizes binary units (1.5 KiB, as torch and
``du -h`` report memory), shapes their dimensions joined by "×" (3×4; "scalar" for 0-d).
"""

from __future__ import annotations

from collections.abc import Sequence


def count_text(n: int) -> str:
    """100000 -> "100,000"."""
    return f"{n:,}"


def size_text(nbytes: float | None) -> str:
    """1536 -> "1.5 KiB"; None -> ""."""
    if nbytes is None:
        return ""
    n = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{int(n)} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def shape_text(shape: Sequence[int] | None, none: str = "") -> str:
    """(3, 4) -> "3×4"; () -> "scalar"; None -> ``none``."""
    if shape is None or (isinstance(shape, float) and shape != shape):  # None or NaN
        return none
    if isinstance(shape, (tuple, list)):
        return "×".join(str(s) for s in shape) if shape else "scalar"
    return str(shape)
