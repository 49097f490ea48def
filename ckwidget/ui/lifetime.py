"""Closing widgets for real: ipywidgets keeps every open widget alive in its registry.

A Box's ``close`` leaves its children open, and children replaced in a Box stay open
too; their callbacks hold the debugger, which holds a checkpoint of 100,000 tensors.
These helpers close whole trees, so that memory is freed when a view goes away.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import ipywidgets as w


def close_tree(root: Any) -> None:
    """Close ``root`` and every widget inside it (children, layouts, styles)."""
    stack: list[Any] = [root]
    seen: set[int] = set()
    while stack:
        widget = stack.pop()
        if not isinstance(widget, w.Widget) or id(widget) in seen:
            continue
        seen.add(id(widget))
        stack.extend(getattr(widget, "children", ()) or ())
        stack.append(getattr(widget, "layout", None))
        stack.append(getattr(widget, "style", None))
        widget.close()


def replace_children(box: Any, children: Iterable[Any]) -> None:
    """``box.children = children``, closing the trees of the children it drops."""
    new = tuple(children)
    kept = {id(c) for c in new}
    old = [c for c in box.children if id(c) not in kept]
    box.children = new
    for child in old:
        close_tree(child)
