"""How fast the shared host runs pure Python right now, for reading the other figures.

The project's machines are shared: the same code measures up to 1.5x slower at busy
moments. Each benchmark prints this reference (a fixed workload of dict, sort and string
operations like diagnosis does, best of 7) after its figures. It tracks the CPU's speed,
not the cost of faulting in fresh memory, which varies more on these machines; on a
quiet 2-core machine of this project it takes about 18 ms.
"""

from __future__ import annotations

import time

QUIET_MS = 18.0


def _workload() -> int:
    keys = [f"layers.{i}.mlp.weight" for i in range(50_000)]
    sizes = {k: len(k) for k in keys}
    ordered = sorted(keys, key=sizes.__getitem__)
    return sum(map(len, "\n".join(ordered).split("\n")))


def reference_ms(repeat: int = 7) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        _workload()
        best = min(best, time.process_time() - start)
    return best * 1000


def host_line() -> str:
    ms = reference_ms()
    return (f"host: a fixed pure-Python workload took {ms:.1f} ms cpu now (about "
            f"{QUIET_MS:g} ms on a quiet machine); the memory-heavy figures above vary "
            "more than it does (fresh memory is slow to fault in on these machines)")
