"""The notebook view: ``debug`` builds the widget (or a static HTML report)."""

from __future__ import annotations

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

    ``static=True`` returns a plain HTML report instead (front ends without widgets).
    ``model_name`` is the variable name the generated code uses for the model.
    """
    from ..diagnosis import diagnose

    report = diagnose(path_or_ckpt, model, optimizer, sample_input, entry=entry,
                      map_location=map_location)
    if static:
        from .static import StaticReport

        return StaticReport(report, model_name)
    from .widget import CheckpointDebugger

    return CheckpointDebugger(report, model, model_name=model_name, background=background)


__all__ = ["debug"]
