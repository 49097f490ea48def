"""A plan corpus (issue 18, item 8): checkpoints written by the real libraries, each with
the answer a careful engineer would write by hand.

A plan is right when the model's final weights are what that engineer would load: every
case here says, for every tensor of the model it is loaded into, which value it must
hold afterwards (``Case.expected``), which tensors keep their initial value on purpose
(``kept_initial``), which learned checkpoint tensors go unused on purpose
(``unused_learned``), and the status that follows. Nothing is downloaded: every model is
a small config built in code, and every source model's weights are moved away from its
initial values (a training step, an average, noise), so a value left at init can never
pass for a loaded one.

    cases = build_cases(folder)   # {name: Case}; skipped groups in SKIPPED
    PLANNED                       # {group: [case names]}, known without building
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

# -- cases ------------------------------------------------------------------------------


@dataclass
class Case:
    """One checkpoint and the careful engineer's answer for the model it goes into.

    ``make_model`` builds the target model at its initial values, the same values on
    every call (seeded). ``expected`` is the model's whole state dict as it must be
    after a correct load. ``unused_learned`` names keys of the checkpoint's selected
    container (``entry``), as they are saved there. ``forward`` runs the model on a fixed
    input; ``reference_output`` is that forward on the library's own model holding the
    right weights."""

    name: str
    library: str
    path: Path
    make_model: Callable[[], nn.Module]
    expected: dict[str, torch.Tensor]
    status: str
    why: str
    kept_initial: frozenset[str] = frozenset()
    unused_learned: frozenset[str] = frozenset()
    bookkeeping: frozenset[str] = frozenset()
    entry: str = ""
    forward: Callable[[nn.Module], torch.Tensor] | None = None
    reference_output: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.reference_output is not None:  # NaN never equals NaN: the check would fail
            assert torch.isfinite(self.reference_output).all(), self.name


PLANNED: dict[str, list[str]] = {
    "timm": ["timm-resnet-dataparallel", "timm-vit-compile", "timm-vit-training-dict",
             "timm-resnet-dataparallel-training-dict", "timm-resnet-new-classifier"],
    "transformers": ["bert-classifier-into-base", "bert-base-into-classifier",
                     "gpt2-prefix-removed", "gpt2-prefix-added"],
    "lightning": ["lightning-module-into-net"],
    "swa": ["swa-averaged-model"],
    "distributed": ["checkpoint-wrapper-state-dict", "checkpoint-wrapper-named-parameters",
                    "fsdp-full-state-dict", "fsdp-orig-params-named-parameters",
                    "ddp-module-prefix", "compile-ddp"],
    "compile": ["compile-orig-mod"],
    "prune": ["prune-l1-unstructured"],
    "peft": ["peft-lora-bert-full-state-dict"],
    "weight-norm": ["weight-norm-old-into-new", "weight-norm-new-into-old",
                    "weight-norm-old-into-plain", "weight-norm-new-into-plain",
                    "weight-norm-plain-into-new"],
}
LIBRARY = {"timm": "timm", "transformers": "transformers", "lightning": "pytorch-lightning",
           "swa": "torch.optim.swa_utils", "distributed": "torch.distributed",
           "compile": "torch.compile", "prune": "torch.nn.utils.prune", "peft": "peft",
           "weight-norm": "torch.nn.utils"}
SKIPPED: dict[str, str] = {}  # case name -> why it could not be built here
FAILED: dict[str, str] = {}  # case name -> the error its group's builder raised


# -- helpers ----------------------------------------------------------------------------
def seeded(factory: Callable[[], nn.Module], seed: int) -> Callable[[], nn.Module]:
    """``factory`` made deterministic: the same initial values on every call."""

    def make() -> nn.Module:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            return factory()

    return make


def perturb(model: nn.Module, seed: int) -> nn.Module:
    """Move every parameter and floating buffer away from its initial value (running
    statistics included) and every integer counter off zero, in place; small zero-mean
    noise, so the model's outputs stay finite."""
    gen = torch.Generator().manual_seed(seed)
    tensors = [*model.named_parameters(), *model.named_buffers()]
    with torch.no_grad():
        for name, tensor in tensors:
            if tensor.is_floating_point():
                noise = torch.randn(tensor.shape, generator=gen, dtype=tensor.dtype)
                if name.endswith("running_var"):
                    noise = noise.abs()  # a variance stays positive
                tensor.add_(noise * 0.02)
            elif tensor.dtype == torch.int64 and tensor.dim() == 0:
                tensor.fill_(7)
    return model


def clone_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in state.items()}


def answer(make_model: Callable[[], nn.Module], loaded: dict[str, torch.Tensor],
           kept_initial: frozenset[str] = frozenset()) -> dict[str, torch.Tensor]:
    """The whole expected state: ``loaded`` values for those keys, the initial value for
    ``kept_initial``; the two together must be exactly the model's keys, shapes, dtypes."""
    init = make_model().state_dict()
    assert not set(loaded) & set(kept_initial), set(loaded) & set(kept_initial)
    assert set(loaded) | set(kept_initial) == set(init), (
        sorted(set(init) - set(loaded) - set(kept_initial)),
        sorted(set(loaded) | set(kept_initial) - set(init)))
    out = {}
    for key, value in init.items():
        if key in loaded:
            got = loaded[key]
            assert got.shape == value.shape and got.dtype == value.dtype, key
            # the hand-written answer must be told apart from the initial value
            assert not torch.equal(got, value), f"{key}: the answer equals the initial value"
            out[key] = got.detach().clone()
        else:
            out[key] = value.detach().clone()
    return out


def forward_on(sample: torch.Tensor, pick: Callable[[Any], torch.Tensor] | None = None,
               call: Callable[[nn.Module, torch.Tensor], Any] | None = None,
               ) -> Callable[[nn.Module], torch.Tensor]:
    def run(model: nn.Module) -> torch.Tensor:
        model.eval()
        with torch.no_grad():
            out = call(model, sample) if call else model(sample)
        return (pick(out) if pick else out).detach().clone()

    return run


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Libraries' warnings and log lines about tiny configs, kept out of test output."""
    loggers = [logging.getLogger(n) for n in ("transformers", "lightning", "pytorch_lightning",
                                              "lightning.pytorch", "torch.distributed")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def small_net() -> nn.Module:
    """Conv, BatchNorm (running statistics, a step counter) and Linear layers."""
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 4 * 4, 8), nn.ReLU(), nn.Linear(8, 3))


NET_INPUT = torch.linspace(-1, 1, 2 * 3 * 6 * 6).reshape(2, 3, 6, 6)


# -- timm -------------------------------------------------------------------------------
def build_timm(root: Path) -> list[Case]:
    from benign_corpus import import_timm

    timm = import_timm()
    cases = []

    def make(arch: str, **kw: Any) -> Callable[[], nn.Module]:
        return seeded(lambda: timm.create_model(arch, pretrained=False, **kw), 1)

    def image(model: nn.Module) -> torch.Tensor:
        size = model.pretrained_cfg["input_size"]
        return torch.linspace(-1, 1, 3 * size[1] * size[2]).reshape(1, *size)

    def source(arch: str, **kw: Any) -> nn.Module:
        return perturb(seeded(lambda: timm.create_model(arch, pretrained=False, **kw), 2)(), 3)

    def same_model_case(name: str, arch: str, payload: Any, entry: str, why: str) -> Case:
        path = root / f"{name}.pth"
        torch.save(payload, path)
        make_model = make(arch, num_classes=10)
        return Case(name, "timm", path, make_model, answer(make_model, src.state_dict()),
                    "fixable", why, entry=entry, forward=fwd, reference_output=fwd(src))

    src = source("test_resnet", num_classes=10)
    fwd = forward_on(image(src))
    parallel = nn.DataParallel(src)  # no GPU: the real wrapper, running on the CPU
    cases.append(same_model_case(
        "timm-resnet-dataparallel", "test_resnet", parallel.state_dict(), "",
        "nn.DataParallel's state dict: strip 'module.', every tensor loads"))
    opt = torch.optim.SGD(src.parameters(), lr=1e-3, momentum=0.9)
    src(image(src)).mean().backward()
    opt.step()  # momentum buffers in the optimizer's state
    src.zero_grad()
    fwd = forward_on(image(src))
    cases.append(same_model_case(
        "timm-resnet-dataparallel-training-dict", "test_resnet",
        {"state_dict": parallel.state_dict(), "optimizer": opt.state_dict(), "epoch": 3},
        "state_dict", "a training dict around nn.DataParallel's state dict: select "
        "'state_dict', strip 'module.'"))

    src = source("test_vit", num_classes=10)
    fwd = forward_on(image(src))
    compiled = torch.compile(src)  # state_dict() compiles nothing
    cases.append(same_model_case(
        "timm-vit-compile", "test_vit", compiled.state_dict(), "",
        "torch.compile's state dict: strip '_orig_mod.', every tensor loads"))
    opt = torch.optim.AdamW(src.parameters(), lr=1e-3)
    src(image(src)).mean().backward()
    opt.step()
    fwd = forward_on(image(src))
    cases.append(same_model_case(
        "timm-vit-training-dict", "test_vit",
        {"state_dict": src.state_dict(), "optimizer": opt.state_dict(), "epoch": 3},
        "state_dict", "a training dict: select 'state_dict', every tensor loads"))

    # a new classifier: fine-tuning a 10-class backbone for 5 classes
    src = source("test_resnet", num_classes=10)
    path = root / "timm-resnet-new-classifier.pth"
    torch.save(src.state_dict(), path)
    make_model = make("test_resnet", num_classes=5)
    head = frozenset({"fc.weight", "fc.bias"})
    backbone = {k: v for k, v in src.state_dict().items() if k not in head}
    fwd = forward_on(image(src), call=lambda m, x: m.forward_head(m.forward_features(x),
                                                                  pre_logits=True))
    cases.append(Case(
        "timm-resnet-new-classifier", "timm", path, make_model,
        answer(make_model, backbone, head), "partial",
        "num_classes 10 -> 5: every backbone tensor loads, the head keeps its initial "
        "value and the file's 10-class head goes unused", kept_initial=head,
        unused_learned=head, forward=fwd, reference_output=fwd(src)))
    return cases


# -- transformers -----------------------------------------------------------------------
def build_transformers(root: Path) -> list[Case]:
    import transformers as tf

    bert_config = tf.BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2,
                                num_attention_heads=2, intermediate_size=48,
                                max_position_embeddings=32, num_labels=3)
    ids = torch.tensor([[1, 5, 9, 13, 17, 21, 2]])
    hidden = forward_on(ids, pick=lambda o: o.last_hidden_state)
    body = forward_on(ids, call=lambda m, x: m.bert(x).last_hidden_state)
    cases = []

    # BertForSequenceClassification -> BertModel: strip 'bert.', the classifier is unused
    with quiet():
        src = perturb(seeded(lambda: tf.BertForSequenceClassification(bert_config), 2)(), 3)
        folder = root / "bert-classifier"
        src.save_pretrained(str(folder))
        # the library's own loader, as the reference for the forward pass
        reference = tf.BertModel.from_pretrained(str(folder))
    make_model = seeded(lambda: tf.BertModel(bert_config), 1)
    loaded = {k.removeprefix("bert."): v for k, v in src.state_dict().items()
              if k.startswith("bert.")}
    expected = answer(make_model, loaded)
    _same_as(expected, reference.state_dict(), "BertModel.from_pretrained")
    cases.append(Case(
        "bert-classifier-into-base", "transformers", folder, make_model, expected, "fixable",
        "save_pretrained folder of a classifier into its base model: strip the 'bert.' "
        "base_model_prefix; the classifier has no place in BertModel and is left out "
        "(what BertModel.from_pretrained does), nothing keeps its initial value",
        unused_learned=frozenset({"classifier.weight", "classifier.bias"}),
        forward=hidden, reference_output=hidden(reference)))

    # BertModel -> BertForSequenceClassification: add 'bert.', the classifier is new
    with quiet():
        src = perturb(seeded(lambda: tf.BertModel(bert_config), 4)(), 5)
        folder = root / "bert-base"
        src.save_pretrained(str(folder))
    make_model = seeded(lambda: tf.BertForSequenceClassification(bert_config), 1)
    classifier = frozenset({"classifier.weight", "classifier.bias"})
    expected = answer(make_model, {f"bert.{k}": v for k, v in src.state_dict().items()},
                      classifier)
    cases.append(Case(
        "bert-base-into-classifier", "transformers", folder, make_model, expected, "fixable",
        "a base model's save_pretrained folder into a classifier: add 'bert.'; the new "
        "classifier keeps its initial value (as from_pretrained does), no learned value "
        "goes unused, so nothing is lost: fixable", kept_initial=classifier,
        forward=body, reference_output=hidden(src)))

    # GPT2LMHeadModel state dicts with 'transformer.' taken off, or one more put on
    gpt_config = tf.GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=64, n_positions=16,
                               bos_token_id=0, eos_token_id=0)
    with quiet():
        src = perturb(seeded(lambda: tf.GPT2LMHeadModel(gpt_config), 2)(), 3)
    assert src.lm_head.weight is src.transformer.wte.weight  # tied
    make_model = seeded(lambda: tf.GPT2LMHeadModel(gpt_config), 1)
    expected = answer(make_model, src.state_dict())
    logits = forward_on(ids, pick=lambda o: o.logits)
    state = src.state_dict()
    for name, keys, why in [
        ("gpt2-prefix-removed", {k: k.removeprefix("transformer.") for k in state},
         "every key's 'transformer.' removed (lm_head.weight has none): add it back to "
         "the transformer's keys; lm_head.weight is tied to wte either way"),
        ("gpt2-prefix-added", {k: f"transformer.{k}" for k in state},
         "one more 'transformer.' on every key: strip it once"),
    ]:
        path = root / f"{name}.pt"
        torch.save({keys[k]: v for k, v in state.items()}, path)
        cases.append(Case(name, "transformers", path, make_model, expected, "fixable", why,
                          forward=logits, reference_output=logits(src)))
    return cases


def _same_as(expected: dict[str, torch.Tensor], library: dict[str, torch.Tensor],
             who: str) -> None:
    """The hand-written answer agrees with the library's own loader, bit for bit."""
    assert set(expected) == set(library), (who, set(expected) ^ set(library))
    for k in expected:
        assert torch.equal(expected[k], library[k]), (who, k)


# -- Lightning --------------------------------------------------------------------------
def build_lightning(root: Path) -> list[Case]:
    import pytorch_lightning as pl

    class Classifier(pl.LightningModule):
        def __init__(self, net: nn.Module) -> None:
            super().__init__()
            self.model = net

        def training_step(self, batch: Any, _index: int) -> torch.Tensor:
            x, y = batch
            return nn.functional.cross_entropy(self.model(x), y)

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.5, momentum=0.9)

    make_model = seeded(small_net, 1)
    module = Classifier(seeded(small_net, 2)())
    gen = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(8, 3, 6, 6, generator=gen),
                                          torch.randint(0, 3, (8,), generator=gen))
    with quiet():
        trainer = pl.Trainer(max_steps=1, logger=False, enable_checkpointing=False,
                             accelerator="cpu", devices=1, enable_progress_bar=False,
                             enable_model_summary=False, default_root_dir=str(root / "pl"))
        trainer.fit(module, torch.utils.data.DataLoader(data, batch_size=4))
        path = root / "lightning.ckpt"
        trainer.save_checkpoint(path)
    net = module.model
    assert int(net[1].num_batches_tracked) == 1  # it did train one step
    fwd = forward_on(NET_INPUT)
    return [Case(
        "lightning-module-into-net", "pytorch-lightning", path, make_model,
        answer(make_model, net.state_dict()), "fixable",
        "trainer.save_checkpoint into the bare net: select 'state_dict', strip 'model.'; "
        "the trained weights, BatchNorm's statistics and counter", entry="state_dict",
        forward=fwd, reference_output=fwd(net))]


# -- swa_utils --------------------------------------------------------------------------
def build_swa(root: Path) -> list[Case]:
    from torch.optim.swa_utils import AveragedModel

    make_model = seeded(small_net, 1)
    averaged = AveragedModel(perturb(seeded(small_net, 2)(), 3), use_buffers=True)
    for seed in (4, 5, 6):
        averaged.update_parameters(perturb(seeded(small_net, seed)(), seed + 10))
    assert int(averaged.n_averaged) == 3
    path = root / "swa.pt"
    torch.save(averaged.state_dict(), path)
    fwd = forward_on(NET_INPUT)
    return [Case(
        "swa-averaged-model", "torch.optim.swa_utils", path, make_model,
        answer(make_model, averaged.module.state_dict()), "fixable",
        "AveragedModel's state dict: strip 'module.' for the averaged weights; "
        "n_averaged is bookkeeping", bookkeeping=frozenset({"n_averaged"}),
        forward=fwd, reference_output=fwd(averaged))]


# -- torch.distributed: activation checkpointing, FSDP, DDP -----------------------------
def with_named_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """What a hand-written saver keeps: named_parameters() and named_buffers(), whose
    names carry the wrappers' module names (state_dict()'s hooks remove them)."""
    return {**{k: v.detach().clone() for k, v in model.named_parameters()},
            **{k: v.detach().clone() for k, v in model.named_buffers()}}


def build_distributed(root: Path) -> list[Case]:
    import torch.distributed as dist
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
        apply_activation_checkpointing,
    )

    cases = []
    make_model = seeded(small_net, 1)
    fwd = forward_on(NET_INPUT)

    # activation checkpointing: state_dict() hides the wrapper, named_parameters() not
    src = perturb(seeded(small_net, 2)(), 3)
    plain = copy.deepcopy(src)
    apply_activation_checkpointing(src, check_fn=lambda m: isinstance(m, (nn.Conv2d,
                                                                           nn.Linear)))
    assert any("_checkpoint_wrapped_module." in k for k, _ in src.named_parameters())
    for name, state, status, why in [
        ("checkpoint-wrapper-state-dict", src.state_dict(), "ok",
         "checkpoint_wrapper's state-dict hook removes '_checkpoint_wrapped_module.': the "
         "file loads as is"),
        ("checkpoint-wrapper-named-parameters", with_named_tensors(src), "fixable",
         "named_parameters()/named_buffers() keep '_checkpoint_wrapped_module.' inside "
         "some keys: remove it there, every tensor loads"),
    ]:
        path = root / f"{name}.pt"
        torch.save(state, path)
        cases.append(Case(name, "torch.distributed", path, make_model,
                          answer(make_model, plain.state_dict()), status, why,
                          forward=fwd, reference_output=fwd(plain)))

    # one process, a gloo group over an in-memory store: no port, no network
    try:
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    except Exception as exc:  # pragma: no cover - depends on the machine
        for name in PLANNED["distributed"][2:]:
            SKIPPED[name] = f"torch.distributed gloo (world_size=1) cannot start: {exc}"
        return cases
    try:
        with quiet():
            cases += _fsdp_and_ddp(root, make_model, fwd)
    finally:
        dist.destroy_process_group()
    return cases


def _fsdp_and_ddp(root: Path, make_model: Callable[[], nn.Module],
                  fwd: Callable[[nn.Module], torch.Tensor]) -> list[Case]:
    from torch.distributed.fsdp import FullStateDictConfig, StateDictType
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy
    from torch.nn.parallel import DistributedDataParallel as DDP

    cases = []
    cpu = torch.device("cpu")
    src = perturb(seeded(small_net, 2)(), 3)
    plain = copy.deepcopy(src)
    fsdp = FSDP(src, device_id=cpu, auto_wrap_policy=ModuleWrapPolicy({nn.Linear}))
    with FSDP.state_dict_type(fsdp, StateDictType.FULL_STATE_DICT,
                              FullStateDictConfig(offload_to_cpu=False, rank0_only=False)):
        full = clone_state(fsdp.state_dict())
    path = root / "fsdp-full.pt"
    torch.save(full, path)
    cases.append(Case(
        "fsdp-full-state-dict", "torch.distributed", path, make_model,
        answer(make_model, plain.state_dict()), "ok",
        "FSDP's FULL_STATE_DICT has the plain model's keys: it loads as is",
        forward=fwd, reference_output=fwd(plain)))

    src = copy.deepcopy(plain)
    fsdp = FSDP(src, device_id=cpu, auto_wrap_policy=ModuleWrapPolicy({nn.Linear}),
                use_orig_params=True)
    named = with_named_tensors(fsdp)
    assert any("_fsdp_wrapped_module." in k for k in named)
    path = root / "fsdp-named.pt"
    torch.save(named, path)
    cases.append(Case(
        "fsdp-orig-params-named-parameters", "torch.distributed", path, make_model,
        answer(make_model, plain.state_dict()), "fixable",
        "FSDP(use_orig_params=True).named_parameters(): remove '_fsdp_wrapped_module.' "
        "wherever it is, every tensor loads", forward=fwd, reference_output=fwd(plain)))

    ddp = DDP(copy.deepcopy(plain))
    for name, state, why in [
        ("ddp-module-prefix", ddp.state_dict(), "DDP's state dict: strip 'module.'"),
        ("compile-ddp", torch.compile(ddp).state_dict(),
         "torch.compile(DDP(model))'s state dict: strip '_orig_mod.module.'"),
    ]:
        path = root / f"{name}.pt"
        torch.save(clone_state(state), path)
        cases.append(Case(name, "torch.distributed", path, make_model,
                          answer(make_model, plain.state_dict()), "fixable", why,
                          forward=fwd, reference_output=fwd(plain)))
    return cases


# -- torch.compile ----------------------------------------------------------------------
def build_compile(root: Path) -> list[Case]:
    make_model = seeded(small_net, 1)
    src = perturb(seeded(small_net, 2)(), 3)
    path = root / "compiled.pt"
    torch.save(torch.compile(src).state_dict(), path)
    fwd = forward_on(NET_INPUT)
    return [Case("compile-orig-mod", "torch.compile", path, make_model,
                 answer(make_model, src.state_dict()), "fixable",
                 "torch.compile's state dict: strip '_orig_mod.'", forward=fwd,
                 reference_output=fwd(src))]


# -- prune ------------------------------------------------------------------------------
def build_prune(root: Path) -> list[Case]:
    import torch.nn.utils.prune as prune

    make_model = seeded(small_net, 1)
    src = perturb(seeded(small_net, 2)(), 3)
    prune.l1_unstructured(src[0], "weight", amount=0.5)
    prune.l1_unstructured(src[4], "weight", amount=0.4)
    path = root / "pruned.pt"
    torch.save(src.state_dict(), path)
    loaded = {k: v for k, v in src.state_dict().items() if not k.endswith(("_orig", "_mask"))}
    for i in (0, 4):  # the weight the pruning hook computes: weight_orig * weight_mask
        loaded[f"{i}.weight"] = src[i].weight_orig * src[i].weight_mask
        assert torch.equal(loaded[f"{i}.weight"], src[i].weight)
    fwd = forward_on(NET_INPUT)
    return [Case("prune-l1-unstructured", "torch.nn.utils.prune", path, make_model,
                 answer(make_model, loaded), "fixable",
                 "saved without prune.remove: weight = weight_orig * weight_mask",
                 forward=fwd, reference_output=fwd(src))]


# -- peft -------------------------------------------------------------------------------
def build_peft(root: Path) -> list[Case]:
    import peft
    import transformers as tf

    config = tf.BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2,
                           num_attention_heads=2, intermediate_size=48,
                           max_position_embeddings=32)
    make_model = seeded(lambda: tf.BertModel(config), 1)
    with quiet():
        base = perturb(seeded(lambda: tf.BertModel(config), 2)(), 3)
        lora = peft.get_peft_model(copy.deepcopy(base), peft.LoraConfig(
            r=4, lora_alpha=8, target_modules=["query", "value"]))
    gen = torch.Generator().manual_seed(4)
    with torch.no_grad():  # lora_B starts at zero: make the update count
        for name, p in lora.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen))
    folder = root / "peft-lora"
    folder.mkdir()
    path = folder / "finetuned.pt"
    torch.save(lora.state_dict(), path)
    lora.peft_config["default"].save_pretrained(str(folder))  # adapter_config.json
    assert json.loads((folder / "adapter_config.json").read_text())["lora_alpha"] == 8
    with quiet():
        merged = lora.merge_and_unload()
    ids = torch.tensor([[1, 5, 9, 13, 17, 21, 2]])
    fwd = forward_on(ids, pick=lambda o: o.last_hidden_state)
    return [Case(
        "peft-lora-bert-full-state-dict", "peft", path, make_model,
        answer(make_model, merged.state_dict()), "fixable",
        "a LoRA model's full state dict with adapter_config.json beside it: strip "
        "'base_model.model.', W = W0 + B @ A * lora_alpha / r (merge_and_unload())",
        forward=fwd, reference_output=fwd(merged))]


# -- weight norm ------------------------------------------------------------------------
def _wn_net() -> nn.Module:
    # large enough that a fold computed another way than torch._weight_norm shows
    return nn.Sequential(nn.Linear(24, 32), nn.ReLU(), nn.Linear(32, 3))


def _old(net: nn.Module) -> nn.Module:
    with quiet():  # deprecated in favour of parametrizations.weight_norm
        nn.utils.weight_norm(net[0])
    return net


def _new(net: nn.Module) -> nn.Module:
    nn.utils.parametrizations.weight_norm(net[0])
    return net


def build_weight_norm(root: Path) -> list[Case]:
    cases = []
    x = torch.linspace(-1, 1, 48).reshape(2, 24)
    fwd = forward_on(x)
    G, V = "0.weight_g", "0.weight_v"
    O0, O1 = "0.parametrizations.weight.original0", "0.parametrizations.weight.original1"

    def add(name: str, src: nn.Module, make_model: Callable[[], nn.Module],
            loaded: dict[str, torch.Tensor], status: str, why: str,
            reference: nn.Module | None = None) -> None:
        path = root / f"{name}.pt"
        torch.save(src.state_dict(), path)
        cases.append(Case(name, "torch.nn.utils", path, make_model, answer(make_model, loaded),
                          status, why, forward=fwd, reference_output=fwd(reference or src)))

    def rest(state: dict[str, torch.Tensor], *drop: str) -> dict[str, torch.Tensor]:
        return {k: v for k, v in state.items() if k not in drop}

    old = perturb(seeded(lambda: _old(_wn_net()), 2)(), 3)
    old_state = old.state_dict()
    new = perturb(seeded(lambda: _new(_wn_net()), 4)(), 5)
    new_state = new.state_dict()
    plain = perturb(seeded(_wn_net, 6)(), 7)
    make_new, make_old = seeded(lambda: _new(_wn_net()), 1), seeded(lambda: _old(_wn_net()), 1)
    make_plain = seeded(_wn_net, 1)

    add("weight-norm-old-into-new", old, make_new,
        {**rest(old_state, G, V), O0: old_state[G], O1: old_state[V]}, "ok",
        "nn.utils.weight_norm's weight_g/weight_v into parametrizations.weight_norm: "
        "torch's own load hook reads them as original0/original1, the file loads as is")
    add("weight-norm-new-into-old", new, make_old,
        {**rest(new_state, O0, O1), G: new_state[O0], V: new_state[O1]}, "fixable",
        "parametrizations.weight_norm's original0/original1 into nn.utils.weight_norm: "
        "rename them weight_g/weight_v")
    add("weight-norm-old-into-plain", old, make_plain,
        {**rest(old_state, G, V),
         "0.weight": torch._weight_norm(old_state[V], old_state[G], 0)}, "fixable",
        "weight_g/weight_v into a plain Linear: weight = _weight_norm(v, g, 0), the value "
        "the weight_norm hook computes")
    add("weight-norm-new-into-plain", new, make_plain,
        {**rest(new_state, O0, O1), "0.weight": new[0].weight.detach().clone()}, "fixable",
        "original0/original1 into a plain Linear: weight = the parametrization's value")
    assert torch.equal(new[0].weight, torch._weight_norm(new_state[O1], new_state[O0], 0))
    # plain weights into a weight-normed model: what torch's right_inverse stores when
    # the weight is assigned through the parametrization (g = ||w|| per row, v = w)
    # (the reference for the forward pass is that weight-normed model: it computes
    # g * v / ||v||, which rounds differently from the plain w)
    target = make_new()
    with torch.no_grad():
        target[0].weight = plain[0].weight.detach().clone()  # through right_inverse
        target[0].bias.copy_(plain[0].bias)
        target[2].load_state_dict(plain[2].state_dict())
    inverse = target.state_dict()
    add("weight-norm-plain-into-new", plain, make_new,
        {**rest(plain.state_dict(), "0.weight"), O0: inverse[O0], O1: inverse[O1]}, "fixable",
        "a plain Linear's weight into parametrizations.weight_norm: original0 = "
        "norm_except_dim(w, 2, 0), original1 = w (the parametrization's right_inverse)",
        reference=target)
    return cases


BUILDERS: dict[str, Callable[[Path], list[Case]]] = {
    "timm": build_timm, "transformers": build_transformers, "lightning": build_lightning,
    "swa": build_swa, "distributed": build_distributed, "compile": build_compile,
    "prune": build_prune, "peft": build_peft, "weight-norm": build_weight_norm,
}


def build_cases(root: Path) -> dict[str, Case]:
    """Every case of ``PLANNED`` that can be built here (the others in ``SKIPPED``, or
    in ``FAILED`` when their group's builder raised)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    out: dict[str, Case] = {}
    with torch.random.fork_rng():
        for group, build in BUILDERS.items():
            folder = root / group
            folder.mkdir(parents=True, exist_ok=True)
            try:
                built = build(folder)
            except Exception as exc:  # the group's own tests fail with it, not the others
                for name in PLANNED[group]:
                    FAILED[name] = f"building the {group} cases raised {exc!r}"
                continue
            for case in built:
                assert case.name in PLANNED[group], case.name
                out[case.name] = case
            missing = set(PLANNED[group]) - set(out) - set(SKIPPED)
            assert not missing, f"{group}: planned but not built: {sorted(missing)}"
    return out
