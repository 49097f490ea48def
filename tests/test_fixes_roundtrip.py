"""plan.apply() and exec(plan.to_code()) in a fresh Python give bit-identical model state.

Real files (torch.save, safetensors, a sharded folder), real subprocesses: the snippets
run in an isolated interpreter (``python -I``) where ``import ckwidget`` fails, except
the extract-weights one, which needs ckwidget's helper. Several cases share one
interpreter start, since importing torch costs seconds.
"""

from __future__ import annotations

import io
import json
import pickle
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import ckwidget.fixes as F

REPO = Path(__file__).resolve().parents[1]

MODELS = textwrap.dedent(
    '''
    import torch
    from torch import nn


    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(6, 5)
            self.bn = nn.BatchNorm1d(5)
            self.head = nn.Linear(5, 3)


    class Wrapped(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = Net()


    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.c_attn = nn.Linear(8, 12)
            self.c_proj = nn.Linear(12, 8)


    class Tiny(nn.Module):  # GPT-2 like: HF Conv1D stores these weights transposed
        def __init__(self):
            super().__init__()
            self.wte = nn.Embedding(20, 8)
            self.h = nn.ModuleList([Block(), Block()])
            self.ln_f = nn.LayerNorm(8)


    class Vocab(nn.Module):
        def __init__(self, n=24):
            super().__init__()
            self.emb = nn.Embedding(n, 4)
            self.out = nn.Linear(4, n)


    class WeightNormOld(nn.Module):  # torch.nn.utils.weight_norm: weight_g, weight_v
        def __init__(self):
            super().__init__()
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # deprecated, still met
                self.conv = nn.utils.weight_norm(nn.Conv1d(3, 4, 3))
            self.out = nn.Conv1d(4, 2, 1)


    class WeightNormNew(nn.Module):  # parametrizations: parametrizations.weight.original0/1
        def __init__(self):
            super().__init__()
            self.conv = nn.utils.parametrizations.weight_norm(nn.Conv1d(3, 4, 3))
            self.out = nn.Conv1d(4, 2, 1)


    class WeightNormRemoved(nn.Module):  # the same layers without weight norm
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv1d(3, 4, 3)
            self.out = nn.Conv1d(4, 2, 1)


    class SpectralOld(nn.Module):  # weight_orig, weight_u, weight_v
        def __init__(self):
            super().__init__()
            self.conv = nn.utils.spectral_norm(nn.Conv1d(3, 4, 3))


    class SpectralNew(nn.Module):  # parametrizations.weight.original, .0._u, .0._v
        def __init__(self):
            super().__init__()
            self.conv = nn.utils.parametrizations.spectral_norm(nn.Conv1d(3, 4, 3))


    class ConvHead(nn.Module):  # a 1x1 convolution as the classifier, a (1, 1, d) token
        def __init__(self):
            super().__init__()
            self.body = nn.Linear(4, 8)
            self.token = nn.Parameter(torch.randn(1, 1, 8))
            self.head = nn.Conv2d(8, 3, 1)


    class LinearHead(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Linear(4, 8)
            self.token = nn.Parameter(torch.randn(8))
            self.head = nn.Linear(8, 3)


    class SeparateAttention(nn.Module):  # query, key, value as separate layers
        def __init__(self):
            super().__init__()
            self.q_proj = nn.Linear(8, 8)
            self.k_proj = nn.Linear(8, 8)
            self.v_proj = nn.Linear(8, 8)
            self.out_proj = nn.Linear(8, 8)


    class FusedAttention(nn.Module):  # nn.MultiheadAttention: in_proj_weight, in_proj_bias
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(8, 2)


    class SeparateWrapped(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = SeparateAttention()


    def build(name, seed):
        torch.manual_seed(seed)
        if name == "vocab-old":
            return Vocab(16)
        if name.endswith("-meta"):
            with torch.device("meta"):
                return globals()[name[:-5]]()
        return globals()[name]()
    '''
)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("roundtrip")
    (d / "ckw_models.py").write_text(MODELS)
    sys.path.insert(0, str(d))
    import importlib

    import ckw_models

    importlib.reload(ckw_models)
    yield d
    sys.path.remove(str(d))
    sys.modules.pop("ckw_models", None)


def _models():
    import ckw_models

    return ckw_models


def _state(seed, name="Net"):
    return _models().build(name, seed).state_dict()


def cuda_saved(obj, path: Path) -> None:
    """torch.save ``obj`` as if its tensors had been on cuda:0 (rewrites the device tag)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    src = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as out:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("data.pkl"):
                cpu = pickle.BINUNICODE + (3).to_bytes(4, "little") + b"cpu"
                cuda = pickle.BINUNICODE + (6).to_bytes(4, "little") + b"cuda:0"
                assert cpu in data
                data = data.replace(cpu, cuda)
            out.writestr(info, data)


def build_cases(d: Path) -> list[dict]:
    """(name, model, seed, plan) with their checkpoint files written under ``d``."""
    m = _models()
    cases = []

    def case(name, model, plan, seed=1, isolated=True):
        cases.append(dict(name=name, model=model, seed=seed, plan=plan, isolated=isolated))

    ref = _state(0)
    # select-entry: a training checkpoint with the weights nested under "state_dict".
    torch.save({"state_dict": ref, "epoch": 3, "optimizer": {"lr": 0.1}}, d / "nested.pt")
    case("select-entry", "Net", F.Plan([F.SelectEntry("state_dict")], d / "nested.pt"))
    # nested + prefix: Lightning-style "model" entry holding DataParallel keys.
    torch.save({"model": {"module." + k: v for k, v in ref.items()}}, d / "nested_dp.pt")
    case("nested+strip-prefix", "Net",
         F.Plan([F.StripPrefix("module."), F.SelectEntry("model")], d / "nested_dp.pt"))
    # add-prefix: weights of the bare Net for a wrapper model.
    torch.save(ref, d / "bare.pt")
    case("add-prefix", "Wrapped", F.Plan([F.AddPrefix("backbone.")], d / "bare.pt"))
    # rename-keys: exact pairs and a regex.
    renamed = {k.replace("fc.", "linear1.").replace("head.", "classifier."): v
               for k, v in ref.items()}
    torch.save(renamed, d / "renamed.pt")
    case("rename-keys", "Net", F.Plan([F.RenameKeys(
        mapping=(("classifier.weight", "head.weight"), ("classifier.bias", "head.bias")),
        patterns=((r"^linear1\.", "fc."),),
    )], d / "renamed.pt"))
    case("rename-keys-regex-only", "Net", F.Plan([F.RenameKeys(
        patterns=((r"^linear1\.", "fc."), (r"^classifier\.", "head.")),
    )], d / "renamed.pt"))
    # prefix + transpose: GPT-2 Conv1D weights under "transformer.".
    tiny = m.build("Tiny", 0).state_dict()
    conv = [k for k in tiny if k.endswith(("c_attn.weight", "c_proj.weight"))]
    torch.save({"transformer." + k: (v.t().contiguous() if k in conv else v)
                for k, v in tiny.items()}, d / "gpt.pt")
    case("strip-prefix+transpose", "Tiny",
         F.Plan([F.Transpose(tuple(conv)), F.StripPrefix("transformer.")], d / "gpt.pt"))
    # map-location + drop-keys: a CUDA-saved file with an extra head.
    extra = dict(ref)
    extra["aux.weight"] = torch.randn(2, 5)
    cuda_saved(extra, d / "cuda.pt")
    case("map-location+drop-keys", "Net",
         F.Plan([F.MapLocation("cpu"), F.DropKeys(("aux.weight",), "unexpected")], d / "cuda.pt"))
    # cast-dtype: a float16 checkpoint, into a normal model and into a meta model.
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in ref.items()},
               d / "half.pt")
    case("cast-dtype", "Net", F.Plan([F.CastDtype("float32")], d / "half.pt"))
    case("cast-dtype-meta", "Net-meta", F.Plan([F.CastDtype("float32")], d / "half.pt"))
    case("meta", "Net-meta", F.Plan([], d / "bare.pt"))
    # allow-globals: numpy values next to the weights.
    torch.save({"state_dict": ref, "stats": np.arange(4.0)}, d / "numpy.pt")
    names = tuple(torch.serialization.get_unsafe_globals_in_checkpoint(d / "numpy.pt"))
    names += ("numpy.dtypes.Float64DType",)  # built, not named by a GLOBAL: torch asks too
    case("allow-globals", "Net",
         F.Plan([F.AllowGlobals(names), F.SelectEntry("state_dict")], d / "numpy.pt"))
    # drop-keys for a mismatched head: partial loading, the head keeps its initial values.
    changed = dict(ref)
    changed["head.weight"] = torch.randn(7, 5)
    changed["head.bias"] = torch.randn(7)
    torch.save(changed, d / "head.pt")
    case("drop-keys-partial", "Net",
         F.Plan([F.DropKeys(("head.weight", "head.bias"), "shape mismatch")], d / "head.pt"))
    # resize-copy + prefix: a vocabulary grown from 16 to 24.
    old = m.build("vocab-old", 0).state_dict()
    torch.save({"module." + k: v for k, v in old.items()}, d / "vocab.pt")
    case("resize-copy+strip-prefix", "Vocab",
         F.Plan([F.ResizeCopy(("emb.weight", "out.weight", "out.bias")),
                 F.StripPrefix("module.")], d / "vocab.pt"))
    # safetensors and a sharded Hugging Face folder.
    save_file({"model." + k: v.contiguous() for k, v in ref.items()}, d / "w.safetensors")
    case("safetensors+strip-prefix", "Net",
         F.Plan([F.StripPrefix("model.")], d / "w.safetensors"))
    shards = d / "sharded"
    shards.mkdir()
    keys = list(ref)
    weight_map = {}
    for i, part in enumerate((keys[: len(keys) // 2], keys[len(keys) // 2:])):
        fname = f"model-0000{i + 1}-of-00002.safetensors"
        save_file({k: ref[k].contiguous() for k in part}, shards / fname)
        weight_map.update({k: fname for k in part})
    (shards / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map})
    )
    case("hf-sharded", "Net", F.Plan([], shards))
    # weight_norm's two namings. Old names into a parametrized model: its own load hook
    # renames them, so only the prefix needs a fix; new names into an old-style model:
    # renamed by the plan. Both plans are the ones diagnose suggests.
    import ckwidget as ck

    wn_old = m.build("WeightNormOld", 0).state_dict()
    torch.save({"module." + k: v for k, v in wn_old.items()}, d / "wn_old.pt")
    plan = ck.diagnose(d / "wn_old.pt", m.build("WeightNormNew", 1)).plan
    assert [f.kind for f in plan] == ["strip-prefix"]
    case("weight-norm-hook+strip-prefix", "WeightNormNew", plan)
    torch.save(m.build("WeightNormNew", 0).state_dict(), d / "wn_new.pt")
    plan = ck.diagnose(d / "wn_new.pt", m.build("WeightNormOld", 1)).plan
    assert [f.kind for f in plan] == ["rename-keys"]
    case("weight-norm-rename", "WeightNormOld", plan)
    plan = ck.diagnose(d / "wn_old.pt", m.build("WeightNormRemoved", 1)).plan
    assert [f.kind for f in plan] == ["strip-prefix", "fold-weight-norm"]
    case("fold-weight-norm+strip-prefix", "WeightNormRemoved", plan)
    torch.save(m.build("WeightNormRemoved", 0).state_dict(), d / "wn_removed.pt")
    plan = ck.diagnose(d / "wn_removed.pt", m.build("WeightNormNew", 1)).plan
    assert [f.kind for f in plan] == ["unfold-weight-norm"]
    case("unfold-weight-norm", "WeightNormNew", plan)
    # spectral norm's two namings: a rename of three tensors per module, by patterns
    torch.save(m.build("SpectralNew", 0).state_dict(), d / "sn_new.pt")
    plan = ck.diagnose(d / "sn_new.pt", m.build("SpectralOld", 1)).plan
    assert [f.kind for f in plan] == ["rename-keys"] and plan.fixes[0].patterns
    case("spectral-norm-rename", "SpectralOld", plan)
    # the same values in other size-1 dimensions
    torch.save(m.build("ConvHead", 0).state_dict(), d / "conv_head.pt")
    plan = ck.diagnose(d / "conv_head.pt", m.build("LinearHead", 1)).plan
    assert [f.kind for f in plan] == ["reshape"]
    case("reshape", "LinearHead", plan)
    # fused and separate attention projections, both ways
    torch.save(m.build("SeparateWrapped", 0).state_dict(), d / "separate.pt")
    plan = ck.diagnose(d / "separate.pt", m.build("FusedAttention", 1)).plan
    assert [f.kind for f in plan] == ["fuse-keys"]
    case("fuse-keys", "FusedAttention", plan)
    torch.save(m.build("FusedAttention", 0).state_dict(), d / "fused.pt")
    plan = ck.diagnose(d / "fused.pt", m.build("SeparateWrapped", 1)).plan
    assert [f.kind for f in plan] == ["split-keys"]
    case("split-keys", "SeparateWrapped", plan)
    # merge-lora: a PEFT-style full state dict (fc adapted), bfloat16 factors; and
    # fold-prune-mask: torch.nn.utils.prune's weight_orig/weight_mask, as diagnose plans it
    lora = {k: v for k, v in ref.items() if not k.startswith("fc.")}
    lora.update({"fc.base_layer.weight": ref["fc.weight"], "fc.base_layer.bias": ref["fc.bias"],
                 "fc.lora_A.default.weight": torch.randn(2, 6).bfloat16(),
                 "fc.lora_B.default.weight": torch.randn(5, 2).bfloat16()})
    torch.save(lora, d / "lora.pt")
    case("merge-lora", "Net", F.Plan([F.MergeLora(
        (("fc.base_layer.weight", "fc.lora_A.default.weight", "fc.lora_B.default.weight",
          "fc.weight", "linear"),), 0.75, renames=(("fc.base_layer.bias", "fc.bias"),))],
        d / "lora.pt"))
    from torch.nn.utils import prune

    pruned = m.build("Net", 0)
    prune.l1_unstructured(pruned.fc, "weight", amount=0.5)
    torch.save(pruned.state_dict(), d / "pruned.pt")
    plan = ck.diagnose(d / "pruned.pt", m.build("Net", 1)).plan
    assert [f.kind for f in plan] == ["fold-prune-mask"]
    case("fold-prune-mask", "Net", plan)
    # extract-weights + strip-prefix: a whole pickled DataParallel model.
    torch.save(torch.nn.DataParallel(m.build("Net", 0)), d / "whole.pt")
    case("extract-weights+strip-prefix", "Net",
         F.Plan([F.ExtractWeights(), F.StripPrefix("module.")], d / "whole.pt"),
         isolated=False)
    return cases


RUNNER = textwrap.dedent(
    '''
    import json, sys, traceback
    sys.path.insert(0, {workdir!r})
    if {hide!r}:
        # ckwidget may be pip-installed (editable); make it absent like on a user's machine.
        class _Hide:
            def find_spec(self, name, path=None, target=None):
                if name == "ckwidget" or name.startswith("ckwidget."):
                    raise ModuleNotFoundError(f"No module named {{name!r}}")
                return None

        sys.meta_path.insert(0, _Hide())
        sys.path[:] = [p for p in sys.path if "ckwidget" not in p and p != {repo!r}]
    import torch
    import ckw_models

    try:
        import ckwidget  # noqa: F401
        HAS_CKWIDGET = True
    except ImportError:
        HAS_CKWIDGET = False
    cases = json.loads(open({cases!r}).read())
    report = {{"has_ckwidget": HAS_CKWIDGET, "errors": {{}}}}
    for case in cases:
        model = ckw_models.build(case["model"], case["seed"])
        namespace = {{"__name__": "__main__", case["model_name"]: model}}
        try:
            exec(compile(case["code"], case["name"], "exec"), namespace)
            torch.save(model.state_dict(), case["out"])
        except Exception:
            report["errors"][case["name"]] = traceback.format_exc()
    print(json.dumps(report))
    '''
)


def _bits(t: torch.Tensor) -> bytes:
    return t.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def _run_snippets(d: Path, cases: list[dict], isolated: bool, tag: str) -> dict:
    spec = [
        dict(name=c["name"], model=c["model"], seed=c["seed"], code=c["code"],
             model_name=c["model_name"], out=str(d / f"code-{c['name']}.pt"))
        for c in cases
    ]
    (d / f"cases-{tag}.json").write_text(json.dumps(spec))
    script = d / f"runner-{tag}.py"
    script.write_text(RUNNER.format(
        workdir=str(d), cases=str(d / f"cases-{tag}.json"), hide=isolated, repo=str(REPO)
    ))
    cmd = [sys.executable, "-I", str(script)] if isolated else [sys.executable, str(script)]
    env = None
    if not isolated:
        import os

        env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=d, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_apply_and_snippet_are_bit_identical(workdir):
    d = workdir
    cases = build_cases(d)
    kinds_covered = {f.kind for c in cases for f in c["plan"].fixes}
    assert kinds_covered == set(F.FIX_KINDS), set(F.FIX_KINDS) - kinds_covered
    applied = {}
    for i, c in enumerate(cases):
        model = _models().build(c["model"], c["seed"])
        c["plan"].apply(model)
        applied[c["name"]] = {k: v.clone() for k, v in model.state_dict().items()}
        c["model_name"] = f"net_{i}" if i % 2 else "model"  # the snippet uses the given name
        c["code"] = c["plan"].to_code(c["model_name"], model=_models().build(c["model"], 0))
        assert f"{c['model_name']}.load_state_dict(sd" in c["code"]
        assert "ckwidget" not in c["code"] or not c["isolated"], c["code"]
    plain = _run_snippets(d, [c for c in cases if c["isolated"]], True, "plain")
    assert plain["has_ckwidget"] is False  # the snippets really ran without ckwidget
    helped = _run_snippets(d, [c for c in cases if not c["isolated"]], False, "helped")
    assert helped["has_ckwidget"] is True
    errors = {**plain["errors"], **helped["errors"]}
    assert not errors, "\n\n".join(f"{k}:\n{v}" for k, v in errors.items())
    for c in cases:
        code_state = torch.load(d / f"code-{c['name']}.pt", weights_only=True)
        apply_state = applied[c["name"]]
        assert list(code_state) == list(apply_state), c["name"]
        for k, v in apply_state.items():
            w = code_state[k]
            assert (v.dtype, v.shape) == (w.dtype, w.shape), (c["name"], k)
            assert _bits(v) == _bits(w), (c["name"], k)
    # The loads did something: the applied weights are the checkpoint's, not the init.
    net = applied["select-entry"]
    assert torch.equal(net["fc.weight"], _state(0)["fc.weight"])
    assert not torch.equal(_state(1)["fc.weight"], _state(0)["fc.weight"])
    # Partial loads keep the model's initial values where nothing was loaded.
    assert torch.equal(applied["drop-keys-partial"]["head.weight"], _state(1)["head.weight"])
    vocab = applied["resize-copy+strip-prefix"]["emb.weight"]
    assert torch.equal(vocab[:16], _models().build("vocab-old", 0).state_dict()["emb.weight"])
    assert torch.equal(vocab[16:], _models().build("Vocab", 1).state_dict()["emb.weight"][16:])
    # weight_norm: each model holds the other's g and v (the values, whatever the names)
    old = _models().build("WeightNormOld", 0).state_dict()
    new = _models().build("WeightNormNew", 0).state_dict()
    for g, v, state, ref in (
            ("conv.parametrizations.weight.original0", "conv.parametrizations.weight.original1",
             applied["weight-norm-hook+strip-prefix"], old),
            ("conv.weight_g", "conv.weight_v", applied["weight-norm-rename"], new)):
        assert torch.equal(state[g], ref[next(k for k in ref if k.endswith(("_g", "original0")))])
        assert torch.equal(state[v], ref[next(k for k in ref if k.endswith(("_v", "original1")))])
    folded = applied["fold-weight-norm+strip-prefix"]["conv.weight"]
    assert torch.allclose(folded, torch._weight_norm(old["conv.weight_v"], old["conv.weight_g"], 0))
    removed = _models().build("WeightNormRemoved", 0).state_dict()["conv.weight"]
    unfolded = applied["unfold-weight-norm"]
    g = unfolded["conv.parametrizations.weight.original0"]
    v = unfolded["conv.parametrizations.weight.original1"]
    assert torch.equal(v, removed) and torch.allclose(torch._weight_norm(v, g, 0), removed)
    conv = _models().build("ConvHead", 0).state_dict()
    assert torch.equal(applied["reshape"]["head.weight"], conv["head.weight"][:, :, 0, 0])
    sn = _models().build("SpectralNew", 0).state_dict()
    assert torch.equal(applied["spectral-norm-rename"]["conv.weight_orig"],
                       sn["conv.parametrizations.weight.original"])
    sep = _models().build("SeparateWrapped", 0).state_dict()
    qkv = [sep[f"attn.{n}_proj.weight"] for n in "qkv"]
    assert torch.equal(applied["fuse-keys"]["attn.in_proj_weight"], torch.cat(qkv))
    fused = _models().build("FusedAttention", 0).state_dict()["attn.in_proj_weight"]
    assert torch.equal(applied["split-keys"]["attn.k_proj.weight"], fused[8:16])
    assert applied["cast-dtype-meta"]["fc.weight"].dtype == torch.float32
    assert not applied["meta"]["fc.weight"].is_meta


def test_snippet_shapes(workdir):
    """The snippet reads with weights_only=True and uses the given names."""
    d = workdir
    torch.save({"state_dict": _state(0)}, d / "s.pt")
    code = F.Plan([F.SelectEntry("state_dict")], d / "s.pt").to_code("net")
    assert "weights_only=True" in code and "map_location='cpu'" in code
    assert "ckpt['state_dict']" in code and "net.load_state_dict(sd, strict=True)" in code
    assert repr(str(d / "s.pt")) in code
    other = F.Plan([F.SelectEntry("state_dict")], d / "s.pt").to_code(path="/data/x.pt")
    assert "PATH = '/data/x.pt'" in other
