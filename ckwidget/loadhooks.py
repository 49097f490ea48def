"""Key renames that a model's own ``load_state_dict`` hooks perform.

``load_state_dict`` runs each module's load pre-hooks on the state dict before it matches
names, and some of torch's own hooks rename keys there. The one practitioners meet is
``torch.nn.utils.parametrizations.weight_norm``: its module stores
``parametrizations.weight.original0/1``, and its hook moves an old checkpoint's
``weight_g``/``weight_v`` to those names, so the old file loads although no key matches.
Without knowing that, a diagnosis counts those weights as missing and plans to drop them.

Hooks are recognised, never called: a hook is the model's code and may change the model
(a lazy module's hook materialises its parameters). A hook ckwidget does not know is
named, so a diagnosis can say that the real load may see other names.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

_WEIGHT_NORM = ("torch.nn.utils.parametrizations", "_weight_norm_compat_hook")
# Hooks that leave the names ``state_dict()`` gives alone: a lazy module's (it sizes
# parameters from the values) and the activation-checkpoint wrapper's (it undoes what its
# state-dict hook did, and the model's keys are read from ``state_dict()`` then).
_NAME_PRESERVING = {
    ("torch.nn.modules.lazy", "_lazy_load_hook"),
    ("torch.distributed.algorithms._checkpoint.checkpoint_wrapper",
     "_pre_load_state_dict_hook"),
}


@dataclass(frozen=True)
class HookRename:
    """Two keys a module's load hook moves together, as torch's weight_norm hook does:
    only when both ``old`` names are present, to the two ``new`` names."""

    module: str  # the module's name in the model ("" for the root)
    old: tuple[str, str]
    new: tuple[str, str]
    why: str = "weight_norm"

    def describe(self) -> str:
        return (f"{self.module or 'the model'}'s weight_norm load hook reads "
                f"{self.old[0]} and {self.old[1]} as {self.new[0]} and {self.new[1]}")


@dataclass(frozen=True)
class LoadHooks:
    """What the model's load hooks do to names: the renames ckwidget knows, and the
    modules whose hooks it does not know (``(module name, hook name)``)."""

    renames: tuple[HookRename, ...] = ()
    unknown: tuple[tuple[str, str], ...] = ()

    def __bool__(self) -> bool:
        return bool(self.renames or self.unknown)


NO_HOOKS = LoadHooks()


def _origin(hook: Any) -> tuple[str, str]:
    fn = getattr(hook, "hook", hook)  # torch wraps each hook in a _WrappedHook
    fn = getattr(fn, "__func__", fn)  # a bound method
    return (str(getattr(fn, "__module__", "") or ""),
            str(getattr(fn, "__name__", type(fn).__name__)))


def _closure_value(hook: Any, name: str) -> Any:
    fn = getattr(hook, "hook", hook)
    code = getattr(fn, "__code__", None)
    cells = getattr(fn, "__closure__", None) or ()
    if code is None:
        return None
    for var, cell in zip(code.co_freevars, cells):
        if var == name:
            try:
                return cell.cell_contents
            except ValueError:  # an empty cell
                return None
    return None


def find_load_hooks(modules: Iterable[tuple[str, Any]]) -> LoadHooks:
    """The load hooks of ``(name, module)`` pairs, in the order ``load_state_dict``
    runs them (the model's pre-order)."""
    renames: list[HookRename] = []
    unknown: list[tuple[str, str]] = []
    for name, module in modules:
        pre = getattr(module, "_load_state_dict_pre_hooks", None) or {}
        post = getattr(module, "_load_state_dict_post_hooks", None) or {}
        prefix = name + "." if name else ""
        for hook in pre.values():
            origin = _origin(hook)
            param = _closure_value(hook, "name") if origin == _WEIGHT_NORM else None
            if isinstance(param, str) and param:
                renames.append(HookRename(
                    name,
                    (f"{prefix}{param}_g", f"{prefix}{param}_v"),
                    (f"{prefix}parametrizations.{param}.original0",
                     f"{prefix}parametrizations.{param}.original1")))
            elif origin not in _NAME_PRESERVING:
                unknown.append((name, origin[1]))
        for hook in post.values():
            unknown.append((name, _origin(hook)[1]))
    return LoadHooks(tuple(renames), tuple(unknown))


def hooked_modules(model: Any) -> list[tuple[str, Any]]:
    """``(name, module)`` of the modules of ``model`` that have load hooks."""
    return [(n, m) for n, m in model.named_modules()
            if getattr(m, "_load_state_dict_pre_hooks", None)
            or getattr(m, "_load_state_dict_post_hooks", None)]


def load_hooks_of(model: Any) -> LoadHooks:
    """``find_load_hooks`` for a module; nothing for anything else (a state dict)."""
    if not hasattr(model, "named_modules"):
        return NO_HOOKS
    return find_load_hooks(hooked_modules(model))


def renamed_names(names: list[str], renames: Iterable[HookRename]) -> dict[str, str]:
    """old name -> new name for each of ``names`` the hooks would rename, in hook order
    (a hook sees the names earlier hooks left)."""
    present = set(names)
    moved: dict[str, str] = {}  # current name -> original name
    for r in renames:
        g, v = r.old
        if g in present and v in present:
            for old, new in zip(r.old, r.new):
                present.discard(old)
                present.add(new)
                moved[new] = moved.pop(old, old)
    return {orig: new for new, orig in moved.items() if orig != new}


def rename_like_hooks(sd: Mapping[str, Any], renames: Iterable[HookRename]) -> dict[str, Any]:
    """``sd`` with the keys renamed as the hooks would rename them (a new dict); the hooks
    then find nothing left to do when torch runs them."""
    out = dict(sd)
    for r in renames:
        g, v = r.old
        if g in out and v in out:
            out[r.new[0]] = out.pop(g)
            out[r.new[1]] = out.pop(v)
    return out
