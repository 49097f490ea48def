"""HTML fragments shared by the live widget and the static report.

Everything that came from a file (keys, messages naming keys, paths, metadata) passes
through ``html.escape`` here; callers never build HTML from raw strings themselves.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from .style import esc, human_size
from .table import group_keys

EVIDENCE_LIMIT = 50


def source_label(report: Any) -> str:
    ckpt = report.checkpoint
    if getattr(ckpt, "path", None) is not None:
        return str(ckpt.path)
    return str(getattr(ckpt, "metadata", {}).get("name", "<in-memory checkpoint>"))


def header_meta(report: Any) -> str:
    """ "torch-zip · 1.2 MB · 130 tensors · entry 'state_dict'" as escaped HTML."""
    ckpt = report.checkpoint
    parts = [esc(ckpt.format)]
    size = human_size(getattr(ckpt, "size", 0))
    if size and getattr(ckpt, "size", 0):
        parts.append(esc(size))
    parts.append(f"{len(ckpt.tensors):,} tensors")
    entry = getattr(report, "entry", None)
    if entry:
        parts.append(f"entry {esc(repr(entry))}")
    return " · ".join(parts)


def header_html(report: Any) -> str:
    return (
        f'<div class="ck-file">{esc(source_label(report))}</div>'
        f'<div class="ck-meta">{header_meta(report)}</div>'
    )


def headline_html(report: Any) -> str:
    status = str(getattr(report, "status", "broken"))
    return (
        f'<span class="ck-pill ck-pill-{esc(status)}">{esc(status)}</span>'
        f"{esc(report.headline)}"
    )


def plan_line(report: Any, preview: Any | None, n_fixes: int) -> str:
    """What the selected fixes would achieve; from the preview report once there is one."""
    total = getattr(report, "model_tensor_count", None)
    if n_fixes == 0:
        return "No fixes selected: the checkpoint would load as it is."
    these = "this fix" if n_fixes == 1 else f"these {n_fixes} fixes"
    fixes = "fix" if n_fixes == 1 else f"{n_fixes} fixes"
    if preview is not None:
        loadable = getattr(preview, "loadable_count", None)
        total = getattr(preview, "model_tensor_count", total)
        clean = " and it loads cleanly" if getattr(preview, "loads_cleanly", False) else ""
        if loadable is None:
            return f"With {these}: {esc(preview.headline)}"
        return f"With {these}: {loadable:,} of {total:,} model tensors would load{clean}."
    loadable = getattr(report, "loadable_after_plan", None)
    if loadable is None or total is None:
        return f"{n_fixes} suggested fix{'' if n_fixes == 1 else 'es'}."
    return f"With the suggested {fixes}: {loadable:,} of {total:,} model tensors would load."


def fix_text(fix: Any) -> str:
    try:
        return str(fix.describe())
    except Exception as exc:  # a broken describe must not hide the rest
        return f"{getattr(fix, 'kind', type(fix).__name__)} ({exc})"


def evidence_html(keys: Sequence[str], limit: int = EVIDENCE_LIMIT) -> str:
    """Keys behind a finding, repeated layers folded, inside an expandable block."""
    if not keys:
        return ""
    groups = group_keys(list(keys), limit)
    items = "".join(
        f"<li>{esc(label)}" + (f' <span class="ck-count">×{n}</span>' if n > 1 else "")
        + "</li>"
        for label, n in groups
    )
    shown = sum(n for _, n in groups)
    more = f"<li>… and {len(keys) - shown:,} more</li>" if shown < len(keys) else ""
    noun = "key" if len(keys) == 1 else "keys"
    return (
        f"<details><summary>Evidence: {len(keys):,} {noun}</summary>"
        f'<ul class="ck-evidence">{items}{more}</ul></details>'
    )


def finding_html(finding: Any, selected: Iterable[Any] = ()) -> str:
    chosen = set(selected)
    sev = esc(finding.severity)
    fixes = ""
    if finding.fixes:
        rows = []
        for fix in finding.fixes:
            mark = '<span class="ck-inplan">✓ in plan</span> ' if fix in chosen else "○ "
            rows.append(f"<li>{mark}{esc(fix_text(fix))}</li>")
        fixes = f'<ul class="ck-fixlist">{"".join(rows)}</ul>'
    return (
        f'<div class="ck-finding ck-finding-{esc(finding.kind)}">'
        f'<span class="ck-sev ck-sev-{sev}">{sev}</span> '
        f'<span class="ck-kind">{esc(finding.kind)}</span>'
        f'<div class="ck-message">{esc(finding.message)}</div>'
        f"{evidence_html(finding.keys)}{fixes}</div>"
    )


def findings_html(findings: Sequence[Any], selected: Iterable[Any] = ()) -> str:
    if not findings:
        return '<div class="ck-hint">No findings: nothing stands in the way.</div>'
    chosen = list(selected)
    return "".join(finding_html(f, chosen) for f in findings)
