"""Small models that several test modules (and the notebooks they drive) build: one
definition each, so a change to a shared case is made once."""

from __future__ import annotations

from torch import nn


class Blocks(nn.Module):
    """Four blocks of Linear + LayerNorm and a head: layer families of four, with the
    LayerNorm weights at 1 and biases at 0 that the statistics must not call dead."""

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Linear(32, 32), nn.LayerNorm(32)) for _ in range(4))
        self.head = nn.Linear(32, classes)
