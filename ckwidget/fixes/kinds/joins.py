"""Fix kinds that join or split tensors: weight norm's folds, fused and split projections."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from ...checkpoint import DTYPE_SIZES, TensorInfo
from ...errors import FixError
from ...formatting import shape_text
from ...rules import norm_dims
from .base import (
    CodeContext,
    Fix,
    V,
    _absent,
    _is_info,
    _mapped,
    _plural,
    _short,
)

if TYPE_CHECKING:  # pragma: no cover
    import torch


def fold_weight_norm(g: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``g * v / ||v||``: the weight a weight-normed layer computes (and
    ``remove_weight_norm`` stores), from its magnitude ``g`` and direction ``v``."""
    import torch

    dims = norm_dims(tuple(g.shape), tuple(v.shape))
    if dims is None:
        raise FixError(f"A weight-norm magnitude of shape {shape_text(g.shape)} does not fit a "
                       f"direction of shape {shape_text(v.shape)}.")
    # torch's own kernel, as weight_norm and parametrizations.weight_norm compute it: the
    # same formula written out differs from it in the last bit of some elements
    return torch._weight_norm(v, g, kept_dim(tuple(g.shape), tuple(v.shape)))


def kept_dim(g_shape: tuple[int, ...], v_shape: tuple[int, ...]) -> int:
    """The ``dim`` weight_norm was made with (the one dimension ``g`` keeps), or -1 when
    ``g`` norms the whole tensor (``dim=None``)."""
    if len(g_shape) != len(v_shape):
        return -1
    return next((d for d, n in enumerate(g_shape) if n != 1), -1)


@dataclass(frozen=True)
class FoldWeightNorm(Fix):
    """Fold weight-norm pairs into plain weights, for a model built without weight norm
    (or after ``remove_weight_norm``): each ``(g, v, weight)`` becomes
    ``weight = g * v / ||v||``, the norm over the dimensions where ``g`` has size 1."""

    folds: tuple[tuple[str, str, str], ...]
    kind: ClassVar[str] = "fold-weight-norm"
    rank: ClassVar[float] = 1.5
    effect: ClassVar[str] = "folded"
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
            "    # the dimension g keeps (-1: g norms the whole tensor), then torch's own kernel",
            "    kept = [d for d in range(g.dim()) if g.dim() == v.dim() and g.shape[d] != 1]",
            "    dim = kept[0] if kept else -1",
            f"    {ctx.sd}[w_key] = torch._weight_norm(v, g, dim)",
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
                               f"{shape_text(g.shape)}, which is no magnitude of {v_key}'s "
                               f"{shape_text(v.shape)}.")
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

    # torch's own kernel, as weight_norm computes g when it wraps a layer
    return torch.norm_except_dim(w, 2, kept_dim(g_shape, tuple(w.shape))).reshape(g_shape)


@dataclass(frozen=True)
class UnfoldWeightNorm(Fix):
    """Split plain weights into the magnitude and direction of a model with weight norm
    (``weight_g``/``weight_v``, or ``parametrizations.weight.original0/1``): ``g = ||w||``
    shaped as the model's ``g``, ``v = w``; what ``weight_norm`` does to a layer it wraps,
    so the layer computes the same weight."""

    unfolds: tuple[tuple[str, str, str, tuple[int, ...]], ...]  # (weight, g, v, g shape)
    kind: ClassVar[str] = "unfold-weight-norm"
    rank: ClassVar[float] = 1.5
    effect: ClassVar[str] = "unfolded"
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
            "    kept = [d for d in range(w.dim()) if len(g_shape) == w.dim() and g_shape[d] != 1]",
            f"    {ctx.sd}[g_key] = torch.norm_except_dim(w, 2, kept[0] if kept else -1)"
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
                               f"{shape_text(g_shape)} does not fit a weight of shape "
                               f"{shape_text(w.shape)}.")
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
    rank: ClassVar[float] = 1.5
    effect: ClassVar[str] = "merged"
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
                               f"dimension ({', '.join(shape_text(v.shape) for v in values)}).")
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
    rank: ClassVar[float] = 1.5
    effect: ClassVar[str] = "split"
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
                               f"{shape_text(value.shape)}.")
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
