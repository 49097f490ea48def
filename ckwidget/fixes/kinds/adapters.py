"""Fix kinds for what training libraries leave in a state dict: PEFT's LoRA layers (merged
into the base weights as ``merge_and_unload()`` does) and ``torch.nn.utils.prune``'s
reparametrization (folded as the pruning hook computes it)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from ...checkpoint import TensorInfo
from ...errors import FixError
from ...formatting import shape_text
from .base import CodeContext, Fix, V, _absent, _is_info, _plural, _short

if TYPE_CHECKING:  # pragma: no cover
    import torch

# How a layer's low-rank update B @ A becomes the shape of its weight (peft's lora layers):
# "linear" nn.Linear; "transposed" transformers' Conv1D (fan_in_fan_out) and nn.Embedding
# (lora_embedding_A/B); "conv" nn.Conv2d (1x1 kernels by a matrix product, others by
# a convolution of A with B).
LORA_FORMS = ("linear", "transposed", "conv")


def lora_delta(a: torch.Tensor, b: torch.Tensor, scaling: float, form: str) -> torch.Tensor:
    """``B @ A * scaling`` in the weight's layout, as peft's ``get_delta_weight`` computes
    it on the CPU (half-precision factors multiplied in float32, the result cast back)."""
    import torch

    dtype = b.dtype
    if dtype in (torch.float16, torch.bfloat16):
        a, b = a.float(), b.float()
    if form == "conv":
        if tuple(a.shape[2:]) == (1, 1):
            delta = (b.squeeze(3).squeeze(2) @ a.squeeze(3).squeeze(2)).unsqueeze(2).unsqueeze(3)
        else:
            delta = torch.nn.functional.conv2d(a.transpose(0, 1), b).transpose(0, 1)
    else:
        delta = b @ a
        if form == "transposed":
            delta = delta.T
    return (delta * scaling).to(dtype)


def merge_lora(w: torch.Tensor, a: torch.Tensor, b: torch.Tensor, scaling: float,
               form: str) -> torch.Tensor:
    """``W + B @ A * scaling``: the weight ``merge_and_unload()`` leaves in a LoRA layer."""
    return (w + lora_delta(a, b, scaling, form)).to(w.dtype)


def merge_lora_bias(bias: torch.Tensor, b_bias: torch.Tensor, scaling: float) -> torch.Tensor:
    """The base bias plus lora_B's bias times the scaling (peft's ``lora_bias=True``)."""
    return (bias + b_bias * scaling).to(bias.dtype)


def fold_prune_mask(orig: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``weight_orig * weight_mask``, as torch.nn.utils.prune's forward pre-hook computes
    the pruned module's weight."""
    return mask.to(dtype=orig.dtype) * orig


class _LoraSource:
    """A merged LoRA weight computed from three sources on read."""

    __slots__ = ("a", "b", "form", "scaling", "w")

    def __init__(self, w: Any, a: Any, b: Any, scaling: float, form: str) -> None:
        self.w, self.a, self.b, self.scaling, self.form = w, a, b, scaling, form

    def load(self) -> torch.Tensor:
        return merge_lora(self.w.load(), self.a.load(), self.b.load(), self.scaling, self.form)


class _BiasSource:
    __slots__ = ("bias", "extra", "scaling")

    def __init__(self, bias: Any, extra: Any, scaling: float) -> None:
        self.bias, self.extra, self.scaling = bias, extra, scaling

    def load(self) -> torch.Tensor:
        return merge_lora_bias(self.bias.load(), self.extra.load(), self.scaling)


class _MaskedSource:
    __slots__ = ("mask", "orig")

    def __init__(self, orig: Any, mask: Any) -> None:
        self.orig, self.mask = orig, mask

    def load(self) -> torch.Tensor:
        return fold_prune_mask(self.orig.load(), self.mask.load())


def _derived(like: TensorInfo, source: Any) -> TensorInfo:
    return TensorInfo(like.shape, like.dtype, like.device, like.nbytes, like.layout, source)


def _both(x: Any, y: Any) -> bool:
    return x.source is not None and y.source is not None


@dataclass(frozen=True)
class MergeLora(Fix):
    """Merge PEFT LoRA layers into their base weights, for a model without adapters:
    each ``(base weight, lora_A, lora_B, weight, form)`` becomes
    ``weight = W + B @ A * scaling`` (``scaling = lora_alpha / r``, or
    ``lora_alpha / sqrt(r)`` with rsLoRA), transposed for Conv1D (fan_in_fan_out) and
    embedding layers, exactly what ``merge_and_unload()`` computes on the CPU. The base
    layers' other tensors (their bias) move to the plain names (``renames``), lora_B's
    own bias is added times the scaling (``biases``, peft's ``lora_bias=True``), and
    the frozen originals of ``modules_to_save`` are left out (``drops``)."""

    layers: tuple[tuple[str, str, str, str, str], ...]  # (base, lora_A, lora_B, weight, form)
    scaling: float
    renames: tuple[tuple[str, str], ...] = ()
    biases: tuple[tuple[str, str, str], ...] = ()  # (base bias, lora_B bias, bias)
    drops: tuple[str, ...] = ()
    alpha: str = ""  # where the scaling came from, for the snippet's comment
    kind: ClassVar[str] = "merge-lora"
    rank: ClassVar[float] = 1.5
    effect: ClassVar[str] = "merged"
    maps_keys: ClassVar[bool] = True  # three keys become one: no alignment maps it

    def __post_init__(self) -> None:
        layers = tuple((str(w), str(a), str(b), str(t), str(f)) for w, a, b, t, f in self.layers)
        bad = [f for *_, f in layers if f not in LORA_FORMS]
        if bad:
            raise ValueError(f"merge-lora: unknown layer form {bad[0]!r} (one of "
                             f"{', '.join(LORA_FORMS)}).")
        object.__setattr__(self, "layers", layers)
        object.__setattr__(self, "scaling", float(self.scaling))
        object.__setattr__(self, "renames", tuple((str(o), str(n)) for o, n in self.renames))
        object.__setattr__(self, "biases", tuple(tuple(map(str, b)) for b in self.biases))
        object.__setattr__(self, "drops", tuple(map(str, self.drops)))

    def describe(self) -> str:
        targets = tuple(t for _, _, _, t, _ in self.layers)
        parts = []
        if targets:
            parts.append(f"merge {_plural(len(targets), 'LoRA layer')} into the base "
                         f"weights ({_short(targets)}): W + B @ A * {self.scaling:g}")
        if self.drops:
            parts.append("keep the trained modules_to_save copies "
                         f"({_plural(len(self.drops), 'frozen original')} left out)")
        if not parts:
            parts.append("move the PEFT base layers' tensors to the plain names")
        text = "; ".join(parts)
        return f"{text[0].upper()}{text[1:]}, as PEFT's merge_and_unload() does."

    def code(self, ctx: CodeContext = CodeContext()) -> list[str]:
        sd = ctx.sd
        lines: list[str] = []
        if self.layers or self.biases:
            lines.append(f"scaling = {self.scaling!r}"
                         + (f"  # {self.alpha}" if self.alpha else ""))
        if self.layers:
            lines += self._layer_lines(sd)
        if self.biases:
            lines.append("lora_biases = [  # (base bias, lora_B bias, merged bias)")
            lines += [f"    ({x!r}, {y!r}, {t!r})," for x, y, t in self.biases]
            lines += [
                "]",
                "for base_key, b_key, bias_key in lora_biases:",
                f"    bias = {sd}.pop(base_key)",
                f"    {sd}[bias_key] = (bias + {sd}.pop(b_key) * scaling).to(bias.dtype)",
            ]
        if self.renames:
            lines.append("moves = {  # the base layers' other tensors, modules_to_save copies")
            lines += [f"    {old!r}: {new!r}," for old, new in self.renames]
            lines += ["}", f"{sd} = {{moves.get(k, k): v for k, v in {sd}.items()}}"]
        if self.drops:
            lines.append("frozen = {  # modules_to_save's untrained originals")
            lines += [f"    {k!r}," for k in self.drops]
            lines += ["}", f"{sd} = {{k: v for k, v in {sd}.items() if k not in frozen}}"]
        return lines

    def _layer_lines(self, sd: str) -> list[str]:
        forms = {f for *_, f in self.layers}
        lines = ["lora = [  # (base weight, lora_A, lora_B, merged weight, form)"]
        lines += [f"    ({w!r}, {a!r}, {b!r}, {t!r}, {f!r})," for w, a, b, t, f in self.layers]
        lines += [
            "]",
            "for base_key, a_key, b_key, w_key, form in lora:  # W + B @ A * scaling, as "
            "merge_and_unload()",
            f"    w, a, b = {sd}.pop(base_key), {sd}.pop(a_key), {sd}.pop(b_key)",
            "    dtype = b.dtype",
            "    if dtype in (torch.float16, torch.bfloat16):  # multiplied in float32, as peft",
            "        a, b = a.float(), b.float()",
        ]
        if "conv" in forms:
            lines += [
                "    if form == 'conv' and tuple(a.shape[2:]) == (1, 1):",
                "        delta = (b.squeeze(3).squeeze(2) @ a.squeeze(3).squeeze(2))"
                ".unsqueeze(2).unsqueeze(3)",
                "    elif form == 'conv':",
                "        delta = torch.nn.functional.conv2d(a.transpose(0, 1), b).transpose(0, 1)",
                "    else:",
                "        delta = b @ a",
            ]
        else:
            lines.append("    delta = b @ a")
        if "transposed" in forms:
            lines += [
                "    if form == 'transposed':  # Conv1D (fan_in_fan_out) and embeddings",
                "        delta = delta.T",
            ]
        lines.append(f"    {sd}[w_key] = (w + (delta * scaling).to(dtype)).to(w.dtype)")
        return lines

    def transform(self, entries: dict[str, V], model: Mapping[str, TensorInfo]) -> dict[str, V]:
        out: dict[str, Any] = dict(entries)
        for base, a_key, b_key, target, form in self.layers:
            gone = next((k for k in (base, a_key, b_key) if k not in out), None)
            if gone is not None:
                raise FixError(f"Cannot merge LoRA into {target!r}: the checkpoint has no key "
                               f"{gone!r}.")
            w, a, b = out.pop(base), out.pop(a_key), out.pop(b_key)
            problem = lora_shape_problem(tuple(w.shape), tuple(a.shape), tuple(b.shape), form)
            if problem:
                raise FixError(f"Cannot merge LoRA into {target!r}: {problem}.")
            if _is_info(w):
                source = (_LoraSource(w.source, a.source, b.source, self.scaling, form)
                          if _both(w, a) and b.source is not None else None)
                out[target] = _derived(w, source)
            else:
                out[target] = merge_lora(w, a, b, self.scaling, form)
        for base, extra, target in self.biases:
            gone = next((k for k in (base, extra) if k not in out), None)
            if gone is not None:
                raise FixError(f"Cannot merge LoRA's bias into {target!r}: the checkpoint "
                               f"has no key {gone!r}.")
            bias, add = out.pop(base), out.pop(extra)
            if tuple(bias.shape) != tuple(add.shape):
                raise FixError(f"Cannot merge LoRA's bias into {target!r}: "
                               f"{shape_text(bias.shape)} and {shape_text(add.shape)} differ.")
            if _is_info(bias):
                out[target] = _derived(bias, _BiasSource(bias.source, add.source, self.scaling)
                                       if _both(bias, add) else None)
            else:
                out[target] = merge_lora_bias(bias, add, self.scaling)
        if self.renames:
            moves = dict(self.renames)
            out = {moves.get(k, k): v for k, v in out.items()}
        if self.drops:
            frozen = set(self.drops)
            out = {k: v for k, v in out.items() if k not in frozen}
        return out

    def problems(self, entries: Mapping[str, Any], model: Mapping[str, TensorInfo]) -> list[str]:
        keys = tuple(k for w, a, b, _, _ in self.layers for k in (w, a, b))
        keys += tuple(k for x, y, _ in self.biases for k in (x, y))
        keys += tuple(old for old, _ in self.renames)
        return _absent(keys, entries, "merge-lora")


def lora_shape_problem(w: tuple[int, ...], a: tuple[int, ...], b: tuple[int, ...],
                       form: str) -> str:
    """Why lora_A of shape ``a`` and lora_B of shape ``b`` cannot update a weight of shape
    ``w`` in ``form`` ("" when they can)."""
    if form == "conv":
        fits = (len(w) == 4 and len(a) == 4 and len(b) == 4 and a[0] == b[1]
                and b[0] == w[0] and a[1] == w[1]
                and (tuple(a[2:]) == tuple(w[2:]) and tuple(b[2:]) == (1, 1)))
    else:
        want = w[::-1] if form == "transposed" else w
        fits = (len(w) == 2 and len(a) == 2 and len(b) == 2 and a[0] == b[1]
                and (b[0], a[1]) == tuple(want))
    if fits:
        return ""
    return (f"lora_B {list(b)} @ lora_A {list(a)} does not make a {form} update of a weight "
            f"of shape {list(w)}")


@dataclass(frozen=True)
class FoldPruneMask(Fix):
    """Fold torch.nn.utils.prune's reparametrization into plain weights, for a model that
    is not pruned (or after ``prune.remove``): each ``(orig, mask, weight)`` becomes
    ``weight = weight_orig * weight_mask``, what the pruning hook computes before each
    forward (the pruned module's ``weight`` is a plain attribute, not in its state dict)."""

    folds: tuple[tuple[str, str, str], ...]  # (weight_orig, weight_mask, weight)
    kind: ClassVar[str] = "fold-prune-mask"
    rank: ClassVar[float] = 1.5
    effect: ClassVar[str] = "folded"
    maps_keys: ClassVar[bool] = True  # two keys become one: no alignment maps it

    def __post_init__(self) -> None:
        object.__setattr__(self, "folds", tuple(tuple(map(str, f)) for f in self.folds))

    def describe(self) -> str:
        targets = tuple(w for _, _, w in self.folds)
        return (f"Fold {_plural(len(targets), 'pruned weight')} ({_short(targets)}) into plain "
                "tensors: weight = weight_orig * weight_mask, as torch.nn.utils.prune "
                "computes it.")

    def code(self, ctx: CodeContext = CodeContext()) -> list[str]:
        lines = ["pruned = [  # (weight_orig, weight_mask, weight)"]
        lines += [f"    ({o!r}, {m!r}, {w!r})," for o, m, w in self.folds]
        lines += [
            "]",
            "for orig_key, mask_key, w_key in pruned:  # as torch.nn.utils.prune computes it",
            f"    orig, mask = {ctx.sd}.pop(orig_key), {ctx.sd}.pop(mask_key)",
            f"    {ctx.sd}[w_key] = mask.to(dtype=orig.dtype) * orig",
        ]
        return lines

    def transform(self, entries: dict[str, V], model: Mapping[str, TensorInfo]) -> dict[str, V]:
        out: dict[str, Any] = dict(entries)
        for o_key, m_key, w_key in self.folds:
            gone = o_key if o_key not in out else m_key if m_key not in out else None
            if gone is not None:
                raise FixError(f"Cannot fold the pruning mask into {w_key!r}: the checkpoint "
                               f"has no key {gone!r}.")
            orig, mask = out.pop(o_key), out.pop(m_key)
            if tuple(orig.shape) != tuple(mask.shape):
                raise FixError(f"Cannot fold the pruning mask into {w_key!r}: {o_key} has "
                               f"shape {shape_text(orig.shape)} and {m_key} "
                               f"{shape_text(mask.shape)}.")
            if _is_info(orig):
                out[w_key] = _derived(orig, _MaskedSource(orig.source, mask.source)
                                      if _both(orig, mask) else None)
            else:
                out[w_key] = fold_prune_mask(orig, mask)
        return out

    def problems(self, entries: Mapping[str, Any], model: Mapping[str, TensorInfo]) -> list[str]:
        return _absent(tuple(k for o, m, _ in self.folds for k in (o, m)), entries,
                       "fold-prune-mask")
