"""What the model expects: its state-dict names, shapes, dtypes and devices, fast.

``model.state_dict()`` plus one ``describe_tensor`` per entry costs ~1.3 s at 100k
tensors; walking the module tree directly and caching TensorInfo per (dtype, device,
shape) costs a fifth of that. The walk is used only when no module customises how it
saves its state, so both give the same names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..checkpoint import TensorInfo, describe_tensor, dtype_name


@dataclass
class ModelSide:
    """The model's state, keyed as ``model.state_dict()`` keys it, in model order."""

    infos: dict[str, TensorInfo]
    tied: dict[str, str] = field(default_factory=dict)  # name -> first name of same tensor
    parameters: set[str] = field(default_factory=set)   # names that are parameters
    param_names: dict[int, str] = field(default_factory=dict)  # id(parameter) -> name
    devices: set[str] = field(default_factory=set)
    module: Any = None

    @property
    def is_meta(self) -> bool:
        return "meta" in self.devices


def _custom_saving(model: Any) -> bool:
    import torch.nn as nn

    base = nn.Module._save_to_state_dict
    for mod in model.modules():
        if type(mod)._save_to_state_dict is not base:
            return True
        if getattr(mod, "_state_dict_hooks", None) or getattr(mod, "_state_dict_pre_hooks", None):
            return True
    return False


def _walk(model: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, mod in model.named_modules(remove_duplicate=False):
        pre = name + "." if name else ""
        for k, v in mod._parameters.items():
            if v is not None:
                out[pre + k] = v
        skip = mod._non_persistent_buffers_set
        for k, v in mod._buffers.items():
            if v is not None and k not in skip:
                out[pre + k] = v
    return out


def describe_model(model: Any) -> ModelSide:
    """Describe an ``nn.Module`` (or a plain state dict standing in for one)."""
    import torch
    import torch.nn as nn

    if isinstance(model, nn.Module):
        tensors = (model.state_dict(keep_vars=True) if _custom_saving(model) else _walk(model))
        params = {id(p): n for n, p in model.named_parameters(remove_duplicate=True)}
    elif isinstance(model, Mapping):
        tensors = {k: v for k, v in model.items() if isinstance(v, torch.Tensor)}
        params = {}
    else:
        raise TypeError(
            f"diagnose() needs the model as a torch.nn.Module (or a state dict), "
            f"not {type(model).__name__}."
        )
    cache: dict[tuple[Any, Any, Any], TensorInfo] = {}
    infos: dict[str, TensorInfo] = {}
    first_owner: dict[int, str] = {}
    side = ModelSide(infos, module=model if isinstance(model, nn.Module) else None)
    param_ids = set(params)
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            continue
        ident = id(t)
        owner = first_owner.setdefault(ident, name)
        if owner != name:
            side.tied[name] = owner
        if ident in param_ids:
            side.parameters.add(name)
        ck = (t.dtype, t.device, t.shape)
        info = cache.get(ck)
        if info is None:
            if t.layout is torch.strided and not t.is_quantized:
                layout = "meta" if t.is_meta else "strided"
                info = TensorInfo(tuple(t.shape), dtype_name(t.dtype), str(t.device),
                                  t.numel() * t.element_size(), layout)
                cache[ck] = info
            else:
                info = describe_tensor(t)
        infos[name] = info
    side.devices = {info.device for info in cache.values()} | {
        i.device for i in infos.values() if i.layout not in ("strided", "meta")}
    side.param_names = params
    return side
