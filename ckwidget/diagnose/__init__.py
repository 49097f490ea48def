"""Diagnosis: why a checkpoint does not fit a model, as a Report with a suggested Plan."""

from __future__ import annotations

from .engine import diagnose
from .report import Report

__all__ = ["Report", "diagnose"]
