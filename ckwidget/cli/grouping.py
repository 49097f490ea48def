"""Repeated layers collapsed for the command line: ``layers.{0..11}.attn.weight``, in
the one folded notation (:func:`ckwidget.formatting.fold_groups`), keeping apart
tensors whose dtype, shape or device differ."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..formatting import fold_groups, ranges

__all__ = ["group_keys", "ranges"]


def group_keys(items: Mapping[str, Any], signature: Callable[[Any], Any],
               ) -> list[tuple[str, int, Any]]:
    """Collapse keys that differ only in layer numbers and share ``signature(value)``:
    (display name, count, first value), in the order keys first appear."""
    lines = fold_groups(items, signature=lambda key: signature(items[key]))
    return [(line, n, items[key]) for line, n, key in lines]
