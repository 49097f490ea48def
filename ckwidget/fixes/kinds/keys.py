"""Key-mapping fix kinds: prefixes and renames, run before the per-key fixes."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

from ...checkpoint import TensorInfo
from ...errors import FixError
from ...rules import renamer
from .base import (
    CodeContext,
    Fix,
    V,
    _plural,
    _short,
)

if TYPE_CHECKING:  # pragma: no cover
    pass


def _remap(entries: dict[str, V], fn: Callable[[str], str]) -> dict[str, V]:
    return {fn(k): v for k, v in entries.items()}


def _collisions(keys: list[str], fn: Callable[[str], str]) -> list[str]:
    seen: dict[str, str] = {}
    clashes = []
    for k in keys:
        new = fn(k)
        if new in seen:
            clashes.append(f"{seen[new]!r} and {k!r} would both become {new!r}")
        seen[new] = k
    return clashes



@dataclass(frozen=True)
class StripPrefix(Fix):
    """Remove a prefix such as "module." (DataParallel) from every key that has it."""

    prefix: str
    kind: ClassVar[str] = "strip-prefix"
    rank: ClassVar[float] = 1
    maps_keys: ClassVar[bool] = True

    def describe(self) -> str:
        return f"Remove the prefix {self.prefix!r} from the checkpoint's keys."

    def code(self, ctx: CodeContext = CodeContext()) -> list[str]:
        return [f"{ctx.sd} = {{k.removeprefix({self.prefix!r}): v for k, v in {ctx.sd}.items()}}"]

    def key(self, k: str) -> str:
        return k.removeprefix(self.prefix)

    def transform(self, entries: dict[str, V], model: Mapping[str, TensorInfo]) -> dict[str, V]:
        return _remap(entries, self.key)

    def problems(self, entries: Mapping[str, Any], model: Mapping[str, TensorInfo]) -> list[str]:
        if not any(k.startswith(self.prefix) for k in entries):
            return [f"No checkpoint key starts with {self.prefix!r}, so there is nothing to strip."]
        return [f"Stripping {self.prefix!r}: {c}." for c in _collisions(list(entries), self.key)]


@dataclass(frozen=True)
class AddPrefix(Fix):
    """Put a prefix such as "model." in front of every key."""

    prefix: str
    kind: ClassVar[str] = "add-prefix"
    rank: ClassVar[float] = 1
    maps_keys: ClassVar[bool] = True

    def describe(self) -> str:
        return f"Add the prefix {self.prefix!r} to every checkpoint key."

    def code(self, ctx: CodeContext = CodeContext()) -> list[str]:
        return [f"{ctx.sd} = {{{self.prefix!r} + k: v for k, v in {ctx.sd}.items()}}"]

    def key(self, k: str) -> str:
        return self.prefix + k

    def transform(self, entries: dict[str, V], model: Mapping[str, TensorInfo]) -> dict[str, V]:
        return _remap(entries, self.key)

    def problems(self, entries: Mapping[str, Any], model: Mapping[str, TensorInfo]) -> list[str]:
        if not entries:
            return ["The checkpoint has no keys to add a prefix to."]
        return []


@dataclass(frozen=True)
class RenameKeys(Fix):
    """Rename keys by exact pairs, then by (regex, replacement) pairs for the others."""

    mapping: tuple[tuple[str, str], ...] = ()
    patterns: tuple[tuple[str, str], ...] = ()
    kind: ClassVar[str] = "rename-keys"
    rank: ClassVar[float] = 1
    maps_keys: ClassVar[bool] = True

    def __post_init__(self) -> None:
        mapping = self.mapping.items() if isinstance(self.mapping, Mapping) else self.mapping
        object.__setattr__(self, "mapping", tuple((str(a), str(b)) for a, b in mapping))
        object.__setattr__(self, "patterns", tuple((str(a), str(b)) for a, b in self.patterns))
        for pattern, _ in self.patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise FixError(
                    f"The rename pattern {pattern!r} is not a valid regex: {exc}."
                ) from None

    def describe(self) -> str:
        parts = []
        if self.mapping:
            old, new = self.mapping[0]
            more = f" and {len(self.mapping) - 1} more" if len(self.mapping) > 1 else ""
            parts.append(f"{old!r} -> {new!r}{more}")
        parts += [readable_rule(p, r) for p, r in self.patterns[:2]]
        n = len(self.mapping) + len(self.patterns)
        return f"Rename checkpoint keys ({_plural(n, 'rule')}: {'; '.join(parts)})."

    def code(self, ctx: CodeContext = CodeContext()) -> list[str]:
        lines = []
        if self.mapping:
            lines.append("renames = {")
            lines += [f"    {a!r}: {b!r}," for a, b in self.mapping]
            lines.append("}")
        if self.patterns and not self.mapping:
            body = "k"
            for p, r in self.patterns:
                body = f"re.sub({p!r}, {r!r}, {body})"
            lines.append(f"{ctx.sd} = {{{body}: v for k, v in {ctx.sd}.items()}}")
            return lines
        if self.patterns:
            lines.append("patterns = [")
            lines += [f"    ({p!r}, {r!r})," for p, r in self.patterns]
            lines.append("]")
            lines += [
                "",
                "def rename(k):",
                "    if k in renames:",
                "        return renames[k]",
                "    for pattern, replacement in patterns:",
                "        k = re.sub(pattern, replacement, k)",
                "    return k",
                "",
                f"{ctx.sd} = {{rename(k): v for k, v in {ctx.sd}.items()}}",
            ]
            return lines
        lines.append(f"{ctx.sd} = {{renames.get(k, k): v for k, v in {ctx.sd}.items()}}")
        return lines

    def __getstate__(self) -> dict[str, Any]:
        # the cached renaming function is rebuilt on demand, never pickled
        return {k: v for k, v in self.__dict__.items() if k != "key"}

    @cached_property
    def key(self) -> Callable[[str], str]:
        """The renaming function (built once: exact dict plus compiled patterns)."""
        return renamer(self.mapping, self.patterns)

    def transform(self, entries: dict[str, V], model: Mapping[str, TensorInfo]) -> dict[str, V]:
        return _remap(entries, self.key)

    def problems(self, entries: Mapping[str, Any], model: Mapping[str, TensorInfo]) -> list[str]:
        out = []
        absent = [a for a, _ in self.mapping if a not in entries]
        if self.mapping and len(absent) == len(self.mapping) and not self.patterns:
            out.append(
                f"None of the keys to rename is in the checkpoint ({_short(tuple(absent))})."
            )
        out += [f"Renaming: {c}." for c in _collisions(list(entries), self.key)]
        return out


_SLOTS = re.compile(r"\((?:\\d\+|\[\^\.\]\+)\)")  # (\d+) or ([^.]+): a name or number
_GROUP_REFS = re.compile(r"\\g<\d+>|\\\d")
_ESCAPED = re.compile(r"\\(.)")
_LITERAL = re.compile(r"(?:[^\\^$.*+?()\[\]{}|]|\\[^\w])*")  # re.escape's output


def readable_rule(pattern: str, replacement: str) -> str:
    """A rename rule as people read it: ``blocks.{n}.ffn.… -> blocks.{n}.mlp.…`` for the
    patterns ckwidget writes (anchored at the start of a key or of a name in it, literal
    text around numbered or named slots, the slots used in order); any other pattern as
    written, in quotes but without doubled backslashes."""
    raw = f"'{pattern}' -> '{replacement}'"
    if pattern.startswith("^"):
        body, start = pattern[1:], ""
    elif pattern.startswith("(?<![^.])"):
        body, start = pattern[len("(?<![^.])"):], "…"
    else:
        return raw
    end = "…"
    if body.endswith("$") and not body.endswith("\\$"):
        body, end = body[:-1], ""
    slots = _SLOTS.split(body)
    refs = _GROUP_REFS.split(replacement)
    numbers = [int(r.strip("\\g<>")) for r in _GROUP_REFS.findall(replacement)]
    if (numbers != list(range(1, len(slots))) or len(refs) != len(slots)
            or not all(map(_LITERAL.fullmatch, slots))
            or any("\\" in r.replace("\\\\", "") for r in refs)):
        return raw
    old = "{n}".join(_ESCAPED.sub(r"\1", part) for part in slots)
    new = "{n}".join(r.replace("\\\\", "\\") for r in refs)
    return f"{start}{old}{end} -> {start}{new}{end}"
