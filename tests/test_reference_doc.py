"""docs/reference.md covers every finding kind of the design and every fix kind of the
code, and every notebook section it cites exists."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat

from ckwidget.fixes import FIX_KINDS
from ckwidget.kinds import FINDING_KINDS

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "reference.md"
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


def test_the_kinds_are_the_designs() -> None:
    """kinds.py and DESIGN.md's table of finding kinds name the same kinds."""
    design = ROOT.parent / "shared" / "DESIGN.md"
    if not design.exists():  # a clone without the shared folder: the doc rows still count
        return
    table = re.search(r"Finding `kind` values.*?\n\n(.*?)\n\n", design.read_text(), re.S)
    named = set(re.findall(r"`([a-z-]+)`", table.group(1))) if table else set()
    assert named == set(FINDING_KINDS), sorted(named ^ set(FINDING_KINDS))


def test_cited_sections_exist() -> None:
    cited = re.findall(r"\b(0[234]) §(\d+[a-z]?)", DOC.read_text())
    assert cited
    have = {nb: sections(stem) for nb, stem in NOTEBOOK.items()}
    missing = sorted({f"{nb} §{sec}" for nb, sec in cited if sec not in have[nb]})
    assert missing == [], f"docs/reference.md cites sections the notebooks lack: {missing}"
