"""Diagnosis: why a checkpoint does not fit a model, as a Report with a suggested Plan.

The package is ``ckwidget.diagnosis`` and the public function ``ckwidget.diagnose``: a
package named like the function would be bound over it on ``ckwidget`` as soon as any
submodule is imported.
"""

from __future__ import annotations

from .engine import diagnose
from .report import Report

__all__ = ["Report", "diagnose"]
