"""Bounded reads of tensor values for checks that need numbers (non-finite counts).

Reads never exceed ``budget`` bytes in total, whatever the file's size: each tensor
contributes its head and tail (contiguous, so a memory-mapped file touches few pages).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ..checkpoint import Checkpoint, TensorInfo

FLOATS = {"float64", "float32", "float16", "bfloat16"}
DEFAULT_BUDGET = 4 << 20  # bytes of values examined in total


@dataclass
class Sample:
    """Non-finite counts per key (entry-relative) over the elements examined."""

    nonfinite: dict[str, tuple[int, int]] = field(default_factory=dict)  # key -> (nan, inf)
    examined: int = 0          # elements examined
    total: int = 0             # elements in the tensors considered
    tensors: int = 0           # tensors examined
    error: str | None = None   # why sampling stopped, in one sentence


def sample_values(ckpt: Checkpoint, entry: str, budget: int = DEFAULT_BUDGET,
                  infos: Mapping[str, TensorInfo] | None = None) -> Sample:
    import torch

    infos = ckpt.entry(entry) if infos is None else infos
    keys = [k for k, i in infos.items()
            if i.dtype in FLOATS and i.readable and i.layout == "strided" and i.numel]
    out = Sample(total=sum(infos[k].numel for k in keys))
    if not keys:
        return out
    per = max(1024, budget // len(keys))
    spent = 0
    chosen: list[str] = []
    for k in keys:
        cost = min(infos[k].nbytes, per)
        if spent + cost > budget * 2:
            break
        chosen.append(k)
        spent += cost
    try:
        tensors = ckpt.state_dict(entry, map_location="cpu", keys=chosen)
    except Exception as exc:  # a value check must never break diagnosis
        out.error = f"values could not be read ({type(exc).__name__}: {str(exc)[:200]})"
        return out
    for k, t in tensors.items():
        flat = t.detach().reshape(-1)
        n = max(1, per // max(1, t.element_size()))
        if flat.numel() > n:
            flat = torch.cat([flat[: n // 2], flat[-(n - n // 2):]])
        flat = flat.float()
        nan = int(torch.isnan(flat).sum())
        inf = int(torch.isinf(flat).sum())
        out.examined += flat.numel()
        out.tensors += 1
        if nan or inf:
            out.nonfinite[k] = (nan, inf)
    return out
