"""Strip outputs from the repository's notebooks so they are committed clean.

    python tools/strip_notebooks.py            # strip notebooks/*.ipynb in place
    python tools/strip_notebooks.py --check    # exit 1 and list those that hold outputs

Clean means: no outputs, ``execution_count`` None on every code cell, and no
per-cell execution metadata. tests/test_notebooks.py runs the check.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
CELL_METADATA_DROPPED = ("execution", "collapsed", "scrolled")


def problems(nb: nbformat.NotebookNode) -> list[str]:
    """What keeps ``nb`` from being clean, one phrase per cell."""
    found = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        if cell.get("outputs"):
            found.append(f"cell {i} has {len(cell.outputs)} outputs")
        if cell.get("execution_count") is not None:
            found.append(f"cell {i} has execution_count {cell.execution_count}")
        dropped = [k for k in CELL_METADATA_DROPPED if k in cell.get("metadata", {})]
        if dropped:
            found.append(f"cell {i} has metadata {', '.join(dropped)}")
    return found


def strip(nb: nbformat.NotebookNode) -> bool:
    """Clear outputs and counts in place; True if anything changed."""
    changed = False
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        if cell.get("outputs") or cell.get("execution_count") is not None:
            changed = True
        cell.outputs = []
        cell.execution_count = None
        for key in CELL_METADATA_DROPPED:
            changed |= cell.metadata.pop(key, None) is not None
    return changed


def notebooks(paths: list[str]) -> list[Path]:
    return [Path(p) for p in paths] if paths else sorted(NOTEBOOKS.glob("*.ipynb"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", help="notebooks (default: notebooks/*.ipynb)")
    parser.add_argument("--check", action="store_true", help="report, change nothing")
    args = parser.parse_args(argv)
    dirty = 0
    for path in notebooks(args.paths):
        nb = nbformat.read(path, as_version=4)
        if args.check:
            found = problems(nb)
            if found:
                dirty += 1
                print(f"{path}: {'; '.join(found)}")
        elif strip(nb):
            nbformat.write(nb, path)
            print(f"stripped {path}")
    return 1 if dirty else 0


if __name__ == "__main__":
    sys.exit(main())
