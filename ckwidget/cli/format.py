"""Terminal text for the command line: safe strings, colour, wrapping, aligned tables.

Nothing here imports torch: ``ckwidget inspect`` must start fast. Every string that
came from a file goes through :func:`clean` before it reaches the terminal, so a key
holding escape sequences cannot repaint or hide what the user reads.
"""

from __future__ import annotations

import math
import os
import shutil
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TextIO

from ..formatting import count_text

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
            text += f" ({count_text(len(value))} items)"
    elif isinstance(value, Mapping):
        shown = ", ".join(f"{k}: {short(v, 30)}" for k, v in list(value.items())[:4])
        text = "{" + shown + (", ..." if len(value) > 4 else "") + "}"
    else:
        text = str(value)
    text = clean(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."
