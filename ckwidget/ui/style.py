"""The widget's CSS (shared with the static HTML report) and small formatting helpers."""

from __future__ import annotations

import html

STATUS_COLOURS = {  # backgrounds of the status pills (white text: 4.5:1 or more)
    "ok": "#2e7d32",
    "fixable": "#8a5300",
    "partial": "#c62828",
    "broken": "#c62828",
    "unsafe": "#6a1b9a",
}

# Status colours for text, per theme: each keeps 4.5:1 or more on the theme's
# backgrounds (JupyterLab Light: white and #eeeeee; Dark: #111111, #212121 and #424242,
# the status tints included). tests/test_browser_theme.py measures them in both.
TEXT_LIGHT = {"ok": "#1b5e20", "fixable": "#8a4b00", "broken": "#b71c1c",
              "unsafe": "#6a1b9a", "info": "#0d47a1"}
TEXT_DARK = {"ok": "#81c784", "fixable": "#ffb74d", "broken": "#ef9a9a",
             "unsafe": "#ce93d8", "info": "#90caf9"}


def _vars(colours: dict[str, str]) -> str:
    return " ".join(f"--ck-{name}: {value};" for name, value in colours.items())


MONO = ('ui-monospace, SFMono-Regular, Menlo, Consolas, "DejaVu Sans Mono", '
        '"Liberation Mono", monospace')

# Dark themes: JupyterLab marks its body (data-jp-theme-light="false"); VS Code its body
# class. Fixed font stacks, not var(--jp-code-font-family): some front ends (Voila)
# define that variable through another that is unset, which silently falls back to
# the text font.
DARK = ('body[data-jp-theme-light="false"] .ck-root, body.vscode-dark .ck-root, '
        'body[data-vscode-theme-kind="vscode-dark"] .ck-root')
# .ck-reopen: the hidden copy of the static report below a live widget (lifetime.py);
# not a .ck-root, so that only the widget matches that class while it is live.
CSS = """
.ck-root, .ck-reopen { """ + _vars(TEXT_LIGHT) + """ --ck-tint: 0.08; }
""" + DARK + ", " + DARK.replace(".ck-root", ".ck-reopen") + """ { """ + _vars(TEXT_DARK) + """
  --ck-tint: 0.16; }
.ck-root, .ck-reopen { font-family: var(--jp-ui-font-family, system-ui, sans-serif);
  color: var(--jp-ui-font-color1, #1f1f1f); max-width: 1100px; }
.ck-root .ck-header, .ck-reopen .ck-header { border-left: 6px solid #888;
  padding: 6px 12px; margin-bottom: 6px;
  background: var(--jp-layout-color2, #f5f5f5); border-radius: 4px; }
.ck-root .ck-status-ok .ck-header, .ck-header.ck-status-ok { border-left-color: #2e7d32; }
.ck-header.ck-status-fixable { border-left-color: #b26a00; }
.ck-header.ck-status-broken, .ck-header.ck-status-partial { border-left-color: #c62828;
  background: rgba(198, 40, 40, var(--ck-tint)); }
.ck-header.ck-status-unsafe { border-left-color: #8e24aa;
  background: rgba(142, 36, 170, var(--ck-tint)); }
.ck-header.ck-status-unsafe .ck-headline { color: var(--ck-unsafe); }
.ck-header.ck-status-broken .ck-headline,
.ck-header.ck-status-partial .ck-headline { color: var(--ck-broken); }
.ck-file { font-weight: 600; font-size: 14px; word-break: break-all; }
.ck-root .ck-headline, .ck-root .ck-planline, .ck-root .ck-message,
.ck-root .ck-fixlist li, .ck-root .ck-result, .ck-root .ck-error,
.ck-root .ck-hint, .ck-reopen .ck-headline, .ck-reopen .ck-hint { overflow-wrap: anywhere; }
.ck-root .ck-finding, .ck-root .widget-html, .ck-root .widget-html-content {
  min-width: 0; max-width: 100%; }
.ck-meta { color: var(--jp-ui-font-color2, #555); font-size: 12px; }
.ck-headline { font-size: 15px; font-weight: 600; margin-top: 4px; }
.ck-planline { font-size: 13px; margin-top: 2px; }
.ck-pill { display: inline-block; padding: 0 8px; border-radius: 10px; color: white;
  font-size: 11px; font-weight: 600; text-transform: uppercase; margin-right: 6px;
  vertical-align: middle; }
.ck-pill-ok { background: """ + STATUS_COLOURS["ok"] + """; }
.ck-pill-fixable { background: """ + STATUS_COLOURS["fixable"] + """; }
.ck-pill-broken, .ck-pill-partial { background: """ + STATUS_COLOURS["broken"] + """; }
.ck-pill-unsafe { background: """ + STATUS_COLOURS["unsafe"] + """; }
.ck-error { color: #b71c1c; background: #fdecea; border: 1px solid #f5c6cb;
  border-radius: 4px; padding: 6px 10px; margin: 4px 0; white-space: pre-wrap; }
""" + DARK.replace(".ck-root", ".ck-root .ck-error") + """ { color: var(--ck-broken);
  background: rgba(229, 57, 53, 0.12); border-color: rgba(239, 154, 154, 0.5); }
.ck-error:empty { display: none; }
.ck-finding { border: 1px solid var(--jp-border-color2, #ddd); border-radius: 4px;
  padding: 6px 10px; margin: 6px 0; }
.ck-finding:has(.ck-sev-error) { border-left: 4px solid #c62828; }
.ck-finding:has(.ck-sev-warning) { border-left: 4px solid #b26a00; }
.ck-finding-malicious, .ck-finding-unsafe-globals { border-left: 4px solid #8e24aa !important;
  background: rgba(142, 36, 170, 0.06); }
.ck-finding .ck-sev { display: inline-block; min-width: 56px; font-weight: 700;
  font-size: 11px; text-transform: uppercase; }
.ck-sev-error { color: var(--ck-broken); } .ck-sev-warning { color: var(--ck-fixable); }
.ck-sev-info { color: var(--ck-info); }
.ck-kind { color: var(--jp-ui-font-color2, #666); font-family: """ + MONO + """;
  font-size: 12px; }
.ck-finding summary { cursor: pointer; color: var(--jp-ui-font-color2, #555);
  font-size: 12px; margin-top: 4px; }
.ck-evidence { font-family: """ + MONO + """; font-size: 12px; margin: 4px 0 0 16px; padding: 0; }
.ck-evidence li { overflow-wrap: anywhere; }
.ck-fixlist { margin: 4px 0 0 0; font-size: 12px; }
.ck-fixlist .ck-inplan { color: var(--ck-ok); font-weight: 600; }
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
.ck-count { color: var(--ck-info); font-weight: 600; font-family: sans-serif; }
.ck-dtype { color: var(--jp-ui-font-color2, #777); font-size: 11px; }
.ck-none { color: var(--jp-ui-font-color2, #777); }
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
""" + DARK.replace(".ck-root", ".ck-root .ck-badge") + """ {
  background: rgba(255, 255, 255, 0.08); color: var(--jp-ui-font-color1, #ddd);
  border: 1px solid rgba(255, 255, 255, 0.25); }
""" + DARK.replace(".ck-root", ".ck-root .ck-st-match") + """ { color: #a5d6a7;
  background: rgba(46, 125, 50, 0.25); border-color: rgba(165, 214, 167, 0.4); }
""" + DARK.replace(".ck-root", ".ck-root .ck-st-missing") + """ { color: #ef9a9a;
  background: rgba(198, 40, 40, 0.25); border-color: rgba(239, 154, 154, 0.4); }
""" + DARK.replace(".ck-root", ".ck-root .ck-st-unexpected") + """ { color: #ffcc80;
  background: rgba(230, 81, 0, 0.22); border-color: rgba(255, 204, 128, 0.4); }
""" + DARK.replace(".ck-root", ".ck-root .ck-st-shape-mismatch") + """ { color: #f48fb1;
  background: rgba(173, 20, 87, 0.25); border-color: rgba(244, 143, 177, 0.4); }
""" + DARK.replace(".ck-root", ".ck-root .ck-st-dtype-differs") + """ { color: #90caf9;
  background: rgba(21, 101, 192, 0.25); border-color: rgba(144, 202, 249, 0.4); }
""" + DARK.replace(".ck-root", ".ck-root .ck-st-transposed") + """ { color: #b39ddb;
  background: rgba(69, 39, 160, 0.3); border-color: rgba(179, 157, 219, 0.4); }
""" + DARK.replace(".ck-root", ".ck-root .ck-st-renamed") + """ { color: #80deea;
  background: rgba(0, 96, 100, 0.3); border-color: rgba(128, 222, 234, 0.4); }
.ck-table { max-height: 520px; overflow: auto; }
/* the static report inside JupyterLab's rendered HTML, whose own rules for pre, td and
   th (background, padding, right-aligned cells) are more specific than one class */
.ck-static .ck-table-grid { table-layout: auto; }
.ck-static .ck-table-grid :is(th, td) { text-align: left; }
.ck-static .ck-table-grid td.ck-num { text-align: right; }
.ck-code, .ck-root pre.ck-code, .ck-static pre.ck-code { font-family: """ + MONO + """;
  font-size: 12px;
  background: var(--jp-layout-color2, #f6f8fa); border: 1px solid var(--jp-border-color2, #ddd);
  border-radius: 4px; padding: 8px 10px; white-space: pre; overflow-x: auto;
  user-select: text; margin: 4px 0; }
.ck-root pre.ck-code, .ck-reopen pre.ck-code { white-space: pre; word-break: normal;
  overflow-wrap: normal; overflow-x: auto; }
.ck-root .ck-copy-button { margin: 2px; height: var(--jp-widgets-inline-height, 28px); }
.ck-result { font-size: 13px; margin: 4px 0; }
.ck-result-ok { color: var(--ck-ok); }
.ck-result-bad, .ck-result-partial { color: var(--ck-broken); }
.ck-hint { color: var(--jp-ui-font-color2, #666); font-size: 12px; }
.ck-root .ck-fix { width: auto !important; height: auto !important;
  min-height: var(--jp-widgets-inline-height, 28px); margin: 2px 0; }
.ck-root .ck-fix label, .ck-root .ck-fix .widget-label-basic { height: auto !important;
  align-items: flex-start; line-height: 20px; padding: 4px 0; }
.ck-root .ck-fix label span { white-space: normal !important; overflow: visible !important;
  text-overflow: clip !important; overflow-wrap: anywhere; }
.ck-root .ck-fix input[type=checkbox] { margin-top: 4px; flex-shrink: 0; }
.ck-root.ck-static, .ck-reopen .ck-static { font-size: 13px; line-height: 1.45; }
.ck-static h4 { margin: 10px 0 4px 0; font-size: 14px; }
.ck-static-note { margin-bottom: 4px; }
.ck-dist-note { padding: 6px 0; font-size: 13px; }
.ck-dist-grid { max-height: 340px; }
.ck-dist-grid .ck-table-grid td.ck-key { min-width: 120px; overflow-wrap: normal; }
.ck-dist-grid .ck-table-grid td.ck-diff { white-space: normal; }
.ck-dist-grid .ck-table-grid th { white-space: nowrap; }
.ck-table-grid td.ck-num { text-align: right; white-space: nowrap;
  font-variant-numeric: tabular-nums; }
.ck-flag { display: inline-block; padding: 0 6px; border-radius: 8px; font-size: 11px;
  white-space: nowrap; border: 1px solid currentColor; color: var(--ck-broken);
  margin: 1px 2px 1px 0; }
.ck-flag-initial { color: var(--ck-fixable); }
.ck-table-grid tr.ck-flagged td { background: rgba(229, 57, 53, 0.05); }
/* charts: plotly draws text and lines with inline colours; these follow the theme */
.ck-chart .main-svg text:not(.hoverlayer *) {
  fill: var(--jp-ui-font-color1, #1f1f1f) !important; }
.ck-chart .main-svg .xtick text, .ck-chart .main-svg .ytick text {
  fill: var(--jp-ui-font-color2, #555) !important; }
.ck-chart .jp-RenderedPlotly, .ck-chart .jp-OutputArea-output { background: transparent; }
.ck-chart:has(.js-plotly-plot .main-svg) > .ck-drawing { display: none; }
.ck-drawing .ck-hint { padding: 8px 0; font-style: italic; }
"""


def style_tag() -> str:
    return f"<style>{CSS}</style>"


def esc(value: object) -> str:
    return html.escape(str(value))
