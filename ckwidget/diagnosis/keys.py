"""Key arithmetic shared by alignment and findings: modules, templates, grouped display.

Repeated layers are shown once: ``h.{0..23}.attn.c_attn.weight`` instead of 24 lines.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from itertools import islice, repeat

SLOT = "\x00"  # stands for an integer component inside a template


def module_of(key: str) -> str:
    """"h.0.attn.weight" -> "h.0.attn"; a top-level key belongs to the root module ""."""
    return key.rpartition(".")[0]


def leaf_of(key: str) -> str:
    return key.rpartition(".")[2]


INT = re.compile(r"(?<![^.])[0-9]+(?![^.])")  # a whole integer component


# A whole integer component of one of several keys joined by newlines.
_INT_SPLIT = re.compile(r"(?<![^.\n])([0-9]+)(?![^.\n])")


def join_lines(keys: Sequence[str]) -> str | None:
    """The keys joined by newlines, for one regex or string pass over all of them at C
    speed; None when a key holds a newline itself (then callers go key by key)."""
    text = "\n".join(keys)
    return text if text.count("\n") == max(0, len(keys) - 1) else None


def escape_replacement(text: str) -> str:
    """``text`` as a literal inside a ``re.sub`` replacement string."""
    return text.replace("\\", "\\\\")


def templates_text(keys: list[str]) -> tuple[list[str], list[tuple[str, ...]]]:
    """Each key with its whole integer components replaced by a slot, and those integers
    as written: (["h.\\x00.mlp"], [("03",)]). One regex pass over the joined keys, so
    100,000 keys cost milliseconds rather than a Python loop over their components."""
    text = join_lines(keys)
    if text is None or SLOT in text:
        return _templates_one_by_one(keys)
    # one pass: literal pieces and the integers between them, alternating
    parts = _INT_SPLIT.split(text) if keys else [""]
    tmpls = SLOT.join(parts[0::2]).split("\n") if keys else []
    flat = parts[1::2]
    if len(flat) == len(keys) and all(map(str.__contains__, tmpls, repeat(SLOT))):
        return tmpls, list(zip(flat))  # one integer per key: the common case
    values = iter(flat)
    ints = [tuple(islice(values, n)) if n else () for n in map(str.count, tmpls, repeat(SLOT))]
    return tmpls, ints


def _templates_one_by_one(keys: list[str]) -> tuple[list[str], list[tuple[str, ...]]]:
    """Keys holding a newline or the slot character itself: split them one at a time."""
    tmpls: list[str] = []
    ints: list[tuple[str, ...]] = []
    for key in keys:
        parts = key.split(".")
        found = []
        for i, p in enumerate(parts):
            if p.isdigit() and p.isascii():
                found.append(p)
                parts[i] = SLOT
        tmpls.append(".".join(parts) if found else key)
        ints.append(tuple(found))
    return tmpls, ints


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


def render(tmpl: str, rows: list[tuple[int, ...]]) -> list[str]:
    """Display lines for one template filled with ``rows`` of ints."""
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
        out.extend(head + str(first) + line for line in render(tail, rest))
    return out


def group_keys(keys: Iterable[str]) -> list[str]:
    """Display lines for ``keys``, repeated layers folded into ``{a..b}`` ranges,
    in order of first appearance."""
    tmpls, texts = templates_text(list(keys))
    groups: dict[str, list[tuple[str, ...]]] = {}
    if tmpls and tmpls.count(tmpls[0]) == len(tmpls):
        groups[tmpls[0]] = texts  # one pattern (a finding about one kind of layer)
    else:
        for tmpl, row in zip(tmpls, texts):
            group = groups.get(tmpl)
            if group is None:
                groups[tmpl] = [row]
            else:
                group.append(row)
    out: list[str] = []
    for tmpl, rows in groups.items():
        out.extend(render(tmpl, int_rows(rows)))
    return out


def int_rows(rows: list[tuple[str, ...]]) -> list[tuple[int, ...]]:
    """Rows of numbers as written -> as ints (rows of one template have the same number
    of slots: converted column by column)."""
    if not rows or not rows[0]:
        return []
    return list(zip(*(map(int, col) for col in zip(*rows))))


def summarise_keys(keys: Iterable[str], limit: int = 6) -> str:
    """A short comma-separated, grouped list of keys for a finding's message."""
    lines = group_keys(keys)
    shown = ", ".join(lines[:limit])
    if len(lines) > limit:
        shown += f" and {len(lines) - limit} more groups"
    return shown
