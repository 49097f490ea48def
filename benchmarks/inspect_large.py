"""``ckwidget inspect`` on a ~3 GB checkpoint vs a ~30 MB one with the same keys.

Target: under 1 s of wall time for the whole command (interpreter start included), and
peak memory that does not grow with the file's size: inspect reads no tensor bytes and
never imports torch. Each run is a fresh ``python -m ckwidget inspect FILE`` process;
its peak RSS comes from ``os.wait4``.

Run: python benchmarks/inspect_large.py [--path BIG.pt [--small SMALL.pt]] [--keep DIR]
Without --path both files are written with torch.save (300 tensors: 100 blocks of
attention, MLP and norm weights) into a temporary folder and removed afterwards.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BLOCKS = 100
BIG_SIDE = 2000     # 2 * 100 * 2000^2 * 4 bytes ~ 3.2 GB
SMALL_SIDE = 200    # same keys, ~32 MB
TARGET_SECONDS = 1.0


def write_checkpoint(path: Path, side: int) -> Path:
    """torch.save of BLOCKS blocks; torch.empty pages are never touched, so the writer's
    memory stays small even for the 3 GB file."""
    import torch

    sd = {}
    for i in range(BLOCKS):
        sd[f"layers.{i}.attn.qkv.weight"] = torch.empty(side, side)
        sd[f"layers.{i}.mlp.fc.weight"] = torch.empty(side, side)
        sd[f"layers.{i}.norm.weight"] = torch.empty(side)
    torch.save(sd, path)
    return path


def run_inspect(path: Path) -> tuple[float, int, int]:
    """(wall seconds, peak RSS in bytes, exit code) of one `ckwidget inspect` process.

    The RSS is an upper bound: it includes this (small, torch-free) process's RSS at fork.
    """
    env = dict(os.environ, NO_COLOR="1")
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "ckwidget", "inspect", str(path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_maxrss * 1024, proc.returncode


def torch_imported(path: Path) -> bool:
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "ckwidget", "inspect",
                          str(path)], capture_output=True, text=True)
    names = [line.split("|")[-1].strip() for line in out.stderr.splitlines()
             if line.startswith("import time:")]
    return any(n == "torch" or n.startswith("torch.") for n in names)


def measure(path: Path, repeats: int) -> dict[str, float]:
    runs = [run_inspect(path) for _ in range(repeats)]
    codes = {c for _, _, c in runs}
    if codes != {0}:
        raise SystemExit(f"ckwidget inspect {path} exited with {sorted(codes)}")
    return {"size": path.stat().st_size,
            "wall_median": statistics.median(w for w, _, _ in runs),
            "wall_min": min(w for w, _, _ in runs),
            "rss_max": max(r for _, r, _ in runs)}


def main() -> int:
    if sys.argv[1:2] == ["--write"]:
        write_checkpoint(Path(sys.argv[2]), int(sys.argv[3]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--path", type=Path, help="an existing large checkpoint to inspect")
    parser.add_argument("--small", type=Path, help="an existing small checkpoint to compare")
    parser.add_argument("--keep", type=Path, help="write (or reuse) the files in this folder")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    tmp = None
    folder = args.keep
    if folder is None and (args.path is None or args.small is None):
        tmp = tempfile.TemporaryDirectory(prefix="ckwidget-inspect-")
        folder = Path(tmp.name)
    try:
        files = {}
        for label, given, side in (("small", args.small, SMALL_SIDE),
                                   ("big", args.path, BIG_SIDE)):
            if given is not None:
                files[label] = given
                continue
            assert folder is not None
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"inspect-{label}.pt"
            if not path.exists():
                started = time.perf_counter()
                # In a child process: Linux carries a parent's peak RSS into the children
                # it forks (ru_maxrss), so this process must stay small and torch-free.
                subprocess.run([sys.executable, __file__, "--write", str(path), str(side)],
                               check=True)
                print(f"wrote {path} ({path.stat().st_size / 1e9:.2f} GB) in "
                      f"{time.perf_counter() - started:.1f} s")
            files[label] = path
        results = {label: measure(path, args.repeats) for label, path in files.items()}
        print(f"{'file':<6} {'size':>10} {'wall median':>12} {'wall min':>9} {'peak RSS':>10}")
        for label, r in results.items():
            print(f"{label:<6} {r['size'] / 1e9:>8.3f} GB {r['wall_median']:>10.3f} s "
                  f"{r['wall_min']:>7.3f} s {r['rss_max'] / 2**20:>7.1f} MiB")
        big, small = results["big"], results["small"]
        ratio = big["size"] / max(small["size"], 1)
        growth = big["rss_max"] / max(small["rss_max"], 1)
        imported = torch_imported(files["big"])
        print(f"file size x{ratio:.0f}; peak RSS x{growth:.2f}; "
              f"torch imported by inspect: {imported}")
        ok = big["wall_median"] < TARGET_SECONDS and growth < 1.2 and not imported
        print("PASS" if ok else "FAIL", f"(target: < {TARGET_SECONDS} s, RSS flat, no torch)")
        return 0 if ok else 1
    finally:
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    raise SystemExit(main())
