"""End to end in a real browser: Voila renders the quickstart notebook as an app.

Voila runs every cell on page load and shows only the outputs (code cells are
stripped), so the page must show the widget with its headline, and toggling a fix must
change the headline through the live kernel; fails on any browser console error.
Skipped without Chromium, Playwright or the ``voila`` package, unless
CKWIDGET_REQUIRE_BROWSER=1 (see tests/_browser.py).
"""

from __future__ import annotations

import pytest
from _browser import (
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


@pytest.fixture(scope="module")
def voila_server(tmp_path_factory):
    require("voila")
    root = tmp_path_factory.mktemp("voila")
    notebook = quickstart(root)
    port = free_port()
    argv = ["voila", str(notebook), "--no-browser", f"--port={port}", "--Voila.ip=127.0.0.1",
            "--Voila.port_retries=0", "--show_tracebacks=True",
            # Notebook 7's own lab extension needs JupyterLab's document registry, which
            # Voila's page does not provide (a module-federation error, with or without
            # ckwidget); it has nothing to do with widgets
            "--VoilaConfiguration.extension_denylist=['@jupyter-notebook/lab-extension']"]
    # every page load starts a kernel and runs the notebook: wait for the port only
    with server(argv, root, port, server_env(root), ready_path=None) as url:
        yield url, root


def test_quickstart_in_voila(voila_server) -> None:
    from playwright.sync_api import expect

    url, folder = voila_server
    with browser_page("failure-voila.png") as b:
        page = b.page
        b.offline()
        page.goto(url + "/", timeout=120_000)
        root = page.locator(".ck-root")
        expect(root).to_have_count(1, timeout=120_000)
        expect(root.locator(".ck-headline")).to_contain_text("model tensors would load")
        expect(root.locator(".ck-finding").first).to_be_visible()
        # code cells are stripped: the app shows outputs only
        assert page.get_by_text("%load_ext ckwidget").count() == 0
        shot(root, "voila-diagnosis.png")
        tab(root, "Distributions")  # plotly JSON, drawn by the front end's own renderer
        for chart in (".ck-layers", ".ck-hist"):
            expect(root.locator(f"{chart} .js-plotly-plot .main-svg").first).to_be_visible(
                timeout=60_000)
        shot(root, "voila-distributions.png")
        toggle_changes_headline(root, expect)
        shot(root, "voila-fix.png")
    b.check_clean()
    assert (folder / "ckpt.pth").exists()
