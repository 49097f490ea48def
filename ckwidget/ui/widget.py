"""The debugger widget: a view over a Report and a Plan, with no diagnosis of its own.

Everything it shows comes from :func:`ckwidget.diagnosis.diagnose`, the Report's table
and findings, ``Plan.preview`` / ``apply`` / ``to_code`` / ``save`` and
:mod:`ckwidget.stats`. Slow work (previews, statistics) runs on a background thread;
any exception raised in a callback is shown in the widget's error area.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ipywidgets as w

from ..errors import CheckpointChangedError, CheckpointError
from . import render
from .export import (
    code_html,
    copy_button,
    leave_static,
    register_open,
    show_once,
    to_next_cell,
)
from .lifetime import (
    clear_reopen_fallback,
    close_tree,
    replace_children,
    show_reopen_fallback,
)
from .plots import plotly_warmup
from .style import esc, style_tag
from .table import ATTENTION, KeyTable, ordered_counts

if TYPE_CHECKING:  # pragma: no cover
    from ..diagnosis.report import Report

TAB_NAMES = ("Diagnosis", "Keys", "Distributions", "Fix & export")


def _classes(widget: w.DOMWidget, *names: str) -> w.DOMWidget:
    for name in names:
        widget.add_class(name)
    return widget


def error_sentence(exc: BaseException) -> str:
    """One sentence for the error area: ckwidget's own errors already are one."""
    if isinstance(exc, CheckpointChangedError):
        return f"{exc} Run the cell that opened this debugger again."
    if isinstance(exc, CheckpointError):
        return str(exc)
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"


class Jobs:
    """Runs callables on a background thread (or inline), newest job per name wins."""

    def __init__(self, background: bool, on_error: Callable[[BaseException, str], None]):
        self.background = background
        self.on_error = on_error
        self._threads: list[threading.Thread] = []
        self._generation: dict[str, int] = {}
        self._lock = threading.Lock()
        self.cancelled = threading.Event()  # set by cancel(): long loops check it

    def submit(self, name: str, work: Callable[[], Any], done: Callable[[Any], None]) -> None:
        if self.cancelled.is_set():
            return  # the debugger is closed: nothing would show the result
        with self._lock:
            gen = self._generation.get(name, 0) + 1
            self._generation[name] = gen

        def current() -> bool:
            return self._generation.get(name) == gen and not self.cancelled.is_set()

        def run() -> None:
            try:
                result = work()
                if current():
                    done(result)
            except Exception as exc:  # shown in the widget, never lost
                if current():
                    self.on_error(exc, name)

        if not self.background:
            run()
            return
        thread = threading.Thread(target=run, name=f"ckwidget-{name}", daemon=True)
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()

    def cancel(self, timeout: float) -> None:
        """Stop for good: no callback runs from now on, loops that check ``cancelled``
        stop at their next step, and running jobs get up to ``timeout`` seconds to end.
        One still blocked then (a read from a slow disk) ends on its own, unseen."""
        self.cancelled.set()
        try:
            self.wait(timeout)
        except TimeoutError:
            pass

    def wait(self, timeout: float = 60.0) -> None:
        """Block until queued background work has finished (tests, scripts), at most
        ``timeout`` seconds in all (jobs queued meanwhile included)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                alive = [t for t in self._threads if t.is_alive()]
            if not alive:
                return
            for t in alive:
                t.join(max(0.0, deadline - time.monotonic()))
                if t.is_alive():
                    raise TimeoutError(f"{t.name} did not finish within {timeout} s")


class CheckpointDebugger(w.VBox):
    """The notebook debugger for one checkpoint and one model.

    ``report`` is the diagnosis as saved, ``plan`` the fixes currently selected,
    ``preview`` the Report as it would be after ``plan`` (None until a fix is toggled).
    ``export()``, ``apply()`` and ``save(path)`` do what the buttons do.
    """

    close_wait_s = 5.0  # how long close() lets a running background job finish

    def __init__(
        self,
        report: Report,
        model: Any,
        *,
        model_name: str = "model",
        background: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.report = report
        self.model = model
        self.model_name = model_name
        self.preview: Report | None = None
        self.last_result: Any = None
        self.applied_plan: Any = None  # the plan last applied to the model, if any
        self.last_code = ""
        self.last_error: BaseException | None = None
        self._jobs = Jobs(background, self._show_error)
        self._shown_at: int | None = None
        self._evidence: dict[int, str] = {}
        self._build_fix_choices()
        self.plan = report.plan
        self._key_table: KeyTable | None = None  # built when the Keys tab is first shown
        self._preview_table: KeyTable | None = None
        self._dist: Any = None
        _classes(self, "ck-root")
        self._build()

    # -- fix choices -------------------------------------------------------------------
    def _build_fix_choices(self) -> None:
        """Plan fixes first (selected), then the alternatives the report offers."""
        self.fix_choices = self.report.offered_fixes
        self.selected: list[Any] = list(self.report.plan.fixes)

    def _make_plan(self) -> Any:
        from ..fixes import Plan

        chosen = [f for f in self.fix_choices if f in self.selected]
        return Plan(chosen, source=self.report.plan.source)

    # -- layout ------------------------------------------------------------------------
    def _build(self) -> None:
        status = self.report.status
        self.style_html = w.HTML(style_tag())
        self.header = _classes(w.HTML(render.header_html(self.report)), "ck-file-info")
        self.headline = _classes(
            w.HTML(render.headline_html(self.report)), "ck-headline", f"ck-status-{status}"
        )
        self.planline = _classes(w.HTML(self._plan_line()), "ck-planline")
        self.progress = _classes(w.HTML(""), "ck-busy")
        # Apply's bar beside its text: counted steps of the read and the load, shown
        # only while a plan is being applied
        self.apply_bar = _classes(
            w.IntProgress(value=0, min=0, max=1, description="", bar_style="info"),
            "ck-apply-progress",
        )
        self.apply_bar.layout.display = "none"
        # what Apply did to the model, kept in view (the result line below can change)
        self.applied_line = _classes(w.HTML(""), "ck-applied")
        header = _classes(
            w.VBox([self.header, self.headline, self.planline, self.applied_line,
                    w.HBox([self.progress, self.apply_bar])]),
            "ck-header", f"ck-status-{status}",
        )
        self.error_area = _classes(w.HTML(""), "ck-error")
        self.error_area.layout.display = "none"
        self.tabs = w.Tab()
        self.diagnosis_tab = self._build_diagnosis()
        self.keys_tab = self._build_keys()
        self.dist_tab = _classes(
            # issue 20: plotly_warmup() lets the front end ready plotly.js while the user reads
            w.VBox([w.HTML('<div class="ck-hint">Loading statistics…</div>'), plotly_warmup()]),
            "ck-tab-distributions",
        )
        self.fix_tab = self._build_fix_tab()
        self.tabs.children = (self.diagnosis_tab, self.keys_tab, self.dist_tab, self.fix_tab)
        self.tabs.titles = TAB_NAMES
        self.tabs.observe(self._guard(self._on_tab), names="selected_index")
        self.children = (self.style_html, header, self.error_area, self.tabs)

    def _plan_line(self) -> str:
        if self.preview is None:
            return render.plan_hint(self.report)
        return f"As saved: {esc(self.report.headline)}"

    def _build_diagnosis(self) -> w.VBox:
        self.findings_html = w.HTML(self._findings())
        return _classes(w.VBox([self.findings_html]), "ck-tab-diagnosis")

    def _findings(self) -> str:
        applied = self.applied_plan.fixes if self.applied_plan is not None else ()
        return render.findings_html(self.report.findings, self.selected, self._evidence,
                                    applied=applied)

    @property
    def key_table(self) -> KeyTable:
        """The Keys tab's table model (built on first use: 100,000 rows take a while)."""
        if self._key_table is None:
            self._key_table = KeyTable(self.report.table)
        return self._key_table

    def _status_counts(self) -> dict[str, int]:
        """Keys per status, from the report's status column (no table needed)."""
        return ordered_counts(self.report.status_counts())

    def _build_keys(self) -> w.VBox:
        counts = self._status_counts()
        self.filter_text = _classes(
            w.Text(placeholder="filter keys…", continuous_update=True,
                   layout=w.Layout(width="260px")),
            "ck-filter",
        )
        self.status_buttons: dict[str, w.ToggleButton] = {}
        for status in counts:  # already in the canonical status order
            b = w.ToggleButton(value=False, description=f"{status} {counts[status]:,}",
                               layout=w.Layout(width="auto"))
            _classes(b, "ck-status-filter", f"ck-status-filter-{status}")
            b.observe(self._guard(self._on_table_change), names="value")
            self.status_buttons[status] = b
        self.group_box = _classes(
            w.Checkbox(value=True, description="group repeated layers", indent=False,
                       layout=w.Layout(width="auto")),
            "ck-group",
        )
        # opens on the rows that need attention, when there are any (one click: all)
        needs = any(n for s, n in counts.items() if s in ATTENTION)
        self.attention_box = _classes(
            w.Checkbox(value=needs, description="only keys that need attention",
                       indent=False, layout=w.Layout(width="auto")),
            "ck-attention",
        )
        self.table_view = _classes(
            w.ToggleButtons(options=["As saved", "With the plan"], value="As saved",
                            style={"button_width": "auto"}),
            "ck-table-view",
        )
        self.first_button = _classes(w.Button(description="|◀", tooltip="first page",
                                              layout=w.Layout(width="40px")), "ck-first")
        self.prev_button = _classes(w.Button(description="◀", layout=w.Layout(width="36px")),
                                    "ck-prev")
        self.next_button = _classes(w.Button(description="▶", layout=w.Layout(width="36px")),
                                    "ck-next")
        self.last_button = _classes(w.Button(description="▶|", tooltip="last page",
                                             layout=w.Layout(width="40px")), "ck-last")
        self.page_box = _classes(w.BoundedIntText(value=1, min=1, max=1, description="page",
                                                  layout=w.Layout(width="130px")), "ck-goto")
        self.page_label = _classes(w.HTML(""), "ck-page")
        self.table_html = _classes(w.HTML(""), "ck-table")
        self.page_index = 0
        for widget in (self.filter_text, self.group_box, self.table_view, self.attention_box):
            widget.observe(self._guard(self._on_table_change), names="value")
        self.prev_button.on_click(self._guard(lambda _b: self._turn(-1)))
        self.next_button.on_click(self._guard(lambda _b: self._turn(+1)))
        self.first_button.on_click(self._guard(lambda _b: self._go(0)))
        self.last_button.on_click(self._guard(lambda _b: self._go(10**9)))
        self.page_box.observe(self._guard(lambda c: self._go(c["new"] - 1)
                                          if c["new"] - 1 != self.page_index else None),
                              names="value")
        # the first page is drawn when the tab is first shown (see _on_tab)
        self._table_drawn = False
        self.table_html.value = '<div class="ck-hint">Loading keys…</div>'
        controls = w.HBox([self.filter_text, self.attention_box, self.group_box,
                           self.table_view],
                          layout=w.Layout(flex_flow="row wrap", align_items="center"))
        filters = w.HBox(list(self.status_buttons.values()),
                         layout=w.Layout(flex_flow="row wrap"))
        pager = w.HBox([self.first_button, self.prev_button, self.page_label,
                        self.next_button, self.last_button, self.page_box],
                       layout=w.Layout(align_items="center"))
        return _classes(w.VBox([controls, filters, pager, self.table_html]), "ck-tab-keys")

    def _build_fix_tab(self) -> w.VBox:
        self.fix_toggles: list[w.Checkbox] = []
        for fix in self.fix_choices:
            box = w.Checkbox(value=fix in self.selected, description=render.fix_text(fix),
                             indent=False, layout=w.Layout(width="auto"))
            _classes(box, "ck-fix", f"ck-fix-{fix.kind}")
            box.observe(self._guard(self._on_toggle), names="value")
            self.fix_toggles.append(box)
        if not self.fix_choices:
            fixes: list[w.Widget] = [
                w.HTML('<div class="ck-hint">No fixes are needed or offered.</div>')
            ]
        else:
            fixes = list(self.fix_toggles)
        self.snippet = _classes(w.HTML(""), "ck-snippet")
        self.copy = copy_button("")
        self.apply_button = _classes(
            w.Button(description="Apply to model", button_style="primary", icon="check",
                     layout=w.Layout(width="auto")),
            "ck-apply",
        )
        self.export_button = _classes(w.Button(description="Export code", icon="code",
                                               layout=w.Layout(width="auto")), "ck-export")
        self.result_html = _classes(w.HTML(""), "ck-result")
        self.export_html = _classes(w.HTML(""), "ck-export-result")
        self.save_path = _classes(
            w.Text(placeholder="repaired.safetensors", value=self._default_save_path(),
                   layout=w.Layout(width="360px")),
            "ck-save-path",
        )
        self.save_button = _classes(w.Button(description="Save repaired checkpoint",
                                             icon="save", layout=w.Layout(width="auto")),
                                    "ck-save")
        self.apply_button.on_click(self._guard(lambda _b: self.apply()))
        self.export_button.on_click(self._guard(lambda _b: self.export(next_cell=False)))
        self.save_button.on_click(self._guard(lambda _b: self.save(self.save_path.value)))
        buttons = w.HBox([self.apply_button, self.export_button]
                         + ([self.copy] if self.copy is not None else []))
        save = w.HBox([self.save_path, self.save_button])
        return _classes(
            w.VBox([
                w.HTML("<b>Plan</b> <span class='ck-hint'>(toggle fixes; the headline "
                       "and the Keys tab's “With the plan” view update before anything "
                       "is applied)</span>"),
                *fixes,
                w.HTML("<b>Code</b> <span class='ck-hint'>(plain torch: the same as "
                       "Apply)</span>"),
                self.snippet, buttons, self.export_html, self.result_html, save,
            ]),
            "ck-tab-fix",
        )

    def _default_save_path(self) -> str:
        path = self.report.checkpoint.path
        if path is None:
            return "repaired.safetensors"
        p = Path(path)
        return str(p.with_name(p.stem + ".repaired.safetensors"))

    # -- error handling ----------------------------------------------------------------
    def _guard(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Wrap a callback so that whatever it raises lands in the error area."""

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except Exception as exc:  # the user must see it
                self._show_error(exc, getattr(fn, "__name__", "callback"))
                return None

        return wrapped

    def _show_error(self, exc: BaseException, where: str = "") -> None:
        self.last_error = exc
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        self.error_area.value = (
            f"<b>{esc(error_sentence(exc))}</b>"
            f"<details><summary>details</summary><pre>{esc(tb)}</pre></details>"
        )
        self.error_area.layout.display = None
        self.progress.value = ""

    def _clear_error(self) -> None:
        self.error_area.value = ""
        self.error_area.layout.display = "none"

    # -- keys table --------------------------------------------------------------------
    def _current_table(self) -> KeyTable:
        if self.table_view.value == "With the plan" and self.preview is not None:
            if self._preview_table is None:
                self._preview_table = KeyTable(self.preview.table)
            return self._preview_table
        return self.key_table

    def _on_table_change(self, _change: Any = None) -> None:
        self.page_index = 0
        if self.table_view.value == "With the plan" and self.preview is None:
            self._request_preview()
        self._render_table()

    def _turn(self, step: int) -> None:
        self._go(self.page_index + step)

    def _go(self, page: int) -> None:
        self.page_index = page
        self._render_table()

    def _render_table(self) -> None:
        statuses = [s for s, b in self.status_buttons.items() if b.value]
        if not statuses and self.attention_box.value:
            statuses = list(ATTENTION)
        table = self._current_table()
        page = table.page(
            self.page_index, self.filter_text.value, statuses, self.group_box.value
        )
        self.page_index = page.page
        self._table_drawn = True
        self.table_html.value = page.html
        self.page_label.value = f"<span class='ck-hint'>{esc(page.summary)}</span>"
        self.prev_button.disabled = self.first_button.disabled = page.page == 0
        self.next_button.disabled = self.last_button.disabled = page.page >= page.pages - 1
        self.page_box.max = page.pages
        self.page_box.value = page.page + 1
        self._show_counts(table)

    def _show_counts(self, table: KeyTable) -> None:
        """The status buttons count the rows of the view on screen (as saved, or with
        the plan)."""
        counts = table.status_counts()
        for status, button in self.status_buttons.items():
            button.description = f"{status} {counts.get(status, 0):,}"

    # -- plan and preview --------------------------------------------------------------
    def _on_toggle(self, _change: Any = None) -> None:
        self.selected = [
            fix for fix, box in zip(self.fix_choices, self.fix_toggles) if box.value
        ]
        self.plan = self._make_plan()
        self._clear_error()
        self._refresh_snippet()
        self.findings_html.value = self._findings()
        self._request_preview()

    def set_fix(self, fix_or_kind: Any, on: bool = True) -> None:
        """Select or deselect a fix (by value or by kind), as its toggle would."""
        for fix, box in zip(self.fix_choices, self.fix_toggles):
            if fix == fix_or_kind or getattr(fix, "kind", None) == fix_or_kind:
                box.value = on

    def _request_preview(self) -> None:
        plan = self.plan
        if not plan.fixes:  # no fixes: the checkpoint as saved, already diagnosed
            self._jobs.submit("preview", lambda: self.report, self._show_preview)
            return
        self.progress.value = "<span class='ck-hint'>Updating the preview…</span>"
        self._jobs.submit("preview", lambda: plan.preview(self.model), self._show_preview)

    def _show_preview(self, preview: Report) -> None:
        self.preview = preview
        self._preview_table = None
        self.planline.value = self._plan_line()
        self.headline.value = render.preview_headline(preview, len(self.plan.fixes))
        for cls in list(self.headline._dom_classes):
            if cls.startswith("ck-status-"):
                self.headline.remove_class(cls)
        self.headline.add_class(f"ck-status-{preview.status}")
        self.progress.value = ""
        if self.table_view.value == "With the plan":
            self._render_table()

    def _code(self, plan: Any) -> str:
        return plan.to_code(model_name=self.model_name, model=self.model)

    def _refresh_snippet(self) -> None:
        """Regenerate the code view off the UI path (it inspects the whole model)."""
        plan = self.plan
        if not self.snippet.value:
            self.snippet.value = "<div class='ck-hint'>Writing the code…</div>"
        self._jobs.submit("snippet", lambda: self._code(plan), self._show_code)

    def _show_code(self, code: str) -> None:
        self.last_code = code
        self.snippet.value = code_html(code)
        if self.copy is not None:
            self.copy.code = code

    # -- actions -----------------------------------------------------------------------
    def export(self, next_cell: bool = True) -> ExportedCode:
        """The plan as plain torch code; also put into the next cell when called in one.

        A button click cannot create a cell (only a cell's own run can ask the front end
        for one), so the button copies where it can and says exactly what to do."""
        self._show_code(self._code(self.plan))
        placed = to_next_cell(self.last_code) if next_cell else False
        if placed:
            where = "It is in a new cell below this one."
        elif self.copy is not None:
            where = ("Use “Copy code” and paste it into a cell, or run "
                     "<code>dbg.export()</code> in a cell to get it in a new cell below.")
        else:
            where = ("Select it in the code view above and copy it, or run "
                     "<code>dbg.export()</code> in a cell to get it in a new cell below.")
        self.export_html.value = f"<div class='ck-msg'>Code ready. {where}</div>"
        return ExportedCode(self.last_code, placed)

    def apply(self, strict: bool | None = None) -> Any:
        """Apply the selected plan to the model (atomic) and show what happened."""
        self._clear_error()
        plan = self.plan
        n = len(self.report.columns.get("key", ())) if self.report is not None else 0
        self.progress.value = (f"<span class='ck-hint'>Applying the plan to "
                               f"{esc(self.model_name)} ({n:,} keys)…</span>")
        buttons = (self.apply_button, self.save_button, self.export_button)
        for b in buttons:
            b.disabled = True
        bar = self.apply_bar
        bar.value, bar.max = 0, 1
        bar.layout.display = ""

        def progress(done: int, total: int) -> None:
            # called by the load at counted steps (about 1% each), on this thread: the
            # kernel still sends each change to the front end during the call
            bar.max = max(total, 1)
            bar.value = min(done, bar.max)

        try:
            result = plan.apply(self.model, strict=strict, progress=progress)
        except BaseException as exc:  # an interrupt too: apply is atomic, say so
            why = ("Interrupted" if isinstance(exc, KeyboardInterrupt)
                   else error_sentence(exc))
            self.result_html.value = (
                f"<div class='ck-msg ck-result-bad'>Not applied; the model is unchanged. "
                f"{esc(why)}</div>"
            )
            self.applied_line.value = (
                f"<span class='ck-result-bad'>Apply did not run to the end at "
                f"{time.strftime('%H:%M')}; {esc(self.model_name)} is unchanged.</span>")
            raise
        finally:
            self.progress.value = ""
            bar.layout.display = "none"
            bar.value = 0
            for b in buttons:
                b.disabled = False
        self.last_result = result
        self.applied_plan = plan
        self._show_applied(result)
        bad = self.report.finding("nonfinite") if self.report is not None else None
        self.result_html.value = _result_html(result, self.model_name,
                                              list(bad.keys) if bad is not None else [])
        if self._dist is not None:
            self._dist.model_changed()
        return result

    def _show_applied(self, result: Any) -> None:
        """After Apply: the header says what the model now holds, the findings the plan
        resolved are marked, and the Keys tab shows the keys as the plan loaded them."""
        loaded = len(getattr(result, "loaded", []) or [])
        total = self.report.model_tensor_count
        kept = list(getattr(result, "missing", []) or [])
        bad = self.report.finding("nonfinite")
        ok = not kept and bad is None
        text = (f"Applied at {time.strftime('%H:%M')}: {loaded:,} tensors loaded into "
                f"{esc(self.model_name)}, atomically")
        if kept:
            text += f"; {len(kept):,} of its {total:,} tensors keep their initial values"
        if bad is not None:
            n = len(bad.keys)
            text += f"; {n:,} loaded tensor{'s hold' if n != 1 else ' holds'} NaN/Inf"
        self.applied_line.value = (
            f"<span class='{'ck-result-ok' if ok else 'ck-result-bad'}'>{text}.</span>")
        self.findings_html.value = self._findings()
        if self._table_drawn and self.table_view.value != "With the plan":
            self.table_view.value = "With the plan"  # redraws, previewing if needed

    def save(self, path: str, format: str | None = None) -> Path:
        """Write the repaired checkpoint to a new file (never over the source)."""
        path = str(path).strip()
        if not path:
            raise CheckpointError("Type a path to save the repaired checkpoint to.")
        written = self.plan.save(path, format=format, model=self.model)
        where = Path(written) if isinstance(written, (str, Path)) else Path(path)
        self.result_html.value = (
            f"<div class='ck-msg ck-result-ok'>Saved the repaired checkpoint to "
            f"{esc(where)}.</div>"
        )
        return where

    def wait(self, timeout: float = 60.0) -> CheckpointDebugger:
        """Wait for background work (previews, statistics) to finish."""
        self._jobs.wait(timeout)
        return self

    # -- distributions (built on first visit) -------------------------------------------
    def _on_tab(self, change: Any) -> None:
        if change["new"] == 1 and not self._table_drawn:
            self._render_table()
        elif change["new"] == 2:
            self.open_distributions()
        elif change["new"] == 3 and not self.last_code:
            self._refresh_snippet()  # written on first visit, not at open

    def open_distributions(self) -> Any:
        if self._dist is None:
            from .distributions import DistributionsPanel

            self._dist = DistributionsPanel(self)
            replace_children(self.dist_tab, (self._dist.box,))
            self._dist.start()
        return self._dist

    # -- lifetime ----------------------------------------------------------------------
    def close(self) -> None:
        """Close the debugger and every widget inside it, and let go of the report, the
        preview and the key tables. ipywidgets keeps each open widget alive (a Box's
        ``close`` leaves its children open, and their callbacks hold this debugger),
        so without this a 100,000-key debugger keeps its checkpoint in memory until
        the kernel restarts. The model stays the caller's."""
        self._jobs.cancel(self.close_wait_s)  # no job writes into closed widgets
        self.leave_static()
        for child in self.children:
            close_tree(child)
        close_tree(self.layout)
        super().close()
        self.preview = self._key_table = self._preview_table = self._dist = None
        self._evidence = {}

    # -- display -----------------------------------------------------------------------
    def to_html(self, note: str | None = None) -> str:
        """A static report (front ends without widget support, saved notebooks)."""
        from .static import static_html

        return static_html(self.report, self.plan, self.model_name, self._key_table,
                           self._evidence, note=STATIC_NOTE if note is None else note)

    def _repr_html_(self) -> str:
        return self.to_html()

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        """The widget view plus a static ``text/html`` report and a one-line text.

        Front ends with ipywidgets 8 render the view (it outranks text/html); the others
        (GitHub, nbviewer, Colab without custom widgets, a saved notebook read without a
        kernel) render the HTML; a terminal prints the text.
        """
        bundle = dict(super()._repr_mimebundle_(**kwargs) or {})
        bundle["text/html"] = self.to_html()
        bundle["text/plain"] = repr(self)
        return bundle

    def leave_static(self) -> None:
        """Replace this debugger's output with the static report (on close, on its
        cell's next run, at the kernel's exit): what a reopened notebook then shows."""
        if getattr(self, "_display", None) is None:
            return
        leave_static(self, {"text/html": self.to_html(note=CLOSED_NOTE),
                            "text/plain": repr(self)})
        clear_reopen_fallback(self)

    def _ipython_display_(self) -> None:
        """Show once per cell run: ``%ckdebug`` displays and also returns the widget;
        remembered, so the kernel's exit leaves the static report in its place."""
        shown = getattr(self, "_display", None)
        bundle = self._repr_mimebundle_()
        show_once(self, bundle)
        if self._display is not shown:  # displayed now (not earlier in this cell's run)
            show_reopen_fallback(self, bundle["text/html"].replace(STATIC_NOTE, CLOSED_NOTE, 1))
        register_open(self)

    def __repr__(self) -> str:
        return f"<CheckpointDebugger: {self.report.headline}>"


CLOSED_NOTE = (
    "The interactive checkpoint debugger that stood here was closed (or its kernel "
    "stopped); this is its report. Run the cell again to open it."
)
STATIC_NOTE = (
    "Static view of the checkpoint debugger: this front end did not render the "
    "interactive widget (it needs ipywidgets 8). <code>dbg.apply()</code>, "
    "<code>dbg.export()</code> and <code>dbg.save(path)</code> do what its buttons do."
)


def _result_html(result: Any, model_name: str, nonfinite: list[str] | None = None) -> str:
    loaded = list(getattr(result, "loaded", []) or [])
    missing = list(getattr(result, "missing", []) or [])
    unexpected = list(getattr(result, "unexpected", []) or [])
    mismatched = list(getattr(result, "mismatched", []) or [])
    parts = [f"Applied: {len(loaded):,} tensors loaded into {esc(model_name)}."]
    if missing:
        parts.append(f"{len(missing):,} kept their current values: "
                     f"{esc(_short(missing))}.")
    if unexpected:
        parts.append(f"{len(unexpected):,} checkpoint tensors were not used: "
                     f"{esc(_short(unexpected))}.")
    if mismatched:
        parts.append(f"{len(mismatched):,} had mismatched shapes: {esc(_short(mismatched))}.")
    if nonfinite:
        parts.append(f"But {len(nonfinite):,} of the checkpoint's tensors hold NaN/Inf: "
                     f"{esc(_short(nonfinite))}; the model's outputs will not be finite.")
    cls = ("ck-result-bad" if nonfinite else
           "ck-result-ok" if not (missing or mismatched) else "ck-result-partial")
    return f"<div class='ck-msg {cls}'>{' '.join(parts)}</div>"


def _short(keys: list[Any], limit: int = 3) -> str:
    shown = ", ".join(str(k) for k in keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


class ExportedCode(str):
    """The snippet ``export()`` returns: a plain string, shown in one line when it is a
    cell's last value (the code itself is in the code view, or in the new cell)."""

    placed: bool = False

    def __new__(cls, code: str, placed: bool = False) -> ExportedCode:
        obj = super().__new__(cls, code)
        obj.placed = placed
        return obj

    def __repr__(self) -> str:
        lines = self.count("\n") + (0 if self.endswith("\n") else 1)
        where = "in a new cell below" if self.placed else "in the code view"
        return f"<plain-torch code, {lines} lines, {where}; print() it to read it here>"

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(repr(self))
