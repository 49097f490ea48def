"""Alignment and key grouping on in-memory checkpoints (TensorInfo values, no bytes)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import ckwidget as ck
from ckwidget.checkpoint import Checkpoint, TensorInfo
from ckwidget.diagnosis.align import align
from ckwidget.diagnosis.model_side import describe_model
from ckwidget.fixes import AddPrefix, RenameKeys, ResizeCopy
from ckwidget.formatting import group_keys, summarise_keys


def info(*shape, dtype="float32", device="cpu"):
    n = 1
    for s in shape:
        n *= s
    return TensorInfo(tuple(shape), dtype, device, 4 * n)


def test_group_keys_folds_repeated_layers():
    keys = [f"h.{i}.attn.c_attn.weight" for i in range(24)] + ["wte.weight"]
    assert group_keys(keys) == ["h.{0..23}.attn.c_attn.weight", "wte.weight"]
    assert group_keys(["a.1.w", "a.2.w", "a.5.w"]) == ["a.{1,2,5}.w"]
    grid = [f"l.{i}.{j}.w" for i in range(3) for j in range(2)]
    assert group_keys(grid) == ["l.{0..2}.{0,1}.w"]
    ragged = [f"l.{i}.{j}.w" for i in range(3) for j in range(i + 1)]
    assert group_keys(ragged) == ["l.0.0.w", "l.1.{0,1}.w", "l.2.{0..2}.w"]
    assert group_keys(["x{}.1", "x{}.2"]) == ["x{}.{1,2}"], "braces in names stay literal"
    assert "and 1 more groups" in summarise_keys([f"m{i}.w" for i in range(7)])


class Wrapper(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.bert = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
        self.classifier = nn.Linear(4, 2)


def test_add_prefix_spares_keys_that_already_match():
    model = Wrapper()
    sd = {k.removeprefix("bert."): v for k, v in model.state_dict().items()}
    report = ck.diagnose(sd, Wrapper())
    (fix,) = report.plan.fixes
    assert isinstance(fix, RenameKeys), "AddPrefix would break classifier.*"
    assert report.loadable_after_plan == report.model_tensor_count
    only_inner = {k: v for k, v in sd.items() if not k.startswith("classifier")}
    report = ck.diagnose(only_inner, Wrapper())
    assert AddPrefix("bert.") in report.plan.fixes


def test_prefix_replaced_and_stacked():
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    sd = {f"model._orig_mod.{k}": v for k, v in model.state_dict().items()}
    report = ck.diagnose(sd, model)
    assert report.finding("prefix").details["prefix"] == "model._orig_mod."
    holder = nn.Module()
    holder.net = model
    sd = {f"encoder.{k}": v for k, v in model.state_dict().items()}
    report = ck.diagnose(sd, holder)
    finding = report.finding("prefix")
    assert finding.details == {"prefix": "encoder.", "replacement": "net."}
    assert report.loadable_after_plan == report.model_tensor_count


def test_tied_weights_load_through_partner():
    class LM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.wte = nn.Embedding(10, 4)
            self.lm_head = nn.Linear(4, 10, bias=False)
            self.lm_head.weight = self.wte.weight

    src = LM()
    sd = {"wte.weight": src.wte.weight.detach().clone()}  # saved once, like safetensors
    report = ck.diagnose(sd, LM())
    finding = report.finding("tied-weights")
    assert finding.keys == ["lm_head.weight"]
    assert report.finding("missing-keys") is None
    assert report.loadable_after_plan == 2
    model = LM()
    report.plan.apply(model)
    assert torch.equal(model.lm_head.weight, sd["wte.weight"])


def test_vocabulary_padding_is_resized_not_dropped():
    class LM(nn.Module):
        def __init__(self, vocab: int) -> None:
            super().__init__()
            self.embed_tokens = nn.Embedding(vocab, 4)
            self.proj = nn.Linear(4, 4)

    src = LM(50)
    report = ck.diagnose(src.state_dict(), LM(64))
    finding = report.finding("shape-mismatch")
    assert finding.details["reason"] == "vocab" and "padded" in finding.message
    assert ResizeCopy(("embed_tokens.weight",)) in report.plan.fixes
    model = LM(64)
    report.plan.apply(model)
    assert torch.equal(model.embed_tokens.weight[:50], src.embed_tokens.weight)


def test_zero3_partition_is_explained():
    model = nn.Linear(4, 4)
    ckpt = Checkpoint(None, "in-memory", {"weight": info(0), "bias": info(0)}, [""])
    report = ck.diagnose(ckpt, model)
    finding = report.finding("shape-mismatch")
    assert finding.details["reason"] == "zero-size" and "zero_to_fp32" in finding.message
    assert report.status == "broken"


def test_unrelated_checkpoint_is_broken_not_silently_partial():
    ckpt = Checkpoint(None, "in-memory", {"encoder.a": info(3, 3), "decoder.b": info(7)}, [""])
    report = ck.diagnose(ckpt, nn.Linear(2, 2))
    assert report.finding("missing-keys").severity == "error"
    assert "different model" in report.finding("missing-keys").message
    assert report.status == "broken" and report.loadable_after_plan == 0


def test_alignment_marks_square_only_with_transposed_family():
    side = describe_model(nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4)))
    ckpt = {"0.weight": info(4, 4), "0.bias": info(4), "1.weight": info(4, 4), "1.bias": info(4)}
    a = align(ckpt, side)
    assert a.transposed == [] and a.status["0.weight"] == "match"


def test_table_order_and_columns():
    model = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3), nn.Linear(3, 1))
    sd = dict(model.state_dict())
    sd.pop("1.running_var")
    sd["zzz.extra"] = torch.ones(1)
    sd = {"zzz.extra": sd.pop("zzz.extra"), **sd}  # unexpected first in the file
    report = ck.diagnose(sd, model)
    table = report.table
    assert list(table["key"]) == [*model.state_dict(), "zzz.extra"]
    assert table.iloc[-1]["status"] == "unexpected"
    row = table.set_index("key").loc["1.running_var"]
    assert row["status"] == "missing" and row["checkpoint_shape"] is None
    assert row["module"] == "1" and "keeps its initial value" in row["note"]
    for column in ("key", "status", "checkpoint_key", "model_key", "checkpoint_shape",
                   "model_shape", "checkpoint_dtype", "model_dtype", "checkpoint_device",
                   "model_device", "module", "note"):
        assert column in table.columns


def test_rename_pattern_falls_back_to_pairs_when_it_would_touch_other_keys():
    class Stack(nn.Module):
        def __init__(self, renamed: str) -> None:
            super().__init__()
            self.layers = nn.ModuleList()
            for i in range(6):
                block = nn.Module()
                name = renamed if i < 4 else "ff"  # blocks 4 and 5 keep "ff" on both sides
                block.add_module(name, nn.Linear(3, 3))
                self.layers.append(block)

    src = Stack("ff")
    model = Stack("mlp")
    report = ck.diagnose(src.state_dict(), model)
    fix = report.plan.fixes[0]
    assert isinstance(fix, RenameKeys) and not fix.patterns
    assert dict(fix.mapping)["layers.0.ff.weight"] == "layers.0.mlp.weight"
    assert "layers.4.ff.weight" not in dict(fix.mapping)
    report.plan.apply(model)
    assert torch.equal(model.layers[2].mlp.weight, src.layers[2].ff.weight)
    assert torch.equal(model.layers[5].ff.weight, src.layers[5].ff.weight)
    many = Stack("ff")
    many.layers = many.layers[:4]
    target = Stack("mlp")
    target.layers = target.layers[:4]
    fix = ck.diagnose(many.state_dict(), target).plan.fixes[0]
    assert fix.patterns and not fix.mapping, "repeated layers become one pattern"


class SquareMix(nn.Module):
    """A square embedding next to Conv1D-style blocks whose square projection is a Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.wpe = nn.Embedding(16, 16)
        self.blocks = nn.ModuleList()
        for _ in range(2):
            block = nn.Module()
            block.c_fc = nn.Linear(16, 48)
            block.c_proj = nn.Linear(16, 16)  # square: only its family can tell
            self.blocks.append(block)
        self.norm = nn.LayerNorm(16)


def test_square_weights_follow_their_own_family_never_embeddings():
    src = SquareMix()
    stored = {k: (v.t().contiguous() if k.startswith("blocks.") and v.dim() == 2 else v)
              for k, v in src.state_dict().items()}
    report = ck.diagnose(stored, SquareMix())
    finding = report.finding("transposed")
    expected = [f"blocks.{i}.{m}.weight" for i in range(2) for m in ("c_fc", "c_proj")]
    assert sorted(finding.keys) == sorted(expected)
    assert "wpe.weight" not in finding.keys
    assert sorted(finding.details["square"]) == ["blocks.0.c_proj.weight",
                                                  "blocks.1.c_proj.weight"]
    model = SquareMix()
    report.plan.apply(model)
    for k, v in src.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    # The same by names only (a state dict stands in for the model: no module types).
    side = describe_model(dict(SquareMix().state_dict()))
    a = align({k: info(*v.shape) for k, v in stored.items()}, side)
    assert "wpe.weight" not in a.transposed
    assert set(a.transposed) == {f"blocks.{i}.c_fc.weight" for i in range(2)}


def test_stray_key_with_another_shape_is_not_a_rename():
    class M(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)
            self.extra = nn.Linear(2, 5)

    sd = {k: v for k, v in M().state_dict().items() if not k.startswith("extra.")}
    sd["aux.weight"] = torch.ones(3, 3, 3)
    report = ck.diagnose(sd, M())
    assert report.finding("shape-mismatch") is None and report.finding("renamed") is None
    assert report.finding("unexpected-keys").keys == ["aux.weight"]
    assert report.finding("missing-keys").keys == ["extra.weight", "extra.bias"]
    assert not any(isinstance(f, RenameKeys) for f in report.plan.fixes)
    # A real prefix still wins when one layer under it changed shape (a new head).
    wrapped = {"module." + k: v for k, v in M().state_dict().items()}
    wrapped["module.extra.weight"] = torch.ones(7, 2)
    report = ck.diagnose(wrapped, M())
    assert report.finding("prefix") is not None
    assert report.alignment.status["extra.weight"] == "shape-mismatch"


def test_prefix_steps_rename_all_keys_as_one_key_at_a_time_would():
    """Prefix steps map 100,000 keys with joined-string operations; any mix of keys
    (with and without the prefix, with newlines, empty rests) maps as per key."""
    import random

    from ckwidget.diagnosis.align import KeyStep

    rng = random.Random(0)
    for _ in range(3000):
        old = rng.choice(["m.", "mm.", "a.b.", "x"])
        names = [rng.choice([old, "", "q."]) + "".join(rng.choice("m.ab\nx") for _ in range(
            rng.randint(0, 6))) for _ in range(rng.randint(1, 6))]
        for step in (KeyStep("strip-prefix", old), KeyStep("rename-keys", swap=(old, "n."))):
            assert step.map_all(names) == [step.mapper()(k) for k in names], (step, names)


def test_key_templates_of_many_keys_match_one_key_at_a_time():
    """Templates of many keys come from one regex pass over the joined keys; odd keys
    (empty parts, non-ASCII digits, newlines, leading zeros) give the per-key result."""
    import random

    from ckwidget.keytemplates import _templates_one_by_one, templates_text

    rng = random.Random(1)
    for _ in range(3000):
        keys = ["".join(rng.choice("ab.01\u0663\n") for _ in range(rng.randint(0, 8)))
                for _ in range(rng.randint(0, 5))]
        assert templates_text(keys) == _templates_one_by_one(keys), keys


def test_renamed_families_are_found_with_few_or_many_leaf_kinds():
    """Families pair the same way whether a module holds a few leaves (picked per
    template) or many (grouped in one loop)."""
    from ckwidget.checkpoint import TensorInfo
    from ckwidget.diagnosis.families import find_families

    for n_leaves in (2, 20):
        leaves = [f"w{j}" for j in range(n_leaves)]
        c_keys = [f"blocks.{i}.ffn.{leaf}" for i in range(5) for leaf in leaves]
        m_keys = [k.replace(".ffn.", ".mlp.") for k in c_keys]
        shapes = {leaf: (j + 1, 2) for j, leaf in enumerate(leaves)}
        c_infos = {k: TensorInfo(shapes[k.rsplit(".", 1)[1]], "float32", "cpu", 8) for k in c_keys}
        m_infos = {m: c_infos[c] for c, m in zip(c_keys, m_keys)}
        families = find_families(c_keys, c_infos, m_keys, m_infos)
        assert len(families) == 1, n_leaves
        fam = families[0]
        assert dict(zip(fam.c_keys, fam.m_keys)) == dict(zip(c_keys, m_keys))
        assert fam.lines() == ["blocks.{0..4}.ffn -> blocks.{0..4}.mlp"]
        # one member with another shape: not a family
        m_infos[m_keys[-1]] = TensorInfo((9, 9), "float32", "cpu", 324)
        assert find_families(c_keys, c_infos, m_keys, m_infos) == []


def test_head_modules_by_last_component_any_case():
    """Heads are modules whose last name component is a head's name in any case, plus
    the last module with a matrix weight; a head's name inside a component is not one."""
    from ckwidget.diagnosis.align import HeadModules
    from ckwidget.diagnosis.model_side import ModelSide

    infos = {
        "encoder.FC.weight": info(4, 4), "Classifier.bias": info(2),
        "net.head_proj.weight": info(4, 4), "fc_outx.weight": info(3),
        "blocks.0.Out.weight": info(4, 4), "final_norm.weight": info(4),
        "last.weight": info(2, 4), "last.bias": info(2),
    }
    modules = ["", "encoder", "encoder.FC", "Classifier", "net", "net.head_proj", "fc_outx",
               "blocks", "blocks.0", "blocks.0.Out", "final_norm", "last"]
    from_modules = HeadModules(ModelSide(infos, module_names=modules,
                                         module_objects=[None] * len(modules)))
    from_keys = HeadModules(ModelSide(infos))
    asked = [*modules, "head", "x.fc", "FC", None]
    want = ["encoder.FC", "Classifier", "blocks.0.Out", "last"]
    assert [m for m in asked if m in from_modules] == want
    assert [m for m in asked if m in from_keys] == want


def test_head_modules_equal_their_definition_on_random_models():
    """``m in HeadModules(side)`` is ``m in`` the set the definition names: the modules
    (from the module list, else from the keys) whose last component is a head's name in
    any case, and the module of the last matrix weight."""
    import random

    from ckwidget.diagnosis.align import HEAD_NAMES, HeadModules
    from ckwidget.diagnosis.model_side import ModelSide

    rng = random.Random(3)
    parts = ["fc", "Head", "out", "x", "layer", "0", "cls_x", "LOGITS", ""]
    for _ in range(2000):
        keys = {".".join(rng.choice(parts) for _ in range(rng.randint(1, 4)))
                + rng.choice([".weight", ".bias", "weight"]): info(*rng.choice([(2,), (2, 3)]))
                for _ in range(rng.randint(0, 6))}
        modules = []
        if rng.random() < 0.5:  # a module list, which may name modules without keys
            modules = sorted({k.rpartition(".")[0] for k in keys} | {"", "fc", "a.out"})
        side = ModelSide(keys, module_names=modules, module_objects=[None] * len(modules))
        names = modules or list(dict.fromkeys(k.rpartition(".")[0] for k in keys))
        want = {m for m in names if m.rpartition(".")[2].lower() in HEAD_NAMES}
        for key in reversed(keys):
            if key.rpartition(".")[2] == "weight" and len(keys[key].shape) >= 2:
                want.add(key.rpartition(".")[0])
                break
        heads = HeadModules(side)
        asked = [*names, *want, "fc", "z.head", "Out", "nothing"]
        assert {m for m in asked if m in heads} == want, (keys, modules)


def test_a_file_in_model_order_aligns_as_the_same_file_shuffled():
    """Keys stored in the model's order take a shortcut (each lands at its own place);
    the alignment is the one the general path gives the same keys in another order."""
    import random

    from ckwidget.diagnosis.model_side import ModelSide

    rng = random.Random(7)
    fields = ("status", "notes", "pairs", "missing", "unexpected", "mismatched", "reasons",
              "transposed", "dtype_differs", "steps", "step_keys")
    for _ in range(300):
        n = rng.randint(1, 12)
        model = {f"m{i}.{rng.choice(['weight', 'bias'])}": info(*rng.choice([(2,), (2, 3)]))
                 for i in range(n)}
        prefix = rng.choice(["", "module."])
        ckpt = {}
        for k, v in model.items():
            shape = v.shape if rng.random() < 0.8 else rng.choice([(3,), (3, 2), (4, 4)])
            dtype = "float32" if rng.random() < 0.9 else "float16"
            ckpt[prefix + k] = info(*shape, dtype=dtype)
        shuffled = list(ckpt.items())
        while len(shuffled) > 1 and [k for k, _ in shuffled] == list(ckpt):
            rng.shuffle(shuffled)
        a = align(ckpt, ModelSide(model))
        b = align(dict(shuffled), ModelSide(model))
        for name in fields:
            got, want = getattr(a, name), getattr(b, name)
            if isinstance(got, dict):
                got, want = sorted(got.items()), sorted(want.items())
            elif name in ("step_keys",):
                got, want = [sorted(x) for x in got], [sorted(x) for x in want]
            elif isinstance(got, list) and name != "steps":
                got, want = sorted(got), sorted(want)
            assert got == want, (name, ckpt, shuffled)
        assert list(a.status) == list(model)


def test_model_description_keeps_each_tensors_own_layout() -> None:
    """Descriptions are shared between tensors of one kind, and the layout is part of
    the kind: a sparse buffer after a dense one of the same shape stays sparse (and a
    dense one after a sparse one stays dense), as describe_tensor says one by one."""
    from ckwidget.checkpoint import describe_tensor

    dense, sparse = torch.zeros(3, 3), torch.eye(3).to_sparse()
    for order in (("d", "s"), ("s", "d")):
        model = nn.Module()
        for name in order:
            model.register_buffer(name, dense if name == "d" else sparse)
        side = describe_model(model)
        assert side.infos["d"].layout == describe_tensor(dense).layout == "strided"
        assert side.infos["s"].layout == describe_tensor(sparse).layout == "sparse_coo"
        assert side.infos["s"].source is not None  # its values stay readable


@pytest.mark.parametrize("layers", [1, 2, 3])  # 3 and more pair as families of modules
def test_renamed_attention_projections_pair_by_role_not_by_order(tmp_path, layers):
    """BERT's query, key and value projections are square and equally shaped: renamed to
    a model that registers k_proj before q_proj, pairing by shape and order would load
    BERT's query into k_proj under a "fixable" verdict. The names say which is which."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    bert = transformers.BertModel(transformers.BertConfig(
        hidden_size=16, num_hidden_layers=layers, num_attention_heads=2,
        intermediate_size=32, vocab_size=50))
    saved = nn.ModuleList(layer.attention.self for layer in bert.encoder.layer)
    torch.save(saved.state_dict(), tmp_path / "bert-attention.pt")

    class Attention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.k_proj = nn.Linear(16, 16)
            self.q_proj = nn.Linear(16, 16)
            self.v_proj = nn.Linear(16, 16)

    mine = nn.ModuleList(Attention() for _ in range(layers))
    report = ck.diagnose(tmp_path / "bert-attention.pt", mine)
    assert report.status == "fixable", report.headline
    report.plan.apply(mine)
    for ours, theirs in zip(mine, saved):
        for a, b in (("q_proj", "query"), ("k_proj", "key"), ("v_proj", "value")):
            for leaf in ("weight", "bias"):
                assert torch.equal(getattr(getattr(ours, a), leaf),
                                   getattr(getattr(theirs, b), leaf)), (a, b, leaf)


@pytest.mark.parametrize("layers", [1, 3])
def test_modules_alike_paired_by_order_alone_are_named_as_a_doubt(tmp_path, layers):
    """Two equally shaped layers renamed to names that say nothing (alpha, beta -> second,
    first): only their order pairs them. The plan follows that order, and the finding
    says so instead of presenting the pairing as found."""

    class Saved(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.alpha = nn.Linear(8, 8)
            self.beta = nn.Linear(8, 8)

    class Mine(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.second = nn.Linear(8, 8)
            self.first = nn.Linear(8, 8)

    torch.save(nn.ModuleList(Saved() for _ in range(layers)).state_dict(), tmp_path / "s.pt")
    report = ck.diagnose(tmp_path / "s.pt", nn.ModuleList(Mine() for _ in range(layers)))
    renamed = report.finding("renamed")
    assert "rests on their order in the file alone" in renamed.message
    assert len(renamed.details["by_order"]) == 2 and report.status != "ok"
    # a pairing the names decide is no doubt
    class Named(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.query = nn.Linear(8, 8)
            self.key = nn.Linear(8, 8)

    class Projections(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.k_proj = nn.Linear(8, 8)
            self.q_proj = nn.Linear(8, 8)

    saved = nn.ModuleList(Named() for _ in range(layers))
    torch.save(saved.state_dict(), tmp_path / "n.pt")
    mine = nn.ModuleList(Projections() for _ in range(layers))
    report = ck.diagnose(tmp_path / "n.pt", mine)
    assert not any("rests on their order" in f.message for f in report.findings)
    report.plan.apply(mine)
    assert all(torch.equal(m.q_proj.weight, s.query.weight) for m, s in zip(mine, saved))


def test_timm_vit_into_hand_written_names_loads_every_value_without_doubt(tmp_path):
    """A timm ViT into a model of its own names: norm1/norm2 -> ln1/ln2 are alike and
    paired by order, and their numbers agree, so no doubt is named; every value lands
    where a careful engineer would put it."""
    from benign_corpus import import_timm

    timm = import_timm()
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10,
                            depth=3, img_size=32, patch_size=8)
    torch.save(vit.state_dict(), tmp_path / "vit.pt")
    dim = vit.embed_dim

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.ln1 = nn.LayerNorm(dim)
            self.attention = nn.Module()
            self.attention.in_proj = nn.Linear(dim, 3 * dim)
            self.attention.out_proj = nn.Linear(dim, dim)
            self.ln2 = nn.LayerNorm(dim)
            self.ff = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    class MyViT(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
            self.pos_embed = nn.Parameter(torch.zeros(1, 17, dim))
            self.patch_embed = nn.Module()
            self.patch_embed.proj = nn.Conv2d(3, dim, 8, 8)
            self.layers = nn.ModuleList(Block() for _ in range(3))
            self.norm = nn.LayerNorm(dim)
            self.head = nn.Linear(dim, 10)

    mine = MyViT()
    report = ck.diagnose(tmp_path / "vit.pt", mine)
    assert report.status == "fixable", report.headline
    assert "by_order" not in report.finding("renamed").details
    report.plan.apply(mine)
    theirs, ours = vit.state_dict(), mine.state_dict()
    names = {"ln1": "norm1", "ln2": "norm2", "attention.in_proj": "attn.qkv",
             "attention.out_proj": "attn.proj", "ff.0": "mlp.fc1", "ff.2": "mlp.fc2"}
    for i in range(3):
        for mine_name, timm_name in names.items():
            for leaf in ("weight", "bias"):
                assert torch.equal(ours[f"layers.{i}.{mine_name}.{leaf}"],
                                   theirs[f"blocks.{i}.{timm_name}.{leaf}"]), (i, mine_name)
    for key in ("cls_token", "pos_embed", "patch_embed.proj.weight", "norm.weight",
                "head.weight"):
        assert torch.equal(ours[key], theirs[key]), key
