"""The Distributions tab: sampled statistics of checkpoint vs model, pointing at problems.

Built the first time the tab is opened; statistics are computed on a background thread
(bounded samples through :mod:`ckwidget.stats`) while a progress bar moves. The tab
leads with a sortable per-tensor table whose rows are flagged the way weightlens flags
them (non-finite values; dead: all zeros or constant; exploding variance: std far above
its layer family's; kept at its initial value by the plan), then the per-tensor chart,
the NaN/Inf chart and the histogram of one tensor or module. Charts are plotly JSON
drawn by the front end (see plots.py).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import ipywidgets as w
import numpy as np

from .. import stats
from ..comparison import OVERVIEW_SAMPLE, Comparison, Row, sort_rows
from ..formatting import shape_text
from .plots import (
    FigureHolder,
    histogram_figure,
    layer_figure,
    nonfinite_figure,
    nonfinite_note,
)
from .style import esc

if TYPE_CHECKING:  # pragma: no cover
    from .widget import CheckpointDebugger

TABLE_ROWS = 100  # rows the table shows at most (sort or filter for others)

SORTS = (
    ("problems first", "flags"), ("file order", "order"), ("name", "name"),
    ("std, largest first", "std"), ("abs-max, largest first", "absmax"),
    ("zeros %, most first", "zeros"), ("NaN/Inf, most first", "nonfinite"),
    ("checkpoint vs model, most different first", "diff"),
)


class DistributionsPanel:
    def __init__(self, dbg: CheckpointDebugger) -> None:
        self._opened = time.perf_counter()
        self.kernel_seconds: float | None = None  # open -> every chart sent (first time)
        self.dbg = dbg
        self.comparison = Comparison(dbg.report, dbg.model)
        self.pairs = self.comparison.pairs
        self.overview: list[stats.TensorStats] = []
        self.model_overview: dict[str, stats.TensorStats] = {}
        self.rows: list[Row] = []
        self.progress = w.IntProgress(value=0, min=0, max=1, layout=w.Layout(width="260px"))
        self.progress.add_class("ck-progress")
        self.status = w.HTML("")
        self.status.add_class("ck-dist-status")
        self.sort = w.Dropdown(options=SORTS, value="flags", description="Sort by",
                               style={"description_width": "initial"},  # flush left
                               layout=w.Layout(width="320px"))
        self.sort.add_class("ck-dist-sort")
        self.flagged_only = w.Checkbox(value=False, description="flagged rows only",
                                       indent=False, layout=w.Layout(width="auto"))
        self.flagged_only.add_class("ck-dist-flagged")
        self.table_html = w.HTML("")
        self.table_html.add_class("ck-dist-table")
        first = self.pairs[0][0] if self.pairs else ""
        self.chooser = w.Combobox(
            value=first, placeholder="key or module, e.g. encoder.layers.0",
            options=[p[0] for p in self.pairs[:30]], ensure_option=False,
            layout=w.Layout(width="420px"),
        )
        self.chooser.add_class("ck-dist-key")
        self.plot_button = w.Button(description="Plot", icon="bar-chart")
        self.plot_button.add_class("ck-dist-plot")
        self.log = w.ToggleButtons(options=[("count", False), ("log count", True)],
                                   value=False, style={"button_width": "auto"})
        self.log.add_class("ck-dist-log")
        self.hist = FigureHolder("ck-hist")
        self.layers = FigureHolder("ck-layers")
        self.nonfinite = FigureHolder("ck-nonfinite")
        self.last_histogram: stats.Histogram | None = None  # the one shown, once drawn
        self._hist_name = ""
        self._hist_dtypes: dict[str, str] = {}
        self.plot_button.on_click(dbg._guard(lambda _b: self.plot(self.chooser.value)))
        self.chooser.observe(dbg._guard(self._suggest), names="value")
        self.sort.observe(dbg._guard(lambda _c: self.render_table()), names="value")
        self.flagged_only.observe(dbg._guard(lambda _c: self.render_table()), names="value")
        self.log.observe(dbg._guard(lambda _c: self._draw_histogram()), names="value")
        self.box = w.VBox([
            w.HBox([self.progress, self.status], layout=w.Layout(align_items="center")),
            w.HTML("<b>Tensors</b> <span class='ck-hint'>(sampled values; flagged: "
                   "NaN/Inf, dead = all zeros or constant, exploding = std over "
                   f"{stats.EXPLODING_FACTOR:g}× its layer family's, kept at initial "
                   "value by the plan)</span>"),
            w.HBox([self.sort, self.flagged_only], layout=w.Layout(align_items="center")),
            self.table_html,
            w.HTML("<b>Across the model</b>"),
            self.layers.box,
            self.nonfinite.box,
            w.HTML("<b>Values of one tensor or module</b> <span class='ck-hint'>"
                   "(checkpoint vs the model's current values, sampled)</span>"),
            w.HBox([self.chooser, self.plot_button, self.log],
                   layout=w.Layout(align_items="center")),
            self.hist.box,
        ])
        self.box.add_class("ck-distributions")

    # -- keys --------------------------------------------------------------------------
    def _suggest(self, change: Any) -> None:
        text = str(change["new"]).strip().lower()
        if not text:
            return
        hits = [p[0] for p in self.pairs if text in p[0].lower()][:30]
        self.chooser.options = hits

    # -- work --------------------------------------------------------------------------
    def start(self) -> None:
        """Compute the overview (table, per-layer stats, NaN/Inf) and the first histogram."""
        chosen = self.comparison.chosen()
        self.progress.max = max(1, len(chosen))
        self.progress.value = 0
        self.progress.layout.display = None
        total = len(self.pairs)
        label = (f"{len(chosen):,} of {total:,} tensors" if len(chosen) < total
                 else f"{total:,} tensors")
        self.status.value = f"<span class='ck-hint'>Sampling {esc(label)}…</span>"

        def work() -> list[Row]:
            def moved(n: int) -> None:  # about 25 moves: each is a message to the page
                self.progress.value = n

            return self.comparison.rows(chosen, cancelled=self.dbg._jobs.cancelled.is_set,
                                        progress=moved)

        def done(rows: list[Row]) -> None:
            self.rows = rows
            self.overview = [r.ckpt for r in rows if r.ckpt is not None]
            self.model_overview = {r.label: r.model for r in rows if r.model is not None}
            self.progress.layout.display = "none"
            self.render_table()
            flagged = [r.label for r in rows if r.flags]
            self.layers.show(layer_figure(self.overview, self.model_overview, None, flagged))
            note = nonfinite_note(self.overview)
            if note is None:
                self.nonfinite.show(nonfinite_figure(self.overview))
            else:
                self.nonfinite.note(note)
            self.status.value = (f"<span class='ck-hint'>Sampled {esc(label)} "
                                 f"(up to {OVERVIEW_SAMPLE:,} values each).</span>")
            if self.chooser.value:
                self.plot(self.chooser.value)
            else:
                self._sent()

        self.dbg._jobs.submit("overview", work, done)

    def _sent(self) -> None:
        if self.kernel_seconds is None:
            self.kernel_seconds = time.perf_counter() - self._opened

    def render_table(self) -> None:
        """The per-tensor table, in the chosen order (flagged rows only when ticked)."""
        rows = sort_rows(self.rows, self.sort.value)
        if self.flagged_only.value:
            rows = [r for r in rows if r.flags]
        self.table_html.value = table_html(rows, len(self.rows), len(self.pairs))

    def samples(self, name: str) -> dict[str, np.ndarray]:
        """Sampled values of a key, or of every tensor under a module, for both sides."""
        return self._samples(name)[0]

    def _samples(self, name: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
        """:meth:`samples`, and the dtypes of each side (``"float16"``, ``"float16,
        float32"`` for a module of mixed dtypes)."""
        from .plots import dtype_words

        values, dtypes = self.comparison.samples(
            name, cancelled=self.dbg._jobs.cancelled.is_set)
        return values, {side: dtype_words(d) for side, d in dtypes.items()}

    def plot(self, name: str) -> None:
        """Histogram of checkpoint vs model values for a key or module (background)."""
        name = str(name).strip()
        if not name:
            return
        self.status.value = f"<span class='ck-hint'>Sampling {esc(name)}…</span>"

        def work() -> Any:
            samples, dtypes = self._samples(name)
            if not samples:
                raise ValueError(f"{name!r} has no readable values on either side.")
            return stats.histograms(samples), dtypes

        def done(result: tuple[stats.Histogram, dict[str, str]]) -> None:
            self.last_histogram, self._hist_dtypes = result
            self._hist_name = name
            self._draw_histogram()
            self.status.value = ""
            self._sent()

        self.dbg._jobs.submit("histogram", work, done)

    def _draw_histogram(self) -> None:
        if self.last_histogram is None:
            return
        self.hist.show(histogram_figure(self.last_histogram, self._hist_name,
                                        log=bool(self.log.value), dtypes=self._hist_dtypes))

    def model_changed(self) -> None:
        """The model's values changed (a fix was applied): redraw its side."""
        self.start()


# -- the table ---------------------------------------------------------------------------
COLUMNS = ("flags", "tensor", "dtype", "shape", "mean", "std", "abs-max", "zeros %",
           "NaN / Inf", "vs model")
FLAG_TITLES = {
    "nonfinite": "sampled values hold NaN or Inf",
    "dead": "a weight whose sampled values are all 0 or all equal",
    "exploding": f"std over {stats.EXPLODING_FACTOR:g}x the median of its layer family "
                 "(the same key in the other layers)",
    "initial": "the plan leaves the model's tensor at its initial value",
}


def table_html(rows: list[Row], sampled: int, total: int, limit: int = TABLE_ROWS) -> str:
    """The per-tensor table as HTML (every string from the file escaped)."""
    flagged = sum(1 for r in rows if r.flags)
    counts: dict[str, int] = {}
    for r in rows:
        for word, _text in r.flags:
            counts[word] = counts.get(word, 0) + 1
    names = {"nonfinite": "NaN/Inf", "dead": "dead", "exploding": "exploding",
             "initial": "kept at initial value"}  # in the line above the table
    summary = ", ".join(f"{n:,} {names[w]}" for w, n in counts.items())
    head = (f"{sampled:,} of {total:,} tensors sampled" if sampled < total
            else f"{total:,} tensors sampled")
    head += f"; {flagged:,} flagged ({summary})." if flagged else "; none flagged."
    body = []
    for r in rows[:limit]:
        s = r.shown
        cls = " class='ck-flagged'" if r.flags else ""
        flags = " ".join(f"<span class='ck-flag ck-flag-{w}' title='{FLAG_TITLES[w]}'>"
                         f"{esc(t)}</span>" for w, t in r.flags
                         ) or "<span class='ck-none'>–</span>"
        side = "" if r.ckpt is not None or s is None else " <span class='ck-alias'>(model)</span>"
        if s is None:
            cells = ["<td colspan='7' class='ck-none'>no values on either side</td>"]
        else:
            dtype = s.dtype
            if r.ckpt is not None and r.model is not None and r.model.dtype != s.dtype:
                dtype = f"{s.dtype} → {r.model.dtype}"
            bad = max(r.ckpt.nonfinite if r.ckpt else 0, r.model.nonfinite if r.model else 0)
            nan_inf = (f"{max(r.ckpt.nan if r.ckpt else 0, r.model.nan if r.model else 0):,}"
                       f" / {max(r.ckpt.inf if r.ckpt else 0, r.model.inf if r.model else 0):,}"
                       if bad else "0")
            err = f" <span class='ck-alias'>{esc(s.error)}</span>" if s.error else ""
            cells = [
                f"<td class='ck-dtype'>{esc(dtype)}</td>",
                f"<td class='ck-sh'>{esc(shape_text(s.shape))}</td>",
                f"<td class='ck-num'>{_fmt(s.mean)}{err}</td>",
                f"<td class='ck-num'>{_fmt(s.std)}</td>",
                f"<td class='ck-num'>{_fmt(s.absmax)}</td>",
                f"<td class='ck-num'>{_pct(s.zeros_pct)}</td>",
                f"<td class='ck-num'>{nan_inf}</td>",
                f"<td class='ck-num ck-diff' title='relative RMS difference of the "
                f"sampled values: 0 same, about 1.4 unrelated'>{_diff(r)}</td>",
            ]
        key = esc(r.label).replace(".", ".<wbr>")  # long keys wrap at their dots
        body.append(f"<tr{cls}><td>{flags}</td><td class='ck-key'>{key}{side}"
                    f"</td>{''.join(cells)}</tr>")
    more = (f"<div class='ck-hint'>{len(rows) - limit:,} more rows not shown.</div>"
            if len(rows) > limit else "")
    header = "".join(f"<th>{c}</th>" for c in COLUMNS)
    return (f"<div class='ck-hint ck-dist-summary'>{esc(head)}</div>"
            f"<div class='ck-table ck-dist-grid'><table class='ck-table-grid'>"
            f"<thead><tr>{header}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"
            f"{more}")


def _fmt(v: float) -> str:
    if v != v:
        return "<span class='ck-none'>–</span>"
    return f"{v:.3g}"


def _pct(v: float) -> str:
    if v != v:
        return "<span class='ck-none'>–</span>"
    return "0" if v == 0 else f"{v:.1f}" if v >= 0.1 else "<0.1"


def _diff(r: Row) -> str:
    if r.ckpt is None or r.model is None:
        return "<span class='ck-none'>one side</span>"
    if r.ckpt.shape != r.model.shape:
        return "<span class='ck-none'>shapes differ</span>"
    if r.diff != r.diff:
        return "<span class='ck-none'>–</span>"
    return "same" if r.diff == 0 else f"{r.diff:.2g}"
