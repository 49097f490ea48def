"""Shared test settings: a fixed seed and a temporary folder per test are enough."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("CKWIDGET_TESTING", "1")
# Torch threads fight with the other test processes on a 2-core machine.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def _seed():
    import torch

    torch.manual_seed(0)
    yield
