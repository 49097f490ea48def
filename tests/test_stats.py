"""Sampled statistics: bounded samples, exact counts when small, readable failures."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import ckwidget as ck
from ckwidget import stats


def test_small_tensor_is_exact() -> None:
    t = torch.tensor([1.0, -3.0, float("nan"), float("inf"), float("-inf"), 2.0])
    s = stats.stats_of("w", t)
    assert s.exact and s.sampled == 6
    assert (s.nan, s.inf, s.nonfinite) == (1, 2, 3)
    assert s.mean == pytest.approx(0.0)
    assert s.absmax == 3.0 and s.minimum == -3.0 and s.maximum == 2.0
    assert s.std == pytest.approx(float(np.std([1.0, -3.0, 2.0])))


def test_large_tensor_sample_is_bounded_and_representative() -> None:
    torch.manual_seed(0)
    t = torch.randn(1000, 1000) * 2 + 5
    values = stats.sample_tensor(t, max_elements=10_000)
    assert 5_000 <= values.size <= 10_000
    s = stats.stats_of("big", t, max_elements=10_000)
    assert not s.exact and s.numel == 1_000_000
    assert s.mean == pytest.approx(5.0, abs=0.1)
    assert s.std == pytest.approx(2.0, abs=0.1)


def test_non_contiguous_tensor_is_sampled_without_full_copy() -> None:
    t = torch.arange(1_000_000, dtype=torch.float32).reshape(1000, 1000).t()
    assert not t.is_contiguous()
    values = stats.sample_tensor(t, max_elements=2_000)
    assert 0 < values.size <= 2_000
    assert set(values.tolist()) <= set(range(1_000_000))


@pytest.mark.parametrize(
    "tensor",
    [
        torch.arange(10, dtype=torch.int64),
        torch.tensor([True, False, True]),
        torch.randn(8, dtype=torch.bfloat16),
        torch.randn(8, dtype=torch.float16),
        torch.randn(4, dtype=torch.complex64),
    ],
)
def test_dtypes_become_float64(tensor: torch.Tensor) -> None:
    values = stats.sample_tensor(tensor)
    assert values.dtype == np.float64 and values.size == tensor.numel()


def test_meta_tensor_reports_why_instead_of_raising() -> None:
    s = stats.stats_of("m", torch.empty(3, 4, device="meta"))
    assert s.sampled == 0 and "meta" in s.error and math.isnan(s.mean)


def test_empty_tensor() -> None:
    s = stats.stats_of("e", torch.zeros(0))
    assert s.sampled == 0 and s.exact and s.error == ""


def test_checkpoint_stats_read_through_the_reader(tmp_path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    save_file({"a.weight": torch.full((300, 300), 0.5),
               "b": torch.tensor([1.0, float("nan"), float("inf")])}, str(path))
    ckpt = ck.open_checkpoint(path)
    b = stats.checkpoint_stats(ckpt, "b")
    assert (b.nan, b.inf, b.mean) == (1, 1, 1.0)
    a = stats.checkpoint_stats(ckpt, "a.weight", max_elements=1_000)
    assert a.sampled <= 1_000 and a.mean == 0.5 and a.std == 0.0


def test_unreadable_checkpoint_tensor_gives_error_text() -> None:
    from ckwidget.checkpoint import Checkpoint, TensorInfo

    ckpt = Checkpoint(None, "in-memory", {"x": TensorInfo((2,), "float32", "cpu", 8)}, [""])
    s = stats.checkpoint_stats(ckpt, "x")
    assert s.sampled == 0 and "no bytes" in s.error


def test_shared_histogram_uses_common_bins() -> None:
    a = np.array([0.0, 0.1, 0.2, np.nan])
    b = np.array([0.9, 1.0, np.inf])
    h = stats.shared_histogram({"checkpoint": a, "model": b}, bins=10)
    assert h.edges[0] == 0.0 and h.edges[-1] == 1.0 and len(h.centers) == 10
    assert h.counts["checkpoint"].sum() == 3 and h.counts["model"].sum() == 2


def test_shared_histogram_of_constant_and_empty_samples() -> None:
    h = stats.shared_histogram({"checkpoint": np.ones(5), "model": np.array([])})
    assert h.edges[0] < 1.0 < h.edges[-1] and h.counts["checkpoint"].sum() == 5


def test_collect_stats_reports_progress_and_cancels() -> None:
    import threading

    seen: list[tuple[int, int]] = []
    cancel = threading.Event()
    jobs = []
    for i in range(5):
        def job(i: int = i) -> stats.TensorStats:
            if i == 2:
                cancel.set()
            return stats.stats_of(str(i), torch.ones(3) * i)

        jobs.append((str(i), job))
    out = stats.collect_stats(jobs, progress=lambda d, n: seen.append((d, n)), cancel=cancel)
    assert [s.key for s in out] == ["0", "1", "2"]
    assert seen == [(1, 5), (2, 5), (3, 5)]
    table = stats.stats_table(out)
    assert list(table["mean"]) == [0.0, 1.0, 2.0]


class _Packed(torch.nn.Module):
    """Saves its weight under another name, as quantized and fused layers do."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(3, 3))

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        destination[prefix + "packed"] = self.weight.detach() * 2


def _models() -> list[torch.nn.Module]:
    torch.manual_seed(0)
    plain = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3),
                                torch.nn.Sequential(torch.nn.Linear(3, 3)))
    plain.register_buffer("scratch", torch.zeros(2), persistent=False)
    tied = torch.nn.Module()
    tied.embed = torch.nn.Embedding(5, 3)
    tied.head = torch.nn.Linear(3, 5, bias=False)
    tied.head.weight = tied.embed.weight
    packed = torch.nn.Sequential(torch.nn.Linear(3, 3), _Packed())
    hooked = torch.nn.Sequential(torch.nn.Linear(3, 3))
    hooked[0]._register_state_dict_hook(
        lambda module, sd, prefix, meta: sd.update({prefix + "weight": sd[prefix + "weight"] + 1}))
    return [plain, tied, packed, hooked]


def test_model_tensors_equal_what_state_dict_gives() -> None:
    """Tensors looked up through their modules are exactly ``state_dict()``'s, for the
    keys asked (tied, buffers, nested); a module that saves its own way or has a
    state-dict hook is read through ``state_dict()``; unknown and non-persistent names
    are left out."""
    for model in _models():
        sd = model.state_dict()
        asked = [*sd, "nope.weight", "scratch", "0.missing"]
        got = stats.model_tensors(model, asked)
        assert list(got) == list(sd), type(model)
        for k, v in sd.items():
            assert torch.equal(got[k], v) and not got[k].requires_grad, k
    tied = _models()[1]
    got = stats.model_tensors(tied, ["head.weight"])
    assert got["head.weight"].data_ptr() == tied.embed.weight.data_ptr()  # no copy
