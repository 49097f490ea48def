"""Pure rules that diagnosis and the fix kinds share: renaming keys by exact pairs and
regexes (fast at 100,000 keys), and shape arithmetic (size-1 dimensions, weight norm's
norm dimensions). No torch, no ckwidget imports: the bottom of the house."""

from __future__ import annotations

import re
from collections.abc import Callable

_META = set(".^$*+?{}[]()|\\")


def _literal_head(pattern: str) -> str | None:
    """The literal text every match of a ``^``-anchored pattern starts with, or None
    when the pattern may match elsewhere than at the start (no anchor, alternation,
    inline flags such as MULTILINE)."""
    if not pattern.startswith("^") or "|" in pattern or "(?" in pattern.replace(
            "(?:", "").replace("(?=", "").replace("(?!", "").replace("(?P<", ""):
        return None
    head: list[str] = []
    i = 1
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern) and not pattern[i + 1].isalnum():
            ch, step = pattern[i + 1], 2
        elif ch in _META:
            break
        else:
            step = 1
        if pattern[i + step:i + step + 1] in ("*", "?", "{"):
            break  # the character is optional or repeated
        head.append(ch)
        i += step
    return "".join(head)


# ^ then literal characters and (\d+) groups, ending with an escaped dot: such a pattern
# matches whole leading components and reads no character past its match.
_SEGMENTS = re.compile(r"\^(?:\\[^A-Za-z0-9]|[A-Za-z0-9_\-]|\(\\d\+\))*\\\.")


def renamer(
    mapping: tuple[tuple[str, str], ...], patterns: tuple[tuple[str, str], ...]
) -> Callable[[str], str]:
    r"""``k -> new key``: exact pairs first, then each (regex, replacement) as ``re.sub``.

    Same result as ``re.sub`` on every key, faster on 100,000 keys: a ``^``-anchored
    pattern without alternation matches at most once, at the start, so keys without its
    literal head are skipped; a literal prefix is swapped by slicing; a pattern of whole
    leading components (``^h\.(\d+)\.``) is applied once per module, the leaf appended.
    """
    exact = dict(mapping)
    steps = [_pattern_step(p, r) for p, r in patterns]
    if not steps:
        return lambda k: exact.get(k, k)
    if len(steps) == 1 and not exact:
        return steps[0]

    def rename(k: str) -> str:
        new = exact.get(k)
        if new is not None:
            return new
        for one in steps:
            k = one(k)
        return k

    return rename


def _pattern_step(pattern: str, replacement: str) -> Callable[[str], str]:
    rx = re.compile(pattern)
    head = _literal_head(pattern)
    if head is None:
        return lambda k: rx.sub(replacement, k)
    if pattern == "^" + re.escape(head) and "\\" not in replacement:
        n = len(head)
        return lambda k: replacement + k[n:] if k.startswith(head) else k
    if not _SEGMENTS.fullmatch(pattern):
        return lambda k: rx.sub(replacement, k) if k.startswith(head) else k
    cache: dict[str, str] = {}

    def per_module(k: str) -> str:
        if not k.startswith(head):
            return k
        mod, dot, leaf = k.rpartition(".")
        if not dot:
            return k  # no dot: a pattern ending with one cannot match
        new = cache.get(mod)
        if new is None:
            new = cache[mod] = rx.sub(replacement, mod + ".")
        return new + leaf

    return per_module


def norm_dims(g_shape: tuple[int, ...], v_shape: tuple[int, ...]) -> list[int] | None:
    """The dimensions of ``v`` that weight norm takes the norm over, read from the shape
    of ``g`` (size 1 there, ``v``'s size in the one dimension it keeps; a 0-d ``g``
    norms over all); None when ``g`` is not the magnitude of such a ``v``."""
    if not g_shape:
        return list(range(len(v_shape)))
    if len(g_shape) != len(v_shape):
        return None
    kept = [d for d, (g, v) in enumerate(zip(g_shape, v_shape)) if g != 1]
    if len(kept) > 1 or any(g_shape[d] != v_shape[d] for d in kept):
        return None
    return [d for d in range(len(v_shape)) if d not in kept]


def squeezed(shape: tuple[int, ...]) -> tuple[int, ...]:
    """A shape without its size-1 dimensions: two shapes with the same squeezed shape hold
    the same values in the same order."""
    return tuple(d for d in shape if d != 1)
