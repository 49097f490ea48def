"""How diagnosis time grows with the number of keys (target: <= 1 s at 100k keys).

For 1k, 10k and 100k keys: a meta-device model of that many tensors, and an in-memory
checkpoint (TensorInfo values, no bytes) of the same layout in four situations: keys
that match, keys behind a DataParallel "module." prefix, a module renamed inside every
block (mlp -> ffn), and a GPT-2 style checkpoint with renamed blocks and transposed 2-D
weights. Prints CPU seconds of ``diagnose()`` per case (best of several runs), its wall
time, the extra cost of building ``report.table`` on first access, and the growth ratio
against n log n. Run: python benchmarks/diagnose_scale.py [--sizes 1000,10000,100000]
"""

from __future__ import annotations

import gc
import math
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ckwidget.checkpoint import Checkpoint, TensorInfo
from ckwidget.diagnosis import diagnose

HIDDEN = 8


def meta_model(n_keys: int) -> nn.Module:
    """blocks.{i}.attn / blocks.{i}.mlp with weight and bias each: 4 tensors a block."""
    root = nn.Module()
    blocks = nn.ModuleList()
    for _ in range(max(1, n_keys // 4)):
        block = nn.Module()
        for name, (out, inp) in (("attn", (3 * HIDDEN, HIDDEN)), ("mlp", (4 * HIDDEN, HIDDEN))):
            sub = nn.Module()
            sub._parameters["weight"] = nn.Parameter(torch.empty(out, inp, device="meta"))
            sub._parameters["bias"] = nn.Parameter(torch.empty(out, device="meta"))
            block._modules[name] = sub
        blocks.append(block)
    root.blocks = blocks
    return root


def checkpoint(model: nn.Module, case: str) -> Checkpoint:
    tensors = {}
    for key, p in model.state_dict(keep_vars=True).items():
        shape = tuple(p.shape)
        if case == "gpt2":
            key = key.replace("blocks.", "h.")
            if len(shape) == 2:
                shape = shape[::-1]
        elif case == "prefix":
            key = "module." + key
        elif case == "renamed":
            key = key.replace(".mlp.", ".ffn.")
        tensors[key] = TensorInfo(shape, "float32", "cpu", 4 * math.prod(shape))
    return Checkpoint(None, "in-memory", tensors, [""], {"name": f"bench-{case}"})


TARGET_S = 1.0  # at 100k keys


def run(sizes=(1_000, 10_000, 100_000), cases=("match", "prefix", "renamed", "gpt2")) -> dict:
    """Best-of-N CPU seconds of ``diagnose()`` (the figure the target is about: CPU time
    is what the code costs, whatever else the shared machine runs), its wall time, and
    the extra cost of ``report.table``'s DataFrame, which is built on first access."""
    results: dict[tuple[str, int], float] = {}
    for n in sizes:
        model = meta_model(n)
        for case in cases:
            ckpt = checkpoint(model, case)
            cpu = wall = table = math.inf
            for _ in range(3 if n >= 100_000 else 5):
                gc.collect()  # each run starts from the same heap, not the last run's garbage
                start, start_cpu = time.perf_counter(), time.process_time()
                report = diagnose(ckpt, model)
                mid_cpu = time.process_time()
                wall = min(wall, time.perf_counter() - start)
                cpu = min(cpu, mid_cpu - start_cpu)
                report.table  # noqa: B018 - the DataFrame, on first access
                table = min(table, time.process_time() - mid_cpu)
                del report
            results[(case, n)] = cpu
            print(f"{case:>7} {n:>7,} keys: diagnose {cpu:6.3f} s cpu ({wall:6.3f} s wall); "
                  f"report.table +{table:.3f} s")
            sys.stdout.flush()
    for case in cases:
        small, big = results[(case, sizes[0])], results[(case, sizes[-1])]
        nlogn = (sizes[-1] * math.log(sizes[-1])) / (sizes[0] * math.log(sizes[0]))
        print(f"{case:>7}: x{big / small:.0f} time for x{sizes[-1] // sizes[0]} keys "
              f"(n log n would be x{nlogn:.0f})")
    from _host import host_line

    print(host_line())
    worst = max(results[(case, sizes[-1])] for case in cases)
    verdict = "OK" if worst <= TARGET_S else "OVER TARGET"
    print(f"slowest case at {sizes[-1]:,} keys: {worst:.3f} s cpu (target {TARGET_S} s): {verdict}")
    return results


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,10000,100000",
                    help="comma-separated key counts (the target is judged at the last)")
    run(tuple(int(n) for n in ap.parse_args().sizes.split(",")))
