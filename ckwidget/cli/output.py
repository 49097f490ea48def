"""Where a command writes: stdout with colour and width decided once, the findings
block, the remote-read statistics of -v, and a finding as JSON."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, TextIO

from ..formatting import count_text
from .format import ICONS, Style, clean, use_colour, width, wrapped


class Out:
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

    def dim(self, text: str) -> str:
        return self.style(clean(text), "dim")


def print_io(out: Out, ckpt: Any) -> None:
    """-v: what reading a remote checkpoint cost (requests, bytes), and any downloads."""
    stats = getattr(ckpt, "io_stats", None)
    if stats is None:
        return
    out.heading("Remote reads")
    out(f"  {clean(stats.summary())}")
    for note in stats.notes:
        out.lines(wrapped("  - ", clean(note), out.width))


def finding_doc(f: Any) -> dict[str, Any]:
    """A finding in the --json documents."""
    return {"kind": f.kind, "severity": f.severity, "message": f.message,
            "keys": list(f.keys), "fixes": [getattr(x, "kind", str(x)) for x in f.fixes]}


def _info_count(n: int, more: str) -> str:
    s = n != 1
    return (f"  ({count_text(n)} info finding{'s' if s else ''}{more}: -v shows "
            f"{'them' if s else 'it'})")


def print_findings(out: Out, findings: Sequence[Any], title: str = "Findings",
                   verbose: bool = True) -> None:
    """The findings; without ``verbose``, info findings are counted in one line instead
    (they stand in most reports, and the eye learns to skip a block that always says
    them)."""
    hidden = [] if verbose else [f for f in findings if f.severity == "info"]
    findings = [f for f in findings if f not in hidden]
    if not findings:
        if hidden:
            out(_info_count(len(hidden), ""))
        return
    out.heading(f"{title} ({count_text(len(findings))})")
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
        out(_info_count(len(hidden), " more"))
