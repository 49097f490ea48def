"""The verdict of ``check`` and ``fix``: the report's status as a word and an exit code.

The status is the diagnosis's own (``Report.status``); the command adds only two things
it alone knows: whether a broken report is the file's fault (exit 3, what ``inspect``
says of the file) or the model's (exit 2), and ``--strict``. ``inspect`` has no report:
its verdict is :func:`file_state`, the state of the file alone.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..formatting import count_text
from ..kinds import NO_WEIGHTS_KINDS
from .exit_codes import BAD_FILE, CANNOT_LOAD, FIXABLE, OK

if TYPE_CHECKING:  # pragma: no cover
    from ..diagnosis.report import Report

# Report.status -> exit code ("broken" becomes BAD_FILE when the file itself is broken).
STATUS_CODES = {"ok": OK, "fixable": FIXABLE, "partial": CANNOT_LOAD,
                "broken": CANNOT_LOAD, "unsafe": BAD_FILE}


def file_state(ckpt: Any, findings: Iterable[Any] = ()) -> str:
    """"unsafe", "broken" or "ok": whether the file itself can give weights at all.

    A no-weights kind counts as the diagnosis counts it, only as an error (a DCP folder's
    or a PEFT adapter's foreign-format note is not a broken file). ``findings`` adds to
    the file's own (a report's, which holds what verifying the bytes found)."""
    found = [*ckpt.findings, *findings]
    kinds = {f.kind for f in found}
    errors = {f.kind for f in found if f.severity == "error"}
    if "malicious" in kinds:
        return "unsafe"
    if errors & NO_WEIGHTS_KINDS or ("corrupt" in kinds and not ckpt.tensors) or (
            damaged(found)):
        return "broken"
    return "ok"


def damaged(findings: Iterable[Any]) -> bool:
    """Whether some record's bytes fail their CRC: the weights are not what was saved
    (torch loads them without a word), so no weights should be taken from the file."""
    return any(f.severity == "error" and f.details.get("crc") for f in findings)


def _strict_refuses(report: Report, strict: bool) -> bool:
    return strict and any(f.leaves_values_out for f in report.plan)


def exit_code(report: Report, strict: bool = False) -> int:
    """The check verdict as an exit code (see EXIT_CODES_HELP): from ``report.status``."""
    code = STATUS_CODES[report.status]
    if report.status == "broken" and file_state(report.checkpoint, report.findings) != "ok":
        return BAD_FILE
    if code == FIXABLE and _strict_refuses(report, strict):
        return CANNOT_LOAD
    return code


def verdict(report: Report, strict: bool = False) -> str:
    """``word (exit N): why``, the line check and fix print under the headline."""
    code = exit_code(report, strict)
    status = report.status
    if code == BAD_FILE:
        word = "unsafe file" if status == "unsafe" else "broken file"
        why = "no weights can be taken from it safely"
    elif status == "ok":
        word, why = "ok", "loads as is"
    elif status == "partial":
        word = "partial"
        why = ("values are not finite" if report.finding("nonfinite") else
               "some model tensors keep their initial values while learned values go unused")
    elif status == "broken":
        word, why = "cannot be repaired", "the plan does not give the model all it needs"
    elif code == CANNOT_LOAD:  # fixable, refused by --strict
        word = "cannot be repaired"
        why = ("--strict, and the plan leaves checkpoint values out"
               if report.loadable_after_plan == report.model_tensor_count else
               "--strict, and some model tensors would keep their initial values")
    else:
        word, why = "fixable", "loads after the suggested plan"
        kept = report.model_tensor_count - report.loadable_after_plan
        if kept > 0:
            many = kept != 1
            why += (f" ({count_text(kept)} model tensor{'s keep their' if many else ' keeps its'}"
                    f" initial value{'s' if many else ''})")
    return f"{word} (exit {code}): {why}"


def colour(code: int) -> str:
    """The colour of a verdict line."""
    return "green" if code == OK else "yellow" if code == FIXABLE else "red"
