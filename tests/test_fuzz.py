"""Damaged files: a small torch zip archive and a small legacy file, cut at every byte
offset and hit by thousands of seeded random byte flips.

Each damaged file either opens (a Checkpoint, with findings when damage is visible) or
raises a CheckpointError subclass with a sentence, never an internal error (one that
open_checkpoint had to wrap) and never anything else; a watchdog turns a hang into a
failure. Materialising the tensors of what opened may only raise CheckpointError too.
"""

from __future__ import annotations

import random
import signal
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

import ckwidget as ck
from ckwidget.errors import CheckpointError

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

CASE_LIMIT_S = 2.0
FLIPS_ZIP = 1500
FLIPS_LEGACY = 1500


class Hang(BaseException):  # not an Exception: open_checkpoint must not swallow it
    pass


@contextmanager
def watchdog(seconds: float) -> Iterator[None]:
    def fire(*_: object) -> None:
        raise Hang

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def state() -> dict:
    g = torch.Generator().manual_seed(0)
    sd = {"layer.weight": torch.randn(4, 3, generator=g), "layer.bias": torch.randn(4, generator=g),
          "steps": torch.tensor(3), "half": torch.randn(2, generator=g).half()}
    return {"state_dict": sd, "epoch": 1, "name": "tiny"}


@pytest.fixture(scope="module")
def originals(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("fuzz-src")
    torch.save(state(), folder / "zip.pt")
    torch.save(state(), folder / "legacy.pt", _use_new_zipfile_serialization=False)
    return {"zip": (folder / "zip.pt").read_bytes(),
            "legacy": (folder / "legacy.pt").read_bytes()}


def outcome(path: Path, data: bytes, *, materialise: bool) -> str:
    """Open one damaged file; fail on anything the contract forbids; name what happened."""
    path.write_bytes(data)
    try:
        with watchdog(CASE_LIMIT_S):
            try:
                ckpt = ck.open_checkpoint(path)
            except CheckpointError as exc:
                assert str(exc).strip(), "an error without a sentence"
                assert getattr(exc, "internal", False) is not True, (
                    f"internal error at {len(data)} bytes: {exc}")
                return type(exc).__name__
            if materialise and ckpt.tensors:
                try:
                    ckpt.state_dict()
                except CheckpointError as exc:
                    assert str(exc).strip()
            errors = [f for f in ckpt.findings if f.severity == "error"]
            return f"opened:{ckpt.format}:{'findings' if errors else 'clean'}"
    except Hang:
        pytest.fail(f"hang (> {CASE_LIMIT_S} s) on a {len(data)}-byte damaged file")


@pytest.mark.parametrize("kind", ["zip", "legacy"])
def test_truncation_at_every_byte(tmp_path: Path, originals: dict[str, bytes],
                                  kind: str) -> None:
    data = originals[kind]
    seen: Counter[str] = Counter()
    path = tmp_path / f"cut.{'pt' if kind == 'zip' else 'bin'}"
    for cut in range(len(data)):
        result = outcome(path, data[:cut], materialise=cut % 7 == 0)
        seen[result] += 1
        # a cut file never passes for a clean checkpoint
        assert result != f"opened:torch-{kind}:clean", (cut, result)
    assert outcome(path, data, materialise=True).endswith(":clean")
    assert sum(seen.values()) == len(data) >= 500


@pytest.mark.parametrize(("kind", "flips"), [("zip", FLIPS_ZIP), ("legacy", FLIPS_LEGACY)])
def test_random_byte_flips(tmp_path: Path, originals: dict[str, bytes], kind: str,
                           flips: int) -> None:
    data = originals[kind]
    rng = random.Random(20240611 + len(kind))
    seen: Counter[str] = Counter()
    path = tmp_path / "flip.pt"
    for i in range(flips):
        damaged = bytearray(data)
        for _ in range(rng.choice((1, 1, 1, 2, 3, 8))):
            at = rng.randrange(len(damaged))
            damaged[at] = rng.randrange(256) if rng.random() < 0.5 else damaged[at] ^ (
                1 << rng.randrange(8))
        seen[outcome(path, bytes(damaged), materialise=i % 5 == 0)] += 1
    assert sum(seen.values()) == flips
