"""Key templates: a key with its layer numbers taken out ("h.\\x00.attn.weight") and the
numbers as written ("3"). Alignment compares keys by template, and the one folded key
notation (``h.{0..23}.attn.weight``, :mod:`ckwidget.formatting`) is written from them.

A leaf module (no ckwidget imports), so every layer may use it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from itertools import islice, repeat

SLOT = "\x00"  # stands for an integer component inside a template

INT = re.compile(r"(?<![^.])[0-9]+(?![^.])")  # a whole integer component

# A whole integer component of one of several keys joined by newlines.
_INT_SPLIT = re.compile(r"(?<![^.\n])([0-9]+)(?![^.\n])")


def join_lines(keys: Sequence[str]) -> str | None:
    """The keys joined by newlines, for one regex or string pass over all of them at C
    speed; None when a key holds a newline itself (then callers go key by key)."""
    text = "\n".join(keys)
    return text if text.count("\n") == max(0, len(keys) - 1) else None


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


def int_rows(rows: list[tuple[str, ...]]) -> list[tuple[int, ...]]:
    """Rows of numbers as written -> as ints (rows of one template have the same number
    of slots: converted column by column)."""
    if not rows or not rows[0]:
        return []
    return list(zip(*(map(int, col) for col in zip(*rows))))
