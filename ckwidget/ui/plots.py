"""Plotly figures for the Distributions tab, built from :mod:`ckwidget.stats` results.

Why separate: figures are pure functions of numbers, testable without a front end.
``figure_container`` picks ``go.FigureWidget`` when anywidget is installed (plotly 6+
needs it) and otherwise an ``Output`` that displays a static ``go.Figure``.
"""

from __future__ import annotations

import html
import threading
from collections import Counter
from collections.abc import Sequence
from typing import Any

from ..stats import Histogram, TensorStats

CKPT_COLOUR = "#3366cc"


def esc(text: str) -> str:
    """Plotly renders a subset of HTML in labels; keys from files must stay text."""
    return html.escape(str(text), quote=False)


MODEL_COLOUR = "#ff9900"


def _go() -> Any:
    import plotly.graph_objects as go

    return go


def has_anywidget() -> bool:
    try:
        import anywidget  # noqa: F401
    except ImportError:
        return False
    return True


_prefetch_lock = threading.Lock()
_prefetch_started = False


def prefetch_figure_widget() -> threading.Thread | None:
    """Import plotly's FigureWidget on a background thread, once per process; the thread,
    or None when it started before (or cannot be used). That import pulls in nbformat
    and jsonschema, seconds on some installs: started once the debugger is on screen,
    it is over before most users open the Distributions tab."""
    global _prefetch_started
    with _prefetch_lock:
        if _prefetch_started or not has_anywidget():
            return None
        _prefetch_started = True

    def load() -> None:
        try:
            _go().FigureWidget  # noqa: B018 - plotly imports it on first access
        except Exception:  # the tab says what is wrong when it draws
            pass

    thread = threading.Thread(target=load, name="ckwidget-prefetch-plotly", daemon=True)
    thread.start()
    return thread


def histogram_figure(hist: Histogram, title: str) -> Any:
    """Overlaid histograms (checkpoint vs model) over shared bins."""
    go = _go()
    fig = go.Figure()
    colours = {"checkpoint": CKPT_COLOUR, "model": MODEL_COLOUR}
    width = float(hist.edges[1] - hist.edges[0]) if len(hist.edges) > 1 else 1.0
    for name, counts in hist.counts.items():
        fig.add_trace(
            go.Bar(
                x=hist.centers.tolist(), y=counts.tolist(), width=width, name=name,
                opacity=0.55, marker_color=colours.get(name),
            )
        )
    fig.update_layout(
        barmode="overlay", title=dict(text=esc(title), font=dict(size=13)), height=320,
        margin=dict(l=50, r=20, t=40, b=40), legend=dict(orientation="h", y=1.12, x=1,
                                                         xanchor="right"),
        xaxis_title="value (sampled)", yaxis_title="count",
    )
    return fig


def layer_figure(
    checkpoint: Sequence[TensorStats], model: dict[str, TensorStats], labels: dict[str, str]
) -> Any:
    """Per-tensor mean, std and abs-max across the model, checkpoint vs current model.

    ``labels`` maps each checkpoint stat's key to the model key it is compared with.
    """
    go = _go()
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.06,
                        subplot_titles=("mean", "std", "abs-max"))
    names = [labels.get(s.key, s.key) for s in checkpoint]
    shown = [esc(n) for n in names]
    x = list(range(len(checkpoint)))
    for row, attr in enumerate(("mean", "std", "absmax"), start=1):
        ck_vals = [_finite(getattr(s, attr)) for s in checkpoint]
        fig.add_trace(
            go.Scatter(x=x, y=ck_vals, mode="lines+markers", name="checkpoint",
                       text=shown, hovertemplate="%{text}<br>%{y:.4g}<extra>checkpoint</extra>",
                       line=dict(color=CKPT_COLOUR), marker=dict(size=4),
                       showlegend=row == 1),
            row=row, col=1,
        )
        model_vals = [
            _finite(getattr(model[n], attr)) if n in model else None for n in names
        ]
        if any(v is not None for v in model_vals):
            fig.add_trace(
                go.Scatter(x=x, y=model_vals, mode="lines+markers", name="model",
                           text=shown, hovertemplate="%{text}<br>%{y:.4g}<extra>model</extra>",
                           line=dict(color=MODEL_COLOUR, dash="dot"), marker=dict(size=4),
                           showlegend=row == 1),
                row=row, col=1,
            )
    fig.update_layout(height=520, margin=dict(l=50, r=20, t=40, b=40),
                      legend=dict(orientation="h", y=1.08, x=1, xanchor="right"))
    fig.update_xaxes(title_text="tensor (file order)", row=3, col=1)
    return fig


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


def nonfinite_figure(stats: Sequence[TensorStats], limit: int = 40) -> Any:
    """NaN and Inf counts (in the sampled values) of the tensors that have any."""
    go = _go()
    bad = sorted((s for s in stats if s.nonfinite), key=lambda s: -s.nonfinite)[:limit]
    fig = go.Figure()
    keys = [esc(s.key) for s in bad]
    fig.add_trace(go.Bar(y=keys, x=[s.nan for s in bad], name="NaN", orientation="h",
                         marker_color="#d62728"))
    fig.add_trace(go.Bar(y=keys, x=[s.inf for s in bad], name="Inf", orientation="h",
                         marker_color="#9467bd"))
    title = f"NaN / Inf in sampled values: {len(bad)} tensor(s)"
    fig.update_layout(barmode="stack", title=dict(text=title, font=dict(size=13)),
                      height=max(160, 60 + 22 * len(bad)),
                      margin=dict(l=50, r=20, t=40, b=30), yaxis=dict(automargin=True))
    return fig


def _finite(v: float) -> float | None:
    return v if v == v and abs(v) != float("inf") else None


class FigureHolder:
    """Shows a figure: a live ``FigureWidget`` when possible, else a static figure."""

    def __init__(self, css_class: str) -> None:
        import ipywidgets as w

        self.live = has_anywidget()
        self.box = w.VBox()
        self.box.add_class(css_class)
        self._fw: Any = None

    def show(self, fig: Any) -> None:
        import ipywidgets as w

        from .lifetime import replace_children

        if self.live:
            go = _go()
            if self._fw is None:
                self._fw = go.FigureWidget(fig)
                replace_children(self.box, (self._fw,))
            else:
                with self._fw.batch_update():
                    self._fw.data = ()
                    self._fw.add_traces(list(fig.data))
                    self._fw.layout = fig.layout
            return
        out = w.Output()
        with out:
            from IPython.display import display

            display(fig)
        replace_children(self.box, (out,))

    def note(self, text: str) -> None:
        """Show a line of text instead of a figure (``text`` is escaped here)."""
        import ipywidgets as w

        from .lifetime import replace_children

        self._fw = None
        note = w.HTML(f'<div class="ck-hint ck-dist-note">{esc(text)}</div>')
        replace_children(self.box, (note,))

    @property
    def figure(self) -> Any:
        return self._fw
