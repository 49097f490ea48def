"""Verdicts on the peer corpus of hostile files, per technique family.

Generates the corpus of tests/peer_corpus.py twice (each copy has its own sentinel
files), computes the ground truth with the real loaders in an audit-hooked worker
(tests/peer_groundtruth.py: pickle.load, pickle.loads, torch.load(weights_only=False)),
opens and diagnoses every file with ckwidget in another worker, and, when picklescan is
installed (``pip install picklescan``), scans every file with its scanner API. Prints
one markdown row per family:

- samples: files in the family;
- executed: files the real loaders run something from (ground truth);
- ckwidget: files ckwidget reports as ``malicious`` or ``unsafe-globals``, and how
  many executed files it does not (missed);
- picklescan: files picklescan reports dangerous globals in, and its misses.

    python benchmarks/verdict_table.py [--family SUBSTRING] [--misses] [--keep DIR]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path.insert(0, str(TESTS))

import peer_corpus as P  # noqa: E402
import peer_groundtruth as G  # noqa: E402

try:  # optional
    from picklescan.scanner import scan_file_path
except ImportError:  # pragma: no cover - depends on the environment
    scan_file_path = None


def picklescan_flags(path: Path) -> bool | None:
    """True when picklescan reports a dangerous global; None when it is not installed."""
    if scan_file_path is None:
        return None
    try:
        result = scan_file_path(str(path))
    except Exception:  # a scanner crash is a miss, not a verdict
        return False
    return result.infected_files > 0 or result.issues_count > 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="", help="only families containing this")
    parser.add_argument("--misses", action="store_true",
                        help="list every executed file ckwidget does not flag")
    parser.add_argument("--keep", type=Path, help="build the corpus here and keep it")
    args = parser.parse_args(argv)

    root = args.keep or Path(tempfile.mkdtemp(prefix="peer-verdicts-"))
    started = time.perf_counter()
    try:
        truth_samples = [s for s in P.samples(root / "truth") if args.family in s.family]
        ck_samples = [s for s in P.samples(root / "ck") if args.family in s.family]
        P.write_corpus(truth_samples)
        P.write_corpus(ck_samples)
        with ThreadPoolExecutor(1) as pool:
            truth_job = pool.submit(G.ground_truth, truth_samples, root / "truth")
            verdicts = G.ckwidget_verdicts(ck_samples, root / "ck")
            scans = {s.name: picklescan_flags(s.path) for s in ck_samples}
            truth = truth_job.result()
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)

    have_scan = scan_file_path is not None
    head = ["family", "samples", "executed", "ckwidget flagged", "ckwidget missed"]
    if have_scan:
        head += ["picklescan flagged", "picklescan missed"]
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|")
    totals = [0] * (len(head) - 1)
    for family, members in P.families(ck_samples).items():
        names = [s.name for s in members]
        executed = [n for n in names if truth[n].executed]
        ck = [n for n in names if G.flagged(verdicts[n])]
        row = [len(names), len(executed), len(ck), len(set(executed) - set(ck))]
        if have_scan:
            ps = [n for n in names if scans[n]]
            row += [len(ps), len(set(executed) - set(ps))]
        totals = [t + r for t, r in zip(totals, row)]
        print("| " + " | ".join([family, *map(str, row)]) + " |")
    print("| " + " | ".join(["**total**", *(f"**{t}**" for t in totals)]) + " |")
    print()
    if not have_scan:
        print("picklescan is not installed (pip install picklescan): its columns are left out.")
    print(f"{len(ck_samples)} files in {len(P.families(ck_samples))} families, "
          f"{time.perf_counter() - started:.1f} s")
    if args.misses:
        print()
        for s in ck_samples:
            if truth[s.name].executed and not G.flagged(verdicts[s.name]):
                print(f"- {s.name}: real loaders: {truth[s.name].summary()[:120]}; "
                      f"ckwidget: {G.said(verdicts[s.name])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
