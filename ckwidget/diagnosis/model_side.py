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
from ..loadhooks import NO_HOOKS, LoadHooks, find_load_hooks


@dataclass
class ModelSide:
    """The model's state, keyed as ``model.state_dict()`` keys it, in model order."""

    infos: dict[str, TensorInfo]
    tied: dict[str, str] = field(default_factory=dict)  # name -> first name of same tensor
    devices: set[str] = field(default_factory=set)
    module: Any = None
    # named_modules(remove_duplicate=False) as two lists: 100,000 (name, module) tuples
    # kept alive would make the garbage collector's next pass scan them all.
    module_names: list[str] = field(default_factory=list, repr=False)
    module_objects: list[Any] = field(default_factory=list, repr=False)
    _param_names: dict[int, str] | None = field(default=None, repr=False)
    # what the model's own load hooks do to names (weight_norm's old names, say)
    load_hooks: LoadHooks = field(default=NO_HOOKS, repr=False)

    @property
    def modules(self) -> list[tuple[str, Any]]:
        """(name, module) pairs in ``named_modules`` order (built on each call)."""
        return list(zip(self.module_names, self.module_objects))

    @property
    def is_meta(self) -> bool:
        return "meta" in self.devices

    @property
    def param_names(self) -> dict[int, str]:
        """id(parameter) -> its first state-dict name (for pairing optimizer state)."""
        if self._param_names is None:
            self._param_names = {}
            if self.module is not None:
                for name, p in self.module.named_parameters(remove_duplicate=False):
                    self._param_names.setdefault(id(p), name)
        return self._param_names


def _walk(model: Any) -> tuple[list[str], list[Any], dict[str, Any], bool,
                             list[tuple[str, Any]]]:
    """named_modules(remove_duplicate=False) in the same pre-order, the state-dict
    entries (parameters, persistent buffers) that walk yields, whether any module
    customises its saving (then only ``model.state_dict()`` names keys right), and the
    modules with load hooks, in one pass."""
    import torch.nn as nn

    base = nn.Module._save_to_state_dict
    types: set[type] = set()
    custom = False
    names: list[str] = []
    modules: list[Any] = []
    tensors: dict[str, Any] = {}
    hooked: list[tuple[str, Any]] = []
    stack: list[tuple[str, Any]] = [("", model)]
    pop, push, add_name, add_module = stack.pop, stack.extend, names.append, modules.append
    while stack:
        name, mod = pop()
        add_name(name)
        add_module(mod)
        cls = type(mod)
        if cls not in types:
            types.add(cls)
            custom = custom or cls._save_to_state_dict is not base
        if mod._state_dict_hooks or mod._state_dict_pre_hooks:
            custom = True
        if mod._load_state_dict_pre_hooks or mod._load_state_dict_post_hooks:
            hooked.append((name, mod))
        pre = name + "." if name else ""
        for k, v in mod._parameters.items():
            if v is not None:
                tensors[pre + k] = v
        if mod._buffers:
            skip = mod._non_persistent_buffers_set
            for k, v in mod._buffers.items():
                if v is not None and k not in skip:
                    tensors[pre + k] = v
        children = mod._modules
        if children:
            push([(pre + k, c) for k, c in reversed(children.items()) if c is not None])
    return names, modules, tensors, custom, hooked


def describe_model(model: Any) -> ModelSide:
    """Describe an ``nn.Module`` (or a plain state dict standing in for one)."""
    import torch
    import torch.nn as nn

    names: list[str] = []
    modules: list[Any] = []
    hooked: list[tuple[str, Any]] = []
    if isinstance(model, nn.Module):
        names, modules, tensors, custom, hooked = _walk(model)
        if custom:
            tensors = model.state_dict(keep_vars=True)
    elif isinstance(model, Mapping):
        tensors = {k: v for k, v in model.items() if isinstance(v, torch.Tensor)}
    else:
        raise TypeError(
            f"diagnose() needs the model as a torch.nn.Module (or a state dict), "
            f"not {type(model).__name__}."
        )
    # the layout is part of the kind: a sparse tensor must not take the description of
    # a dense one of its dtype, device and shape
    cache: dict[tuple[Any, Any, Any, Any], TensorInfo] = {}
    infos: dict[str, TensorInfo] = {}
    other_devices: set[str] = set()  # of tensors that are neither strided nor meta
    strided = torch.strided
    get = cache.get
    for name, t in tensors.items():
        try:
            ck = (t.dtype, t.device, t.shape, t.layout)
        except RuntimeError:  # a lazy module's parameter has no shape until it loads
            infos[name] = describe_tensor(t)
            other_devices.add(infos[name].device)
            continue
        info = get(ck)
        if info is None:
            if ck[3] is strided and not t.is_quantized:
                layout = "meta" if t.is_meta else "strided"
                info = TensorInfo(tuple(t.shape), dtype_name(t.dtype), str(t.device),
                                  t.numel() * t.element_size(), layout)
                cache[ck] = info
            else:
                info = describe_tensor(t)
                if info.layout not in ("strided", "meta"):
                    other_devices.add(info.device)
        infos[name] = info
    tied: dict[str, str] = {}
    if len(set(map(id, tensors.values()))) != len(tensors):
        first_owner: dict[int, str] = {}
        for name, t in tensors.items():
            owner = first_owner.setdefault(id(t), name)
            if owner != name:
                tied[name] = owner
    side = ModelSide(infos, tied=tied, module=model if modules else None,
                     module_names=names, module_objects=modules)
    side.devices = {info.device for info in cache.values()} | other_devices
    if hooked:
        side.load_hooks = find_load_hooks(hooked)
    return side
