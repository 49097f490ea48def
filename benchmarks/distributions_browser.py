"""Distributions tab in a real browser: from the click on the tab to the charts' first paint.

JupyterLab runs a notebook that opens the debugger on the 100,000-key benchmark
checkpoint of ``widget_open.py``; Chromium (driven by Playwright, as in tests/_browser.py)
clicks the Distributions tab and times, in the page, until every chart of the tab has
its data drawn (``.js-plotly-plot`` with a trace, or the line said instead of an empty
chart). Also counted: the bytes that came over the kernel's websocket during the visit
and the script bytes fetched over HTTP (plotly's bundle, were it shipped per chart or
loaded late). The first visit is in a fresh page; later visits reopen a new debugger in
the same page (the cell run again). Printed beside the kernel-only figure of
``distributions_first_visit.py`` (the same work without a browser). Run::

    python benchmarks/distributions_browser.py [--keys 100000] [--visits 2]
        [--theme light|dark] [--shots /tmp/shots]

Needs /usr/bin/chromium and the playwright package (never ``playwright install``).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TARGET_S = 1.5

SETUP_CELL = """\
import sys, tempfile, time
from pathlib import Path
sys.path.insert(0, {bench!r})
from widget_open import build
import ckwidget as ck
path, model = build({keys}, "torch", Path(tempfile.gettempdir()))"""

DEBUG_CELL = "dbg = ck.debug(path, model)\ndbg"

# Polled every animation frame from the click: the time the tab's charts are all drawn.
WATCH = """(root) => {
  window.__ckPaint = null;
  const t0 = performance.now();
  window.__ckClick = t0;
  const drawn = () => {
    const holders = root.querySelectorAll('.ck-hist, .ck-layers, .ck-nonfinite');
    if (holders.length < 3) return false;
    for (const h of holders) {
      const chart = h.querySelector('.js-plotly-plot .main-svg .trace');
      if (!chart && !h.querySelector('.ck-dist-note')) return false;
    }
    return true;
  };
  const marks = window.__ckMarks = {};
  const mark = (name, present) => {
    if (present && marks[name] === undefined) marks[name] = performance.now() - t0;
  };
  const poll = () => {
    mark('panel', root.querySelector('.ck-distributions'));
    const note = root.querySelector('.ck-drawing');
    mark('"Drawing chart…"', note && note.offsetParent !== null);
    mark('table', root.querySelector('.ck-dist-table table'));
    mark('renderer', root.querySelector('.ck-chart .jp-RenderedPlotly'));
    mark('first chart', root.querySelector('.js-plotly-plot .main-svg .trace'));
    if (drawn()) { window.__ckPaint = performance.now() - t0; return; }
    if (performance.now() - t0 < 120000) requestAnimationFrame(poll);
  };
  const tab = [...root.querySelectorAll('.lm-TabBar-tab')]
    .find((t) => t.textContent.includes('Distributions'));
  const r = tab.getBoundingClientRect();
  const at = {bubbles: true, cancelable: true, button: 0, pointerId: 1, isPrimary: true,
              clientX: r.left + r.width / 2, clientY: r.top + r.height / 2};
  tab.dispatchEvent(new PointerEvent('pointerdown', at));  // Lumino selects on press
  document.dispatchEvent(new PointerEvent('pointerup', at));
  requestAnimationFrame(poll);
}"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keys", type=int, default=100_000)
    ap.add_argument("--visits", type=int, default=2)
    ap.add_argument("--theme", choices=["light", "dark"], default="light")
    ap.add_argument("--shots", default="", help="folder for a screenshot of each visit")
    ap.add_argument("--no-kernel-only", action="store_true",
                    help="skip the kernel-only run of distributions_first_visit.py")
    args = ap.parse_args(argv)

    sys.path.insert(0, str(ROOT / "tests"))
    import nbformat
    from _browser import browser_page, lab_server, missing_tools

    why = missing_tools()
    if why:
        print(f"cannot run: {why}")
        return 2
    from widget_open import build

    build(args.keys, "torch", Path(tempfile.gettempdir()))  # cached for the kernel

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_code_cell(SETUP_CELL.format(bench=str(HERE),
                                                                keys=args.keys)),
                    nbformat.v4.new_code_cell(DEBUG_CELL)]
        nbformat.write(nb, folder / "bench.ipynb")
        with lab_server(folder) as url, browser_page("bench.png") as b:
            visits = _visits(b.page, url, args)
    for i, v in enumerate(visits, 1):
        where = "fresh page" if i == 1 else "same page"
        print(f"visit {i} ({where}, {args.theme}): charts painted {v['paint']:.2f} s after "
              f"the click; {v['ws_in'] / 1e6:.2f} MB in / {v['ws_out'] / 1e6:.2f} MB out "
              f"over the websocket, {v['js'] / 1e6:.2f} MB of scripts fetched"
              f"{'; kernel ' + format(v['kernel'], '.2f') + ' s' if v['kernel'] else ''}")
        print("  on the page after the click: " + ", ".join(
            f"{name} {ms / 1000:.2f} s" for name, ms in v["marks"].items()))
    if not args.no_kernel_only:
        run = subprocess.run([sys.executable, str(HERE / "distributions_first_visit.py"),
                              "--keys", str(args.keys), "--read", "2"],
                             capture_output=True, text=True, cwd=ROOT, timeout=600)
        print("kernel only: " + (run.stdout.strip() or run.stderr[-500:]))
    first = visits[0]["paint"]
    verdict = "OK" if first <= TARGET_S else "OVER TARGET"
    print(f"{args.keys:,} keys, first visit in the browser: {first:.2f} s from the click "
          f"to the charts (target {TARGET_S} s): {verdict}")
    return 0


def _visits(page, url: str, args) -> list[dict]:
    from _browser import KERNEL_IDLE_SELECTOR, open_notebook
    from playwright.sync_api import expect

    frames: list[tuple[float, str, int]] = []  # (time, "in"/"out", bytes)
    scripts: list[tuple[float, object]] = []

    def on_ws(ws) -> None:
        def size(payload) -> int:
            return len(payload.encode() if isinstance(payload, str) else payload)

        ws.on("framereceived", lambda p: frames.append((time.monotonic(), "in", size(p))))
        ws.on("framesent", lambda p: frames.append((time.monotonic(), "out", size(p))))

    def on_response(resp) -> None:
        if resp.request.resource_type == "script":
            scripts.append((time.monotonic(), resp))  # its size is read after the visit

    page.on("websocket", on_ws)
    page.on("response", on_response)
    open_notebook(page, url, "bench.ipynb")
    idle = KERNEL_IDLE_SELECTOR
    page.wait_for_selector(idle, timeout=60_000)
    if args.theme == "dark":
        page.evaluate("window.jupyterapp.commands.execute('apputils:change-theme', "
                      "{theme: 'JupyterLab Dark'})")
        page.wait_for_selector('body[data-jp-theme-light="false"]', state="attached",
                               timeout=30_000)
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    out = []
    for visit in range(args.visits):
        if visit:
            page.evaluate("""async () => {
                const nb = window.jupyterapp.shell.currentWidget.content;
                nb.activeCellIndex = 1;
                await window.jupyterapp.commands.execute("notebook:run-cell");
            }""")
        roots = page.locator(".ck-root")
        expect(roots).to_have_count(1, timeout=300_000)
        page.wait_for_selector(idle, timeout=300_000)
        root = roots.first
        expect(root.locator(".ck-headline")).to_be_visible(timeout=60_000)
        root.scroll_into_view_if_needed()
        page.wait_for_timeout(1500)  # the page settles; the user reads the headline
        start = time.monotonic()
        root.evaluate(WATCH)
        page.wait_for_function("window.__ckPaint !== null", timeout=120_000, polling=50)
        paint = page.evaluate("window.__ckPaint") / 1000
        marks = page.evaluate("window.__ckMarks")
        _quiet(frames, page)
        end = time.monotonic()
        ws_in = sum(n for t, d, n in frames if start <= t <= end and d == "in")
        ws_out = sum(n for t, d, n in frames if start <= t <= end and d == "out")
        js = sum(_body_size(r) for t, r in scripts if start <= t <= end)
        kernel = _kernel_seconds(page)
        if args.shots:
            Path(args.shots).mkdir(parents=True, exist_ok=True)
            root.screenshot(path=str(Path(args.shots) /
                                     f"bench-distributions-{args.theme}-{visit + 1}.png"))
        out.append(dict(paint=paint, ws_in=ws_in, ws_out=ws_out, js=js, kernel=kernel,
                        marks=marks))
        if visit + 1 < args.visits:
            expect(roots).to_have_count(1)
    return out


def _quiet(frames: list, page, quiet_s: float = 1.0, limit_s: float = 15.0) -> None:
    """Wait until no websocket frame has come for ``quiet_s`` (the visit's traffic ends)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        last = frames[-1][0] if frames else 0.0
        if time.monotonic() - last >= quiet_s:
            return
        page.wait_for_timeout(200)


def _body_size(resp) -> int:
    try:
        return len(resp.body())
    except Exception:  # a response without a body
        return 0


def _kernel_seconds(page) -> float | None:
    """The panel's own figure: seconds from the tab's open to its last chart sent."""
    text = page.evaluate("""async () => {
        const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
        const future = kernel.requestExecute({code:
            "print(getattr(getattr(dbg, '_dist', None), 'kernel_seconds', None))"});
        let out = "";
        future.onIOPub = (msg) => {
            if (msg.header.msg_type === "stream") { out += msg.content.text; }
        };
        await future.done;
        return out;
    }""").strip()
    try:
        return float(text)
    except ValueError:
        return None


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    sys.exit(main())
