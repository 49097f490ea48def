"""ckwidget: why won't this checkpoint load?

Public API (heavy modules are imported on first use)::

    ckpt = ckwidget.open_checkpoint(path)   # or a URL: s3://, https://, hf://...
    report = ckwidget.diagnose(path_or_ckpt, model)
    report.plan.apply(model); print(report.plan.to_code())
    ckwidget.debug(path, model)          # the notebook widget
    %load_ext ckwidget; %ckdebug PATH MODEL
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "open_checkpoint": ("ckwidget.readers", "open_checkpoint"),
    "Budgets": ("ckwidget.readers.budgets", "Budgets"),
    "Checkpoint": ("ckwidget.checkpoint", "Checkpoint"),
    "TensorInfo": ("ckwidget.checkpoint", "TensorInfo"),
    "Finding": ("ckwidget.checkpoint", "Finding"),
    "CheckpointError": ("ckwidget.errors", "CheckpointError"),
    "NotACheckpointError": ("ckwidget.errors", "NotACheckpointError"),
    "CorruptCheckpointError": ("ckwidget.errors", "CorruptCheckpointError"),
    "BudgetExceededError": ("ckwidget.errors", "BudgetExceededError"),
    "CheckpointChangedError": ("ckwidget.errors", "CheckpointChangedError"),
    "FixError": ("ckwidget.errors", "FixError"),
    "diagnose": ("ckwidget.diagnosis", "diagnose"),
    "Report": ("ckwidget.diagnosis.report", "Report"),
    "Plan": ("ckwidget.fixes", "Plan"),
    "fixes": ("ckwidget.fixes", None),
    "extract_weights": ("ckwidget.fixes.helpers", "extract_weights"),
    "debug": ("ckwidget.ui", "debug"),
}

__all__ = [
    "BudgetExceededError",
    "Budgets",
    "Checkpoint",
    "CheckpointChangedError",
    "CheckpointError",
    "CorruptCheckpointError",
    "Finding",
    "FixError",
    "NotACheckpointError",
    "Plan",
    "Report",
    "TensorInfo",
    "debug",
    "diagnose",
    "extract_weights",
    "fixes",
    "load_ipython_extension",
    "open_checkpoint",
    "unload_ipython_extension",
]

if TYPE_CHECKING:  # pragma: no cover
    from . import fixes
    from .checkpoint import Checkpoint, Finding, TensorInfo
    from .diagnosis import diagnose
    from .diagnosis.report import Report
    from .errors import (
        BudgetExceededError,
        CheckpointError,
        CorruptCheckpointError,
        FixError,
        NotACheckpointError,
    )
    from .fixes import Plan
    from .fixes.helpers import extract_weights
    from .readers import open_checkpoint
    from .readers.budgets import Budgets
    from .ui import debug


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'ckwidget' has no attribute {name!r}")
    import importlib

    module_name, attr = _LAZY[name]
    module = importlib.import_module(module_name)
    value = module if attr is None else getattr(module, attr)
    if name in _TAKE_STORAGE_OPTIONS:
        value = _storage_options_passed(value)
    globals()[name] = value
    return value


# ``ck.diagnose(url, model, storage_options={...})`` and ``ck.debug(...)`` open the URL
# with its fsspec options first (issue 22); their own signatures stay as they are.
_TAKE_STORAGE_OPTIONS = ("diagnose", "debug")


def _storage_options_passed(fn: Any) -> Any:
    import functools

    @functools.wraps(fn)
    def with_storage_options(path_or_ckpt: Any, *args: Any,
                             storage_options: dict | None = None, **kwargs: Any) -> Any:
        if storage_options is not None and isinstance(path_or_ckpt, str):
            from .readers import open_checkpoint

            path_or_ckpt = open_checkpoint(path_or_ckpt, storage_options)
        return fn(path_or_ckpt, *args, **kwargs)

    return with_storage_options


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext ckwidget`` registers ``%ckdebug``."""
    from .magic import register

    register(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    from .magic import unregister

    unregister(ipython)
