"""Time from a click on the Distributions tab to its charts, on its first visit.

The debugger is opened on the 100,000-key benchmark checkpoint of ``widget_open.py`` and
shown as a notebook shows it (``_ipython_display_``); the user reads the diagnosis for a
few seconds, then opens the tab. What is timed: the part of the click on the UI thread
(the panel is built there), and the whole wait until the per-layer chart, the non-finite
chart and the first histogram are drawn (sampling and drawing run on a background
thread). Run in a fresh process, as the first visit of a kernel::

    python benchmarks/distributions_first_visit.py [--keys 100000] [--read 5]

``--read 0`` opens the tab at once, before the plotting library has loaded in the
background: the worst case.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keys", type=int, default=100_000)
    ap.add_argument("--read", type=float, default=5.0,
                    help="seconds between showing the debugger and opening the tab")
    args = ap.parse_args(argv)

    from widget_open import build

    import ckwidget as ck

    path, model = build(args.keys, "torch", Path(tempfile.gettempdir()))
    dbg = ck.debug(path, model)
    with contextlib.redirect_stdout(io.StringIO()):  # no front end: the bundle is text
        dbg._ipython_display_()
    time.sleep(args.read)
    t = time.perf_counter()
    panel = dbg.open_distributions()
    ui = time.perf_counter() - t
    dbg.wait(600)
    total = time.perf_counter() - t
    drawn = panel.last_histogram is not None and bool(panel.overview)
    print(f"{args.keys:,} keys, tab opened {args.read:g} s after the debugger was shown: "
          f"{ui:.2f} s on the UI thread, charts drawn after {total:.2f} s"
          f"{'' if drawn else ' (NOT DRAWN)'}; {len(panel.overview)} tensors in the "
          "per-layer chart")
    dbg.close()
    return 0 if drawn else 1


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    sys.exit(main())
