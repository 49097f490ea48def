"""``ckwidget check``: will the checkpoint load into the model? The exit code says."""

from __future__ import annotations

import argparse
import json

from .diagnose import run_diagnosis
from .exit_codes import CANNOT_LOAD, FIXABLE
from .output import Out
from .report_view import check_document, print_code, print_report
from .source import code_path
from .verdict import exit_code


def cmd_check(args: argparse.Namespace) -> int:
    done = run_diagnosis(args)
    if isinstance(done, int):
        return done
    report = done[0]
    code = exit_code(report, args.strict)
    out = Out()
    if args.json:
        out(json.dumps(check_document(report, code, args.path, args.model), indent=2))
        return code
    print_report(out, report, code, args, "check")
    if args.code:
        print_code(out, report, code_path(args))
    if code in (FIXABLE, CANNOT_LOAD) and len(report.plan) and not args.code:
        partial = " --allow-partial" if code == CANNOT_LOAD else ""
        out()
        out(out.dim(f"Next: ckwidget fix {args.path} --model {args.model} -o "
                    f"repaired.safetensors{partial}  (--code shows the plain torch)"))
    return code
