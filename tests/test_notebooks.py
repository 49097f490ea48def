"""Every notebook runs top to bottom in a fresh kernel, within a time limit, and is
committed without outputs.

Slow (about 10-25 s per notebook on a 2-core machine) but part of the default suite:
a notebook that stops working is a broken tutorial.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
EXPECTED = ["01_quickstart", "02_why_checkpoints_fail", "03_real_world", "04_api"]
# Seconds a whole notebook may take (kernel start included); CKWIDGET_NOTEBOOK_LIMIT overrides.
LIMIT = float(os.environ.get("CKWIDGET_NOTEBOOK_LIMIT", "180"))

sys.path.insert(0, str(ROOT / "tools"))
import strip_notebooks  # noqa: E402

# What each notebook must show in its outputs: every finding kind it teaches (as
# printed by the notebooks' explain() helper: "[severity] kind:") and every fix kind
# its plans use. A diagnosis that changes its mind shows up here, not only crashes.
SHOWN_FINDINGS = {
    "02_why_checkpoints_fail": [
        "version", "unsafe-globals", "prefix", "renamed", "shape-mismatch", "transposed",
        "missing-keys", "unexpected-keys", "tied-weights", "optimizer", "dtype",
        "preprocessing", "nonfinite", "nested", "torchscript", "missing-class", "sharded",
        "foreign-format", "device", "meta-model", "truncated", "lfs-pointer", "html-page",
        "corrupt", "not-a-checkpoint", "malicious",
    ],
    "03_real_world": ["shape-mismatch", "unexpected-keys", "prefix", "transposed", "nested",
                      "optimizer"],
    "04_api": ["nested", "prefix", "shape-mismatch", "optimizer"],
}
SHOWN_FIX_CODE = {
    # a line each fix kind's code puts in the printed snippet
    "02_why_checkpoints_fail": [
        "torch.serialization.safe_globals(",      # allow-globals
        "sd = ckpt['model']",                     # select-entry
        "k.removeprefix('module.')",              # strip-prefix
        "drop = {",                               # drop-keys
        "re.sub('^head\\\\.', 'classifier.', k)",  # rename-keys
        ".t().contiguous()",                      # transpose
        "ckwidget.extract_weights(PATH",          # extract-weights
        "map_location='cpu'",                     # map-location
        "assign=True",                            # meta model
        "load_file(os.path.join(PATH, shard)",    # sharded folder
    ],
    "04_api": ["v.to(torch.bfloat16)", "Copy the overlapping part of 2 resized tensors"],
}


def notebook_paths() -> list[Path]:
    return sorted(NOTEBOOKS.glob("*.ipynb"))


def test_the_four_notebooks_exist() -> None:
    assert [p.stem for p in notebook_paths()] == EXPECTED


@pytest.mark.parametrize("path", notebook_paths(), ids=lambda p: p.stem)
def test_committed_notebook_has_no_outputs(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert strip_notebooks.problems(nb) == [], (
        f"{path.name} holds outputs: run `python tools/strip_notebooks.py` before committing")


def test_strip_tool_clears_outputs(tmp_path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("print(1)")
    cell.outputs = [nbformat.v4.new_output("stream", text="1\n")]
    cell.execution_count = 3
    cell.metadata["execution"] = {"iopub.status.busy": "2026-01-01"}
    nb.cells = [nbformat.v4.new_markdown_cell("# x"), cell]
    path = tmp_path / "dirty.ipynb"
    nbformat.write(nb, path)
    assert strip_notebooks.main(["--check", str(path)]) == 1
    assert strip_notebooks.main([str(path)]) == 0
    clean = nbformat.read(path, as_version=4)
    assert strip_notebooks.problems(clean) == []
    assert clean.cells[1].source == "print(1)"
    assert strip_notebooks.main(["--check", str(path)]) == 0


def _text(nb: nbformat.NotebookNode) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.output_type == "stream":
                parts.append(out.text)
            elif "data" in out:
                parts.append(str(out.data.get("text/plain", "")))
    return "\n".join(parts)


def run_notebook(path: Path, workdir: Path) -> tuple[nbformat.NotebookNode, float]:
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb, timeout=int(LIMIT), kernel_name="python3", allow_errors=False,
        resources={"metadata": {"path": str(workdir)}},  # files the notebook writes go here
    )
    started = time.perf_counter()
    try:
        client.execute()
    except CellExecutionError as exc:
        pytest.fail(f"{path.name}: a cell failed:\n{str(exc)[-3000:]}")
    return nb, time.perf_counter() - started


@pytest.mark.slow
@pytest.mark.parametrize("path", notebook_paths(), ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom(path: Path, tmp_path: Path) -> None:
    nb, _ = run_notebook(path, tmp_path)  # nbclient's timeout=LIMIT is the backstop
    errors = [out for cell in nb.cells for out in cell.get("outputs", [])
              if out.output_type == "error"]
    assert errors == []
    text = _text(nb)
    assert "Traceback" not in text
    missing = [k for k in SHOWN_FINDINGS.get(path.stem, []) if f"] {k}:" not in text]
    assert missing == [], f"{path.name} no longer shows these findings: {missing}"
    lines = [s for s in SHOWN_FIX_CODE.get(path.stem, []) if s not in text]
    assert lines == [], f"{path.name}'s printed snippets no longer contain: {lines}"
    assert not list(path.parent.glob("*.pt")), "a notebook wrote files next to itself"
