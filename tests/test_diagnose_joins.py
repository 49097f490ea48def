"""Tensors in another arrangement than the model's: attention projections stored apart for
a model that fuses them (and the other way round), and values whose shapes differ only in
size-1 dimensions. Real files, real load_state_dict refusals, the plan applied and
checked value by value."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import ckwidget as ck
from ckwidget.checkpoint import TensorInfo
from ckwidget.diagnosis.joins import find_joins


class Separate(nn.Module):
    """Query, key and value as separate layers; key and value smaller (grouped-query)."""

    def __init__(self, names=("q_proj", "k_proj", "v_proj"), kv: int = 8) -> None:
        super().__init__()
        for name, out in zip(names, (8, kv, kv)):
            setattr(self, name, nn.Linear(8, out))
        self.out_proj = nn.Linear(8, 8)


class Fused(nn.Module):
    """timm-style: one qkv layer."""

    def __init__(self, kv: int = 8) -> None:
        super().__init__()
        self.qkv = nn.Linear(8, 8 + 2 * kv)
        self.out_proj = nn.Linear(8, 8)


def wrap(block: nn.Module) -> nn.Module:
    model = nn.Module()
    model.blocks = nn.ModuleList([block])
    return model


def refused(model: nn.Module, sd: dict) -> bool:
    try:
        model.load_state_dict(sd)
    except RuntimeError:
        return True
    return False


@pytest.mark.parametrize("kv", [8, 4])
def test_separate_projections_are_concatenated_for_a_fused_layer(tmp_path, kv):
    source = wrap(Separate(("query", "key", "value"), kv))
    sd = source.state_dict()
    torch.save(sd, tmp_path / "sep.pt")
    model = wrap(Fused(kv))
    assert refused(wrap(Fused(kv)), dict(sd))
    report = ck.diagnose(tmp_path / "sep.pt", model)
    assert [f.kind for f in report.plan] == ["fuse-keys"]
    assert report.loadable_count == 2 and report.loadable_after_plan == 4
    finding = next(f for f in report.findings if f.fixes == list(report.plan))
    assert sorted(finding.keys) == ["blocks.0.qkv.bias", "blocks.0.qkv.weight"]
    assert not any(f.kind in ("missing-keys", "unexpected-keys") for f in report.findings)
    report.plan.apply(model)
    b = source.blocks[0]
    want = torch.cat([b.query.weight, b.key.weight, b.value.weight])
    assert torch.equal(model.blocks[0].qkv.weight, want)


def test_a_multihead_attention_gets_its_in_proj_from_separate_projections(tmp_path):
    source = Separate()
    torch.save({"attn." + k: v for k, v in source.state_dict().items()}, tmp_path / "sep.pt")
    model = nn.Module()
    model.attn = nn.MultiheadAttention(8, 2)
    report = ck.diagnose(tmp_path / "sep.pt", model)
    (fix,) = [f for f in report.plan if f.kind == "fuse-keys"]
    assert {t for _, t in fix.groups} == {"attn.in_proj_weight", "attn.in_proj_bias"}
    report.plan.apply(model)
    assert torch.equal(model.attn.in_proj_bias,
                       torch.cat([source.q_proj.bias, source.k_proj.bias, source.v_proj.bias]))


@pytest.mark.parametrize("kv", [8, 4])
def test_a_fused_tensor_is_split_by_the_models_sizes(tmp_path, kv):
    source = wrap(Fused(kv))
    torch.save({"module." + k: v for k, v in source.state_dict().items()}, tmp_path / "f.pt")
    model = wrap(Separate(kv=kv))
    report = ck.diagnose(tmp_path / "f.pt", model)
    assert [f.kind for f in report.plan] == ["strip-prefix", "split-keys"]
    assert report.loadable_after_plan == 8
    rows = report.table.set_index("key")
    assert rows.loc["blocks.0.k_proj.weight", "note"].startswith(f"rows 8:{8 + kv} of module.")
    report.plan.apply(model)
    w = source.blocks[0].qkv.weight
    b = model.blocks[0]
    assert torch.equal(b.q_proj.weight, w[:8]) and torch.equal(b.k_proj.weight, w[8:8 + kv])
    assert torch.equal(b.v_proj.weight, w[8 + kv:])


def test_parts_that_do_not_add_up_are_left_alone():
    info = TensorInfo
    c = {f"a.{n}.weight": info((8, 8), "float32", "cpu", 256) for n in ("q", "k", "v")}
    m = {"a.qkv.weight": info((20, 8), "float32", "cpu", 640)}  # 24 rows stored
    assert not find_joins(list(c), c, list(m), m)
    m = {"a.qkv.weight": info((24, 4), "float32", "cpu", 384)}  # other columns
    assert not find_joins(list(c), c, list(m), m)
    m = {"a.qkv.weight": info((24, 8), "float32", "cpu", 768)}
    assert find_joins(list(c), c, list(m), m).fused == [
        (("a.q.weight", "a.k.weight", "a.v.weight"), "a.qkv.weight")]


class ConvHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(4, 8)
        self.cls_token = nn.Parameter(torch.randn(1, 1, 8))
        self.head = nn.Conv2d(8, 3, 1)


class LinearHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(4, 8)
        self.cls_token = nn.Parameter(torch.randn(8))
        self.head = nn.Linear(8, 3)


def test_shapes_that_differ_in_size_one_dimensions_are_reshaped(tmp_path):
    source = ConvHead()
    torch.save(source.state_dict(), tmp_path / "conv.pt")
    model = LinearHead()
    assert refused(LinearHead(), source.state_dict())
    report = ck.diagnose(tmp_path / "conv.pt", model)
    (fix,) = report.plan
    assert fix.kind == "reshape" and dict(fix.shapes) == {"cls_token": (8,), "head.weight": (3, 8)}
    assert report.loadable_after_plan == 5
    report.plan.apply(model)
    assert torch.equal(model.head.weight, source.head.weight.reshape(3, 8))
    x = torch.randn(2, 8)
    assert torch.allclose(model.head(x), source.head(x[:, :, None, None]).flatten(1))


def test_other_shape_differences_are_not_reshaped(tmp_path):
    torch.save({"w": torch.randn(3, 8, 2)}, tmp_path / "w.pt")
    model = nn.Module()
    model.w = nn.Parameter(torch.randn(3, 16))  # same count, other values per row
    report = ck.diagnose(tmp_path / "w.pt", model)
    assert not any(f.kind == "reshape" for f in report.plan)


def test_a_one_element_tensor_for_a_scalar_loads_as_torch_loads_it(tmp_path):
    class Scaled(nn.Module):
        def __init__(self, shape) -> None:
            super().__init__()
            self.register_buffer("scale", torch.full(shape, 2.0))

    torch.save(Scaled((1,)).state_dict(), tmp_path / "one.pt")
    Scaled(()).load_state_dict(torch.load(tmp_path / "one.pt"))  # torch's own allowance
    report = ck.diagnose(tmp_path / "one.pt", Scaled(()))
    assert report.loads_cleanly and report.headline == "All 1 model tensors load as is."
    torch.save(Scaled(()).state_dict(), tmp_path / "zero.pt")  # not the other way round
    assert refused(Scaled((1,)), torch.load(tmp_path / "zero.pt"))
    assert [f.kind for f in ck.diagnose(tmp_path / "zero.pt", Scaled((1,))).plan] == ["reshape"]


def test_position_embeddings_for_another_size_say_so(tmp_path):
    class Vit(nn.Module):
        def __init__(self, patches: int) -> None:
            super().__init__()
            self.pos_embed = nn.Parameter(torch.zeros(1, patches + 1, 16))
            self.proj = nn.Linear(16, 16)

    torch.save(Vit(196).state_dict(), tmp_path / "vit224.pt")  # 224 px, trained
    report = ck.diagnose(tmp_path / "vit224.pt", Vit(576))  # built for 384 px
    (finding,) = [f for f in report.findings if f.kind == "shape-mismatch"]
    assert finding.severity == "warning" and finding.keys == ["pos_embed"]
    assert "another image size" in finding.message and "resample_abs_pos_embed" in finding.message
    assert [f.kind for f in report.plan] == ["drop-keys"] and report.loadable_after_plan == 2


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch's old weight_norm, still met
def test_keys_a_fix_makes_show_what_they_are_given(tmp_path):
    """A model key served by a fold, an unfold, a fusion or a split shows, in the key
    table's checkpoint columns, the shape and dtype the fix gives it (what the applied
    model then holds), not an empty cell."""
    from torch.nn.utils import parametrizations, weight_norm

    def conv() -> nn.Module:
        return nn.Conv1d(4, 6, 3)

    old_style = weight_norm(conv())
    cases = [
        (wrap(Separate(kv=4)).state_dict(), wrap(Fused(kv=4))),  # fuse
        (wrap(Fused(kv=4)).state_dict(), wrap(Separate(kv=4))),  # split
        (old_style.state_dict(), conv()),  # fold
        (conv().state_dict(), parametrizations.weight_norm(conv())),  # unfold
    ]
    made = ("concatenated from", "rows ", "folded from", "magnitude of", "direction:")
    for i, (sd, model) in enumerate(cases):
        torch.save(sd, tmp_path / f"{i}.pt")
        report = ck.diagnose(tmp_path / f"{i}.pt", model)
        rows = report.table.set_index("key")
        given = [k for k, note in rows["note"].items() if str(note).startswith(made)]
        assert given, i
        report.plan.apply(model)
        after = model.state_dict()
        for key in given:
            assert rows.loc[key, "checkpoint_shape"] == tuple(after[key].shape), (i, key)
            assert rows.loc[key, "checkpoint_dtype"] == "float32", (i, key)
            assert rows.loc[key, "status"] == "renamed"
