"""Per-key fix kinds (the model's namespace): transpose, drop, cast, resize, reshape."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar

from ...checkpoint import DTYPE_SIZES, TensorInfo
from ...errors import FixError
from ...formatting import shape_text
from ...rules import squeezed
from .base import (
    FLOATING_DTYPES,
    CodeContext,
    Fix,
    MergesByKeys,
    V,
    _absent,
    _is_info,
    _mapped,
    _MappedSource,
    _plural,
    _short,
)

if TYPE_CHECKING:  # pragma: no cover
    import torch


@dataclass(frozen=True)
class Transpose(MergesByKeys, Fix):
    """Transpose 2-D weights stored the other way round (HF Conv1D vs nn.Linear)."""

    keys: tuple[str, ...]
    kind: ClassVar[str] = "transpose"
    rank: ClassVar[float] = 3
    effect: ClassVar[str] = "transposed"

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
    rank: ClassVar[float] = 2
    merges: ClassVar[bool] = True
    keyed: ClassVar[bool] = True
    leaves_values_out: ClassVar[bool] = True

    @classmethod
    def merged(cls, fixes: list[Fix]) -> list[Fix]:
        keys = dict.fromkeys(k for f in fixes for k in f.keys)  # type: ignore[attr-defined]
        reasons = dict.fromkeys(f.reason for f in fixes if f.reason)  # type: ignore[attr-defined]
        return [cls(tuple(keys), "; ".join(reasons))]

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
    rank: ClassVar[float] = 5
    effect: ClassVar[str] = "cast"
    merges: ClassVar[bool] = True
    keyed: ClassVar[bool] = True

    @classmethod
    def merged(cls, fixes: list[Fix]) -> list[Fix]:
        by_dtype: dict[str, dict[str, None]] = {}
        for f in fixes:
            by_dtype.setdefault(f.dtype, {}).update(dict.fromkeys(f.keys))  # type: ignore[attr-defined]
        return [cls(dtype, tuple(keys)) for dtype, keys in by_dtype.items()]

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
class ResizeCopy(MergesByKeys, Fix):
    """Copy the overlapping slice of resized tensors; the rest keeps the model's values."""

    keys: tuple[str, ...]
    kind: ClassVar[str] = "resize-copy"
    rank: ClassVar[float] = 4
    leaves_values_out: ClassVar[bool] = True  # the rows beyond the model's size
    effect: ClassVar[str] = "resized"

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



@dataclass(frozen=True)
class Reshape(Fix):
    """Give tensors the model's shape where they differ only in size-1 dimensions (a 1x1
    convolution's ``(out, in, 1, 1)`` weight for a Linear's ``(out, in)``, a ``(1, 1, d)``
    token for a ``(d,)`` one): the same values in the same order."""

    shapes: tuple[tuple[str, tuple[int, ...]], ...]  # key -> the model's shape
    kind: ClassVar[str] = "reshape"
    rank: ClassVar[float] = 3
    effect: ClassVar[str] = "reshaped"

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
                raise FixError(f"Cannot reshape {k!r} from {shape_text(v.shape)} to "
                               f"{shape_text(shape)}: they differ in more than size-1 dimensions.")
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
