"""The first step of ``check`` and ``fix``: build the --model, open the file, diagnose."""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import CheckpointError
from .exit_codes import UsageError
from .source import existing, open_path, unreadable


def run_diagnosis(args: argparse.Namespace) -> tuple[Any, Any, Any, bool] | int:
    """(report, model, factory, stand-in) or an exit code when the file cannot be read."""
    path = existing(args.path)
    from .model import build_model, load_factory

    factory, name = load_factory(args.model)
    model, stand_in = build_model(factory, name, meta=not args.no_meta)
    from ..diagnosis import diagnose

    try:
        ckpt = open_path(args, path)
    except CheckpointError as exc:
        return unreadable(args, path, exc)
    if args.entry and args.entry not in ckpt.candidates and not ckpt.members(args.entry):
        shown = ", ".join(repr(c) for c in ckpt.candidates[:8]) or "none"
        raise UsageError(f"The checkpoint has no entry {args.entry!r} holding tensors "
                         f"(entries that look like state dicts: {shown}).")
    report = diagnose(ckpt, model, entry=args.entry, map_location=args.map_location)
    return report, model, factory, stand_in
