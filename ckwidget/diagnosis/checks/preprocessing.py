"""Preprocessing: do the user's inputs look like the ones the checkpoint was trained on?

The checkpoint's recorded facts (mean/std, image size, vocabulary) are listed. With a
``sample_input``, a copy of the model holding the checkpoint's weights runs it once
(eval mode, no grad, hooks); the inputs reaching each BatchNorm layer are compared with
the running statistics it learned, and outputs that are non-finite or constant are
flagged. The user's model is never touched.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

from ...checkpoint import Finding, describe_tensor
from ..context import Context

FACT_KEYS = re.compile(
    r"(^|_)(mean|std|normali[sz]e|image_size|img_size|input_size|resolution|crop_size|"
    r"vocab_size|n_vocab|max_position_embeddings|max_length|max_seq_len|num_classes|"
    r"n_classes|num_labels|sample_rate|in_chans|channels|pixel_mean|pixel_std|"
    r"image_mean|image_std|interpolation)$", re.I)
FACT_ROOTS = ("hyper_parameters", "hparams", "config", "args", "cfg", "data",
              "datamodule_hyper_parameters", "preprocessing")
Z_LIMIT = 3.0     # per-channel mean offset, in running standard deviations
RATIO_LIMIT = 4.0  # input std over running std, either way


def recorded_facts(meta: Mapping[str, Any], limit: int = 40) -> dict[str, Any]:
    facts: dict[str, Any] = {}

    def walk(node: Any, path: str, depth: int) -> None:
        if len(facts) >= limit or depth > 4 or not isinstance(node, Mapping):
            return
        for k, v in list(node.items())[:500]:
            p = f"{path}.{k}" if path else str(k)
            if FACT_KEYS.search(str(k)) and isinstance(v, (int, float, str, list, tuple)):
                facts[p] = v
            elif isinstance(v, Mapping):
                walk(v, p, depth + 1)

    for root in FACT_ROOTS:
        if root in meta:
            walk(meta[root], root, 0)
    for k, v in meta.items():
        if FACT_KEYS.search(str(k)) and isinstance(v, (int, float, str, list)):
            facts[str(k)] = v
    return facts


def _what_to_compare(facts: Mapping[str, Any]) -> str:
    """The parts of a pipeline the recorded facts speak about: image size for vision
    configs, the tokenizer for text ones, normalisation for mean/std."""
    names = " ".join(facts).lower()
    parts = []
    if any(w in names for w in ("mean", "std", "normali")):
        parts.append("normalisation")
    if any(w in names for w in ("image", "img", "crop", "resolution", "input_size",
                                "interpolation")):
        parts.append("image size")
    if any(w in names for w in ("vocab", "max_position", "max_length", "max_seq")):
        parts.append("tokenizer and sequence length")
    if "num_classes" in names:
        parts.append("number of classes")
    return ", ".join(parts) or "inputs"


def check(ctx: Context) -> list[Finding]:
    out: list[Finding] = []
    facts = recorded_facts(ctx.facts)
    norm_layers = _norm_layers(ctx.model.module_names, ctx.model.module_objects)
    if facts:
        shown = "; ".join(f"{k} = {_short(v)}" for k, v in list(facts.items())[:12])
        out.append(Finding(
            "preprocessing", "info",
            f"The checkpoint records how its inputs looked: {shown}. Compare these with your "
            f"data pipeline ({_what_to_compare(facts)}).", details={"facts": facts}))
    if ctx.sample_input is None:
        if norm_layers:
            out.append(Finding(
                "preprocessing", "info",
                f"The model has {len(norm_layers)} normalisation "
                f"layer{'s' if len(norm_layers) != 1 else ''} with learned input "
                "statistics. Pass sample_input= (a real batch from your pipeline) to compare "
                "what reaches them with what the checkpoint saw in training, and to catch "
                "non-finite or constant outputs.", details={"layers": norm_layers[:50]}))
        return out
    out += _forward_check(ctx)
    return out


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _norm_layers(names: list[str], modules: list[Any]) -> list[str]:
    """Batch-norm layers that keep running statistics. Types are tested once each, not
    once per module: a model may have 100,000 modules and a handful of types."""
    from torch.nn.modules.batchnorm import _BatchNorm

    norms = {t for t in set(map(type, modules)) if issubclass(t, _BatchNorm)}
    if not norms:
        return []
    return [n for n, m in zip(names, modules) if type(m) in norms and m.track_running_stats]


def _forward_check(ctx: Context) -> list[Finding]:
    import torch
    from torch.nn.modules.batchnorm import _BatchNorm

    model = ctx.model.module
    if model is None:
        return [_cannot("the model was given as a state dict, not a module")]
    if ctx.model.is_meta:
        return [_cannot("the model is on the meta device and holds no values to run")]
    if ctx.blockers:
        return [_cannot("the checkpoint itself cannot be loaded yet (see the other findings)")]
    try:
        twin = copy.deepcopy(model)
        loaded = _load_weights(ctx, twin)
    except Exception as exc:  # say why, never a traceback
        return [_cannot(f"the checkpoint's weights could not be put into a copy of the model "
                        f"({type(exc).__name__}: {str(exc)[:160]})")]
    twin.eval()
    seen: dict[str, dict[str, float]] = {}
    bad_outputs: list[tuple[str, str]] = []
    handles = []

    def pre_hook(name: str, mod: Any):
        def hook(_m: Any, args: tuple) -> None:
            if name in seen or not args or not isinstance(args[0], torch.Tensor):
                return
            x = args[0].detach().float()
            if x.dim() < 2 or mod.running_mean is None:
                return
            flat = x.transpose(0, 1).reshape(x.shape[1], -1)
            mean, std = flat.mean(1), flat.std(1, unbiased=False)
            rm = mod.running_mean.detach().float()
            rs = (mod.running_var.detach().float() + mod.eps).sqrt()
            z = ((mean - rm).abs() / rs).median().item()
            ratio = (std / rs).median().item()
            seen[name] = {"mean_offset_in_std": z, "std_ratio": ratio,
                          "input_mean": mean.mean().item(), "input_std": std.mean().item(),
                          "running_mean": rm.mean().item(), "running_std": rs.mean().item()}
        return hook

    def out_hook(name: str):
        def hook(_m: Any, _args: tuple, output: Any) -> None:
            if len(bad_outputs) >= 5 or not isinstance(output, torch.Tensor):
                return
            if not output.is_floating_point() or output.numel() == 0:
                return
            if not torch.isfinite(output).all():
                bad_outputs.append((name, "non-finite"))
            elif output.numel() > 1 and bool((output == output.reshape(-1)[0]).all()):
                bad_outputs.append((name, "constant"))
        return hook

    for name, mod in twin.named_modules():
        if isinstance(mod, _BatchNorm) and mod.track_running_stats:
            handles.append(mod.register_forward_pre_hook(pre_hook(name, mod)))
        if not list(mod.children()):
            handles.append(mod.register_forward_hook(out_hook(name)))
    sample = ctx.sample_input
    try:
        with torch.no_grad():
            if isinstance(sample, Mapping):
                twin(**sample)
            elif isinstance(sample, (tuple, list)):
                twin(*sample)
            else:
                twin(sample)
    except Exception as exc:
        return [_cannot(f"the forward pass on sample_input failed ({type(exc).__name__}: "
                        f"{str(exc)[:200]})")]
    finally:
        for h in handles:
            h.remove()
    out: list[Finding] = []
    off = {n: s for n, s in seen.items()
           if s["mean_offset_in_std"] > Z_LIMIT
           or not (1 / RATIO_LIMIT <= s["std_ratio"] <= RATIO_LIMIT)}
    if off:
        first = next(iter(off))
        s = off[first]
        out.append(Finding(
            "preprocessing", "warning",
            f"The sample does not look like the training data: at {first!r}, the first "
            f"normalisation layer it reaches, inputs have mean {s['input_mean']:.3g} and std "
            f"{s['input_std']:.3g}, but the layer learned mean {s['running_mean']:.3g} and "
            f"std {s['running_std']:.3g} (offset {s['mean_offset_in_std']:.1f} std, scale "
            f"x{s['std_ratio']:.2g}). Check the input normalisation (e.g. pixels in 0..255 "
            "instead of normalised with the training mean/std), channel order and units.",
            keys=[f"{n}.running_mean" for n in off],
            details={"layers": off, "checked": list(seen), "loaded": loaded}))
    elif seen:
        out.append(Finding(
            "preprocessing", "info",
            f"The sample's statistics match what the checkpoint's {len(seen)} normalisation "
            "layers learned.", details={"layers": seen}))
    if bad_outputs:
        lines = ", ".join(f"{n or '<model>'} ({why})" for n, why in bad_outputs)
        out.append(Finding(
            "preprocessing", "warning",
            f"With the checkpoint's weights and your sample, these layers give non-finite or "
            f"constant outputs: {lines}. Check the inputs' range and dtype, and the weights' "
            "non-finite values.", details={"outputs": bad_outputs}))
    return out


def _cannot(why: str) -> Finding:
    return Finding("preprocessing", "info",
                   f"The sample_input check did not run: {why}. Fix that, then diagnose again.")


def _load_weights(ctx: Context, twin: Any) -> int:
    """Load the checkpoint into ``twin`` through the plan's dict fixes; count loaded."""
    sd = ctx.ckpt.state_dict(ctx.entry, map_location="cpu")
    fixes = [f for f in ctx.plan_fixes if not f.load_time]
    infos = {k: describe_tensor(v) for k, v in twin.state_dict(keep_vars=True).items()}
    for fix in fixes:
        sd = fix.transform(sd, infos)
    own = twin.state_dict()
    usable = {k: v for k, v in sd.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    twin.load_state_dict(usable, strict=False)
    return len(usable)
