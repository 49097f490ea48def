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

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import ipywidgets as w
import numpy as np

from .. import stats
from ..errors import CheckpointChangedError
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

OVERVIEW_TENSORS = 256  # tensors in the per-layer chart (evenly spread over the file)
OVERVIEW_SAMPLE = 4096  # elements sampled per tensor for the per-layer chart
PRIORITY_TENSORS = 64  # tensors the report already suspects, sampled first
HIST_SAMPLE = stats.MAX_ELEMENTS  # elements per side for a chosen key or module
MODULE_TENSORS = 64  # tensors pooled for a chosen module
TABLE_ROWS = 100  # rows the table shows at most (sort or filter for others)

INITIAL = "initial value"  # report.provenance.model[key] for a tensor the plan leaves

SORTS = (
    ("problems first", "flags"), ("file order", "order"), ("name", "name"),
    ("std, largest first", "std"), ("abs-max, largest first", "absmax"),
    ("zeros %, most first", "zeros"), ("NaN/Inf, most first", "nonfinite"),
    ("checkpoint vs model, most different first", "diff"),
)


@dataclass
class Row:
    """One tensor of the table: its stats on each side, their difference, its flags."""

    label: str
    order: int
    ckpt: stats.TensorStats | None = None
    model: stats.TensorStats | None = None
    diff: float = float("nan")  # relative RMS difference of the aligned samples
    flags: list[tuple[str, str]] = field(default_factory=list)  # (css word, text)

    @property
    def shown(self) -> stats.TensorStats | None:
        """The stats the row shows: the checkpoint's, or the model's when it has none."""
        return self.ckpt if self.ckpt is not None else self.model


def flag_rows(rows: list[Row], kept_initial: set[str], model_keys: dict[str, str]) -> None:
    """Set each row's flags: ``nonfinite``, ``dead`` (all zeros / constant),
    ``exploding`` (std over 10x its layer family's median), ``initial`` (the plan leaves
    the model's tensor at its initial value). ``model_keys`` maps label to model key."""
    shown = [r.shown for r in rows if r.shown is not None]
    exploding = stats.exploding(shown)
    for r in rows:
        r.flags = []
        s = r.shown
        if s is not None:
            bad = [side for side, x in (("checkpoint", r.ckpt), ("model", r.model))
                   if x is not None and x.nonfinite]
            if bad:
                where = {1: "" if bad == ["checkpoint"] else " in model", 2: " (both)"}
                r.flags.append(("nonfinite", "NaN/Inf" + where[len(bad)]))
            word = stats.dead(s)
            if word:
                r.flags.append(("dead", f"dead: {word}"))
            if s.key in exploding:
                r.flags.append(("exploding", f"exploding ×{exploding[s.key]:.0f}"))
        if model_keys.get(r.label) in kept_initial:
            r.flags.append(("initial", "initial value"))


def sort_rows(rows: list[Row], by: str) -> list[Row]:
    """Rows in the order the table's sort menu names; values that are missing last."""
    def num(value: float | None, descending: bool = True) -> tuple[int, float]:
        if value is None or not math.isfinite(value):
            return (1, 0.0)
        return (0, -value if descending else value)

    def of(r: Row, attr: str) -> float | None:
        s = r.shown
        return None if s is None else getattr(s, attr)

    keys = {
        "order": lambda r: r.order,
        "name": lambda r: r.label,
        "flags": lambda r: (-len(r.flags), r.order),
        "std": lambda r: num(of(r, "std")),
        "absmax": lambda r: num(of(r, "absmax")),
        "zeros": lambda r: num(of(r, "zeros_pct")),
        "nonfinite": lambda r: num(max(r.ckpt.nonfinite if r.ckpt else 0,
                                       r.model.nonfinite if r.model else 0) or None),
        "diff": lambda r: num(r.diff),
    }
    return sorted(rows, key=keys.get(by, keys["flags"]))


class DistributionsPanel:
    def __init__(self, dbg: CheckpointDebugger) -> None:
        self._opened = time.perf_counter()
        self.kernel_seconds: float | None = None  # open -> every chart sent (first time)
        self.dbg = dbg
        report = dbg.report
        self.ckpt = report.checkpoint
        self.entry = getattr(report, "entry", None)
        self._members: dict[str, str] | None = None
        from ..gcpause import gc_paused

        with gc_paused(promote=True):  # 100,000 tuples that live as long as the tab
            self.pairs = _pairs(report)
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
    def full_key(self, ckpt_key: str) -> str | None:
        """The checkpoint's full dotted key for a key of the table (container-relative)."""
        if self._members is None:
            self._members = self.ckpt.members(self.entry)
        if ckpt_key in self._members:
            return self._members[ckpt_key]
        return ckpt_key if ckpt_key in self.ckpt.tensors else None

    def _suggest(self, change: Any) -> None:
        text = str(change["new"]).strip().lower()
        if not text:
            return
        hits = [p[0] for p in self.pairs if text in p[0].lower()][:30]
        self.chooser.options = hits

    def _kept_initial(self) -> set[str]:
        prov = getattr(self.dbg.report, "provenance", None)
        model = getattr(prov, "model", None) or {}
        return {k for k, where in model.items() if where == INITIAL}

    def _chosen(self) -> list[tuple[int, tuple[str, str, str]]]:
        """(file position, pair): the tensors the report suspects (NaN/Inf found while
        diagnosing, kept at initial value), then an even spread of the rest."""
        bad = self.dbg.report.finding("nonfinite") if hasattr(self.dbg.report,
                                                              "finding") else None
        suspect_ck = set(bad.keys) if bad is not None else set()
        kept = self._kept_initial()
        first: list[int] = []
        if suspect_ck or kept:
            for i, (_label, ck, mk) in enumerate(self.pairs):
                if ck in suspect_ck or mk in kept:
                    first.append(i)
                    if len(first) >= PRIORITY_TENSORS:
                        break
        spread = _spread(list(range(len(self.pairs))), OVERVIEW_TENSORS)
        picked = sorted(set(first) | set(spread))
        if len(picked) > OVERVIEW_TENSORS + PRIORITY_TENSORS:  # pragma: no cover
            picked = picked[:OVERVIEW_TENSORS + PRIORITY_TENSORS]
        return [(i, self.pairs[i]) for i in picked]

    # -- work --------------------------------------------------------------------------
    def start(self) -> None:
        """Compute the overview (table, per-layer stats, NaN/Inf) and the first histogram."""
        chosen = self._chosen()
        self.progress.max = max(1, len(chosen))
        self.progress.value = 0
        self.progress.layout.display = None
        total = len(self.pairs)
        label = (f"{len(chosen):,} of {total:,} tensors" if len(chosen) < total
                 else f"{total:,} tensors")
        self.status.value = f"<span class='ck-hint'>Sampling {esc(label)}…</span>"

        def work() -> list[Row]:
            model_sd = stats.model_tensors(self.dbg.model, [p[2] for _, p in chosen if p[2]])
            rows: list[Row] = []
            # the bar moves in about 25 steps: each move is a message to the front end
            stride = max(1, len(chosen) // 25)
            for n, (order, (label, ck_key, model_key)) in enumerate(chosen):
                if self.dbg._jobs.cancelled.is_set():
                    break  # the debugger was closed
                row = Row(label, order)
                ck_values = model_values = None
                ck_aligned = model_aligned = False
                full = self.full_key(ck_key) if ck_key else None
                if full is not None:
                    s, ck_values, ck_aligned = stats.checkpoint_sampled(
                        self.ckpt, full, OVERVIEW_SAMPLE)
                    row.ckpt = _relabel(s, label)
                if model_key and model_key in model_sd:
                    s, model_values, model_aligned = stats.sampled(
                        label, model_sd[model_key], OVERVIEW_SAMPLE)
                    row.model = s
                if (ck_aligned and model_aligned and ck_values is not None
                        and model_values is not None and row.ckpt.shape == row.model.shape):
                    row.diff = stats.difference(ck_values, model_values)
                rows.append(row)
                if n == 0 or (n + 1) % stride == 0 or n + 1 == len(chosen):
                    self.progress.value = n + 1
            flag_rows(rows, self._kept_initial(), {p[0]: p[2] for _, p in chosen})
            return rows

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

        name = name.strip()
        exact = [p for p in self.pairs if p[0] == name]
        members = exact or [p for p in self.pairs if p[0].startswith(name + ".")]
        if not members:
            raise KeyError(f"No key or module named {name!r} in the table.")
        members = _spread(members, MODULE_TENSORS)
        per = max(1, HIST_SAMPLE // len(members))
        model_sd = stats.model_tensors(self.dbg.model, [m for _, _, m in members if m])
        ck_parts: list[np.ndarray] = []
        model_parts: list[np.ndarray] = []
        ck_dtypes: list[str] = []
        model_dtypes: list[str] = []
        for _label, ck_key, model_key in members:
            if self.dbg._jobs.cancelled.is_set():
                break  # the debugger was closed
            full = self.full_key(ck_key) if ck_key else None
            if full is not None:
                try:
                    ck_parts.append(stats.checkpoint_sample(self.ckpt, full, per))
                    ck_dtypes.append(self.ckpt.tensors[full].dtype)
                except CheckpointChangedError:
                    raise  # no tensor of the file can be read: say so, not a one-sided plot
                except Exception:  # an unreadable tensor is skipped
                    pass
            if model_key and model_key in model_sd:
                try:
                    t = model_sd[model_key]
                    model_parts.append(stats.sample_tensor(t, per))
                    model_dtypes.append(str(t.dtype).removeprefix("torch."))
                except (ValueError, RuntimeError):
                    pass
        out: dict[str, np.ndarray] = {}
        dtypes: dict[str, str] = {}
        if ck_parts:
            out["checkpoint"] = np.concatenate(ck_parts)
            dtypes["checkpoint"] = dtype_words(ck_dtypes)
        if model_parts:
            out["model"] = np.concatenate(model_parts)
            dtypes["model"] = dtype_words(model_dtypes)
        return out, dtypes

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
                f"<td class='ck-sh'>{esc(_shape(s.shape))}</td>",
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


def _shape(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def _pairs(report: Any) -> list[tuple[str, str, str]]:
    """(label, checkpoint key, model key) per table row, in table order: from the
    report's column lists (the tab is opened on the UI path; a DataFrame of 100,000 rows
    is not needed for three columns), or its table when it has no columns."""
    columns = getattr(report, "columns", None)
    if isinstance(columns, dict) and "key" in columns:
        keys = columns["key"]

        def col(name: str) -> list[Any]:
            return columns.get(name) or [None] * len(keys)
    else:
        table = report.table
        keys = table["key"].tolist() if "key" in table.columns else []

        def col(name: str) -> list[Any]:
            return table[name].tolist() if name in table.columns else [None] * len(keys)

    cks = [c if c.__class__ is str else "" for c in col("checkpoint_key")]
    mks = [m if m.__class__ is str else "" for m in col("model_key")]
    return list(zip(map(str, keys), cks, mks))


def _spread(items: list[Any], limit: int) -> list[Any]:
    """At most ``limit`` items, evenly spread over the list (first and last kept)."""
    if len(items) <= limit:
        return list(items)
    idx = np.linspace(0, len(items) - 1, limit).round().astype(int)
    return [items[i] for i in sorted(set(idx.tolist()))]


def _relabel(s: stats.TensorStats, label: str) -> stats.TensorStats:
    from dataclasses import replace

    return replace(s, key=label)
