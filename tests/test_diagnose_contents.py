"""The wrong file: a LoRA adapter, an optimizer's state or a quantized export where model
weights were expected, and a base checkpoint for a model already wrapped with adapters.
Each says what the file holds and the step that fixes it, not "belongs to a different
model"."""

from __future__ import annotations

import torch
from torch import nn

import ckwidget as ck
from ckwidget.diagnosis.contents import mostly_lora, mostly_optimizer_state, quantized_layers


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


class Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 8)
        self.l1 = nn.Linear(8, 8)
        self.l2 = nn.Linear(8, 4)


def int8_export(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What bitsandbytes' Linear8bitLt saves: int8 codes, per-row scales, a format tag."""
    out = dict(sd)
    for layer in ("l1", "l2"):
        w = out[f"{layer}.weight"]
        scale = w.abs().amax(1)
        out[f"{layer}.weight"] = (w / scale[:, None] * 127).round().to(torch.int8)
        out[f"{layer}.SCB"] = scale
        out[f"{layer}.weight_format"] = torch.tensor(0, dtype=torch.uint8)
    return out


def test_an_8bit_export_is_not_loaded_as_values(tmp_path):
    torch.save(int8_export(Small().state_dict()), tmp_path / "int8.pt")
    model = Small()
    report = ck.diagnose(tmp_path / "int8.pt", model)
    (q,) = [f for f in report.findings if f.kind == "dtype"]
    assert q.severity == "error" and "bitsandbytes 8-bit" in q.message and q.keys == ["l1", "l2"]
    # the codes are not counted as loading, and the plan leaves those layers alone
    assert report.loadable_count == report.loadable_after_plan == 3
    assert "(see the dtype finding)" in messages(report, "unexpected-keys")
    before = model.l1.weight.clone()
    report.plan.apply(model)
    assert torch.equal(model.l1.weight, before)


def test_a_gptq_export_names_its_scheme(tmp_path):
    sd = {k: v for k, v in Small().state_dict().items() if not k.endswith("weight")
          or k.startswith("emb")}
    for layer, out in (("l1", 8), ("l2", 4)):
        sd[f"{layer}.qweight"] = torch.zeros(1, out, dtype=torch.int32)
        sd[f"{layer}.qzeros"] = torch.zeros(1, 1, dtype=torch.int32)
        sd[f"{layer}.scales"] = torch.ones(1, out, dtype=torch.float16)
    torch.save(sd, tmp_path / "gptq.pt")
    report = ck.diagnose(tmp_path / "gptq.pt", Small())
    assert "GPTQ/AWQ" in messages(report, "dtype")
    assert report.loadable_after_plan == 3


def test_a_parameter_named_like_a_scale_is_not_a_quantization():
    assert quantized_layers(["norm.scales", "head.weight_format", "x.weight"]) is None
    assert quantized_layers(["a.SCB", "a.weight"]) == ("bitsandbytes 8-bit", {"a": ["a.SCB"]})


class Normed(nn.Module):
    def __init__(self, norm: nn.Module) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 8)
        self.norm = norm


def test_batchnorm_statistics_without_a_batchnorm_say_what_they_are(tmp_path):
    torch.save(Normed(nn.BatchNorm1d(8)).state_dict(), tmp_path / "bn.pt")
    report = ck.diagnose(tmp_path / "bn.pt", Normed(nn.LayerNorm(8)))
    assert "BatchNorm running statistics" in messages(report, "unexpected-keys")
    torch.save(Normed(nn.LayerNorm(8)).state_dict(), tmp_path / "ln.pt")
    model = Normed(nn.BatchNorm1d(8))
    report = ck.diagnose(tmp_path / "ln.pt", model)
    (missing,) = [f for f in report.findings if f.kind == "missing-keys"]
    assert missing.severity == "warning" and "mean 0, variance 1" in missing.message
    assert sorted(missing.keys) == ["norm.num_batches_tracked", "norm.running_mean",
                                    "norm.running_var"]
    report.plan.apply(model)
    assert torch.equal(model.norm.running_var, torch.ones(8))  # kept: as the finding says
