"""HTML fragments shared by the live widget and the static report.

Everything that came from a file (keys, messages naming keys, paths, metadata) passes
through ``html.escape`` here; callers never build HTML from raw strings themselves.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from ..formatting import fold_keys, size_text
from .style import esc

if TYPE_CHECKING:  # pragma: no cover
    from ..diagnosis.report import Report

EVIDENCE_LIMIT = 50


def source_label(report: Report) -> str:
    ckpt = report.checkpoint
    if getattr(ckpt, "path", None) is not None:
        return str(ckpt.path)
    return str(getattr(ckpt, "metadata", {}).get("name", "<in-memory checkpoint>"))


def header_meta(report: Report) -> str:
    """ "torch-zip · 1.2 MB · 130 tensors · entry 'state_dict'" as escaped HTML."""
    ckpt = report.checkpoint
    parts = [esc(ckpt.format)]
    size = size_text(getattr(ckpt, "size", 0))
    if size and getattr(ckpt, "size", 0):
        parts.append(esc(size))
    parts.append(f"{len(ckpt.tensors):,} tensors")
    entry = report.entry
    if entry:
        parts.append(f"entry {esc(repr(entry))}")
    return " · ".join(parts)


def header_html(report: Report) -> str:
    return (
        f'<div class="ck-file">{esc(source_label(report))}</div>'
        f'<div class="ck-meta">{header_meta(report)}</div>'
    )


def headline_html(report: Report) -> str:
    status = report.status
    return (
        f'<span class="ck-pill ck-pill-{esc(status)}">{esc(status)}</span>'
        f"{esc(report.headline)}"
    )


def plan_hint(report: Report, interactive: bool = True) -> str:
    """The line under the headline before any toggle: what the suggested plan holds."""
    n = len(report.plan.fixes) if report.plan is not None else 0
    if n == 0:
        return "No fixes are needed." if report.loads_cleanly else "No fix is suggested."
    fixes = "1 fix" if n == 1 else f"{n} fixes"
    if not interactive:
        return f"Suggested plan: {fixes}, listed under Plan below with its code."
    return f"Suggested plan: {fixes}; toggle them in Fix &amp; export."


def preview_headline(preview: Report, n_fixes: int) -> str:
    """The headline after a toggle: what would load with the selected fixes."""
    status = preview.status
    if n_fixes == 0:
        phrase = "With no fixes"
    else:
        phrase = "With this fix" if n_fixes == 1 else f"With these {n_fixes} fixes"
    loadable, total = preview.loadable_count, preview.model_tensor_count
    bad = preview.finding("nonfinite")
    clean = ", cleanly" if preview.loads_cleanly and bad is None else ""
    text = f"{phrase}: {loadable:,} of {total:,} model tensors would load{clean}."
    if bad is not None:
        n = len(bad.keys)
        text += f" But {n:,} hold{'s' if n == 1 else ''} NaN/Inf."
    return f'<span class="ck-pill ck-pill-{esc(status)}">{esc(status)}</span>{text}'


def fix_text(fix: Any) -> str:
    try:
        return str(fix.describe())
    except Exception as exc:  # a broken describe must not hide the rest
        return f"{getattr(fix, 'kind', type(fix).__name__)} ({exc})"


def evidence_html(keys: Sequence[str], limit: int = EVIDENCE_LIMIT) -> str:
    """Keys behind a finding, repeated layers folded, inside an expandable block."""
    if not keys:
        return ""
    groups = fold_keys(list(keys), limit)
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


def finding_html(
    finding: Any, selected: Iterable[Any] = (), cache: dict[int, str] | None = None,
    resolved: bool = False,
) -> str:
    """One finding; ``cache`` keeps the (costly, at 100k keys) evidence block per finding."""
    chosen = set(selected)
    if cache is None:
        evidence = evidence_html(finding.keys)
    else:
        evidence = cache.get(id(finding))
        if evidence is None:
            evidence = cache[id(finding)] = evidence_html(finding.keys)
    sev = esc(finding.severity)
    fixes = ""
    if finding.fixes:
        rows = []
        for fix in finding.fixes:
            mark = '<span class="ck-inplan">✓ in plan</span> ' if fix in chosen else "○ "
            rows.append(f"<li>{mark}{esc(fix_text(fix))}</li>")
        fixes = f'<ul class="ck-fixlist">{"".join(rows)}</ul>'
    done = ('<span class="ck-resolved">✓ resolved by Apply</span> ' if resolved else "")
    return (
        f'<div class="ck-finding ck-finding-{esc(finding.kind)}'
        f'{" ck-finding-resolved" if resolved else ""}">'
        f'{done}<span class="ck-sev ck-sev-{sev}">{sev}</span> '
        f'<span class="ck-kind">{esc(finding.kind)}</span>'
        f'<div class="ck-message">{esc(finding.message)}</div>'
        f"{evidence}{fixes}</div>"
    )


def findings_html(
    findings: Sequence[Any], selected: Iterable[Any] = (), cache: dict[int, str] | None = None,
    applied: Iterable[Any] = (),
) -> str:
    """The findings; with ``applied`` (the fixes of a plan applied to the model), those
    whose every fix was applied are marked resolved."""
    if not findings:
        return '<div class="ck-hint">No findings: nothing stands in the way.</div>'
    chosen = list(selected)
    done = list(applied)
    return "".join(finding_html(f, chosen, cache, resolved=bool(
        done and f.fixes and all(fix in done for fix in f.fixes))) for f in findings)
