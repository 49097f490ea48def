"""In a real browser: the verdicts a user must be able to believe.

A changed head (kept at its initial values while the file's head goes unused) and a
checkpoint holding NaN show as PARTIAL, in red, with the tensors named; Apply shows
"Applying" is over, says in the header what it did, and stays red for the NaN file.
Screenshots go to test-artifacts/ (verdict-*.png).
"""

from __future__ import annotations

import pytest
from _browser import (
    browser_page,
    lab_with,
    require,
    run_notebook,
    shot,
    tab,
)

pytestmark = pytest.mark.browser

CELLS = [
    """\
import torch
from torch import nn
import ckwidget as ck

def net(classes):
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, classes))

torch.manual_seed(0)
torch.save(net(10).state_dict(), "head.pth")   # fine-tuned for 10 classes
bad = net(5).state_dict()
bad["0.weight"][0, :3] = float("nan")
torch.save(bad, "nan.pth")""",
    "model = net(5)\nhead = ck.debug('head.pth', model, model_name='model')\nhead",
    "other = net(5)\nnan = ck.debug('nan.pth', other, model_name='other')\nnan",
    """\
big = nn.ModuleList(nn.Linear(2, 2) for _ in range(20_000))   # 40,000 keys: a slow Apply
torch.save({"module." + k: v + 1 for k, v in big.state_dict().items()}, "big.pth")
slow = ck.debug("big.pth", big, model_name="big")
slow""",
]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    require()
    with lab_with(tmp_path_factory.mktemp("verdicts"), "verdicts.ipynb", CELLS) as url:
        yield url


def _contrast(page, locator) -> float:
    """The WCAG contrast of an element's text colour on its (first opaque) background."""
    return page.evaluate("""(el) => {
        const rgb = s => (s.match(/[\\d.]+/g) || []).map(Number);
        const lum = ([r, g, b]) => {
            const f = c => { c /= 255; return c <= 0.03928 ? c / 12.92
                                               : Math.pow((c + 0.055) / 1.055, 2.4); };
            return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
        };
        const fg = rgb(getComputedStyle(el).color);
        let node = el, bg = null;
        while (node) {
            const c = rgb(getComputedStyle(node).backgroundColor);
            if (c.length >= 3 && (c.length < 4 || c[3] > 0.5)) { bg = c; break; }
            node = node.parentElement;
        }
        bg = bg || [255, 255, 255];
        const [a, b] = [lum(fg), lum(bg)].sort((x, y) => y - x);
        return (a + 0.05) / (b + 0.05);
    }""", locator.element_handle())


def test_partial_and_nonfinite_verdicts_in_jupyterlab(lab) -> None:
    from playwright.sync_api import expect

    with browser_page("failure-verdicts.png") as b:
        page = b.page
        roots = run_notebook(page, lab, "verdicts.ipynb", expect, debuggers=3)
        head, nan = roots.nth(0), roots.nth(1)
        for root in (head, nan):
            expect(root.locator(".ck-pill-partial").first).to_be_visible()
        headline = head.locator(".ck-headline").first
        expect(headline).to_contain_text("keep their initial values (2.weight, 2.bias)")
        expect(headline).to_contain_text("learned tensors in the file are not used")
        assert _contrast(page, headline) >= 4.5
        head.scroll_into_view_if_needed()
        shot(head, "verdict-partial.png")

        nan_headline = nan.locator(".ck-headline").first
        expect(nan_headline).to_contain_text("holds NaN/Inf: 0.weight")
        tab(nan, "Keys")
        expect(nan.locator(".ck-table")).to_contain_text("holds NaN/Inf")
        tab(nan, "Fix & export")
        nan.locator(".ck-apply").click()
        applied = nan.locator(".ck-applied")
        expect(applied).to_contain_text("Applied at", timeout=30_000)
        expect(applied).to_contain_text("1 loaded tensor holds NaN/Inf")
        expect(nan.locator(".ck-headline").first).not_to_contain_text("cleanly")
        expect(nan.locator(".ck-result .ck-result-bad")).to_contain_text("NaN/Inf")
        expect(nan.locator(".ck-apply")).to_be_enabled()
        assert _contrast(page, nan.locator(".ck-result .ck-result-bad")) >= 4.5
        nan.scroll_into_view_if_needed()
        shot(nan, "verdict-nonfinite-applied.png")

        # a slow Apply says so before its result, with its buttons off, then gives
        # them back
        slow = roots.nth(2)
        tab(slow, "Fix & export")
        slow.locator(".ck-apply").click()
        expect(slow.locator(".ck-busy")).to_contain_text("Applying", timeout=10_000)
        expect(slow.locator(".ck-apply")).to_be_disabled()
        expect(slow.locator(".ck-applied")).to_contain_text("Applied at", timeout=120_000)
        expect(slow.locator(".ck-busy")).not_to_contain_text("Applying")
        expect(slow.locator(".ck-apply")).to_be_enabled()
    b.check_clean()
