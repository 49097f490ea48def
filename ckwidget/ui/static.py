"""A static HTML report: the widget's content for front ends without widget support."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..diagnosis.table import COLUMNS
from . import render
from .export import code_html
from .style import esc, style_tag
from .table import PAGE_SIZE, KeyTable

if TYPE_CHECKING:  # pragma: no cover
    from ..diagnosis.report import Report


def static_html(
    report: Report,
    plan: Any = None,
    model_name: str = "model",
    table: KeyTable | None = None,
    evidence: dict[int, str] | None = None,
    note: str = "",
) -> str:
    """Header, findings, keys (see ``_keys_section``) and the plan's code; escaped.

    ``note`` is trusted HTML shown above the report (ckwidget's own text, never a file's).
    """
    plan = report.plan if plan is None else plan
    status = report.status
    summary, rows = _keys_section(report, table)
    try:
        code = plan.to_code(model_name=model_name)
    except Exception as exc:  # the report must still render
        code = f"# the code could not be generated: {exc}"
    fixes = list(plan.fixes)
    plan_items = "".join(f"<li>{esc(render.fix_text(f))}</li>" for f in fixes)
    plan_block = (f"<ul>{plan_items}</ul>" if fixes
                  else '<div class="ck-hint">No fixes needed.</div>')
    return (
        f'{style_tag()}<div class="ck-root ck-static">'
        + (f'<div class="ck-hint ck-static-note">{note}</div>' if note else "")
        + f'<div class="ck-header ck-status-{esc(status)}">{render.header_html(report)}'
        f'<div class="ck-headline">{render.headline_html(report)}</div>'
        f'<div class="ck-planline">{render.plan_hint(report, interactive=False)}</div></div>'
        f"<h4>Diagnosis</h4>{render.findings_html(report.findings, fixes, evidence)}"
        f"<h4>Plan</h4>{plan_block}"
        f'<div class="ck-snippet">{code_html(code)}</div>'
        f"<h4>Keys</h4><div class=\"ck-hint\">{esc(summary)}</div>"
        f'<div class="ck-table">{rows}</div></div>'
    )


def _keys_section(report: Report, table: KeyTable | None) -> tuple[str, str]:
    """(summary, rows HTML) for the Keys section.

    With a key table: its first page, repeated layers grouped. Without one (the
    widget's fallback HTML, written at every display before its Keys tab was ever
    opened), the keys that need attention, built for those rows alone: the columns of
    100,000 rows, let alone folding them into groups, cost more than the rest of the
    display.
    """
    attention = getattr(report, "attention_columns", None)
    if table is not None or attention is None:
        page = (table or KeyTable(report.table)).page(0)
        return page.summary, page.html
    counts = report.status_counts()
    total = sum(counts.values())
    listing = ", ".join(f"{n:,} {s}" for s, n in Counter(counts).most_common())
    small = attention(PAGE_SIZE)
    shown = len(small.get("key", ()))
    if not shown:
        return f"{total:,} keys: {listing}.", ""
    summary = (f"{total:,} keys: {listing}. The first {shown:,} that need "
               "attention are listed; report.table holds every key.")
    frame = pd.DataFrame({c: small[c] for c in COLUMNS if c in small})
    return summary, KeyTable(frame).page(0, group=False).html


class StaticReport:
    """What ``ck.debug(..., static=True)`` returns: a Report shown as plain HTML."""

    def __init__(self, report: Report, model_name: str = "model") -> None:
        self.report = report
        self.plan = report.plan
        self.model_name = model_name
        self._shown_at: int | None = None

    def to_html(self) -> str:
        return static_html(self.report, self.plan, self.model_name, KeyTable(self.report.table))

    def _repr_html_(self) -> str:
        return self.to_html()

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        return {"text/html": self.to_html(), "text/plain": repr(self)}

    def _ipython_display_(self) -> None:
        from .export import show_once

        show_once(self, self._repr_mimebundle_())

    def export(self) -> str:
        from .export import to_next_cell

        code = self.plan.to_code(model_name=self.model_name)
        to_next_cell(code)
        return code

    def __repr__(self) -> str:
        return f"<StaticReport {self.report.headline!r}>"
