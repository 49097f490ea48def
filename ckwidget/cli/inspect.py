"""``ckwidget inspect``: what a checkpoint holds, without a model and without torch."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..errors import CheckpointError
from ..formatting import count_text, shape_text, size_text
from .exit_codes import BAD_FILE, OK
from .format import clean, json_safe, short, table, wrapped
from .grouping import group_keys
from .output import Out, finding_doc, print_findings, print_io
from .source import existing, open_path, unreadable
from .verdict import file_state

INSPECT_ROWS = 200
VERSION_WORDS = ("version", "protocol")
HIDDEN_META = {"open_seconds"}


def cmd_inspect(args: argparse.Namespace) -> int:
    path = existing(args.path)
    try:
        ckpt = open_path(args, path)
    except CheckpointError as exc:
        return unreadable(args, path, exc)
    out = Out()
    if args.json:
        out(json.dumps(inspect_document(ckpt), indent=2))
    else:
        print_inspect(out, ckpt, args.all, args.verbose)
        if args.verbose:
            print_io(out, ckpt)
    return BAD_FILE if file_state(ckpt) != "ok" else OK


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
        "findings": [finding_doc(f) for f in ckpt.findings],
    }


def _tensor_doc(info: Any) -> dict[str, Any]:
    doc = {"shape": list(info.shape), "dtype": info.dtype, "device": info.device,
           "nbytes": info.nbytes}
    if info.layout != "strided":
        doc["layout"] = info.layout
    return doc


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


def _tensor_rows(tensors: dict[str, Any], grouped: bool) -> list[list[str]]:
    show_device = any(i.device != "cpu" for i in tensors.values())

    def row(name: str, count: int, info: Any, total: int) -> list[str]:
        dtype = info.dtype if info.layout == "strided" else f"{info.dtype} ({info.layout})"
        cells = [clean(name), f"×{count_text(count)}" if count > 1 else "", clean(dtype),
                 shape_text(info.shape, none="-")]
        if show_device:
            cells.append(clean(info.device))
        cells.append(size_text(total))
        return cells

    if not grouped:
        return [row(k, 1, i, i.nbytes) for k, i in tensors.items()]
    groups = group_keys(tensors, lambda i: (i.dtype, i.shape, i.device, i.layout))
    return [row(name, n, info, info.nbytes * n) for name, n, info in groups]


def _facts(ckpt: Any, versions: list[tuple[str, Any]]) -> list[tuple[str, str]]:
    """The summary lines at the top: format, size, versions, entries, dtypes."""
    tensors = ckpt.tensors
    total = sum(i.nbytes for i in tensors.values())
    facts: list[tuple[str, str]] = [("format", clean(ckpt.format))]
    facts.append(("size", f"{size_text(ckpt.size)} on disk; {count_text(len(tensors))} "
                          f"tensors holding {size_text(total)}"))
    if versions:
        facts.append(("versions", "; ".join(f"{clean(k)} {short(v, 60)}" for k, v in versions)))
    if ckpt.candidates:
        def entry(c: str) -> str:
            n = len(ckpt.members(c))
            return f"{'(top level)' if c == '' else repr(clean(c))} ({count_text(n)} tensors)"
        more = len(ckpt.candidates) - 8
        facts.append(("entries", ", ".join(entry(c) for c in ckpt.candidates[:8])
                      + (f", ... {count_text(more)} more" if more > 0 else "")
                      + "  (best first)"))
    dtypes: dict[str, int] = {}
    for i in tensors.values():
        dtypes[i.dtype] = dtypes.get(i.dtype, 0) + 1
    if dtypes:
        facts.append(("dtypes", ", ".join(f"{clean(d)} ×{count_text(n)}"
                                          for d, n in dtypes.items())))
    return facts


def print_inspect(out: Out, ckpt: Any, show_all: bool, verbose: bool = True) -> None:
    st = out.style
    tensors = ckpt.tensors
    where = clean(ckpt.path) if ckpt.path is not None else "<in memory>"
    out(st("ckwidget inspect", "bold") + f"  {where}")
    items = _meta_items(ckpt.metadata)
    versions = [(k, v) for k, v in items if any(w in k.lower() for w in VERSION_WORDS)]
    others = [(k, v) for k, v in items if (k, v) not in versions]
    for label, text in _facts(ckpt, versions):
        out.lines(wrapped(f"  {label:<9} ", text, out.width))
    if others:
        out.heading("Metadata")
        limit = len(others) if show_all else 30
        out.lines(table([[clean(k), short(v, max(40, out.width - 40))]
                         for k, v in others[:limit]]))
        if len(others) > limit:
            out(f"  ... {count_text(len(others) - limit)} more (--all shows them, --json "
                "gives them all)")
    if tensors:
        rows = _tensor_rows(tensors, grouped=not show_all)
        what = "every tensor" if show_all else "repeated layers collapsed; --all lists each"
        out.heading(f"Tensors ({count_text(len(tensors))}; {what})")
        limit = len(rows) if show_all else INSPECT_ROWS
        size_col = len(rows[0]) - 1
        out.lines(table(rows[:limit], right=(size_col,)))
        if len(rows) > limit:
            out(f"  ... {count_text(len(rows) - limit)} more rows (--all lists every tensor)")
    print_findings(out, ckpt.findings, verbose=verbose)
    state = file_state(ckpt)
    if state != "ok":
        out()
        verdict = ("UNSAFE: do not load this file with pickle (exit 3)" if state == "unsafe"
                   else "BROKEN: this file holds no usable checkpoint (exit 3)")
        out(st(verdict, "red"))
