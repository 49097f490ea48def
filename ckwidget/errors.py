"""Errors ckwidget raises. Each carries one sentence a person can act on."""

from __future__ import annotations


class CheckpointError(Exception):
    """Base of every error ckwidget raises about a checkpoint or a plan."""


class NotACheckpointError(CheckpointError):
    """The path is not something ckwidget can read as a checkpoint."""


class CorruptCheckpointError(CheckpointError):
    """The file is a checkpoint format, but its bytes are damaged."""


class CheckpointChangedError(CheckpointError):
    """The file changed on disk after it was opened; its tensors must not be read."""


class BudgetExceededError(CheckpointError):
    """Reading stopped because the file asked for more than a safety budget allows."""


class FixError(CheckpointError):
    """A fix or plan cannot be applied; the model is left unchanged."""
