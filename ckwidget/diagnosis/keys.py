"""Key arithmetic shared by alignment and findings: modules, templates, grouped display.

Repeated layers are shown once: ``h.{0..23}.attn.c_attn.weight`` instead of 24 lines.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

SLOT = "\x00"  # stands for an integer component inside a template


def module_of(key: str) -> str:
    """"h.0.attn.weight" -> "h.0.attn"; a top-level key belongs to the root module ""."""
    return key.rpartition(".")[0]


def leaf_of(key: str) -> str:
    return key.rpartition(".")[2]


INT = re.compile(r"(?<![^.])[0-9]+(?![^.])")  # a whole integer component


def template(key: str) -> tuple[str, tuple[int, ...]]:
    """Replace integer components by a slot: ("h.\\x00.attn.weight", (3,))."""
    # str methods, not a regex: this runs once per key when findings group keys.
    parts = key.split(".")
    ints = []
    for i, p in enumerate(parts):
        if p.isdigit() and p.isascii():
            ints.append(int(p))
            parts[i] = SLOT
    if not ints:
        return key, ()
    return ".".join(parts), tuple(ints)


def template_text(key: str) -> tuple[str, tuple[str, ...]]:
    """Like ``template`` with the integers kept as written: ("h.\x00.mlp", ("03",))."""
    parts = key.split(".")
    ints = []
    for i, p in enumerate(parts):
        if p.isdigit() and p.isascii():
            ints.append(p)
            parts[i] = SLOT
    if not ints:
        return key, ()
    return ".".join(parts), tuple(ints)


def template_only(key: str) -> str:
    return INT.sub(SLOT, key)


def fill(tmpl: str, values: Sequence[str]) -> str:
    """Put ``values`` into the template's slots, in order."""
    pieces = tmpl.split(SLOT)
    out = [pieces[0]]
    for value, piece in zip(values, pieces[1:]):
        out.append(value)
        out.append(piece)
    return "".join(out)


def ranges(values: Iterable[int]) -> str:
    """{0, 1, 2, 3, 5} -> "0..3,5"."""
    vals = sorted(set(values))
    out: list[str] = []
    start = prev = vals[0]
    for v in vals[1:]:
        if v == prev + 1:
            prev = v
            continue
        out.append(str(start) if start == prev else f"{start}..{prev}")
        start = prev = v
    out.append(str(start) if start == prev else f"{start}..{prev}")
    return ",".join(out)


def _render(tmpl: str, rows: list[tuple[int, ...]]) -> list[str]:
    if not rows or not rows[0]:
        return [tmpl]
    if len(rows) == 1:
        return [fill(tmpl, [str(v) for v in rows[0]])]
    slots = len(rows[0])
    sets = [sorted({r[i] for r in rows}) for i in range(slots)]
    total = 1
    for s in sets:
        total *= len(s)
    if total == len(set(rows)):
        return [fill(tmpl, ["{" + ranges(s) + "}" if len(s) > 1 else str(s[0]) for s in sets])]
    # Not a full grid: fix the first slot, group the rest.
    by_first: dict[int, list[tuple[int, ...]]] = {}
    for r in rows:
        by_first.setdefault(r[0], []).append(r[1:])
    head, _, tail = tmpl.partition(SLOT)
    out: list[str] = []
    for first, rest in by_first.items():
        out.extend(head + str(first) + line for line in _render(tail, rest))
    return out


def group_keys(keys: Iterable[str]) -> list[str]:
    """Display lines for ``keys``, repeated layers folded into ``{a..b}`` ranges,
    in order of first appearance."""
    groups: dict[str, list[tuple[int, ...]]] = {}
    for key in keys:
        tmpl, ints = template(key)
        groups.setdefault(tmpl, []).append(ints)
    out: list[str] = []
    for tmpl, rows in groups.items():
        out.extend(_render(tmpl, rows))
    return out


def summarise_keys(keys: Iterable[str], limit: int = 6) -> str:
    """A short comma-separated, grouped list of keys for a finding's message."""
    lines = group_keys(keys)
    shown = ", ".join(lines[:limit])
    if len(lines) > limit:
        shown += f" and {len(lines) - limit} more groups"
    return shown
