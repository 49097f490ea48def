"""The browser timing of the Distributions tab still runs and prints its figures (at a
small scale: the figures are judged by running it in full, never by a timed test)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from _browser import require

pytestmark = [pytest.mark.benchmark, pytest.mark.browser]

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def test_distributions_browser_prints_paint_time_and_websocket_bytes():
    require()
    out = subprocess.run([sys.executable, str(BENCH / "distributions_browser.py"), "--keys",
                          "2000", "--visits", "2", "--no-kernel-only"],
                         capture_output=True, text=True, timeout=600, cwd=BENCH.parent)
    assert out.returncode == 0, out.stderr[-2000:]
    text = out.stdout
    visits = re.findall(r"visit \d \((fresh|same) page, light\): charts painted [\d.]+ s "
                        r"after the click; ([\d.]+) MB in / [\d.]+ MB out over the "
                        r"websocket, ([\d.]+) MB of scripts fetched", text)
    assert [v[0] for v in visits] == ["fresh", "same"], text
    # no plotly bundle per visit: not over the websocket, not fetched as a script
    assert all(float(mb_in) < 1.0 and float(js) < 1.0 for _, mb_in, js in visits), text
    assert re.search(r"2,000 keys, first visit in the browser: [\d.]+ s from the click",
                     text), text
