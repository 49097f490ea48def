"""Open checkpoints of many small tensors, shape by shape: ckwidget's tensor-record fast
path against its plain opcode loop and against torch.load.

Builds each shape of a corpus at ``--tensors`` tensors (default 100,000) with torch.save
in a temporary folder, then measures, each in a fresh subprocess of this interpreter
(``--repeat`` times, least CPU time kept), the process CPU time of just the call (imports
excluded) and the process's peak RSS:

- fast:  ckwidget.open_checkpoint(path) (the default: tensor records read in bulk)
- plain: the same with ``ckwidget.readers.pickle_vm.FAST_RECORDS = False``
- torch: torch.load(path, weights_only=True, mmap=True)

Shapes: uniform transformer-like blocks of one shape, transformer layers (1-d and 2-d
float tensors), ResNet-style conv/BN/linear blocks (a 0-d int64 num_batches_tracked
between float tensors), mixed dtypes, views with storage offsets (the test suite's
``_many`` mix: 0-d, int64 and offset views) and storages shared by several tensors, each
at pickle protocols 2 (torch.save's default, the plain name) to 5 (``resnet-p4``).

    python benchmarks/open_shapes.py [--tensors 100000] [--repeat 1] [--shapes a,b]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

MEASURE = r"""
import json, sys, time

def status(field):
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0

method, path = sys.argv[1], sys.argv[2]
if method in ("fast", "plain"):
    import ckwidget
    import ckwidget.readers.pickle_vm
    import ckwidget.readers.torch_zip  # the reader's own imports are not the open's cost
    ckwidget.readers.pickle_vm.FAST_RECORDS = method == "fast"
    run = lambda: ckwidget.open_checkpoint(path)
    count = lambda result: len(result.tensors)
else:
    import torch
    run = lambda: torch.load(path, weights_only=True, mmap=True)
    count = lambda result: len(result)
started = time.process_time()
try:
    result = run()
except Exception as exc:  # torch's weights_only unpickler refuses protocol 4 and 5
    print(json.dumps({"cpu": None, "peak_mb": status("VmHWM"), "tensors": None,
                      "error": f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1]}"}))
    sys.exit(0)
seconds = time.process_time() - started
print(json.dumps({"cpu": seconds, "peak_mb": status("VmHWM"), "tensors": count(result)}))
"""

METHODS = ("fast", "plain", "torch")


def _uniform(n: int) -> dict[str, Any]:
    import torch

    return {f"blocks.{i // 10}.layer.{i % 10}.weight": torch.zeros(4, 4) for i in range(n)}


def _transformer(n: int) -> dict[str, Any]:
    import torch

    d = 8
    parts = (("ln_1.weight", (d,)), ("ln_1.bias", (d,)), ("attn.c_attn.weight", (3 * d, d)),
             ("attn.c_attn.bias", (3 * d,)), ("attn.c_proj.weight", (d, d)),
             ("attn.c_proj.bias", (d,)), ("ln_2.weight", (d,)), ("ln_2.bias", (d,)),
             ("mlp.c_fc.weight", (4 * d, d)), ("mlp.c_fc.bias", (4 * d,)),
             ("mlp.c_proj.weight", (d, 4 * d)), ("mlp.c_proj.bias", (d,)))
    return {f"transformer.h.{i // len(parts)}.{parts[i % len(parts)][0]}":
            torch.zeros(parts[i % len(parts)][1]) for i in range(n)}


def _resnet(n: int) -> dict[str, Any]:
    import torch

    parts = (("conv.weight", lambda: torch.zeros(8, 4, 3, 3)),
             ("conv.bias", lambda: torch.zeros(8)),
             ("bn.weight", lambda: torch.ones(8)), ("bn.bias", lambda: torch.zeros(8)),
             ("bn.running_mean", lambda: torch.zeros(8)),
             ("bn.running_var", lambda: torch.ones(8)),
             ("bn.num_batches_tracked", lambda: torch.tensor(0)),
             ("fc.weight", lambda: torch.zeros(4, 8)), ("fc.bias", lambda: torch.zeros(4)))
    return {f"layer.{i // len(parts)}.{parts[i % len(parts)][0]}": parts[i % len(parts)][1]()
            for i in range(n)}


def _dtypes(n: int) -> dict[str, Any]:
    import torch

    kinds = (torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.float32,
             torch.bool, torch.int32, torch.uint8, torch.float64, torch.int8)
    shapes = ((4, 4), (16,), (), (2, 3, 4))
    return {f"m.{i // 10}.t{i % 10}": torch.zeros(shapes[i % 4], dtype=kinds[i % 10])
            for i in range(n)}


def _views(n: int) -> dict[str, Any]:
    """Views with storage offsets among 0-d, int64 and plain tensors; also the test
    suite's ``_many`` mix (tests/test_pickle_fast.py builds it with this function)."""
    import torch

    g = torch.Generator().manual_seed(n)
    out = {}
    for i in range(n):
        kind = i % 5
        if kind == 0:
            out[f"module.layers.{i}.weight"] = torch.randn(2, 2, generator=g)
        elif kind == 1:
            out[f"module.layers.{i}.bias"] = torch.randn(3, generator=g)
        elif kind == 2:
            out[f"m.{i}.scale"] = torch.tensor(float(i))
        elif kind == 3:
            out[f"m.{i}.conv"] = torch.zeros(1, 1, 1, 2)
        elif i % 10_000 == 4:
            out[f"m.{i}.big"] = torch.zeros(66_000)
        else:
            out[f"m.{i}.idx"] = torch.zeros(300, dtype=torch.int64)[i % 300:]
    return out


def _shared(n: int) -> dict[str, Any]:
    """Groups of four tensors on one storage: a weight, the same weight tied, its
    transpose and a row."""
    import torch

    out: dict[str, Any] = {}
    base = None
    for i in range(n):
        part = i % 4
        if part == 0:
            base = torch.zeros(4, 6)
            out[f"enc.{i // 4}.weight"] = base
        elif part == 1:
            out[f"dec.{i // 4}.weight"] = base
        elif part == 2:
            out[f"dec.{i // 4}.weight_t"] = base.t()
        else:
            out[f"dec.{i // 4}.row"] = base[2]
    return out


_BUILDERS: dict[str, Callable[[int], dict[str, Any]]] = {
    "uniform": _uniform, "transformer": _transformer, "resnet": _resnet, "dtypes": _dtypes,
    "views": _views, "shared": _shared,
}
# name -> (builder, pickle protocol): every shape at every protocol torch.save writes with
# (2, its default, has the plain name; 4 and 5 add FRAME, MEMOIZE and SHORT_BINUNICODE)
SHAPES: dict[str, tuple[Callable[[int], dict[str, Any]], int]] = {
    (name if protocol == 2 else f"{name}-p{protocol}"): (build, protocol)
    for protocol in (2, 3, 4, 5) for name, build in _BUILDERS.items()
}


def measure(method: str, path: Path) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-c", MEASURE, method, str(path)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tensors", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=1,
                        help="fresh processes per method and shape (least CPU time kept)")
    parser.add_argument("--shapes", default=",".join(SHAPES),
                        help="comma-separated shapes, of: " + ", ".join(SHAPES))
    args = parser.parse_args(argv)
    names = [s for s in args.shapes.split(",") if s]
    unknown = [s for s in names if s not in SHAPES]
    if unknown:
        parser.error(f"unknown shapes: {', '.join(unknown)}")

    import torch

    rows = []
    with tempfile.TemporaryDirectory(prefix="ckwidget-shapes-") as folder:
        for name in names:
            build, protocol = SHAPES[name]
            path = Path(folder) / f"{name}.pt"
            started = time.perf_counter()
            obj = build(args.tensors)
            torch.save(obj, path, pickle_protocol=protocol)
            del obj
            print(f"wrote {name}: {args.tensors:,} tensors, protocol "
                  f"{protocol}, {path.stat().st_size / 1e6:.1f} MB in "
                  f"{time.perf_counter() - started:.1f} s", flush=True)
            got = {}
            for method in METHODS:
                runs = [measure(method, path) for _ in range(args.repeat)]
                best = min(runs, key=lambda r: (r["cpu"] is None, r["cpu"] or 0.0))
                best["peak_mb"] = max(r["peak_mb"] for r in runs)
                got[method] = best
            counts = {got[m]["tensors"] for m in METHODS} - {None}
            rows.append((name, protocol, got, counts))
            path.unlink()

    print(f"\n{args.tensors:,} tensors per shape; CPU seconds of the call alone (imports "
          f"excluded), least of {args.repeat} fresh process(es); peak RSS in MB")
    print(f"{'shape':<16}{'proto':>6}{'fast s':>9}{'plain s':>9}{'torch s':>9}"
          f"{'fast MB':>9}{'plain MB':>9}{'torch MB':>9}  verdict")
    worst = 0.0
    failures = 0
    for name, protocol, got, counts in rows:
        fast, plain, tl = (got[m]["cpu"] for m in METHODS)
        worst = max(worst, fast)
        notes = []
        if fast > plain:
            notes.append("fast > plain")
        if fast > 1.0:
            notes.append("over 1.0 s")
        if tl is None:
            notes.append("torch refuses the file")
        elif fast > tl:
            notes.append("slower than torch")
        if len(counts) != 1:
            notes.append(f"tensor counts differ {sorted(counts)}")
        failures += any(note != "torch refuses the file" for note in notes)
        shown = "refused" if tl is None else f"{tl:.3f}"
        print(f"{name:<16}{protocol:>6}{fast:>9.3f}{plain:>9.3f}{shown:>9}"
              f"{got['fast']['peak_mb']:>9.0f}{got['plain']['peak_mb']:>9.0f}"
              f"{got['torch']['peak_mb']:>9.0f}  {'; '.join(notes) or 'OK'}")
    print(f"slowest fast open: {worst:.3f} s cpu (target 1.0 s); "
          f"{failures} of {len(rows)} shapes miss a goal")
    from _host import host_line

    print(host_line())


if __name__ == "__main__":
    main()
