"""Diagnosis: why a checkpoint does not fit a model, as a Report with a suggested Plan.

``ckwidget.diagnose`` is both this package and the public function: once any submodule
is imported, Python binds the package over the lazy function attribute of ``ckwidget``,
so the package itself is made callable and forwards to :func:`diagnose`.
"""

from __future__ import annotations

import sys
import types
from typing import Any

from .engine import diagnose
from .report import Report

__all__ = ["Report", "diagnose"]


class _CallablePackage(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Report:
        return diagnose(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
