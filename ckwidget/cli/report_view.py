"""A Report as ``check`` and ``fix`` show it: the terminal text (headline, verdict,
findings, keys that need attention, plan, plain torch code) and the ``check --json``
document."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from ..formatting import count_text, shape_text
from .exit_codes import BAD_FILE
from .format import clean, table, wrapped
from .output import Out, finding_doc, print_findings, print_io
from .verdict import colour, verdict

if TYPE_CHECKING:  # pragma: no cover
    from ..diagnosis.report import Report

ATTENTION_ROWS = 20
KEY_COLUMNS = ("key", "status", "checkpoint", "model", "note")


def attention_rows(report: Report, show_all: bool) -> tuple[list[list[str]], int]:
    """Rows of report.table whose status is not "match" (the first 20 unless show_all)."""
    t = report.table
    if not len(t):
        return [], 0
    t = t[t["status"] != "match"]
    total = len(t)
    if not show_all:
        t = t.head(ATTENTION_ROWS)

    def side(row: Any, prefix: str) -> str:
        shape = row.get(f"{prefix}_shape")
        if not isinstance(shape, tuple):
            return "-"
        dtype = row.get(f"{prefix}_dtype")
        return f"{shape_text(shape)} {dtype if isinstance(dtype, str) else ''}".strip()

    rows = []
    for row in t.to_dict("records"):
        note = row.get("note")
        rows.append([clean(row["key"]), clean(row["status"]), clean(side(row, "checkpoint")),
                     clean(side(row, "model")), clean(note if isinstance(note, str) else "")])
    return rows, total


def check_document(report: Report, code: int, path: str, model_spec: str) -> dict[str, Any]:
    """The machine-readable ``check --json`` document."""
    from ..readers import is_url

    rows, _ = attention_rows(report, show_all=True)
    return {
        "path": path, "model": model_spec, "model_class": report.model_name,
        "format": report.checkpoint.format, "entry": report.entry,
        "status": report.status, "exit_code": code, "headline": report.headline,
        "loads_cleanly": bool(report.loads_cleanly),
        "model_tensor_count": report.model_tensor_count,
        "loadable_count": report.loadable_count,
        "loadable_after_plan": report.loadable_after_plan,
        "findings": [finding_doc(f) for f in report.findings],
        "plan": [{"kind": f.kind, "description": f.describe()} for f in report.plan],
        "keys": [dict(zip(KEY_COLUMNS, r)) for r in rows],
        "code": (report.plan.to_code(path=None if is_url(path) else path)
                 if len(report.plan) else None),
    }


def print_report(out: Out, report: Report, code: int, args: argparse.Namespace,
                 command: str) -> None:
    st = out.style
    entry = f"  (entry {clean(report.entry)!r})" if report.entry else ""
    out(st(f"ckwidget {command}", "bold") + f"  {clean(args.path)} -> "
        f"{clean(report.model_name)}{entry}")
    out(f"  {clean(report.headline)}")
    out("  verdict: " + st(verdict(report, args.strict), colour(code)))
    print_findings(out, report.findings, verbose=args.verbose)
    if args.verbose and command == "check":
        print_io(out, report.checkpoint)
    rows, total = attention_rows(report, args.all)
    if rows and code != BAD_FILE:
        out.heading(f"Keys that need attention ({count_text(total)})")
        out.lines(table(rows, header=KEY_COLUMNS, style=st))
        if total > len(rows):
            out(f"  ... {count_text(total - len(rows))} more (--all lists them, --json gives "
                "them all)")
    if len(report.plan):
        out.heading("Suggested plan")
        for i, fix in enumerate(report.plan, 1):
            out.lines(wrapped(f"  {i}. ", clean(fix.describe()), out.width))


def print_code(out: Out, report: Report, path: str | None) -> None:
    """The plan as plain torch code (--code)."""
    if not len(report.plan):
        return
    out.heading("The same in plain torch")
    out.lines(["  " + line if line else "" for line in
               report.plan.to_code(path=path).splitlines()])
