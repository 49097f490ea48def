"""What training libraries leave in a state dict, loaded into the plain model, built with
the real libraries: a PEFT LoRA model's full state dict (merged as ``merge_and_unload()``
does, bit for bit) and a model pruned with ``torch.nn.utils.prune`` and saved without
``prune.remove`` (folded as the pruning hook computes it). ``plan.apply`` and the
snippet ``plan.to_code()`` prints give the same model, bit for bit.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import peft  # installed by scripts/test: a missing library fails here, never skips
import pytest
import torch
import torch.nn.utils.prune as prune
import transformers
from torch import nn

import ckwidget as ck
import ckwidget.fixes as F
from ckwidget.checkpoint import describe_tensor
from ckwidget.errors import FixError

MERGED = "PEFT LoRA model's full state dict"
PRUNED = "pruned model saved without prune.remove"


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    """Bit for bit: the same keys, dtypes, shapes and values."""
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert torch.equal(a[k], b[k]), (k, (a[k].float() - b[k].float()).abs().max())


def snippet_state(report, fresh: nn.Module) -> dict[str, torch.Tensor]:
    """The model state after running ``report.plan.to_code()`` in a fresh namespace."""
    namespace = {"__name__": "__snippet__", "model": fresh}
    exec(compile(report.plan.to_code("model"), "snippet", "exec"), namespace)
    return fresh.state_dict()


def adapted(base: nn.Module, config, seed: int = 1, **kwargs):
    """get_peft_model on a copy of ``base``, every trainable tensor perturbed (lora_B
    starts at zero, when the merge would change nothing)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Conv1D's fan_in_fan_out, set by peft itself
        model = peft.get_peft_model(copy.deepcopy(base), config, **kwargs)
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name or "modules_to_save" in name:
                p.normal_()
    return model


def save_full(model, folder: Path, config: bool = True) -> Path:
    """torch.save of the PEFT model's whole state dict, with the run's
    adapter_config.json beside it (what save_pretrained writes) when ``config``."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), folder / "finetuned.pt")
    if config:
        model.peft_config["default"].save_pretrained(str(folder))
    return folder / "finetuned.pt"


def merged_state(model) -> dict[str, torch.Tensor]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {k: v.clone() for k, v in model.merge_and_unload().state_dict().items()}


def tiny_gpt2() -> nn.Module:
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=64,
                                     n_positions=16, bos_token_id=0, eos_token_id=0)
    return transformers.GPT2LMHeadModel(config)


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    """A tiny GPT-2 (Conv1D layers, square attn.c_proj) with LoRA on c_attn and c_proj."""
    base = tiny_gpt2()
    model = adapted(base, peft.LoraConfig(r=4, lora_alpha=8,
                                          target_modules=["c_attn", "c_proj"]))
    root = tmp_path_factory.mktemp("gpt2")
    with_config = save_full(model, root / "with_config")
    without = save_full(model, root / "without_config", config=False)
    return base, with_config, without, merged_state(model)


def test_gpt2_full_state_dict_merges_like_merge_and_unload(gpt2):
    base, path, _, reference = gpt2
    report = ck.diagnose(path, copy.deepcopy(base))
    assert report.status != "ok" and not report.loads_cleanly
    (finding,) = [f for f in report.findings if any(x.kind == "merge-lora" for x in f.fixes)]
    assert MERGED in finding.message and "merge_and_unload()" in finding.message
    assert "lora_alpha / r = 8 / 4" in finding.message
    assert [f.kind for f in report.plan] == ["strip-prefix", "merge-lora"]
    (merge,) = [f for f in report.plan if f.kind == "merge-lora"]
    assert merge.scaling == 2.0 and len(merge.layers) == 6
    # Conv1D stores (in, out): every update is transposed, the square attn.c_proj too
    assert {form for *_, form in merge.layers} == {"transposed"}
    assert report.loadable_after_plan == report.model_tensor_count
    table = report.table.set_index("key")
    assert table.loc["transformer.h.0.attn.c_proj.weight", "source"] == "checkpoint, merged"
    assert "LoRA" in table.loc["transformer.h.0.attn.c_proj.weight", "note"]
    assert report.plan.preview(copy.deepcopy(base)).status == "ok"

    model = copy.deepcopy(base)
    result = report.plan.apply(model)
    assert not result.missing and not result.unexpected
    same(model.state_dict(), reference)  # bit for bit: no tolerance
    same(snippet_state(report, copy.deepcopy(base)), model.state_dict())


def test_without_lora_alpha_nothing_is_guessed_and_the_finding_says_what_to_pass(gpt2):
    base, _, path, reference = gpt2
    report = ck.diagnose(path, copy.deepcopy(base))
    assert report.status == "partial"
    assert not any(f.kind == "merge-lora" for f in report.plan)
    (finding,) = [f for f in report.findings if MERGED in f.message]
    assert finding.severity == "error" and "lora_alpha" in finding.message
    assert "ckpt.metadata['lora_alpha']" in finding.message
    assert "adapter_config.json" in finding.message and "r = 4" in finding.message
    # the layers are left out, not loaded from their pre-fine-tuning base weights
    table = report.table.set_index("key")
    assert table.loc["transformer.h.0.attn.c_attn.weight", "status"] == "missing"
    assert table.loc["transformer.h.0.attn.c_attn.weight", "source"] == "initial value"
    assert report.loadable_after_plan == report.model_tensor_count - 12

    ckpt = ck.open_checkpoint(path)
    ckpt.metadata["lora_alpha"] = 8  # what the finding asks for
    report = ck.diagnose(ckpt, copy.deepcopy(base))
    assert [f.kind for f in report.plan] == ["strip-prefix", "merge-lora"]
    model = copy.deepcopy(base)
    report.plan.apply(model)
    same(model.state_dict(), reference)


@pytest.mark.parametrize(("config", "said"), [
    (dict(r=16, lora_alpha=32), "another run"),  # r disagrees with lora_A's shape
    (dict(r=4, lora_alpha=8, alpha_pattern={"(c_.+)+$": 3}), "alpha_pattern"),  # a regex
])
def test_a_config_that_does_not_fit_is_refused(gpt2, tmp_path, config, said):
    base, _, path, _ = gpt2
    (tmp_path / "finetuned.pt").write_bytes(path.read_bytes())
    peft.LoraConfig(**config).save_pretrained(str(tmp_path))
    report = ck.diagnose(tmp_path / "finetuned.pt", copy.deepcopy(base))
    assert not any(f.kind == "merge-lora" for f in report.plan)
    assert any(said in f.message and "lora_alpha" in f.message for f in report.findings)


def test_the_adapter_file_alone_is_still_the_wrong_file(gpt2, tmp_path):
    base = gpt2[0]
    model = adapted(base, peft.LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn"]))
    model.save_pretrained(str(tmp_path))
    report = ck.diagnose(tmp_path / "adapter_model.safetensors", copy.deepcopy(base))
    assert report.status == "broken"
    assert not any(f.kind == "merge-lora" for f in report.plan)
    text = " ".join(f.message for f in report.findings if f.kind == "missing-keys")
    assert "LoRA adapter" in text and "PeftModel.from_pretrained" in text


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(),
                         nn.Linear(16, 4))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_linear_layers_with_patterns_and_modules_to_save(tmp_path, dtype):
    """Every key a PEFT one (no prefix step explains base_model.model.), a square Linear
    (16x16), per-layer ranks and alphas (one merge per scaling), a modules_to_save copy,
    and bfloat16 base weights with float32 adapters (peft's autocast_adapter_dtype)."""
    base = mlp().to(dtype)
    config = peft.LoraConfig(r=4, lora_alpha=16, target_modules=["0", "2"],
                             rank_pattern={"2": 2}, alpha_pattern={"2": 3},
                             modules_to_save=["4"])
    model = adapted(base, config)
    path = save_full(model, tmp_path)
    reference = merged_state(model)
    report = ck.diagnose(path, copy.deepcopy(base))
    assert report.status != "ok"
    assert any(MERGED in f.message for f in report.findings)
    merges = [f for f in report.plan if f.kind == "merge-lora"]
    assert sorted(f.scaling for f in merges) == [1.5, 4.0]  # 3 / 2 and 16 / 4
    assert {form for f in merges for *_, form in f.layers} == {"linear"}
    assert [k for f in merges for k in f.drops] == ["base_model.model.4.original_module.weight",
                                                    "base_model.model.4.original_module.bias"]
    target = copy.deepcopy(base)
    report.plan.apply(target)
    same(target.state_dict(), reference)
    same(snippet_state(report, copy.deepcopy(base)), target.state_dict())


def test_lora_bias_and_half_precision_adapters(tmp_path):
    base = mlp().half()
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["0", "2", "4"],
                             lora_bias=True)
    model = adapted(base, config, autocast_adapter_dtype=False)
    assert {v.dtype for v in model.state_dict().values()} == {torch.float16}
    path = save_full(model, tmp_path)
    reference = merged_state(model)
    report = ck.diagnose(path, copy.deepcopy(base))
    (merge,) = [f for f in report.plan if f.kind == "merge-lora"]
    assert len(merge.biases) == 3
    target = copy.deepcopy(base)
    report.plan.apply(target)
    same(target.state_dict(), reference)
    same(snippet_state(report, copy.deepcopy(base)), target.state_dict())


class Mixed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(20, 8)
        self.point = nn.Conv2d(3, 6, 1)
        self.conv = nn.Conv2d(6, 4, 3)
        self.fc = nn.Linear(8, 8)
        self.head = nn.Linear(8, 5)


def test_embedding_and_convolutions_with_rslora(tmp_path):
    torch.manual_seed(0)
    base = Mixed()
    config = peft.LoraConfig(r=2, lora_alpha=5, use_rslora=True,
                             target_modules=["emb", "point", "conv", "fc"])
    model = adapted(base, config)
    path = save_full(model, tmp_path)
    reference = merged_state(model)
    report = ck.diagnose(path, copy.deepcopy(base))
    (merge,) = [f for f in report.plan if f.kind == "merge-lora"]
    assert merge.scaling == 5 / 2 ** 0.5
    forms = {t: form for *_, t, form in merge.layers}
    assert forms == {"emb.weight": "transposed", "point.weight": "conv",
                     "conv.weight": "conv", "fc.weight": "linear"}
    target = copy.deepcopy(base)
    report.plan.apply(target)
    same(target.state_dict(), reference)
    same(snippet_state(report, copy.deepcopy(base)), target.state_dict())


def test_adapters_ckwidget_does_not_merge_are_named_not_dropped_silently(tmp_path):
    base = mlp()
    dora = adapted(base, peft.LoraConfig(r=4, lora_alpha=8, target_modules=["0"],
                                         use_dora=True, modules_to_save=["4"]))
    report = ck.diagnose(save_full(dora, tmp_path / "dora"), copy.deepcopy(base))
    (finding,) = [f for f in report.findings
                  if f.severity == "error" and "does not merge" in f.message]
    assert any("lora_magnitude_vector" in k for k in finding.keys)
    # the modules_to_save copy still replaces its original; layer 0 is not merged
    (merge,) = [f for f in report.plan if f.kind == "merge-lora"]
    assert merge.layers == () and len(merge.drops) == 2
    model = copy.deepcopy(base)
    report.plan.apply(model)
    assert torch.equal(model[4].weight, dora.base_model.model[4].modules_to_save["default"].weight)
    same(snippet_state(report, copy.deepcopy(base)), model.state_dict())

    two = adapted(base, peft.LoraConfig(r=4, lora_alpha=8, target_modules=["0", "2"]))
    two.add_adapter("other", peft.LoraConfig(r=2, lora_alpha=4, target_modules=["0"]))
    report = ck.diagnose(save_full(two, tmp_path / "two"), copy.deepcopy(base))
    (merge,) = [f for f in report.plan if f.kind == "merge-lora"]
    assert [t for *_, t, _ in merge.layers] == ["2.weight"]  # layer 0: which adapter?
    assert any("several adapters" in f.message and "0.lora_A.other.weight" in " ".join(f.keys)
               for f in report.findings)


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(64, 8), nn.ReLU(),
                         nn.Linear(8, 2))


def test_pruned_model_saved_without_prune_remove(tmp_path):
    pruned = small_net()
    prune.l1_unstructured(pruned[0], "weight", amount=0.5)
    prune.random_unstructured(pruned[0], "bias", amount=0.5)
    prune.ln_structured(pruned[2], "weight", amount=0.5, n=2, dim=0)
    prune.l1_unstructured(pruned[2], "weight", amount=0.3)  # a PruningContainer
    assert "0.weight_mask" in pruned.state_dict() and "0.weight" not in pruned.state_dict()
    torch.save(pruned.state_dict(), tmp_path / "pruned.pt")
    report = ck.diagnose(tmp_path / "pruned.pt", small_net())
    assert report.status != "ok" and not report.loads_cleanly
    (finding,) = [f for f in report.findings if f.fixes and f.fixes[0].kind == "fold-prune-mask"]
    assert PRUNED in finding.message and "weight_orig * weight_mask" in finding.message
    assert [f.kind for f in report.plan] == ["fold-prune-mask"]
    assert not any(f.kind == "unexpected-keys" for f in report.findings)
    model = small_net()
    report.plan.apply(model)
    state = model.state_dict()
    for key in ("0.weight", "0.bias", "2.weight"):
        layer, leaf = pruned[int(key[0])], key[2:]
        expected = getattr(layer, f"{leaf}_orig") * getattr(layer, f"{leaf}_mask")
        assert torch.equal(state[key], expected) and torch.equal(state[key], getattr(layer, leaf))
    assert torch.equal(state["4.weight"], pruned[4].weight)
    same(snippet_state(report, small_net()), state)


def test_fix_values_are_frozen_and_work_on_metadata_and_tensors():
    lora = F.MergeLora((("fc.base_layer.weight", "fc.lora_A.weight", "fc.lora_B.weight",
                         "fc.weight", "linear"),), 2, renames=(("fc.base_layer.bias", "fc.bias"),))
    fold = F.FoldPruneMask((("fc.weight_orig", "fc.weight_mask", "fc.weight"),))
    for fix in (lora, fold):
        assert F.FIX_KINDS[fix.kind] is type(fix) and fix.rank == 1.5 and fix.maps_keys
        assert hash(fix) == hash(type(fix)(**fix.__dict__))
        assert fix.describe()[0].isupper() and fix.describe().endswith(".")
        with pytest.raises(AttributeError):
            fix.kind_value = 1
    assert lora.scaling == 2.0 and isinstance(lora.scaling, float)
    with pytest.raises(ValueError):
        F.MergeLora((("w", "a", "b", "t", "diagonal"),), 1.0)
    torch.manual_seed(0)
    sd = {"fc.base_layer.weight": torch.randn(6, 4), "fc.base_layer.bias": torch.randn(6),
          "fc.lora_A.weight": torch.randn(2, 4), "fc.lora_B.weight": torch.randn(6, 2)}
    infos = {k: describe_tensor(v) for k, v in sd.items()}
    previewed = lora.transform(infos, {})
    applied = lora.transform(dict(sd), {})
    assert {k: tuple(v.shape) for k, v in previewed.items()} == {
        k: tuple(v.shape) for k, v in applied.items()} == {"fc.weight": (6, 4), "fc.bias": (6,)}
    expected = sd["fc.base_layer.weight"] + sd["fc.lora_B.weight"] @ sd["fc.lora_A.weight"] * 2
    assert torch.allclose(applied["fc.weight"], expected)
    assert lora.problems({}, {}) and not lora.problems(sd, {})
    with pytest.raises(FixError, match="does not make a linear update"):
        lora.transform({**sd, "fc.lora_A.weight": torch.randn(2, 5)}, {})
    masked = fold.transform({"fc.weight_orig": torch.ones(2, 2),
                             "fc.weight_mask": torch.tensor([[1.0, 0.0], [0.0, 1.0]])}, {})
    assert torch.equal(masked["fc.weight"], torch.eye(2))
    with pytest.raises(FixError, match="no key"):
        fold.transform({"fc.weight_orig": torch.ones(2)}, {})
