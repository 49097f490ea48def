"""Screenshots of every tab of the debugger in JupyterLab's light and dark themes.

A realistic broken case: a checkpoint saved from ``nn.DataParallel`` (every key starts
with ``module.``), for a 10-class head where today's model has 5, with a NaN in one of
the encoder's weights. JupyterLab runs a notebook that opens the debugger on it, and also
shows the static report (``static=True``, what front ends without widgets get) and the
report a notebook shows when reopened after its kernel stopped. Chromium (driven by
Playwright, as in tests/_browser.py) clicks each tab in each theme and writes one PNG per
tab and theme, named ``<tab>-<theme>.png``, into the output folder. Run::

    python benchmarks/screenshots.py [OUT]          # OUT: /tmp/ckwidget-shots by default

Needs /usr/bin/chromium and the playwright package (never ``playwright install``).
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

SETUP = """\
import torch
from torch import nn
import ckwidget as ck

class Net(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128),
                                     nn.ReLU(), nn.Linear(128, 128))
        self.norm = nn.LayerNorm(128)
        self.head = nn.Linear(128, classes)
    def forward(self, x):
        return self.head(self.norm(self.encoder(x)))

torch.manual_seed(0)
trained = nn.DataParallel(Net(classes=10))      # keys saved as 'module.encoder.0.weight'...
sd = trained.state_dict()
sd["module.encoder.2.weight"][3, :5] = float("nan")   # a diverged step
torch.save(sd, "broken.pth")
model = Net(classes=5)                             # today's model: a 5-class head"""
DEBUG = "dbg = ck.debug('broken.pth', model)\ndbg"
STATIC = "ck.debug('broken.pth', Net(classes=5), static=True)"

TABS = ("Diagnosis", "Keys", "Distributions", "Fix & export")
THEMES = (("light", "JupyterLab Light", "true"), ("dark", "JupyterLab Dark", "false"))


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def set_theme(page, name: str, light: str) -> None:
    page.evaluate("(t) => window.jupyterapp.commands.execute('apputils:change-theme',"
                  " {theme: t})", name)
    page.wait_for_selector(f'body[data-jp-theme-light="{light}"]', state="attached",
                           timeout=30_000)
    page.wait_for_timeout(1_000)  # the theme's stylesheet applied everywhere


def shoot(out: Path, width: int) -> list[Path]:
    sys.path.insert(0, str(ROOT / "tests"))
    from _browser import browser_page, lab_with, run_notebook, tab
    from playwright.sync_api import expect

    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    folder = Path(tempfile.mkdtemp(prefix="ckshots-"))
    with lab_with(folder, "shots.ipynb", [SETUP, DEBUG, STATIC]) as url, \
            browser_page("failure-screenshots.png") as b:
        page = b.page
        page.set_viewport_size({"width": width, "height": 2400})
        root = run_notebook(page, url, "shots.ipynb", expect, debuggers=2).first
        static = page.locator(".ck-root.ck-static").first
        for theme, name, light in THEMES:
            set_theme(page, name, light)
            for title in TABS:
                tab(root, title)
                if title == "Distributions":
                    for chart in (".ck-layers", ".ck-nonfinite", ".ck-hist"):
                        expect(root.locator(f"{chart} .js-plotly-plot .main-svg").first
                               ).to_be_visible(timeout=60_000)
                    page.wait_for_timeout(1_500)  # plotly's relayout after the first draw
                else:
                    page.wait_for_timeout(500)
                root.scroll_into_view_if_needed()
                path = out / f"{slug(title)}-{theme}.png"
                root.screenshot(path=str(path))
                written.append(path)
            tab(root, TABS[0])
            static.scroll_into_view_if_needed()
            path = out / f"static-{theme}.png"
            static.screenshot(path=str(path))
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", nargs="?", default="/tmp/ckwidget-shots", type=Path,
                    help="folder the PNGs are written to (default /tmp/ckwidget-shots)")
    ap.add_argument("--width", type=int, default=1300, help="browser viewport width")
    args = ap.parse_args(argv)
    for path in shoot(args.out, args.width):
        print(path)


if __name__ == "__main__":
    main()
