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


# -- a saved notebook reopened without its kernel -----------------------------------
#
# JupyterLab and Notebook 7 render a widget view in preference to the text/html beside
# it in the same output, even once its model is gone: a notebook saved while a debugger
# was open and reopened after its kernel stopped shows "Error displaying widget: model
# not found" (jupyterlab-manager's WidgetRenderer puts that text, and the class
# ``jupyter-widgets``, straight on the output node). The kernel's exit replaces the view
# with the static report (``leave_static``), but only in the open page: the file on disk
# keeps the view unless the notebook is saved again. So a second output, right below the
# widget's, holds the same report hidden; its CSS shows it, and hides the error, only
# where the output just above is that error. Anywhere else (the live widget, a static
# output, GitHub, VS Code) it stays hidden and takes no room.
# (the class is on the output node only in that error: a live view is a child of the
# node; and a :has() cannot hold another, so no ":not(:has(*))" could say it either)
_WIDGET_ERROR = ".jp-OutputArea-child:has(> .jp-OutputArea-output.jupyter-widgets)"
REOPEN_CSS = (
    ".jp-OutputArea-child:has(.ck-reopen) { display: none; }\n"
    f"{_WIDGET_ERROR} + .jp-OutputArea-child:has(.ck-reopen) {{ display: flex; }}\n"
    f"{_WIDGET_ERROR} + .jp-OutputArea-child .ck-reopen {{ display: block; }}\n"
    f"{_WIDGET_ERROR}:has(+ .jp-OutputArea-child .ck-reopen) {{ display: none; }}\n"
)


def reopen_bundle(report_html: str) -> dict[str, Any]:
    """The display bundle of the hidden report shown in place of a widget whose model is
    gone (see above); ``report_html`` is the static report (escaped, with its style).

    The copy's root loses the class ``ck-root`` (style.py styles ``.ck-reopen`` alike):
    while the widget is live, it is the only ``.ck-root`` of its output."""
    copy = report_html.replace('class="ck-root ck-static"', 'class="ck-static"', 1)
    return {"text/html": f'<style>{REOPEN_CSS}</style><div class="ck-reopen" hidden>'
                         f"{copy}</div>",
            "text/plain": ""}


def show_reopen_fallback(obj: Any, report_html: str) -> None:
    """Display :func:`reopen_bundle` below ``obj``'s output (call it right after ``obj``
    was displayed); ``clear_reopen_fallback`` empties it once ``obj`` turns static."""
    from IPython.display import display

    obj._reopen_display = display(reopen_bundle(report_html), raw=True, display_id=True)


def clear_reopen_fallback(obj: Any) -> None:
    """Empty the output ``show_reopen_fallback`` made (its widget's output is static now,
    so the report would be there twice in a front end that ignores the CSS); it stays
    hidden, taking no room."""
    handle = getattr(obj, "_reopen_display", None)
    if handle is None:
        return
    obj._reopen_display = None
    try:
        handle.update(reopen_bundle(""), raw=True)
    except Exception:  # the kernel is going away: the CSS keeps it hidden anyway
        pass
