"""Fix values, plan composition, simulate/apply agreement, save, preview."""

from __future__ import annotations

import ast
import os
import stat

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import ckwidget.fixes as F
from ckwidget.checkpoint import Checkpoint, describe_tensor
from ckwidget.errors import FixError

ALL = [
    F.SelectEntry("state_dict"), F.StripPrefix("module."), F.AddPrefix("model."),
    F.RenameKeys((("a", "b"),), ((r"^x\.", "y."),)), F.Transpose(("w",)),
    F.DropKeys(("z",), "unexpected"), F.MapLocation("cpu"), F.CastDtype("float32"),
    F.AllowGlobals(("numpy.core.multiarray._reconstruct",)), F.ExtractWeights(),
    F.ResizeCopy(("w",)), F.FoldWeightNorm((("c.weight_g", "c.weight_v", "c.weight"),)),
    F.FuseKeys(((("a.q.weight", "a.k.weight", "a.v.weight"), "a.qkv.weight"),)),
    F.SplitKeys((("a.qkv.weight", (("a.q.weight", 8), ("a.k.weight", 4), ("a.v.weight", 4))),)),
    F.Reshape((("head.weight", (3, 8)),)),
    F.UnfoldWeightNorm((("c.weight", "c.weight_g", "c.weight_v", (4, 1, 1)),)),
    F.MergeLora((("fc.base_layer.weight", "fc.lora_A.weight", "fc.lora_B.weight", "fc.weight",
                  "linear"),), 2.0, renames=(("fc.base_layer.bias", "fc.bias"),)),
    F.FoldPruneMask((("fc.weight_orig", "fc.weight_mask", "fc.weight"),)),
]


class Net(nn.Module):
    def __init__(self, out: int = 3) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 5)
        self.head = nn.Linear(5, out)


def test_every_kind_is_a_frozen_hashable_value_with_a_sentence():
    assert {f.kind for f in ALL} == set(F.FIX_KINDS) and len(F.FIX_KINDS) == 18
    for fix in ALL:
        assert isinstance(fix, F.Fix) and F.FIX_KINDS[fix.kind] is type(fix)
        assert hash(fix) == hash(type(fix)(**fix.__dict__))
        text = fix.describe()
        assert text[0].isupper() and text.endswith(".")
        with pytest.raises(AttributeError):
            fix.kind_value = 1  # frozen
    assert len({*ALL, *ALL}) == len(ALL)


def test_rename_rules_read_as_key_templates():
    """The rules ckwidget writes (repeated layers, weight and spectral norm's namings)
    read as key templates, and each template names exactly what its regex does: the
    template, filled in, is a key the regex renames to the filled-in target. Other
    patterns show as written, never with doubled backslashes."""
    import re

    from ckwidget.diagnosis.families import rename_pattern
    from ckwidget.diagnosis.parametrizations import FAMILIES, _regex
    from ckwidget.fixes.kinds import readable_rule

    rules = [rename_pattern("blocks.\x00.ffn", "blocks.\x00.mlp"),
             rename_pattern("enc.\x00.l.\x00.ffn", "encoder.\x00.layer.\x00.mlp"),
             rename_pattern("a\\b+c.\x00", "d.\x00")]
    rules += [(_regex(old), new.replace("{n}", r"\1"))
              for pairs in FAMILIES.values() for old, new in pairs]
    for pattern, replacement in rules:
        text = readable_rule(pattern, replacement)
        old, new = text.split(" -> ")
        assert "\\\\" not in text and "(" not in text
        sample_old = old.replace("{n}", "7").replace("…", "x.y.", 1).replace("…", ".z")
        sample_new = new.replace("{n}", "7").replace("…", "x.y.", 1).replace("…", ".z")
        if old.startswith("…"):  # a rule on a name inside the key, to its end
            sample_old, sample_new = sample_old.removesuffix(".z"), sample_new.removesuffix(".z")
        assert re.sub(pattern, replacement, sample_old) == sample_new, text
    assert readable_rule(*rules[0]) == "blocks.{n}.ffn.… -> blocks.{n}.mlp.…"
    assert readable_rule(r"^(.*)\.foo$", r"\1.bar") == r"'^(.*)\.foo$' -> '\1.bar'"
    assert readable_rule(r"^a\.(\d+)\.b\.(\d+)\.", r"x.\g<2>.y.\g<1>.").startswith("'")
    described = F.RenameKeys(patterns=(rules[0],)).describe()
    assert described == "Rename checkpoint keys (1 rule: blocks.{n}.ffn.… -> blocks.{n}.mlp.…)."


def test_plan_orders_dedupes_and_composes():
    plan = F.Plan([F.Transpose(("w",)), F.StripPrefix("module."), F.SelectEntry("model"),
                   F.StripPrefix("module.")])
    assert [f.kind for f in plan] == ["select-entry", "strip-prefix", "transpose"]
    assert len(plan) == 3 and plan and not F.Plan() and plan.entry == "model"
    assert "transpose" in plan and F.StripPrefix("module.") in plan
    assert [f.kind for f in plan.without("transpose")] == ["select-entry", "strip-prefix"]
    assert len(plan.without(F.StripPrefix("module."))) == 2
    assert len(plan.without(F.SelectEntry)) == 2
    more = plan.with_fixes([F.DropKeys()])
    assert more.partial and not more.strict and plan.strict and len(plan) == 3
    with pytest.raises(FixError, match="only one select-entry"):
        F.Plan([F.SelectEntry("a"), F.SelectEntry("b")])
    with pytest.raises(FixError, match="not a fix"):
        F.Plan(["strip module."])


def test_unsafe_or_malformed_fixes_are_refused():
    for name in ("os.system", "builtins.eval", "subprocess.Popen", "posix.system"):
        with pytest.raises(FixError, match="will not allowlist"):
            F.AllowGlobals((name,))
    with pytest.raises(FixError, match="not a dotted global"):
        F.AllowGlobals(("eval",))
    with pytest.raises(FixError, match="not a valid regex"):
        F.RenameKeys(patterns=(("(", "x"),))
    with pytest.raises(FixError, match="not a dtype"):
        F.CastDtype("float33")


def test_simulate_agrees_with_the_real_transform():
    torch.manual_seed(0)
    model = Net(out=6)
    infos = {k: describe_tensor(v) for k, v in model.state_dict(keep_vars=True).items()}
    sd = {"module." + k: v.clone() for k, v in Net().state_dict().items()}
    sd["module.fc.weight"] = sd["module.fc.weight"].t().contiguous().half()
    sd["module.extra"] = torch.ones(2)
    plan = F.Plan([F.StripPrefix("module."), F.Transpose(("fc.weight",)),
                   F.CastDtype("float32", ("fc.weight",)), F.DropKeys(("extra",)),
                   F.ResizeCopy(("head.weight", "head.bias"))], Checkpoint.from_state_dict(sd))
    ckpt = Checkpoint.from_state_dict(sd)
    simulated = plan.simulate(ckpt, infos)
    real = plan._run(plan.read(ckpt), infos)
    assert list(simulated) == list(real)
    for k, t in real.items():
        info = simulated[k]
        assert (info.shape, info.dtype) == (tuple(t.shape), str(t.dtype)[6:]), k
    assert torch.equal(simulated["fc.weight"].source.load(), real["fc.weight"])
    assert plan.validate(ckpt, model) == []
    result = plan.apply(model)
    assert result.missing == [] and torch.equal(model.head.weight[:3], sd["module.head.weight"])


def test_fold_weight_norm_previews_what_it_applies_and_refuses_what_it_cannot():
    torch.manual_seed(0)
    v = torch.randn(4, 3, 5)
    sd = {"c.weight_g": torch.rand(4, 1, 1) + 0.5, "c.weight_v": v, "c.bias": torch.ones(4),
          "s.weight_g": torch.tensor(2.0), "s.weight_v": torch.randn(3, 3)}  # dim=None
    fix = F.FoldWeightNorm((("c.weight_g", "c.weight_v", "c.weight"),
                            ("s.weight_g", "s.weight_v", "s.weight")))
    ckpt = Checkpoint.from_state_dict(sd)
    plan = F.Plan([fix], ckpt)
    simulated = plan.simulate(ckpt, {})
    real = plan._run(plan.read(ckpt), {})
    assert list(simulated) == list(real) == ["c.bias", "c.weight", "s.weight"]
    for k in ("c.weight", "s.weight"):
        assert simulated[k].shape == tuple(real[k].shape)
        assert torch.equal(simulated[k].source.load(), real[k])  # the preview reads the fold
    # what weight norm computes, per output channel and for a whole-tensor norm
    assert torch.allclose(real["c.weight"], torch._weight_norm(v, sd["c.weight_g"], 0))
    assert torch.allclose(real["s.weight"],
                          sd["s.weight_v"] * 2.0 / sd["s.weight_v"].norm())
    # and back: unfolding the folded weight gives g and v's direction again
    unfold = F.UnfoldWeightNorm((("c.weight", "c.weight_g", "c.weight_v", (4, 1, 1)),))
    back = F.Plan([fix, unfold], ckpt)
    simulated, real = back.simulate(ckpt, {}), back._run(back.read(ckpt), {})
    assert simulated["c.weight_g"].shape == (4, 1, 1) == tuple(real["c.weight_g"].shape)
    assert torch.equal(simulated["c.weight_g"].source.load(), real["c.weight_g"])
    assert torch.allclose(real["c.weight_g"], sd["c.weight_g"])
    assert torch.allclose(real["c.weight_v"] / real["c.weight_v"].norm(dim=(1, 2), keepdim=True),
                          v / v.norm(dim=(1, 2), keepdim=True))
    bad = Checkpoint.from_state_dict({"c.weight_g": torch.ones(4, 3, 1), "c.weight_v": v})
    with pytest.raises(FixError, match="no magnitude"):
        F.Plan([F.FoldWeightNorm((("c.weight_g", "c.weight_v", "c.weight"),))], bad).simulate(
            bad, {})
    gone = Checkpoint.from_state_dict({"c.weight_v": v})
    problems = F.Plan([F.FoldWeightNorm((("c.weight_g", "c.weight_v", "c.weight"),))],
                      gone).validate(gone)
    assert problems and "c.weight_g" in problems[0]


def test_fuse_and_split_preview_what_they_apply_and_undo_each_other():
    torch.manual_seed(0)
    sd = {"a.q.weight": torch.randn(8, 3), "a.k.weight": torch.randn(4, 3),
          "a.v.weight": torch.randn(4, 3), "a.q.bias": torch.randn(8)}
    fuse = F.FuseKeys(((("a.q.weight", "a.k.weight", "a.v.weight"), "a.qkv.weight"),))
    split = F.SplitKeys((("a.qkv.weight",
                          (("a.q.weight", 8), ("a.k.weight", 4), ("a.v.weight", 4))),))
    ckpt = Checkpoint.from_state_dict(sd)
    for plan in (F.Plan([fuse], ckpt), F.Plan([fuse, split], ckpt)):
        simulated = plan.simulate(ckpt, {})
        real = plan._run(plan.read(ckpt), {})
        assert list(simulated) == list(real)
        for k, t in real.items():
            assert simulated[k].shape == tuple(t.shape)
            assert simulated[k].nbytes == t.numel() * t.element_size()
            assert torch.equal(simulated[k].source.load(), t), k
    assert torch.equal(real["a.k.weight"], sd["a.k.weight"])  # split undoes fuse, bit for bit
    assert real["a.k.weight"].untyped_storage().data_ptr() != real[
        "a.q.weight"].untyped_storage().data_ptr()  # own storage: safetensors can save it
    bad = Checkpoint.from_state_dict({**sd, "a.v.weight": torch.randn(4, 5)})
    with pytest.raises(FixError, match="differ beyond their first dimension"):
        F.Plan([fuse], bad).simulate(bad, {})
    wrong = F.SplitKeys((("a.q.weight", (("x", 5), ("y", 5))),))
    with pytest.raises(FixError, match="into \\[5, 5\\] rows"):
        F.Plan([wrong], ckpt).simulate(ckpt, {})


def test_generated_code_parses_for_every_kind(tmp_path):
    torch.save({"state_dict": Net().state_dict()}, tmp_path / "c.pt")
    for fix in ALL:
        code = F.Plan([fix], tmp_path / "c.pt").to_code("my_model")
        ast.parse(code)
        assert "my_model.load_state_dict(sd" in code and "import torch" in code
        assert ("ckwidget" in code) == (fix.kind == "extract-weights"), fix.kind
    code = F.Plan([F.RenameKeys(patterns=((r"^a\.", "b."),))]).to_code()
    assert code.startswith("import re") and "PATH = 'checkpoint.pt'" in code
    code = F.Plan(ALL[4:6] + ALL[7:8]).to_code()
    assert "strict=False" in code and ".t().contiguous()" in code


def test_save_writes_the_repaired_dict_atomically_and_never_over_the_source(tmp_path):
    torch.manual_seed(0)
    net = Net()
    src = tmp_path / "src.pt"
    torch.save({"module." + k: v for k, v in net.state_dict().items()}, src)
    plan = F.Plan([F.StripPrefix("module.")], src)
    out = plan.save(tmp_path / "fixed.safetensors")
    saved = load_file(out)
    assert sorted(saved) == sorted(net.state_dict())
    assert all(torch.equal(saved[k], v) for k, v in net.state_dict().items())
    plan.save(tmp_path / "fixed.pt", format="torch")
    again = torch.load(tmp_path / "fixed.pt", weights_only=True)
    assert all(torch.equal(again[k], v) for k, v in net.state_dict().items())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fixed.pt", "fixed.safetensors", "src.pt"]
    before = src.read_bytes()
    os.symlink(src, tmp_path / "link.pt")
    for target in (src, tmp_path / "link.pt", tmp_path / "." / "src.pt"):
        with pytest.raises(FixError, match="source checkpoint"):
            plan.save(target, format="torch")
    assert src.read_bytes() == before
    with pytest.raises(FixError, match="choose 'safetensors' or 'torch'"):
        plan.save(tmp_path / "x.bin", format="pickle")


def test_saved_files_get_the_permissions_a_new_file_gets(tmp_path):
    """A repaired checkpoint is written beside its target and renamed into place: it
    gets the mode a new file gets under the umask (not a temp file's private 0600), and
    a file it replaces keeps its mode."""
    torch.manual_seed(0)
    net = Net()
    src = tmp_path / "src.pt"
    torch.save({"module." + k: v for k, v in net.state_dict().items()}, src)
    plan = F.Plan([F.StripPrefix("module.")], src)
    old = os.umask(0o022)
    try:
        fresh = plan.save(tmp_path / "fresh.safetensors")
        probe = tmp_path / "probe"
        probe.write_bytes(b"")  # what open() gives a new file here
        kept = tmp_path / "kept.pt"
        kept.write_bytes(b"old")
        kept.chmod(0o640)
        plan.save(kept, format="torch")
    finally:
        os.umask(old)
    assert stat.S_IMODE(fresh.stat().st_mode) == stat.S_IMODE(probe.stat().st_mode) == 0o644
    assert stat.S_IMODE(kept.stat().st_mode) == 0o640
    assert torch.load(kept, weights_only=True).keys() == net.state_dict().keys()
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind


def test_save_handles_tied_tensors_for_safetensors(tmp_path):
    w = torch.randn(3, 3)
    ckpt = Checkpoint.from_state_dict({"a.weight": w, "b.weight": w, "c": w[0]})
    out = F.Plan([], ckpt).save(tmp_path / "tied.safetensors")
    saved = load_file(out)
    assert torch.equal(saved["a.weight"], w) and torch.equal(saved["c"], w[0])


def test_preview_reports_the_state_after_the_plan(tmp_path):
    torch.manual_seed(0)
    net = Net()
    torch.save({"module." + k: v for k, v in net.state_dict().items()}, tmp_path / "dp.pt")
    plan = F.Plan([F.StripPrefix("module.")], tmp_path / "dp.pt")
    assert plan.preview(Net()).loads_cleanly
    assert not F.Plan([], tmp_path / "dp.pt").preview(Net()).loads_cleanly


def test_cast_applies_to_resized_tensors_too(tmp_path):
    net = nn.Linear(4, 10)
    src = tmp_path / "h.pt"
    torch.save(net.state_dict(), src)
    plan = F.Plan([F.CastDtype("bfloat16"), F.ResizeCopy(("weight", "bias"))], source=src)
    assert [f.kind for f in plan] == ["resize-copy", "cast-dtype"]
    target = nn.Linear(4, 5)
    out = torch.load(plan.save(tmp_path / "h2.pt", format="torch", model=target),
                     weights_only=True)
    assert {k: v.dtype for k, v in out.items()} == {"weight": torch.bfloat16,
                                                    "bias": torch.bfloat16}
    assert torch.equal(out["weight"], net.weight.detach()[:5].to(torch.bfloat16))
    ns = {"model": nn.Linear(4, 5)}
    exec(plan.to_code(), ns)  # the snippet resizes, then casts, like save()
    assert all(v.dtype == torch.bfloat16 for v in ns["sd"].values())
    assert all(v.dtype == "bfloat16" for v in plan.simulate(
        Checkpoint.from_state_dict(net.state_dict()), {
            k: describe_tensor(v) for k, v in target.state_dict().items()}).values())


class _Separate(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(8, 8) for _ in range(4))


class _SeparateWrapped(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = _Separate()


class _Fused(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 2)


def _weight_normed() -> nn.Module:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return nn.Sequential(nn.utils.weight_norm(nn.Conv1d(3, 4, 3)))


@pytest.mark.parametrize("source, target, kind", [
    (_weight_normed, lambda: nn.Sequential(nn.Conv1d(3, 4, 3)), "fold-weight-norm"),
    (_SeparateWrapped, _Fused, "fuse-keys"),
    (_Fused, _SeparateWrapped, "split-keys"),
    (lambda: nn.Sequential(nn.Conv2d(8, 3, 1)), lambda: nn.Sequential(nn.Linear(8, 3)),
     "reshape"),
    (lambda: nn.Sequential(nn.Conv1d(3, 4, 3)), _weight_normed, "unfold-weight-norm"),
])
def test_a_saved_repair_loads_strictly_and_equals_the_apply(tmp_path, source, target, kind):
    import ckwidget as ck

    torch.save(source().state_dict(), tmp_path / "src.pt")
    model = target()
    report = ck.diagnose(tmp_path / "src.pt", model)
    assert [f.kind for f in report.plan] == [kind]
    saved = report.plan.save(tmp_path / "fixed.safetensors", model=model)
    fresh = target()
    fresh.load_state_dict(load_file(str(saved)))  # strict: every key in place
    report.plan.apply(model)
    for k, v in model.state_dict().items():
        assert torch.equal(v, fresh.state_dict()[k]), k


def test_save_format_follows_the_suffix_and_refuses_a_contradiction(tmp_path):
    from ckwidget.fixes.save import save_format

    assert save_format("a.pt") == save_format("b.PTH") == save_format("c.bin") == "torch"
    assert save_format("d.safetensors") == save_format("e") == "safetensors"
    assert save_format("f.pt", "torch") == "torch"
    with pytest.raises(FixError, match="names a torch file"):
        save_format("g.pt", "safetensors")
    with pytest.raises(FixError, match="names a safetensors file"):
        save_format("h.safetensors", "torch")
    with pytest.raises(FixError, match="choose 'safetensors' or 'torch'"):
        save_format("i.pt", "onnx")


def test_plan_save_by_suffix_writes_what_the_name_says(tmp_path):
    import torch
    from safetensors.torch import load_file

    src = torch.nn.Linear(2, 2)
    torch.save({"module." + k: v for k, v in src.state_dict().items()}, tmp_path / "dp.pt")
    plan = F.Plan([F.StripPrefix("module.")], tmp_path / "dp.pt")
    as_torch = torch.load(plan.save(tmp_path / "out.pt"), weights_only=True)
    as_safetensors = load_file(plan.save(tmp_path / "out.safetensors"))
    for sd in (as_torch, as_safetensors):
        assert sd.keys() == src.state_dict().keys()
        assert all(torch.equal(sd[k], v) for k, v in src.state_dict().items())


def test_a_meta_model_plan_says_assign_in_its_code_as_apply_does(tmp_path):
    """The plan diagnose makes for a model on the meta device loads with assign=True in
    apply and in the snippet alike, even when to_code() is not given the model."""
    import ckwidget as ck

    src = nn.Linear(3, 2)
    torch.save(src.state_dict(), tmp_path / "w.pt")
    with torch.device("meta"):
        applied, coded = nn.Linear(3, 2), nn.Linear(3, 2)
    report = ck.diagnose(tmp_path / "w.pt", applied)
    assert report.plan.assign and "assign=True" in report.plan.to_code()
    report.plan.apply(applied)
    namespace = {"model": coded}
    exec(report.plan.to_code(), namespace)
    for k, v in src.state_dict().items():
        assert torch.equal(applied.state_dict()[k], v) and torch.equal(coded.state_dict()[k], v)


def test_allowlist_snippet_names_numpy_1_globals_exactly_under_numpy_2(tmp_path):
    """A file written under numpy 1 names numpy.core.multiarray._reconstruct; under numpy
    2 that import gives an object called numpy._core...: the snippet pairs the object with
    the file's exact name, so torch accepts it."""
    import numpy as np

    import ckwidget as ck
    from tests._hostile_files import replace_records

    src = nn.Linear(2, 2)
    path = tmp_path / "np1.pt"
    torch.save({"model": src.state_dict(), "stats": np.arange(3.0)}, path)
    replace_records(path, {"data.pkl": lambda old: old.replace(
        b"numpy._core.multiarray", b"numpy.core.multiarray")})
    report = ck.diagnose(path, nn.Linear(2, 2))
    allow = next(f for f in report.plan.fixes if isinstance(f, F.AllowGlobals))
    assert "numpy.core.multiarray._reconstruct" in allow.names
    code = report.plan.to_code()
    assert "(_reconstruct, 'numpy.core.multiarray._reconstruct')" in code
    model = nn.Linear(2, 2)
    exec(code, {"model": model})
    assert all(torch.equal(model.state_dict()[k], v) for k, v in src.state_dict().items())
