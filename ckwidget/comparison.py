"""Checkpoint against model, tensor by tensor, from sampled values: which tensors to
sample, each one's statistics on both sides, their difference, and the flags that point
at a problem (non-finite values; dead: all zeros or constant; exploding: std far above
its layer family's; kept at its initial value by the plan).

The rules live here, below the views: the Distributions tab draws what this computes,
and a script can ask the same questions without a widget. Reads are bounded samples
through :mod:`ckwidget.stats`; long loops take ``cancelled`` and ``progress`` callables
so a caller on another thread can stop them and show how far they got.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from . import stats
from .errors import CheckpointChangedError

if TYPE_CHECKING:  # pragma: no cover
    from .diagnosis.report import Report

OVERVIEW_TENSORS = 256  # tensors in the overview (evenly spread over the file)
OVERVIEW_SAMPLE = 4096  # elements sampled per tensor for the overview
PRIORITY_TENSORS = 64  # tensors the report already suspects, sampled first
HIST_SAMPLE = stats.MAX_ELEMENTS  # elements per side for a chosen key or module
MODULE_TENSORS = 64  # tensors pooled for a chosen module

INITIAL = "initial value"  # report.provenance.model[key] for a tensor the plan leaves

Pair = tuple[str, str, str]  # (label, checkpoint key, model key) of one table row


@dataclass
class Row:
    """One tensor: its stats on each side, their difference, its flags."""

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
    """Rows by ``by`` (order, name, flags, std, absmax, zeros, nonfinite, diff; largest
    first where a number); values that are missing last."""
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


class Comparison:
    """A report's tensors paired with the model's, and how to sample both sides."""

    def __init__(self, report: Report, model: Any) -> None:
        from .gcpause import gc_paused

        self.report = report
        self.model = model
        self.ckpt = report.checkpoint
        self.entry = getattr(report, "entry", None)
        self._members: dict[str, str] | None = None
        with gc_paused(promote=True):  # 100,000 tuples that live as long as the tab
            self.pairs: list[Pair] = pairs_of(report)

    def full_key(self, ckpt_key: str) -> str | None:
        """The checkpoint's full dotted key for a key of the table (container-relative)."""
        if self._members is None:
            self._members = self.ckpt.members(self.entry)
        if ckpt_key in self._members:
            return self._members[ckpt_key]
        return ckpt_key if ckpt_key in self.ckpt.tensors else None

    def kept_initial(self) -> set[str]:
        """Model keys the plan leaves at their initial value."""
        prov = getattr(self.report, "provenance", None)
        model = getattr(prov, "model", None) or {}
        return {k for k, where in model.items() if where == INITIAL}

    def chosen(self, limit: int = OVERVIEW_TENSORS,
               priority: int = PRIORITY_TENSORS) -> list[tuple[int, Pair]]:
        """(file position, pair) to sample: up to ``priority`` tensors the report
        suspects (NaN/Inf found while diagnosing, kept at initial value), then ``limit``
        spread evenly over the rest."""
        bad = self.report.finding("nonfinite")
        suspect_ck = set(bad.keys) if bad is not None else set()
        kept = self.kept_initial()
        first: list[int] = []
        if suspect_ck or kept:
            for i, (_label, ck, mk) in enumerate(self.pairs):
                if ck in suspect_ck or mk in kept:
                    first.append(i)
                    if len(first) >= priority:
                        break
        picked = sorted(set(first) | set(spread(list(range(len(self.pairs))), limit)))
        return [(i, self.pairs[i]) for i in picked]

    def rows(self, chosen: list[tuple[int, Pair]], per: int = OVERVIEW_SAMPLE,
             cancelled: Callable[[], bool] = lambda: False,
             progress: Callable[[int], Any] | None = None) -> list[Row]:
        """Sampled stats of each chosen tensor on both sides, with their difference
        (where both samples are aligned the same way) and flags. ``progress(n)`` is
        called after the n-th tensor, about 25 times in all; ``cancelled()`` stops."""
        model_sd = stats.model_tensors(self.model, [p[2] for _, p in chosen if p[2]])
        rows: list[Row] = []
        stride = max(1, len(chosen) // 25)
        for n, (order, (label, ck_key, model_key)) in enumerate(chosen):
            if cancelled():
                break
            row = Row(label, order)
            ck_values = model_values = None
            ck_aligned = model_aligned = False
            full = self.full_key(ck_key) if ck_key else None
            if full is not None:
                s, ck_values, ck_aligned = stats.checkpoint_sampled(self.ckpt, full, per)
                row.ckpt = replace(s, key=label)
            if model_key and model_key in model_sd:
                s, model_values, model_aligned = stats.sampled(label, model_sd[model_key],
                                                               per)
                row.model = s
            if (ck_aligned and model_aligned and ck_values is not None
                    and model_values is not None and row.ckpt.shape == row.model.shape):
                row.diff = stats.difference(ck_values, model_values)
            rows.append(row)
            if progress is not None and (n == 0 or (n + 1) % stride == 0
                                         or n + 1 == len(chosen)):
                progress(n + 1)
        flag_rows(rows, self.kept_initial(), {p[0]: p[2] for _, p in chosen})
        return rows

    def samples(self, name: str, total: int = HIST_SAMPLE,
                cancelled: Callable[[], bool] = lambda: False,
                ) -> tuple[dict[str, np.ndarray], dict[str, list[str]]]:
        """Sampled values of a key, or pooled over the tensors under a module (at most
        ``MODULE_TENSORS`` of them, ``total`` values per side in all), for each side
        ("checkpoint", "model"), with the dtypes they came from. An unreadable tensor is
        skipped; a checkpoint changed on disk raises (no one-sided picture)."""
        name = name.strip()
        exact = [p for p in self.pairs if p[0] == name]
        members = exact or [p for p in self.pairs if p[0].startswith(name + ".")]
        if not members:
            raise KeyError(f"No key or module named {name!r} in the table.")
        members = spread(members, MODULE_TENSORS)
        per = max(1, total // len(members))
        model_sd = stats.model_tensors(self.model, [m for _, _, m in members if m])
        parts: dict[str, list[np.ndarray]] = {"checkpoint": [], "model": []}
        dtypes: dict[str, list[str]] = {"checkpoint": [], "model": []}
        for _label, ck_key, model_key in members:
            if cancelled():
                break
            full = self.full_key(ck_key) if ck_key else None
            if full is not None:
                try:
                    parts["checkpoint"].append(stats.checkpoint_sample(self.ckpt, full, per))
                    dtypes["checkpoint"].append(self.ckpt.tensors[full].dtype)
                except CheckpointChangedError:
                    raise
                except Exception:  # an unreadable tensor is skipped
                    pass
            if model_key and model_key in model_sd:
                try:
                    t = model_sd[model_key]
                    parts["model"].append(stats.sample_tensor(t, per))
                    dtypes["model"].append(str(t.dtype).removeprefix("torch."))
                except (ValueError, RuntimeError):
                    pass
        out = {side: np.concatenate(p) for side, p in parts.items() if p}
        return out, {side: dtypes[side] for side in out}


def pairs_of(report: Any) -> list[Pair]:
    """(label, checkpoint key, model key) per table row, in table order: from the
    report's column lists (a DataFrame of 100,000 rows is not needed for three
    columns), or its table when it has no columns."""
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


def spread(items: list[Any], limit: int) -> list[Any]:
    """At most ``limit`` items, evenly spread over the list (first and last kept)."""
    if len(items) <= limit:
        return list(items)
    idx = np.linspace(0, len(items) - 1, limit).round().astype(int)
    return [items[i] for i in sorted(set(idx.tolist()))]
