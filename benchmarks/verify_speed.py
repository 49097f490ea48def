"""How fast ``Checkpoint.verify`` reads a large torch checkpoint, and in how much memory.

Writes a checkpoint of about 1 GiB with torch.save (``--tensors`` float32 tensors of
``--numel`` elements: 64 x 4M by default) in a temporary folder, then, in a fresh
subprocess that never imports torch, opens it and verifies it (the CRC-32 of every zip
record, streamed in bounded chunks). Prints the open and verify wall times, the verify's
CPU time, the bytes it read (its progress total and the process's read() bytes) and the
process's peak RSS before and after the verify (VmHWM). The file is deleted afterwards.

The file was just written, so it is read from a warm page cache: the figures are the
CRC and copy cost, not the disk's speed.

    python benchmarks/verify_speed.py [--tensors 64] [--numel 4194304] [--repeat 1]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

MEASURE = r"""
import json, os, sys, time

def status(field):
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0

def read_chars():
    with open("/proc/self/io") as fh:
        return int(next(l for l in fh if l.startswith("rchar:")).split()[1])

import ckwidget
import ckwidget.readers.torch_zip, ckwidget.readers.verify  # imports are not the cost
path = sys.argv[1]
started = time.perf_counter()
ckpt = ckwidget.open_checkpoint(path)
opened = time.perf_counter() - started
peak_before = status("VmHWM")
calls = []
chars = read_chars()
cpu = time.process_time()
started = time.perf_counter()
found = ckpt.verify(progress=lambda done, total: calls.append((done, total)))
wall = time.perf_counter() - started
cpu = time.process_time() - cpu
chars = read_chars() - chars
print(json.dumps({
    "open_s": opened, "wall_s": wall, "cpu_s": cpu, "findings": len(found),
    "progress_total": calls[-1][1] if calls else 0, "progress_calls": len(calls),
    "read_bytes": chars, "peak_before": peak_before, "peak_after": status("VmHWM"),
    "torch_imported": "torch" in sys.modules, "size": ckpt.size,
}))
"""


def build(path: Path, tensors: int, numel: int) -> None:
    import torch

    # torch.empty pages are never touched before the save: the writer's memory stays low
    sd = {f"layers.{i}.weight": torch.empty(numel, dtype=torch.float32)
          for i in range(tensors)}
    torch.save(sd, path)


def measure(path: Path) -> dict:
    run = subprocess.run([sys.executable, "-c", MEASURE, str(path)], capture_output=True,
                         text=True, timeout=1200)
    if run.returncode:
        raise SystemExit(f"the measuring process failed:\n{run.stderr[-3000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def mib(n: float) -> str:
    return f"{n / 2**20:,.1f} MiB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tensors", type=int, default=64)
    ap.add_argument("--numel", type=int, default=4 * 2**20)
    ap.add_argument("--repeat", type=int, default=1, help="fresh processes; best time kept")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="ckwidget-verify-") as tmp:
        path = Path(tmp) / "big.pt"
        build(path, args.tensors, args.numel)
        size = path.stat().st_size
        print(f"checkpoint: {args.tensors} float32 tensors of {args.numel:,} elements, "
              f"{size:,} bytes ({mib(size)})")
        runs = [measure(path) for _ in range(max(1, args.repeat))]
        path.unlink()
    best = min(runs, key=lambda r: r["wall_s"])
    rate = best["progress_total"] / best["wall_s"] / 2**30 if best["wall_s"] else 0.0
    print(f"open: {best['open_s']:.3f} s wall")
    print(f"verify: {best['wall_s']:.3f} s wall, {best['cpu_s']:.3f} s cpu "
          f"({rate:.2f} GiB/s), {best['findings']} findings")
    print(f"bytes read: {best['progress_total']:,} record bytes verified "
          f"(progress total, {best['progress_calls']} progress calls); "
          f"{best['read_bytes']:,} bytes by read() in the process")
    print(f"peak RSS: {mib(best['peak_before'])} after open, {mib(best['peak_after'])} "
          f"after verify (+{mib(best['peak_after'] - best['peak_before'])}); "
          f"torch imported: {best['torch_imported']}")
    from _host import host_line

    print(host_line())


if __name__ == "__main__":
    main()
