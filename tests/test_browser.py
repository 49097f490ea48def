"""End to end in a real browser: JupyterLab 4 runs the quickstart notebook in Chromium.

Toggles a fix and sees the headline change, applies, reads the snippet, checks that a
checkpoint key made of HTML shows as text in every tab, fails on any browser console
error, and saves a screenshot of each tab to test-artifacts/.

Needs /usr/bin/chromium (``apt-get install -y chromium``) and the ``playwright`` Python
package (never ``playwright install``). Without them the test is skipped, unless
CKWIDGET_REQUIRE_BROWSER=1 (CI), where it fails instead.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
HOSTILE = "<img src=x onerror=alert(1)>"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage",
]

HOSTILE_CELL = f'''\
hostile = dict(trained.state_dict())
hostile["module.{HOSTILE}"] = torch.tensor([1.0, float("nan")])
torch.save(hostile, "hostile.pth")
dbg2 = %ckdebug hostile.pth model'''


def _missing_tools() -> str | None:
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} is not installed (apt-get install -y chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install playwright)"
    return None


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab on a free loopback port, serving a temp dir with the test notebook."""
    why = _missing_tools()
    if why:
        if os.environ.get("CKWIDGET_REQUIRE_BROWSER") == "1":
            pytest.fail(why)
        pytest.skip(why)
    root = tmp_path_factory.mktemp("lab")
    nb = nbformat.read(ROOT / "notebooks" / "01_quickstart.ipynb", as_version=4)
    at = next(i for i, c in enumerate(nb.cells)
              if c.cell_type == "code" and "%ckdebug" in c.source) + 1
    nb.cells.insert(at, nbformat.v4.new_code_cell(HOSTILE_CELL))
    nbformat.write(nb, root / "quickstart.ipynb")
    settings = root / ".settings"
    (settings / "@jupyterlab" / "notebook-extension").mkdir(parents=True)
    (settings / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings").write_text(
        json.dumps({"windowingMode": "none"})
    )
    (settings / "@jupyterlab" / "apputils-extension").mkdir(parents=True)
    (settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
     ).write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, JUPYTERLAB_SETTINGS_DIR=str(settings),
               JUPYTERLAB_WORKSPACES_DIR=str(root / ".workspaces"),
               JUPYTER_RUNTIME_DIR=str(root / ".runtime"),
               JUPYTER_CONFIG_DIR=str(root / ".config"),
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    log = open(root / "lab.log", "w")  # closed at teardown
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}",
         "--ServerApp.ip=127.0.0.1", "--ServerApp.port_retries=0",
         f"--ServerApp.root_dir={root}", "--IdentityProvider.token=",
         "--ServerApp.password=", "--ServerApp.disable_check_xsrf=True",
         "--LabApp.expose_app_in_browser=True", "--allow-root"],
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(url + "/api/status", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError("JupyterLab did not start:\n"
                                   + (root / "lab.log").read_text()[-3000:])
            time.sleep(0.5)
        yield url, root
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _shot(locator, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    locator.screenshot(path=str(ARTIFACTS / name))


def _tab(root, title: str):
    tab = root.locator(".lm-TabBar-tab", has_text=title).first
    tab.click()
    return tab


def test_quickstart_in_jupyterlab(lab) -> None:
    from playwright.sync_api import expect, sync_playwright

    url, folder = lab
    console_errors: list[str] = []
    dialogs: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1300, "height": 1700})
        page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: console_errors.append(f"page error: {e}"))

        def on_dialog(d) -> None:
            dialogs.append(d.message)
            d.dismiss()

        page.on("dialog", on_dialog)
        try:
            _run(page, url, expect)
        except Exception:
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "failure.png"), full_page=True)
            raise
        finally:
            browser.close()
    assert not dialogs, f"a script ran from the page: {dialogs}"
    assert not console_errors, "browser console errors:\n" + "\n".join(console_errors)
    assert (folder / "ckpt.pth").exists()


def _run(page, url: str, expect) -> None:
    page.goto(f"{url}/lab/tree/quickstart.ipynb")
    page.wait_for_selector(".jp-Notebook", timeout=60_000)
    accept = page.locator(".jp-Dialog .jp-mod-accept")
    try:
        accept.wait_for(timeout=3_000)
        accept.click()
    except Exception:  # no kernel dialog: fine
        pass
    page.wait_for_selector('.jp-Notebook-ExecutionIndicator[data-status="idle"]',
                           timeout=60_000)
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    roots = page.locator(".ck-root")
    expect(roots).to_have_count(2, timeout=120_000)
    page.wait_for_selector('.jp-Notebook-ExecutionIndicator[data-status="idle"]',
                           timeout=120_000)
    root = roots.nth(0)
    root.scroll_into_view_if_needed()
    headline = root.locator(".ck-headline")
    expect(headline).to_contain_text("model tensors would load")
    _shot(root, "tab-diagnosis.png")
    expect(root.locator(".ck-finding").first).to_be_visible()

    _tab(root, "Keys")
    expect(root.locator(".ck-table table")).to_be_visible()
    _shot(root, "tab-keys.png")

    _tab(root, "Distributions")
    expect(root.locator(".ck-layers .js-plotly-plot")).to_be_visible(timeout=60_000)
    expect(root.locator(".ck-hist .js-plotly-plot")).to_be_visible(timeout=60_000)
    page.wait_for_timeout(500)
    _shot(root, "tab-distributions.png")

    _tab(root, "Fix & export")
    toggle = root.locator(".ck-fix-strip-prefix input[type=checkbox]")
    expect(toggle).to_be_checked()
    before = headline.inner_text()
    toggle.uncheck()
    expect(headline).not_to_have_text(before, timeout=30_000)
    expect(headline).to_contain_text("With this fix")
    expect(root.locator(".ck-snippet")).not_to_contain_text("removeprefix")
    toggle.check()
    expect(headline).to_contain_text("With these 2 fixes", timeout=30_000)
    root.locator(".ck-apply").click()
    expect(root.locator(".ck-result").first).to_contain_text("Applied", timeout=30_000)
    snippet = root.locator(".ck-snippet").inner_text()
    assert "torch.load" in snippet and "removeprefix('module.')" in snippet
    assert "weights_only=True" in snippet
    expect(root.locator(".ck-error")).to_be_hidden()
    _shot(root, "tab-fix.png")

    _check_hostile(page, page.locator(".ck-root").nth(1), expect)


def _check_hostile(page, root, expect) -> None:
    """The HTML key appears as literal text in every tab, and never as an element."""
    root.scroll_into_view_if_needed()
    literal = re.compile(re.escape(HOSTILE))
    _tab(root, "Diagnosis")
    expect(root.locator(".ck-tab-diagnosis")).to_contain_text(literal)
    _tab(root, "Keys")
    root.locator(".ck-filter input").fill("onerror")
    expect(root.locator(".ck-table")).to_contain_text(literal)
    _tab(root, "Distributions")
    expect(root.locator(".ck-nonfinite .js-plotly-plot")).to_be_visible(timeout=60_000)
    expect(root.locator(".ck-nonfinite")).to_contain_text(literal, timeout=30_000)
    _shot(root, "hostile-distributions.png")
    _tab(root, "Fix & export")
    expect(root.locator(".ck-tab-fix")).to_contain_text(literal)
    _shot(root, "hostile-fix.png")
    assert root.locator("img").count() == 0
    assert page.locator("img[src=x]").count() == 0
