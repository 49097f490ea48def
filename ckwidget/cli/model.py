"""``--model MODULE:FACTORY`` for the command line: find the factory, build the model cheaply.

The model is built on the meta device when the factory allows (``FACTORY(device="meta")``
or under ``torch.device("meta")``), so a 70B-parameter model costs nothing. Diagnosis
needs only names, shapes and dtypes, and a meta model would be diagnosed as a meta model
(a real finding for a user who loads into one, an artefact here), so each meta tensor is
replaced by a CPU stand-in of the same shape and dtype whose storage is one element
(stride 0): shapes, dtypes and tied weights are kept, memory is not spent.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


class ModelSpecError(Exception):
    """``--model`` does not name an importable factory (a usage mistake)."""


class ModelBuildError(Exception):
    """The user's module or factory raised, or returned something that is not a model."""


def _import_file(path: Path) -> Any:
    name = "_ckwidget_user_" + "".join(ch if ch.isalnum() else "_" for ch in path.stem)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ModelSpecError(f"Cannot import {str(path)!r} as a Python module.")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    # Like `python file.py`: the file's folder is importable, so it can import siblings.
    folder = str(path.parent.resolve())
    if folder not in sys.path:
        sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:
        sys.modules.pop(name, None)
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise ModelBuildError(
            f"Importing {path.name} failed: {type(exc).__name__}: {exc}") from None
    return module


def _import_module(name: str) -> Any:
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, "")  # like `python -m`: modules in the current folder import
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing and (name == missing or name.startswith(missing + ".")):
            raise ModelSpecError(
                f"No module named {name!r}: give a module path importable from here "
                "(e.g. mypkg.models) or a .py file (e.g. models.py:build)."
            ) from None
        raise ModelBuildError(f"Importing {name} failed: {exc}") from None
    except Exception as exc:
        raise ModelBuildError(
            f"Importing {name} failed: {type(exc).__name__}: {exc}") from None


def load_factory(spec: str) -> tuple[Callable[..., Any], str]:
    """``"pkg.models:build"`` or ``"path/to/models.py:Net"`` -> (callable, display name)."""
    module_part, sep, attr = spec.rpartition(":")
    if not sep or not module_part or not attr:
        raise ModelSpecError(
            f"--model {spec!r} should be MODULE:FACTORY, e.g. mypkg.models:build or "
            "models.py:Net (a function or class that returns the model).")
    looks_like_file = module_part.endswith(".py") or "/" in module_part or "\\" in module_part
    if looks_like_file:
        path = Path(module_part).expanduser()
        if not path.is_file():
            raise ModelSpecError(f"There is no Python file at {module_part!r}.")
        module = _import_file(path)
    else:
        module = _import_module(module_part)
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ModelSpecError(f"{module_part} has no attribute {attr!r}.")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ModelSpecError(f"{spec} is not callable: FACTORY must be a function or class.")
    return obj, attr


def _accepts_device(factory: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False
    return "device" in params


def _call(factory: Callable[..., Any], name: str, **kwargs: Any) -> Any:
    try:
        return factory(**kwargs)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:
        raise ModelBuildError(f"{name}() raised {type(exc).__name__}: {exc}") from None


def _check_module(model: Any, name: str) -> Any:
    from torch import nn

    if not isinstance(model, nn.Module):
        raise ModelBuildError(
            f"{name}() returned {type(model).__name__}, not a torch.nn.Module.")
    return model


def build_model(factory: Callable[..., Any], name: str, *, meta: bool = True) -> tuple[Any, bool]:
    """The model, and whether it is a shape-only stand-in built on the meta device.

    Falls back to a normal build when the factory fails under the meta device.
    """
    if meta:
        import torch

        model = None
        try:
            if _accepts_device(factory):
                model = factory(device="meta")
            else:
                with torch.device("meta"):
                    model = factory()
        except KeyboardInterrupt:
            raise
        except BaseException:
            model = None  # some factories cannot build on meta: build for real below
        from torch import nn

        if isinstance(model, nn.Module):
            return model, shape_only(model) > 0
    return _check_module(_call(factory, name), name), False


def shape_only(model: Any) -> int:
    """Replace every meta tensor of ``model`` by a one-element CPU stand-in, in place.

    Returns how many distinct tensors were replaced.
    """
    import torch
    from torch import nn

    memo: dict[int, tuple[Any, Any]] = {}  # id -> (original, stand-in); keeps ids unique

    def stand_in(t: Any) -> Any:
        if t is None or not getattr(t, "is_meta", False):
            return t
        if isinstance(t, nn.parameter.UninitializedTensorMixin):
            return t
        hit = memo.get(id(t))
        if hit is None:
            base = torch.zeros((), dtype=t.dtype).expand(t.shape)
            if isinstance(t, nn.Parameter):
                found = nn.Parameter(base, requires_grad=t.requires_grad)
            else:
                found = base
            memo[id(t)] = (t, found)
            return found
        return hit[1]

    for module in model.modules():
        for key, value in list(module._parameters.items()):
            module._parameters[key] = stand_in(value)
        for key, value in list(module._buffers.items()):
            module._buffers[key] = stand_in(value)
    return len(memo)
