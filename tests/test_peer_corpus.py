"""The peer corpus (tests/peer_corpus.py) against ckwidget, judged by computed ground
truth (tests/peer_groundtruth.py).

For every sample:

(a) ``ckwidget.open_checkpoint`` and ``ckwidget.diagnose`` run nothing from it (audit
    hook in the worker, and the sample's sentinel file stays absent);
(b) if the real loaders (pickle.load, pickle.loads, torch.load(weights_only=False)) run
    something from it, ckwidget reports ``malicious`` or ``unsafe-globals``;
(c) and then offers no ``allow-globals`` fix anywhere;
(d) for samples holding weights, the code ckwidget emits (``report.plan.to_code()``)
    runs nothing when executed in a fresh worker with the model defined.

The ground truth, the ckwidget verdicts and the snippet runs are computed once per
session, each in one worker process (restarted if a payload kills it).

    python -m pytest -q -p no:cacheprovider tests/test_peer_corpus.py
"""

from __future__ import annotations

import collections
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import peer_corpus as P
import peer_groundtruth as G
import pytest

SAMPLES = P.samples(Path("/nonexistent-peer-corpus"))  # specs only: names for the ids
NAMES = [s.name for s in SAMPLES]
WEIGHTED = [s.name for s in SAMPLES if s.weights]


@dataclass
class Peer:
    samples: dict[str, P.Sample]  # the ckwidget-side copies (their own sentinels)
    truth: dict[str, G.Truth]
    ckwidget: dict[str, dict[str, Any]]
    snippets: dict[str, dict[str, Any]]


@pytest.fixture(scope="session")
def peer(tmp_path_factory: pytest.TempPathFactory) -> Peer:
    """Two copies of the corpus (the real loaders create the first copy's sentinels, so
    ckwidget is judged on the second's): ground truth and ckwidget verdicts computed in
    parallel workers, then the emitted code of every weight-holding sample run."""
    root = tmp_path_factory.mktemp("peer")
    truth_samples = P.samples(root / "truth") + P.controls(root / "truth")
    ck_samples = P.samples(root / "ck") + P.controls(root / "ck")
    P.write_corpus(truth_samples)
    P.write_corpus(ck_samples)
    with ThreadPoolExecutor(1) as pool:
        truth_job = pool.submit(G.ground_truth, truth_samples, root / "truth")
        verdicts = G.ckwidget_verdicts(ck_samples, root / "ck")
        items = [(s.name, verdicts[s.name]["code"], s.sentinel) for s in ck_samples
                 if s.weights and "code" in verdicts[s.name] and not G.ran(verdicts[s.name])]
        snippets = G.run_snippets(items, root / "snippets")
        truth = truth_job.result()
    return Peer({s.name: s for s in ck_samples}, truth, verdicts, snippets)


# --------------------------------------------------------------------------- the corpus


def test_corpus_has_300_samples_in_25_families() -> None:
    fams = P.families(SAMPLES)
    assert len(SAMPLES) >= 300, len(SAMPLES)
    assert len(fams) >= 25, sorted(fams)
    assert {s.protocol for s in SAMPLES} >= {0, 1, 2, 3, 4, 5}
    containers = collections.Counter(s.container for s in SAMPLES)
    assert {"pickle", "zip", "legacy"} <= set(containers), containers
    assert 50 <= len(WEIGHTED) < len(SAMPLES)
    for required in ("builtins-eval-exec-compile", "os-posix-nt-system", "subprocess",
                     "runpy", "importlib", "py2-fix-imports", "first-opcode",
                     "stack-global-memo-built", "inst-obj", "newobj-newobj-ex",
                     "build-setstate-dict", "getattr-chains", "frame-divergence",
                     "broken-tail", "nested-pickle", "copyreg-ext", "torch-gadgets",
                     "stdlib-command-gadgets", "code-runner-gadgets", "operator-gadgets",
                     "functools-wrapping", "zip-local-vs-central-names",
                     "zip-concatenation", "zip-duplicate-records", "zip-unread-records"):
        assert required in fams, required


def test_ground_truth_sees_nothing_run_in_benign_files(peer: Peer) -> None:
    """The harness is calibrated: benign files written by torch.save and pickle.dumps
    run nothing under the real loaders, and ckwidget does not call them malicious."""
    controls = [n for n in peer.truth if n.startswith("control/")]
    assert len(controls) >= 5
    for name in controls:
        assert not peer.truth[name].executed, (name, peer.truth[name].summary())
        assert "malicious" not in G.finding_kinds(peer.ckwidget[name]), name


def test_payloads_are_real(peer: Peer) -> None:
    """What each generator means to happen is what the real loaders do: a payload that
    silently broke would make every other check vacuous."""
    wrong = [(s.name, s.expect, peer.truth[s.name].summary(), peer.truth[s.name].errors)
             for s in SAMPLES if s.expect is not None
             and peer.truth[s.name].executed != s.expect]
    assert not wrong, "\n".join(map(str, wrong))
    # a payload that ends the loading process loses only its own sample
    assert peer.truth["os-posix-nt-system/posix._exit-p2-pickle"].raw.get("crashed")
    executed = sum(t.executed for n, t in peer.truth.items() if not n.startswith("control/"))
    assert executed >= 300, executed
    for family, members in P.families(SAMPLES).items():
        if family not in ("zip-unread-records", "stacked-plain-pickles"):
            assert any(peer.truth[s.name].executed for s in members), family


def test_snippet_runner_detects_what_it_must(tmp_path: Path) -> None:
    """(d) means something: the snippet worker sees a spawn, an exec and a written file."""
    sentinel = tmp_path / "sentinel-snippet"
    bad = (f"import os\ntry:\n    os.system('touch {sentinel}')\nexcept RuntimeError:\n"
           f"    pass\nexec(\"open({str(sentinel)!r}, 'w').close()\")\n")
    result = G.run_snippet(bad, tmp_path, sentinel)
    kinds = {e[0] for e in result["events"]}
    assert {"blocked", "exec", "write"} <= kinds, result
    assert result["sentinel"] and G.ran(result)
    quiet = G.run_snippet("import torch\nmodel.load_state_dict(model.state_dict())\n",
                          tmp_path)
    assert not G.ran(quiet), quiet


# --------------------------------------------------------------------------- per sample


def _context(peer: Peer, name: str) -> str:
    return (f"\n  real loaders: {peer.truth[name].summary()}"
            f"\n  ckwidget said: {G.said(peer.ckwidget[name])}")


@pytest.mark.parametrize("name", NAMES)
def test_opening_and_diagnosing_run_nothing(peer: Peer, name: str) -> None:
    """(a) open_checkpoint and diagnose run nothing from the file."""
    verdict = peer.ckwidget[name]
    assert not verdict.get("worker_error"), verdict["worker_error"]
    assert not G.ran(verdict), (verdict.get("events"), verdict.get("sentinel"),
                                _context(peer, name))


@pytest.mark.parametrize("name", NAMES)
def test_what_the_real_loader_runs_is_flagged(peer: Peer, name: str) -> None:
    """(b) every sample the real loaders run gets malicious or unsafe-globals."""
    truth = peer.truth[name]
    if not truth.executed:
        pytest.skip("the real loaders run nothing from this file")
    assert G.flagged(peer.ckwidget[name]), "not flagged" + _context(peer, name)


@pytest.mark.parametrize("name", NAMES)
def test_no_allowlisting_of_what_the_real_loader_runs(peer: Peer, name: str) -> None:
    """(c) ckwidget never offers to allowlist globals of a file the loaders run."""
    truth = peer.truth[name]
    if not truth.executed:
        pytest.skip("the real loaders run nothing from this file")
    offered = G.allow_globals_fixes(peer.ckwidget[name])
    assert not offered, f"allow-globals {offered}" + _context(peer, name)


@pytest.mark.parametrize("name", WEIGHTED)
def test_emitted_code_runs_nothing(peer: Peer, name: str) -> None:
    """(d) the plan's code, run in a fresh worker with the model defined, runs nothing."""
    verdict = peer.ckwidget[name]
    if name not in peer.snippets:
        pytest.skip("no code emitted: " + str(verdict.get("code_error")
                                              or verdict.get("diagnose", {}).get("error")
                                              or "opening already ran something"))
    result = peer.snippets[name]
    assert not G.ran(result), (result.get("events"), result.get("sentinel"),
                               verdict.get("code"), _context(peer, name))
