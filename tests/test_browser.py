"""End to end in a real browser: JupyterLab 4 runs the quickstart notebook in Chromium.

Toggles a fix and sees the headline change, applies, reads the snippet, checks that a
checkpoint key made of HTML shows as text in every tab, fails on any browser console
error, and saves a screenshot of each tab to test-artifacts/.

Needs /usr/bin/chromium (``apt-get install -y chromium``) and the ``playwright`` Python
package (never ``playwright install``). Without them the test is skipped, unless
CKWIDGET_REQUIRE_BROWSER=1 (CI), where it fails instead.
"""

from __future__ import annotations

import re

import pytest
from _browser import (
    HOSTILE,
    KERNEL_IDLE_SELECTOR,
    browser_page,
    lab_server,
    quickstart,
    require,
    run_notebook,
    shot,
    tab,
)

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab on a free loopback port, serving a temp dir with the test notebook."""
    require()
    root = tmp_path_factory.mktemp("lab")
    quickstart(root, hostile=True)
    with lab_server(root) as url:
        yield url, root


def test_quickstart_in_jupyterlab(lab) -> None:
    from playwright.sync_api import expect

    url, folder = lab
    with browser_page("failure-lab.png") as b:
        _run(b.page, url, expect)
    b.check_clean()
    assert (folder / "ckpt.pth").exists()


def _run(page, url: str, expect) -> None:
    roots = run_notebook(page, url, "quickstart.ipynb", expect, debuggers=2)
    root = roots.nth(0)
    root.scroll_into_view_if_needed()
    headline = root.locator(".ck-headline")
    expect(headline).to_contain_text("model tensors would load")
    shot(root, "tab-diagnosis.png")
    expect(root.locator(".ck-finding").first).to_be_visible()

    tab(root, "Keys")
    expect(root.locator(".ck-table table")).to_be_visible()
    shot(root, "tab-keys.png")

    tab(root, "Distributions")
    expect(root.locator(".ck-layers .js-plotly-plot")).to_be_visible(timeout=60_000)
    expect(root.locator(".ck-hist .js-plotly-plot")).to_be_visible(timeout=60_000)
    page.wait_for_timeout(500)
    shot(root, "tab-distributions.png")

    tab(root, "Fix & export")
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
    shot(root, "tab-fix.png")

    _check_hostile(page, page.locator(".ck-root").nth(1), expect)
    _rerun_closes_the_old_debugger(page, expect)


_OPEN_DEBUGGERS = """
import warnings, ipywidgets
from ckwidget.ui.widget import CheckpointDebugger
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # Widget.widgets: deprecated, still the registry
    print(sum(isinstance(w, CheckpointDebugger) for w in ipywidgets.Widget.widgets.values()))
"""


def _kernel_output(page, code: str) -> str:
    """Run ``code`` on the notebook's kernel (outside any cell); its printed output."""
    return page.evaluate("""async (code) => {
        const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
        const future = kernel.requestExecute({code});
        let out = "";
        future.onIOPub = (msg) => {
            if (msg.header.msg_type === "stream") { out += msg.content.text; }
        };
        await future.done;
        return out;
    }""", code)


def _rerun_closes_the_old_debugger(page, expect) -> None:
    """JupyterLab says which cell runs: running the hostile cell again closes the
    debugger its first run made, so two stay open, not three."""
    assert _kernel_output(page, _OPEN_DEBUGGERS).strip() == "2"
    page.evaluate("""async () => {
        const notebook = window.jupyterapp.shell.currentWidget.content;
        notebook.activeCellIndex = notebook.widgets.findIndex(
            (cell) => cell.model.sharedModel.getSource().includes("dbg2 = %ckdebug"));
        await window.jupyterapp.commands.execute("notebook:run-cell");
    }""")
    page.wait_for_selector(KERNEL_IDLE_SELECTOR, timeout=120_000)
    expect(page.locator(".ck-root")).to_have_count(2, timeout=60_000)
    assert _kernel_output(page, _OPEN_DEBUGGERS).strip() == "2"


def _check_hostile(page, root, expect) -> None:
    """The HTML key appears as literal text in every tab, and never as an element."""
    root.scroll_into_view_if_needed()
    literal = re.compile(re.escape(HOSTILE))
    tab(root, "Diagnosis")
    expect(root.locator(".ck-tab-diagnosis")).to_contain_text(literal)
    tab(root, "Keys")
    root.locator(".ck-filter input").fill("onerror")
    expect(root.locator(".ck-table")).to_contain_text(literal)
    tab(root, "Distributions")
    expect(root.locator(".ck-nonfinite .js-plotly-plot")).to_be_visible(timeout=60_000)
    expect(root.locator(".ck-nonfinite")).to_contain_text(literal, timeout=30_000)
    shot(root, "hostile-distributions.png")
    tab(root, "Fix & export")
    expect(root.locator(".ck-tab-fix")).to_contain_text(literal)
    shot(root, "hostile-fix.png")
    assert root.locator("img:not(.plot-img)").count() == 0  # plotly's renderer has its own
    assert page.locator("img[src=x]").count() == 0
