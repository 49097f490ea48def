"""Open a large torch checkpoint: ckwidget against torch.load and the floor.

Writes a checkpoint of about ``--size-gb`` GB (``--tensors`` tensors, default 300) with
torch.save, then measures, each in its own fresh subprocess (``--repeat`` times, best
time kept), the wall time of one open and the process's peak RSS:

- ckwidget.open_checkpoint(path)
- torch.load(path, map_location="cpu", weights_only=True)
- torch.load(path, map_location="cpu", weights_only=True, mmap=True)
- the floor: zipfile reading the archive directory plus the bytes of data.pkl

Peak RSS is the process's high-water mark (VmHWM); "growth" subtracts the RSS measured
after the imports, so the cost of importing torch does not hide the cost of opening.
The file is read from a warm page cache (it was just written), the same for every row.

    python benchmarks/open_large.py [--size-gb 3] [--tensors 300] [--path FILE] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MEASURE = r"""
import json, sys, time

def status(field):
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0

method, path = sys.argv[1], sys.argv[2]
if method == "ckwidget":
    import ckwidget
    import ckwidget.readers.torch_zip  # the reader's own imports are not the open's cost
    run = lambda: ckwidget.open_checkpoint(path)
elif method == "floor":
    import zipfile
    def run():
        with zipfile.ZipFile(path) as z:
            name = next(n for n in z.namelist() if n.endswith("/data.pkl"))
            return len(z.read(name))
else:
    import torch
    mmap = method == "torch.load(mmap)"
    run = lambda: torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
base = status("VmRSS")
started = time.perf_counter()
result = run()
seconds = time.perf_counter() - started
extra = {}
if method == "ckwidget":
    extra = {"tensors": len(result.tensors)}
elif method.startswith("torch"):
    stack, count = [result], 0
    while stack:
        node = stack.pop()
        if isinstance(node, torch.Tensor):
            count += 1
        elif isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, (list, tuple)):
            stack.extend(node)
    extra = {"tensors": count}
print(json.dumps({"seconds": seconds, "peak_mb": status("VmHWM"), "base_mb": base, **extra}))
"""

METHODS = ["floor", "ckwidget", "torch.load(mmap)", "torch.load"]


def write_checkpoint(path: Path, size_gb: float, tensors: int) -> None:
    import torch

    per = int(size_gb * (1 << 30) / tensors / 4)
    rows = max(1, per // 1024)
    sd = {}
    for i in range(tensors):
        t = torch.empty(rows, 1024, dtype=torch.float32)
        t.fill_(float(i))  # real pages, so the file holds real bytes
        sd[f"model.layers.{i // 4}.block{i % 4}.weight"] = t
    sd["model.norm.bias"] = torch.zeros(1024)
    started = time.perf_counter()
    torch.save({"state_dict": sd, "epoch": 3, "hyper_parameters": {"lr": 1e-3}}, path)
    print(f"wrote {path} ({path.stat().st_size / (1 << 30):.2f} GB, {tensors + 1} tensors) "
          f"in {time.perf_counter() - started:.1f} s", flush=True)


def measure(method: str, path: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", MEASURE, method, str(path)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-gb", type=float, default=3.0)
    parser.add_argument("--tensors", type=int, default=300)
    parser.add_argument("--path", type=Path, default=None,
                        help="checkpoint to write (and measure); a temp file by default")
    parser.add_argument("--keep", action="store_true",
                        help="keep the checkpoint this run wrote (an existing --path is "
                        "measured and never deleted)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)

    folder = None
    if args.path is None:
        folder = tempfile.mkdtemp(prefix="ckwidget-bench-")
        path = Path(folder) / "large.pt"
    else:
        path = args.path
    written = False
    try:
        if not path.exists():
            write_checkpoint(path, args.size_gb, args.tensors)
            written = True
        size_gb = path.stat().st_size / (1 << 30)
        rows = []
        for method in METHODS:
            runs = [measure(method, path) for _ in range(args.repeat)]
            best = min(runs, key=lambda r: r["seconds"])
            best["peak_mb"] = max(r["peak_mb"] for r in runs)
            best["growth_mb"] = max(r["peak_mb"] - r["base_mb"] for r in runs)
            rows.append((method, best))
        floor = rows[0][1]["seconds"]
        print(f"\n{path.name}: {size_gb:.2f} GB; best of {args.repeat} fresh processes each")
        print(f"{'method':<18}{'open s':>9}{'x floor':>9}{'peak RSS MB':>13}"
              f"{'growth MB':>11}{'tensors':>9}")
        for method, r in rows:
            print(f"{method:<18}{r['seconds']:>9.3f}{r['seconds'] / floor:>9.1f}"
                  f"{r['peak_mb']:>13.0f}{r['growth_mb']:>11.0f}{r.get('tensors', ''):>9}")
    finally:
        if written and not args.keep:  # never delete a file this run did not write
            path.unlink(missing_ok=True)
        elif written:
            print(f"kept {path}")
        if folder is not None and not (written and args.keep):
            os.rmdir(folder)


if __name__ == "__main__":
    main()
