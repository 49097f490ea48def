"""The Report: why a checkpoint does or does not fit a model, and the plan that fixes it."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..checkpoint import Checkpoint, Finding
from .provenance import Provenance, trace_plan

if TYPE_CHECKING:  # pragma: no cover
    from ..fixes.plan import Plan
    from .align import Alignment

STATUS_WORDS = {
    "ok": "loads cleanly",
    "fixable": "does not load as is; the suggested plan fixes it",
    "partial": "loads, but the model would not hold the checkpoint's values: some model "
               "tensors keep their initial values while learned values go unused, or the "
               "values are not finite",
    "broken": "cannot be loaded into this model as it is",
    "unsafe": "is unsafe to load with pickle",
}
ICONS = {"error": "✖", "warning": "▲", "info": "ℹ"}


@dataclass(eq=False)
class Report:
    """Everything diagnosis found; see the public contract in DESIGN.md."""

    checkpoint: Checkpoint
    entry: str
    findings: list[Finding]
    plan: Plan
    model_tensor_count: int
    loadable_count: int
    loadable_after_plan: int
    # plain model.load_state_dict(torch.load(path, weights_only=True)) succeeds as is
    # (torch refusing the file makes it False); state_dict_fits asks only whether the
    # keys and shapes fit
    loads_cleanly: bool
    status: str
    headline: str
    model_name: str = "model"
    state_dict_fits: bool = False
    _provenance: Any = field(default=None, repr=False)
    alignment: Alignment | None = field(default=None, repr=False)
    seconds: float = 0.0
    _columns: dict[str, list[Any]] | None = field(default=None, repr=False)
    _table: Any = field(default=None, repr=False)
    _status_counts: dict[str, int] | None = field(default=None, repr=False)

    @property
    def table(self):
        """pandas DataFrame, one row per key of either side (built on first use)."""
        if self._table is None:
            from ..gcpause import gc_paused
            from .table import build_table

            with gc_paused(promote=True):
                self._table = build_table(self.columns)
        return self._table

    @property
    def provenance(self) -> Provenance:
        """Where each model tensor's value comes from after the plan, and what becomes of
        each checkpoint tensor of the entry (traced through the plan's own transforms)."""
        if self._provenance is None:
            a = self.alignment
            if a is None or self.plan is None:
                return Provenance()
            self._provenance = trace_plan(self.checkpoint, self.plan, a.model)
        return self._provenance

    @property
    def columns(self) -> dict[str, list[Any]]:
        """The table as plain column lists, built from the alignment on first use (the
        summary, the plan and the findings do not need them)."""
        if self._columns is None:
            if self.alignment is None:
                return {}
            from ..gcpause import gc_paused
            from .table import table_columns

            with gc_paused(promote=True):
                self._columns = self._decorated(table_columns(self.alignment))
        return self._columns

    def _decorated(self, cols: dict[str, list[Any]]) -> dict[str, list[Any]]:
        """The alignment's columns plus what the report knows: provenance, NaN/Inf."""
        cols["source"] = self._sources(cols)
        self._mark_nonfinite(cols)
        return cols

    def _mark_nonfinite(self, cols: dict[str, list[Any]]) -> None:
        """Rows whose checkpoint values hold NaN/Inf say so in their note."""
        bad = self.finding("nonfinite")
        if bad is None:
            return
        keys = set(bad.keys)
        notes = cols["note"]
        for i, c in enumerate(cols["checkpoint_key"]):
            if c in keys:
                notes[i] = f"holds NaN/Inf; {notes[i]}" if notes[i] else "holds NaN/Inf"

    def _sources(self, cols: dict[str, list[Any]]) -> list[str]:
        """The ``source`` column: a model row's provenance, a checkpoint-only row's fate."""
        prov = self.provenance
        model, ckpt = prov.model, prov.checkpoint
        return [model.get(m, "") if m is not None else ckpt.get(c, "")
                for m, c in zip(cols["model_key"], cols["checkpoint_key"])]

    def status_counts(self) -> dict[str, int]:
        """Rows of the table per status (no table or columns are built for it)."""
        if self._status_counts is None:
            if self._columns is not None:
                self._status_counts = dict(Counter(self._columns["status"]))
            elif self.alignment is None:
                return {}
            else:
                from .table import status_counts

                self._status_counts = dict(status_counts(self.alignment))
        return dict(self._status_counts)

    def attention_columns(self, limit: int = 100) -> dict[str, list[Any]]:
        """``columns`` for the first ``limit`` rows that need attention (status other
        than "match"), in table order, built without the other rows."""
        if self.alignment is None:
            return {}
        from .table import attention_columns

        return self._decorated(attention_columns(self.alignment, limit))

    @property
    def offered_fixes(self) -> list[Any]:
        """Every fix worth offering: the plan's, then the findings' alternatives. A
        finding's own variant of a planned kind (a narrower drop-keys) is covered by the
        plan's fix already, so only fixes of other kinds are alternatives."""
        choices: list[Any] = list(self.plan.fixes)
        planned_kinds = {f.kind for f in choices}
        for finding in self.findings:
            for fix in finding.fixes:
                if fix not in choices and fix.kind not in planned_kinds:
                    choices.append(fix)
        return choices

    def by_kind(self, kind: str) -> list[Finding]:
        return [f for f in self.findings if f.kind == kind]

    def finding(self, kind: str) -> Finding | None:
        return next((f for f in self.findings if f.kind == kind), None)

    @property
    def kinds(self) -> list[str]:
        return [f.kind for f in self.findings]

    # -- display ------------------------------------------------------------------------
    def _source_name(self) -> str:
        ck = self.checkpoint
        if ck.path is not None:
            return str(ck.path)
        return str(ck.metadata.get("name", "<in-memory checkpoint>"))

    def __repr__(self) -> str:
        lines = [f"ckwidget report: {self._source_name()} -> {self.model_name}"
                 + (f" (entry {self.entry!r})" if self.entry else "")]
        lines.append(f"  {self.headline}")
        lines.append(f"  status: {self.status} ({STATUS_WORDS.get(self.status, '')})")
        if self.findings:
            lines.append("Findings:")
            for f in self.findings:
                text = f.message if len(f.message) <= 600 else f.message[:597] + "..."
                lines.append(f"  {ICONS.get(f.severity, '-')} [{f.severity}] {f.kind}: {text}")
        if self.plan is not None and len(self.plan):
            lines.append("Suggested plan:")
            for i, fix in enumerate(self.plan, 1):
                lines.append(f"  {i}. {fix.describe()}")
            lines.append("  (report.plan.apply(model) loads it; report.plan.to_code() "
                         "shows the plain torch code)")
        return "\n".join(_printable(line) for line in lines)

    def _repr_html_(self) -> str:
        """The static report (:func:`ckwidget.ui.static.static_html`): the one HTML
        rendering of a Report, the same one the widget leaves behind when it closes.
        Imported when a notebook displays the report, so importing diagnosis never
        imports a view."""
        from ..ui.static import static_html

        return static_html(self)


def _printable(text: str) -> str:
    """Keep terminal output safe: control characters from a file become escapes."""
    return "".join(ch if ch.isprintable() or ch == "\t" else repr(ch)[1:-1] for ch in text)
