"""In a real browser: a notebook saved while its debugger was live, reopened after its
kernel stopped, shows the static report, not "Error displaying widget".

The sequence a user follows: run the cell (the widget is live), save, shut the kernel
down from the Kernel menu, close the page, open the notebook again in a fresh page.
The saved file still holds the widget view (nothing saved it after the kernel's exit
replaced the view), so the report must come from what was saved while the widget was
live: the hidden copy below it (ckwidget/ui/lifetime.py). Checked on the page (the
report's headline is shown, no "Error displaying widget" is visible) and in the saved
.ipynb (each output that holds the widget view is followed by that copy).
"""

from __future__ import annotations

import json

import pytest
from _browser import (
    accept_dialog,
    browser_page,
    lab_with,
    open_notebook,
    require,
    run_notebook,
    shot,
)

pytestmark = pytest.mark.browser

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
CELLS = [
    """\
import torch
from torch import nn
import ckwidget as ck

def net(classes):
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, classes))

torch.manual_seed(0)
saved = {"module." + k: v for k, v in net(10).state_dict().items()}  # DataParallel keys
torch.save(saved, "ckpt.pth")
model = net(5)                                                         # a resized head""",
    "dbg = ck.debug('ckpt.pth', model)\ndbg",
]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    require()
    folder = tmp_path_factory.mktemp("reopen")
    with lab_with(folder, "reopen.ipynb", CELLS) as url:
        yield url, folder


def _outputs(path) -> list[dict]:
    nb = json.loads(path.read_text())
    return [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]


def test_saved_live_debugger_reopens_as_its_report(lab) -> None:
    from playwright.sync_api import expect

    url, folder = lab
    path = folder / "reopen.ipynb"
    with browser_page("failure-reopen-live.png") as b:
        page = b.page
        root = run_notebook(page, url, "reopen.ipynb", expect, debuggers=1)
        headline = root.locator(".ck-headline").first.text_content().strip()
        assert headline
        page.evaluate("window.jupyterapp.commands.execute('docmanager:save')")
        expect(page.locator(".jp-mod-dirty")).to_have_count(0, timeout=30_000)
        # the live page: the widget alone is visible, its hidden copy takes no room
        expect(page.locator(".ck-reopen")).to_be_hidden()
        page.evaluate("window.jupyterapp.commands.execute('kernelmenu:shutdown')")
        accept_dialog(page, 2_000)  # JupyterLab may ask to confirm
        page.wait_for_function(
            "() => { const w = window.jupyterapp.shell.currentWidget;"
            " return !(w && w.sessionContext && w.sessionContext.session"
            " && w.sessionContext.session.kernel); }", timeout=60_000)
        b.check_clean()

    # what was saved while the widget was live: its view, then the hidden report
    outputs = _outputs(path)
    at = [i for i, o in enumerate(outputs) if WIDGET_VIEW in o.get("data", {})]
    assert len(at) == 1, [sorted(o.get("data", {})) for o in outputs]
    after = outputs[at[0] + 1:at[0] + 2]
    assert after and "text/html" in after[0].get("data", {}), (
        "no hidden report saved below the widget view: reopened without its kernel, "
        "JupyterLab shows 'Error displaying widget: model not found' in its place")
    copy = "".join(after[0]["data"]["text/html"])
    assert '<div class="ck-reopen" hidden>' in copy, copy[:500]
    assert 'class="ck-headline"' in copy and "was closed (or its kernel stopped)" in copy

    with browser_page("failure-reopen.png") as b:
        page = b.page
        open_notebook(page, url, "reopen.ipynb")
        notebook = page.locator(".jp-Notebook")
        # the widget renderer gives up on its model once the new kernel is known
        expect(notebook.locator(".jupyter-widgets", has_text="Error displaying widget")
               ).to_have_count(1, timeout=60_000)
        report = notebook.locator(".ck-reopen .ck-static")
        expect(report).to_be_visible(timeout=30_000)
        expect(report.locator(".ck-headline")).to_have_text(headline)
        expect(report.locator(".ck-header")).to_have_css("border-left-style", "solid")
        expect(notebook.get_by_text("Error displaying widget")).to_be_hidden()
        assert "Error displaying widget" not in notebook.inner_text()
        shot(notebook.locator(".jp-Cell").nth(1), "reopen-report.png")
        b.check_clean(known=[r"widget model not found"])
