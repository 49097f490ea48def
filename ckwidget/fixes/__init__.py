"""Fixes: the fix kinds, the Plan that orders them, atomic apply and plain-torch code."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

# every fix kind by its class name (AddPrefix, AllowGlobals...): kinds/__init__.py's
# __all__, derived from its one KINDS tuple
from .kinds import *  # noqa: F403
from .kinds import FIX_KINDS, KINDS, CodeContext, Fix

if TYPE_CHECKING:  # pragma: no cover
    from .apply import LoadResult
    from .plan import Plan

_LAZY = {"Plan": ".plan", "LoadResult": ".apply", "extract_weights": ".helpers"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'ckwidget.fixes' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "FIX_KINDS", "KINDS", "CodeContext", "Fix", "LoadResult", "Plan", "extract_weights",  # noqa: F405
    *(cls.__name__ for cls in KINDS),
]
