"""The ``ckwidget`` command: inspect, check and fix checkpoints from a terminal or CI job.

A view over the public API (``open_checkpoint``, ``diagnose``, ``Plan``); it holds no
diagnosis of its own: the verdict of ``check`` and ``fix`` is the report's status
(:mod:`.verdict`). ``inspect`` never imports torch, so it starts in a fraction of a
second; ``check`` and ``fix`` import it (and the diagnosis) only when they run.

Modules: ``parser`` (options and help), ``inspect`` / ``check`` / ``fix`` (one command
each), ``diagnose`` (check and fix's first step), ``report_view`` (a Report as text and
JSON), ``verdict`` (status -> word and exit code), ``exit_codes``, ``source`` (opening
the named file), ``output`` (stdout, findings), ``format`` (safe terminal text),
``grouping`` (repeated layers collapsed), ``model`` (``--model MODULE:FACTORY``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from ..errors import CheckpointError
from .exit_codes import (
    BAD_FILE,
    CANNOT_LOAD,
    EXIT_CODES_HELP,
    FIXABLE,
    INTERNAL,
    INTERRUPTED,
    MODEL_FAILED,
    OK,
    USAGE,
    UsageError,
)
from .format import clean
from .inspect import inspect_document
from .parser import build_parser
from .report_view import check_document
from .verdict import exit_code, file_state, verdict

__all__ = ["BAD_FILE", "CANNOT_LOAD", "EXIT_CODES_HELP", "FIXABLE", "INTERNAL", "INTERRUPTED",
           "MODEL_FAILED", "OK", "USAGE", "UsageError", "build_parser", "check_document",
           "exit_code", "file_state", "inspect_document", "main", "verdict"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ckwidget`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from .model import ModelBuildError, ModelSpecError

    try:
        return int(args.run(args))
    except (UsageError, ModelSpecError) as exc:
        print(f"ckwidget: {clean(exc)}", file=sys.stderr)
        return USAGE
    except ModelBuildError as exc:
        print(f"ckwidget: {clean(exc)}", file=sys.stderr)
        return MODEL_FAILED
    except CheckpointError as exc:
        print(f"ckwidget: {clean(exc)}", file=sys.stderr)
        return BAD_FILE
    except KeyboardInterrupt:
        print("ckwidget: interrupted.", file=sys.stderr)
        return INTERRUPTED
    except BrokenPipeError:
        # The reader of our output went away (e.g. `| head`): stop quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return OK
    except Exception as exc:
        print(f"ckwidget: internal error, please report it: {type(exc).__name__}: "
              f"{clean(exc)}", file=sys.stderr)
        if os.environ.get("CKWIDGET_DEBUG"):
            raise
        return INTERNAL
