"""Instruction counts of opening and diagnosing the widget benchmark's checkpoint.

The shared machines' speed swings by 1.5x and more, so a 10% change cannot be seen in
seconds. Instructions executed (valgrind's callgrind) hardly move between runs: this
counts them for ``open_checkpoint`` alone and for the whole first display (open,
diagnose, widget, display bundle), each as a run that does the work minus a run that
only sets up. Needs valgrind. Run::

    python benchmarks/instructions.py [--keys 20000]

(20,000 keys take about two minutes under valgrind; counts grow linearly with keys.)
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

SCRIPT = r"""
import sys, tempfile
sys.path.insert(0, {here!r})
from pathlib import Path
import ipywidgets, pandas
from widget_open import build
from ckwidget.readers import open_checkpoint
from ckwidget.diagnosis import diagnose
from ckwidget.ui.widget import CheckpointDebugger
path, model = build({keys}, "torch", Path(tempfile.gettempdir()))
if {mode!r} == "open":
    open_checkpoint(path)
elif {mode!r} == "display":
    report = diagnose(open_checkpoint(path), model)
    CheckpointDebugger(report, model, model_name="model")._repr_mimebundle_()
"""


def count(mode: str, keys: int) -> int:
    code = SCRIPT.format(here=str(HERE), keys=keys, mode=mode)
    out = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
         sys.executable, "-c", code],
        capture_output=True, text=True, timeout=1800,
    )
    found = re.search(r"Collected : (\d+)", out.stderr)
    if out.returncode != 0 or not found:
        raise SystemExit(f"valgrind failed: {out.stderr[-1000:]}")
    return int(found.group(1))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keys", type=int, default=20_000)
    args = ap.parse_args(argv)
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (apt-get install valgrind)")
        return 1
    subprocess.run([sys.executable, "-c", SCRIPT.format(here=str(HERE), keys=args.keys,
                                                       mode="setup")], check=True,
                   capture_output=True)  # build the file once, outside the counts
    setup = count("setup", args.keys)
    for mode in ("open", "display"):
        n = count(mode, args.keys) - setup
        print(f"{mode:>7} at {args.keys:,} keys: {n / 1e9:.3f} G instructions")
    return 0


if __name__ == "__main__":
    sys.exit(main())
