"""Sampled tensor statistics for the widget's plots.

Why sampled: a checkpoint can hold gigabytes; plots need only a picture. Each tensor
contributes at most ``max_elements`` values, taken at an even stride through its
flattened storage, so the bytes touched per tensor are bounded (the reader memory-maps
the file, so only the sampled pages are read). NaN/Inf counts, mean, std and abs-max
are computed over the sample; ``exact`` says whether the sample was the whole tensor.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from .checkpoint import Checkpoint

MAX_ELEMENTS = 65_536
"""Default cap on sampled elements per tensor (256 KiB of float32)."""

_UNSUPPORTED_LAYOUTS = {"meta", "sparse_coo", "nested", "subclass"}


@dataclass(frozen=True)
class TensorStats:
    """Summary of one tensor, from a bounded sample of its values."""

    key: str
    shape: tuple[int, ...]
    dtype: str
    numel: int
    sampled: int
    nan: int
    inf: int
    mean: float
    std: float
    absmax: float
    minimum: float
    maximum: float
    error: str = ""
    zeros: int = 0  # sampled values exactly 0

    @property
    def exact(self) -> bool:
        """True when every element was looked at (counts are exact, not estimates)."""
        return self.sampled == self.numel

    @property
    def nonfinite(self) -> int:
        return self.nan + self.inf

    @property
    def zeros_pct(self) -> float:
        """Share of the sampled values that are exactly 0, in percent (nan: none read)."""
        return 100.0 * self.zeros / self.sampled if self.sampled else float("nan")


def sample_tensor(tensor: torch.Tensor, max_elements: int = MAX_ELEMENTS) -> np.ndarray:
    """At most ``max_elements`` values of ``tensor`` as float64, evenly strided.

    Contiguous tensors are sampled through a strided view, so a memory-mapped tensor
    only pages in what is sampled. Integer and boolean tensors are converted to float;
    complex tensors contribute their magnitudes; quantized ones are dequantized.
    """
    import torch

    t = tensor.detach()
    if t.is_meta or t.is_sparse:
        raise ValueError("a meta or sparse tensor has no values to sample")
    if t.is_quantized:
        t = t.dequantize()
    n = t.numel()
    if n == 0:
        return np.empty(0, dtype=np.float64)
    cap = max(1, max_elements)
    flat = t.reshape(-1) if t.is_contiguous() else _strided_rows(t, math.ceil(n / cap))
    step = max(1, math.ceil(flat.numel() / cap))
    sample = flat[::step][:cap] if flat.numel() > cap else flat
    if sample.device.type != "cpu":
        sample = sample.cpu()
    if sample.is_complex():
        sample = sample.abs()
    if sample.dtype != torch.float64:
        sample = sample.to(torch.float64)
    return sample.contiguous().numpy()


def _strided_rows(t: torch.Tensor, step: int) -> torch.Tensor:
    """A flat sample of a non-contiguous tensor without copying all of it."""
    if t.dim() >= 2 and t.shape[0] > 1 and step > 1:
        row_step = max(1, min(t.shape[0], step))
        return t[::row_step].reshape(-1)
    return t.reshape(-1)


def stats_of(
    key: str, tensor: torch.Tensor, max_elements: int = MAX_ELEMENTS
) -> TensorStats:
    """Statistics of one live tensor, from a bounded sample."""
    return sampled(key, tensor, max_elements)[0]


def sampled(
    key: str, tensor: torch.Tensor, max_elements: int = MAX_ELEMENTS
) -> tuple[TensorStats, np.ndarray | None, bool]:
    """Statistics of one live tensor, its sampled values (None when they could not be
    read) and whether they were taken at aligned positions (:func:`aligned`)."""
    shape = tuple(int(s) for s in tensor.shape)
    dtype = str(tensor.dtype).removeprefix("torch.")
    try:
        values = sample_tensor(tensor, max_elements)
    except (ValueError, RuntimeError, TypeError) as exc:
        return _failed(key, shape, dtype, int(tensor.numel()), str(exc)), None, False
    stats = summarise(key, shape, dtype, int(tensor.numel()), values)
    return stats, values, aligned(tensor, max_elements)


def summarise(
    key: str, shape: tuple[int, ...], dtype: str, numel: int, values: np.ndarray
) -> TensorStats:
    """TensorStats from already-sampled values (finite statistics ignore NaN/Inf)."""
    nan_mask = np.isnan(values)
    inf_mask = np.isinf(values)
    finite = values[~(nan_mask | inf_mask)]
    if finite.size:
        mean, std = float(finite.mean()), float(finite.std())
        lo, hi = float(finite.min()), float(finite.max())
        absmax = max(abs(lo), abs(hi))
    else:
        mean = std = absmax = lo = hi = float("nan")
    return TensorStats(
        key, shape, dtype, numel, int(values.size), int(nan_mask.sum()),
        int(inf_mask.sum()), mean, std, absmax, lo, hi,
        zeros=int(np.count_nonzero(finite == 0)),
    )


def _failed(key: str, shape: tuple[int, ...], dtype: str, numel: int, why: str) -> TensorStats:
    nan = float("nan")
    return TensorStats(key, shape, dtype, numel, 0, 0, 0, nan, nan, nan, nan, nan, why)


def checkpoint_sample(
    ckpt: Checkpoint, full_key: str, max_elements: int = MAX_ELEMENTS
) -> np.ndarray:
    """Sampled values of one checkpoint tensor, read on demand through the reader."""
    info = ckpt.tensors[full_key]
    if info.layout in _UNSUPPORTED_LAYOUTS:
        raise ValueError(f"{info.layout} tensors have no values to sample")
    return sample_tensor(ckpt.read(full_key), max_elements)


def checkpoint_stats(
    ckpt: Checkpoint, full_key: str, max_elements: int = MAX_ELEMENTS
) -> TensorStats:
    """Statistics of one checkpoint tensor; a tensor that cannot be read says why."""
    return checkpoint_sampled(ckpt, full_key, max_elements)[0]


def checkpoint_sampled(
    ckpt: Checkpoint, full_key: str, max_elements: int = MAX_ELEMENTS
) -> tuple[TensorStats, np.ndarray | None, bool]:
    """:func:`checkpoint_stats`, with the sampled values (None when the tensor could
    not be read: its stats say why) and whether they are aligned (:func:`aligned`)."""
    from .errors import CheckpointError

    info = ckpt.tensors[full_key]
    try:
        if info.layout in _UNSUPPORTED_LAYOUTS:
            raise ValueError(f"{info.layout} tensors have no values to sample")
        tensor = ckpt.read(full_key)
        values = sample_tensor(tensor, max_elements)
    except (CheckpointError, ValueError, RuntimeError, TypeError, OSError) as exc:
        return _failed(full_key, info.shape, info.dtype, info.numel, str(exc)), None, False
    stats = summarise(full_key, info.shape, info.dtype, info.numel, values)
    return stats, values, aligned(tensor, max_elements)


def collect_stats(
    items: Iterable[tuple[str, Callable[[], TensorStats]]],
    *,
    progress: Callable[[int, int], None] | None = None,
    cancel: threading.Event | None = None,
) -> list[TensorStats]:
    """Run per-tensor statistic jobs in order, reporting progress; stops early on cancel."""
    jobs = list(items)
    out: list[TensorStats] = []
    for i, (_key, job) in enumerate(jobs):
        if cancel is not None and cancel.is_set():
            break
        out.append(job())
        if progress is not None:
            progress(i + 1, len(jobs))
    return out


def model_tensors(model: Any, keys: Iterable[str]) -> dict[str, Any]:
    """The model's current tensors under these state-dict keys (detached), found through
    their modules: the Distributions tab wants a few hundred of a model's 100,000, and
    ``model.state_dict()`` makes them all. Where a module on the way customises its
    state dict (its own saving, state-dict hooks), ``state_dict()`` gives them, as its
    names may not be attributes; keys the model does not have are left out."""
    import torch.nn as nn

    def plain(module: Any) -> bool:
        cls = type(module)
        return (isinstance(module, nn.Module) and cls.state_dict is nn.Module.state_dict
                and cls._save_to_state_dict is nn.Module._save_to_state_dict
                and not module._state_dict_hooks and not module._state_dict_pre_hooks)

    keys = list(keys)
    out: dict[str, Any] = {}
    for key in keys:
        *path, leaf = key.split(".")
        module = model
        for name in path:
            module = module._modules.get(name) if plain(module) else None
            if module is None:
                break
        if module is None or not plain(module):
            tensors = model.state_dict()
            return {k: tensors[k] for k in keys if k in tensors}
        tensor = module._parameters.get(leaf)
        if tensor is None and leaf not in module._non_persistent_buffers_set:
            tensor = module._buffers.get(leaf)
        if tensor is not None:
            out[key] = tensor.detach()
    return out


def model_stats(
    tensors: Mapping[str, Any],
    keys: Iterable[str] | None = None,
    max_elements: int = MAX_ELEMENTS,
) -> dict[str, TensorStats]:
    """Statistics of a model's current tensors (``model.state_dict()``), by key."""
    wanted = tensors.keys() if keys is None else [k for k in keys if k in tensors]
    return {k: stats_of(k, tensors[k], max_elements) for k in wanted}


@dataclass(frozen=True)
class Histogram:
    """Counts of named samples (checkpoint, model) over bin edges: shared edges when
    the samples spread alike (they can be overlaid), else each side's own edges
    (``side_edges``), so a std-0.02 sample beside a std-1 one keeps its shape."""

    edges: np.ndarray
    counts: dict[str, np.ndarray]
    side_edges: dict[str, np.ndarray] = field(default_factory=dict)
    stds: dict[str, float] = field(default_factory=dict)

    @property
    def centers(self) -> np.ndarray:
        return (self.edges[:-1] + self.edges[1:]) / 2

    @property
    def shared(self) -> bool:
        """True when every side is counted over the same edges (``edges``)."""
        return not self.side_edges

    def edges_of(self, name: str) -> np.ndarray:
        return self.side_edges.get(name, self.edges)


def _edges(values: Iterable[np.ndarray], bins: int) -> np.ndarray:
    nonempty = [v for v in values if v.size]
    if not nonempty:
        return np.linspace(-1.0, 1.0, bins + 1)
    lo = min(float(v.min()) for v in nonempty)
    hi = max(float(v.max()) for v in nonempty)
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    return np.linspace(lo, hi, bins + 1)


def shared_histogram(samples: Mapping[str, np.ndarray], bins: int = 60) -> Histogram:
    """Histogram each named sample over one common range (finite values only)."""
    finite = {name: v[np.isfinite(v)] for name, v in samples.items()}
    edges = _edges(finite.values(), bins)
    counts = {name: np.histogram(v, bins=edges)[0] for name, v in finite.items()}
    return Histogram(edges, counts, stds=_stds(finite))


SPREAD_RATIO = 4.0
"""Samples whose value ranges differ more than this get bins of their own."""


def histograms(samples: Mapping[str, np.ndarray], bins: int = 60) -> Histogram:
    """Counts per side: over shared bins when the sides' ranges are alike (within
    ``SPREAD_RATIO``), else each over its own range (finite values only)."""
    finite = {name: v[np.isfinite(v)] for name, v in samples.items()}
    spans = [float(v.max() - v.min()) for v in finite.values() if v.size]
    if len(spans) < 2 or min(spans) * SPREAD_RATIO >= max(spans):
        return shared_histogram(samples, bins)
    side = {name: _edges([v], bins) for name, v in finite.items()}
    counts = {name: np.histogram(v, bins=side[name])[0] for name, v in finite.items()}
    return Histogram(_edges(finite.values(), bins), counts, side, _stds(finite))


def _stds(finite: Mapping[str, np.ndarray]) -> dict[str, float]:
    return {name: float(v.std()) if v.size else float("nan") for name, v in finite.items()}


# -- comparing and flagging ---------------------------------------------------------------
def aligned(tensor: torch.Tensor, max_elements: int = MAX_ELEMENTS) -> bool:
    """True when ``sample_tensor`` takes this tensor's values at the flat positions 0,
    s, 2s... of its logical order, so two same-shaped tensors' samples pair up."""
    return bool(tensor.is_contiguous()) or tensor.numel() <= max(1, max_elements)


def difference(a: np.ndarray, b: np.ndarray) -> float:
    """Relative RMS difference of two samples taken at the same positions: 0 when equal,
    about 1.4 for two independent draws of one distribution (a model still at its initial
    values beside trained ones); nan when they cannot be compared."""
    if a.shape != b.shape or not a.size:
        return float("nan")
    both = np.isfinite(a) & np.isfinite(b)
    if not both.any():
        return float("nan")
    x, y = a[both], b[both]
    scale = max(float(np.sqrt(np.mean(x * x))), float(np.sqrt(np.mean(y * y))))
    if scale == 0.0:
        return 0.0
    return float(np.sqrt(np.mean((x - y) ** 2))) / scale


_NUMBER = re.compile(r"(?<![^.])\d+(?![^.])")
_NORM = re.compile(r"(?:^|[._])(?:\w*norm\w*|ln\w*|bn\d*|rms\w*)(?:$|\.)", re.I)
EXPLODING_FACTOR = 10.0
"""A tensor's std this many times its layer family's median is flagged as exploding."""
FAMILY_MIN = 3
"""Sampled members a layer family needs before its median is trusted."""


def family(key: str) -> str:
    """A key's layer family: its layer numbers replaced by ``*`` (``blocks.*.mlp.weight``)."""
    return _NUMBER.sub("*", key)


def component(key: str, shape: tuple[int, ...]) -> str:
    """``weight`` (a matrix or kernel), ``bias``, ``norm`` (a normalisation's 1-D scale or
    shift) or ``other``: the flags are softened for biases and norm parameters, whose
    constant values (LayerNorm's 1 and 0) are their usual initial state."""
    module, _, leaf = key.rpartition(".")
    if len(shape) <= 1 and _NORM.search(module + "."):
        return "norm"
    if leaf == "bias":
        return "bias"
    return "weight" if len(shape) >= 2 else "other"


def is_float(dtype: str) -> bool:
    return dtype.startswith(("float", "bfloat", "half", "double"))


def dead(s: TensorStats) -> str:
    """"all zeros" or "constant" for a weight matrix whose sampled values are, "all
    zeros" for a norm scale (it zeroes its layer's output); "" otherwise (biases and norm
    shifts start at 0, norm scales at 1; integer buffers count things)."""
    if not is_float(s.dtype) or s.numel <= 1 or not s.sampled or s.nonfinite == s.sampled:
        return ""
    kind = component(s.key, s.shape)
    finite = s.sampled - s.nonfinite
    if s.zeros == finite and (kind == "weight" or (kind == "norm"
                                                   and s.key.endswith("weight"))):
        return "all zeros"
    if kind == "weight" and s.std == 0.0:
        return "constant"
    return ""


def exploding(stats: Iterable[TensorStats], factor: float = EXPLODING_FACTOR,
              min_family: int = FAMILY_MIN) -> dict[str, float]:
    """Keys whose std is over ``factor`` times the median std of their layer family (the
    same key template and shape: ``blocks.*.mlp.weight`` of one shape; at least
    ``min_family`` members with a finite std), with that ratio."""
    families: dict[tuple[str, tuple[int, ...]], list[TensorStats]] = {}
    for s in stats:
        if is_float(s.dtype) and s.std == s.std and s.std != float("inf"):
            families.setdefault((family(s.key), s.shape), []).append(s)
    out: dict[str, float] = {}
    for members in families.values():
        if len(members) < min_family:
            continue
        median = float(np.median([m.std for m in members]))
        if median <= 0.0:
            continue
        for m in members:
            if m.std > factor * median:
                out[m.key] = m.std / median
    return out


def stats_table(stats: Iterable[TensorStats]) -> Any:
    """A pandas DataFrame of statistics, one row per tensor (for plots and tests)."""
    import pandas as pd

    rows = [
        {
            "key": s.key, "numel": s.numel, "sampled": s.sampled, "nan": s.nan,
            "inf": s.inf, "mean": s.mean, "std": s.std, "absmax": s.absmax,
            "zeros": s.zeros, "error": s.error,
        }
        for s in stats
    ]
    cols = ["key", "numel", "sampled", "nan", "inf", "mean", "std", "absmax", "zeros",
            "error"]
    return pd.DataFrame(rows, columns=cols)
