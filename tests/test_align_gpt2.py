"""Search before you drop: a real GPT-2 checkpoint (Conv1D: 2-D weights stored (in, out))
into a hand-written GPT with its own names and nn.Linear layers. Every weight is renamed,
most are transposed as well, the square attention projection can only follow its family,
and the token embedding and output head share a shape: the alignment must pair them all
before the plan leaves a model tensor at its initial value."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import ckwidget as ck
from ckwidget.fixes import DropKeys, Transpose

transformers = pytest.importorskip("transformers")

LAYERS, WIDTH, HEADS, VOCAB, POSITIONS = 2, 32, 2, 64, 16


class Attention(nn.Module):
    def __init__(self, bias: bool = True) -> None:
        super().__init__()
        self.qkv = nn.Linear(WIDTH, 3 * WIDTH, bias=bias)
        self.proj = nn.Linear(WIDTH, WIDTH, bias=bias)  # square: no shape shows a transpose

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = (y.view(b, t, HEADS, c // HEADS).transpose(1, 2)
                   for y in self.qkv(x).split(c, dim=2))
        y = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(b, t, c))


class FeedForward(nn.Module):
    def __init__(self, bias: bool = True) -> None:
        super().__init__()
        self.fc1 = nn.Linear(WIDTH, 4 * WIDTH, bias=bias)
        self.fc2 = nn.Linear(4 * WIDTH, WIDTH, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(nn.functional.gelu(self.fc1(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, bias: bool = True) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(WIDTH)
        self.attn = Attention(bias)
        self.ln2 = nn.LayerNorm(WIDTH)
        self.ff = FeedForward(bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.ff(self.ln2(x))


class MyGPT(nn.Module):
    def __init__(self, tied: bool = True, layers: int = LAYERS, bias: bool = True) -> None:
        super().__init__()
        self.tok_emb = nn.Embedding(VOCAB, WIDTH)
        self.pos_emb = nn.Embedding(POSITIONS, WIDTH)
        self.blocks = nn.ModuleList(Block(bias) for _ in range(layers))
        self.ln_f = nn.LayerNorm(WIDTH)
        self.head = nn.Linear(WIDTH, VOCAB, bias=False)
        if tied:
            self.head.weight = self.tok_emb.weight

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.tok_emb(idx) + self.pos_emb(torch.arange(idx.shape[1]))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))


@pytest.fixture(scope="module")
def gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.utils import logging

    logging.set_verbosity_error()  # the tiny vocabulary does not hold GPT-2's bos/eos ids
    torch.manual_seed(0)
    config = GPT2Config(n_layer=LAYERS, n_embd=WIDTH, n_head=HEADS, vocab_size=VOCAB,
                        n_positions=POSITIONS)
    return GPT2LMHeadModel(config).eval()


def assert_loaded_like(mine: MyGPT, gpt2) -> None:
    """Every tensor holds GPT-2's value in nn.Linear's orientation, and the logits agree."""
    t = gpt2.transformer
    assert torch.equal(mine.tok_emb.weight, t.wte.weight)
    assert torch.equal(mine.pos_emb.weight, t.wpe.weight)
    assert torch.equal(mine.head.weight, gpt2.lm_head.weight)
    norms = [(mine.ln_f, t.ln_f)]
    for block, theirs in zip(mine.blocks, t.h):
        norms += [(block.ln1, theirs.ln_1), (block.ln2, theirs.ln_2)]
    for norm, theirs in norms:
        assert torch.equal(norm.weight, theirs.weight) and torch.equal(norm.bias, theirs.bias)
    for block, theirs in zip(mine.blocks, t.h):
        for linear, conv in ((block.attn.qkv, theirs.attn.c_attn),
                             (block.attn.proj, theirs.attn.c_proj),  # square
                             (block.ff.fc1, theirs.mlp.c_fc),
                             (block.ff.fc2, theirs.mlp.c_proj)):
            assert torch.equal(linear.weight, conv.weight.T)
            assert torch.equal(linear.bias, conv.bias)
    idx = torch.randint(0, VOCAB, (3, POSITIONS), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = gpt2(idx).logits
        got = mine.eval()(idx)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def find(report: ck.Report, kind: str, key: str) -> ck.Finding:
    """The finding of this kind that names ``key``."""
    return next(f for f in report.findings if f.kind == kind
                and any(k == key or k.endswith("." + key) for k in f.keys))


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def load(path, mine: MyGPT, gpt2) -> ck.Report:
    before = copy.deepcopy(mine)
    report = ck.diagnose(path, mine)
    assert report.status == "fixable", report.headline
    assert report.provenance.kept_initial == [], report.headline
    assert report.loadable_after_plan == report.model_tensor_count
    report.plan.apply(mine)
    assert_loaded_like(mine, gpt2)
    namespace = {"model": before}
    exec(report.plan.to_code(), namespace)  # the snippet gives what apply gives
    assert same_weights(before, mine)
    return report


@pytest.mark.parametrize("tied", [True, False])
def test_gpt2_into_hand_written_gpt(tmp_path, gpt2, tied):
    path = tmp_path / "gpt2.pt"
    torch.save(gpt2.state_dict(), path)
    mine = MyGPT(tied)
    report = load(path, mine, gpt2)
    finding = report.finding("transposed")
    weights = [f"blocks.{i}.{m}.weight" for i in range(LAYERS)
               for m in ("attn.qkv", "attn.proj", "ff.fc1", "ff.fc2")]
    assert sorted(finding.keys) == sorted(weights)  # 4 per layer: Conv1D's, square too
    assert sorted(finding.details["square"]) == [f"blocks.{i}.attn.proj.weight"
                                                 for i in range(LAYERS)]
    plan_transposes = [f for f in report.plan if isinstance(f, Transpose)]
    assert len(plan_transposes) == 1 and sorted(plan_transposes[0].keys) == sorted(weights)
    renamed = find(report, "renamed", "h.0.mlp.c_proj.weight")
    assert "h.{0,1}.mlp.c_proj -> blocks.{0,1}.ff.fc2" in renamed.message
    assert renamed.details["searched"]
    rows = report.table.set_index("key")
    assert rows.loc["blocks.1.attn.proj.weight", "status"] == "transposed"
    assert rows.loc["head.weight", "checkpoint_key"] == "lm_head.weight"
    assert rows.loc["tok_emb.weight", "checkpoint_key"] == "transformer.wte.weight"
    # GPT-2 saves wte and lm_head as one tensor: both find their place, none is unused
    assert report.provenance.unused_learned == []


def test_bias_free_conv1d_layers_pair_by_their_layout_not_crosswise(tmp_path):
    """Three layers pair as a family of renamed modules. Without biases to tell them
    apart, GPT-2's mlp.c_fc as stored, (in, 4·in), has the shape of a Linear fc2 and
    mlp.c_proj that of fc1: paired as stored they load crosswise, and the square attention
    projection follows them untransposed, under a "fixable" verdict. Conv1D's weights
    are (in, out): read so, every tensor gets GPT-2's value."""
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.utils import logging

    logging.set_verbosity_error()
    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=3, n_embd=WIDTH, n_head=HEADS,
                                      vocab_size=VOCAB, n_positions=POSITIONS)).eval()
    sd = {k: v for k, v in gpt2.state_dict().items()
          if not (k.endswith(".bias") and (".attn.c_" in k or ".mlp.c_" in k))}
    path = tmp_path / "gpt2-no-bias.pt"
    torch.save(sd, path)
    mine = MyGPT(layers=3, bias=False)
    report = ck.diagnose(path, mine)
    assert report.status == "fixable", report.headline
    renamed = find(report, "renamed", "h.0.mlp.c_fc.weight")
    assert "h.{0..2}.mlp.c_fc -> blocks.{0..2}.ff.fc1" in renamed.message
    assert "h.{0..2}.mlp.c_proj -> blocks.{0..2}.ff.fc2" in renamed.message
    report.plan.apply(mine)
    for block, theirs in zip(mine.blocks, gpt2.transformer.h):
        for linear, conv in ((block.attn.qkv, theirs.attn.c_attn),
                             (block.attn.proj, theirs.attn.c_proj),
                             (block.ff.fc1, theirs.mlp.c_fc),
                             (block.ff.fc2, theirs.mlp.c_proj)):
            assert torch.equal(linear.weight, conv.weight.T)


def test_embedding_and_head_pair_by_role_not_file_order(tmp_path, gpt2):
    """Keys sorted by name (as safetensors writes them) put lm_head before wte: the same
    shape, the opposite order, and still the output head goes to the head."""
    sd = gpt2.state_dict()
    path = tmp_path / "sorted.pt"
    torch.save({k: sd[k].clone() for k in sorted(sd)}, path)  # two tensors, not one
    load(path, MyGPT(tied=False), gpt2)


def test_head_stored_once_is_named_for_an_untied_model(tmp_path, gpt2):
    """A file without lm_head (saved tied, once) into a model that does not tie: the
    embedding still goes to tok_emb, and the finding says how to tie the head."""
    sd = {k: v for k, v in gpt2.state_dict().items() if k != "lm_head.weight"}
    path = tmp_path / "no_head.pt"
    torch.save(sd, path)
    mine = MyGPT(tied=False)
    report = ck.diagnose(path, mine)
    assert report.provenance.kept_initial == ["head.weight"]
    missing = report.finding("missing-keys")
    assert "ties its output head to the token embedding" in missing.message
    assert "model.head.weight = model.tok_emb.weight" in missing.message
    report.plan.apply(mine)
    assert torch.equal(mine.tok_emb.weight, gpt2.transformer.wte.weight)
    tied = MyGPT(tied=True)
    load(path, tied, gpt2)


def test_legacy_attention_buffers_do_not_break_the_pairing(tmp_path, gpt2):
    """Old GPT-2 checkpoints also hold attn.bias (the causal mask) and attn.masked_bias,
    which newer layouts (and this model) lack: the rest of each block still pairs."""
    sd = dict(gpt2.state_dict())
    mask = torch.tril(torch.ones(POSITIONS, POSITIONS, dtype=torch.bool))
    for i in range(LAYERS):
        sd[f"transformer.h.{i}.attn.bias"] = mask.view(1, 1, POSITIONS, POSITIONS).clone()
        sd[f"transformer.h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    path = tmp_path / "legacy.pt"
    torch.save(sd, path)
    report = load(path, MyGPT(), gpt2)
    unexpected = report.finding("unexpected-keys")
    assert sorted(unexpected.keys) == sorted(
        f"transformer.h.{i}.attn.{b}" for i in range(LAYERS) for b in ("bias", "masked_bias"))
    assert "causal mask" in unexpected.message


def test_batchnorm_without_counter_pairs_under_another_name():
    """Renamed BatchNorms saved by an old torch (no num_batches_tracked) still pair with
    the model's, which have the counter; the counters alone keep their initial values.
    A 1x1 convolution renamed into a Linear pairs too (a reshape)."""
    torch.manual_seed(0)
    src = nn.Module()
    src.features = nn.Sequential(*(nn.Sequential(nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4),
                                                 nn.ReLU()) for _ in range(3)))
    src.classifier = nn.Conv2d(4, 2, 1)
    with torch.no_grad():
        for block in src.features:
            block[1].running_mean.uniform_()
            block[1].running_var.uniform_(1, 2)

    class Named(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = nn.ModuleList()
            for _ in range(3):
                layer = nn.Module()
                layer.conv = nn.Conv2d(4, 4, 3)
                layer.bn = nn.BatchNorm2d(4)
                self.layers.append(layer)
            self.head = nn.Linear(4, 2)

    sd = {k: v for k, v in src.state_dict().items() if "num_batches_tracked" not in k}
    model = Named()
    report = ck.diagnose(sd, model)
    counters = [f"layers.{i}.bn.num_batches_tracked" for i in range(3)]
    assert report.provenance.kept_initial == counters
    assert report.status == "fixable", report.headline
    report.plan.apply(model)
    for layer, block in zip(model.layers, src.features):
        assert torch.equal(layer.bn.running_var, block[1].running_var)
        assert torch.equal(layer.bn.weight, block[1].weight)
        assert torch.equal(layer.conv.weight, block[0].weight)
    assert torch.equal(model.head.weight, src.classifier.weight.reshape(2, 4))


class SquareFamily(nn.Module):
    """Blocks of a non-square pair (up, down) and a square mixer, all nn.Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList()
        for _ in range(3):
            block = nn.Module()
            block.up = nn.Linear(8, 16)
            block.down = nn.Linear(16, 8)
            block.mix = nn.Linear(8, 8)  # square, and no sibling of its family shows a way
            self.blocks.append(block)


def test_square_family_without_evidence_is_not_loaded_silently():
    src = SquareFamily()
    names = {"up": "w_in", "down": "w_out", "mix": "w_mix"}
    sd = {}
    for k, v in src.state_dict().items():
        _, i, mod, leaf = k.split(".")
        sd[f"layers.{i}.{names[mod]}.{leaf}"] = v.t().contiguous() if v.dim() == 2 else v
    model = SquareFamily()
    before = [b.mix.weight.detach().clone() for b in model.blocks]
    report = ck.diagnose(sd, model)
    squares = [f"blocks.{i}.mix.weight" for i in range(3)]
    unknown = find(report, "transposed", squares[0])
    assert "Orientation unknown" in unknown.message
    assert sorted(unknown.details["orientation_unknown"]) == squares
    assert report.status == "partial"
    assert sorted(report.provenance.kept_initial) == squares
    drops = [f for f in report.plan if isinstance(f, DropKeys)]
    assert drops and set(squares) <= set(drops[0].keys)
    assert Transpose(tuple(squares)) in unknown.details["alternatives"]
    report.plan.apply(model)
    for block, old, theirs in zip(model.blocks, before, src.blocks):
        assert torch.equal(block.mix.weight, old), "left out: keeps its initial value"
        assert torch.equal(block.mix.bias, theirs.mix.bias)
        assert torch.equal(block.up.weight, theirs.up.weight)
        assert torch.equal(block.down.weight, theirs.down.weight)
