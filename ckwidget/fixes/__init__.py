"""Fixes: the fix kinds, the Plan that orders them, atomic apply and plain-torch code."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .kinds import (
    FIX_KINDS,
    AddPrefix,
    AllowGlobals,
    CastDtype,
    CodeContext,
    DropKeys,
    ExtractWeights,
    Fix,
    FoldWeightNorm,
    FuseKeys,
    MapLocation,
    RenameKeys,
    Reshape,
    ResizeCopy,
    SelectEntry,
    SplitKeys,
    StripPrefix,
    Transpose,
    UnfoldWeightNorm,
)

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
    "FIX_KINDS", "AddPrefix", "AllowGlobals", "CastDtype", "CodeContext", "DropKeys",
    "ExtractWeights", "Fix", "FoldWeightNorm", "FuseKeys", "LoadResult", "MapLocation", "Plan",
    "RenameKeys", "Reshape", "ResizeCopy", "SelectEntry", "SplitKeys", "StripPrefix", "Transpose",
    "UnfoldWeightNorm", "extract_weights",
]
