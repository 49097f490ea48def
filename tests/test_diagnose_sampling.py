"""Non-finite checks read a bounded sample, whatever the number or size of tensors."""

from __future__ import annotations

import torch
from torch import nn

import ckwidget as ck
from ckwidget.checkpoint import Checkpoint, describe_tensor
from ckwidget.diagnosis.sampling import DEFAULT_BUDGET, MAX_LARGEST, MAX_SPREAD, sample_values


class Counting:
    """A tensor source that counts its reads."""

    reads = 0

    def __init__(self, tensor: torch.Tensor) -> None:
        self.tensor = tensor

    def load(self) -> torch.Tensor:
        Counting.reads += 1
        return self.tensor


def counted_checkpoint(sd: dict[str, torch.Tensor]) -> Checkpoint:
    tensors = {}
    for k, v in sd.items():
        info = describe_tensor(v)
        tensors[k] = type(info)(info.shape, info.dtype, info.device, info.nbytes,
                                info.layout, Counting(v))
    return Checkpoint(None, "in-memory", tensors, [""], {"name": "counted"})


def test_many_tensors_read_a_bounded_sample():
    sd = {f"layers.{i}.weight": torch.zeros(1000) for i in range(3000)}
    big = torch.zeros(2_000_000)
    big[900_000:1_000_000] = float("nan")  # the middle only: head and tail are clean
    sd["big.weight"] = big
    Counting.reads = 0
    sample = sample_values(counted_checkpoint(sd), "")
    assert Counting.reads <= MAX_LARGEST + MAX_SPREAD
    assert sample.tensors == Counting.reads
    assert sample.bytes_read <= DEFAULT_BUDGET
    assert sample.examined < sample.total
    assert "big.weight" in sample.nonfinite
    nan, inf = sample.nonfinite["big.weight"]
    assert nan > 0 and inf == 0


def test_small_checkpoints_are_examined_whole():
    sd = {f"l.{i}.weight": torch.randn(8, 8) for i in range(20)}
    sd["l.3.weight"][0, :3] = float("nan")
    sd["l.7.weight"][1, 1] = float("inf")
    sample = sample_values(counted_checkpoint(sd), "")
    assert sample.examined == sample.total == 20 * 64
    assert sample.nonfinite == {"l.3.weight": (3, 0), "l.7.weight": (0, 1)}


def test_diagnose_never_torch_loads_the_whole_file(tmp_path, monkeypatch):
    model = nn.Sequential(*[nn.Linear(2, 2) for _ in range(600)])
    sd = model.state_dict()
    sd["5.weight"][0, 0] = float("nan")
    path = tmp_path / "many.pt"
    torch.save(sd, path)
    calls = []
    real = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(a) or real(*a, **k))
    report = ck.diagnose(path, model)
    assert calls == []
    assert report.finding("nonfinite") is not None
    assert "5.weight" in report.finding("nonfinite").keys


def test_descriptions_without_bytes_have_nothing_to_sample():
    """An in-memory description (TensorInfo without sources) is examined in one pass and
    gives an empty sample; one readable tensor among them is still found and read."""
    from ckwidget.checkpoint import TensorInfo

    tensors = {f"l.{i}.w": TensorInfo((2, 2), "float32", "cpu", 16) for i in range(1000)}
    ckpt = Checkpoint(None, "in-memory", tensors, [""])
    sample = sample_values(ckpt, "")
    assert (sample.candidates, sample.tensors, sample.total) == (0, 0, 0)
    bad = torch.tensor([float("nan"), 1.0])
    tensors["l.500.w"] = describe_tensor(bad)
    sample = sample_values(Checkpoint(None, "in-memory", tensors, [""]), "")
    assert (sample.candidates, sample.tensors, sample.total) == (1, 1, 2)
    assert sample.nonfinite == {"l.500.w": (1, 0)}


def test_choose_takes_the_largest_like_a_heap_and_spreads_the_rest():
    import heapq
    import random

    from ckwidget.diagnosis.sampling import choose

    rng = random.Random(5)
    for _ in range(300):
        n = rng.randint(0, 3000)
        sizes = [rng.choice([0, 4, 16, 16, 64, rng.randint(0, 10**6)]) for _ in range(n)]
        largest, spread = rng.randint(1, 50), rng.randint(1, 50)
        got = choose(sizes, largest, spread)
        assert got == sorted(set(got))
        if n <= largest + spread:
            assert got == list(range(n))
            continue
        top = set(heapq.nlargest(largest, range(n), key=sizes.__getitem__))
        assert top <= set(got) and len(got) <= largest + spread
        rest = [i for i in range(n) if i not in top]
        step = len(rest) / spread
        assert set(got) - top == {rest[int(j * step)] for j in range(spread)}


def _mixed_state_dict() -> dict[str, torch.Tensor]:
    """Small tensors of every float dtype, with NaN and inf at the edges and inside; a
    transposed view, a view at an offset into a shared storage, a bigger tensor that is
    sampled rather than read whole, and integer tensors that are not examined."""
    torch.manual_seed(3)
    sd: dict[str, torch.Tensor] = {}
    for dtype in (torch.float64, torch.float32, torch.float16, torch.bfloat16):
        name = str(dtype).removeprefix("torch.")
        for i in range(6):
            t = torch.randn(3, 5).to(dtype)
            if i == 1:
                t[0, 0] = float("nan")  # the first value
            if i == 2:
                t[-1, -1] = float("-inf")  # the last
            if i == 4:
                t[1, 2:4] = float("nan")
                t[2, 0] = float("inf")
            sd[f"{name}.{i}.weight"] = t
    base = torch.randn(40)
    base[10] = float("nan")
    base[30] = float("inf")
    sd["shared.a"] = base[8:20]  # a view at an offset: only its own NaN counts
    sd["shared.b"] = base[20:28]  # none of the storage's non-finite values
    sd["transposed.weight"] = torch.randn(4, 6).t()
    sd["transposed.weight"][0, 1] = float("nan")
    big = torch.randn(3_000_000)
    big[::1000] = float("nan")
    sd["big.weight"] = big
    sd["steps"] = torch.arange(10)
    return sd


def _exact(sd: dict[str, torch.Tensor]) -> dict[str, tuple[int, int]]:
    out = {}
    for k, t in sd.items():
        if t.is_floating_point() and t.numel() < 1_000_000:
            nan, inf = int(t.isnan().sum()), int(t.isinf().sum())
            if nan or inf:
                out[k] = (nan, inf)
    return out


def test_small_tensors_counted_from_their_bytes_match_torch(tmp_path, monkeypatch):
    """Small tensors are counted from their raw bytes (one numpy pass per dtype); the
    counts equal torch's, and the whole sample equals the one built tensor by tensor."""
    from safetensors.torch import save_file

    from ckwidget.diagnosis import sampling
    from ckwidget.readers import open_checkpoint

    sd = _mixed_state_dict()
    torch.save(sd, tmp_path / "mixed.pt")
    torch.save(sd, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    flat = {k: v.contiguous() for k, v in sd.items()}  # safetensors stores no views
    save_file(flat, str(tmp_path / "mixed.safetensors"))
    for name in ("mixed.pt", "legacy.pt", "mixed.safetensors"):
        ckpt = open_checkpoint(tmp_path / name)
        fast = sample_values(ckpt, "")
        exact = _exact(sd)
        got = {k: v for k, v in fast.nonfinite.items() if k != "big.weight"}
        assert got == exact, name
        assert list(got) == [k for k in ckpt.tensors if k in exact]  # the file's order
        assert fast.nonfinite["big.weight"][0] > 0 and fast.error is None
        with monkeypatch.context() as m:  # every tensor built and sampled instead
            m.setattr(sampling._WholeReads, "take", lambda self, k, info, cap: None)
            slow = sample_values(ckpt, "")
        assert fast == slow, name


def test_a_file_rewritten_after_opening_stops_the_sample_with_a_sentence(tmp_path):
    """Bytes read for counting go through the same stamp check as any read: a file
    written again since it was opened is not read through its old index."""
    import os

    from ckwidget.readers import open_checkpoint

    path = tmp_path / "ckpt.pt"
    torch.save({f"l.{i}.weight": torch.randn(4, 4) for i in range(5)}, path)
    ckpt = open_checkpoint(path)
    torch.save({f"l.{i}.weight": torch.randn(4, 4) for i in range(6)}, path)
    os.utime(path, ns=(1, 1))  # a new mtime even on a coarse clock
    sample = sample_values(ckpt, "")
    assert sample.tensors == 0
    assert sample.error is not None and "changed on disk" in sample.error
