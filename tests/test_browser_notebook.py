"""End to end in a real browser: Jupyter Notebook 7 runs the quickstart notebook.

Opens /notebooks/quickstart.ipynb, runs every cell, sees the widget and its headline,
toggles a fix and sees the headline change; fails on any browser console error.
Skipped without Chromium, Playwright or the ``notebook`` package, unless
CKWIDGET_REQUIRE_BROWSER=1 (see tests/_browser.py).
"""

from __future__ import annotations

import pytest
from _browser import (
    SERVER_FLAGS,
    accept_dialog,
    browser_page,
    free_port,
    quickstart,
    require,
    server,
    server_env,
    shot,
    tab,
    toggle_changes_headline,
)

pytestmark = pytest.mark.browser

# Notebook 7.6.5's shortcuts plugin throws this while loading settings, on an empty
# notebook too, with no ckwidget code on the page (its stack is inside notebook_core).
NOTEBOOK7_BUG = r"reading 'schema'\).*/static/notebook/notebook_core\.[0-9a-f]+\.js"

KERNEL_IDLE = """() => {
  const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const k = w && w.sessionContext && w.sessionContext.session
            && w.sessionContext.session.kernel;
  return !!k && k.status === 'idle';
}"""


@pytest.fixture(scope="module")
def notebook_server(tmp_path_factory):
    require("notebook")
    root = tmp_path_factory.mktemp("nb7")
    quickstart(root)
    env = server_env(root, JUPYTERLAB_SETTINGS_DIR=str(root / ".settings"),
                     JUPYTERLAB_WORKSPACES_DIR=str(root / ".workspaces"))
    port = free_port()
    argv = ["notebook", "--no-browser", f"--port={port}", f"--ServerApp.root_dir={root}",
            "--JupyterNotebookApp.expose_app_in_browser=True", *SERVER_FLAGS]
    with server(argv, root, port, env) as url:
        yield url, root


def test_quickstart_in_notebook7(notebook_server) -> None:
    from playwright.sync_api import expect

    url, folder = notebook_server
    with browser_page("failure-notebook7.png") as b:
        page = b.page
        page.goto(f"{url}/notebooks/quickstart.ipynb")
        page.wait_for_selector(".jp-Notebook", timeout=60_000)
        accept_dialog(page, 2_000)  # a "Select Kernel" dialog may come first
        page.wait_for_function(KERNEL_IDLE, timeout=60_000)
        page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
        root = page.locator(".ck-root")
        expect(root).to_have_count(1, timeout=120_000)
        expect(root.locator(".ck-headline")).to_contain_text("model tensors would load")
        expect(root.locator(".ck-finding").first).to_be_visible()
        shot(root, "notebook7-diagnosis.png")
        tab(root, "Distributions")  # plotly JSON, drawn by the front end's own renderer
        for chart in (".ck-layers", ".ck-hist"):
            expect(root.locator(f"{chart} .js-plotly-plot .main-svg").first).to_be_visible(
                timeout=60_000)
        shot(root, "notebook7-distributions.png")
        toggle_changes_headline(root, expect)
        shot(root, "notebook7-fix.png")
    b.check_clean(known=[NOTEBOOK7_BUG])
    assert (folder / "ckpt.pth").exists()
