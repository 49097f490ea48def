"""One scenario per cause: real torch objects, real torch.save files, real load_state_dict.

Each test builds the situation the way a user meets it, asserts the finding's kind, its
evidence keys and the suggested plan, then applies the plan to a fresh model and checks
that the model really holds the checkpoint's values.
"""

from __future__ import annotations

import zipfile

import pytest
import torch
from torch import nn

import ckwidget as ck
from ckwidget.fixes import (
    AllowGlobals,
    CastDtype,
    DropKeys,
    ExtractWeights,
    MapLocation,
    RenameKeys,
    SelectEntry,
    StripPrefix,
    Transpose,
)


class Net(nn.Module):
    def __init__(self, classes: int = 10, head: str = "fc") -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.bn = nn.BatchNorm2d(8)
        self.layers = nn.ModuleList([nn.Linear(8, 8) for _ in range(3)])
        setattr(self, head, nn.Linear(8, classes))


def save(obj, tmp_path, name="ckpt.pt"):
    path = tmp_path / name
    torch.save(obj, path)
    return path


def same(model: nn.Module, sd: dict[str, torch.Tensor], skip=()) -> None:
    own = model.state_dict()
    for k, v in sd.items():
        if k not in skip:
            assert torch.equal(own[k], v.to(own[k].dtype)), k


def kinds(report) -> list[str]:
    return [f.kind for f in report.findings]


def test_dataparallel_prefix(tmp_path):
    src = Net()
    path = save(nn.DataParallel(src).state_dict(), tmp_path)
    model = Net()
    report = ck.diagnose(path, model)
    finding = report.finding("prefix")
    assert finding is not None and finding.severity == "error"
    assert finding.keys == [f"module.{k}" for k in src.state_dict()]
    assert "DataParallel" in finding.message
    assert report.plan.fixes == [StripPrefix("module.")]
    assert report.loadable_count == 0 and report.loadable_after_plan == report.model_tensor_count
    assert report.status == "fixable" and not report.loads_cleanly
    with pytest.raises(RuntimeError):
        Net().load_state_dict(torch.load(path, weights_only=True))
    report.plan.apply(model)
    same(model, src.state_dict())


def test_compile_wrapper_prefix(tmp_path):
    src = Net()
    compiled = torch.compile(src)
    sd = compiled.state_dict()
    assert all(k.startswith("_orig_mod.") for k in sd)
    path = save(sd, tmp_path)
    model = Net()
    report = ck.diagnose(path, model)
    assert report.finding("prefix").details["prefix"] == "_orig_mod."
    assert "torch.compile" in report.finding("prefix").message
    assert report.plan.fixes == [StripPrefix("_orig_mod.")]
    report.plan.apply(model)
    same(model, src.state_dict())


def test_lightning_nesting(tmp_path):
    src = Net()
    path = save({
        "state_dict": {f"model.{k}": v for k, v in src.state_dict().items()},
        "pytorch-lightning_version": "2.4.0",
        "hyper_parameters": {"num_classes": 10, "lr": 0.1},
        "epoch": 3,
        "global_step": 120,
    }, tmp_path)
    model = Net()
    report = ck.diagnose(path, model)
    nested = report.finding("nested")
    assert report.entry == "state_dict"
    assert "Lightning" in nested.message and "2.4.0" in nested.message
    assert nested.keys[0].startswith("state_dict.model.")
    assert report.plan.fixes == [SelectEntry("state_dict"), StripPrefix("model.")]
    training = report.finding("optimizer")
    assert "epoch=3" in training.message and "global_step=120" in training.message
    facts = [f for f in report.by_kind("preprocessing") if "num_classes" in f.message]
    assert facts, "hyper-parameters recorded about the inputs are shown"
    report.plan.apply(model)
    same(model, src.state_dict())


def test_resized_head(tmp_path):
    src = Net(classes=5)
    path = save(src.state_dict(), tmp_path)
    model = Net(classes=10)
    report = ck.diagnose(path, model)
    finding = report.finding("shape-mismatch")
    assert finding.details["reason"] == "head"
    assert finding.keys == ["fc.weight", "fc.bias"]
    assert "5×8 in the file, 10×8 in the model" in finding.message
    assert report.plan.fixes == [DropKeys(("fc.weight", "fc.bias"), "output head changed")]
    assert report.loadable_after_plan == report.model_tensor_count - 2
    head_before = model.fc.weight.detach().clone()
    report.plan.apply(model)
    same(model, src.state_dict(), skip={"fc.weight", "fc.bias"})
    assert torch.equal(model.fc.weight, head_before), "the new head keeps its initial values"
    rows = report.table.set_index("key")
    assert rows.loc["fc.weight", "status"] == "shape-mismatch"
    assert rows.loc["fc.weight", "checkpoint_shape"] == (5, 8)


class Block(nn.Module):
    def __init__(self, d: int = 8) -> None:
        super().__init__()
        self.attn = nn.Module()
        self.attn.c_attn = nn.Linear(d, 3 * d)
        self.attn.c_proj = nn.Linear(d, d)  # square: its shape cannot show a transpose
        self.mlp = nn.Module()
        self.mlp.c_fc = nn.Linear(d, 4 * d)
        self.mlp.c_proj = nn.Linear(4 * d, d)


class GPT(nn.Module):
    def __init__(self, n: int = 3, d: int = 8) -> None:
        super().__init__()
        self.wte = nn.Embedding(50, d)
        self.h = nn.ModuleList([Block(d) for _ in range(n)])
        self.ln_f = nn.LayerNorm(d)


def conv1d_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The layout Hugging Face's Conv1D saves: every block weight as (in, out)."""
    return {k: (v.t().contiguous() if k.startswith("h.") and v.dim() == 2 else v)
            for k, v in model.state_dict().items()}


def test_conv1d_transposes_with_square_weights(tmp_path):
    src = GPT()
    path = save(conv1d_state(src), tmp_path)
    model = GPT()
    report = ck.diagnose(path, model)
    finding = report.finding("transposed")
    expected = [k for k in src.state_dict() if k.startswith("h.") and k.endswith("weight")]
    assert sorted(finding.keys) == sorted(expected)
    assert sorted(finding.details["square"]) == [f"h.{i}.attn.c_proj.weight" for i in range(3)]
    assert "h.{0..2}.attn.c_attn.weight: transposed" in finding.message
    assert "h.{0..2}.attn.c_proj.weight: square, transposed like its siblings" in finding.message
    assert "h.0.attn.c_attn.weight" not in finding.message, "repeated layers are grouped"
    assert report.plan.fixes == [Transpose(tuple(finding.keys))]
    report.plan.apply(model)
    same(model, src.state_dict())


def test_renamed_module(tmp_path):
    src = Net(head="fc")
    path = save(src.state_dict(), tmp_path)
    model = Net(head="head")
    report = ck.diagnose(path, model)
    finding = report.finding("renamed")
    assert finding is not None and set(finding.keys) == {"fc.weight", "fc.bias"}
    assert "'fc'" in finding.message and "'head'" in finding.message
    (fix,) = report.plan.fixes
    assert isinstance(fix, RenameKeys)
    assert report.loadable_after_plan == report.model_tensor_count
    report.plan.apply(model)
    same(model, {k.replace("fc.", "head."): v for k, v in src.state_dict().items()})
    assert report.table.set_index("key").loc["head.weight", "status"] == "renamed"


class OldNorm(nn.Module):
    """A LayerNorm as old code saved it: gamma and beta."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 6)
        self.norm = nn.Module()
        self.norm.gamma = nn.Parameter(torch.rand(6))
        self.norm.beta = nn.Parameter(torch.rand(6))


class NewNorm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 6)
        self.norm = nn.LayerNorm(6)


def test_renamed_leaves_and_repeated_blocks(tmp_path):
    path = save(OldNorm().state_dict(), tmp_path)
    report = ck.diagnose(path, NewNorm())
    finding = report.finding("renamed")
    assert set(finding.keys) == {"norm.gamma", "norm.beta"}
    fix = report.plan.fixes[0]
    assert dict(fix.mapping) == {"norm.gamma": "norm.weight", "norm.beta": "norm.bias"}

    class Blocks(nn.Module):
        def __init__(self, name: str) -> None:
            super().__init__()
            self.add_module(name, nn.ModuleList(
                [nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4)) for _ in range(4)]))
            self.out = nn.Linear(4, 2)

    src = Blocks("layers")
    path = save(src.state_dict(), tmp_path, "blocks.pt")
    model = Blocks("blocks")
    report = ck.diagnose(path, model)
    assert report.loadable_after_plan == report.model_tensor_count
    report.plan.apply(model)
    same(model, {k.replace("layers.", "blocks."): v for k, v in src.state_dict().items()})


def test_bf16_file_casts_silently(tmp_path):
    src = Net().to(torch.bfloat16)
    path = save(src.state_dict(), tmp_path)
    model = Net()
    report = ck.diagnose(path, model)
    finding = report.finding("dtype")
    assert finding.severity == "info" and finding.details["lossy"] is False
    assert finding.details["from"] == "bfloat16" and finding.details["to"] == "float32"
    assert "conv.weight" in finding.keys and "bn.num_batches_tracked" not in finding.keys
    assert report.loads_cleanly and report.status == "ok" and not report.plan
    assert set(report.table["status"]) >= {"dtype-differs"}
    model.load_state_dict(torch.load(path, weights_only=True))  # torch agrees: it loads


def cuda_tagged(path, tmp_path):
    """Rewrite a torch zip so its storages claim the location tag cuda:0."""
    out = tmp_path / "cuda.pt"
    with zipfile.ZipFile(path) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename.endswith("data.pkl"):
                assert b"X\x03\x00\x00\x00cpu" in data
                data = data.replace(b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0")
            zout.writestr(info.filename, data)
    return out


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_tagged_storages(tmp_path):
    src = Net()
    path = cuda_tagged(save(src.state_dict(), tmp_path), tmp_path)
    with pytest.raises(RuntimeError, match="CUDA"):
        torch.load(path, weights_only=True)
    model = Net()
    report = ck.diagnose(path, model)
    finding = report.finding("device")
    assert finding.severity == "error" and "cuda:0" in finding.message
    assert set(finding.keys) == set(src.state_dict())
    assert report.plan.fixes == [MapLocation("cpu")]
    assert report.loadable_count == 0
    assert report.loadable_after_plan == report.model_tensor_count
    report.plan.apply(model)
    same(model, src.state_dict())
    # Passing map_location turns the error into a note.
    assert ck.diagnose(path, Net(), map_location="cpu").finding("device").severity == "info"


def test_meta_model_needs_assign(tmp_path):
    src = Net().to(torch.bfloat16)
    path = save(src.state_dict(), tmp_path)
    with torch.device("meta"):
        model = Net()
    report = ck.diagnose(path, model)
    assert report.finding("meta-model").severity == "error"
    assert "assign=True" in report.headline
    assert report.loadable_count == 0
    cast = [f for f in report.plan.fixes if isinstance(f, CastDtype)]
    assert cast and cast[0].dtype == "float32", "assign keeps the file's dtype unless cast"
    report.plan.apply(model)
    assert not model.conv.weight.is_meta and model.conv.weight.dtype == torch.float32
    same(model, src.state_dict())


def test_nan_weights(tmp_path):
    src = Net()
    sd = src.state_dict()
    sd["layers.1.weight"][0, :3] = float("nan")
    sd["conv.bias"][0] = float("inf")
    path = save(sd, tmp_path)
    report = ck.diagnose(path, Net())
    finding = report.finding("nonfinite")
    assert finding.severity == "error"
    assert set(finding.keys) == {"layers.1.weight", "conv.bias"}
    assert finding.details["counts"]["layers.1.weight"] == {"nan": 3, "inf": 0}
    # every tensor loads, but the values are not the model anyone wants: partial, said
    # on the headline and on the damaged rows of the table
    assert report.status == "partial"
    assert "2 tensors hold NaN/Inf: " in report.headline and "conv.bias" in report.headline
    notes = dict(zip(report.table["key"], report.table["note"]))
    assert notes["conv.bias"].startswith("holds NaN/Inf") and notes["conv.weight"] == ""


def bn_first() -> nn.Module:
    model = nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    model.train()
    with torch.no_grad():  # "training" on normalised images sets the running statistics
        for _ in range(20):
            model(torch.randn(16, 3, 8, 8))
    return model.eval()


def test_unnormalised_sample_input(tmp_path):
    src = bn_first()
    path = save(src.state_dict(), tmp_path)
    model = nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pixels = torch.randint(0, 256, (4, 3, 8, 8)).float()
    report = ck.diagnose(path, model, sample_input=pixels)
    warning = [f for f in report.by_kind("preprocessing") if f.severity == "warning"]
    assert warning and warning[0].keys[0] == "0.running_mean"
    assert "'0'" in warning[0].message and "normalis" in warning[0].message
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), \
        "the user's model is not touched"
    good = ck.diagnose(path, model, sample_input=torch.randn(4, 3, 8, 8))
    assert not [f for f in good.by_kind("preprocessing") if f.severity == "warning"]
    plain = ck.diagnose(path, model)
    assert "sample_input=" in plain.finding("preprocessing").message


def test_optimizer_saved_before_a_layer_was_added(tmp_path):
    old = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    opt = torch.optim.Adam(old.parameters())
    old(torch.randn(3, 4)).sum().backward()
    opt.step()
    path = save({"model": old.state_dict(), "optimizer": opt.state_dict(), "epoch": 5}, tmp_path)
    new = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    new_opt = torch.optim.Adam(new.parameters())
    with pytest.raises(ValueError):
        new_opt.load_state_dict(torch.load(path, weights_only=True)["optimizer"])
    report = ck.diagnose(path, new, optimizer=new_opt)
    finding = report.finding("optimizer")
    assert finding.severity == "error"
    assert "ValueError" in finding.message and "Start the optimizer fresh" in finding.message
    assert "optimizer.state.2.exp_avg" in finding.keys
    assert "optimizer.state.0.exp_avg" not in finding.keys
    assert report.entry == "model"
    # The same optimizer state fits an optimizer over the model it was saved from.
    fits = ck.diagnose(path, old, optimizer=opt).finding("optimizer")
    assert fits.severity == "info" and "will accept" in fits.message


def test_unsafe_globals_get_allowlisted(tmp_path):
    import numpy as np

    src = nn.Linear(3, 2)
    path = save({"model": src.state_dict(), "stats": np.array([1.0, 2.0])}, tmp_path)
    model = nn.Linear(3, 2)
    report = ck.diagnose(path, model)
    finding = report.finding("unsafe-globals")
    allow = [f for f in finding.fixes if isinstance(f, AllowGlobals)]
    assert allow and any("numpy" in n for n in allow[0].names)
    assert allow[0] in report.plan.fixes
    assert "weights_only=True" in finding.message
    assert report.loadable_count == 0 and report.loadable_after_plan == 2


def test_every_finding_says_what_to_do(tmp_path):
    src = GPT()
    sd = {f"module.{k}": v for k, v in conv1d_state(src).items()}
    sd["module.extra.weight"] = torch.ones(2)
    path = save(sd, tmp_path)
    report = ck.diagnose(path, GPT())
    assert {"prefix", "transposed", "unexpected-keys"} <= set(kinds(report))
    for f in report.findings:
        assert "Traceback" not in f.message and 'File "' not in f.message
        assert f.message.rstrip().endswith("."), f.message


def test_malicious_file_is_unsafe_and_gets_no_allowlist(tmp_path):
    from tests._hostile_files import call, glob, text, torch_zip_with_body

    path = torch_zip_with_body(tmp_path / "evil.pt",
                               call(glob("os", "system"), text("echo pwned")))
    report = ck.diagnose(path, nn.Linear(2, 2))
    assert report.status == "unsafe" and report.findings[0].kind == "malicious"
    assert "os.system" in report.findings[0].message
    assert not [f for f in report.plan.fixes if isinstance(f, AllowGlobals)]
    assert report.headline.startswith("Unsafe")


def test_whole_pickled_model_with_missing_class(tmp_path):
    import sys
    import types

    ghost = types.ModuleType("ghost_models")
    sys.modules["ghost_models"] = ghost

    class Tiny(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 2)

    Tiny.__module__, Tiny.__qualname__ = "ghost_models", "Tiny"
    ghost.Tiny = Tiny
    src = Tiny()
    path = tmp_path / "whole.pt"
    try:
        torch.save(src, path)
    finally:
        del sys.modules["ghost_models"]
    model = nn.Module()
    model.fc = nn.Linear(3, 2)
    report = ck.diagnose(path, model)
    finding = report.finding("missing-class")
    assert finding is not None and "ghost_models.Tiny" in finding.message
    assert ExtractWeights() in report.plan.fixes
    assert report.loadable_count == 0
    assert report.loadable_after_plan == 2
    report.plan.apply(model)
    same(model, src.state_dict())


def test_unknown_entry_is_explained(tmp_path):
    path = save({"model": Net().state_dict(), "epoch": 1}, tmp_path)
    report = ck.diagnose(path, Net(), entry="ema")
    finding = report.finding("nested")
    assert finding.severity == "error" and "'model'" in finding.message
    assert report.status == "broken"


def test_ema_copy_is_offered_not_chosen(tmp_path):
    src, ema = Net(), Net()
    path = save({"model": src.state_dict(), "model_ema": ema.state_dict(), "epoch": 9}, tmp_path)
    report = ck.diagnose(path, Net())
    assert report.entry == "model"
    assert "'model_ema'" in report.finding("nested").message
    assert report.plan.fixes == [SelectEntry("model")]
    chosen = ck.diagnose(path, Net(), entry="model_ema")
    assert chosen.plan.fixes == [SelectEntry("model_ema")]
    model = Net()
    chosen.plan.apply(model)
    same(model, ema.state_dict())


def test_changed_head_offers_resize_copy_as_a_toggle(tmp_path):
    from ckwidget.fixes import ResizeCopy

    src = Net(classes=10)
    path = save(src.state_dict(), tmp_path)
    report = ck.diagnose(path, Net(classes=4))
    finding = report.finding("shape-mismatch")
    resize = ResizeCopy(("fc.weight", "fc.bias"))
    assert resize in finding.fixes and DropKeys(("fc.weight", "fc.bias"),
                                                "output head changed") in finding.fixes
    assert resize not in report.plan.fixes, "the alternative is offered, not planned"
    chosen = report.plan.with_fixes([resize])  # what the widget's toggle does
    assert not chosen.validate(model=Net(classes=4))
    model = Net(classes=4)
    chosen.apply(model)
    assert torch.equal(model.fc.weight, src.fc.weight[:4])
    assert torch.equal(model.fc.bias, src.fc.bias[:4])


def test_nested_finding_lists_the_files_own_entries(tmp_path):
    net = Net()
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    path = save({"model": net.state_dict(), "ema": Net().state_dict(), "epoch": 7,
                 "optimizer": opt.state_dict()}, tmp_path)
    message = ck.diagnose(path, Net()).finding("nested").message
    assert "other entries: " in message
    listed = message.split("other entries: ", 1)[1].split(")", 1)[0].split(", ")
    assert set(listed) == {"epoch", "ema", "optimizer"}, listed
    bare = save({"model": net.state_dict(), "ema": Net().state_dict()}, tmp_path, "bare.pt")
    message = ck.diagnose(bare, Net()).finding("nested").message
    assert "(other entries: ema)" in message
    for reader_key in ("archive", "records", "byteorder", "pickle", "globals", "devices"):
        assert reader_key not in message


def test_meta_model_as_a_shape_template(tmp_path):
    src = Net()
    path = save(src.state_dict(), tmp_path)
    with torch.device("meta"):
        template = Net()
    default = ck.diagnose(path, template)
    assert default.finding("meta-model") is not None and not default.loads_cleanly
    report = ck.diagnose(path, template, assume_materialized=True)
    assert report.finding("meta-model") is None
    assert report.loads_cleanly and report.status == "ok"
    assert report.headline.startswith("All ") and not len(report.plan)
    with torch.device("meta"):
        other = Net(classes=4)
    changed = ck.diagnose(path, other, assume_materialized=True)
    assert changed.finding("shape-mismatch") is not None
    assert changed.finding("meta-model") is None and "meta" not in changed.headline
