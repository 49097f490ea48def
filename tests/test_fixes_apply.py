"""Atomic apply: no parameter or buffer changes unless the whole load succeeds."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import ckwidget.fixes as F
from ckwidget.checkpoint import Checkpoint
from ckwidget.errors import FixError


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 5)
        self.bn = nn.BatchNorm1d(5)
        self.head = nn.Linear(5, 3)


def make(seed: int = 0) -> Net:
    torch.manual_seed(seed)
    return Net()


def snapshot(model: nn.Module) -> dict[str, bytes]:
    out = {}
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        out[name] = t.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
    return out


def source_state() -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in make(1).state_dict().items()}


def test_torch_itself_copies_before_raising():
    """The hazard is real: plain load_state_dict writes fc before failing on head."""
    model, sd = make(), source_state()
    sd["head.weight"] = torch.zeros(4, 5)
    before = snapshot(model)
    with pytest.raises(RuntimeError, match="size mismatch"):
        model.load_state_dict(sd)
    assert snapshot(model)["fc.weight"] != before["fc.weight"]


def test_shape_error_leaves_model_untouched():
    model, sd = make(), source_state()
    sd["head.weight"] = torch.zeros(4, 5)
    before = snapshot(model)
    with pytest.raises(FixError, match=r"head.weight: the checkpoint has shape \[4, 5\]"):
        F.Plan([], Checkpoint.from_state_dict(sd)).apply(model)
    assert snapshot(model) == before


class ReshapeHook(nn.Linear):
    """Changes a tensor's shape inside torch's load: a size mismatch only torch can see."""

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        state_dict[prefix + "weight"] = torch.zeros(9, 9)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class Failing(nn.Module):
    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 5)
        self.bn = nn.BatchNorm1d(5)
        self.head = head


def test_size_mismatch_raised_by_torch_mid_load_is_rolled_back():
    torch.manual_seed(0)
    model = Failing(ReshapeHook(5, 3))
    before = snapshot(model)
    with pytest.raises(FixError, match=r"left exactly as it was.*size mismatch"):
        F.Plan([], Checkpoint.from_state_dict(source_state())).apply(model)
    assert snapshot(model) == before
    # Without ckwidget, the same load really does change fc and bn before failing.
    with pytest.raises(RuntimeError):
        model.load_state_dict(source_state())
    assert snapshot(model)["fc.weight"] != before["fc.weight"]


class Boom(nn.Linear):
    def _load_from_state_dict(self, *args, **kwargs):
        raise ValueError("custom loader failed")


def test_hook_error_and_interrupt_are_rolled_back():
    torch.manual_seed(0)
    model = Failing(Boom(5, 3))
    params_before = [id(p) for p in model.parameters()]
    before = snapshot(model)
    plan = F.Plan([], Checkpoint.from_state_dict(source_state()))
    with pytest.raises(FixError, match="custom loader failed"):
        plan.apply(model)
    assert snapshot(model) == before
    assert [id(p) for p in model.parameters()] == params_before

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    model.head._load_from_state_dict = interrupt
    with pytest.raises(KeyboardInterrupt):
        plan.apply(model)
    assert snapshot(model) == before


def test_tied_and_viewed_tensors_roll_back_and_load_in_place():
    torch.manual_seed(0)
    model = Failing(Boom(5, 3))
    model.head.weight = nn.Parameter(torch.randn(3, 5))
    model.extra = nn.Linear(5, 3)
    model.extra.weight = model.head.weight  # tied: one Parameter, two keys
    view = model.fc.weight.view(-1)  # someone holds a view: loading must stay in place
    before = snapshot(model)
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    sd = {k: v + 1 if v.is_floating_point() else v for k, v in sd.items()}
    with pytest.raises(FixError):
        F.Plan([], Checkpoint.from_state_dict(sd)).apply(model)
    assert snapshot(model) == before
    model.head = nn.Linear(5, 3)
    model.head.weight = model.extra.weight
    F.Plan([], Checkpoint.from_state_dict(sd)).apply(model)
    assert torch.equal(view, sd["fc.weight"].reshape(-1))  # the view sees the new values
    assert model.head.weight is model.extra.weight


def test_success_keeps_parameter_objects_and_optimizer():
    model = make()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ids = [id(p) for p in model.parameters()]
    result = F.Plan([], Checkpoint.from_state_dict(source_state())).apply(model)
    assert [id(p) for p in model.parameters()] == ids
    assert opt.param_groups[0]["params"][0] is model.fc.weight
    assert torch.equal(model.fc.weight, source_state()["fc.weight"])
    assert result.loaded and not result.missing and result.strict


def test_meta_model_uses_assign_and_rolls_back_objects():
    with torch.device("meta"):
        model = Net()
    result = F.Plan([], Checkpoint.from_state_dict(source_state())).apply(model)
    assert result.assign and not model.fc.weight.is_meta
    assert torch.equal(model.fc.weight, source_state()["fc.weight"])
    with torch.device("meta"):
        broken = Failing(Boom(5, 3))
    objects = [id(t) for t in [*broken.parameters(), *broken.buffers()]]
    with pytest.raises(FixError):
        F.Plan([], Checkpoint.from_state_dict(source_state())).apply(broken)
    assert [id(t) for t in [*broken.parameters(), *broken.buffers()]] == objects
    assert all(p.is_meta for p in broken.parameters())


def test_strict_and_partial_loading_report_missing_and_unexpected():
    sd = source_state()
    del sd["head.bias"]
    sd["aux.weight"] = torch.ones(2)
    model = make()
    before = snapshot(model)
    with pytest.raises(FixError, match=r"1 model tensors have no value.*head\.bias"):
        F.Plan([], Checkpoint.from_state_dict(sd)).apply(model)
    assert snapshot(model) == before
    result = F.Plan([F.DropKeys(("aux.weight",))], Checkpoint.from_state_dict(sd)).apply(model)
    assert not result.strict and result.missing == ["head.bias"] and not result.unexpected
    assert snapshot(model)["head.bias"] == before["head.bias"]  # kept its initial value
    assert torch.equal(model.fc.weight, sd["fc.weight"])
    # strict=False by hand: the unexpected key is reported, not loaded
    result = F.Plan([], Checkpoint.from_state_dict(sd)).apply(make(), strict=False)
    assert result.unexpected == ["aux.weight"] and result.missing == ["head.bias"]


def test_fix_that_no_longer_applies_says_why():
    ckpt = Checkpoint.from_state_dict(source_state())
    plan = F.Plan([F.StripPrefix("module.")], ckpt)
    problems = plan.validate(ckpt, make())
    assert problems == ["No checkpoint key starts with 'module.', so there is nothing to strip."]
    model = make()
    before = snapshot(model)
    with pytest.raises(FixError, match="nothing to strip"):
        plan.apply(model)
    assert snapshot(model) == before
    gone = F.Plan([F.Transpose(("nope.weight",))], ckpt).validate(ckpt, make())
    assert any("no key nope.weight" in p for p in gone)


def test_interrupts_wait_for_the_load_to_finish():
    import os
    import signal

    from ckwidget.fixes.apply import deferred_interrupts

    done = []
    with pytest.raises(KeyboardInterrupt):
        with deferred_interrupts():
            os.kill(os.getpid(), signal.SIGINT)
            done.append("the block ran to its end")
    assert done


def test_user_load_code_takes_the_journal_path_and_still_loads():
    from ckwidget.fixes.apply import stock_loading

    model = make()
    assert stock_loading(model)
    seen = []
    model.fc.register_load_state_dict_pre_hook(lambda *args: seen.append("hook"))
    assert not stock_loading(model)
    ids = [id(p) for p in model.parameters()]
    F.Plan([], Checkpoint.from_state_dict(source_state())).apply(model)
    assert seen == ["hook"] and [id(p) for p in model.parameters()] == ids
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                 source_state().values()))


def test_journal_path_from_a_memory_mapped_file(tmp_path):
    """User code in the load + a file ckwidget opens: staged copies, file pages released."""
    src = make(1)
    torch.save({"module." + k: v for k, v in src.state_dict().items()}, tmp_path / "dp.pt")
    model = make()
    model.fc.register_load_state_dict_pre_hook(lambda *args: None)
    result = F.Plan([F.StripPrefix("module.")], tmp_path / "dp.pt").apply(model)
    assert not result.missing
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                 src.state_dict().values()))


def test_apply_on_a_broken_file_names_the_cause(tmp_path):
    import ckwidget as ck

    lfs = tmp_path / "lfs.pt"
    lfs.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:" + "0" * 64
                   + "\nsize 9\n")
    full = tmp_path / "w.pt"
    torch.save(nn.Linear(64, 64).state_dict(), full)
    data = full.read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 2])
    for path, words in ((lfs, "Git LFS pointer"), (cut, "download the file again")):
        model = nn.Linear(64, 64)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        for plan in (ck.diagnose(path, nn.Linear(64, 64)).plan,
                     ck.Plan([ck.fixes.StripPrefix("module.")], source=path)):
            with pytest.raises(FixError) as err:
                plan.apply(model)
            message = str(err.value)
            assert words in message, message
            assert "drop-keys" not in message and "no tensors" not in message, message
        assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
