"""A checkpoint changed on disk after it was opened: one sentence, never a crash.

Training jobs rewrite ``last.ckpt`` in place (torch.save truncates the file, then writes)
while someone debugs it. Reading tensor bytes through a memory map past the file's new
end kills the process (SIGBUS), so the cases run in a child process
(``_file_changes_child.py``): a crash fails this test instead of ending the test run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

FORMATS = ("torch-zip", "torch-legacy", "safetensors", "npy", "npz-compressed", "torch-tar",
           "hf-sharded", "dcp")
CHANGES = {"rewritten-shorter": "its size went from", "replaced": "another file now has its name",
           "touched": "it was written again", "deleted": "it can no longer be read"}


def test_reads_after_the_file_changed_say_so_and_never_crash(tmp_path: Path) -> None:
    child = Path(__file__).with_name("_file_changes_child.py")
    run = subprocess.run([sys.executable, str(child), str(tmp_path)], capture_output=True,
                         text=True, timeout=300)
    lines = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    last = lines[-1] if lines else None
    assert run.returncode == 0, (f"the child died (exit {run.returncode}) during {last}: "
                                 f"{run.stderr[-2000:]}")
    results = {(r["format"], r["change"]): r for r in lines if "start" not in r}
    for fmt in FORMATS:
        unchanged = results[fmt, "unchanged"]
        assert unchanged.get("same") is True and unchanged["loaded"] >= 1, unchanged
        for change, words in CHANGES.items():
            got = results[fmt, change]
            assert "error" in got, got  # never the stale index read over other bytes
            assert "changed on disk since it was opened" in got["error"], got
            assert words in got["error"] and "open it again" in got["error"], got
    widget = results["widget", "rewritten-shorter"]
    assert widget["error"] == "CheckpointChangedError" and widget["model_unchanged"]
    assert "changed on disk since it was opened" in widget["shown"]
    assert "Not applied; the model is unchanged" in widget["result"]
    assert "Run the cell that opened this debugger again" in widget["shown"]
    panel = results["distributions", "rewritten-shorter"]
    assert "No tensor values could be read" in panel["note"], panel
    assert "changed on disk since it was opened" in panel["note"], panel
    assert "changed on disk since it was opened" in panel["shown"], panel
    assert not panel["histogram"]  # no one-sided plot of the model's values alone
