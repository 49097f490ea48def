"""The Distributions tab points at the problem: a flagged, sortable per-tensor table and
plotly JSON charts (markers over module names, per-side histogram bins, log axes),
drawn by the front end's plotly mime renderer. Figures are validated by plotly itself."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from _models import Blocks as Net
from torch import nn

import ckwidget as ck
from ckwidget import stats
from ckwidget.comparison import Row, flag_rows, sort_rows
from ckwidget.ui import plots
from ckwidget.ui.distributions import table_html


def _valid(fig: dict) -> dict:
    """The figure is plotly JSON that plotly accepts, and strict JSON (no NaN)."""
    go = pytest.importorskip("plotly.graph_objects")
    go.Figure(fig)  # raises on an unknown property or a bad value
    json.dumps(fig, allow_nan=False)
    return fig


@pytest.fixture
def sick(tmp_path: Path) -> tuple[Path, Net]:
    """A checkpoint with one of each problem: 512 NaN and 1 Inf, a dead weight, an
    exploding one, and a resized head the plan leaves at its initial value."""
    torch.manual_seed(0)
    sd = Net(classes=6).state_dict()
    w = sd["blocks.0.0.weight"]
    w.view(-1)[:512] = float("nan")
    w.view(-1)[512] = float("inf")
    sd["blocks.1.0.weight"].zero_()
    sd["blocks.2.0.weight"].mul_(100)
    path = tmp_path / "sick.pt"
    torch.save(sd, path)
    return path, Net()


def _text(html: str) -> str:
    return html.replace("<wbr>", "")  # keys wrap at their dots


def _panel(path: Path, model: nn.Module):
    dbg = ck.debug(path, model, background=False)
    panel = dbg.open_distributions()
    dbg.wait()
    assert dbg.last_error is None, dbg.error_area.value
    return dbg, panel


def test_the_comparison_answers_without_a_widget(sick) -> None:
    """The sampling rule and the flags live below the views: a script asks the same
    questions of ckwidget.comparison and gets the flags the tab shows."""
    from ckwidget.comparison import Comparison

    path, model = sick
    comparison = Comparison(ck.diagnose(path, model), model)
    moved: list[int] = []
    rows = comparison.rows(comparison.chosen(), progress=moved.append)
    flags = {r.label: {word for word, _ in r.flags} for r in rows}
    assert "nonfinite" in flags["blocks.0.0.weight"]
    assert "dead" in flags["blocks.1.0.weight"]
    assert "exploding" in flags["blocks.2.0.weight"]
    assert "initial" in flags["head.weight"]
    assert not flags["blocks.3.0.weight"]
    assert moved == sorted(moved) and moved[-1] == len(rows)
    values, dtypes = comparison.samples("blocks.3")
    assert set(values) == {"checkpoint", "model"} and dtypes["model"] == ["float32"] * 4
    assert comparison.rows(comparison.chosen(), cancelled=lambda: True) == []


def test_the_table_flags_what_weightlens_flags(sick) -> None:
    dbg, panel = _panel(*sick)
    flags = {r.label: [w for w, _ in r.flags] for r in panel.rows}
    assert flags["blocks.0.0.weight"] == ["nonfinite"]
    assert flags["blocks.1.0.weight"] == ["dead"]
    assert flags["blocks.2.0.weight"] == ["exploding"]
    assert flags["head.weight"] == ["initial"] and flags["head.bias"] == ["initial"]
    # LayerNorm's weight of ones and bias of zeros are its usual state, not dead
    assert flags["blocks.3.1.weight"] == [] and flags["blocks.3.1.bias"] == []
    html = _text(panel.table_html.value)
    assert "5 flagged" in html and "ck-flag-exploding" in html
    nonfinite = next(r for r in panel.rows if r.label == "blocks.0.0.weight").ckpt
    assert (nonfinite.nan, nonfinite.inf) == (512, 1)
    dead = next(r for r in panel.rows if r.label == "blocks.1.0.weight").ckpt
    assert dead.zeros_pct == 100.0
    # problems first: the flagged rows lead the table
    assert {r.label for r in sort_rows(panel.rows, "flags")[:5]} == {
        "blocks.0.0.weight", "blocks.1.0.weight", "blocks.2.0.weight", "head.weight",
        "head.bias"}
    panel.flagged_only.value = True
    assert panel.table_html.value.count("<tr class='ck-flagged'>") == 5
    assert "blocks.3.1.bias" not in _text(panel.table_html.value)
    panel.flagged_only.value = False
    assert "blocks.3.1.bias" in _text(panel.table_html.value)
    panel.sort.value = "std"
    html = _text(panel.table_html.value)
    assert sort_rows(panel.rows, "std")[0].label == "blocks.2.0.weight"
    assert html.index("blocks.2.0.weight") < html.index("blocks.3.0.weight")
    dbg.close()


def test_the_table_says_how_far_the_model_is_from_the_checkpoint(tmp_path) -> None:
    torch.manual_seed(0)
    model = Net()
    path = tmp_path / "same.pt"
    torch.save(model.state_dict(), path)
    dbg, panel = _panel(path, model)
    assert all(r.diff == 0.0 for r in panel.rows), [(r.label, r.diff) for r in panel.rows]
    assert ">same<" in panel.table_html.value and "<wbr>" in panel.table_html.value
    dbg.close()
    dbg, panel = _panel(path, Net())  # a fresh model: its values are unrelated
    diffs = [r.diff for r in panel.rows if r.label.endswith("0.weight")]
    assert all(1.0 < d < 1.8 for d in diffs), diffs
    dbg.close()


def test_sorting_puts_missing_values_last() -> None:
    def st(key: str, std: float) -> stats.TensorStats:
        return stats.TensorStats(key, (4, 4), "float32", 16, 16, 0, 0, 0.0, std, std, 0, 0)

    rows = [Row("a", 0, st("a", 0.5)), Row("b", 1, st("b", float("nan"))),
            Row("c", 2, st("c", 2.0)), Row("d", 3)]
    assert [r.label for r in sort_rows(rows, "std")] == ["c", "a", "b", "d"]
    assert [r.label for r in sort_rows(rows, "name")] == ["a", "b", "c", "d"]
    flag_rows(rows, {"model.d"}, {"d": "model.d"})
    assert next(r.label for r in sort_rows(rows, "flags")) == "d"


def test_table_html_escapes_keys_from_the_file() -> None:
    hostile = "<img src=x onerror=alert(1)>"
    s = stats.TensorStats(hostile, (2,), "float32", 2, 2, 1, 0, 0.0, 0.0, 0.0, 0, 0)
    rows = [Row(hostile, 0, s)]
    flag_rows(rows, set(), {})
    html = table_html(rows, 1, 1)
    assert hostile not in html and "&lt;img src=x onerror=alert(1)&gt;" in html


def test_layer_chart_is_markers_over_module_names(sick) -> None:
    """A LayerNorm's weight (1) and bias (0) are two markers over one module name, not
    a saw-tooth line over file order; dtypes are in the legend; std on a log axis."""
    dbg, panel = _panel(*sick)
    fig = _valid(panel.layers.figure)
    traces = fig["data"]
    assert {t["mode"] for t in traces} == {"markers"}
    ck_mean = next(t for t in traces if t["yaxis"] == "y" and t["legendgroup"] == "checkpoint")
    assert ck_mean["name"] == "checkpoint (float32)"
    assert "blocks.3.1" in ck_mean["x"] and "blocks.3.1.weight" not in ck_mean["x"]
    at = [i for i, x in enumerate(ck_mean["x"]) if x == "blocks.3.1"]
    assert len(at) == 2 and sorted(ck_mean["y"][i] for i in at) == [0.0, 1.0]
    symbols = {ck_mean["text"][i]: ck_mean["marker"]["symbol"][i] for i in at}
    assert symbols == {"blocks.3.1.weight": "circle", "blocks.3.1.bias": "diamond"}
    assert fig["layout"]["yaxis2"]["type"] == "log"
    assert fig["layout"]["xaxis"]["type"] == "category"
    dbg.close()


def test_nonfinite_chart_shows_one_inf_beside_512_nan_on_a_log_axis() -> None:
    def st(key: str, nan: int, inf: int) -> stats.TensorStats:
        return stats.TensorStats(key, (1024,), "float32", 1024, 1024, nan, inf, 0.0, 1.0,
                                 1.0, 0, 0)

    fig = _valid(plots.nonfinite_figure([st("a", 512, 1), st("b", 0, 3)]))
    assert fig["layout"]["xaxis"]["type"] == "log"
    low, high = fig["layout"]["xaxis"]["range"]
    assert low < math.log10(1) and high > math.log10(512)
    nan, inf = fig["data"]
    assert (nan["name"], nan["x"]) == ("NaN", [512, None])  # a 0 is no bar, not log(0)
    assert (inf["name"], inf["x"]) == ("Inf", [1, 3])
    assert fig["layout"]["barmode"] == "group"


def test_histograms_give_each_side_its_own_bins_when_they_spread_apart() -> None:
    rng = np.random.default_rng(0)
    ck_values, model_values = rng.normal(0, 0.02, 20_000), rng.normal(0, 1.0, 20_000)
    hist = stats.histograms({"checkpoint": ck_values, "model": model_values})
    assert not hist.shared
    ck_edges, model_edges = hist.edges_of("checkpoint"), hist.edges_of("model")
    assert ck_edges[-1] - ck_edges[0] < 0.3 < model_edges[-1] - model_edges[0]
    # the narrow side keeps its shape: its counts spread over many of its bins
    assert (hist.counts["checkpoint"] > 100).sum() > 20
    assert hist.stds["checkpoint"] == pytest.approx(0.02, rel=0.05)
    fig = _valid(plots.histogram_figure(hist, "enc", dtypes={"checkpoint": "float16",
                                                             "model": "float32"}))
    ck_trace, model_trace = fig["data"]
    assert ck_trace["name"].startswith("checkpoint (float16)")
    assert model_trace["name"].startswith("model (float32)")
    assert model_trace["xaxis"] == "x2" and "xaxis2" in fig["layout"]
    logged = _valid(plots.histogram_figure(hist, "enc", log=True))
    assert logged["layout"]["yaxis"]["type"] == "log"
    assert logged["layout"]["yaxis2"]["type"] == "log"
    # alike: one shared set of bins, overlaid
    alike = stats.histograms({"checkpoint": model_values, "model": rng.normal(0, 1.2, 100)})
    assert alike.shared
    overlay = _valid(plots.histogram_figure(alike, "enc"))
    assert overlay["layout"]["barmode"] == "overlay"


def test_log_count_toggle_redraws_the_histogram(sick) -> None:
    dbg, panel = _panel(*sick)
    assert panel.hist.figure["layout"]["yaxis"]["type"] == "linear"
    panel.log.value = True
    assert panel.hist.figure["layout"]["yaxis"]["type"] == "log"
    dbg.close()


def test_charts_are_plotly_json_in_an_output_with_a_drawing_note(sick) -> None:
    dbg, panel = _panel(*sick)
    for holder in (panel.layers, panel.nonfinite, panel.hist):
        drawing, out = holder.box.children
        assert "Drawing chart…" in drawing.value and "ck-drawing" in drawing._dom_classes
        (output,) = out.outputs
        assert output["data"][plots.MIME] is holder.figure
        assert "ck-chart" in holder.box._dom_classes
        _valid(holder.figure)
    assert panel.kernel_seconds is not None and panel.kernel_seconds > 0
    dbg.close()


def test_the_warmup_output_before_the_first_visit_is_replaced(sick) -> None:
    path, model = sick
    dbg = ck.debug(path, model, background=False)
    (warm,) = [c for c in dbg.dist_tab.children if "ck-warmup" in c._dom_classes]
    assert plots.MIME in warm.outputs[0]["data"] and warm.layout.display == "none"
    dbg.open_distributions()
    dbg.wait()
    assert warm not in dbg.dist_tab.children and warm.comm is None  # closed
    dbg.close()


def test_template_keeps_backgrounds_transparent_for_either_theme() -> None:
    layout = plots.template()["layout"]
    assert layout["paper_bgcolor"] == layout["plot_bgcolor"] == "rgba(0,0,0,0)"
    _valid({"data": [], "layout": {"template": plots.template()}})


def test_stats_count_zeros_and_compare_aligned_samples() -> None:
    t = torch.tensor([0.0, 0.0, 1.0, float("nan")])
    s = stats.stats_of("w", t)
    assert s.zeros == 2 and s.zeros_pct == 50.0
    a = torch.randn(300, 300)
    b = a.clone()
    b[0, 0] += 1.0
    _, va, aligned_a = stats.sampled("a", a, 1000)
    _, vb, aligned_b = stats.sampled("b", b, 1000)
    assert aligned_a and aligned_b
    assert stats.difference(va, va) == 0.0
    assert 0.0 < stats.difference(va, vb) < 0.05  # one value of 90,000 moved
    assert 1.2 < stats.difference(va, stats.sample_tensor(torch.randn(300, 300), 1000)) < 1.6
    assert not stats.aligned(a.t(), 1000)  # a transposed view samples other positions
    assert math.isnan(stats.difference(va, va[:10]))


def test_dead_spares_biases_and_norm_parameters() -> None:
    def st(key: str, shape: tuple[int, ...], std: float, zeros: int, dtype: str = "float32"):
        n = int(np.prod(shape))
        return stats.TensorStats(key, shape, dtype, n, n, 0, 0, 0.0, std, 1.0, 0, 0,
                                 zeros=zeros)

    assert stats.dead(st("fc.weight", (4, 4), 0.0, 16)) == "all zeros"
    assert stats.dead(st("fc.weight", (4, 4), 0.0, 0)) == "constant"
    assert stats.dead(st("fc.bias", (4,), 0.0, 4)) == ""
    assert stats.dead(st("ln.weight", (4,), 0.0, 0)) == ""  # LayerNorm's ones
    assert stats.dead(st("ln.weight", (4,), 0.0, 4)) == "all zeros"
    assert stats.dead(st("ln.bias", (4,), 0.0, 4)) == ""
    assert stats.dead(st("steps", (4, 4), 0.0, 16, "int64")) == ""
    fam = [st(f"blocks.{i}.fc.weight", (4, 4), s, 0) for i, s in enumerate((0.1, 0.1, 5.0))]
    assert stats.exploding(fam) == {"blocks.2.fc.weight": pytest.approx(50.0)}
    assert stats.exploding(fam[:2]) == {}  # two are no family
    assert stats.family("blocks.12.mlp.0.weight") == "blocks.*.mlp.*.weight"
