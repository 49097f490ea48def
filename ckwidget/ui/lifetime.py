"""Closing widgets for real: ipywidgets keeps every open widget alive in its registry.

A Box's ``close`` leaves its children open, and children replaced in a Box stay open
too; their callbacks hold the debugger, which holds a checkpoint of 100,000 tensors.
These helpers close whole trees, so that memory is freed when a view goes away, and
close the debuggers a notebook cell made when that cell runs again.
"""

from __future__ import annotations

import weakref
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


def current_cell() -> tuple[str, str] | None:
    """(cell id, request id) of the notebook cell running now, where the front end says
    which cell it runs (JupyterLab and Notebook 7 send the cell's id with each execute
    request); None in plain Python, a terminal, or a front end that does not say."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - ipywidgets depends on IPython
        return None
    get_parent = getattr(getattr(get_ipython(), "kernel", None), "get_parent", None)
    if get_parent is None:
        return None
    try:
        parent = get_parent()  # ipykernel 6+: the request being run, with its metadata
    except Exception:
        return None
    if not isinstance(parent, dict):
        return None
    metadata, header = parent.get("metadata"), parent.get("header")
    cell = metadata.get("cellId") if isinstance(metadata, dict) else None
    request = header.get("msg_id") if isinstance(header, dict) else None
    if isinstance(cell, str) and cell and isinstance(request, str) and request:
        return cell, request
    return None


class CellWidgets:
    """The widgets each notebook cell made in its latest run.

    Running a cell again replaces its output, so the debuggers its earlier run made are
    out of sight, yet ipywidgets would keep each (and the checkpoint description it
    holds) until the kernel restarts. ``retire_earlier_runs`` closes them when the
    cell runs again. Widgets made by one run are all kept (a loop that opens
    several), and so is a widget shown from another cell until its own cell runs again.
    """

    def __init__(self) -> None:
        self._by_cell: dict[str, tuple[str, list[weakref.ref[Any]]]] = {}

    def retire_earlier_runs(self, where: tuple[str, str] | None) -> None:
        """Close what earlier runs of ``where``'s cell made (``where`` is (cell,
        request); None, no cell known, closes nothing)."""
        if where is None:
            return
        cell, request = where
        last_request, refs = self._by_cell.get(cell, ("", []))
        if last_request == request:
            return
        self._by_cell[cell] = (request, [])
        for ref in refs:
            old = ref()
            if old is not None:
                old.close()

    def adopt(self, widget: Any, where: tuple[str, str] | None) -> None:
        """Record ``widget`` as made by ``where``'s run of its cell."""
        if where is None:
            return
        self.retire_earlier_runs(where)
        self._by_cell[where[0]][1].append(weakref.ref(widget))


CELL_WIDGETS = CellWidgets()
