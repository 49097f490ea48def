"""What does ckwidget's atomic apply cost next to the plain torch code it replaces?

A model of about 1 GB (float32 Linear layers) is saved with torch.save. Each side then
runs in its own fresh interpreter, which builds the model (every page written), and
loads the checkpoint:

- torch:    sd = torch.load(path, mmap=True, weights_only=True); model.load_state_dict(sd)
- ckwidget: ckwidget.Plan([], path).apply(model)   (open, validate, stage, journal, load)

It prints the load time (best of ``--inner`` loads in each of ``--repeat`` interpreters)
and the process's peak resident memory (ru_maxrss, which counts memory-mapped file pages
too) for each side, and the ratios.
Goal: at most 1.2x the time and 1.1x the peak memory of the plain torch code.

    python benchmarks/apply_cost.py [--gb 1.0] [--repeat 2] [--inner 3] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

MODEL = textwrap.dedent(
    """
    import torch
    from torch import nn

    def build(layers, width):
        with torch.device("meta"):
            model = nn.Sequential(*[nn.Linear(width, width) for _ in range(layers)])
        model.to_empty(device="cpu")
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(0.5)  # touch every page, like a real initialisation
        return model
    """
)

SIDE = textwrap.dedent(
    """
    import json, resource, sys, time
    sys.path.insert(0, {repo!r})
    sys.path.insert(0, {workdir!r})
    import torch
    import bench_model
    side, path = {side!r}, {path!r}
    if side == "ckwidget":
        import ckwidget
        import ckwidget.fixes.plan, ckwidget.fixes.apply, ckwidget.readers.torch_zip  # noqa
        ckwidget.Plan([], path).validate()  # one-time imports outside the timing
    model = bench_model.build({layers}, {width})
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for _ in range({inner}):
        t0 = time.perf_counter()
        if side == "torch":
            sd = torch.load(path, mmap=True, weights_only=True)
            model.load_state_dict(sd)
            del sd
        else:
            ckwidget.Plan([], path).apply(model)
        times.append(time.perf_counter() - t0)
    seconds = min(times)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    ok = bool(torch.equal(model[0].weight[0, :4], torch.full((4,), 1.0)))
    print(json.dumps(dict(seconds=seconds, peak_kb=peak, base_kb=base, ok=ok)))
    """
)


def run_side(
    side: str, path: Path, workdir: Path, layers: int, width: int, inner: int
) -> dict:
    code = SIDE.format(repo=str(REPO), workdir=str(workdir), side=side, path=str(path),
                       layers=layers, width=width, inner=inner)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=900)
    if proc.returncode != 0:
        raise SystemExit(f"{side} side failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=float, default=1.0, help="model size in GB")
    parser.add_argument("--repeat", type=int, default=2, help="interpreters per side")
    parser.add_argument("--inner", type=int, default=3, help="loads per interpreter")
    parser.add_argument("--keep", type=Path, default=None, help="work in this folder")
    args = parser.parse_args(argv)

    width = 4096
    layers = max(1, round(args.gb * 1e9 / (width * width * 4)))
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="ckw-apply-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "bench_model.py").write_text(MODEL)
    path = workdir / "model.pt"
    if not path.exists():
        sys.path.insert(0, str(workdir))
        import bench_model
        import torch

        model = bench_model.build(layers, width)
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(1.0)
        torch.save(model.state_dict(), path)
        del model
    size_gb = path.stat().st_size / 1e9
    path.read_bytes()  # warm the page cache so both sides read from memory
    print(f"checkpoint: {layers} x Linear({width}, {width}) float32, {size_gb:.2f} GB")

    best: dict[str, dict] = {}
    for _ in range(args.repeat):
        for side in ("torch", "ckwidget"):
            r = run_side(side, path, workdir, layers, width, args.inner)
            if not r["ok"]:
                raise SystemExit(f"{side}: the model did not receive the checkpoint's values")
            prev = best.get(side)
            best[side] = {
                "seconds": min(r["seconds"], prev["seconds"]) if prev else r["seconds"],
                "peak_kb": min(r["peak_kb"], prev["peak_kb"]) if prev else r["peak_kb"],
                "base_kb": r["base_kb"],
            }
    for side, r in best.items():
        print(
            f"{side:9s} load {r['seconds']:.3f} s   peak RSS {r['peak_kb'] / 1e6:.2f} GB "
            f"(model built: {r['base_kb'] / 1e6:.2f} GB)"
        )
    t = best["ckwidget"]["seconds"] / best["torch"]["seconds"]
    m = best["ckwidget"]["peak_kb"] / best["torch"]["peak_kb"]
    print(f"ratio     time {t:.2f}x (goal <= 1.2x)   peak memory {m:.2f}x (goal <= 1.1x)")
    return 0 if t <= 1.2 and m <= 1.1 else 1


if __name__ == "__main__":
    sys.exit(main())
