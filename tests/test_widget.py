"""The debugger widget without a browser: construct, toggle, preview, apply, export, save.

Real checkpoints (safetensors and torch.save files written here), the real diagnosis
and the real Plan; assertions on the widget's state and on the model's tensors.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import ckwidget as ck
from ckwidget.formatting import fold_keys
from ckwidget.ui.table import KeyTable
from ckwidget.ui.widget import CheckpointDebugger

HOSTILE = "<img src=x onerror=alert(1)>"


class TinyNet(nn.Module):
    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8))
        self.head = nn.Linear(8, classes)


def _save_prefixed(path: Path, donor: nn.Module, extra: dict | None = None) -> Path:
    sd = {"module." + k: v.detach().clone() for k, v in donor.state_dict().items()}
    sd.update(extra or {})
    if path.suffix == ".safetensors":
        save_file(sd, str(path))
    else:
        torch.save(sd, path)
    return path


@pytest.fixture
def prefixed(tmp_path: Path) -> tuple[Path, TinyNet]:
    """DataParallel-style keys; same architecture: the strip-prefix fix makes it load."""
    torch.manual_seed(1)
    donor = TinyNet()
    return _save_prefixed(tmp_path / "dp.safetensors", donor), donor


@pytest.fixture
def resized(tmp_path: Path) -> tuple[Path, TinyNet]:
    """DataParallel keys and a 10-class head for a 5-class model, plus a hostile key."""
    torch.manual_seed(2)
    donor = TinyNet(classes=10)
    path = _save_prefixed(tmp_path / "resized.safetensors", donor,
                          {"module." + HOSTILE: torch.tensor([1.0, float("nan")])})
    return path, donor


def _classes(widget) -> set[str]:
    return set(widget._dom_classes)


def _open(path: Path, model: nn.Module, **kw) -> CheckpointDebugger:
    dbg = ck.debug(path, model, background=False, **kw)
    assert isinstance(dbg, CheckpointDebugger)
    return dbg


def test_construct_exposes_css_hooks_and_report(prefixed) -> None:
    path, _ = prefixed
    model = TinyNet()
    dbg = _open(path, model)
    assert "ck-root" in _classes(dbg)
    assert "ck-headline" in _classes(dbg.headline)
    assert f"ck-status-{dbg.report.status}" in _classes(dbg.headline)
    assert "ck-table" in _classes(dbg.table_html)
    assert "ck-snippet" in _classes(dbg.snippet)
    assert "ck-apply" in _classes(dbg.apply_button)
    kinds = [f.kind for f in dbg.plan.fixes]
    assert "strip-prefix" in kinds
    toggle = dbg.fix_toggles[dbg.fix_choices.index(dbg.plan.fixes[0])]
    assert f"ck-fix-{dbg.plan.fixes[0].kind}" in _classes(toggle) and toggle.value
    assert dbg.tabs.titles == ("Diagnosis", "Keys", "Distributions", "Fix & export")
    assert str(path) in dbg.header.value
    assert dbg.report.headline in dbg.headline.value
    assert dbg.snippet.value == ""  # written when the Fix tab is first opened
    dbg.tabs.selected_index = 3
    assert "module." in dbg.snippet.value  # the code strips the prefix


def test_toggle_updates_plan_preview_and_snippet_before_apply(prefixed) -> None:
    path, _ = prefixed
    model = TinyNet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    dbg = _open(path, model)
    dbg.tabs.selected_index = 3
    headline0, snippet0 = dbg.headline.value, dbg.snippet.value
    dbg.set_fix("strip-prefix", False)
    dbg.wait()
    assert "strip-prefix" not in [f.kind for f in dbg.plan.fixes]
    assert dbg.preview is not None and dbg.preview.loadable_count == 0
    assert dbg.headline.value != headline0
    assert "With no fixes: 0 of 6 model tensors would load" in dbg.headline.value
    assert dbg.snippet.value != snippet0
    dbg.table_view.value = "With the plan"
    assert "ck-st-renamed" in dbg.table_html.value
    dbg.set_fix("strip-prefix", True)
    dbg.wait()
    assert dbg.preview.loadable_count == dbg.preview.model_tensor_count == 6
    assert "With this fix: 6 of 6 model tensors would load, cleanly" in dbg.headline.value
    assert "ck-status-ok" in _classes(dbg.headline)
    assert "ck-st-renamed" not in dbg.table_html.value
    # nothing needs attention with the plan: the attention view is empty, all rows match
    assert "<tbody></tbody>" in dbg.table_html.value
    dbg.attention_box.value = False
    assert "ck-st-match" in dbg.table_html.value
    # nothing was applied by toggling
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    assert dbg.last_error is None


def test_apply_loads_the_checkpoint_into_the_model(prefixed) -> None:
    path, donor = prefixed
    model = TinyNet()
    dbg = _open(path, model)
    dbg.apply_button.click()
    assert dbg.last_error is None, dbg.error_area.value
    for k, v in donor.state_dict().items():
        assert torch.equal(model.state_dict()[k], v)
    assert "Applied" in dbg.result_html.value
    assert dbg.last_result is not None


def test_apply_failure_is_shown_and_model_is_unchanged(prefixed) -> None:
    path, _ = prefixed
    model = TinyNet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    dbg = _open(path, model)
    dbg.set_fix("strip-prefix", False)  # a strict load of 'module.*' keys must fail
    dbg.apply_button.click()
    assert dbg.last_error is not None
    assert "ck-error" in _classes(dbg.error_area)
    assert dbg.error_area.layout.display != "none" and dbg.error_area.value
    assert "unchanged" in dbg.result_html.value
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


def test_resized_head_plan_applies_and_keeps_head(resized) -> None:
    path, donor = resized
    model = TinyNet(classes=5)
    head_before = model.head.weight.detach().clone()
    dbg = _open(path, model)
    # the head keeps its initial values while the file's head goes unused (and the
    # fixture's NaN says so too): partial, never a green "fixable"
    assert dbg.report.status == "partial"
    dbg.apply()
    for k in ("encoder.0.weight", "encoder.2.bias"):
        assert torch.equal(model.state_dict()[k], donor.state_dict()[k])
    head = model.head.weight.detach()
    assert head.shape == (5, 8)
    # the head is either kept or resize-copied from the donor's first rows
    assert torch.equal(head, head_before) or torch.equal(head, donor.head.weight[:5])


def test_export_puts_code_in_next_cell_when_a_shell_exists(prefixed, monkeypatch) -> None:
    path, _ = prefixed
    dbg = _open(path, TinyNet(), model_name="net")
    monkeypatch.setattr("ckwidget.ui.export.current_shell", lambda: None)
    dbg.apply()
    applied = dbg.result_html.value
    code = dbg.export()
    assert code == dbg.last_code and "net" in code and str(path) in code
    # one line as a cell's last value, not the whole snippet as an escaped string
    assert repr(code).startswith("<plain-torch code, ") and "\n" not in repr(code)
    # said exactly what to do, in its own place: Apply's result stays where it was
    assert "dbg.export()" in dbg.export_html.value and dbg.result_html.value == applied

    class Shell:
        def __init__(self) -> None:
            self.calls: list[tuple[str, bool]] = []

        def set_next_input(self, text: str, replace: bool = False) -> None:
            self.calls.append((text, replace))

    shell = Shell()
    monkeypatch.setattr("ckwidget.ui.export.current_shell", lambda: shell)
    dbg.export()
    assert shell.calls == [(code, False)]
    assert "in a new cell below" in dbg.export_html.value


def test_exported_code_runs_and_loads_the_same_weights(prefixed) -> None:
    path, donor = prefixed
    net = TinyNet()
    code = _open(path, net, model_name="net").export(next_cell=False)
    namespace = {"net": net}
    exec(compile(code, "<snippet>", "exec"), namespace)
    for k, v in donor.state_dict().items():
        assert torch.equal(net.state_dict()[k], v)


def test_save_writes_a_repaired_checkpoint(prefixed, tmp_path) -> None:
    path, donor = prefixed
    dbg = _open(path, TinyNet())
    target = tmp_path / "fixed.safetensors"
    dbg.save_path.value = str(target)
    dbg.save_button.click()
    assert dbg.last_error is None, dbg.error_area.value
    assert target.exists() and "Saved" in dbg.result_html.value
    fixed = ck.open_checkpoint(target)
    assert set(fixed.tensors) == set(donor.state_dict())


def test_save_errors_land_in_the_error_area(prefixed) -> None:
    path, _ = prefixed
    dbg = _open(path, TinyNet())
    dbg.save_path.value = ""
    dbg.save_button.click()
    assert "Type a path" in dbg.error_area.value
    dbg.save_path.value = str(path)  # the source itself: refused
    dbg.save_button.click()
    assert "source" in dbg.error_area.value.lower()
    assert path.stat().st_size > 0


def test_keys_tab_filters_and_pages(tmp_path) -> None:
    class Deep(nn.Module):
        def __init__(self, extra: bool = False) -> None:
            super().__init__()
            self.blocks = nn.ModuleList(nn.Linear(2, 2) for _ in range(150))
            if extra:
                self.extra = nn.Linear(2, 2)

    sd = {k: v.clone() for k, v in Deep().state_dict().items()}
    sd["aux.table"] = torch.ones(3, 3, 3)
    path = tmp_path / "deep.safetensors"
    save_file(sd, str(path))
    dbg = _open(path, Deep(extra=True))
    dbg.tabs.selected_index = 1  # the Keys tab draws its first page when first shown
    # it opens on the keys that need attention, those kept at their initial values first
    assert dbg.attention_box.value and dbg.table_html.value.count("<tr>") == 4
    html = dbg.table_html.value
    assert html.index("extra.weight") < html.index("aux.table") and "blocks." not in html
    assert dbg.status_buttons["match"].description == "match 300"
    dbg.attention_box.value = False
    dbg.group_box.value = False
    assert dbg.table_html.value.count("<tr>") == 101  # header + 100 rows
    assert "page 1 of 4" in dbg.page_label.value
    dbg.next_button.click()
    assert "page 2 of 4" in dbg.page_label.value and dbg.page_index == 1
    dbg.prev_button.click()
    assert dbg.page_index == 0 and dbg.prev_button.disabled
    dbg.last_button.click()
    assert "page 4 of 4" in dbg.page_label.value and dbg.next_button.disabled
    dbg.page_box.value = 2
    assert dbg.page_index == 1 and "page 2 of 4" in dbg.page_label.value
    dbg.first_button.click()
    assert dbg.page_index == 0 and dbg.page_box.value == 1
    dbg.filter_text.value = "blocks.14"
    html = dbg.table_html.value
    assert "blocks.14.weight" in html and "blocks.3.weight" not in html
    dbg.filter_text.value = ""
    dbg.group_box.value = True
    assert "blocks.{0..149}.weight" in dbg.table_html.value and "×150" in dbg.table_html.value
    assert set(dbg.status_buttons) >= {"match", "missing", "unexpected"}
    dbg.status_buttons["missing"].value = True
    html = dbg.table_html.value
    assert "extra.weight" in html and "blocks." not in html and "aux.table" not in html
    dbg.status_buttons["unexpected"].value = True
    assert "aux.table" in dbg.table_html.value and "extra.bias" in dbg.table_html.value


def test_hostile_key_is_text_everywhere(resized) -> None:
    path, _ = resized
    dbg = _open(path, TinyNet(classes=5))
    dbg.filter_text.value = "onerror"
    assert "&lt;img src=x onerror=alert(1)&gt;" in dbg.table_html.value
    htmls = [dbg.table_html.value, dbg.findings_html.value, dbg.to_html(), dbg.snippet.value,
             dbg.header.value, dbg.headline.value, dbg.planline.value]
    assert not any(HOSTILE in h for h in htmls)
    assert any("onerror" in h for h in htmls[1:3])  # the finding names the key, escaped
    # fix descriptions are plain-text labels (ipywidgets does not render them as HTML)
    assert all(not t.description_allow_html for t in dbg.fix_toggles)
    panel = dbg.open_distributions()
    dbg.wait()
    panel.plot("no.such.module")  # a mistake shows in the widget, it does not raise
    dbg.wait()
    assert "no.such.module" in dbg.error_area.value


def test_distributions_compare_checkpoint_and_model(resized) -> None:
    path, _ = resized
    dbg = _open(path, TinyNet(classes=5))
    panel = dbg.open_distributions()
    dbg.wait()
    assert dbg.last_error is None, dbg.error_area.value
    assert panel.overview and panel.progress.value == panel.progress.max
    assert panel.progress.layout.display == "none"
    labels = [s.key for s in panel.overview]
    assert any("encoder.0.weight" in label for label in labels)
    assert panel.layers.box.children and panel.nonfinite.box.children
    panel.plot("encoder")
    dbg.wait()
    hist = panel.last_histogram
    assert set(hist.counts) == {"checkpoint", "model"}
    assert hist.counts["model"].sum() > 0 and hist.counts["checkpoint"].sum() > 0
    # the hostile tensor holds a NaN, which the NaN/Inf chart counts
    assert any(s.nan for s in panel.overview)


def test_clean_checkpoint_says_no_nan_instead_of_an_empty_chart(prefixed) -> None:
    path, _ = prefixed
    dbg = _open(path, TinyNet())
    panel = dbg.open_distributions()
    dbg.wait()
    (child,) = panel.nonfinite.box.children
    assert "No NaN or Inf in the sampled values of 6 tensors." in child.value
    assert panel.nonfinite.figure is None


def test_nonfinite_note_counts_only_tensors_that_were_read() -> None:
    from ckwidget.stats import TensorStats
    from ckwidget.ui.plots import nonfinite_note

    def st(key: str, nan: int = 0, error: str = "") -> TensorStats:
        return TensorStats(key, (2,), "float32", 2, 0 if error else 2, nan, 0, 0.0, 0.0,
                           0.0, 0.0, 0.0, error=error)

    assert nonfinite_note([st("a"), st("b"), st("c", error="truncated")]) == (
        "No NaN or Inf in the sampled values of 2 tensors; 1 could not be read (truncated).")
    assert nonfinite_note([st("a", error="gone."), st("b", error="gone."),
                           st("c", error="other")]) == (
        "No tensor values could be read: 3 tried (gone).")  # the commonest reason
    assert nonfinite_note([st("a"), st("b", nan=1)]) is None  # then the chart is drawn


def test_static_report_and_repr_html(prefixed) -> None:
    path, _ = prefixed
    static = ck.debug(path, TinyNet(), static=True)
    html = static._repr_html_()
    assert "ck-root" in html and "ck-headline" in html and "strip" in html.lower()
    dbg = _open(path, TinyNet())
    assert "ck-snippet" in dbg._repr_html_()


def test_mimebundle_has_widget_view_and_escaped_static_html(resized) -> None:
    """Front ends without ipywidgets render the bundle's text/html; it must be readable
    and every string from the file escaped."""
    path, _ = resized
    dbg = _open(path, TinyNet(classes=5))
    bundle = dbg._repr_mimebundle_()
    view = bundle["application/vnd.jupyter.widget-view+json"]
    assert view["model_id"] == dbg.model_id
    html = bundle["text/html"]
    assert HOSTILE not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    for part in ("ck-headline", "would load", "ck-finding", "<h4>Plan</h4>", "ck-snippet",
                 "removeprefix", "<h4>Keys</h4>", "ck-table", 'class="ck-hint ck-static-note"'):
        assert part in html, part
    assert "toggle them" not in html  # no widget controls to point at in a static view
    assert bundle["text/plain"] == f"<CheckpointDebugger: {dbg.report.headline}>"


def test_static_report_bundle_is_html_only(resized) -> None:
    path, _ = resized
    static = ck.debug(path, TinyNet(classes=5), static=True)
    bundle = static._repr_mimebundle_()
    assert set(bundle) == {"text/html", "text/plain"}
    assert HOSTILE not in bundle["text/html"] and "ck-headline" in bundle["text/html"]
    assert 'class="ck-hint ck-static-note"' not in bundle["text/html"]  # asked for it
    assert "load_file(" in static.export()  # a safetensors file: read with safetensors


def test_colab_widget_support_is_turned_on_only_in_colab(prefixed, monkeypatch) -> None:
    import sys
    import types

    from ckwidget.ui import enable_colab_widgets

    path, _ = prefixed
    assert not enable_colab_widgets()  # not in Colab: nothing happens
    calls: list[str] = []
    colab = types.ModuleType("google.colab")
    output = types.ModuleType("google.colab.output")
    output.enable_custom_widget_manager = lambda: calls.append("on")
    colab.output = output
    google = types.ModuleType("google")
    google.colab = colab
    monkeypatch.setitem(sys.modules, "google", google)
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    monkeypatch.setitem(sys.modules, "google.colab.output", output)
    assert enable_colab_widgets() and calls == ["on"]
    _open(path, TinyNet())  # (anywidget, when installed, asks for the same)
    n = len(calls)
    assert n >= 2
    ck.debug(path, TinyNet(), static=True)  # the static report needs no widgets
    assert len(calls) == n


def test_displayed_once_per_cell(prefixed, monkeypatch) -> None:
    path, _ = prefixed
    dbg = _open(path, TinyNet())
    shown: list[dict] = []
    monkeypatch.setattr("IPython.display.display",
                        lambda b, raw=False, display_id=None: shown.append(b))

    class Shell:
        execution_count = 7

    monkeypatch.setattr("ckwidget.ui.export.current_shell", lambda: Shell())
    dbg._ipython_display_()
    dbg._ipython_display_()
    assert len(shown) == 1
    assert "application/vnd.jupyter.widget-view+json" in shown[0] and "text/html" in shown[0]
    Shell.execution_count = 8
    dbg._ipython_display_()
    assert len(shown) == 2


# -- the table model on its own: grouping, escaping, 100k keys ------------------------------
def _big_table(n: int) -> pd.DataFrame:
    keys = [f"layers.{i // 4}.w{i % 4}" for i in range(n)]
    return pd.DataFrame({
        "key": keys, "status": ["match"] * (n - 1) + ["unexpected"],
        "checkpoint_key": keys, "model_key": keys,
        "checkpoint_shape": [(4, 4)] * n, "model_shape": [(4, 4)] * n,
        "checkpoint_dtype": ["float32"] * n, "model_dtype": ["float32"] * n,
        "note": [""] * n,
    })


def test_table_at_100k_keys_groups_filters_and_pages() -> None:
    df = _big_table(100_000)
    table = KeyTable(df)
    page = table.page(0)
    filtered = table.page(0, text="layers.2499.")
    by_status = table.page(0, statuses=["unexpected"])
    ungrouped = table.page(500, group=False)
    assert page.rows == 5 and page.keys == 100_000  # 4 groups + the unexpected row
    assert filtered.keys == 4 and by_status.keys == 1
    assert ungrouped.page == 500 and ungrouped.html.count("<tr>") == 101


def test_group_keys_folds_layer_numbers() -> None:
    assert fold_keys(["a.0.w", "a.1.w", "b", "0.x", "1.x", "a.2.b"]) == [
        ("a.{0,1}.w", 2), ("b", 1), ("{0,1}.x", 2), ("a.2.b", 1)
    ]


def _expand(line: str) -> set[str]:
    """Every key a folded line stands for ("a.{0..2,5}.w" -> a.0.w, a.1.w, a.2.w, a.5.w)."""
    head, brace, rest = line.partition("{")
    if not brace:
        return {line}
    inner, _, tail = rest.partition("}")
    numbers: list[int] = []
    for part in inner.split(","):
        lo, _, hi = part.partition("..")
        numbers.extend(range(int(lo), int(hi or lo) + 1))
    return {head + str(n) + key for n in numbers for key in _expand(tail)}


def test_folded_keys_stand_for_exactly_their_keys_on_random_keys() -> None:
    """Expanding every folded line gives back exactly the keys, each line's count is
    how many keys it stands for, and a line is written the way its keys are (no "03"
    shown as "3", no braces for a key that folds with nothing)."""
    import random

    rng = random.Random(11)
    for _ in range(3000):
        keys = ["".join(rng.choice("01.9ab*.\u0663") for _ in range(rng.randint(0, 7)))
                for _ in range(rng.randint(1, 9))]
        keys = list(dict.fromkeys(keys))
        lines = fold_keys(keys)
        assert sum(n for _, n in lines) == len(keys), (keys, lines)
        expanded = [_expand(line) for line, _ in lines]
        assert [len(e) for e in expanded] == [n for _, n in lines], (keys, lines)
        assert set().union(*expanded) == set(keys), (keys, lines)
        assert fold_keys(keys, 2) == lines[:2]
        for line, n in lines:
            assert n > 1 or line in keys, (keys, line)


def test_folded_table_rows_and_evidence_use_the_one_notation() -> None:
    """The Keys tab's folded rows, a finding's evidence list, the finding messages and
    the CLI write repeated layers the same way: ``layers.{0..11}.w``."""
    from ckwidget.formatting import group_keys as message_lines
    from ckwidget.ui.render import evidence_html

    keys = [f"layers.{i}.w" for i in range(12)]
    df = pd.DataFrame({"key": keys, "status": "missing", "checkpoint_key": "",
                       "model_key": keys, "note": ""})
    page = KeyTable(df).page(0)
    assert "layers.{0..11}.w" in page.html and "layers.*" not in page.html
    assert "layers.{0..11}.w" in evidence_html(keys)
    assert message_lines(keys) == ["layers.{0..11}.w"]


@pytest.mark.slow
def test_quickstart_notebook_runs_headless(tmp_path) -> None:
    """The quickstart executes top to bottom in a real kernel (no browser needed)."""
    import nbclient
    import nbformat

    root = Path(__file__).resolve().parents[1]
    nb = nbformat.read(root / "notebooks" / "01_quickstart.ipynb", as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), (
        "the committed notebook must have its outputs stripped")
    client = nbclient.NotebookClient(nb, timeout=180, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    outputs = {i: c.outputs for i, c in enumerate(nb.cells) if c.cell_type == "code"}
    widget_cell = next(i for i, c in enumerate(nb.cells) if "%ckdebug" in c.source
                       and c.cell_type == "code")
    mimes = [set(o.get("data", {})) for o in outputs[widget_cell]]
    views = [m for m in mimes if "application/vnd.jupyter.widget-view+json" in m]
    assert len(views) == 1  # shown once although the magic also returns the widget
    # and below it only the hidden report a reopened notebook shows (ui/lifetime.py)
    rest = [o for o in outputs[widget_cell]
            if "application/vnd.jupyter.widget-view+json" not in o.get("data", {})]
    assert len(rest) == 1 and 'class="ck-reopen" hidden' in rest[0]["data"]["text/html"]
    text = "\n".join(o.get("text", "") for out in outputs.values() for o in out)
    assert "would load" in text and "removeprefix" in text
    assert (tmp_path / "ckpt.pth").exists()


def test_key_patterns_fold_numbers_the_same_for_any_key():
    """Patterns are computed over all keys at once; keys with odd characters (newlines,
    non-ASCII digits, empty parts) give what a per-key substitution gives."""
    from ckwidget.ui.table import _NUM_PART, patterns

    keys = ["layers.3.w", "0.weight", "a.12b.3", "x", "", "h.1.2.q", "a..1", "1", "a.1.",
            "\u0663.x", "blocks.10.attn.c_attn.weight"]
    one_by_one = [_NUM_PART.sub(".*", "." + k)[1:] if k else k for k in keys]
    assert patterns(pd.Series(keys)).tolist() == one_by_one
    with_newline = [*keys, "a.1\nb.2"]
    assert patterns(pd.Series(with_newline)).tolist() == [*one_by_one, "a.1\nb.*"]


def test_numeric_folding_in_numpy_equals_the_regex():
    """The numpy folding of ASCII text gives exactly the regex substitution it replaces:
    random texts of digits, dots, newlines and letters, with and without a leading dot,
    and text without any digit run to fold."""
    import random

    from ckwidget.ui.table import _NUM_JOINED, _fold_ascii

    rng = random.Random(5)
    for _ in range(5000):
        text = "".join(rng.choice("0123456789.\nab9") for _ in range(rng.randint(0, 24)))
        if rng.random() < 0.7:
            text = "." + text
        assert _fold_ascii(text) == _NUM_JOINED.sub(".*", text), text
    big = "." + "\n.".join(f"h.{i}.attn.{i % 7}x.{i}" for i in range(3000))
    assert _fold_ascii(big) == _NUM_JOINED.sub(".*", big)
    assert _fold_ascii(".a.b\n.c") == ".a.b\n.c"
    assert _fold_ascii(".\u0663.x") is None  # not ASCII: the regex decides


def test_patterns_by_form_equal_the_regex_key_by_key():
    """Patterns worked out per form (digits masked) equal the one-key regex, whether the
    keys' numbers are whole components, names with digits ("conv1", folded in the joined
    text), empty keys, or characters the masking could confuse; and ``pattern_list``
    picks either way with the same result, at scale too."""
    import random

    from ckwidget.ui.table import _NUM_PART, _patterns_by_form, pattern_list

    def one_by_one(keys):
        return [_NUM_PART.sub(".*", "." + k)[1:] if k else k for k in keys]

    rng = random.Random(7)
    parts = ["layers", "0", "12", "007", "99999", "conv1", "bn2", "3a", "a3", "weight",
             "", "x", "1e5", "#", "*"]
    for _ in range(3000):
        keys = [".".join(rng.choice(parts) for _ in range(rng.randint(1, 5)))
                for _ in range(rng.randint(1, 30))]
        assert _patterns_by_form(keys, "\n".join(keys)) == one_by_one(keys), keys
        assert pattern_list(keys) == one_by_one(keys), keys
    for keys in ([f"m.layers.{i}.{w}" for i in range(20_000) for w in ("weight", "bias")],
                 [f"layer{i % 4}.{i}.conv{i % 3}.weight" for i in range(20_000)],
                 [*(f"h.{i}.w" for i in range(5000)), "stem.conv1.weight"],
                 ["a.\x01.1", "b.\u0663", "c.2"]):
        assert pattern_list(keys) == one_by_one(keys)


@pytest.mark.filterwarnings("ignore:Widget.widgets is deprecated:DeprecationWarning")
def test_close_closes_every_widget_inside_and_frees_the_report(resized) -> None:
    """ipywidgets keeps open widgets alive: after close() nothing of the debugger is
    left open, and its report (and the checkpoint it holds) can be freed. (The open
    widgets are read from ``Widget.widgets``, deprecated but still the registry.)"""
    import gc
    import weakref

    import ipywidgets as w

    path, _ = resized
    model = TinyNet(classes=5)
    dbg = _open(path, model)
    dbg.open_distributions()
    dbg.wait()
    dbg.tabs.selected_index = 1  # draw the Keys tab too
    ids = {m.model_id for m in _tree(dbg)}
    assert len(ids) > 40 and ids <= set(w.Widget.widgets)
    report = weakref.ref(dbg.report)
    dbg.close()
    assert not ids & set(w.Widget.widgets)
    del dbg
    gc.collect()
    assert report() is None
    assert model.head.weight.shape == (5, 8)  # the model is the caller's: untouched


def _tree(root):
    """Every widget reachable from ``root``: children, layouts and styles."""
    import ipywidgets as w

    out, stack = [], [root]
    while stack:
        x = stack.pop()
        if not isinstance(x, w.Widget) or any(x is y for y in out):
            continue
        out.append(x)
        stack.extend(getattr(x, "children", ()) or ())
        stack.extend(v for v in (getattr(x, "layout", None), getattr(x, "style", None)))
    return out


def test_a_cells_new_run_closes_what_its_earlier_run_made(prefixed) -> None:
    """Debuggers made by one run of a cell stay open; the cell's next run closes them
    (their output is gone), leaving other cells' debuggers and the new one open."""
    import ipywidgets as w

    from ckwidget.ui.lifetime import CellWidgets

    path, _ = prefixed
    model = TinyNet()
    first, second, elsewhere = (_open(path, model) for _ in range(3))
    first_id = first.model_id
    cells = CellWidgets()
    cells.adopt(first, ("cell-a", "run-1"))
    cells.adopt(second, ("cell-a", "run-1"))  # the same run: a loop opening two
    cells.adopt(elsewhere, ("cell-b", "run-2"))
    cells.adopt(None, None)  # no cell known: nothing recorded, nothing closed
    cells.retire_earlier_runs(("cell-a", "run-1"))  # still the same run
    assert first.comm is not None and second.comm is not None
    cells.retire_earlier_runs(None)
    assert first.comm is not None

    newer = _open(path, model)
    cells.adopt(newer, ("cell-a", "run-3"))
    assert first.comm is None and second.comm is None
    assert first_id not in w.Widget.widgets and first.preview is None
    assert elsewhere.comm is not None and newer.comm is not None
    assert newer.report.loadable_count == first.report.loadable_count

    del newer  # a debugger already freed is skipped, not an error
    import gc

    gc.collect()
    cells.retire_earlier_runs(("cell-a", "run-4"))
    assert elsewhere.comm is not None
    elsewhere.close()


def test_current_cell_outside_a_kernel_is_none() -> None:
    from ckwidget.ui.lifetime import current_cell

    assert current_cell() is None


def test_close_returns_while_a_background_job_is_still_running(prefixed) -> None:
    """A job blocked past close()'s wait (a read from a slow disk) neither makes close
    raise nor writes its result into the closed widgets; nothing new starts after."""
    import threading

    path, _ = prefixed
    dbg = ck.debug(path, TinyNet())  # jobs on background threads, as in a notebook
    dbg.close_wait_s = 0.2
    release = threading.Event()
    shown: list = []
    dbg._jobs.submit("slow", lambda: release.wait(30) and "late", shown.append)
    dbg.close()  # ran into a TimeoutError before
    assert shown == [], "close returned without waiting for the slow job to finish"
    release.set()
    dbg._jobs.wait(10)
    assert shown == []  # the late result went nowhere
    dbg._jobs.submit("after", lambda: "x", shown.append)
    dbg._jobs.wait(10)
    assert shown == [] and dbg._jobs.cancelled.is_set()


def test_closing_stops_the_distributions_overview_at_its_next_tensor(prefixed) -> None:
    """The overview checks for a close between tensors: closed during its first tensor,
    it samples no other one, and draws nothing."""
    from ckwidget.ui.distributions import DistributionsPanel

    path, _ = prefixed
    dbg = _open(path, TinyNet())
    panel = DistributionsPanel(dbg)

    def close_after_the_first(change) -> None:
        if change["new"] == 1:
            dbg._jobs.cancelled.set()  # what close() sets first

    panel.progress.observe(close_after_the_first, names="value")
    panel.start()  # inline: the debugger runs its jobs in the foreground here
    assert panel.progress.max > 1 and panel.progress.value == 1
    assert panel.overview == [] and panel.layers.figure is None  # its result went nowhere


def test_waiting_for_background_jobs_keeps_to_one_deadline(monkeypatch) -> None:
    """``wait(timeout)`` gives up ``timeout`` seconds after it was called, however many
    jobs run: a job that ends just in time does not earn the next one a full timeout.
    Threads and clock are stand-ins (a join advances the clock by what it waited), so
    the check is exact on any machine."""
    import ckwidget.ui.widget as widget_mod
    from ckwidget.ui.widget import Jobs

    clock = [0.0]

    class Thread:  # ends ``life`` seconds after the start; join waits as threads do
        def __init__(self, name: str, life: float) -> None:
            self.name, self.life = name, life

        def is_alive(self) -> bool:
            return clock[0] < self.life

        def join(self, timeout: float) -> None:
            clock[0] += max(0.0, min(timeout, self.life - clock[0]))

    jobs = Jobs(background=True, on_error=lambda exc, name: None)
    jobs._threads = [Thread("ckwidget-quick", 2.0), Thread("ckwidget-slow", 10.0)]
    fake_time = type("T", (), {"monotonic": staticmethod(lambda: clock[0])})
    monkeypatch.setattr(widget_mod, "time", fake_time)
    with pytest.raises(TimeoutError, match="ckwidget-slow"):
        jobs.wait(3.0)
    assert clock[0] == 3.0  # one deadline: not 2.0 + 3.0 s


NO_PLOTLY_CHILD = """
import sys
import torch
from torch import nn
import ckwidget as ck

torch.save({"module.w": torch.zeros(2)}, sys.argv[1])
model = nn.Module()
model.w = nn.Parameter(torch.ones(2))
dbg = ck.debug(sys.argv[1], model)
dbg._ipython_display_()  # what a notebook runs to show it
panel = dbg.open_distributions()
dbg.wait()
(out,) = [c for c in panel.layers.box.children if hasattr(c, "outputs")]
print("mime", sorted(out.outputs[0]["data"]))
print("plotly", any(m == "plotly" or m.startswith("plotly.") for m in sys.modules))
"""


def test_the_charts_are_drawn_by_the_front_end_without_plotly_in_the_kernel(tmp_path):
    """The Distributions tab's charts are plotly JSON in an Output (the front end's
    plotly mime renderer draws them, its JavaScript loaded once per page), not
    FigureWidgets that ship plotly's 5 MB bundle with each chart: showing the debugger
    and drawing the tab imports no plotly in the kernel."""
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-c", NO_PLOTLY_CHILD, str(tmp_path / "c.pt")],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    lines = [line for line in run.stdout.splitlines()
             if line.startswith(("mime", "plotly"))]
    assert lines == ["mime ['application/vnd.plotly.v1+json', 'text/plain']",
                     "plotly False"], run.stdout[-2000:]


def test_apply_updates_the_header_and_marks_resolved_findings(prefixed) -> None:
    path, donor = prefixed
    net = TinyNet()
    dbg = _open(path, net, model_name="net")
    assert dbg.applied_line.value == "" and "resolved by Apply" not in dbg.findings_html.value
    dbg.apply()
    assert "Applied at " in dbg.applied_line.value and "loaded into net" in dbg.applied_line.value
    assert "ck-result-ok" in dbg.applied_line.value
    assert "resolved by Apply" in dbg.findings_html.value  # the prefix finding
    assert not dbg.apply_button.disabled and dbg.progress.value == ""
    assert all(torch.equal(net.state_dict()[k], v) for k, v in donor.state_dict().items())


def test_an_interrupted_apply_says_the_model_is_unchanged(prefixed, monkeypatch) -> None:
    path, _ = prefixed
    net = TinyNet()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    dbg = _open(path, net, model_name="net")

    def interrupted(*_a, **_k):
        raise KeyboardInterrupt

    monkeypatch.setattr(type(dbg.plan), "apply", interrupted)
    with pytest.raises(KeyboardInterrupt):
        dbg.apply()
    assert "unchanged" in dbg.result_html.value and "Interrupted" in dbg.result_html.value
    assert "is unchanged" in dbg.applied_line.value and not dbg.apply_button.disabled
    assert all(torch.equal(net.state_dict()[k], v) for k, v in before.items())
