"""The widget's CSS (shared with the static HTML report) and small formatting helpers."""

from __future__ import annotations

import html

STATUS_COLOURS = {
    "ok": "#2e7d32",
    "fixable": "#b26a00",
    "partial": "#c62828",
    "broken": "#c62828",
    "unsafe": "#6a1b9a",
}

MONO = ('ui-monospace, SFMono-Regular, Menlo, Consolas, "DejaVu Sans Mono", '
        '"Liberation Mono", monospace')

# Fixed font stacks, not var(--jp-code-font-family): some front ends (Voila) define that
# variable through another that is unset, which silently falls back to the text font.
CSS = """
.ck-root { font-family: var(--jp-ui-font-family, system-ui, sans-serif);
  color: var(--jp-ui-font-color1, #1f1f1f); max-width: 1100px; }
.ck-root .ck-header { border-left: 6px solid #888; padding: 6px 12px; margin-bottom: 6px;
  background: var(--jp-layout-color2, #f5f5f5); border-radius: 4px; }
.ck-root .ck-status-ok .ck-header, .ck-header.ck-status-ok { border-left-color: #2e7d32; }
.ck-header.ck-status-fixable { border-left-color: #b26a00; }
.ck-header.ck-status-broken, .ck-header.ck-status-partial { border-left-color: #c62828;
  background: rgba(198, 40, 40, 0.08); }
.ck-header.ck-status-unsafe { border-left-color: #6a1b9a;
  background: rgba(106, 27, 154, 0.10); }
.ck-header.ck-status-unsafe .ck-headline { color: #6a1b9a; }
.ck-header.ck-status-broken .ck-headline,
.ck-header.ck-status-partial .ck-headline { color: #b71c1c; }
.ck-file { font-weight: 600; font-size: 14px; word-break: break-all; }
.ck-root .ck-headline, .ck-root .ck-planline, .ck-root .ck-message,
.ck-root .ck-fixlist li, .ck-root .ck-result, .ck-root .ck-error,
.ck-root .ck-hint { overflow-wrap: anywhere; }
.ck-root .ck-finding, .ck-root .widget-html, .ck-root .widget-html-content {
  min-width: 0; max-width: 100%; }
.ck-meta { color: var(--jp-ui-font-color2, #555); font-size: 12px; }
.ck-headline { font-size: 15px; font-weight: 600; margin-top: 4px; }
.ck-planline { font-size: 13px; margin-top: 2px; }
.ck-pill { display: inline-block; padding: 0 8px; border-radius: 10px; color: white;
  font-size: 11px; font-weight: 600; text-transform: uppercase; margin-right: 6px;
  vertical-align: middle; }
.ck-pill-ok { background: #2e7d32; } .ck-pill-fixable { background: #b26a00; }
.ck-pill-broken, .ck-pill-partial { background: #c62828; } .ck-pill-unsafe { background: #6a1b9a; }
.ck-error { color: #b71c1c; background: #fdecea; border: 1px solid #f5c6cb;
  border-radius: 4px; padding: 6px 10px; margin: 4px 0; white-space: pre-wrap; }
.ck-error:empty { display: none; }
.ck-finding { border: 1px solid var(--jp-border-color2, #ddd); border-radius: 4px;
  padding: 6px 10px; margin: 6px 0; }
.ck-finding:has(.ck-sev-error) { border-left: 4px solid #c62828; }
.ck-finding:has(.ck-sev-warning) { border-left: 4px solid #b26a00; }
.ck-finding-malicious, .ck-finding-unsafe-globals { border-left: 4px solid #6a1b9a !important;
  background: rgba(106, 27, 154, 0.06); }
.ck-finding .ck-sev { display: inline-block; min-width: 56px; font-weight: 700;
  font-size: 11px; text-transform: uppercase; }
.ck-sev-error { color: #c62828; } .ck-sev-warning { color: #b26a00; }
.ck-sev-info { color: #1565c0; }
.ck-kind { color: var(--jp-ui-font-color2, #666); font-family: """ + MONO + """;
  font-size: 12px; }
.ck-finding summary { cursor: pointer; color: var(--jp-ui-font-color2, #555);
  font-size: 12px; margin-top: 4px; }
.ck-evidence { font-family: """ + MONO + """; font-size: 12px; margin: 4px 0 0 16px; padding: 0; }
.ck-evidence li { overflow-wrap: anywhere; }
.ck-fixlist { margin: 4px 0 0 0; font-size: 12px; }
.ck-fixlist .ck-inplan { color: #2e7d32; font-weight: 600; }
.ck-table-grid { border-collapse: collapse; width: 100%; font-size: 12px; }
.ck-table-grid th { text-align: left; border-bottom: 2px solid var(--jp-border-color1, #bbb);
  padding: 3px 6px; position: sticky; top: 0; background: var(--jp-layout-color1, white); }
.ck-table-grid td { border-bottom: 1px solid var(--jp-border-color2, #e5e5e5);
  padding: 2px 6px; vertical-align: top; }
.ck-root .widget-html-content { line-height: 1.45; }
.ck-table-grid td.ck-key { font-family: """ + MONO + """;
  overflow-wrap: anywhere; min-width: 240px; }
.ck-table-grid td.ck-sh { white-space: nowrap; }
.ck-alias { color: var(--jp-ui-font-color2, #777); font-size: 11px; }
.ck-count { color: #1565c0; font-weight: 600; font-family: sans-serif; }
.ck-dtype { color: var(--jp-ui-font-color2, #777); font-size: 11px; }
.ck-none { color: var(--jp-ui-font-color3, #aaa); }
.ck-note { color: var(--jp-ui-font-color2, #555); }
.ck-badge { display: inline-block; padding: 0 6px; border-radius: 8px; font-size: 11px;
  white-space: nowrap; }
.ck-st-match { background: #e8f5e9; color: #1b5e20; }
.ck-st-missing { background: #fdecea; color: #b71c1c; }
.ck-st-unexpected { background: #fff3e0; color: #8a4b00; }
.ck-st-shape-mismatch { background: #fce4ec; color: #880e4f; }
.ck-st-dtype-differs { background: #e3f2fd; color: #0d47a1; }
.ck-st-transposed { background: #ede7f6; color: #4527a0; }
.ck-st-renamed { background: #e0f7fa; color: #006064; }
.ck-st-other { background: #eee; color: #333; }
.ck-table { max-height: 520px; overflow: auto; }
.ck-code { font-family: """ + MONO + """; font-size: 12px;
  background: var(--jp-layout-color2, #f6f8fa); border: 1px solid var(--jp-border-color2, #ddd);
  border-radius: 4px; padding: 8px 10px; white-space: pre; overflow-x: auto;
  user-select: text; margin: 4px 0; }
.ck-root pre.ck-code { white-space: pre; word-break: normal; overflow-wrap: normal;
  overflow-x: auto; }
.ck-result { font-size: 13px; margin: 4px 0; }
.ck-result-ok { color: #1b5e20; } .ck-result-bad, .ck-result-partial { color: #b71c1c; }
.ck-applied { font-size: 13px; margin-top: 2px; font-weight: 600; }
.ck-applied:empty { display: none; }
.ck-finding-resolved { opacity: 0.7; }
.ck-resolved { font-weight: 700; font-size: 11px; margin-right: 6px; }
.ck-hint { color: var(--jp-ui-font-color2, #666); font-size: 12px; }
.ck-root .ck-fix { width: auto !important; height: auto !important;
  min-height: var(--jp-widgets-inline-height, 28px); margin: 2px 0; }
.ck-root .ck-fix label, .ck-root .ck-fix .widget-label-basic { height: auto !important;
  align-items: flex-start; line-height: 20px; padding: 4px 0; }
.ck-root .ck-fix label span { white-space: normal !important; overflow: visible !important;
  text-overflow: clip !important; overflow-wrap: anywhere; }
.ck-root .ck-fix input[type=checkbox] { margin-top: 4px; flex-shrink: 0; }
.ck-root.ck-static { font-size: 13px; line-height: 1.45; }
.ck-static h4 { margin: 10px 0 4px 0; font-size: 14px; }
.ck-static-note { margin-bottom: 4px; }
.ck-dist-note { padding: 6px 0; font-size: 13px; }
"""


def style_tag() -> str:
    return f"<style>{CSS}</style>"


def human_size(nbytes: int | None) -> str:
    """1536 -> "1.5 KB" (decimal units, as file managers show them)."""
    if not nbytes:
        return "0 B" if nbytes == 0 else ""
    size = float(nbytes)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return ""  # pragma: no cover


def esc(value: object) -> str:
    return html.escape(str(value))
