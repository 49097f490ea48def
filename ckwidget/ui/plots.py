"""Plotly figures for the Distributions tab, built from :mod:`ckwidget.stats` results.

Why plain dicts: the figures are drawn by the front end's own plotly renderer (the
``application/vnd.plotly.v1+json`` mime type, which JupyterLab, Notebook 7, VS Code and
Colab render natively), so plotly's JavaScript loads once per page from the front
end's extension instead of travelling over the websocket with every ``FigureWidget``
(5 MB each). A figure is a plotly JSON dict, a pure function of numbers: testable
without a front end, and ``plotly.graph_objects.Figure(fig)`` when a user wants one.

Theme: the figures carry a transparent template; their text, grid and axis colours
come from JupyterLab's CSS variables (style.py), so they follow the light or dark theme,
switched live too. The trace colours keep 3:1 against both themes' backgrounds.
"""

from __future__ import annotations

import html
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from ..stats import Histogram, TensorStats

MIME = "application/vnd.plotly.v1+json"
CKPT_COLOUR = "#2f7ed8"  # 4.1:1 on white, 3.9:1 on JupyterLab Dark's #212121
MODEL_COLOUR = "#d9730d"  # 3.3:1 and 4.9:1
NAN_COLOUR = "#e53935"
INF_COLOUR = "#a259d9"
SIDE_COLOURS = {"checkpoint": CKPT_COLOUR, "model": MODEL_COLOUR}
GRID = "rgba(128, 128, 128, 0.28)"  # reads on both themes; style.py sets it per theme
FALLBACK_TEXT = ("A plotly chart. This front end does not draw plotly's mime type; "
                 "JupyterLab, Notebook 7, VS Code and Colab do (with plotly installed).")
# symbols per leaf in the per-tensor chart, so a module's weight and bias can be told apart
SYMBOLS = {"weight": "circle", "bias": "diamond", "running_mean": "triangle-up",
           "running_var": "triangle-down"}
OTHER_SYMBOL = "square"


def esc(text: str) -> str:
    """Plotly renders a subset of HTML in labels; keys from files must stay text."""
    return html.escape(str(text), quote=False)


def plotly_warmup() -> Any:
    """A hidden ``Output`` holding an empty plotly figure, for the Distributions tab's
    place before its first visit: the front end's plotly renderer parses plotly.js (5 MB,
    about a second on a slow machine, once per page) while the user reads the diagnosis,
    not after the click on the tab. The tab's panel replaces (and closes) it."""
    import ipywidgets as w

    out = w.Output(layout=w.Layout(display="none"))
    out.add_class("ck-warmup")
    fig = {"data": [], "layout": {"width": 10, "height": 10, "xaxis": {"visible": False},
                                  "yaxis": {"visible": False}}}
    out.outputs = ({"output_type": "display_data", "metadata": {},
                    "data": {MIME: fig, "text/plain": ""}},)
    return out


def template() -> dict[str, Any]:
    """Transparent backgrounds and neutral grids, over either JupyterLab theme; the
    text colours are set from the theme's CSS variables (``.ck-chart`` in style.py)."""
    axis = dict(gridcolor=GRID, zerolinecolor=GRID, linecolor=GRID, automargin=True)
    return dict(layout=dict(
        paper_bgcolor="rgba(0,0,0,0)", plot_bgcolor="rgba(0,0,0,0)",
        font=dict(size=12), xaxis=axis, yaxis=axis,
        legend=dict(bgcolor="rgba(0,0,0,0)"),
        hoverlabel=dict(namelength=-1),
        modebar=dict(bgcolor="rgba(0,0,0,0)", color="rgba(128,128,128,0.75)",
                     activecolor="rgba(128,128,128,1)"),
    ))


def _figure(data: list[dict[str, Any]], **layout: Any) -> dict[str, Any]:
    base = dict(template=template(), margin=dict(l=60, r=20, t=40, b=40))
    base.update(layout)
    return {"data": data, "layout": base}


def _num(v: float) -> float | None:
    """A JSON-safe number to 4 significant digits (a chart's precision, a third of the
    bytes): NaN and Inf become gaps (None)."""
    v = float(v)
    return float(f"{v:.4g}") if math.isfinite(v) else None


def _positive(v: float) -> float | None:
    """For a log axis: a gap where the value is 0, negative or not finite."""
    v = float(v)
    return float(f"{v:.4g}") if math.isfinite(v) and v > 0 else None


def log_axis(values: Iterable[float | None]) -> dict[str, Any]:
    """A log axis whose labels stay readable: a label per decade over a wide range,
    at 1, 2, 5 (times a power of ten) over a narrow one, where a decade would show one
    label or none."""
    positive = [v for v in values if v is not None and v > 0]
    axis: dict[str, Any] = dict(type="log")
    if not positive:
        return axis
    lo, hi = min(positive), max(positive)
    decades = math.log10(hi / lo)
    if decades >= 1.5:
        return dict(axis, dtick=1, exponentformat="power")
    if decades >= 0.6:
        start, end = math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1
        vals = [m * 10.0 ** e for e in range(start, end + 1) for m in (1, 2, 5)]
    else:  # under a factor of 4: evenly spaced round values, as a linear axis has
        step = _nice_step((hi - lo) / 4 or hi / 4)
        first = math.floor(lo / step) - 1
        vals = [(first + i) * step for i in range(int((hi - lo) / step) + 4)]
        vals = [v for v in vals if v > 0]
    return dict(axis, tickmode="array", tickvals=vals,
                ticktext=[f"{v:.3g}" for v in vals])


def _nice_step(raw: float) -> float:
    power = 10.0 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


def dtype_words(dtypes: Iterable[str]) -> str:
    """"float16" or "float16, float32" (commonest first): the dtypes a legend names."""
    counts = Counter(d for d in dtypes if d)
    return ", ".join(d for d, _ in counts.most_common(3)) + (", …" if len(counts) > 3 else "")


def _side_name(side: str, dtypes: str) -> str:
    return f"{side} ({esc(dtypes)})" if dtypes else side


# -- one tensor or module --------------------------------------------------------------
def histogram_figure(hist: Histogram, title: str, *, log: bool = False,
                     dtypes: dict[str, str] | None = None) -> dict[str, Any]:
    """Checkpoint vs model values: overlaid over shared bins when they spread alike,
    else side by side, each over its own bins and x axis; counts on a log axis when
    ``log`` (a few outliers beside a spike of 60,000 stay visible)."""
    dtypes = dtypes or {}
    sides = list(hist.counts)
    yaxis = dict(title=dict(text="count (log)" if log else "count"),
                 type="log" if log else "linear", rangemode="tozero")
    if log:
        yaxis.update(dtick=1, exponentformat="power")  # a label per decade
    data: list[dict[str, Any]] = []
    layout: dict[str, Any] = dict(
        title=dict(text=esc(title), font=dict(size=13), x=0, xanchor="left"), height=330,
        legend=dict(orientation="h", y=1.02, x=1, xanchor="right", yanchor="bottom"),
        bargap=0, yaxis=yaxis,
    )
    for i, name in enumerate(sides):
        edges = hist.edges_of(name)
        centers = ((edges[:-1] + edges[1:]) / 2).tolist()
        width = float(edges[1] - edges[0]) if len(edges) > 1 else 1.0
        std = hist.stds.get(name)
        label = _side_name(name, dtypes.get(name, ""))
        colour = SIDE_COLOURS.get(name)
        # overlaid, the second side is outlined: two equal samples stay both visible
        marker = (dict(color="rgba(0,0,0,0)", line=dict(color=colour, width=1.5))
                  if hist.shared and i else dict(color=colour, line=dict(width=0)))
        trace: dict[str, Any] = dict(
            type="bar", x=centers, y=hist.counts[name].tolist(), width=width, name=label,
            marker=marker, opacity=0.6 if hist.shared and not i else 0.85,
            hovertemplate=f"{esc(name)}<br>%{{x:.4g}}: %{{y:,}}<extra></extra>",
        )
        if std is not None and math.isfinite(std):
            trace["name"] = f"{label} · std {std:.3g}"
        if not hist.shared and i:
            trace.update(xaxis=f"x{i + 1}", yaxis=f"y{i + 1}")
        data.append(trace)
    if hist.shared:
        layout.update(barmode="overlay", xaxis=dict(title=dict(text="value (sampled)")))
    else:  # each side its own panel: a std-0.02 side keeps its shape beside a std-1 one
        n = len(sides)
        gap = 0.08
        width = (1 - gap * (n - 1)) / n
        for i, name in enumerate(sides):
            suffix = "" if i == 0 else str(i + 1)
            lo = i * (width + gap)
            layout[f"xaxis{suffix}"] = dict(
                domain=[lo, lo + width], anchor=f"y{suffix}",
                title=dict(text=f"{esc(name)} values (own bins)"))
            if i:
                layout[f"yaxis{suffix}"] = dict(yaxis, anchor=f"x{suffix}", title=None)
    return _figure(data, **layout)


# -- across the model ------------------------------------------------------------------
def _module_and_leaf(key: str) -> tuple[str, str]:
    module, _, leaf = key.rpartition(".")
    return (module or key), leaf


def layer_figure(
    checkpoint: Sequence[TensorStats], model: dict[str, TensorStats],
    labels: dict[str, str] | None = None, flagged: Iterable[str] = (),
) -> dict[str, Any]:
    """Per-tensor mean, std and abs-max, checkpoint vs current model: markers over the
    module names (not lines over file order: a LayerNorm's weight of 1 beside its bias
    of 0 is two markers of one module, not a saw-tooth), one symbol per leaf (weight,
    bias...), std and abs-max on log axes. ``labels`` maps a checkpoint stat's key to
    the model key it is compared with; ``flagged`` keys get a ring."""
    labels = labels or {}
    flagged = set(flagged)
    names = [labels.get(s.key, s.key) for s in checkpoint]
    names += [k for k in model if k not in set(names)]  # model-only tensors too
    modules: list[str] = []
    seen: set[str] = set()
    for n in names:
        m = esc(_module_and_leaf(n)[0])
        if m not in seen:
            seen.add(m)
            modules.append(m)
    by_name = {labels.get(s.key, s.key): s for s in checkpoint}
    rows = (("mean", "mean", "y"), ("std", "std (log)", "y2"), ("absmax", "abs-max (log)", "y3"))
    data: list[dict[str, Any]] = []
    spans: dict[str, list[float | None]] = {"y2": [], "y3": []}
    for side, stats_of, colour, hollow in (
        ("checkpoint", by_name, CKPT_COLOUR, False), ("model", model, MODEL_COLOUR, True),
    ):
        present = [n for n in names if n in stats_of]
        if not present:
            continue
        dtypes = dtype_words(stats_of[n].dtype for n in present)
        xs = [esc(_module_and_leaf(n)[0]) for n in present]
        symbols = [SYMBOLS.get(_module_and_leaf(n)[1], OTHER_SYMBOL) + ("-open" if hollow
                                                                       else "")
                   for n in present]
        ring = [2 if n in flagged else 0 for n in present]
        text = [esc(n) for n in present]
        for attr, _title, yaxis in rows:
            values = [getattr(stats_of[n], attr) for n in present]
            ys = [_num(v) if attr == "mean" else _positive(v) for v in values]
            spans.get(yaxis, []).extend(ys)
            data.append(dict(
                type="scatter", mode="markers", x=xs, y=ys, text=text, xaxis="x",
                yaxis=yaxis, name=_side_name(side, dtypes), legendgroup=side,
                showlegend=yaxis == "y", offsetgroup=side,
                marker=dict(color=colour, size=7, symbol=symbols,
                            line=dict(color=NAN_COLOUR, width=ring) if not hollow
                            else dict(color=colour, width=1.5)),
                hovertemplate=f"%{{text}}<br>{attr} %{{y:.4g}}<extra>{side}</extra>",
            ))
    n = max(1, len(modules))
    layout: dict[str, Any] = dict(
        height=600, scattermode="group", scattergap=0.5,
        legend=dict(orientation="h", y=1.02, x=1, xanchor="right", yanchor="bottom",
                    title=dict(text="● weight ◆ bias ■ other   ")),
        xaxis=dict(type="category", categoryorder="array", categoryarray=modules,
                   anchor="y3", title=dict(text=f"module ({n:,} shown, in file order)"),
                   tickangle=-30, nticks=16, showgrid=True),
        yaxis=dict(domain=[0.70, 1.0], title=dict(text="mean")),
        yaxis2=dict(log_axis(spans["y2"]), domain=[0.36, 0.64],
                    title=dict(text="std (log)")),
        yaxis3=dict(log_axis(spans["y3"]), domain=[0.0, 0.30],
                    title=dict(text="abs-max (log)")),
        margin=dict(l=60, r=20, t=40, b=60),
    )
    return _figure(data, **layout)


def nonfinite_note(stats: Sequence[TensorStats]) -> str | None:
    """The line shown instead of a chart when no sampled value is NaN or Inf (an empty
    chart would only show bare axes); None when there is something to plot."""
    if any(s.nonfinite for s in stats):
        return None
    errors = [s.error for s in stats if s.error]
    read, failed = len(stats) - len(errors), len(errors)
    # the commonest reason, once: a file changed on disk fails every read alike
    why = f" ({Counter(errors).most_common(1)[0][0].rstrip('.')})" if errors else ""
    if not read:
        return ("No tensor values could be read"
                + (f": {failed:,} tried{why}." if failed else "."))
    unread = f"; {failed:,} could not be read{why}" if failed else ""
    return (f"No NaN or Inf in the sampled values of {read:,} "
            f"tensor{'s' if read != 1 else ''}{unread}.")


def nonfinite_figure(stats: Sequence[TensorStats], limit: int = 40) -> dict[str, Any]:
    """NaN and Inf counts (in the sampled values) of the tensors that have any, side by
    side on a log axis: one Inf beside 512 NaN stays visible."""
    bad = sorted((s for s in stats if s.nonfinite), key=lambda s: -s.nonfinite)[:limit]
    keys = [esc(s.key) for s in bad]
    top = max([s.nan for s in bad] + [s.inf for s in bad] + [1])
    data = []
    for name, attr, colour in (("NaN", "nan", NAN_COLOUR), ("Inf", "inf", INF_COLOUR)):
        counts = [getattr(s, attr) for s in bad]
        data.append(dict(
            type="bar", orientation="h", y=keys, x=[c or None for c in counts], name=name,
            marker=dict(color=colour), text=[f"{c:,}" if c else "" for c in counts],
            textposition="outside", cliponaxis=False,
            hovertemplate=f"%{{y}}<br>{name}: %{{x:,}}<extra></extra>",
        ))
    title = (f"NaN / Inf in sampled values: {len(bad)} tensor{'s' if len(bad) != 1 else ''} "
             "(log axis)")
    return _figure(
        data, barmode="group", title=dict(text=title, font=dict(size=13), x=0,
                                          xanchor="left"),
        height=max(180, 80 + 30 * len(bad)),
        xaxis=dict(log_axis([1, top * 3]), range=[math.log10(0.5), math.log10(top * 3)],
                   title=dict(text="values (sampled)")),
        yaxis=dict(automargin=True, autorange="reversed"),
        legend=dict(orientation="h", y=1.02, x=1, xanchor="right", yanchor="bottom"),
    )


class FigureHolder:
    """Shows a figure through the front end's plotly mime renderer (an ``Output`` that
    holds the figure's JSON), with "Drawing chart…" until plotly has painted it."""

    def __init__(self, css_class: str) -> None:
        import ipywidgets as w

        self.box = w.VBox()
        self.box.add_class(css_class)
        self.box.add_class("ck-chart")
        self._fig: dict[str, Any] | None = None
        self._out: Any = None
        self._drawing: Any = None

    def show(self, fig: dict[str, Any]) -> None:
        import ipywidgets as w

        from .lifetime import replace_children

        self._fig = fig
        output = {"output_type": "display_data", "metadata": {},
                  "data": {MIME: fig, "text/plain": FALLBACK_TEXT}}
        if self._out is None:
            self._out = w.Output()
            self._drawing = w.HTML('<div class="ck-hint">Drawing chart…</div>')
            self._drawing.add_class("ck-drawing")
            replace_children(self.box, (self._drawing, self._out))
        # set, not captured with ``with out:``: this runs on the background thread
        self._out.outputs = (output,)

    def note(self, text: str) -> None:
        """Show a line of text instead of a figure (``text`` is escaped here)."""
        import ipywidgets as w

        from .lifetime import replace_children

        self._fig = self._out = self._drawing = None
        note = w.HTML(f'<div class="ck-hint ck-dist-note">{esc(text)}</div>')
        replace_children(self.box, (note,))

    @property
    def figure(self) -> dict[str, Any] | None:
        """The plotly JSON shown last (None while a note stands instead)."""
        return self._fig
