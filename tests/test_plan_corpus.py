"""Plans judged by where every model tensor's value comes from (issue 18, item 8).

Each case of tests/plan_corpus.py is a checkpoint written by a real library and the
careful engineer's answer for the model it goes into. For each: the status is the one
that answer implies; the provenance names exactly the tensors kept at their initial
value, the learned tensors left unused and the bookkeeping; after ``report.plan.apply``
and after running ``report.plan.to_code()`` in a fresh namespace, every model tensor
equals the answer bit for bit (a tensor that differs must at least be named by a
partial or broken report: no case ends with a model tensor silently wrong); and the
repaired model's forward pass equals the library's own model's.

Run with ``-s`` to see the summary table.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from plan_corpus import FAILED, LIBRARY, PLANNED, SKIPPED, Case, build_cases, quiet

import ckwidget as ck

NAMES = [name for names in PLANNED.values() for name in names]
GROUP = {name: group for group, names in PLANNED.items() for name in names}


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Case]:
    return build_cases(tmp_path_factory.mktemp("plan_corpus"))


@pytest.fixture(scope="module")
def reports(cases: dict[str, Case]) -> dict[str, object]:
    return {}  # name -> report, filled by the case tests, reused by the summary


def diagnose(case: Case, reports: dict[str, object]):
    if case.name not in reports:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reports[case.name] = ck.diagnose(case.path, case.make_model())
    return reports[case.name]


def case_of(cases: dict[str, Case], name: str) -> Case:
    if name in SKIPPED:
        pytest.skip(SKIPPED[name])
    if name in FAILED:
        pytest.fail(FAILED[name])
    return cases[name]


def compare(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> list[str]:
    """The model keys whose final value is not the answer (dtype, shape or bits)."""
    wrong = sorted(set(expected) ^ set(state))
    for key, want in expected.items():
        got = state.get(key)
        if got is not None and not (got.dtype == want.dtype and got.shape == want.shape
                                    and torch.equal(got, want)):
            wrong.append(key)
    return wrong


def describe(key: str, got: torch.Tensor | None, want: torch.Tensor, init: torch.Tensor,
             where: str) -> str:
    if got is None:
        return f"{key}: not in the model's state"
    if got.shape != want.shape or got.dtype != want.dtype:
        return f"{key}: {tuple(got.shape)} {got.dtype}, expected {tuple(want.shape)} {want.dtype}"
    what = "its initial value" if torch.equal(got, init) else "another value"
    diff = (got.double() - want.double()).abs().max().item()
    n = int((got != want).sum())
    return (f"{key}: holds {what} ({n} of {want.numel()} elements differ, max |diff| "
            f"{diff:.3g}); provenance says {where!r}")


def named_by(report) -> set[str]:
    """The model keys a report names as not holding the checkpoint's value."""
    names = set(report.provenance.kept_initial)
    for finding in report.findings:
        if finding.severity in ("error", "warning"):
            names.update(finding.keys)
    return names


@pytest.mark.parametrize("name", NAMES)
def test_the_plan_loads_what_a_careful_engineer_would(cases, reports, name):
    case = case_of(cases, name)
    report = diagnose(case, reports)
    prov = report.provenance
    problems: list[str] = []
    if report.status != case.status:
        problems.append(f"status {report.status!r}, expected {case.status!r} "
                        f"({case.why}); headline: {report.headline}")
    if report.entry != case.entry:
        problems.append(f"entry {report.entry!r}, expected {case.entry!r}")
    if set(prov.model) != set(case.expected):
        problems.append(f"provenance covers other model keys: "
                        f"{sorted(set(prov.model) ^ set(case.expected))[:6]}")
    if set(prov.kept_initial) != case.kept_initial:
        problems.append(f"kept at initial value: {sorted(prov.kept_initial)}, expected "
                        f"{sorted(case.kept_initial)}")
    if set(prov.unused_learned) != case.unused_learned:
        problems.append(f"unused learned: {sorted(prov.unused_learned)}, expected "
                        f"{sorted(case.unused_learned)}")
    booked = {k for k, w in prov.checkpoint.items() if w == "bookkeeping"}
    if not case.bookkeeping <= booked:
        problems.append(f"bookkeeping: {sorted(booked)}, expected at least "
                        f"{sorted(case.bookkeeping)} ({prov.checkpoint})")

    said = report.headline + " " + " ".join(k for f in report.findings for k in f.keys)
    unnamed = sorted(k for k in case.kept_initial | case.unused_learned if k not in said)
    if unnamed:
        problems.append(f"not named in the headline or a finding: {unnamed}")

    init = case.make_model().state_dict()
    named = named_by(report)
    for how in ("plan.apply", "exec(plan.to_code())"):
        model = case.make_model()
        try:
            with quiet():
                if how == "plan.apply":
                    report.plan.apply(model)
                else:
                    code = report.plan.to_code("model")
                    exec(compile(code, f"<{name} snippet>", "exec"),
                         {"__name__": "__snippet__", "model": model})
        except Exception as exc:
            problems.append(f"{how} raised {type(exc).__name__}: {exc}")
            continue
        state = model.state_dict()
        wrong = compare(state, case.expected)
        for key in wrong[:8]:
            problems.append(f"{how}: " + describe(key, state.get(key), case.expected[key],
                                                  init[key], prov.model.get(key, "?")))
        if len(wrong) > 8:
            problems.append(f"{how}: ... {len(wrong)} tensors differ in all")
        silent = [k for k in wrong if k not in named]
        if wrong and (report.status not in ("partial", "broken") or silent):
            problems.append(f"{how}: silently wrong (not named by a partial/broken report): "
                            f"{silent[:8] or wrong[:8]}")
        if case.forward is not None and not wrong:
            out = case.forward(model)
            if not torch.equal(out, case.reference_output):
                diff = (out.double() - case.reference_output.double()).abs().max().item()
                problems.append(f"{how}: forward pass differs from the library's model "
                                f"(max |diff| {diff:.3g})")
    if problems:  # every problem of the case at once, without a traceback
        pytest.fail(f"{name} ({LIBRARY[GROUP[name]]}):\n  " + "\n  ".join(problems),
                    pytrace=False)


def test_summary_table(cases, reports):
    """One line per case: what ckwidget decided and where the model's values come from."""
    rows = [("case", "library", "status", "expected", "loaded", "kept init", "unused learned")]
    for name in NAMES:
        if name in SKIPPED or name in FAILED:
            why = SKIPPED.get(name) or FAILED[name]
            rows.append((name, LIBRARY[GROUP[name]], "skipped" if name in SKIPPED else "failed",
                         "", "", "", why[:60]))
            continue
        case = cases[name]
        try:
            report = diagnose(case, reports)
            prov = report.provenance
            loaded = sum(1 for w in prov.model.values() if w.startswith("checkpoint"))
            rows.append((name, case.library, report.status, case.status, str(loaded),
                         str(len(prov.kept_initial)), str(len(prov.unused_learned))))
        except Exception as exc:  # the case's own test reports it in full
            rows.append((name, case.library, f"raised {type(exc).__name__}", case.status,
                         "", "", ""))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    print()
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    assert len(rows) == len(NAMES) + 1
