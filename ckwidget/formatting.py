"""How numbers, sizes and shapes are written, once for every view (widget, static report,
CLI, finding messages): a user reading two of them side by side sees one notation.

Counts get thousands separators (100,000), byte sizes binary units (1.5 KiB, as torch and
``du -h`` report memory), shapes their dimensions joined by "×" (3×4; "scalar" for 0-d),
and keys that differ only in layer numbers are folded into one line with their numbers
in braces: ``h.{0..11}.attn.weight``, ``moe.{0,1}.experts.{0..2}.w``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from .keytemplates import SLOT, fill, int_rows, templates_text


def count_text(n: int) -> str:
    """100000 -> "100,000"."""
    return f"{n:,}"


def count_noun(n: int, noun: str, plural: str | None = None) -> str:
    """(1, "tensor") -> "1 tensor"; (100000, "tensor") -> "100,000 tensors"."""
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"


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


# -- folded keys ----------------------------------------------------------------------
RANGES_LIMIT = 40
"""Layer numbers longer than this many characters are elided in the middle."""


def ranges(values: Iterable[int], limit: int | None = RANGES_LIMIT) -> str:
    """[0, 1, 2, 3, 7, 9, 10] -> "0..3,7,9,10": runs of three or more become ranges.
    Longer than ``limit`` characters, the middle is elided: "0,7,14,...,1995"."""
    vals = sorted(set(values))
    parts: list[str] = []
    i = 0
    while i < len(vals):
        j = i
        while j + 1 < len(vals) and vals[j + 1] == vals[j] + 1:
            j += 1
        if j - i >= 2:
            parts.append(f"{vals[i]}..{vals[j]}")
        else:
            parts.extend(str(v) for v in vals[i:j + 1])
        i = j + 1
    text = ",".join(parts)
    if limit is None or len(text) <= limit:
        return text
    head: list[str] = []
    for part in parts[:-1]:
        if len(",".join([*head, part, "...", parts[-1]])) > limit:
            break
        head.append(part)
    return ",".join([*head, "...", parts[-1]])


def _numbers_text(values: Sequence[int]) -> str:
    return str(values[0]) if len(values) == 1 else "{" + ranges(values) + "}"


def _fill_slot(tmpl: str, position: int, text: str) -> str:
    """The template with its ``position``-th slot (from 0) replaced by ``text``."""
    pieces = tmpl.split(SLOT)
    return (SLOT.join(pieces[: position + 1]) + text
            + SLOT.join(pieces[position + 1:]))


def fold_template(tmpl: str, rows: list[tuple[int, ...]]) -> list[tuple[str, int]]:
    """Folded lines for one template's rows of layer numbers, with how many keys each
    stands for: one line when the numbers form a grid (every combination present),
    else the first varying slot is fixed, values whose remaining numbers agree sharing
    a line (``moe.{0,1}.experts.{0..2}.w`` beside ``moe.2.experts.{0..3}.w``)."""
    if not rows or not rows[0]:
        return [(tmpl, max(1, len(rows)))]
    unique = list(dict.fromkeys(rows))
    columns = [sorted({r[i] for r in unique}) for i in range(len(unique[0]))]
    if math.prod(map(len, columns)) == len(unique):
        return [(fill(tmpl, [_numbers_text(c) for c in columns]), len(rows))]
    p = next(i for i, c in enumerate(columns) if len(c) > 1)
    rests: dict[int, list[tuple[int, ...]]] = {}
    for r in rows:
        rests.setdefault(r[p], []).append(r[:p] + r[p + 1:])
    sharing: dict[frozenset[tuple[int, ...]], list[int]] = {}
    for value, rest in rests.items():
        sharing.setdefault(frozenset(rest), []).append(value)
    out: list[tuple[str, int]] = []
    for values in sharing.values():
        sub = _fill_slot(tmpl, p, _numbers_text(values))
        for line, n in fold_template(sub, rests[values[0]]):
            out.append((line, n * len(values)))
    return out


def fold_keys(keys: Iterable[str], limit: int | None = None,
              signature: Callable[[str], Any] | None = None) -> list[tuple[str, int]]:
    """Keys folded by layer number: [(line, how many keys)], templates in order of first
    appearance, the first ``limit`` lines. ``signature(key)``, when given, keeps keys
    apart that differ in it (the CLI folds only tensors of one dtype and shape)."""
    return [(line, n) for line, n, _ in fold_groups(keys, limit, signature)]


def fold_groups(keys: Iterable[str], limit: int | None = None,
                signature: Callable[[str], Any] | None = None,
                ) -> list[tuple[str, int, str]]:
    """:func:`fold_keys` with the first key of each line's group: [(line, count, key)]."""
    keys = list(keys)
    tmpls, numbers = templates_text(keys)
    groups: dict[tuple[str, Any], list[tuple[str, ...]]] = {}
    first: dict[tuple[str, Any], str] = {}
    padded = any(len(v) > 1 and v[0] == "0" for row in numbers for v in row)
    if signature is None and not padded and tmpls and tmpls.count(tmpls[0]) == len(tmpls):
        groups[(tmpls[0], None)] = numbers  # one template (a finding about one layer kind)
        first[(tmpls[0], None)] = keys[0]
    else:
        for key, tmpl, row in zip(keys, tmpls, numbers):
            if any(len(v) > 1 and v[0] == "0" for v in row):
                tmpl, row = key, ()  # "a.03": folded it would read "a.3"; shown as is
            group = (tmpl, signature(key) if signature else None)
            groups.setdefault(group, []).append(row)
            first.setdefault(group, key)
    out: list[tuple[str, int, str]] = []
    for group, rows in groups.items():
        out.extend((line, n, first[group]) for line, n in fold_template(group[0], int_rows(rows)))
        if limit is not None and len(out) >= limit:
            return out[:limit]
    return out


def group_keys(keys: Iterable[str]) -> list[str]:
    """The folded lines of ``keys`` (see :func:`fold_keys`)."""
    return [line for line, _ in fold_keys(keys)]


def summarise_keys(keys: Iterable[str], limit: int = 6) -> str:
    """A short comma-separated list of folded keys for a finding's message."""
    lines = group_keys(keys)
    shown = ", ".join(lines[:limit])
    if len(lines) > limit:
        shown += f" and {len(lines) - limit} more groups"
    return shown
