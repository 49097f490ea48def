"""A benign corpus: real checkpoint files written by the real libraries, built in code
from small configs (nothing downloaded).

``build_corpus(root)`` writes every file it can under ``root`` and returns one
:class:`CorpusFile` per file or folder: where it is, which real loader reads it back
(``reader``), a model whose weights match it (for ``ckwidget.diagnose``), and, for the
files no loader can read, what was saved. Optional libraries (transformers, peft,
Lightning, timm) that are not installed are listed in ``CorpusBuild.skipped``.

Readers: ``torch`` (torch.load, weights_only=True where torch accepts the file, else
weights_only=False: these files are our own), ``safetensors``, ``jit``
(``torch.jit.load(...).state_dict()``), ``export`` (``torch.export.load(...)``),
``dcp`` (the DCP reader's metadata), ``hf`` (a transformers/peft folder: its index and
shards, each read by its own loader), ``none`` (no loader reads the file: ``saved``).
"""


import contextlib
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import io
import logging
import os
import random
import sys
import types
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

# Every dtype torch.save writes (quantized dtypes need quantized tensors: see
# ``_quantized``). The legacy format stores only the classic storage types: for the
# others torch writes an UntypedStorage, and torch.load (weights_only True or False)
# then fails with "type object 'torch.storage.UntypedStorage' has no attribute 'dtype'".
CLASSIC_DTYPES = [
    "float64", "float32", "float16", "bfloat16", "complex64", "complex128", "int8",
    "int16", "int32", "int64", "uint8", "bool",
]
NEW_DTYPES = [
    "uint16", "uint32", "uint64", "float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz",
    "float8_e5m2fnuz", "float8_e8m0fnu", "float4_e2m1fn_x2", "complex32", "bits8",
    "bits16", "bits1x8", "bits2x4", "bits4x2",
]
ALL_DTYPES = CLASSIC_DTYPES + NEW_DTYPES
# safetensors' names for the dtypes it stores (tried one by one: older releases lack some)
SAFETENSORS_DTYPES = [
    "float64", "float32", "float16", "bfloat16", "int8", "int16", "int32", "int64",
    "uint8", "uint16", "uint32", "uint64", "bool", "float8_e4m3fn", "float8_e5m2",
    "float8_e8m0fnu", "float4_e2m1fn_x2", "complex64",
]
_SAME_SIZE_INT = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


@dataclass
class CorpusFile:
    name: str
    path: Path
    reader: str
    model: nn.Module
    saved: dict[str, torch.Tensor] | None = None
    # a legacy-format file that torch.load cannot read (weights_only True or False)
    torch_refuses: bool = False
    library: str = "torch"


@dataclass
class CorpusBuild:
    files: list[CorpusFile] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # group -> why

    def add(self, *items: CorpusFile) -> None:
        self.files.extend(items)


# -- models -----------------------------------------------------------------------------
class StateModule(nn.Module):
    """A module whose state dict has exactly the given keys, shapes and dtypes (buffers,
    nested by the dots in the keys): the model that "matches" a bare state dict."""

    def __init__(self, state: dict[str, torch.Tensor]) -> None:
        super().__init__()
        for key, value in state.items():
            owner: nn.Module = self
            *parents, leaf = key.split(".")
            for part in parents:
                child = owner._modules.get(part)
                if child is None:
                    child = nn.Module()
                    owner.add_module(part, child)
                owner = child
            owner.register_buffer(leaf, value.detach().clone())


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3)
        self.bn = nn.BatchNorm2d(3)
        self.fc = nn.Linear(12, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))


class ScriptedWithLists(nn.Module):
    """Typed list/dict attributes (List[int] and friends): TorchScript pickles them with
    torch.jit._pickle.build_intlist, build_doublelist, build_boollist and
    build_tensorlist."""

    ints: list[int]
    floats: list[float]
    flags: list[bool]
    tensors: list[torch.Tensor]
    table: dict[str, torch.Tensor]
    scales: dict[str, float]

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 4)
        self.register_buffer("steps", torch.arange(5))
        self.ints = [1, 2, 3]
        self.floats = [0.5, 1.5]
        self.flags = [True, False, True]
        self.tensors = [torch.ones(2), torch.arange(3)]
        self.table = {"a": torch.ones(2, 2)}
        self.scales = {"x": 2.0}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.lin(x) * self.floats[0] + self.ints[1]
        if self.flags[0]:
            out = out + self.tensors[0].sum() + self.table["a"].sum() * self.scales["x"]
        return out


class TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(3, 4)
        self.b = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor, extra: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.b(torch.tanh(self.a(x))) + extra["bias"]


class ExportNet(nn.Module):
    """Parameters, persistent and non-persistent buffers, a float64 parameter and a
    plain tensor attribute (which torch.export lifts as a constant)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 4)
        self.bn = nn.BatchNorm1d(4)
        self.scale = nn.Parameter(torch.ones(2, 2, dtype=torch.float64))
        self.register_buffer("offset", torch.arange(3.0))
        self.register_buffer("cache", torch.zeros(4), persistent=False)
        self.table = torch.arange(4.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn(self.fc(x + self.offset)) + self.cache + self.table
        return y.sum() + self.scale.sum()


# -- helpers ----------------------------------------------------------------------------
def dtype_tensor(name: str, shape: tuple[int, ...] = (2, 3), seed: int = 0) -> torch.Tensor:
    """A small tensor of ``torch.<name>`` with varied values."""
    dtype = getattr(torch, name)
    n = 1
    for s in shape:
        n *= s
    g = torch.Generator().manual_seed(seed)
    if dtype.is_complex:
        base = torch.randn(*shape, generator=g, dtype=torch.complex64)
        return base.to(dtype)
    if dtype == torch.bool:
        return torch.arange(n).reshape(shape) % 2 == 0
    if dtype.is_floating_point and dtype.itemsize > 1:
        return torch.randn(*shape, generator=g).to(dtype)
    if name.startswith(("float8", "float4", "bits")):
        # raw codes: every byte pattern is a value (a bit pattern for bits*)
        raw = torch.randint(0, 120, (n * dtype.itemsize,), generator=g, dtype=torch.uint8)
        return raw.view(_SAME_SIZE_INT[1]).view(dtype).reshape(shape)
    return torch.arange(n, dtype=torch.int64).reshape(shape).to(dtype)


def dtype_state(names: list[str]) -> dict[str, torch.Tensor]:
    return {f"t_{name}": dtype_tensor(name, seed=i) for i, name in enumerate(names)}


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Builders' progress bars, tips and warnings stay out of the test output."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()), \
                contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


def _save(obj: Any, path: Path, *, legacy: bool = False, protocol: int = 2) -> Path:
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy, pickle_protocol=protocol)
    return path


# -- groups -----------------------------------------------------------------------------
def build_dtypes(root: Path, out: CorpusBuild) -> None:
    """Every dtype torch can save, in each torch format and pickle protocol."""
    import safetensors.torch as st

    everything = dtype_state(ALL_DTYPES)
    classic = dtype_state(CLASSIC_DTYPES)
    for protocol in (2, 4, 5):
        p = _save(everything, root / f"dtypes-zip-p{protocol}.pt", protocol=protocol)
        out.add(CorpusFile(f"dtypes-zip-p{protocol}", p, "torch", StateModule(everything)))
        p = _save(classic, root / f"dtypes-legacy-p{protocol}.pt", legacy=True,
                  protocol=protocol)
        out.add(CorpusFile(f"dtypes-legacy-p{protocol}", p, "torch", StateModule(classic)))
    for name in NEW_DTYPES:
        state = {f"t_{name}": dtype_tensor(name)}
        for protocol in (2, 4) if name in ("uint16", "float8_e4m3fn") else (2,):
            tag = f"legacy-{name}-p{protocol}"
            p = _save(state, root / f"{tag}.pt", legacy=True, protocol=protocol)
            out.add(CorpusFile(tag, p, "torch", StateModule(state), saved=dict(state),
                               torch_refuses=True))
    st_state: dict[str, torch.Tensor] = {}
    for name in SAFETENSORS_DTYPES:
        t = dtype_tensor(name)
        try:
            st.save(dict(t=t))
        except Exception:  # this safetensors release does not store the dtype
            continue
        st_state[f"t_{name}"] = t
    p = root / "dtypes.safetensors"
    st.save_file(st_state, p, metadata={"format": "pt"})
    out.add(CorpusFile("dtypes-safetensors", p, "safetensors", StateModule(st_state),
                       library="safetensors"))
    q = _quantized()
    p = _save(q, root / "quantized.pt")
    out.add(CorpusFile("quantized-zip", p, "torch", StateModule(q)))


def _quantized() -> dict[str, torch.Tensor]:
    x = torch.randn(2, 3, generator=torch.Generator().manual_seed(1))
    return {
        "qint8": torch.quantize_per_tensor(x, 0.1, 0, torch.qint8),
        "quint8": torch.quantize_per_tensor(x, 0.1, 10, torch.quint8),
        "qint32": torch.quantize_per_tensor(x, 0.1, 0, torch.qint32),
        "per_channel": torch.quantize_per_channel(
            x, torch.tensor([0.1, 0.2]), torch.tensor([0, 1]), 0, torch.qint8),
    }


def build_torch_objects(root: Path, out: CorpusBuild) -> None:
    """State dicts, optimizers, whole modules, shared storages, empty files."""
    net = TinyNet()
    sd = net.state_dict()
    out.add(CorpusFile("state-dict", _save(sd, root / "state_dict.pt"), "torch", net))
    out.add(CorpusFile("state-dict-legacy", _save(sd, root / "state_dict_legacy.pt",
                                                  legacy=True), "torch", net))
    net(torch.randn(2, 2, 4, 4)).sum().backward()
    adam = torch.optim.AdamW(net.parameters(), lr=1e-3)
    adam.step()
    sgd = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    sgd.step()
    sched = torch.optim.lr_scheduler.StepLR(adam, step_size=2)
    out.add(CorpusFile("optimizer-adamw", _save(adam.state_dict(), root / "adamw.pt"),
                       "torch", net))
    out.add(CorpusFile("optimizer-sgd-legacy", _save(sgd.state_dict(), root / "sgd.pt",
                                                     legacy=True), "torch", net))
    training = {"epoch": 3, "step": 120, "model": net.state_dict(),
                "optimizer": adam.state_dict(), "scheduler": sched.state_dict(),
                "rng": torch.get_rng_state(), "best": 0.25, "config": {"lr": 1e-3}}
    out.add(CorpusFile("training-checkpoint", _save(training, root / "training.pt"),
                       "torch", net))
    linear = nn.Linear(3, 4)
    out.add(CorpusFile("whole-linear", _save(linear, root / "linear.pt"), "torch",
                       nn.Linear(3, 4)))
    seq = nn.Sequential(nn.Conv1d(2, 3, 3), nn.BatchNorm1d(3), nn.ReLU(),
                        nn.LSTM(4, 5, batch_first=True))
    out.add(CorpusFile("whole-sequential", _save(seq, root / "sequential.pt"), "torch",
                       seq))
    out.add(CorpusFile("whole-sequential-legacy", _save(seq, root / "sequential_legacy.pt",
                                                        legacy=True), "torch", seq))
    base = torch.arange(24.0).reshape(4, 6)
    emb = nn.Parameter(torch.randn(5, 3))
    shared = OrderedDict([
        ("base", base), ("rows", base[1:3]), ("transposed", base.t()),
        ("flat", base.view(24)), ("column", base[:, 2]), ("strided", base[::2, ::3]),
        ("again", base), ("embed.weight", emb), ("head.weight", emb),
        ("scalar", torch.tensor(3.5)), ("empty", torch.zeros(0, 4)),
    ])
    shared_model = StateModule(shared)
    out.add(CorpusFile("shared-views", _save(shared, root / "shared.pt"), "torch",
                       shared_model))
    out.add(CorpusFile("shared-views-legacy", _save(shared, root / "shared_legacy.pt",
                                                    legacy=True), "torch", shared_model))
    empty_model = nn.Module()
    out.add(CorpusFile("empty-dict", _save({}, root / "empty.pt"), "torch", empty_model))
    out.add(CorpusFile("empty-ordereddict-legacy", _save(OrderedDict(), root /
                                                         "empty_legacy.pt", legacy=True),
                       "torch", empty_model))
    out.add(CorpusFile("empty-module", _save(nn.Sequential().state_dict(),
                                             root / "empty_module.pt", protocol=4),
                       "torch", nn.Sequential()))
    import safetensors.torch as st

    p = root / "empty.safetensors"
    st.save_file({}, p)
    out.add(CorpusFile("empty-safetensors", p, "safetensors", empty_model,
                       library="safetensors"))
    zero = {"nothing": torch.zeros(0), "none_rows": torch.zeros(0, 3, dtype=torch.int64)}
    p = root / "zero_sized.safetensors"
    st.save_file(zero, p)
    out.add(CorpusFile("zero-sized-safetensors", p, "safetensors", StateModule(zero),
                       library="safetensors"))
    # what transformers' Trainer writes beside the weights: RNG states (numpy arrays)
    import numpy as np

    rng = {"python": random.getstate(), "numpy": np.random.get_state(),
           "cpu": torch.random.get_rng_state()}
    out.add(CorpusFile("trainer-rng-state", _save(rng, root / "rng_state.pth"), "torch",
                       empty_model))


def build_torchscript(root: Path, out: CorpusBuild) -> None:
    net = TinyNet().eval()
    p = root / "scripted.pt"
    torch.jit.save(torch.jit.script(net), p)
    out.add(CorpusFile("jit-scripted", p, "jit", net))
    lists = ScriptedWithLists()
    p = root / "scripted_lists.pt"
    torch.jit.save(torch.jit.script(lists), p)
    out.add(CorpusFile("jit-scripted-lists", p, "jit", lists))
    p = root / "traced.pt"
    torch.jit.save(torch.jit.trace(net, torch.randn(2, 2, 4, 4)), p)
    out.add(CorpusFile("jit-traced", p, "jit", net))
    two = TwoInputs()
    p = root / "traced_dict_input.pt"
    traced = torch.jit.trace(two, (torch.randn(2, 3), {"bias": torch.randn(2)}),
                             strict=False)
    torch.jit.save(traced, p)
    out.add(CorpusFile("jit-traced-dict-input", p, "jit", two))
    frozen = torch.jit.freeze(torch.jit.script(TinyNet().eval()))
    p = root / "frozen.pt"
    torch.jit.save(frozen, p)
    out.add(CorpusFile("jit-frozen", p, "jit", TinyNet()))


def build_export(root: Path, out: CorpusBuild) -> None:
    net = ExportNet().eval()
    p = root / "exported.pt2"
    torch.export.save(torch.export.export(net, (torch.randn(2, 3),)), p)
    out.add(CorpusFile("export-pt2", p, "export", net))
    tiny = TinyNet().eval()
    p = root / "exported_tiny.pt2"
    torch.export.save(torch.export.export(tiny, (torch.randn(1, 2, 4, 4),)), p)
    out.add(CorpusFile("export-pt2-conv", p, "export", tiny))


def build_dcp(root: Path, out: CorpusBuild) -> None:
    import torch.distributed.checkpoint as dcp

    net = TinyNet()
    net(torch.randn(2, 2, 4, 4)).sum().backward()
    opt = torch.optim.Adam(net.parameters())
    opt.step()
    p = root / "dcp_model"
    dcp.save(net.state_dict(), checkpoint_id=p, no_dist=True)
    out.add(CorpusFile("dcp-state-dict", p, "dcp", net))
    p = root / "dcp_training"
    state = {"model": net.state_dict(), "optim": opt.state_dict(), "step": 7,
             "extra": {"bf16": torch.ones(3, dtype=torch.bfloat16)}}
    dcp.save(state, checkpoint_id=p)  # single process, no process group: the default
    out.add(CorpusFile("dcp-training", p, "dcp", net))


def build_transformers(root: Path, out: CorpusBuild) -> None:
    import transformers
    from transformers import BertConfig, BertModel, GPT2Config, GPT2LMHeadModel

    bert = BertModel(BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=2,
                                num_attention_heads=2, intermediate_size=32,
                                max_position_embeddings=32))
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_embd=16, n_layer=2, n_head=2,
                                      n_positions=32, bos_token_id=0, eos_token_id=0))
    major = int(transformers.__version__.split(".")[0])
    for name, model in (("bert", bert), ("gpt2", gpt2)):
        for safe in (True, False):
            for shard in (None, "20KB"):
                tag = f"hf-{name}-{'safetensors' if safe else 'bin'}" + (
                    "-sharded" if shard else "")
                folder = root / tag
                kwargs: dict[str, Any] = {} if shard is None else {"max_shard_size": shard}
                if safe or major < 5:
                    model.save_pretrained(folder, safe_serialization=safe, **kwargs)
                else:
                    # transformers 5 writes only safetensors; the pickle layout it used to
                    # write (pytorch_model.bin, or shards and pytorch_model.bin.index.json)
                    # comes from huggingface_hub, which transformers 4 also used
                    from huggingface_hub import save_torch_model

                    model.config.save_pretrained(folder)
                    save_torch_model(model, folder, safe_serialization=False, **kwargs)
                out.add(CorpusFile(tag, folder, "hf", model, library="transformers"))
                if shard is None:
                    weights = next(folder.glob("*.safetensors" if safe else "*.bin"))
                    out.add(CorpusFile(tag + "-file", weights,
                                       "safetensors" if safe else "torch", model,
                                       library="transformers"))
    # transformers' Trainer saves its arguments with torch.save beside the weights
    args = transformers.TrainingArguments(output_dir=str(root / "trainer_out"),
                                          report_to=[], use_cpu=True)
    out.add(CorpusFile("hf-training-args", _save(args, root / "training_args.bin"), "torch",
                       bert, library="transformers"))


def build_peft(root: Path, out: CorpusBuild) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import GPT2Config, GPT2LMHeadModel

    base = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_embd=16, n_layer=2, n_head=2,
                                      n_positions=32, bos_token_id=0, eos_token_id=0))
    model = get_peft_model(base, LoraConfig(r=2, lora_alpha=4, target_modules=["c_attn"],
                                            fan_in_fan_out=True))
    for safe in (True, False):
        tag = f"peft-lora-{'safetensors' if safe else 'bin'}"
        folder = root / tag
        model.save_pretrained(folder, safe_serialization=safe)
        out.add(CorpusFile(tag, folder, "hf", model, library="peft"))
        weights = next(folder.glob("adapter_model.*"))
        out.add(CorpusFile(tag + "-file", weights, "safetensors" if safe else "torch", model,
                           library="peft"))


def build_lightning(root: Path, out: CorpusBuild) -> None:
    try:
        import lightning.pytorch as pl
    except ImportError:
        import pytorch_lightning as pl

    class TinyLightning(pl.LightningModule):
        def __init__(self, hidden: int = 4) -> None:
            super().__init__()
            self.save_hyperparameters()
            self.layer = nn.Linear(3, hidden)
            self.head = nn.Linear(hidden, 1)

        def training_step(self, batch: Any, _index: int) -> torch.Tensor:
            x, y = batch
            return nn.functional.mse_loss(self.head(self.layer(x)), y)

        def configure_optimizers(self) -> Any:
            opt = torch.optim.Adam(self.parameters(), lr=1e-3)
            return [opt], [torch.optim.lr_scheduler.StepLR(opt, step_size=1)]

    data = torch.utils.data.TensorDataset(torch.randn(8, 3), torch.randn(8, 1))
    loader = torch.utils.data.DataLoader(data, batch_size=4)
    module = TinyLightning()
    trainer = pl.Trainer(max_steps=1, accelerator="cpu", devices=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=str(root / "pl"))
    trainer.fit(module, loader)
    p = root / "lightning.ckpt"
    trainer.save_checkpoint(p)
    out.add(CorpusFile("lightning-fit", p, "torch", TinyLightning(), library="lightning"))
    p = root / "lightning_weights.ckpt"
    trainer.save_checkpoint(p, weights_only=True)
    out.add(CorpusFile("lightning-weights-only", p, "torch", TinyLightning(),
                       library="lightning"))


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Empty stand-ins for torchvision and PIL, which timm imports at import time but
    never uses to build a model. torchvision from PyPI cannot be imported beside this
    CPU torch; the stand-ins exist only while timm is imported."""

    roots = ("torchvision", "PIL")

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname.split(".")[0] in self.roots:
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec: Any) -> types.ModuleType:
        module = _StubModule(spec.name)
        module.__path__ = []
        module.__version__ = "0.0"
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        pass


class _Anything(type):
    def __getattr__(cls, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return _Anything(name, (), {})

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        return cls

    def __or__(cls, other: Any) -> Any:
        return cls


class _StubModule(types.ModuleType):
    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return _Anything(name, (), {})


def import_timm() -> Any:
    try:
        return importlib.import_module("timm")
    except ImportError as exc:
        if (exc.name or "").split(".")[0] not in _StubFinder.roots:
            raise
    for name in [n for n in sys.modules if n == "timm" or n.startswith("timm.")]:
        del sys.modules[name]
    finder = _StubFinder()
    sys.meta_path.insert(0, finder)
    try:
        return importlib.import_module("timm")
    finally:
        sys.meta_path.remove(finder)
        for name in [n for n in sys.modules if n.split(".")[0] in _StubFinder.roots]:
            if isinstance(sys.modules[name], _StubModule):
                del sys.modules[name]


def build_timm(root: Path, out: CorpusBuild) -> None:
    import safetensors.torch as st

    timm = import_timm()
    from timm.models import save_for_hf

    for arch in ("test_vit", "test_efficientnet"):
        model = timm.create_model(arch, pretrained=False)
        p = root / f"timm_{arch}.pth"
        torch.save(model.state_dict(), p)
        out.add(CorpusFile(f"timm-{arch}", p, "torch", model, library="timm"))
        p = root / f"timm_{arch}.safetensors"
        st.save_file(model.state_dict(), p)
        out.add(CorpusFile(f"timm-{arch}-safetensors", p, "safetensors", model,
                           library="timm"))
    model = timm.create_model("test_resnet", pretrained=False)
    folder = root / "timm_hf"
    save_for_hf(model, str(folder), safe_serialization="both")
    out.add(CorpusFile("timm-save-for-hf", folder, "hf", model, library="timm"))


GROUPS: dict[str, Callable[[Path, CorpusBuild], None]] = {
    "dtypes": build_dtypes,
    "torch-objects": build_torch_objects,
    "torchscript": build_torchscript,
    "export": build_export,
    "dcp": build_dcp,
    "transformers": build_transformers,
    "peft": build_peft,
    "lightning": build_lightning,
    "timm": build_timm,
}
OPTIONAL = {"transformers": "transformers", "peft": "peft", "lightning": "pytorch_lightning",
            "timm": "timm"}


def planned() -> dict[str, list[str]]:
    """Each group's file names, known before anything is built (tests are parametrized
    by them; ``build_corpus`` must build exactly these)."""
    legacy_new = [f"legacy-{n}-p{p}" for n in NEW_DTYPES
                  for p in ((2, 4) if n in ("uint16", "float8_e4m3fn") else (2,))]
    hf = [f"hf-{m}-{fmt}{suffix}" for m in ("bert", "gpt2") for fmt in ("safetensors", "bin")
          for suffix in ("", "-file", "-sharded")]
    return {
        "dtypes": [f"dtypes-{fmt}-p{p}" for p in (2, 4, 5) for fmt in ("zip", "legacy")]
        + legacy_new + ["dtypes-safetensors", "quantized-zip"],
        "torch-objects": [
            "state-dict", "state-dict-legacy", "optimizer-adamw", "optimizer-sgd-legacy",
            "training-checkpoint", "whole-linear", "whole-sequential",
            "whole-sequential-legacy", "shared-views", "shared-views-legacy", "empty-dict",
            "empty-ordereddict-legacy", "empty-module", "empty-safetensors",
            "zero-sized-safetensors", "trainer-rng-state",
        ],
        "torchscript": ["jit-scripted", "jit-scripted-lists", "jit-traced",
                        "jit-traced-dict-input", "jit-frozen"],
        "export": ["export-pt2", "export-pt2-conv"],
        "dcp": ["dcp-state-dict", "dcp-training"],
        "transformers": [*hf, "hf-training-args"],
        "peft": [f"peft-lora-{fmt}{suffix}" for fmt in ("safetensors", "bin")
                 for suffix in ("", "-file")],
        "lightning": ["lightning-fit", "lightning-weights-only"],
        "timm": ["timm-test_vit", "timm-test_vit-safetensors", "timm-test_efficientnet",
                 "timm-test_efficientnet-safetensors", "timm-save-for-hf"],
    }


def build_corpus(root: Path, groups: list[str] | None = None) -> CorpusBuild:
    """Write the corpus under ``root`` (one group per builder; a group whose library is
    not installed is skipped and named in ``skipped``)."""
    out = CorpusBuild()
    root.mkdir(parents=True, exist_ok=True)
    state = torch.random.get_rng_state()
    torch.manual_seed(0)
    try:
        for name in groups or list(GROUPS):
            folder = root / name
            folder.mkdir(exist_ok=True)
            needed = OPTIONAL.get(name)
            if needed and importlib.util.find_spec(needed) is None and not (
                    name == "lightning" and importlib.util.find_spec("lightning")):
                out.skipped[name] = f"{needed} is not installed"
                continue
            try:
                with quiet():
                    GROUPS[name](folder, out)
            except ImportError as exc:
                if not needed:
                    raise
                out.skipped[name] = f"{needed} cannot be imported: {exc}"
    finally:
        torch.random.set_rng_state(state)
    return out


if __name__ == "__main__":  # pragma: no cover - a look at the corpus by hand
    import tempfile
    import time

    started = time.perf_counter()
    corpus = build_corpus(Path(os.environ.get("CORPUS_DIR") or tempfile.mkdtemp()))
    for f in corpus.files:
        print(f"{f.name:34} {f.reader:12} {f.path}")
    print(f"{len(corpus.files)} files in {time.perf_counter() - started:.1f} s; skipped:",
          corpus.skipped)
