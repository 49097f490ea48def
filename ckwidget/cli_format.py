"""Terminal output for the command line: safe strings, colour, aligned tables, grouped keys.

Nothing here imports torch: ``ckwidget inspect`` must start fast. Every string that
came from a file goes through :func:`clean` before it reaches the terminal, so a key
holding escape sequences cannot repaint or hide what the user reads.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TextIO

from .formatting import shape_text as _shape_text
from .formatting import size_text

_CODES = {"red": "31", "yellow": "33", "green": "32", "cyan": "36", "dim": "2", "bold": "1"}
SEVERITY_COLOUR = {"error": "red", "warning": "yellow", "info": "cyan"}
ICONS = {"error": "✖", "warning": "▲", "info": "ℹ"}


def clean(text: Any) -> str:
    """One printable line: control characters (ANSI escapes, newlines) become escapes."""
    s = str(text)
    if s.isprintable():
        return s
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in s)


def use_colour(stream: TextIO) -> bool:
    """Colour only on a terminal, and never when NO_COLOR is set (https://no-color.org)."""
    if os.environ.get("NO_COLOR", "") != "":
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class Style:
    """Wraps text in ANSI colours when enabled; a no-op otherwise."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def __call__(self, text: str, colour: str) -> str:
        if not self.enabled or colour not in _CODES:
            return text
        return f"\x1b[{_CODES[colour]}m{text}\x1b[0m"

    def severity(self, text: str, severity: str) -> str:
        return self(text, SEVERITY_COLOUR.get(severity, ""))


def width(stream: TextIO) -> int:
    """Terminal width for wrapping (100 when not a terminal, at least 60)."""
    if getattr(stream, "isatty", lambda: False)():
        return max(60, shutil.get_terminal_size((100, 24)).columns)
    return 100


def human_bytes(n: int | float) -> str:
    """1536 -> '1.5 KiB' (ckwidget.formatting, as every view writes sizes)."""
    return size_text(n)


def shape_text(shape: Sequence[int] | None) -> str:
    """(8, 8) -> '8×8' (ckwidget.formatting); '-' for no shape."""
    return _shape_text(shape, none="-")


def table(rows: Sequence[Sequence[str]], header: Sequence[str] | None = None,
          indent: int = 2, style: Style | None = None,
          right: Iterable[int] = ()) -> list[str]:
    """Rows as aligned columns (the last column is not padded)."""
    body = [list(map(str, r)) for r in rows]
    if header is not None:
        body.insert(0, list(header))
    if not body:
        return []
    ncols = max(len(r) for r in body)
    widths = [max((len(r[i]) for r in body if i < len(r)), default=0) for i in range(ncols)]
    right = set(right)
    lines = []
    for n, r in enumerate(body):
        cells = []
        for i, cell in enumerate(r):
            last = i == len(r) - 1
            if i in right:
                cells.append(cell.rjust(widths[i]))
            else:
                cells.append(cell if last else cell.ljust(widths[i]))
        line = " " * indent + "  ".join(cells).rstrip()
        if n == 0 and header is not None and style is not None:
            line = style(line, "dim")
        lines.append(line)
    return lines


def wrapped(prefix: str, text: str, total: int, visible_prefix: int | None = None) -> list[str]:
    """``prefix`` then ``text`` wrapped to ``total`` columns, continuation lines hanging."""
    hang = visible_prefix if visible_prefix is not None else len(prefix)
    room = max(30, total - hang)
    parts = textwrap.wrap(text, room, break_on_hyphens=False) or [""]
    return [prefix + parts[0]] + [" " * hang + p for p in parts[1:]]


# -- grouping repeated layers ------------------------------------------------------------
_INDEX = re.compile(r"(?<=\.)\d+(?=\.|$)|^\d+(?=\.)")


def ranges(values: Iterable[int], limit: int = 40) -> str:
    """[0, 1, 2, 3, 7, 9, 10] -> '0..3,7,9,10' (runs of three or more become ranges).

    Longer than ``limit`` characters, the middle is elided: '0,7,14,...,1995'.
    """
    text = _ranges(sorted(set(values)))
    if len(text) <= limit:
        return text
    parts = text.split(",")
    head: list[str] = []
    for part in parts[:-1]:
        if len(",".join([*head, part, "...", parts[-1]])) > limit:
            break
        head.append(part)
    return ",".join([*head, "...", parts[-1]])


def _ranges(vals: list[int]) -> str:
    out: list[str] = []
    i = 0
    while i < len(vals):
        j = i
        while j + 1 < len(vals) and vals[j + 1] == vals[j] + 1:
            j += 1
        if j - i >= 2:
            out.append(f"{vals[i]}..{vals[j]}")
        else:
            out.extend(str(v) for v in vals[i:j + 1])
        i = j + 1
    return ",".join(out)


_HOLE = "\x00"  # marks a layer number in a key pattern


def _pattern(key: str) -> tuple[str, tuple[int, ...]]:
    if _HOLE in key:
        return key, ()
    indices = tuple(int(m.group()) for m in _INDEX.finditer(key))
    return _INDEX.sub(_HOLE, key), indices


def _fix_hole(pattern: str, position: int, text: str) -> str:
    parts = pattern.split(_HOLE)
    return _HOLE.join(parts[: position + 1]) + text + _HOLE.join(parts[position + 1:])


def _collapse(pattern: str, members: list[tuple[int, ...]]) -> list[tuple[str, int]]:
    """Names for one pattern's index tuples: one name per grid of layer numbers.

    ``moe.{0,1}.experts.{0..2}.w`` when both layers have experts 0-2; a layer with a
    different set of experts gets its own row.
    """
    if not members or not members[0]:
        return [(pattern, len(members))]
    positions = [sorted({m[p] for m in members}) for p in range(len(members[0]))]
    if math.prod(len(v) for v in positions) == len(members):
        name = pattern
        for p in reversed(range(len(positions))):
            v = positions[p]
            name = _fix_hole(name, p, str(v[0]) if len(v) == 1 else "{" + ranges(v) + "}")
        return [(name, len(members))]
    # Not one grid: fix the first position, merging values whose remaining indices agree.
    p = next(i for i, v in enumerate(positions) if len(v) > 1)
    rests: dict[int, list[tuple[int, ...]]] = {}
    for m in members:
        rests.setdefault(m[p], []).append(m[:p] + m[p + 1:])
    buckets: dict[frozenset[tuple[int, ...]], list[int]] = {}
    for value, rest in rests.items():
        buckets.setdefault(frozenset(rest), []).append(value)
    out: list[tuple[str, int]] = []
    for values in buckets.values():
        text = str(values[0]) if len(values) == 1 else "{" + ranges(values) + "}"
        sub = _fix_hole(pattern, p, text)
        for name, count in _collapse(sub, rests[values[0]]):
            out.append((name, count * len(values)))
    return out


def group_keys(items: Mapping[str, Any], signature: Any) -> list[tuple[str, int, Any]]:
    """Collapse keys that differ only in layer numbers and share ``signature(value)``.

    Returns (display name, count, first value) in the order keys first appear:
    ``layers.0.attn.weight`` ... ``layers.11.attn.weight`` -> ``layers.{0..11}.attn.weight``.
    """
    groups: dict[tuple[str, Any], list[tuple[int, ...]]] = {}
    first: dict[tuple[str, Any], Any] = {}
    for key, value in items.items():
        pattern, indices = _pattern(key)
        gk = (pattern, signature(value))
        groups.setdefault(gk, []).append(indices)
        first.setdefault(gk, value)
    out: list[tuple[str, int, Any]] = []
    for gk, members in groups.items():
        for name, count in _collapse(gk[0], members):
            out.append((name, count, first[gk]))
    return out


# -- JSON ------------------------------------------------------------------------------
def json_safe(value: Any, depth: int = 0) -> Any:
    """Plain JSON values from metadata: strings, numbers, lists and string-keyed dicts."""
    if depth > 20:
        return "..."
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, (bytes, bytearray)):
        return repr(bytes(value[:200]))
    if isinstance(value, Mapping):
        return {str(k): json_safe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [json_safe(v, depth + 1) for v in value]
    return str(value)


def short(value: Any, limit: int = 80) -> str:
    """A one-line rendering of a metadata value, cut to ``limit`` characters."""
    if isinstance(value, (list, tuple)):
        shown = ", ".join(short(v, 40) for v in value[:4])
        text = f"[{shown}{', ...' if len(value) > 4 else ''}]"
        if len(value) > 4:
            text += f" ({len(value)} items)"
    elif isinstance(value, Mapping):
        shown = ", ".join(f"{k}: {short(v, 30)}" for k, v in list(value.items())[:4])
        text = "{" + shown + (", ..." if len(value) > 4 else "") + "}"
    else:
        text = str(value)
    text = clean(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."
