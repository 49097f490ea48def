"""The Distributions tab: sampled statistics of checkpoint vs model, drawn with plotly.

Built the first time the tab is opened; statistics are computed on a background thread
(bounded samples through :mod:`ckwidget.stats`) while a progress bar moves.
"""

from __future__ import annotations

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
HIST_SAMPLE = stats.MAX_ELEMENTS  # elements per side for a chosen key or module
MODULE_TENSORS = 64  # tensors pooled for a chosen module


class DistributionsPanel:
    def __init__(self, dbg: CheckpointDebugger) -> None:
        self.dbg = dbg
        report = dbg.report
        self.ckpt = report.checkpoint
        self.entry = getattr(report, "entry", None)
        self._members: dict[str, str] | None = None
        self.pairs = _pairs(report)
        self.overview: list[stats.TensorStats] = []
        self.model_overview: dict[str, stats.TensorStats] = {}
        self.progress = w.IntProgress(value=0, min=0, max=1, layout=w.Layout(width="260px"))
        self.progress.add_class("ck-progress")
        self.status = w.HTML("")
        self.status.add_class("ck-dist-status")
        first = self.pairs[0][0] if self.pairs else ""
        self.chooser = w.Combobox(
            value=first, placeholder="key or module, e.g. encoder.layers.0",
            options=[p[0] for p in self.pairs[:30]], ensure_option=False,
            layout=w.Layout(width="420px"),
        )
        self.chooser.add_class("ck-dist-key")
        self.plot_button = w.Button(description="Plot", icon="bar-chart")
        self.plot_button.add_class("ck-dist-plot")
        self.hist = FigureHolder("ck-hist")
        self.layers = FigureHolder("ck-layers")
        self.nonfinite = FigureHolder("ck-nonfinite")
        self.last_histogram: stats.Histogram | None = None  # the one shown, once drawn
        self.plot_button.on_click(dbg._guard(lambda _b: self.plot(self.chooser.value)))
        self.chooser.observe(dbg._guard(self._suggest), names="value")
        self.box = w.VBox([
            w.HBox([self.progress, self.status], layout=w.Layout(align_items="center")),
            w.HTML("<b>Values of one tensor or module</b> <span class='ck-hint'>"
                   "(checkpoint vs the model's current values, sampled)</span>"),
            w.HBox([self.chooser, self.plot_button]),
            self.hist.box,
            w.HTML("<b>Across the model</b>"),
            self.layers.box,
            self.nonfinite.box,
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

    # -- work --------------------------------------------------------------------------
    def start(self) -> None:
        """Compute the overview (per-layer stats, NaN/Inf) and the first histogram."""
        chosen = _spread(self.pairs, OVERVIEW_TENSORS)
        self.progress.max = max(1, len(chosen))
        self.progress.value = 0
        self.progress.layout.display = None
        total = len(self.pairs)
        label = (f"{len(chosen):,} of {total:,} tensors" if len(chosen) < total
                 else f"{total:,} tensors")
        self.status.value = f"<span class='ck-hint'>Sampling {esc(label)}…</span>"

        def work() -> tuple[list[stats.TensorStats], dict[str, stats.TensorStats]]:
            model_sd = stats.model_tensors(self.dbg.model, [m for _, _, m in chosen if m])
            ck_stats: list[stats.TensorStats] = []
            model_stats: dict[str, stats.TensorStats] = {}
            for i, (label, ck_key, model_key) in enumerate(chosen):
                if self.dbg._jobs.cancelled.is_set():
                    break  # the debugger was closed
                full = self.full_key(ck_key) if ck_key else None
                if full is not None:
                    s = stats.checkpoint_stats(self.ckpt, full, OVERVIEW_SAMPLE)
                    ck_stats.append(_relabel(s, label))
                if model_key and model_key in model_sd:
                    model_stats[label] = stats.stats_of(label, model_sd[model_key],
                                                        OVERVIEW_SAMPLE)
                self.progress.value = i + 1
            return ck_stats, model_stats

        def done(result: tuple[list[stats.TensorStats], dict[str, stats.TensorStats]]) -> None:
            self.overview, self.model_overview = result
            self.progress.layout.display = "none"
            labels = {s.key: s.key for s in self.overview}
            self.layers.show(layer_figure(self.overview, self.model_overview, labels))
            note = nonfinite_note(self.overview)
            if note is None:
                self.nonfinite.show(nonfinite_figure(self.overview))
            else:
                self.nonfinite.note(note)
            self.status.value = (f"<span class='ck-hint'>Sampled {esc(label)} "
                                 f"(up to {OVERVIEW_SAMPLE:,} values each).</span>")
            if self.chooser.value:
                self.plot(self.chooser.value)

        self.dbg._jobs.submit("overview", work, done)

    def samples(self, name: str) -> dict[str, np.ndarray]:
        """Sampled values of a key, or of every tensor under a module, for both sides."""
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
        for _label, ck_key, model_key in members:
            if self.dbg._jobs.cancelled.is_set():
                break  # the debugger was closed
            full = self.full_key(ck_key) if ck_key else None
            if full is not None:
                try:
                    ck_parts.append(stats.checkpoint_sample(self.ckpt, full, per))
                except CheckpointChangedError:
                    raise  # no tensor of the file can be read: say so, not a one-sided plot
                except Exception:  # an unreadable tensor is skipped
                    pass
            if model_key and model_key in model_sd:
                try:
                    model_parts.append(stats.sample_tensor(model_sd[model_key], per))
                except (ValueError, RuntimeError):
                    pass
        out: dict[str, np.ndarray] = {}
        if ck_parts:
            out["checkpoint"] = np.concatenate(ck_parts)
        if model_parts:
            out["model"] = np.concatenate(model_parts)
        return out

    def plot(self, name: str) -> None:
        """Histogram of checkpoint vs model values for a key or module (background)."""
        name = str(name).strip()
        if not name:
            return
        self.status.value = f"<span class='ck-hint'>Sampling {esc(name)}…</span>"

        def work() -> Any:
            samples = self.samples(name)
            if not samples:
                raise ValueError(f"{name!r} has no readable values on either side.")
            return stats.shared_histogram(samples)

        def done(hist: stats.Histogram) -> None:
            self.last_histogram = hist
            self.hist.show(histogram_figure(hist, name))
            self.status.value = ""

        self.dbg._jobs.submit("histogram", work, done)

    def model_changed(self) -> None:
        """The model's values changed (a fix was applied): redraw its side."""
        self.start()


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
