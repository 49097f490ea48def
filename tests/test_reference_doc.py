"""docs/reference.md covers every finding kind of the design and every fix kind of the
code, and every notebook section it cites exists."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat

from ckwidget.fixes import FIX_KINDS

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "reference.md"
# The finding kinds of DESIGN.md's public contract.
FINDING_KINDS = [
    "not-a-checkpoint", "lfs-pointer", "html-page", "truncated", "corrupt", "foreign-format",
    "sharded", "torchscript", "malicious", "unsafe-globals", "missing-class", "version",
    "device", "meta-model", "nested", "prefix", "renamed", "missing-keys", "unexpected-keys",
    "shape-mismatch", "transposed", "dtype", "tied-weights", "optimizer", "nonfinite",
    "preprocessing",
]
NOTEBOOK = {"02": "02_why_checkpoints_fail", "03": "03_real_world", "04": "04_api"}


def rows() -> dict[str, str]:
    """First-column kind -> the whole table row."""
    out = {}
    for line in DOC.read_text().splitlines():
        m = re.match(r"\| `([a-z-]+)` \|", line)
        if m:
            out[m.group(1)] = line
    return out


def sections(stem: str) -> set[str]:
    """Section numbers ("2", "2a") of a notebook's markdown headings."""
    nb = nbformat.read(ROOT / "notebooks" / f"{stem}.ipynb", as_version=4)
    found = set()
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            found.update(re.findall(r"^#{2,3} (\d+[a-z]?)\. ", cell.source, re.M))
    return found


def test_every_finding_and_fix_kind_has_a_row_with_a_notebook_section() -> None:
    table = rows()
    for kind in [*FINDING_KINDS, *FIX_KINDS]:
        assert kind in table, f"docs/reference.md has no row for {kind}"
        assert re.search(r"\b0[234] §\d", table[kind]), f"{kind}: no notebook section cited"


def test_cited_sections_exist() -> None:
    cited = re.findall(r"\b(0[234]) §(\d+[a-z]?)", DOC.read_text())
    assert cited
    have = {nb: sections(stem) for nb, stem in NOTEBOOK.items()}
    missing = sorted({f"{nb} §{sec}" for nb, sec in cited if sec not in have[nb]})
    assert missing == [], f"docs/reference.md cites sections the notebooks lack: {missing}"
