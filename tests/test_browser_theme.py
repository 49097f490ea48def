"""Colours in JupyterLab's Light and Dark themes, measured in a real browser.

JupyterLab runs a notebook with one debugger per status (ok, fixable, partial, broken,
unsafe) and the three result lines (applied cleanly, partly, with NaN), then switches
theme with ``apputils:change-theme``. In each theme every status-coloured text of the
widget (headline, pills, severities, result lines, "in plan", the Distributions tab's
flags) must keep a contrast of at least 4.5:1 against what is behind it, read from
computed styles (backgrounds composited up the tree). The Distributions tab's charts
must be drawn (plotly JSON through the front end's renderer) with their text in the
theme's colours; a screenshot of the tab in each theme goes to test-artifacts/ (and to
$CKWIDGET_SHOTS when set).

Needs /usr/bin/chromium and the playwright package, as test_browser.py.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nbformat
import pytest
from _browser import (
    ARTIFACTS,
    browser_page,
    lab_server,
    require,
    run_notebook,
    shot,
    tab,
)

pytestmark = pytest.mark.browser

MIN_CONTRAST = 4.5

SETUP = """\
import sys
import torch
import ckwidget as ck
sys.path.insert(0, @TESTS@)
from _models import Blocks as Net

torch.manual_seed(0)
good = Net().state_dict()
torch.save(good, "ok.pt")
torch.save({"module." + k: v for k, v in good.items()}, "prefixed.pt")
torch.save(Net(classes=6).state_dict(), "resized.pt")
sick = Net(classes=6).state_dict()
sick["blocks.0.0.weight"].view(-1)[:512] = float("nan")
sick["blocks.0.0.weight"].view(-1)[512] = float("inf")
sick["blocks.1.0.weight"].zero_()
sick["blocks.2.0.weight"].mul_(100)
torch.save(sick, "sick.pt")
open("page.pt", "w").write("<!DOCTYPE html><html><body>Not Found</body></html>")
open("evil.pt", "wb").write(b"\\x80\\x02cposix\\nsystem\\nX\\x04\\x00\\x00\\x00echo\\x85R.")
"""
SETUP = SETUP.replace("@TESTS@", repr(str(Path(__file__).resolve().parent)))

CELLS = [
    ("sick", 'd_sick = ck.debug("sick.pt", Net())\nd_sick'),
    ("ok", 'd_ok = ck.debug("ok.pt", Net())\nd_ok'),
    ("fixable", 'd_fix = ck.debug("prefixed.pt", Net())\nd_fix'),
    ("resized", 'd_resized = ck.debug("resized.pt", Net())\nd_resized'),
    ("broken", 'd_broken = ck.debug("page.pt", Net())\nd_broken'),
    ("unsafe", 'd_unsafe = ck.debug("evil.pt", Net())\nd_unsafe'),
]
APPLY = """\
d_fix.apply()        # ck-result-ok
d_resized.apply()    # ck-result-partial: the head keeps its values
d_sick.apply()       # ck-result-bad: NaN/Inf loaded
print("theme-cells-done")"""

# Each status colour, by the element that shows it.
TARGETS = {
    "headline partial": ".ck-header.ck-status-partial .ck-headline",
    "headline broken": ".ck-header.ck-status-broken .ck-headline",
    "headline unsafe": ".ck-header.ck-status-unsafe .ck-headline",
    "headline fixable": ".ck-header.ck-status-fixable .ck-headline",
    "headline ok": ".ck-header.ck-status-ok .ck-headline",
    "pill ok": ".ck-pill-ok",
    "pill fixable": ".ck-pill-fixable",
    "pill partial": ".ck-pill-partial",
    "pill broken": ".ck-pill-broken",
    "pill unsafe": ".ck-pill-unsafe",
    "result ok": ".ck-result-ok",
    "result partial": ".ck-result-partial",
    "result bad": ".ck-result-bad",
    "severity error": ".ck-sev-error",
    "severity warning": ".ck-sev-warning",
    "severity info": ".ck-sev-info",
    "in plan": ".ck-inplan",
    "flag": ".ck-flag:not(.ck-flag-initial)",
    "flag initial": ".ck-flag-initial",
    "hint": ".ck-hint",
}

# Contrast of each target's text against what is behind it (WCAG 2 relative luminance),
# with translucent colours and backgrounds composited up the tree.
CONTRAST = """(targets) => {
  const parse = (c) => {
    const m = c.match(/rgba?\\(([^)]+)\\)/);
    if (!m) return null;
    const p = m[1].split(/[ ,/]+/).filter(Boolean).map(Number);
    return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
  };
  const over = (top, under) => {
    const a = top[3];
    return [0, 1, 2].map((i) => top[i] * a + under[i] * (1 - a)).concat([1]);
  };
  const background = (el) => {
    const layers = [];
    for (let e = el; e; e = e.parentElement) {
      const c = parse(getComputedStyle(e).backgroundColor);
      if (c && c[3] > 0) { layers.push(c); if (c[3] >= 1) break; }
    }
    let bg = [255, 255, 255, 1];  // under every layer: the page (JupyterLab's is opaque)
    for (let i = layers.length - 1; i >= 0; i--) bg = over(layers[i], bg);
    return bg;
  };
  const lum = (c) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(c[0]) + 0.7152 * f(c[1]) + 0.0722 * f(c[2]);
  };
  const out = {};
  for (const [name, selector] of Object.entries(targets)) {
    const found = [...document.querySelectorAll('.ck-root ' + selector)]
      .filter((e) => e.textContent.trim());
    if (!found.length) continue;
    let worst = null;
    for (const el of found) {
      const bg = background(el);
      const fg = over(parse(getComputedStyle(el).color), bg);
      const [hi, lo] = [lum(fg), lum(bg)].sort((a, b) => b - a);
      const ratio = (hi + 0.05) / (lo + 0.05);
      if (!worst || ratio < worst.ratio) {
        const rgb = 'rgb(' + bg.slice(0, 3).map(Math.round) + ')';
        worst = {ratio, fg: getComputedStyle(el).color, bg: rgb};
      }
    }
    out[name] = worst;
  }
  return out;
}"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    require()
    root = tmp_path_factory.mktemp("theme")
    nb = nbformat.v4.new_notebook()
    nb.cells = ([nbformat.v4.new_code_cell(SETUP)]
                + [nbformat.v4.new_code_cell(code) for _, code in CELLS]
                + [nbformat.v4.new_code_cell(APPLY)])
    nbformat.write(nb, root / "theme.ipynb")
    with lab_server(root) as url:
        yield url


def test_status_colours_keep_contrast_in_light_and_dark(lab) -> None:
    from playwright.sync_api import expect

    with browser_page("failure-theme.png") as b:
        page = b.page
        roots = run_notebook(page, lab, "theme.ipynb", expect, debuggers=len(CELLS),
                             wait_ms=180_000)
        expect(page.locator(".jp-OutputArea-output", has_text="theme-cells-done")).to_have_count(
            1, timeout=180_000)
        sick = roots.nth(0)
        sick.scroll_into_view_if_needed()
        tab(sick, "Distributions")
        for holder in (".ck-layers", ".ck-nonfinite", ".ck-hist"):
            expect(sick.locator(f"{holder} .js-plotly-plot .main-svg").first).to_be_visible(
                timeout=60_000)
        expect(sick.locator(".ck-drawing").first).to_be_hidden()
        expect(sick.locator(".ck-flag-exploding")).to_have_count(1)

        page.set_viewport_size({"width": 1300, "height": 2600})  # the whole tab in shots
        results = {}
        for theme, light in (("JupyterLab Light", "true"), ("JupyterLab Dark", "false")):
            page.evaluate("(t) => window.jupyterapp.commands.execute("
                          "'apputils:change-theme', {theme: t})", theme)
            page.wait_for_selector(f'body[data-jp-theme-light="{light}"]', state="attached",
                                   timeout=30_000)
            page.wait_for_function(
                "(light) => { const c = getComputedStyle(document.body)"
                ".getPropertyValue('--jp-layout-color0').trim();"
                " return light ? c === 'white' || c === '#fff' || c === '#ffffff'"
                " : c !== '' && c !== 'white' && c !== '#fff' && c !== '#ffffff'; }",
                arg=light == "true", timeout=30_000)
            page.wait_for_timeout(800)  # the theme's stylesheet applied everywhere
            results[theme] = page.evaluate(CONTRAST, TARGETS)
            # chart text follows the theme: the same colour as the page's text
            fills = sick.locator(".ck-layers .main-svg .g-ytitle text").first.evaluate(
                "e => [getComputedStyle(e).fill, getComputedStyle(document.body)"
                ".getPropertyValue('--jp-ui-font-color1').trim()]")
            results[theme]["chart text"] = fills
            sick.scroll_into_view_if_needed()
            name = f"distributions-{'light' if light == 'true' else 'dark'}.png"
            shot(sick, name)
            if os.environ.get("CKWIDGET_SHOTS"):
                os.makedirs(os.environ["CKWIDGET_SHOTS"], exist_ok=True)
                shutil.copy(ARTIFACTS / name, os.environ["CKWIDGET_SHOTS"])
        b.check_clean()

    lines, low = [], []
    for theme, found in results.items():
        chart = found.pop("chart text")
        assert chart[0] not in ("", "rgb(42, 63, 95)"), (theme, chart)  # not plotly's own
        missing = set(TARGETS) - set(found)
        assert not missing, f"{theme}: no element shows {sorted(missing)}"
        for name, m in found.items():
            line = f"{theme:17} {name:18} {m['ratio']:5.2f}:1  {m['fg']} on {m['bg']}"
            lines.append(line)
            if m["ratio"] < MIN_CONTRAST:
                low.append(line)
    print("\n".join(lines))
    assert not low, "contrast under 4.5:1:\n" + "\n".join(low)
