"""The fix kinds: small immutable values that repair a checkpoint for one model.

Each fix knows three things: a sentence saying what it does (``describe``), the plain
torch lines that do it (``code``), and a pure ``transform`` of a state dict. The same
``transform`` runs on :class:`~ckwidget.checkpoint.TensorInfo` values (a preview that
reads no bytes) and on real tensors (an apply), so the preview cannot drift from what
the apply does. Key-mapping fixes (prefixes, renames) come first in a plan; per-key
fixes name keys in the model's namespace.

Load-time fixes (select-entry, map-location, allow-globals, extract-weights) change how
the checkpoint is read, not the dict: their ``transform`` is the identity and the
:class:`~ckwidget.fixes.plan.Plan` reads them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from ..checkpoint import DTYPE_SIZES, TensorInfo
from ..errors import FixError
from ..readers.safety import is_malicious, is_vetted

if TYPE_CHECKING:  # pragma: no cover
    import torch

V = TypeVar("V")

FLOATING_DTYPES = frozenset(
    {"float64", "float32", "float16", "bfloat16", "float8_e4m3fn", "float8_e5m2",
     "float8_e4m3fnuz", "float8_e5m2fnuz", "float8_e8m0fnu"}
)


@dataclass(frozen=True)
class CodeContext:
    """Variable names the generated snippet uses; fixes write their lines against these."""

    sd: str = "sd"
    model: str = "model"
    ckpt: str = "ckpt"
    path: str = "PATH"


def _is_info(value: Any) -> bool:
    return isinstance(value, TensorInfo)


def _short(keys: tuple[str, ...], limit: int = 3) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


class _MappedSource:
    """A TensorSource whose bytes are another source's, transformed on read."""

    __slots__ = ("fn", "inner")

    def __init__(self, inner: Any, fn: Callable[[Any], Any]) -> None:
        self.inner = inner
        self.fn = fn

    def load(self) -> torch.Tensor:
        return self.fn(self.inner.load())


def _mapped(info: TensorInfo, fn: Callable[[Any], Any], shape: tuple[int, ...] | None = None,
            dtype: str | None = None, nbytes: int | None = None) -> TensorInfo:
    """``info`` with a new shape/dtype/size, its bytes read through ``fn``.

    Built directly (``dataclasses.replace`` costs several times more, and previews run
    this for every key of 100,000-key checkpoints).
    """
    source = _MappedSource(info.source, fn) if info.source is not None else None
    return TensorInfo(info.shape if shape is None else shape,
                      info.dtype if dtype is None else dtype, info.device,
                      info.nbytes if nbytes is None else nbytes, info.layout, source)


@dataclass(frozen=True)
class Fix:
    """Base of every fix kind. Subclasses are frozen dataclasses, hashable and comparable."""

    kind: ClassVar[str] = ""
    load_time: ClassVar[bool] = False  # changes how the file is read, not the dict
    maps_keys: ClassVar[bool] = False  # renames keys (runs before per-key fixes)

    def describe(self) -> str:  # pragma: no cover - every kind overrides
        raise NotImplementedError

    def code(self, ctx: CodeContext = CodeContext()) -> list[str]:
        """Plain torch lines doing this fix on ``ctx.sd`` (load-time fixes: see Plan)."""
        return []

    def transform(self, entries: dict[str, V], model: Mapping[str, TensorInfo]) -> dict[str, V]:
        """The state dict after this fix; identity for load-time fixes."""
        return dict(entries)

    def problems(
        self, entries: Mapping[str, Any], model: Mapping[str, TensorInfo]
    ) -> list[str]:
        """Why this fix no longer applies to ``entries`` (the dict it would receive)."""
        return []

    def __str__(self) -> str:
        return self.describe()


# -- load-time fixes -------------------------------------------------------------------


def entry_expr(var: str, entry: str) -> str:
    """``ckpt["state_dict"]["model"]`` for the dotted container path "state_dict.model"."""
    expr = var
    for part in entry.split(".") if entry else []:
        expr += f"[{int(part)}]" if part.isdigit() else f"[{part!r}]"
    return expr


@dataclass(frozen=True)
class SelectEntry(Fix):
    """Read the model weights from one container of the checkpoint ("" is the top level)."""

    entry: str
    kind: ClassVar[str] = "select-entry"
    load_time: ClassVar[bool] = True

    def describe(self) -> str:
        if not self.entry:
            return "Use the checkpoint's top level as the state dict."
        return f"Use the weights stored under {self.entry!r} in the checkpoint."

    def code(self, ctx: CodeContext = CodeContext()) -> list[str]:
        return [f"{ctx.sd} = {entry_expr(ctx.ckpt, self.entry)}"]


@dataclass(frozen=True)
class MapLocation(Fix):
    """Load tensors onto ``device`` (a CUDA-saved file on a CPU machine)."""

    device: str = "cpu"
    kind: ClassVar[str] = "map-location"
    load_time: ClassVar[bool] = True

    def describe(self) -> str:
        return f"Load every tensor onto {self.device!r} (map_location={self.device!r})."

    def code(self, ctx: CodeContext = CodeContext()) -> list[str]:
        return [f"map_location = {self.device!r}"]


@dataclass(frozen=True)
class AllowGlobals(Fix):
    """Let torch.load(weights_only=True) accept these harmless globals by exact name."""

    names: tuple[str, ...]
    kind: ClassVar[str] = "allow-globals"
    load_time: ClassVar[bool] = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", tuple(self.names))
        for name in self.names:
            if not re.fullmatch(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)+", name):
                raise FixError(f"{name!r} is not a dotted global name like 'module.Class'.")
            if is_malicious(name):
                raise FixError(
                    f"{name} can run code or touch the system; ckwidget will not allowlist it."
                )
            if not is_vetted(name):
                raise FixError(
                    f"{name} is not a plain data constructor ckwidget has vetted; torch's "
                    "weights-only loader would call it with arguments from the file, so "
                    "ckwidget will not allowlist it (read the weights with extract-weights)."
                )

    def describe(self) -> str:
        return (
            f"Allow {_plural(len(self.names), 'global')} the file needs "
            f"({_short(self.names)}) in torch.load's weights-only mode."
        )

    def code(self, ctx: CodeContext = CodeContext()) -> list[str]:
        lines = [import_line(n) for n in self.names]
        names = ", ".join(n.rsplit(".", 1)[1] for n in self.names)
        lines.append(f"with torch.serialization.safe_globals([{names}]):")
        return lines


def import_line(dotted: str) -> str:
    module, name = dotted.rsplit(".", 1)
    return f"from {module} import {name}"


@dataclass(frozen=True)
class ExtractWeights(Fix):
    """Read the tensors with ckwidget's safe reader where torch.load(weights_only=True)
    cannot: a whole pickled nn.Module (its class would have to run), pickle protocol 4+
    files, classes that are not importable.

    This is the one fix whose snippet needs ckwidget installed: it calls the public
    helper ``ckwidget.extract_weights(PATH, entry=...)``, since plain torch cannot read
    these files without unpickling (and so running) what they name. ``why`` says why
    torch cannot (shown in ``describe``).
    """

    why: str = field(default="", compare=False)
    kind: ClassVar[str] = "extract-weights"
    load_time: ClassVar[bool] = True

    def describe(self) -> str:
        why = f" ({self.why})" if self.why else ""
        return (
            "Read the tensors with ckwidget's safe reader, which imports and runs nothing "
            f"from the file, because torch.load(weights_only=True) cannot{why}; the "
            "code for this step needs ckwidget."
        )

    def code(self, ctx: CodeContext = CodeContext()) -> list[str]:
        return [f"{ctx.sd} = ckwidget.extract_weights({ctx.path})"]


# -- key-mapping fixes -----------------------------------------------------------------


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


@dataclass(frozen=True)
class StripPrefix(Fix):
    """Remove a prefix such as "module." (DataParallel) from every key that has it."""

    prefix: str
    kind: ClassVar[str] = "strip-prefix"
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


# -- per-key fixes (model namespace) ---------------------------------------------------


def _absent(keys: tuple[str, ...], entries: Mapping[str, Any], what: str) -> list[str]:
    gone = tuple(k for k in keys if k not in entries)
    if not gone:
        return []
    return [f"{what}: the checkpoint has no key {_short(gone)} (after the earlier fixes)."]


@dataclass(frozen=True)
class Transpose(Fix):
    """Transpose 2-D weights stored the other way round (HF Conv1D vs nn.Linear)."""

    keys: tuple[str, ...]
    kind: ClassVar[str] = "transpose"

    def __post_init__(self) -> None:
        object.__setattr__(self, "keys", tuple(self.keys))

    def describe(self) -> str:
        return f"Transpose {_plural(len(self.keys), 'weight')} ({_short(self.keys)})."

    def code(self, ctx: CodeContext = CodeContext()) -> list[str]:
        keys = ", ".join(repr(k) for k in self.keys)
        return [
            f"for k in [{keys}]:",
            f"    {ctx.sd}[k] = {ctx.sd}[k].t().contiguous()",
        ]

    def transform(self, entries: dict[str, V], model: Mapping[str, TensorInfo]) -> dict[str, V]:
        out: dict[str, Any] = dict(entries)
        info_type = TensorInfo
        made: dict[tuple[Any, ...], TensorInfo] = {}
        for k in self.keys:
            v = out.get(k)
            if v is None:
                raise FixError(f"Cannot transpose {k!r}: the checkpoint has no such key.")
            shape = v.shape
            if len(shape) != 2:
                raise FixError(
                    f"Cannot transpose {k!r}: it has {len(shape)} dimensions, not 2."
                )
            if type(v) is info_type:  # a preview: metadata only, built directly
                src = v.source
                if src is None:  # frozen and sourceless: one per distinct layout, shared
                    ck = (shape, v.dtype, v.device, v.nbytes, v.layout)
                    info = made.get(ck)
                    if info is None:
                        info = made[ck] = info_type((shape[1], shape[0]), *ck[1:])
                    out[k] = info
                else:
                    out[k] = info_type((shape[1], shape[0]), v.dtype, v.device, v.nbytes,
                                       v.layout, _MappedSource(src, _transpose))
            elif _is_info(v):
                out[k] = _mapped(v, _transpose, shape=(shape[1], shape[0]))
            else:
                out[k] = _transpose(v)
        return out

    def problems(self, entries: Mapping[str, Any], model: Mapping[str, TensorInfo]) -> list[str]:
        out = _absent(self.keys, entries, "transpose")
        bad = tuple(k for k in self.keys if k in entries and len(entries[k].shape) != 2)
        if bad:
            out.append(f"transpose: {_short(bad)} is not 2-D.")
        return out


def _transpose(t: torch.Tensor) -> torch.Tensor:
    return t.t().contiguous()


@dataclass(frozen=True)
class DropKeys(Fix):
    """Leave some checkpoint keys out and load the rest (partial loading, strict=False).

    ``keys`` may be empty: the plan then only opts in to partial loading, and the
    model tensors the checkpoint lacks keep their initial values.
    """

    keys: tuple[str, ...] = ()
    reason: str = ""
    kind: ClassVar[str] = "drop-keys"

    def __post_init__(self) -> None:
        object.__setattr__(self, "keys", tuple(self.keys))

    def describe(self) -> str:
        why = f" ({self.reason})" if self.reason else ""
        if not self.keys:
            return f"Load what matches and keep the model's initial values for the rest{why}."
        return (
            f"Skip {_plural(len(self.keys), 'checkpoint key')} ({_short(self.keys)}){why} "
            "and load the rest with strict=False."
        )

    def code(self, ctx: CodeContext = CodeContext()) -> list[str]:
        if not self.keys:
            return []
        lines = ["drop = {"]
        lines += [f"    {k!r}," for k in self.keys]
        lines.append("}")
        lines.append(f"{ctx.sd} = {{k: v for k, v in {ctx.sd}.items() if k not in drop}}")
        return lines

    def transform(self, entries: dict[str, V], model: Mapping[str, TensorInfo]) -> dict[str, V]:
        drop = set(self.keys)
        return {k: v for k, v in entries.items() if k not in drop}

    def problems(self, entries: Mapping[str, Any], model: Mapping[str, TensorInfo]) -> list[str]:
        if self.keys and not any(k in entries for k in self.keys):
            return [f"drop-keys: none of {_short(self.keys)} is in the checkpoint."]
        return []


def torch_dtype(name: str) -> torch.dtype:
    import torch

    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise FixError(f"{name!r} is not a torch dtype.")
    return dtype


@dataclass(frozen=True)
class CastDtype(Fix):
    """Convert tensors to ``dtype`` (all floating ones when ``keys`` is empty)."""

    dtype: str
    keys: tuple[str, ...] = ()
    kind: ClassVar[str] = "cast-dtype"

    def __post_init__(self) -> None:
        object.__setattr__(self, "dtype", str(self.dtype).removeprefix("torch."))
        object.__setattr__(self, "keys", tuple(self.keys))
        if self.dtype not in DTYPE_SIZES:
            raise FixError(f"{self.dtype!r} is not a dtype ckwidget knows.")

    def describe(self) -> str:
        which = (
            "every floating-point tensor"
            if not self.keys
            else f"{_plural(len(self.keys), 'tensor')} ({_short(self.keys)})"
        )
        return f"Convert {which} to {self.dtype}."

    def code(self, ctx: CodeContext = CodeContext()) -> list[str]:
        to = f"v.to(torch.{self.dtype})"
        if not self.keys:
            return [
                f"{ctx.sd} = {{k: {to} if v.is_floating_point() else v "
                f"for k, v in {ctx.sd}.items()}}"
            ]
        keys = ", ".join(repr(k) for k in self.keys)
        return [
            f"cast = {{{keys}}}",
            f"{ctx.sd} = {{k: {to} if k in cast else v for k, v in {ctx.sd}.items()}}",
        ]

    def _selected(self, k: str, v: Any) -> bool:
        if self.keys:
            return k in self.keys
        if _is_info(v):
            return v.dtype in FLOATING_DTYPES
        return bool(v.is_floating_point())

    def transform(self, entries: dict[str, V], model: Mapping[str, TensorInfo]) -> dict[str, V]:
        out: dict[str, Any] = {}
        size = DTYPE_SIZES[self.dtype]
        for k, v in entries.items():
            if not self._selected(k, v):
                out[k] = v
            elif _is_info(v):
                dtype = torch_dtype_lazy(self.dtype)
                out[k] = _mapped(v, dtype, dtype=self.dtype, nbytes=v.numel * size)  # type: ignore[attr-defined]
            else:
                out[k] = v.to(torch_dtype(self.dtype))  # type: ignore[attr-defined]
        return out

    def problems(self, entries: Mapping[str, Any], model: Mapping[str, TensorInfo]) -> list[str]:
        return _absent(self.keys, entries, "cast-dtype")


def torch_dtype_lazy(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function casting to ``name``, resolving the dtype only when called."""

    def cast(t: torch.Tensor) -> torch.Tensor:
        return t.to(torch_dtype(name))

    return cast


def resize_into(current: torch.Tensor, stored: torch.Tensor) -> torch.Tensor:
    """A copy of the model's ``current`` tensor with the overlapping slice from ``stored``."""
    new = current.detach().clone()
    overlap = tuple(slice(0, min(a, b)) for a, b in zip(new.shape, stored.shape))
    new[overlap] = stored[overlap]
    return new


@dataclass(frozen=True)
class ResizeCopy(Fix):
    """Copy the overlapping slice of resized tensors; the rest keeps the model's values."""

    keys: tuple[str, ...]
    kind: ClassVar[str] = "resize-copy"

    def __post_init__(self) -> None:
        object.__setattr__(self, "keys", tuple(self.keys))

    def describe(self) -> str:
        return (
            f"Copy the overlapping part of {_plural(len(self.keys), 'resized tensor')} "
            f"({_short(self.keys)}); the rest keeps the model's current values."
        )

    def code(self, ctx: CodeContext = CodeContext()) -> list[str]:
        keys = ", ".join(repr(k) for k in self.keys)
        return [
            f"current = {ctx.model}.state_dict()",
            f"for k in [{keys}]:",
            "    new = current[k].detach().clone()",
            f"    old = {ctx.sd}[k]",
            "    overlap = tuple(slice(0, min(a, b)) for a, b in zip(new.shape, old.shape))",
            "    new[overlap] = old[overlap]",
            f"    {ctx.sd}[k] = new",
        ]

    def transform(self, entries: dict[str, V], model: Mapping[str, TensorInfo]) -> dict[str, V]:
        out: dict[str, Any] = dict(entries)
        for k in self.keys:
            if k not in out or k not in model:
                side = "checkpoint" if k not in out else "model"
                raise FixError(f"Cannot resize {k!r}: the {side} has no such key.")
            v, m = out[k], model[k]
            if len(v.shape) != len(m.shape):
                raise FixError(
                    f"Cannot resize {k!r}: the checkpoint has {len(v.shape)} dimensions "
                    f"and the model {len(m.shape)}."
                )
            if _is_info(v):
                out[k] = replace(m, source=None)
                continue
            if m.source is None or m.layout == "meta" or m.device == "meta":
                raise FixError(
                    f"Cannot resize {k!r}: the model's tensor has no values to keep "
                    "(meta device); materialise the model first."
                )
            out[k] = resize_into(m.source.load(), v)
        return out

    def problems(self, entries: Mapping[str, Any], model: Mapping[str, TensorInfo]) -> list[str]:
        out = _absent(self.keys, entries, "resize-copy")
        out += [f"resize-copy: the model has no tensor {k!r}." for k in self.keys if k not in model]
        bad = tuple(
            k for k in self.keys
            if k in entries and k in model and len(entries[k].shape) != len(model[k].shape)
        )
        if bad:
            out.append(f"resize-copy: {_short(bad)} has a different number of dimensions.")
        return out


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


def fold_weight_norm(g: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``g * v / ||v||``: the weight a weight-normed layer computes (and
    ``remove_weight_norm`` stores), from its magnitude ``g`` and direction ``v``."""
    import torch

    dims = norm_dims(tuple(g.shape), tuple(v.shape))
    if dims is None:
        raise FixError(f"A weight-norm magnitude of shape {list(g.shape)} does not fit a "
                       f"direction of shape {list(v.shape)}.")
    return v * (g / torch.linalg.vector_norm(v, dim=dims, keepdim=True))


@dataclass(frozen=True)
class FoldWeightNorm(Fix):
    """Fold weight-norm pairs into plain weights, for a model built without weight norm
    (or after ``remove_weight_norm``): each ``(g, v, weight)`` becomes
    ``weight = g * v / ||v||``, the norm over the dimensions where ``g`` has size 1."""

    folds: tuple[tuple[str, str, str], ...]
    kind: ClassVar[str] = "fold-weight-norm"
    maps_keys: ClassVar[bool] = True  # two keys become one: the alignment cannot map it

    def __post_init__(self) -> None:
        object.__setattr__(self, "folds", tuple(tuple(f) for f in self.folds))

    def describe(self) -> str:
        targets = tuple(w for _, _, w in self.folds)
        return (f"Fold {_plural(len(self.folds), 'weight-norm pair')} into plain weights "
                f"({_short(targets)}): weight = g * v / ||v||.")

    def code(self, ctx: CodeContext = CodeContext()) -> list[str]:
        lines = ["folds = ["]
        lines += [f"    ({g!r}, {v!r}, {w!r})," for g, v, w in self.folds]
        lines += [
            "]",
            "for g_key, v_key, w_key in folds:  # weight = g * v / ||v||, as weight_norm does",
            f"    g, v = {ctx.sd}.pop(g_key), {ctx.sd}.pop(v_key)",
            "    dims = [d for d in range(v.dim()) if g.dim() == 0 or g.shape[d] == 1]",
            f"    {ctx.sd}[w_key] = v * (g / torch.linalg.vector_norm(v, dim=dims, keepdim=True))",
        ]
        return lines

    def transform(self, entries: dict[str, V], model: Mapping[str, TensorInfo]) -> dict[str, V]:
        out: dict[str, Any] = dict(entries)
        for g_key, v_key, w_key in self.folds:
            if g_key not in out or v_key not in out:
                gone = g_key if g_key not in out else v_key
                raise FixError(f"Cannot fold weight norm into {w_key!r}: the checkpoint has "
                               f"no key {gone!r}.")
            g, v = out.pop(g_key), out.pop(v_key)
            if norm_dims(tuple(g.shape), tuple(v.shape)) is None:
                raise FixError(f"Cannot fold weight norm into {w_key!r}: {g_key} has shape "
                               f"{list(g.shape)}, which is no magnitude of {v_key}'s "
                               f"{list(v.shape)}.")
            if _is_info(v):
                out[w_key] = _folded_info(g, v)
            else:
                out[w_key] = fold_weight_norm(g, v)
        return out

    def problems(self, entries: Mapping[str, Any], model: Mapping[str, TensorInfo]) -> list[str]:
        keys = tuple(k for g, v, _ in self.folds for k in (g, v))
        return _absent(keys, entries, "fold-weight-norm")


class _FoldedSource:
    """The folded weight of two sources, computed on read."""

    __slots__ = ("g", "v")

    def __init__(self, g: Any, v: Any) -> None:
        self.g = g
        self.v = v

    def load(self) -> torch.Tensor:
        return fold_weight_norm(self.g.load(), self.v.load())


def _folded_info(g: TensorInfo, v: TensorInfo) -> TensorInfo:
    source = (_FoldedSource(g.source, v.source)
              if g.source is not None and v.source is not None else None)
    return TensorInfo(v.shape, v.dtype, v.device, v.nbytes, v.layout, source)


def weight_norm_magnitude(w: torch.Tensor, g_shape: tuple[int, ...]) -> torch.Tensor:
    """``||w||`` over the dimensions where a weight-norm magnitude of ``g_shape`` has size
    1 (all of them for a 0-d one), shaped as that magnitude: what ``weight_norm`` stores
    as ``g`` when it wraps a layer whose weight is ``w``."""
    import torch

    dims = [d for d in range(w.dim()) if len(g_shape) == 0 or g_shape[d] == 1]
    return torch.linalg.vector_norm(w, dim=dims, keepdim=True).reshape(g_shape)


@dataclass(frozen=True)
class UnfoldWeightNorm(Fix):
    """Split plain weights into the magnitude and direction of a model with weight norm
    (``weight_g``/``weight_v``, or ``parametrizations.weight.original0/1``): ``g = ||w||``
    shaped as the model's ``g``, ``v = w``; what ``weight_norm`` does to a layer it wraps,
    so the layer computes the same weight."""

    unfolds: tuple[tuple[str, str, str, tuple[int, ...]], ...]  # (weight, g, v, g shape)
    kind: ClassVar[str] = "unfold-weight-norm"
    maps_keys: ClassVar[bool] = True  # one key becomes two: no alignment maps it

    def __post_init__(self) -> None:
        object.__setattr__(self, "unfolds", tuple(
            (str(w), str(g), str(v), tuple(int(d) for d in shape))
            for w, g, v, shape in self.unfolds))

    def describe(self) -> str:
        weights = tuple(w for w, _, _, _ in self.unfolds)
        return (f"Split {_plural(len(weights), 'plain weight')} ({_short(weights)}) into "
                "weight norm's magnitude and direction: g = ||w||, v = w.")

    def code(self, ctx: CodeContext = CodeContext()) -> list[str]:
        lines = ["unfolds = ["]
        lines += [f"    ({w!r}, {g!r}, {v!r}, {list(shape)!r}),"
                  for w, g, v, shape in self.unfolds]
        lines += [
            "]",
            "for w_key, g_key, v_key, g_shape in unfolds:  # g = ||w||, v = w, as weight_norm",
            f"    w = {ctx.sd}.pop(w_key)",
            "    dims = [d for d in range(w.dim()) if not g_shape or g_shape[d] == 1]",
            f"    {ctx.sd}[g_key] = torch.linalg.vector_norm(w, dim=dims, keepdim=True)"
            ".reshape(g_shape)",
            f"    {ctx.sd}[v_key] = w",
        ]
        return lines

    def transform(self, entries: dict[str, V], model: Mapping[str, TensorInfo]) -> dict[str, V]:
        out: dict[str, Any] = dict(entries)
        for w_key, g_key, v_key, g_shape in self.unfolds:
            if w_key not in out:
                raise FixError(f"Cannot split {w_key!r} for weight norm: the checkpoint has "
                               "no such key.")
            w = out.pop(w_key)
            if norm_dims(g_shape, tuple(w.shape)) is None:
                raise FixError(f"Cannot split {w_key!r} for weight norm: a magnitude of shape "
                               f"{list(g_shape)} does not fit a weight of shape "
                               f"{list(w.shape)}.")
            if _is_info(w):
                count = 1
                for d in g_shape:
                    count *= d
                size = DTYPE_SIZES.get(w.dtype, 1)
                out[g_key] = _mapped(w, _magnitude(g_shape), shape=g_shape,
                                     nbytes=count * size)
                out[v_key] = w
            else:
                out[g_key] = weight_norm_magnitude(w, g_shape)
                out[v_key] = w
        return out

    def problems(self, entries: Mapping[str, Any], model: Mapping[str, TensorInfo]) -> list[str]:
        return _absent(tuple(w for w, _, _, _ in self.unfolds), entries, "unfold-weight-norm")


def _magnitude(g_shape: tuple[int, ...]) -> Callable[[torch.Tensor], torch.Tensor]:
    def magnitude(w: torch.Tensor) -> torch.Tensor:
        return weight_norm_magnitude(w, g_shape)

    return magnitude


class _JoinedSource:
    """Tensors of several sources, concatenated along dimension 0 on read."""

    __slots__ = ("parts",)

    def __init__(self, parts: tuple[Any, ...]) -> None:
        self.parts = parts

    def load(self) -> torch.Tensor:
        import torch

        return torch.cat([p.load() for p in self.parts])


class _RowsSource:
    """Rows ``start:stop`` of another source's tensor, as a tensor of their own."""

    __slots__ = ("inner", "start", "stop")

    def __init__(self, inner: Any, start: int, stop: int) -> None:
        self.inner = inner
        self.start = start
        self.stop = stop

    def load(self) -> torch.Tensor:
        return self.inner.load()[self.start:self.stop].clone()


@dataclass(frozen=True)
class FuseKeys(Fix):
    """Concatenate tensors stored apart into the one tensor the model holds, along the
    first dimension: separate q/k/v projections into a fused ``in_proj_weight`` or
    ``qkv.weight`` (in the order given: query, key, value)."""

    groups: tuple[tuple[tuple[str, ...], str], ...]
    kind: ClassVar[str] = "fuse-keys"
    maps_keys: ClassVar[bool] = True  # several keys become one: no alignment maps it

    def __post_init__(self) -> None:
        object.__setattr__(self, "groups", tuple((tuple(p), t) for p, t in self.groups))

    def describe(self) -> str:
        targets = tuple(t for _, t in self.groups)
        return (f"Concatenate separately stored parts into {_plural(len(targets), 'tensor')} "
                f"({_short(targets)}), in query, key, value order.")

    def code(self, ctx: CodeContext = CodeContext()) -> list[str]:
        lines = ["fuse = ["]
        lines += [f"    ({list(parts)!r}, {target!r})," for parts, target in self.groups]
        lines += [
            "]",
            "for parts, target in fuse:",
            f"    {ctx.sd}[target] = torch.cat([{ctx.sd}.pop(k) for k in parts])",
        ]
        return lines

    def transform(self, entries: dict[str, V], model: Mapping[str, TensorInfo]) -> dict[str, V]:
        out: dict[str, Any] = dict(entries)
        for parts, target in self.groups:
            gone = [k for k in parts if k not in out]
            if gone:
                raise FixError(f"Cannot build {target!r}: the checkpoint has no key "
                               f"{gone[0]!r}.")
            values = [out.pop(k) for k in parts]
            rest = {tuple(v.shape[1:]) for v in values}
            if len(rest) != 1 or any(len(v.shape) == 0 for v in values):
                raise FixError(f"Cannot build {target!r}: its parts differ beyond their first "
                               f"dimension ({', '.join(str(list(v.shape)) for v in values)}).")
            if _is_info(values[0]):
                first = values[0]
                sources = tuple(v.source for v in values)
                source = _JoinedSource(sources) if all(s is not None for s in sources) else None
                out[target] = TensorInfo((sum(v.shape[0] for v in values), *first.shape[1:]),
                                         first.dtype, first.device,
                                         sum(v.nbytes for v in values), first.layout, source)
            else:
                import torch

                out[target] = torch.cat(values)
        return out

    def problems(self, entries: Mapping[str, Any], model: Mapping[str, TensorInfo]) -> list[str]:
        keys = tuple(k for parts, _ in self.groups for k in parts)
        return _absent(keys, entries, "fuse-keys")


@dataclass(frozen=True)
class SplitKeys(Fix):
    """Split one stored tensor into the tensors the model holds apart, along the first
    dimension, by the model's sizes: a fused ``in_proj_weight`` or ``qkv.weight`` into
    separate query, key and value projections."""

    groups: tuple[tuple[str, tuple[tuple[str, int], ...]], ...]  # source, ((part, rows), ...)
    kind: ClassVar[str] = "split-keys"
    maps_keys: ClassVar[bool] = True  # one key becomes several: no alignment maps it

    def __post_init__(self) -> None:
        object.__setattr__(self, "groups", tuple(
            (s, tuple((str(t), int(n)) for t, n in parts)) for s, parts in self.groups))

    def describe(self) -> str:
        sources = tuple(s for s, _ in self.groups)
        return (f"Split {_plural(len(sources), 'fused tensor')} ({_short(sources)}) into the "
                "separate query, key and value tensors the model holds.")

    def code(self, ctx: CodeContext = CodeContext()) -> list[str]:
        lines = ["split = ["]
        lines += [f"    ({source!r}, {[t for t, _ in parts]!r}, {[n for _, n in parts]!r}),"
                  for source, parts in self.groups]
        lines += [
            "]",
            "for source, targets, rows in split:",
            f"    pieces = torch.split({ctx.sd}.pop(source), rows)",
            "    for target, piece in zip(targets, pieces):",
            f"        {ctx.sd}[target] = piece.clone()",
        ]
        return lines

    def transform(self, entries: dict[str, V], model: Mapping[str, TensorInfo]) -> dict[str, V]:
        out: dict[str, Any] = dict(entries)
        for source, parts in self.groups:
            if source not in out:
                raise FixError(f"Cannot split {source!r}: the checkpoint has no such key.")
            value = out.pop(source)
            rows = [n for _, n in parts]
            if len(value.shape) == 0 or value.shape[0] != sum(rows):
                raise FixError(f"Cannot split {source!r} into {rows} rows: it has shape "
                               f"{list(value.shape)}.")
            start = 0
            for (target, n) in parts:
                if _is_info(value):
                    size = DTYPE_SIZES.get(value.dtype, 1)
                    count = n
                    for d in value.shape[1:]:
                        count *= d
                    src = (_RowsSource(value.source, start, start + n)
                           if value.source is not None else None)
                    out[target] = TensorInfo((n, *value.shape[1:]), value.dtype, value.device,
                                             count * size, value.layout, src)
                else:
                    out[target] = value[start:start + n].clone()
                start += n
        return out

    def problems(self, entries: Mapping[str, Any], model: Mapping[str, TensorInfo]) -> list[str]:
        return _absent(tuple(s for s, _ in self.groups), entries, "split-keys")


def squeezed(shape: tuple[int, ...]) -> tuple[int, ...]:
    """A shape without its size-1 dimensions: two shapes with the same squeezed shape hold
    the same values in the same order."""
    return tuple(d for d in shape if d != 1)


@dataclass(frozen=True)
class Reshape(Fix):
    """Give tensors the model's shape where they differ only in size-1 dimensions (a 1x1
    convolution's ``(out, in, 1, 1)`` weight for a Linear's ``(out, in)``, a ``(1, 1, d)``
    token for a ``(d,)`` one): the same values in the same order."""

    shapes: tuple[tuple[str, tuple[int, ...]], ...]  # key -> the model's shape
    kind: ClassVar[str] = "reshape"

    def __post_init__(self) -> None:
        object.__setattr__(self, "shapes", tuple((str(k), tuple(int(d) for d in shape))
                                                 for k, shape in self.shapes))

    def describe(self) -> str:
        keys = tuple(k for k, _ in self.shapes)
        return (f"Reshape {_plural(len(keys), 'tensor')} ({_short(keys)}) to the model's "
                "shape (they differ only in size-1 dimensions).")

    def code(self, ctx: CodeContext = CodeContext()) -> list[str]:
        return [f"{ctx.sd}[{k!r}] = {ctx.sd}[{k!r}].reshape({list(shape)})"
                for k, shape in self.shapes]

    def transform(self, entries: dict[str, V], model: Mapping[str, TensorInfo]) -> dict[str, V]:
        out: dict[str, Any] = dict(entries)
        for k, shape in self.shapes:
            v = out.get(k)
            if v is None:
                raise FixError(f"Cannot reshape {k!r}: the checkpoint has no such key.")
            if squeezed(tuple(v.shape)) != squeezed(shape):
                raise FixError(f"Cannot reshape {k!r} from {list(v.shape)} to {list(shape)}: "
                               "they differ in more than size-1 dimensions.")
            if _is_info(v):
                out[k] = _mapped(v, _reshaper(shape), shape=shape)
            else:
                out[k] = v.reshape(shape)
        return out

    def problems(self, entries: Mapping[str, Any], model: Mapping[str, TensorInfo]) -> list[str]:
        return _absent(tuple(k for k, _ in self.shapes), entries, "reshape")


def _reshaper(shape: tuple[int, ...]) -> Callable[[torch.Tensor], torch.Tensor]:
    def reshape(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(shape)

    return reshape


FIX_KINDS: dict[str, type[Fix]] = {
    cls.kind: cls
    for cls in (
        SelectEntry, StripPrefix, AddPrefix, RenameKeys, Transpose, DropKeys,
        MapLocation, CastDtype, AllowGlobals, ExtractWeights, ResizeCopy, FoldWeightNorm,
        FuseKeys, SplitKeys, Reshape, UnfoldWeightNorm,
    )
}

__all__ = [
    "FIX_KINDS", "AddPrefix", "AllowGlobals", "CastDtype", "CodeContext", "DropKeys",
    "ExtractWeights", "Fix", "FoldWeightNorm", "FuseKeys", "MapLocation", "RenameKeys",
    "Reshape", "ResizeCopy", "SelectEntry", "SplitKeys", "StripPrefix", "Transpose",
    "UnfoldWeightNorm",
]
