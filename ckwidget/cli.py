"""The ``ckwidget`` command: inspect, check and fix checkpoints from a terminal or CI job.

A view over the public API (``open_checkpoint``, ``diagnose``, ``Plan``); it holds no
diagnosis of its own. ``inspect`` never imports torch, so it starts in a fraction of a
second; ``check`` and ``fix`` import it (and the diagnosis) only when they run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

from . import __version__
from .cli_format import (
    ICONS,
    Style,
    clean,
    group_keys,
    human_bytes,
    json_safe,
    shape_text,
    short,
    table,
    use_colour,
    width,
    wrapped,
)
from .errors import CheckpointError, FixError
from .kinds import NO_WEIGHTS_KINDS

if TYPE_CHECKING:  # pragma: no cover
    from .diagnosis.report import Report

# Exit codes (documented in --help; CI pipelines depend on them).
OK = 0            # check: loads as is. inspect: file readable and safe. fix: file written.
FIXABLE = 1       # check: loads only after the suggested plan.
CANNOT_LOAD = 2  # check/fix: the plan leaves model tensors missing (or --strict and
#                   something would be dropped).
BAD_FILE = 3      # unsafe (malicious) or broken file: not a checkpoint, truncated, corrupt
#                   with no tensors, bytes that fail their CRC, LFS pointer, HTML page,
#                   foreign format.
USAGE = 4         # a mistake in the command: bad option, missing path, bad --model, bad -o.
MODEL_FAILED = 5  # the --model module or factory raised, or did not return an nn.Module.
INTERNAL = 70     # a bug in ckwidget (EX_SOFTWARE); the message asks for a report.

# Fixes that leave checkpoint values out of the model (refused by --strict).
DROPPING_FIXES = {"drop-keys", "resize-copy"}

EXIT_CODES_HELP = """\
exit codes:
  0  check: the checkpoint loads into the model as is (load_state_dict(strict=True))
     inspect: the file is readable and names nothing unsafe;  fix: the file was written
  1  check: it loads only after the suggested plan (a prefix, a nested entry, renames...)
  2  check/fix: it cannot be repaired: after the plan some model tensors are still
     missing or the wrong shape, or --strict and the plan drops checkpoint values
  3  the file is unsafe (names code that would run on load) or broken (not a
     checkpoint, truncated, corrupt with no tensors, records that fail their CRC
     (see --verify), Git LFS pointer, HTML page, another framework's format)
  4  usage error: bad option, missing file, bad --model, output path refused
  5  --model failed: importing MODULE or calling FACTORY raised, or it returned
     something that is not a torch.nn.Module
  70 internal error in ckwidget (please report it)
"""

MAIN_EPILOG = f"""\
examples:
  ckwidget inspect model.pt                    what is in the file (no torch needed)
  ckwidget inspect model.safetensors --json    the same, for scripts
  ckwidget check ckpt.pt --model models.py:build
  ckwidget check ckpt.pt --model mypkg.nets:ResNet --entry state_dict --strict
  ckwidget fix ckpt.pt --model models.py:build -o repaired.safetensors --code
  ckwidget inspect s3://bucket/run/model.pt -v  a remote file, read by ranges

Opening a file never runs code from it: pickles are read symbolically.
Run `ckwidget COMMAND --help` for the options of each command.

{EXIT_CODES_HELP}"""

MODEL_HELP = (
    "MODULE:FACTORY building the model: a module path (mypkg.models:build) or a Python "
    "file (models.py:Net); FACTORY is a function or class called with no arguments. "
    "It is built on the meta device when it allows (FACTORY(device='meta') or under "
    "torch.device('meta')), so a big model costs no memory.")


VERIFY_HELP = ("read every byte of the file once: the CRC-32 of every record of a torch "
               "zip archive (torch never checks them, so damaged weights load without a "
               "word), every byte of safetensors files; a mismatch is a broken file (exit "
               "3)")


PATH_HELP = ("checkpoint file or folder, or its URL (s3://, gs://, az://, https://, hf://, "
             "any fsspec protocol; a folder URL over HTTP ends with '/'): read by ranges, "
             "never downloaded whole (pip install ckwidget[remote])")
STORAGE_HELP = ("an fsspec storage option for a URL (repeatable), e.g. "
                "--storage-option endpoint_url=http://localhost:9000 --storage-option "
                "anon=true; VALUE is read as JSON when it can be")


class UsageError(Exception):
    """A mistake in the command line; one sentence, exit code 4."""


class _Parser(argparse.ArgumentParser):
    """argparse, but usage mistakes exit with USAGE and no Python noise."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(USAGE, f"ckwidget: {message} (see --help)\n")


class _Out:
    """Where a command writes: stdout, colour decided once."""

    def __init__(self, stream: TextIO | None = None) -> None:
        stream = sys.stdout if stream is None else stream
        self.stream = stream
        self.style = Style(use_colour(stream))
        self.width = width(stream)

    def __call__(self, line: str = "") -> None:
        self.stream.write(line + "\n")

    def lines(self, lines: Sequence[str]) -> None:
        for line in lines:
            self(line)

    def heading(self, text: str) -> None:
        self()
        self(self.style(text, "bold"))


# -- shared pieces -----------------------------------------------------------------------
def _existing(path: str) -> Path | str:
    """The checkpoint path (a URL stays a string: it is read where it lives)."""
    from .readers import is_url

    if is_url(path):
        return path
    p = Path(path).expanduser()
    if not p.exists():
        raise UsageError(f"There is no file or folder at {path!r}.")
    return p


def _storage_options(args: argparse.Namespace) -> dict[str, Any] | None:
    """``--storage-option KEY=VALUE`` (repeatable): fsspec options for a URL; a VALUE
    that reads as JSON (true, 3, {"region_name": "x"}) is taken as such."""
    options: dict[str, Any] = {}
    for item in getattr(args, "storage_option", None) or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--storage-option takes KEY=VALUE, not {item!r}.")
        try:
            options[key.strip()] = json.loads(value)
        except ValueError:
            options[key.strip()] = value
    return options or None


def _open(args: argparse.Namespace, path: Path | str) -> Any:
    from .readers import open_checkpoint

    return open_checkpoint(path, _storage_options(args))


def _code_path(args: argparse.Namespace) -> str | None:
    """The path the generated code names: the plan's own for a URL (its checkpoint knows
    how to read it), else the path as typed."""
    from .readers import is_url

    return None if is_url(args.path) else args.path


def _print_io(out: _Out, ckpt: Any) -> None:
    """-v: what reading a remote checkpoint cost (requests, bytes), and any downloads."""
    stats = getattr(ckpt, "io_stats", None)
    if stats is None:
        return
    out.heading("Remote reads")
    out(f"  {clean(stats.summary())}")
    for note in stats.notes:
        out.lines(wrapped("  - ", clean(note), out.width))


def file_state(ckpt: Any) -> str:
    """"unsafe", "broken" or "ok": whether the file itself can give weights at all."""
    kinds = {f.kind for f in ckpt.findings}
    if "malicious" in kinds:
        return "unsafe"
    if kinds & NO_WEIGHTS_KINDS or ("corrupt" in kinds and not ckpt.tensors) or (
            _damaged(ckpt.findings)):
        return "broken"
    return "ok"


def _damaged(findings: Sequence[Any]) -> bool:
    """Whether some record's bytes fail their CRC: the weights are not what was saved
    (torch loads them without a word), so no weights should be taken from the file."""
    return any(f.severity == "error" and f.details.get("crc") for f in findings)


def _verify(ckpt: Any) -> None:
    """``--verify``: read every byte (CRCs of a zip archive, safetensors ranges) and add
    what does not match to the file's findings; a progress line when stderr is a terminal."""
    from .checkpoint import sort_findings
    from .readers.verify import unreported

    progress = _Progress(sys.stderr, ckpt.path.name) if _is_tty(sys.stderr) else None
    try:
        found = ckpt.verify(progress)
    finally:
        if progress is not None:
            progress.close()
    ckpt.findings = sort_findings([*ckpt.findings, *unreported(found, ckpt.findings)])


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class _Progress:
    """One stderr line, rewritten whenever the whole percentage changes."""

    def __init__(self, stream: TextIO, name: str) -> None:
        self.stream = stream
        self.name = clean(name)
        self.shown = -1

    def __call__(self, done: int, total: int) -> None:
        percent = 100 * done // total if total else 100
        if percent != self.shown:
            self.shown = percent
            self.stream.write(f"\rckwidget: verifying {self.name}: {percent:3d}% of "
                              f"{human_bytes(total)}")
            self.stream.flush()

    def close(self) -> None:
        if self.shown >= 0:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def _finding_doc(f: Any) -> dict[str, Any]:
    return {"kind": f.kind, "severity": f.severity, "message": f.message,
            "keys": list(f.keys), "fixes": [getattr(x, "kind", str(x)) for x in f.fixes]}


def _print_findings(out: _Out, findings: Sequence[Any], title: str = "Findings",
                    verbose: bool = True) -> None:
    """The findings; without ``verbose``, info findings are counted in one line instead
    (they stand in most reports, and the eye learns to skip a block that always says
    them)."""
    hidden = [] if verbose else [f for f in findings if f.severity == "info"]
    findings = [f for f in findings if f not in hidden]
    if not findings:
        if hidden:
            out(f"  ({len(hidden)} info finding{'s' if len(hidden) != 1 else ''}: -v shows "
                f"{'them' if len(hidden) != 1 else 'it'})")
        return
    out.heading(f"{title} ({len(findings)})")
    kind_w = max(len(clean(f.kind)) for f in findings)
    for f in findings:
        label = f"{ICONS.get(f.severity, '-')} {f.severity:<7}"
        kind = clean(f.kind).ljust(kind_w)
        prefix_plain = f"  {label}  {kind}  "
        lines = wrapped(prefix_plain, clean(f.message), out.width)
        coloured = f"  {out.style.severity(label, f.severity)}  {out.style(kind, 'bold')}  "
        lines[0] = coloured + lines[0][len(prefix_plain):]
        out.lines(lines)
    if hidden:
        out(f"  ({len(hidden)} info finding{'s' if len(hidden) != 1 else ''} more: -v shows "
            f"{'them' if len(hidden) != 1 else 'it'})")


# -- inspect -----------------------------------------------------------------------------
INSPECT_ROWS = 200
VERSION_WORDS = ("version", "protocol")
HIDDEN_META = {"open_seconds"}


def _meta_items(meta: dict[str, Any]) -> list[tuple[str, Any]]:
    """Metadata flattened one level (``facts.epoch``), internal timings left out."""
    items: list[tuple[str, Any]] = []
    for k, v in meta.items():
        if k in HIDDEN_META:
            continue
        if isinstance(v, dict) and v and len(v) <= 40:
            items += [(f"{k}.{kk}", vv) for kk, vv in v.items()]
        else:
            items.append((str(k), v))
    return items


def _tensor_doc(info: Any) -> dict[str, Any]:
    doc = {"shape": list(info.shape), "dtype": info.dtype, "device": info.device,
           "nbytes": info.nbytes}
    if info.layout != "strided":
        doc["layout"] = info.layout
    return doc


def inspect_document(ckpt: Any) -> dict[str, Any]:
    """The machine-readable ``inspect --json`` document."""
    return {
        "path": str(ckpt.path) if ckpt.path is not None else None,
        "format": ckpt.format,
        "size": ckpt.size,
        "state": file_state(ckpt),
        "tensor_count": len(ckpt.tensors),
        "tensor_bytes": sum(i.nbytes for i in ckpt.tensors.values()),
        "candidates": list(ckpt.candidates),
        "metadata": json_safe(ckpt.metadata),
        "tensors": {k: _tensor_doc(i) for k, i in ckpt.tensors.items()},
        "findings": [_finding_doc(f) for f in ckpt.findings],
    }


def _tensor_rows(tensors: dict[str, Any], grouped: bool) -> list[list[str]]:
    show_device = any(i.device != "cpu" for i in tensors.values())

    def row(name: str, count: int, info: Any, total: int) -> list[str]:
        dtype = info.dtype if info.layout == "strided" else f"{info.dtype} ({info.layout})"
        cells = [clean(name), f"×{count}" if count > 1 else "", clean(dtype),
                 shape_text(info.shape)]
        if show_device:
            cells.append(clean(info.device))
        cells.append(human_bytes(total))
        return cells

    if not grouped:
        return [row(k, 1, i, i.nbytes) for k, i in tensors.items()]
    groups = group_keys(tensors, lambda i: (i.dtype, i.shape, i.device, i.layout))
    return [row(name, n, info, info.nbytes * n) for name, n, info in groups]


def _print_inspect(out: _Out, ckpt: Any, show_all: bool, verbose: bool = True) -> None:
    st = out.style
    tensors = ckpt.tensors
    total = sum(i.nbytes for i in tensors.values())
    where = clean(ckpt.path) if ckpt.path is not None else "<in memory>"
    out(st("ckwidget inspect", "bold") + f"  {where}")
    facts: list[tuple[str, str]] = [("format", clean(ckpt.format))]
    facts.append(("size", f"{human_bytes(ckpt.size)} on disk; {len(tensors)} tensors "
                          f"holding {human_bytes(total)}"))
    items = _meta_items(ckpt.metadata)
    versions = [(k, v) for k, v in items if any(w in k.lower() for w in VERSION_WORDS)]
    others = [(k, v) for k, v in items if (k, v) not in versions]
    if versions:
        facts.append(("versions", "; ".join(f"{clean(k)} {short(v, 60)}" for k, v in versions)))
    if ckpt.candidates:
        def entry(c: str) -> str:
            n = len(ckpt.members(c))
            return f"{'(top level)' if c == '' else repr(clean(c))} ({n} tensors)"
        facts.append(("entries", ", ".join(entry(c) for c in ckpt.candidates[:8])
                      + (f", ... {len(ckpt.candidates) - 8} more"
                         if len(ckpt.candidates) > 8 else "")
                      + "  (best first)"))
    dtypes: dict[str, int] = {}
    for i in tensors.values():
        dtypes[i.dtype] = dtypes.get(i.dtype, 0) + 1
    if dtypes:
        facts.append(("dtypes", ", ".join(f"{clean(d)} ×{n}" for d, n in dtypes.items())))
    for label, text in facts:
        out.lines(wrapped(f"  {label:<9} ", text, out.width))
    if others:
        out.heading("Metadata")
        limit = len(others) if show_all else 30
        out.lines(table([[clean(k), short(v, max(40, out.width - 40))]
                         for k, v in others[:limit]]))
        if len(others) > limit:
            out(f"  ... {len(others) - limit} more (--all shows them, --json gives them all)")
    if tensors:
        rows = _tensor_rows(tensors, grouped=not show_all)
        what = "every tensor" if show_all else "repeated layers collapsed; --all lists each"
        out.heading(f"Tensors ({len(tensors)}; {what})")
        limit = len(rows) if show_all else INSPECT_ROWS
        size_col = len(rows[0]) - 1
        out.lines(table(rows[:limit], right=(size_col,)))
        if len(rows) > limit:
            out(f"  ... {len(rows) - limit} more rows (--all lists every tensor)")
    _print_findings(out, ckpt.findings, verbose=verbose)
    state = file_state(ckpt)
    if state != "ok":
        out()
        verdict = ("UNSAFE: do not load this file with pickle (exit 3)" if state == "unsafe"
                   else "BROKEN: this file holds no usable checkpoint (exit 3)")
        out(st(verdict, "red"))


def cmd_inspect(args: argparse.Namespace) -> int:
    path = _existing(args.path)
    try:
        ckpt = _open(args, path)
        if args.verify:
            _verify(ckpt)
    except CheckpointError as exc:
        return _unreadable(args, path, exc)
    out = _Out()
    if args.json:
        out(json.dumps(inspect_document(ckpt), indent=2))
    else:
        _print_inspect(out, ckpt, args.all, args.verbose)
        if args.verbose:
            _print_io(out, ckpt)
    return BAD_FILE if file_state(ckpt) != "ok" else OK


def _unreadable(args: argparse.Namespace, path: Path | str, exc: Exception) -> int:
    """Nothing at all could be described: one sentence, exit 3 (a JSON document with --json)."""
    if getattr(args, "json", False):
        print(json.dumps({"path": str(path), "state": "broken", "error": str(exc)}, indent=2))
    print(f"ckwidget: {clean(exc)}", file=sys.stderr)
    return BAD_FILE


# -- check and fix: the model side -------------------------------------------------------
def _diagnose(args: argparse.Namespace) -> tuple[Any, Any, Any, bool] | int:
    """(report, model, factory, stand-in) or an exit code when the file cannot be read."""
    path = _existing(args.path)
    from .cli_model import build_model, load_factory

    factory, name = load_factory(args.model)
    model, stand_in = build_model(factory, name, meta=not args.no_meta)
    from .diagnosis import diagnose

    try:
        ckpt = _open(args, path)
        if args.verify:
            _verify(ckpt)
    except CheckpointError as exc:
        return _unreadable(args, path, exc)
    if args.entry and args.entry not in ckpt.candidates and not ckpt.members(args.entry):
        shown = ", ".join(repr(c) for c in ckpt.candidates[:8]) or "none"
        raise UsageError(f"The checkpoint has no entry {args.entry!r} holding tensors "
                         f"(entries that look like state dicts: {shown}).")
    report = diagnose(ckpt, model, entry=args.entry, map_location=args.map_location)
    return report, model, factory, stand_in


def exit_code(report: Report, strict: bool = False) -> int:
    """The check verdict as an exit code (see EXIT_CODES_HELP)."""
    if (report.status == "unsafe" or file_state(report.checkpoint) != "ok"
            or _damaged(report.findings)):
        return BAD_FILE
    if report.loads_cleanly:
        return OK
    dropping = any(f.kind in DROPPING_FIXES for f in report.plan)
    short_after = report.loadable_after_plan < report.model_tensor_count
    if report.status in ("broken", "partial") or short_after or (strict and dropping):
        return CANNOT_LOAD
    return FIXABLE


VERDICTS = {
    OK: ("ok", "loads as is"),
    FIXABLE: ("fixable", "loads after the suggested plan"),
    CANNOT_LOAD: ("cannot be repaired", "the plan does not give the model all it needs"),
    BAD_FILE: ("unsafe or broken file", "no weights can be taken from it safely"),
}


def _verdict(code: int, report: Report, strict: bool) -> str:
    word, why = VERDICTS[code]
    if code == BAD_FILE:
        word = "unsafe file" if report.status == "unsafe" else "broken file"
    if code == CANNOT_LOAD and report.status == "partial":
        word = "partial"
        why = ("values are not finite" if report.finding("nonfinite") else
               "some model tensors keep their initial values while learned values go unused")
    elif code == CANNOT_LOAD and strict and (
            report.loadable_after_plan == report.model_tensor_count):
        why = "--strict, and the plan leaves checkpoint values out"
    return f"{word} (exit {code}): {why}"


def _attention_rows(report: Report, show_all: bool) -> tuple[list[list[str]], int]:
    """Rows of report.table whose status is not "match" (the first 20 unless show_all)."""
    t = report.table
    if not len(t):
        return [], 0
    t = t[t["status"] != "match"]
    total = len(t)
    if not show_all:
        t = t.head(20)

    def side(row: Any, prefix: str) -> str:
        shape = row.get(f"{prefix}_shape")
        if not isinstance(shape, tuple):
            return "-"
        dtype = row.get(f"{prefix}_dtype")
        return f"{shape_text(shape)} {dtype if isinstance(dtype, str) else ''}".strip()

    rows = []
    for row in t.to_dict("records"):
        note = row.get("note")
        rows.append([clean(row["key"]), clean(row["status"]), clean(side(row, "checkpoint")),
                     clean(side(row, "model")), clean(note if isinstance(note, str) else "")])
    return rows, total


def check_document(report: Report, code: int, path: str, model_spec: str) -> dict[str, Any]:
    """The machine-readable ``check --json`` document."""
    from .readers import is_url

    rows, _ = _attention_rows(report, show_all=True)
    return {
        "path": path, "model": model_spec, "model_class": report.model_name,
        "format": report.checkpoint.format, "entry": report.entry,
        "status": report.status, "exit_code": code, "headline": report.headline,
        "loads_cleanly": bool(report.loads_cleanly),
        "model_tensor_count": report.model_tensor_count,
        "loadable_count": report.loadable_count,
        "loadable_after_plan": report.loadable_after_plan,
        "findings": [_finding_doc(f) for f in report.findings],
        "plan": [{"kind": f.kind, "description": f.describe()} for f in report.plan],
        "keys": [dict(zip(("key", "status", "checkpoint", "model", "note"), r)) for r in rows],
        "code": (report.plan.to_code(path=None if is_url(path) else path)
                 if len(report.plan) else None),
    }


def _print_report(out: _Out, report: Report, code: int, args: argparse.Namespace,
                  command: str) -> None:
    st = out.style
    entry = f"  (entry {clean(report.entry)!r})" if report.entry else ""
    out(st(f"ckwidget {command}", "bold") + f"  {clean(args.path)} -> "
        f"{clean(report.model_name)}{entry}")
    out(f"  {clean(report.headline)}")
    colour = "green" if code == OK else "yellow" if code == FIXABLE else "red"
    out("  verdict: " + st(_verdict(code, report, args.strict), colour))
    _print_findings(out, report.findings, verbose=args.verbose)
    if args.verbose and command == "check":
        _print_io(out, report.checkpoint)
    rows, total = _attention_rows(report, args.all)
    if rows and code != BAD_FILE:
        out.heading(f"Keys that need attention ({total})")
        out.lines(table(rows, header=["key", "status", "checkpoint", "model", "note"],
                        style=st))
        if total > len(rows):
            out(f"  ... {total - len(rows)} more (--all lists them, --json gives them all)")
    if len(report.plan):
        out.heading("Suggested plan")
        for i, fix in enumerate(report.plan, 1):
            out.lines(wrapped(f"  {i}. ", clean(fix.describe()), out.width))


def _print_code(out: _Out, report: Report, path: str | None) -> None:
    if not len(report.plan):
        return
    out.heading("The same in plain torch")
    out.lines(["  " + line if line else "" for line in
               report.plan.to_code(path=path).splitlines()])


def cmd_check(args: argparse.Namespace) -> int:
    done = _diagnose(args)
    if isinstance(done, int):
        return done
    report = done[0]
    code = exit_code(report, args.strict)
    out = _Out()
    if args.json:
        out(json.dumps(check_document(report, code, args.path, args.model), indent=2))
        return code
    _print_report(out, report, code, args, "check")
    if args.code:
        _print_code(out, report, _code_path(args))
    if code in (FIXABLE, CANNOT_LOAD) and len(report.plan) and not args.code:
        partial = " --allow-partial" if code == CANNOT_LOAD else ""
        out()
        out(st_dim(out, f"Next: ckwidget fix {args.path} --model {args.model} -o "
                        f"repaired.safetensors{partial}  (--code shows the plain torch)"))
    return code


def st_dim(out: _Out, text: str) -> str:
    return out.style(clean(text), "dim")


def _check_output(args: argparse.Namespace) -> Path:
    target = Path(args.output).expanduser()
    source = Path(args.path).expanduser()
    try:
        same = target.resolve() == source.resolve() or (
            target.exists() and os.path.samefile(target, source))
    except OSError:
        same = False
    if same or (source.is_dir() and target.resolve().is_relative_to(source.resolve())):
        raise UsageError(f"Refusing to write {args.output!r}: it is the source checkpoint; "
                         "choose a new path with -o.")
    if target.is_dir():
        raise UsageError(f"{args.output!r} is a folder; give -o a file name.")
    if not target.parent.exists():
        raise UsageError(f"The folder {str(target.parent)!r} does not exist.")
    from .fixes.save import save_format

    try:  # the same rule Plan.save keeps: by the suffix, a contradiction refused
        args.format = save_format(target, args.format)
    except FixError as exc:
        raise UsageError(clean(exc)) from None
    return target


def cmd_fix(args: argparse.Namespace) -> int:
    _existing(args.path)
    target = _check_output(args)
    done = _diagnose(args)
    if isinstance(done, int):
        return done
    report, model, factory, stand_in = done
    code = exit_code(report, args.strict)
    out = _Out()
    _print_report(out, report, code, args, "fix")
    out()
    if code == BAD_FILE:
        out(out.style("Nothing written: no weights can be taken from this file safely.", "red"))
        return code
    if code == CANNOT_LOAD and not args.allow_partial:
        out(out.style("Nothing written: the repaired file would not give the model all it "
                      "needs. --allow-partial writes it anyway.", "red"))
        return code
    plan = report.plan
    save_model = model
    if stand_in and any(f.kind == "resize-copy" for f in plan):
        from .cli_model import build_model

        save_model, _ = build_model(factory, args.model, meta=False)
    try:
        written = plan.save(target, format=args.format, model=save_model)
    except FixError as exc:
        print(f"ckwidget: {clean(exc)}", file=sys.stderr)
        return CANNOT_LOAD
    from .readers import open_checkpoint

    saved = open_checkpoint(written)
    n, nbytes = len(saved.tensors), saved.size
    what = "the repaired checkpoint" if len(plan) else "a copy (nothing needed fixing)"
    out(out.style(f"Wrote {what}: {clean(written)}", "green"))
    out(f"  {args.format}, {n} tensors, {human_bytes(nbytes)}, keys as the model names them")
    strict = report.loadable_after_plan == report.model_tensor_count
    loader = ("safetensors.torch.load_file(path)" if args.format == "safetensors"
              else "torch.load(path, weights_only=True)")
    out(f"  load it with: model.load_state_dict({loader}, strict={strict})")
    if args.code:
        _print_code(out, report, _code_path(args))
    if args.verbose:
        _print_io(out, report.checkpoint)
    return OK


# -- parser --------------------------------------------------------------------------------
def _para(text: str) -> str:
    return textwrap.fill(text, 78)


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = _Parser(
        prog="ckwidget", formatter_class=fmt,
        description=_para("Why won't this checkpoint load? Inspect a checkpoint, check it against "
                    "your model, and write a repaired copy, never running code from the file."),
        epilog=MAIN_EPILOG)
    parser.add_argument("--version", action="version", version=f"ckwidget {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser(
        "inspect", formatter_class=fmt, help="what a checkpoint holds (no model needed)",
        description=_para("Format, size, versions, tensors (repeated layers collapsed), the "
                    "entries that look like a state dict, and findings about the file. "
                    "Reads no tensor bytes and does not import torch."),
        epilog="examples:\n  ckwidget inspect model.pt\n  ckwidget inspect model.pt --all\n"
               "  ckwidget inspect shards/ --json | jq .findings\n\n" + EXIT_CODES_HELP)
    p.add_argument("path", help=PATH_HELP)
    p.add_argument("--storage-option", action="append", metavar="KEY=VALUE",
                   help=STORAGE_HELP)
    p.add_argument("--json", action="store_true", help="print a JSON document instead")
    p.add_argument("--all", action="store_true",
                   help="list every tensor and metadata entry (no grouping, no row limit)")
    p.add_argument("--verify", action="store_true", help=VERIFY_HELP)
    p.add_argument("-v", "--verbose", action="store_true",
                   help="show info findings too (by default they are counted), and for a "
                        "URL the requests and bytes read")
    p.set_defaults(run=cmd_inspect)

    def model_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("path", help=PATH_HELP)
        p.add_argument("--storage-option", action="append", metavar="KEY=VALUE",
                       help=STORAGE_HELP)
        p.add_argument("--model", "-m", required=True, metavar="MODULE:FACTORY",
                       help=MODEL_HELP)
        p.add_argument("--entry", metavar="KEY", default=None,
                       help="the container holding the weights ('state_dict', 'model', "
                            "'ema'...; '' is the top level); chosen automatically by default")
        p.add_argument("--map-location", metavar="DEVICE", default=None,
                       help="device the tensors should load on (e.g. cpu)")
        p.add_argument("--strict", action="store_true",
                       help="fail (exit 2) when the plan would leave any checkpoint value "
                            "out (dropped keys, resized tensors)")
        p.add_argument("--no-meta", action="store_true",
                       help="build the model normally instead of on the meta device")
        p.add_argument("--code", action="store_true",
                       help="print the plan as plain torch code")
        p.add_argument("--all", action="store_true", help="list every key that needs attention")
        p.add_argument("--verify", action="store_true",
                       help=VERIFY_HELP + "; files up to 512 MiB are verified without it")
        p.add_argument("-v", "--verbose", action="store_true",
                       help="show info findings too (by default they are counted), and for "
                            "a URL the requests and bytes read")

    p = sub.add_parser(
        "check", formatter_class=fmt, help="will it load into my model? (exit code says)",
        description=_para("Diagnose the checkpoint against the model FACTORY builds: the headline, "
                    "the findings, the keys that need attention and the suggested plan."),
        epilog="examples:\n  ckwidget check ckpt.pt --model models.py:build\n"
               "  ckwidget check ckpt.pt -m mypkg.nets:resnet18 --entry state_dict --code\n"
               "  ckwidget check ckpt.pt -m models.py:build --strict || echo 'do not publish'\n\n"
               + EXIT_CODES_HELP)
    model_options(p)
    p.add_argument("--json", action="store_true", help="print a JSON document instead")
    p.set_defaults(run=cmd_check)

    p = sub.add_parser(
        "fix", formatter_class=fmt, help="write a repaired checkpoint for my model",
        description=_para("Apply the suggested plan and write the repaired state dict (keys as the "
                    "model names them) to a new file, atomically; the source is never written."),
        epilog="examples:\n  ckwidget fix ckpt.pt --model models.py:build -o fixed.safetensors\n"
               "  ckwidget fix ckpt.pt -m mypkg.nets:build -o fixed.pt --format torch --code\n\n"
               + EXIT_CODES_HELP)
    model_options(p)
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="where to write the repaired checkpoint (a new file)")
    p.add_argument("--format", choices=("safetensors", "torch"), default=None,
                   help="file format to write (default: by the suffix of -o: .pt, .pth, "
                        ".bin, .ckpt are torch, anything else safetensors)")
    p.add_argument("--allow-partial", action="store_true",
                   help="write even when some model tensors would keep their initial values")
    p.set_defaults(run=cmd_fix)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ckwidget`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from .cli_model import ModelBuildError, ModelSpecError

    try:
        return int(args.run(args))
    except (UsageError, ModelSpecError) as exc:
        print(f"ckwidget: {clean(exc)}", file=sys.stderr)
        return USAGE
    except ModelBuildError as exc:
        print(f"ckwidget: {clean(exc)}", file=sys.stderr)
        return MODEL_FAILED
    except CheckpointError as exc:
        print(f"ckwidget: {clean(exc)}", file=sys.stderr)
        return BAD_FILE
    except KeyboardInterrupt:
        print("ckwidget: interrupted.", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of our output went away (e.g. `| head`): stop quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return OK
    except Exception as exc:
        print(f"ckwidget: internal error, please report it: {type(exc).__name__}: "
              f"{clean(exc)}", file=sys.stderr)
        if os.environ.get("CKWIDGET_DEBUG"):
            raise
        return INTERNAL
