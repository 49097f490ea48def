"""The notebook view: ``debug`` builds the widget (or a static HTML report).

How each front end is served (one object, one display bundle):

- JupyterLab 4, Notebook 7, Voila: the live ipywidgets 8 widget (plotly charts through
  anywidget). Each is driven in a real browser by the test suite
  (tests/test_browser*.py).
- VS Code (Jupyter extension): renders ipywidgets 8 and anywidget itself, so it gets the
  same live widget.
- Colab: renders ipywidgets 8 once third-party widgets are on; ``debug`` turns them on
  (``google.colab.output.enable_custom_widget_manager()``) when it runs inside Colab.
- Everything else (GitHub and nbviewer previews, a notebook reopened without its kernel,
  front ends without widget support): the widget's display bundle also carries a static
  ``text/html`` report (header, findings, plan, code, the keys that need attention;
  every string from the file escaped), which such front ends render instead of the
  widget view. A terminal gets a one-line ``text/plain``.
- ``debug(..., static=True)`` / ``%ckdebug ... --static`` return that HTML report on
  its own (a ``StaticReport``, whose key listing is the grouped first page of the
  table), for front ends where the widget view renders badly.
"""

from __future__ import annotations

import sys
from typing import Any


def debug(
    path_or_ckpt: Any,
    model: Any,
    optimizer: Any = None,
    sample_input: Any = None,
    *,
    entry: str | None = None,
    map_location: Any = None,
    model_name: str = "model",
    static: bool = False,
    background: bool = True,
) -> Any:
    """Diagnose ``path_or_ckpt`` against ``model`` and return the debugger widget.

    Running the same notebook cell again closes the debuggers its earlier run made
    (their output becomes the static report; closing frees what they hold).

    Args:
        path_or_ckpt: a checkpoint file or folder, an opened Checkpoint, or a state dict.
        model: the nn.Module to load into (it is changed only by Apply).
        optimizer: an optimizer whose saved state the file may hold (checked too).
        sample_input: a batch of inputs, compared with the training statistics.
        entry: the container holding the weights ("state_dict", "model"...); chosen
            automatically by default.
        map_location: the device tensors should load on.
        model_name: the variable name the generated code uses for the model.
        static: return a plain HTML report instead (front ends without widgets).
        background: run previews and statistics on a background thread.
    """
    from ..diagnosis import diagnose
    from .lifetime import CELL_WIDGETS, current_cell

    where = current_cell()
    CELL_WIDGETS.retire_earlier_runs(where)  # before this run holds a second checkpoint
    report = diagnose(path_or_ckpt, model, optimizer, sample_input, entry=entry,
                      map_location=map_location)
    if static:
        from .static import StaticReport

        return StaticReport(report, model_name)
    from .widget import CheckpointDebugger

    enable_colab_widgets()
    widget = CheckpointDebugger(report, model, model_name=model_name, background=background)
    CELL_WIDGETS.adopt(widget, where)
    return widget


def enable_colab_widgets() -> bool:
    """Inside Colab, turn on third-party widget support (ipywidgets 8 needs it).

    Returns True if it was turned on; elsewhere (or if Colab refuses) it does nothing,
    and the static HTML in the display bundle is what the user sees.
    """
    if "google.colab" not in sys.modules:
        return False
    try:
        from google.colab import output  # type: ignore[import-not-found]

        output.enable_custom_widget_manager()
    except Exception:  # an old or changed Colab: the HTML fallback still shows
        return False
    return True


__all__ = ["debug", "enable_colab_widgets"]
