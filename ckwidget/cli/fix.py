"""``ckwidget fix``: apply the suggested plan and write the repaired state dict to a new
file (the -o path is checked before any work; the source is never written)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..errors import FixError
from ..formatting import count_text, size_text
from .diagnose import run_diagnosis
from .exit_codes import BAD_FILE, CANNOT_LOAD, OK, UsageError
from .format import clean
from .output import Out, print_io
from .report_view import print_code, print_report
from .source import code_path, existing
from .verdict import exit_code


def check_output(args: argparse.Namespace) -> Path:
    """The -o path, refused when it is the source, a folder, or in no folder; settles
    args.format by its suffix (the rule Plan.save keeps)."""
    target = Path(args.output).expanduser()
    source = Path(args.path).expanduser()
    try:
        same = target.resolve() == source.resolve() or (
            target.exists() and os.path.samefile(target, source))
    except OSError:
        same = False
    if same or (source.is_dir() and target.resolve().is_relative_to(source.resolve())):
        raise UsageError(f"Refusing to write {args.output!r}: it is the source checkpoint; "
                         "choose a new path with -o.")
    if target.is_dir():
        raise UsageError(f"{args.output!r} is a folder; give -o a file name.")
    if not target.parent.exists():
        raise UsageError(f"The folder {str(target.parent)!r} does not exist.")
    from ..fixes.save import save_format

    try:  # the same rule Plan.save keeps: by the suffix, a contradiction refused
        args.format = save_format(target, args.format)
    except FixError as exc:
        raise UsageError(clean(exc)) from None
    return target


def cmd_fix(args: argparse.Namespace) -> int:
    existing(args.path)
    target = check_output(args)
    done = run_diagnosis(args)
    if isinstance(done, int):
        return done
    report, model, factory, stand_in = done
    code = exit_code(report, args.strict)
    out = Out()
    print_report(out, report, code, args, "fix")
    out()
    if code == BAD_FILE:
        out(out.style("Nothing written: no weights can be taken from this file safely.", "red"))
        return code
    if code == CANNOT_LOAD and not args.allow_partial:
        out(out.style("Nothing written: the repaired file would not give the model all it "
                      "needs. --allow-partial writes it anyway.", "red"))
        return code
    plan = report.plan
    save_model = model
    if stand_in and any(f.kind == "resize-copy" for f in plan):
        from .model import build_model

        save_model, _ = build_model(factory, args.model, meta=False)
    try:
        written = plan.save(target, format=args.format, model=save_model)
    except FixError as exc:
        print(f"ckwidget: {clean(exc)}", file=sys.stderr)
        return CANNOT_LOAD
    from ..readers import open_checkpoint

    saved = open_checkpoint(written)
    what = "the repaired checkpoint" if len(plan) else "a copy (nothing needed fixing)"
    out(out.style(f"Wrote {what}: {clean(written)}", "green"))
    out(f"  {args.format}, {count_text(len(saved.tensors))} tensors, {size_text(saved.size)}, "
        "keys as the model names them")
    strict = report.loadable_after_plan == report.model_tensor_count
    loader = ("safetensors.torch.load_file(path)" if args.format == "safetensors"
              else "torch.load(path, weights_only=True)")
    out(f"  load it with: model.load_state_dict({loader}, strict={strict})")
    if args.code:
        print_code(out, report, code_path(args))
    if args.verbose:
        print_io(out, report.checkpoint)
    return OK
