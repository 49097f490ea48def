"""``load_state_dict`` with the same result as torch's, in time linear in the number of keys.

torch's ``nn.Module.load_state_dict`` walks the module tree and, for every child of every
module, builds the child's dict by scanning the whole of its parent's dict::

    child_state_dict = {k: v for k, v in local_state_dict.items() if k.startswith(child_prefix)}

A module with ``c`` children and ``n`` keys below it costs ``c * n``: a flat ModuleList of
50,000 Linear layers (100,000 keys) spends about 20 minutes there.

:func:`load_state_dict` is the same walk (the same calls, in the same order, with the same
arguments: every module's ``_load_from_state_dict`` still receives exactly the dict torch
would give it, its pre-hooks run inside it, post hooks run after its children, the error
text is built the same way), except that the children's dicts of a module whose loading
is torch's stock code are built together, by one pass that splits each key once on its
prefix, instead of one scan per child. For such a module no code of anyone else holds
its dict while its children load, so building the children's dicts before the first
child loads gives each child the same dict as building it just before that child loads.

Where that is not certain, torch's own per-child scan is kept for that module's children:
a module whose class (or instance) defines its own ``_load_from_state_dict``, a module with
load_state_dict pre-hooks (lazy modules, ``parametrizations.weight_norm``, ``spectral_norm``,
user hooks; its hook could hold on to the dict), or a child name a single split cannot
stand for. The whole load is torch's own ``model.load_state_dict`` when the model's class
overrides ``load_state_dict``, when the state dict is not a plain mapping of string keys,
or when the installed torch's ``load_state_dict`` is not the code this walk mirrors
(checked once, on its source).
"""

from __future__ import annotations

import ast
import functools
import inspect
import io
import re
import sys
import textwrap
import tokenize
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

# The walk below mirrors these lines of torch's ``Module.load_state_dict``, compared as
# its tokens (string literals verbatim, no comments, no whitespace between tokens): the
# nested ``load`` function whole (its post-hook check either raises AssertionError or
# asserts; its message is read from the source), and the lines around it in order.
_LOAD_BODY = (
    "local_metadata={}ifmetadataisNoneelsemetadata.get(prefix[:-1],{})"
    'ifassign:local_metadata["assign_to_params_buffers"]=assign'
    "module._load_from_state_dict(local_state_dict,prefix,local_metadata,True,"
    "missing_keys,unexpected_keys,error_msgs"
)
_LOAD_CHILDREN = (
    ")forname,childinmodule._modules.items():ifchildisnotNone:"
    'child_prefix=prefix+name+"."'
    "child_state_dict={k:vfork,vinlocal_state_dict.items()ifk.startswith(child_prefix)}"
    "load(child,child_state_dict,child_prefix)"
    "incompatible_keys=_IncompatibleKeys(missing_keys,unexpected_keys)"
    "forhookinmodule._load_state_dict_post_hooks.values():"
    "out=hook(module,incompatible_keys)"
)
_POST_CHECKS = {"ifoutisnotNone:raiseAssertionError(": False, "assertoutisNone,(": True}
_STRINGS = re.compile(r"""((?:"[^"\\\n]*(?:\\.[^"\\\n]*)*")+),?\)load\(self,state_dict\)""")
_AROUND = (
    "ifnotisinstance(state_dict,Mapping):raiseTypeError(",
    'metadata=getattr(state_dict,"_metadata",None)state_dict=OrderedDict(state_dict)'
    "ifmetadataisnotNone:state_dict._metadata=metadata",
    'defload(module,local_state_dict,prefix=""',
    "load(self,state_dict)",
    "ifstrict:iflen(unexpected_keys)>0:error_msgs.insert(0,"
    '"Unexpected key(s) in state_dict: {}. ".format(", ".join(f\'"{k}"\'forkinunexpected_keys)',
    'iflen(missing_keys)>0:error_msgs.insert(0,"Missing key(s) in state_dict: {}. ".format('
    '", ".join(f\'"{k}"\'forkinmissing_keys)',
    'iflen(error_msgs)>0:raiseRuntimeError("Error(s) in loading state_dict for {}:\\n\\t{}"'
    '.format(self.__class__.__name__,"\\n\\t".join(error_msgs))',
    "return_IncompatibleKeys(missing_keys,unexpected_keys)",
)
_SKIP = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
         tokenize.ENDMARKER}


@dataclass(frozen=True)
class _Torch:
    """What the walk takes from torch's source: the post-hook check's message and form."""

    post_hook_message: str
    post_hook_assert: bool  # ``assert out is None, (...)``: skipped under ``python -O``


def _tokens(fn: Any) -> str | None:
    """``fn``'s source as its tokens joined (no comments, no whitespace outside strings)."""
    try:
        source = textwrap.dedent(inspect.getsource(fn))
        tokens = tokenize.generate_tokens(io.StringIO(source).readline)
        return "".join(t.string for t in tokens if t.type not in _SKIP)
    except (OSError, TypeError, SyntaxError, tokenize.TokenError):
        return None


@functools.lru_cache(maxsize=4)
def _mirrors(fn: Any) -> _Torch | None:
    """How ``fn`` (torch's ``Module.load_state_dict``) does what this module mirrors, or
    None when it is not that code."""
    text = _tokens(fn)
    if text is None:
        return None
    at = 0
    for part in _AROUND:
        found = text.find(part, at)
        if found < 0:
            return None
        at = found + len(part)
    start = text.find('defload(module,local_state_dict,prefix=""')
    body = text[text.index(":", start) + 1:]
    if not body.startswith(_LOAD_BODY):
        return None
    body = body[len(_LOAD_BODY):].removeprefix(",")
    if not body.startswith(_LOAD_CHILDREN):
        return None
    body = body[len(_LOAD_CHILDREN):]
    for check, asserts in _POST_CHECKS.items():
        if body.startswith(check):
            strings = _STRINGS.match(body, len(check))
            if strings is None:
                return None
            try:
                message = ast.literal_eval(strings.group(1))
            except (ValueError, SyntaxError):
                return None
            return _Torch(message, asserts) if isinstance(message, str) else None
    return None


def supported() -> bool:
    """Whether the installed torch's ``load_state_dict`` is the walk this module mirrors."""
    from torch import nn

    return _mirrors(nn.Module.load_state_dict) is not None


@functools.lru_cache(maxsize=1)
def _stock_loaders() -> tuple[Any, ...]:
    """torch's ``_load_from_state_dict`` implementations that keep no hold of the dict."""
    from torch import nn
    from torch.nn.modules.batchnorm import _NormBase
    from torch.nn.modules.instancenorm import _InstanceNorm

    return (nn.Module._load_from_state_dict, _NormBase._load_from_state_dict,
            _InstanceNorm._load_from_state_dict)


def fast_path(model: nn.Module, state_dict: Any) -> bool:
    """Whether :func:`load_state_dict` takes its own walk for this model and dict."""
    from torch import nn

    return (
        type(model).load_state_dict is nn.Module.load_state_dict
        and "load_state_dict" not in vars(model)
        and isinstance(state_dict, Mapping)
        and supported()
        and all(type(k) is str for k in state_dict)
    )


def load_state_dict(
    model: nn.Module, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False,
    progress: Callable[[int], Any] | None = None,
) -> Any:
    """``model.load_state_dict(state_dict, strict, assign)``: the same result, linear time.

    Returns torch's ``_IncompatibleKeys``; raises what torch raises, with the same text.
    ``progress``, if given, is called with the number of keys each module has just
    loaded (its own parameters and buffers found in its dict), after that module's
    ``_load_from_state_dict``; when torch's own ``load_state_dict`` runs instead, once
    with the dict's length at its end.
    """
    from torch import nn

    mirrored = _mirrors(nn.Module.load_state_dict)
    if mirrored is None or not fast_path(model, state_dict):
        out = model.load_state_dict(state_dict, strict=strict, assign=assign)
        if progress is not None:
            progress(len(state_dict))
        return out
    from torch.nn.modules.module import _IncompatibleKeys

    missing_keys: list[str] = []
    unexpected_keys: list[str] = []
    error_msgs: list[str] = []

    metadata = getattr(state_dict, "_metadata", None)
    state_dict = OrderedDict(state_dict)
    if metadata is not None:
        state_dict._metadata = metadata  # type: ignore[attr-defined]

    walk = _Walk(mirrored, metadata, assign, missing_keys, unexpected_keys, error_msgs)
    walk.progress = progress
    walk.load(model, state_dict)
    del walk

    if strict:
        if len(unexpected_keys) > 0:
            error_msgs.insert(
                0,
                "Unexpected key(s) in state_dict: {}. ".format(
                    ", ".join(f'"{k}"' for k in unexpected_keys)
                ),
            )
        if len(missing_keys) > 0:
            error_msgs.insert(
                0,
                "Missing key(s) in state_dict: {}. ".format(
                    ", ".join(f'"{k}"' for k in missing_keys)
                ),
            )
    if len(error_msgs) > 0:
        raise RuntimeError(
            "Error(s) in loading state_dict for {}:\n\t{}".format(
                model.__class__.__name__, "\n\t".join(error_msgs)
            )
        )
    return _IncompatibleKeys(missing_keys, unexpected_keys)


class _Walk:
    """torch's nested ``load`` function, with the per-child scan replaced where safe."""

    def __init__(self, mirrored: _Torch, metadata: Any, assign: bool, missing_keys: list[str],
                 unexpected_keys: list[str], error_msgs: list[str]) -> None:
        from torch.nn.modules.module import _IncompatibleKeys

        self.metadata = metadata
        self.assign = assign
        self.missing_keys = missing_keys
        self.unexpected_keys = unexpected_keys
        self.error_msgs = error_msgs
        self.incompatible = _IncompatibleKeys
        self.stock = _stock_loaders()
        self.mirrored = mirrored
        self.progress: Callable[[int], Any] | None = None

    def load(self, module: Any, local_state_dict: dict[str, Any], prefix: str = "") -> None:
        metadata = self.metadata
        local_metadata = {} if metadata is None else metadata.get(prefix[:-1], {})
        if self.assign:
            local_metadata["assign_to_params_buffers"] = self.assign
        module._load_from_state_dict(
            local_state_dict, prefix, local_metadata, True,
            self.missing_keys, self.unexpected_keys, self.error_msgs,
        )
        if self.progress is not None:
            own = 0
            for table in (module._parameters, module._buffers):
                for name in table:
                    if prefix + name in local_state_dict:
                        own += 1
            if own:
                self.progress(own)
        children = module._modules
        groups = _groups(module, local_state_dict, prefix, self.stock) if children else None
        for name, child in children.items():
            if child is not None:
                child_prefix = prefix + name + "."
                if groups is None:  # torch's own scan
                    child_state_dict = {
                        k: v for k, v in local_state_dict.items() if k.startswith(child_prefix)
                    }
                else:
                    child_state_dict = groups.pop(name, None)
                    if child_state_dict is None:
                        child_state_dict = {}
                self.load(child, child_state_dict, child_prefix)

        # Note that the hook can modify missing_keys and unexpected_keys.
        incompatible_keys = self.incompatible(self.missing_keys, self.unexpected_keys)
        for hook in module._load_state_dict_post_hooks.values():
            out = hook(module, incompatible_keys)
            if out is not None and not (self.mirrored.post_hook_assert and sys.flags.optimize):
                raise AssertionError(self.mirrored.post_hook_message)


def _groups(
    module: Any, local_state_dict: dict[str, Any], prefix: str, stock: tuple[Any, ...]
) -> dict[str, dict[str, Any]] | None:
    """Every child's dict in one pass over ``local_state_dict``, or None to scan per child.

    A key belongs to child ``name`` when it starts with ``prefix + name + "."``; for a
    name without a dot that is exactly: the key starts with ``prefix`` and the rest, split
    once on its first dot, has ``name`` before the dot. Each group keeps the keys' order.
    """
    if (
        type(module)._load_from_state_dict not in stock
        or "_load_from_state_dict" in vars(module)
        or module._load_state_dict_pre_hooks
        or not all(type(n) is str and "." not in n for n in module._modules)
    ):
        return None
    groups: dict[str, dict[str, Any]] = {}
    cut = len(prefix)
    for k, v in local_state_dict.items():
        if type(k) is not str or not k.startswith(prefix):
            continue  # in no child's dict (a stock loader raised on a non-string key)
        head, dot, _ = k[cut:].partition(".")
        if dot:
            group = groups.get(head)
            if group is None:
                groups[head] = {k: v}
            else:
                group[k] = v
    return groups
