"""Plan.apply's progress callback, the widget's Apply bar, and the per-tensor read of
a torch zip archive giving what torch.load + load_state_dict give."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import ckwidget.fixes as F
from ckwidget.checkpoint import Checkpoint
from ckwidget.errors import FixError
from ckwidget.fixes.apply import Progress


def _bytes(model: nn.Module) -> dict[str, bytes]:
    return {k: v.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
            for k, v in model.state_dict().items()}


def _wide(layers: int, seed: int) -> nn.ModuleList:
    torch.manual_seed(seed)
    return nn.ModuleList([nn.Linear(3, 2) for _ in range(layers)])


def _saved(tmp_path: Path, layers: int = 1500) -> Path:
    path = tmp_path / "wide.pt"
    torch.save(_wide(layers, 1).state_dict(), path)
    return path


def _check_calls(calls: list[tuple[int, int]], keys: int) -> None:
    dones = [d for d, _ in calls]
    totals = {t for _, t in calls}
    assert totals == {2 * keys}  # the read, then the load, each counted in keys
    assert dones == sorted(dones) and len(set(dones)) == len(dones)  # growing
    assert dones[-1] == 2 * keys and all(0 < d <= 2 * keys for d in dones)
    # counted about every 1% of the work, never per key
    assert 50 <= len(calls) <= 102
    assert any(d <= keys for d in dones) and any(keys < d < 2 * keys for d in dones)


def test_progress_grows_to_the_total_on_the_stock_path(tmp_path):
    path = _saved(tmp_path)
    model = _wide(1500, 0)
    calls: list[tuple[int, int]] = []
    result = F.Plan([], source=path).apply(model, progress=lambda d, t: calls.append((d, t)))
    assert len(result.loaded) == 3000
    _check_calls(calls, 3000)
    assert _bytes(model) == _bytes(_wide(1500, 1))


class _Hooked(nn.Linear):
    def _load_from_state_dict(self, *args, **kwargs):  # user code: the journal path
        super()._load_from_state_dict(*args, **kwargs)


def test_progress_on_the_journal_path_and_from_an_in_memory_checkpoint():
    donor = _wide(1200, 1)
    model = nn.ModuleList([_Hooked(3, 2) for _ in range(1200)])
    calls: list[tuple[int, int]] = []
    F.Plan([], Checkpoint.from_state_dict(dict(donor.state_dict()))).apply(
        model, progress=lambda d, t: calls.append((d, t)))
    _check_calls(calls, 2400)
    assert _bytes(model) == _bytes(donor)


def test_progress_that_raises_does_not_stop_the_load(tmp_path):
    path = _saved(tmp_path, 600)
    model = _wide(600, 0)
    seen = []

    def broken(done: int, total: int) -> None:
        seen.append(done)
        if done > total // 2:  # inside the load: it must not stop half-way
            raise RuntimeError("display gone")

    F.Plan([], source=path).apply(model, progress=broken)
    assert _bytes(model) == _bytes(_wide(600, 1))
    assert seen and max(seen) < 2400  # not called again after it raised


def test_no_progress_after_a_refused_plan(tmp_path):
    path = _saved(tmp_path, 50)
    model = nn.ModuleList([nn.Linear(3, 3) for _ in range(50)])  # every shape differs
    before = _bytes(model)
    calls: list[int] = []
    with pytest.raises(FixError, match="the model was not changed"):
        F.Plan([], source=path).apply(model, progress=lambda d, t: calls.append(d))
    assert calls == [] and _bytes(model) == before


def test_progress_counter_is_counted_not_timed():
    calls: list[tuple[int, int]] = []
    p = Progress(lambda d, t: calls.append((d, t)), 1000)
    for _ in range(400):
        p.add()
    part = p.part(3, 600)  # 3 steps standing for the other 600
    part(1)
    part(5)  # clamped to its 3 steps
    p.finish()
    dones = [d for d, _ in calls]
    assert dones[:4] == [10, 20, 30, 40] and dones[-1] == 1000 and dones == sorted(dones)
    assert len(dones) == len(set(dones)) and calls[-1] == (1000, 1000)
    empty: list[tuple[int, int]] = []
    q = Progress(lambda d, t: empty.append((d, t)), 0)
    q.finish()
    assert empty == [(0, 0)]


class _Mixed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)
        self.b.weight = self.a.weight  # tied: one storage, two keys
        self.half = nn.Linear(4, 2).to(torch.float16)
        self.bf = nn.Linear(2, 2).to(torch.bfloat16)
        self.bn = nn.BatchNorm1d(4)  # int64 num_batches_tracked
        self.register_buffer("t", torch.zeros(3, 5))
        self.register_buffer("flag", torch.zeros(2, dtype=torch.bool))


def test_per_tensor_read_gives_what_torch_load_gives(tmp_path):
    torch.manual_seed(3)
    donor = _Mixed()
    donor.bn.running_mean.normal_()
    donor.bn.num_batches_tracked.fill_(7)
    donor.flag[1] = True
    sd = donor.state_dict()
    sd["t"] = torch.arange(15.0).reshape(5, 3).t()  # a non-contiguous view
    path = tmp_path / "mixed.pt"
    torch.save(sd, path)

    expected = _Mixed()
    expected.load_state_dict(torch.load(path, mmap=True, weights_only=True))
    torch.manual_seed(4)
    model = _Mixed()
    result = F.Plan([], source=path).apply(model)
    assert _bytes(model) == _bytes(expected)
    assert model.b.weight is model.a.weight  # the tie survives (loaded in place)
    assert sorted(result.loaded) == sorted(sd)


def test_widget_apply_bar_shows_only_while_applying(tmp_path):
    pytest.importorskip("ipywidgets")
    import ckwidget as ck

    path = _saved(tmp_path, 300)
    model = _wide(300, 0)
    dbg = ck.debug(path, model, background=False)
    bar = dbg.apply_bar
    assert bar.layout.display == "none"
    shown: list[tuple[int, int, object]] = []
    bar.observe(lambda c: shown.append((c["new"], bar.max, bar.layout.display)), names="value")
    dbg.apply()
    assert bar.layout.display == "none"  # hidden again after the apply
    values = [v for v, _, display in shown if display != "none"]
    assert values == sorted(values) and len(values) > 10
    assert values[-1] == 1200 and shown[-1][1] == 1200  # 600 keys read, 600 loaded
    assert _bytes(model) == _bytes(_wide(300, 1))

    # a failed apply hides it too, and keeps the sentence that nothing changed
    def interrupted(*_a, **_k):
        raise KeyboardInterrupt

    dbg.plan = F.Plan([], source=path)
    dbg.plan.apply = interrupted  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        dbg.apply()
    assert bar.layout.display == "none"
    assert "Not applied; the model is unchanged" in dbg.result_html.value
