"""The speed benchmarks still run and print their figures (at a small scale here: the
figures themselves are judged by running them in full, never by a timed test)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.benchmark

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _run(*args: str) -> str:
    out = subprocess.run([sys.executable, *args], capture_output=True, text=True,
                         timeout=600, cwd=BENCH.parent)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_diagnose_scale_prints_times_growth_and_a_verdict():
    text = _run(str(BENCH / "diagnose_scale.py"), "--sizes", "200,2000")
    for case in ("match", "prefix", "renamed", "gpt2"):
        assert re.search(rf"{case}\s+2,000 keys: diagnose\s+[\d.]+ s cpu", text), text
    assert re.search(r"host: a fixed pure-Python workload took [\d.]+ ms cpu", text), text
    assert re.search(r"slowest case at 2,000 keys: [\d.]+ s cpu \(target 1.0 s\): "
                     r"(OK|OVER TARGET)", text), text


def test_widget_open_prints_the_parts_of_the_first_display(tmp_path):
    text = _run(str(BENCH / "widget_open.py"), "--keys", "2000", "--repeat", "1")
    assert re.search(r"run 1 \(host x[\d.]+\): total [\d.]+ s wall, [\d.]+ s cpu of which "
                     r"[\d.]+ s system "
                     r"\(open [\d.]+ s, "
                     r"diagnose [\d.]+ s, widget [\d.]+ s, display [\d.]+ s\); 2,000 rows",
                     text), text
    assert "0 of 2,000 model tensors would load as is; 1,998 after the suggested plan" in text
    assert re.search(r"widget open, best of 1: [\d.]+ s wall", text), text
    assert re.search(r"host speed before each run: x[\d.]+ to x[\d.]+ of quiet", text), text


def test_distributions_first_visit_prints_the_wait_and_draws():
    text = _run(str(BENCH / "distributions_first_visit.py"), "--keys", "2000", "--read", "0")
    assert re.search(r"2,000 keys, tab opened 0 s after the debugger was shown: [\d.]+ s on "
                     r"the UI thread, charts drawn after [\d.]+ s; \d+ tensors in the "
                     r"per-layer chart", text), text
    assert "NOT DRAWN" not in text
