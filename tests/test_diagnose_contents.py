"""The wrong file: a LoRA adapter, or an optimizer's state, where model weights were
expected, and a base checkpoint for a model already wrapped with adapters. Each says what
the file holds and the step that fixes it, not "belongs to a different model"."""

from __future__ import annotations

import torch
from torch import nn

import ckwidget as ck
from ckwidget.diagnosis.contents import mostly_lora, mostly_optimizer_state


class Base(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.q = nn.Linear(8, 8)
        self.v = nn.Linear(8, 8)


class LoraLinear(nn.Module):
    """What PEFT makes of a Linear: the base layer and two low-rank factors."""

    def __init__(self, rank: int = 2) -> None:
        super().__init__()
        self.base_layer = nn.Linear(8, 8)
        self.lora_A = nn.ModuleDict({"default": nn.Linear(8, rank, bias=False)})
        self.lora_B = nn.ModuleDict({"default": nn.Linear(rank, 8, bias=False)})


class Adapted(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.q = LoraLinear()
        self.v = LoraLinear()


def adapter_file() -> dict[str, torch.Tensor]:
    """An adapter_model.bin as PEFT saves it: only the factors, under base_model.model."""
    return {f"base_model.model.{m}.lora_{ab}.weight": torch.randn(*shape)
            for m in ("q", "v") for ab, shape in (("A", (2, 8)), ("B", (8, 2)))}


def messages(report, kind: str) -> str:
    return " ".join(f.message for f in report.findings if f.kind == kind)


def test_an_adapter_file_for_the_base_model_says_it_is_an_adapter(tmp_path):
    torch.save(adapter_file(), tmp_path / "adapter_model.bin")
    report = ck.diagnose(tmp_path / "adapter_model.bin", Base())
    text = messages(report, "missing-keys")
    assert "LoRA adapter" in text and "PeftModel.from_pretrained" in text
    assert "different model" not in text
    assert "LoRA adapter weights" in messages(report, "unexpected-keys")
    assert report.loadable_after_plan == 0


def test_a_base_checkpoint_for_an_adapted_model_loads_and_names_the_adapters(tmp_path):
    torch.save({f"{m}.base_layer.{leaf}": t for m in ("q", "v")
                for leaf, t in nn.Linear(8, 8).state_dict().items()}, tmp_path / "base.pt")
    model = Adapted()
    report = ck.diagnose(tmp_path / "base.pt", model)
    (missing,) = [f for f in report.findings if f.kind == "missing-keys"]
    assert missing.severity == "warning" and "LoRA adapter weights" in missing.message
    assert sorted(missing.keys) == [f"{m}.lora_{ab}.default.weight"
                                    for m in ("q", "v") for ab in ("A", "B")]
    before = model.q.lora_A["default"].weight.clone()
    result = report.plan.apply(model)
    assert len(result.loaded) == 4 and torch.equal(model.q.lora_A["default"].weight, before)


def test_an_optimizer_file_says_it_is_an_optimizer_state(tmp_path):
    model = Base()
    opt = torch.optim.Adam(model.parameters())
    model.q(torch.randn(2, 8)).sum().backward()
    opt.step()
    torch.save(opt.state_dict(), tmp_path / "optimizer.pt")
    report = ck.diagnose(tmp_path / "optimizer.pt", Base())
    assert "optimizer.load_state_dict" in messages(report, "missing-keys")
    assert "optimizer's state" in messages(report, "unexpected-keys")


def test_other_models_keys_are_not_mistaken_for_either():
    keys = [f"blocks.{i}.{leaf}" for i in range(20) for leaf in ("weight", "bias", "state")]
    assert not mostly_lora(keys) and not mostly_optimizer_state(keys)
    assert not mostly_lora(["floral.weight", "lora.weight", "explorA.weight"])
    assert mostly_lora(["x.lora_down.weight", "x.lora_up.weight", "x.alpha"])
    assert mostly_optimizer_state(["state.0.momentum_buffer", "state.1.momentum_buffer"])
