"""``%ckdebug PATH MODEL [options]``: the one-line way into the debugger widget.

Parsing only: the line is split with shlex (so quoted paths with spaces work), MODEL
and the other expressions are evaluated in the user's namespace, and every mistake
becomes IPython's ``UsageError`` with one sentence. The work is ``ckwidget.ui.debug``.
"""

from __future__ import annotations

import argparse
import os
import shlex
from dataclasses import dataclass
from typing import Any

USAGE = (
    "%ckdebug PATH MODEL [--optimizer EXPR] [--entry KEY] [--map-location DEVICE] "
    "[--sample EXPR] [--export] [--static]"
)


def _usage_error(message: str, usage: bool = False) -> Exception:
    """IPython's UsageError carrying one sentence (with the usage line after a colon)."""
    from IPython.core.error import UsageError

    if usage:
        message = f"{message.rstrip('.')}; usage: {USAGE}"
    return UsageError(message)


class _Parser(argparse.ArgumentParser):
    """argparse that raises a one-sentence UsageError instead of printing and exiting."""

    def error(self, message: str) -> Any:  # type: ignore[override]
        msg = message.replace("the following arguments are required: ", "missing ")
        msg = msg[0].upper() + msg[1:] if msg else "Bad arguments"
        raise _usage_error(msg, usage=True)

    def exit(self, status: int = 0, message: str | None = None) -> Any:  # type: ignore[override]
        raise _usage_error((message or "Bad arguments").strip(), usage=True)


def _parser() -> _Parser:
    p = _Parser(prog="%ckdebug", add_help=False, allow_abbrev=False)
    p.add_argument("path", metavar="PATH")
    p.add_argument("model", metavar="MODEL")
    p.add_argument("--optimizer", default=None)
    p.add_argument("--entry", default=None)
    p.add_argument("--map-location", dest="map_location", default=None)
    p.add_argument("--sample", default=None)
    p.add_argument("--export", action="store_true")
    p.add_argument("--static", action="store_true")
    return p


@dataclass
class CkdebugArgs:
    path: str
    model: str
    optimizer: str | None = None
    entry: str | None = None
    map_location: str | None = None
    sample: str | None = None
    export: bool = False
    static: bool = False


def parse_line(line: str) -> CkdebugArgs:
    """Split and parse the magic's line; raises UsageError with one sentence."""
    try:
        words = shlex.split(line, posix=True)
    except ValueError as exc:
        raise _usage_error(f"Could not split the arguments ({exc}); check the quotes.") from None
    if not words:
        raise _usage_error("Give a checkpoint path and a model", usage=True)
    ns = _parser().parse_args(words)
    return CkdebugArgs(**vars(ns))


def evaluate(expr: str, namespace: dict[str, Any], what: str) -> Any:
    """Evaluate an expression in the user's namespace; a failure is a UsageError."""
    try:
        return eval(expr, namespace)  # the user's own expression, as typed in their cell
    except Exception as exc:
        raise _usage_error(
            f"Could not evaluate {what} {expr!r}: {type(exc).__name__}: {str(exc).rstrip('.')}."
        ) from None


def run_ckdebug(line: str, shell: Any) -> Any:
    """What ``%ckdebug`` does: parse, evaluate, diagnose, show and return the widget."""
    import torch

    from .errors import CheckpointError
    from .ui import debug

    args = parse_line(line)
    ns = shell.user_ns
    from .readers import is_url

    remote = is_url(args.path)  # s3://, https://, hf://...: read where it lives
    path = args.path if remote else os.path.expanduser(args.path)
    if not remote and not os.path.exists(path):
        raise _usage_error(f"There is no file or folder at {args.path!r}.")
    model = evaluate(args.model, ns, "MODEL")
    if not isinstance(model, torch.nn.Module):
        raise _usage_error(
            f"MODEL {args.model!r} is a {type(model).__name__}, not a torch.nn.Module."
        )
    optimizer = evaluate(args.optimizer, ns, "--optimizer") if args.optimizer else None
    sample = evaluate(args.sample, ns, "--sample") if args.sample else None
    try:
        widget = debug(
            path, model, optimizer, sample, entry=args.entry,
            map_location=args.map_location, model_name=_code_name(args.model),
            static=args.static,
        )
    except CheckpointError as exc:
        raise _usage_error(str(exc).rstrip(".") + ".") from None
    if args.export:
        widget.export()
    from IPython.display import display

    display(widget)
    return widget


def _code_name(expr: str) -> str:
    """The model's name in generated code: the expression itself when it is a plain
    dotted name (``net.encoder``), else ``model``."""
    parts = expr.split(".")
    return expr if all(p.isidentifier() for p in parts) else "model"


def register(ipython: Any) -> None:
    """Register ``%ckdebug`` on ``ipython`` (called by ``%load_ext ckwidget``)."""

    def ckdebug(line: str) -> Any:
        return run_ckdebug(line, ipython)

    ckdebug.__doc__ = f"Open the checkpoint debugger widget.\n\n{USAGE}"
    ipython.register_magic_function(ckdebug, magic_kind="line", magic_name="ckdebug")


def unregister(ipython: Any) -> None:
    """Remove ``%ckdebug`` again (``%unload_ext ckwidget``)."""
    ipython.magics_manager.magics.get("line", {}).pop("ckdebug", None)
