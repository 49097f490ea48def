"""Architecture: how the checkpoint's keys line up with the model's, as findings.

Turns the alignment into findings (nested, prefix, renamed, transposed, shape-mismatch,
missing-keys, unexpected-keys, tied-weights, dtype), repeated layers grouped, each with
the fix that repairs it.
"""

from __future__ import annotations

from ...checkpoint import Finding
from ...fixes.kinds import (
    CastDtype,
    DropKeys,
    FoldWeightNorm,
    FuseKeys,
    Reshape,
    ResizeCopy,
    SelectEntry,
    SplitKeys,
    Transpose,
    UnfoldWeightNorm,
)
from ...formatting import group_keys, shape_text, summarise_keys
from ..align import OPTIONAL_LEAVES, KeyStep, module_role, rename_lines
from ..contents import is_lora_key, mostly_lora, mostly_optimizer_state, quantized_layers
from ..context import NOT_YET, Context
from ..keys import leaf_of
from ..parametrizations import describe as describe_parametrized

KNOWN_PREFIXES = {
    "module.": "saved from a DataParallel / DistributedDataParallel wrapper",
    "_orig_mod.": "saved from a torch.compile wrapper",
    "model.": "saved from a wrapper that holds the network as .model (Lightning, timm EMA)",
    "module.module.": "saved from a doubly wrapped DataParallel model",
    "model._orig_mod.": "saved from a compiled model inside a Lightning-style wrapper",
    "base_model.model.": "saved from a PEFT (LoRA) wrapper",
    "net.": "saved from a wrapper that holds the network as .net",
    "encoder.": "saved from a wrapper that holds the network as .encoder",
}
# transformers' base_model_prefix of common architectures: a task model
# (BertForSequenceClassification) keeps its base model under it, and from_pretrained
# adds or strips it by itself
HF_BASE_PREFIXES = frozenset(f"{p}." for p in (
    "bert", "roberta", "xlm_roberta", "distilbert", "albert", "electra", "deberta",
    "transformer", "gpt_neox", "model", "vit", "swin", "convnext", "wav2vec2", "t5",
    "bart", "mpnet", "camembert", "longformer", "funnel", "layoutlm", "beit", "deit",
))
# heads a fine-tuned task model adds on top of its base model
TASK_HEADS = ("classifier.", "score.", "qa_outputs.", "cls.", "lm_head.", "pooler.",
              "pre_classifier.")
PRECISION = {"float64": 4, "float32": 3, "bfloat16": 2, "float16": 2,
             "float8_e4m3fn": 1, "float8_e5m2": 1}


def check(ctx: Context) -> list[Finding]:
    out: list[Finding] = []
    a = ctx.alignment
    if ctx.entry:
        out.append(Finding(
            "nested", "error",
            f"The weights are not at the top level of the file: {ctx.entry_reason} "
            f"Load them from checkpoint[{_path_expr(ctx.entry)}].",
            keys=[ctx.full_key(k) for k in list(ctx.entry_infos)[:1000]],
            fixes=[SelectEntry(ctx.entry)],
            details={"entry": ctx.entry, "candidates": list(ctx.ckpt.candidates)},
        ))
    for step in a.steps:
        out.append(_step_finding(ctx, step))
    out += _hook_renamed(ctx)
    out += _folds(ctx)
    out += _fused_and_split(ctx)
    out += _quantized(ctx)
    out += _transposed(ctx)
    out += _mismatched(ctx)
    out += _missing(ctx)
    out += _unexpected(ctx)
    out += _dtypes(ctx)
    return out


def _hook_renamed(ctx: Context) -> list[Finding]:
    """Keys the model's own load hook renames: they load as is, and saying so explains
    why a file whose names differ from ``state_dict()``'s still loads."""
    a = ctx.alignment
    if not a.hook_renamed:
        return []
    old = [a.pairs.get(mk, before) for mk, before in a.hook_renamed.items()]
    return [Finding(
        "renamed", "info",
        f"{len(old)} checkpoint keys use the names of torch's old weight_norm "
        f"({summarise_keys(old)}); the model uses torch.nn.utils.parametrizations."
        "weight_norm, whose load hook reads them as parametrizations.<name>.original0 and "
        "original1, so they load as is with model.load_state_dict.",
        keys=old, details={"renamed_by_model": dict(a.hook_renamed)})]


def _folds(ctx: Context) -> list[Finding]:
    a = ctx.alignment
    out = []
    if a.unfolds:
        weights = [w for w, _, _, _ in a.unfolds]
        out.append(Finding(
            "renamed", "error",
            f"The model wraps {len(weights)} layers in weight norm (a magnitude g and a "
            f"direction v for each weight), and the file holds their plain weights "
            f"({summarise_keys(weights)}): saved without weight norm, or after "
            "remove_weight_norm. Split each weight as weight_norm does when it wraps a "
            "layer: g = ||w||, v = w.",
            keys=[k for _, g, v, _ in a.unfolds for k in (g, v)],
            fixes=[UnfoldWeightNorm(tuple(a.unfolds))],
            details={"unfolds": [[w, g, v, list(s)] for w, g, v, s in a.unfolds]}))
    if not a.folds:
        return out
    targets = [mk for _, _, mk in a.folds]
    pairs = [f"{g} + {v} -> {mk}" for g, v, mk in a.folds]
    out.append(Finding(
        "renamed", "error",
        f"{len(a.folds)} weights were saved with weight norm, as a magnitude and a "
        f"direction ({'; '.join(pairs[:3])}{' and more' if len(pairs) > 3 else ''}), and the "
        "model holds them as plain tensors (built without weight_norm, or after "
        "remove_weight_norm). Fold each pair into its weight: weight = g * v / ||v||, what "
        "weight norm computes.",
        keys=targets, fixes=[FoldWeightNorm(tuple(a.folds))],
        details={"folds": [list(f) for f in a.folds]}))
    return out


def _what_else(ctx: Context) -> str:
    """What the checkpoint holds instead of this model's weights, as the end of a
    sentence: a LoRA adapter, an optimizer's state, or another model's weights."""
    keys = list(ctx.alignment.ckpt)
    if mostly_lora(keys):
        n = sum(1 for k in keys if is_lora_key(k))
        return (f"the file holds a LoRA adapter ({n} adapter tensors such as "
                f"{next(k for k in keys if is_lora_key(k))}), not the model's own weights. "
                "Load the base model's weights first, then this adapter with the library "
                "that trained it (PEFT: PeftModel.from_pretrained(model, adapter_dir)), or "
                "merge it into the weights.")
    if mostly_optimizer_state(keys):
        return ("the file holds an optimizer's state (per-parameter moments such as "
                f"{keys[0]}), not model weights. Pass it to optimizer.load_state_dict; the "
                "weights are in the model's own file (or another entry of a training "
                "checkpoint).")
    return ("this checkpoint belongs to a different model (or the wrong entry was chosen). "
            "Check the model class and its config, or pass entry=.")


def _fused_and_split(ctx: Context) -> list[Finding]:
    a = ctx.alignment
    out = []
    if a.fused:
        targets = [mk for _, mk in a.fused]
        lines = [f"{' + '.join(parts)} -> {mk}" for parts, mk in a.fused]
        out.append(Finding(
            "renamed", "error",
            f"The model holds its attention's query, key and value projections in one tensor "
            f"each ({summarise_keys(targets)}), and the file stores them apart "
            f"({'; '.join(lines[:3])}{' and more' if len(lines) > 3 else ''}). Concatenate "
            "them in query, key, value order.",
            keys=targets, fixes=[FuseKeys(tuple(a.fused))],
            details={"fused": [[list(p), mk] for p, mk in a.fused]}))
    if a.split:
        sources = [source for source, _ in a.split]
        targets = [mk for _, parts in a.split for mk, _ in parts]
        out.append(Finding(
            "renamed", "error",
            f"The file holds fused query, key and value projections "
            f"({summarise_keys(sources)}) that the model keeps apart "
            f"({summarise_keys(targets)}). Split each by the model's sizes, in query, key, "
            "value order.",
            keys=targets, fixes=[SplitKeys(tuple(a.split))],
            details={"split": [[s, [list(p) for p in parts]] for s, parts in a.split]}))
    return out


_RUNNING_STATS = ("running_mean", "running_var", "num_batches_tracked")
_QUANTIZED_FORMS = {
    "bitsandbytes 8-bit": "int8 codes with per-row scales (SCB)",
    "bitsandbytes 4-bit": "packed 4-bit codes with block scales (absmax, quant_map)",
    "GPTQ/AWQ": "packed integer codes with zero points and scales (qweight, qzeros, scales)",
}


def _quantization(ctx: Context) -> tuple[str, dict[str, list[str]]] | None:
    """The file's quantized layers (by their names in the model's namespace), found once
    per diagnosis."""
    if ctx.quantized is NOT_YET:
        a = ctx.alignment
        ctx.quantized = (quantized_layers(a.unexpected_mapped.values())
                         if a.unexpected else None)
    return ctx.quantized


def _quantized_weights(ctx: Context) -> list[str]:
    """Model weights that the quantized layers' codes land on."""
    found = _quantization(ctx)
    if found is None:
        return []
    pairs = ctx.alignment.pairs
    return [w for w in (f"{layer}.weight" if layer else "weight" for layer in found[1])
            if w in pairs]


def _quantized(ctx: Context) -> list[Finding]:
    found = _quantization(ctx)
    if found is None:
        return []
    scheme, layers = found
    forms = "; ".join(_QUANTIZED_FORMS[s] for s in scheme.split(" and "))
    codes = _quantized_weights(ctx)
    ctx.codes = codes  # weights that would get codes: not counted as loading
    drop = [k for keys in layers.values() for k in keys] + codes
    return [Finding(
        "dtype", "error",
        f"The checkpoint is quantized ({scheme}): {len(layers)} layers store {forms} in "
        f"place of their weights ({summarise_keys(list(layers))}), and the model is not "
        "quantized. load_state_dict would copy the codes as if they were values. Load the "
        "file the way it was saved (transformers' from_pretrained with its quantization "
        "config; auto-gptq or autoawq for GPTQ/AWQ; dequantize() then gives float weights), "
        "or use the original floating-point checkpoint. The plan loads the other tensors and "
        "leaves the quantized layers at their initial values.",
        keys=list(layers), fixes=[DropKeys(tuple(dict.fromkeys(drop)), "quantized layers")],
        details={"scheme": scheme, "layers": list(layers)})]


def _hooks_note(ctx: Context) -> str:
    """A sentence for missing or unexpected keys when modules run load hooks ckwidget
    does not know (they may rename keys before torch matches them), or ""."""
    unknown = ctx.model.load_hooks.unknown
    if not unknown:
        return ""
    shown = ", ".join(f"{hook} on {mod or 'the model'}" for mod, hook in unknown[:3])
    more = f" and {len(unknown) - 3} more" if len(unknown) > 3 else ""
    return (f" Note: the model runs its own load_state_dict hooks ({shown}{more}), which "
            "may rename keys before torch matches them; these counts use the names "
            "model.state_dict() gives.")


def _path_expr(entry: str) -> str:
    return "][".join(repr(p) for p in entry.split("."))


def _affected(ctx: Context, step: KeyStep) -> list[str]:
    """Checkpoint keys (as named in the file's entry) that this step renames."""
    a = ctx.alignment
    return a.step_keys[a.steps.index(step)]


def _step_finding(ctx: Context, step: KeyStep) -> Finding:
    keys = _affected(ctx, step)
    fix = step.fix()
    total = len(ctx.entry_infos)
    if step.kind == "strip-prefix":
        why = KNOWN_PREFIXES.get(step.prefix)
        if why is None and step.prefix in HF_BASE_PREFIXES and _hugging_face(ctx):
            why = (f"transformers' base_model_prefix: a task model keeps its base model "
                   f"under {step.prefix!r}, and from_pretrained strips or adds it by "
                   "itself: <ModelClass>.from_pretrained(folder) is the one-line alternative")
        why = why or "saved from a wrapper around the network"
        return Finding(
            "prefix", "error",
            f"{_count(len(keys), total)} checkpoint keys start with {step.prefix!r} "
            f"({why}); the model's keys do not. Strip the prefix.",
            keys=keys, fixes=[fix], details={"prefix": step.prefix, "side": "checkpoint"})
    if step.kind == "add-prefix":
        return Finding(
            "prefix", "error",
            f"The model's keys start with {step.prefix!r} but the checkpoint's do not "
            "(the weights were saved from the inner network). Add the prefix.",
            keys=keys, fixes=[fix], details={"prefix": step.prefix, "side": "model"})
    if step.origin == "prefix":
        old, new = _swap_parts(step)
        if old is not None and (len(keys) * 2 >= total or old.count(".") > 1):
            return Finding(
                "prefix", "error",
                f"{_count(len(keys), total)} checkpoint keys start with {old!r} where the "
                f"model's start with {new!r}. Replace the prefix.",
                keys=keys, fixes=[fix], details={"prefix": old, "replacement": new})
        if old is not None:
            return Finding(
                "renamed", "error",
                f"Renamed module: the checkpoint's {old[:-1]!r} is the model's "
                f"{new[:-1]!r} (same tensors, same shapes). Rename the keys.",
                keys=keys, fixes=[fix], details={"renames": {old[:-1]: new[:-1]}})
    lines = ctx.alignment.rename_lines
    why = ""
    if ctx.alignment.parametrized:
        why = " " + describe_parametrized(ctx.alignment.parametrized)
    details: dict = {"renames": lines}
    searched = ctx.alignment.searched
    if searched:
        found = rename_lines(searched)
        details["searched"] = found
        which = ("These pairings were" if len(found) >= len(lines)
                 else f"{len(found)} of these {len(lines)} pairings were")
        why += (f" {which} found among the tensors nothing else paired: the same roles "
                "(weight, bias, running statistics), shapes equal up to a transpose or "
                "size-1 dimensions (see the transposed and shape findings), modules in the "
                "same order, token embedding and output head by their names.")
    if ctx.alignment.by_order:
        guessed = ctx.alignment.by_order
        details["by_order"] = guessed
        why += (" Which is which among modules alike rests on their order in the file "
                f"alone for {'; '.join(guessed[:4])}"
                + (f" and {len(guessed) - 4} more" if len(guessed) > 4 else "")
                + ": nothing in their names or shapes tells them apart; check these "
                "before trusting the result.")
    return Finding(
        "renamed", "error",
        "Renamed modules or tensors ("
        + ("same order, different names, shapes equal or transposed"
           if searched or ctx.alignment.transposed
           else "same shapes, different names") + "): "
        + "; ".join(lines[:8]) + (f" and {len(lines) - 8} more" if len(lines) > 8 else "")
        + "." + why + " Rename the keys.",
        keys=keys, fixes=[fix], details=details)


def _swap_parts(step: KeyStep) -> tuple[str | None, str | None]:
    if step.mapping or len(step.patterns) != 1:
        return None, None
    rx, repl = step.patterns[0]
    if not rx.startswith("^") or rx.startswith("^(?!"):
        return None, None
    import re

    old = re.sub(r"\\(.)", r"\1", rx[1:])
    return old, repl.replace("\\\\", "\\")


def _hugging_face(ctx: Context) -> bool:
    """Whether the file comes from transformers (a config.json beside it, its metadata,
    or a save_pretrained folder)."""
    meta = ctx.ckpt.metadata
    if meta.get("transformers_version") or meta.get("hf_config") or meta.get("index"):
        return True
    path = ctx.ckpt.path
    if path is None:
        return False
    folder = path if path.is_dir() else path.parent
    return (folder / "config.json").is_file()


def _count(n: int, total: int) -> str:
    return "All" + f" {n}" if n == total else f"{n} of {total}"


def _transposed(ctx: Context) -> list[Finding]:
    a = ctx.alignment
    out = _orientation_unknown(ctx)
    if not a.transposed:
        return out
    square = set(a.square_transposed)
    lines = [f"{line}: transposed" for line in group_keys(k for k in a.transposed
                                                          if k not in square)]
    lines += [f"{line}: square, transposed like its siblings"
              for line in group_keys(k for k in a.transposed if k in square)]
    shown = "; ".join(lines[:8]) + (f" and {len(lines) - 8} more" if len(lines) > 8 else "")
    return [Finding(
        "transposed", "error",
        f"{len(a.transposed)} 2-D weights are stored transposed ((in, out), as Hugging Face's "
        f"Conv1D keeps them; nn.Linear expects (out, in)): {shown}. Transpose them.",
        keys=list(a.transposed), fixes=[Transpose(tuple(a.transposed))],
        details={"lines": lines, "square": sorted(square)},
    ), *out]


def _orientation_unknown(ctx: Context) -> list[Finding]:
    """Square weights in a file that stores other weights transposed, with nothing to
    say which way they are stored: left out of the plan (never loaded silently either
    way), the transpose offered as the alternative."""
    a = ctx.alignment
    keys = a.orientation_unknown
    if not keys:
        return []
    stored = [a.pairs.get(k, k) for k in keys]
    drop = DropKeys(tuple(keys), "square weights of unknown orientation")
    flip = Transpose(tuple(keys))
    return [Finding(
        "transposed", "error",
        f"Orientation unknown: {len(keys)} square 2-D weights ({summarise_keys(keys)}, "
        f"stored as {summarise_keys(stored)}) cannot show by their shape whether they are "
        "stored transposed, and the file stores other weights transposed while nothing "
        "tells about these: no non-square weight of their own layer family, no Conv1D "
        "naming, no majority of their module type loading as is. The plan leaves them "
        "out, so they keep their initial values; if they were saved from Conv1D-style "
        "(in, out) layers like their transposed siblings, transpose them (the alternative "
        "fix), else load them as they are.",
        keys=list(keys), fixes=[drop, flip],
        details={"orientation_unknown": list(keys), "stored": stored,
                 "alternatives": [flip]},
    )]


def _mismatched(ctx: Context) -> list[Finding]:
    a = ctx.alignment
    by_reason: dict[str, list[str]] = {}
    for k in a.mismatched:
        by_reason.setdefault(a.reasons[k], []).append(k)
    out = []
    for reason, keys in by_reason.items():
        detail = "; ".join(f"{k}: {shape_text(a.ckpt[a.pairs[k]].shape)} in the file, "
                           f"{shape_text(ctx.model.infos[k].shape)} in the model"
                           for k in keys[:4])
        if len(keys) > 4:
            detail += f" and {len(keys) - 4} more"
        grouped = summarise_keys(keys)
        if reason == "zero-size":
            out.append(Finding(
                "shape-mismatch", "error",
                f"{len(keys)} tensors are empty in the file ({grouped}): this is one rank's "
                "partition of a DeepSpeed ZeRO-3 checkpoint, not the full weights. Gather them "
                "with DeepSpeed's zero_to_fp32.py (or save with "
                "stage3_gather_16bit_weights_on_model_save) and load that file.",
                keys=keys, details={"reason": reason, "shapes": detail}))
        elif reason == "reshape":
            shapes = tuple((k, tuple(ctx.model.infos[k].shape)) for k in keys)
            out.append(Finding(
                "shape-mismatch", "error",
                f"{len(keys)} {'tensor holds' if len(keys) == 1 else 'tensors hold'} the "
                "model's values in another shape that differs only in size-1 dimensions "
                f"({detail}): a 1x1 convolution for a linear layer, "
                "or a token or scale kept with extra dimensions. Reshape them; the values "
                "stay as they are.",
                keys=keys, fixes=[Reshape(shapes)], details={"reason": reason}))
        elif reason == "positions":
            out.append(Finding(
                "shape-mismatch", "warning",
                f"Position embeddings for another image size or sequence length ({detail}). "
                "Interpolate them to the model's grid (timm: resample_abs_pos_embed or "
                "dynamic_img_size; Hugging Face ViT: interpolate_pos_encoding=True), or build "
                "the model for the checkpoint's size. The plan skips them, so they keep the "
                "model's initial values.",
                keys=keys, fixes=[DropKeys(tuple(keys), "positions for another size")],
                details={"reason": reason}))
        elif reason == "head":
            out.append(Finding(
                "shape-mismatch", "warning",
                f"The output head changed ({detail}): the checkpoint was trained for a "
                "different number of classes. The plan skips the head, which keeps its "
                "initial values for you to train; copying the overlapping rows is the "
                "alternative.",
                keys=keys, fixes=[DropKeys(tuple(keys), "output head changed"),
                                  ResizeCopy(tuple(keys))],
                details={"reason": reason, "alternatives": [ResizeCopy(tuple(keys))]}))
        elif reason == "vocab":
            rows = [(a.ckpt[a.pairs[k]].shape[0], ctx.model.infos[k].shape[0]) for k in keys]
            padded = any(max(r) % 64 == 0 and abs(r[0] - r[1]) < 128 for r in rows)
            how = "padded to a multiple of 64" if padded else "resized (tokens added or removed)"
            out.append(Finding(
                "shape-mismatch", "warning",
                f"The vocabulary was {how} ({detail}). The plan copies the shared rows; "
                "new rows keep the model's initial values.",
                keys=keys, fixes=[ResizeCopy(tuple(keys)), DropKeys(tuple(keys), "resized")],
                details={"reason": reason, "alternatives": [DropKeys(tuple(keys), "resized")]}))
        else:
            what = ("The kernel size differs" if reason == "kernel"
                    else "The model was built with a different configuration")
            out.append(Finding(
                "shape-mismatch", "error",
                f"{what} ({detail}). These {len(keys)} model tensors cannot take the "
                f"checkpoint's values and keep their initial values ({grouped}); check the "
                "model's constructor arguments against the checkpoint's config.",
                keys=keys, fixes=[DropKeys(tuple(keys), "shape differs")],
                details={"reason": reason}))
    return out


def _missing(ctx: Context) -> list[Finding]:
    a = ctx.alignment
    out = []
    if a.tied_served:
        lines = [f"{k} (tied to {v})" for k, v in list(a.tied_served.items())[:6]]
        out.append(Finding(
            "tied-weights", "info",
            f"{len(a.tied_served)} model tensors share storage with another tensor and are "
            f"not stored separately in the file: {', '.join(lines)}. They receive their "
            "partner's value; load with strict=False so torch does not count them as missing.",
            keys=list(a.tied_served),
            fixes=[DropKeys((), "tied weights load through their partner")],
            details={"tied": dict(a.tied_served)}))
    missing = [k for k in a.missing if k not in a.tied_served]
    if not missing:
        return out
    total = len(ctx.model.infos)
    loadable = len(a.loadable) + len(a.transposed) + sum(
        1 for k in a.mismatched if a.reasons[k] in ("vocab", "reshape"))
    if loadable == 0 and total:
        out.append(Finding(
            "missing-keys", "error",
            f"None of the model's {total} tensors is in the checkpoint, even allowing for "
            f"prefixes and renames: {_what_else(ctx)}" + _hooks_note(ctx),
            keys=missing, details={"model_example": missing[:5],
                                   "checkpoint_example": list(a.ckpt)[:5]}))
        return out
    counters = all(leaf_of(k) == "num_batches_tracked" for k in missing)
    statistics = not counters and all(leaf_of(k) in _RUNNING_STATS for k in missing)
    if mostly_lora(missing):
        msg = (f"{len(missing)} model tensors are LoRA adapter weights "
               f"({summarise_keys(missing)}) and the file does not hold them: it is the base "
               "model's checkpoint, and the model is already wrapped with adapters. The plan "
               "loads it with strict=False, the adapters keeping their initial values (a "
               "fresh fine-tune starts so); to use trained adapters, load their own file next "
               "(PEFT: set_peft_model_state_dict, or PeftModel.from_pretrained on the base "
               "model).")
        severity = "warning"
    elif statistics:
        msg = (f"{len(missing)} BatchNorm running statistics are not in the file "
               f"({summarise_keys(missing)}): it was saved from normalisation layers that "
               "keep none (track_running_stats=False, or GroupNorm/LayerNorm in their place). "
               "In eval mode the model would normalise with its initial statistics (mean 0, "
               "variance 1), not the training data's. The plan loads the rest with "
               "strict=False; run some training batches through the model in train mode to "
               "estimate them, or build the layers as the checkpoint's were.")
        severity = "warning"
    elif counters:
        msg = (f"{len(missing)} BatchNorm counters (num_batches_tracked) are not in the file "
               "(saved by an older torch); they only count steps. Load with strict=False.")
        severity = "warning"
    else:
        msg = (f"{len(missing)} model tensors are not in the checkpoint and would keep their "
               f"initial values: {summarise_keys(missing)}. The plan loads the rest with "
               "strict=False; train or initialise these, or find a checkpoint that has them."
               + _tied_in_file(ctx, missing))
        severity = "error"
    msg += _hooks_note(ctx)
    keep = DropKeys((), f"{len(missing)} model tensors keep their initial values")
    out.append(Finding("missing-keys", severity, msg, keys=missing, fixes=[keep],
                       details={"grouped": group_keys(missing)}))
    return out


def _legacy_buffer(key: str, shape: tuple[int, ...]) -> bool:
    """A buffer one layout of a module saves and another does not, holding no learned
    values: the optional leaves alignment pairs around, or a causal mask (1, 1, n, n)."""
    leaf = leaf_of(key)
    return leaf in OPTIONAL_LEAVES or (leaf == "bias" and len(shape) == 4
                                       and shape[:2] == (1, 1) and shape[2] == shape[3])


def _tied_in_file(ctx: Context, missing: list[str]) -> str:
    """A sentence when a missing output head has the shape of a token embedding the file
    serves: the file was saved from a model that ties the two (GPT-2 stores wte once)."""
    a, infos = ctx.alignment, ctx.model.infos
    heads = [k for k in missing[:64] if module_role(k.rpartition(".")[0]) == "head"]
    for head in heads:
        token = next((k for k, ck in a.pairs.items()
                      if module_role(k.rpartition(".")[0]) == "token"
                      and a.status.get(k) in ("match", "renamed", "dtype-differs")
                      and infos[k].shape == infos[head].shape), None)
        if token is not None:
            return (f" The file holds no separate {head}: it was saved from a model that "
                    f"ties its output head to the token embedding ({a.pairs[token]}, which "
                    f"loads into {token}), as GPT-2 does. Tie them in the model before "
                    f"loading (model.{head} = model.{token}), or the head keeps its initial "
                    "values.")
    return ""


def _unexpected(ctx: Context) -> list[Finding]:
    a = ctx.alignment
    if not a.unexpected:
        return []
    mapped = [a.unexpected_mapped[k] for k in a.unexpected]
    if _quantization(ctx) is not None:
        what = ("Most are the quantization's codes and scales (see the dtype finding); the "
                "plan leaves them out.")
    elif mostly_lora(a.unexpected):
        what = ("They are LoRA adapter weights, which a model without adapters has no "
                "place for; the plan loads the rest and leaves them out. To use them, merge "
                "them into the weights (PEFT: merge_and_unload) or load into the model "
                "wrapped with the same adapter config.")
    elif all(leaf_of(k) in _RUNNING_STATS for k in a.unexpected):
        what = ("They are BatchNorm running statistics for layers the model builds without "
                "them (another normalisation, or track_running_stats=False); the plan leaves "
                "them out. Check that the model's normalisation layers are the checkpoint's.")
    elif all(_legacy_buffer(k, a.ckpt[k].shape) for k in a.unexpected):
        what = ("They are buffers an older layout of the same modules kept, with no learned "
                "values (GPT-2's causal mask attn.bias and masked_bias, which newer "
                "transformers versions compute instead of saving; counters); the plan "
                "leaves them out.")
    elif all(str(m).startswith(TASK_HEADS) for m in mapped):
        what = ("They are the task head of a fine-tuned model (a classifier or an output "
                "layer on top of the base model this model is); the plan leaves them out. "
                "To use the head, load into the task model (e.g. "
                "AutoModelForSequenceClassification) instead.")
    elif mostly_optimizer_state(a.unexpected):
        what = ("They are an optimizer's state (per-parameter moments and steps), not "
                "weights; the plan leaves them out. Load them into the optimizer with "
                "optimizer.load_state_dict.")
    else:
        what = ("They are extra layers (an auxiliary head, an EMA copy, a bigger variant "
                "of the model); the plan leaves them out.")
    return [Finding(
        "unexpected-keys", "warning",
        f"{len(a.unexpected)} checkpoint tensors have no place in the model: "
        f"{summarise_keys(a.unexpected)}. {what}" + _hooks_note(ctx),
        keys=list(a.unexpected),
        fixes=[DropKeys(tuple(dict.fromkeys(mapped)), "not in the model")],
        details={"grouped": group_keys(a.unexpected)})]


def _dtypes(ctx: Context) -> list[Finding]:
    a = ctx.alignment
    groups: dict[tuple[str, str], list[str]] = {}
    codes = set(_quantized_weights(ctx))  # not values: the quantization finding says so
    for k in a.dtype_differs:
        if k in codes:
            continue
        groups.setdefault((a.ckpt[a.pairs[k]].dtype, ctx.model.infos[k].dtype), []).append(k)
    out = []
    for (src, dst), keys in groups.items():
        lossy, how = _cast_effect(src, dst)
        fixes = []
        if ctx.model.is_meta:
            fixes = [CastDtype(dst, tuple(keys))]
            how += (" The model is on the meta device, so loading assigns the file's tensors "
                    f"as they are: cast them to {dst} first.")
        out.append(Finding(
            "dtype", "warning" if lossy or fixes else "info",
            f"{len(keys)} tensor{'s are' if len(keys) != 1 else ' is'} stored as {src} "
            f"and the model uses {dst} "
            f"({summarise_keys(keys, 4)}): {how}",
            keys=keys, fixes=fixes, details={"from": src, "to": dst, "lossy": lossy}))
    return out


def _cast_effect(src: str, dst: str) -> tuple[bool, str]:
    fs, fd = src in PRECISION, dst in PRECISION
    if fs and fd:
        if {src, dst} == {"float16", "bfloat16"}:
            return True, ("load_state_dict converts silently, and float16 and bfloat16 trade "
                          "range for precision, so values can round or overflow.")
        if PRECISION[dst] >= PRECISION[src]:
            return False, "load_state_dict widens them silently and exactly."
        return True, ("load_state_dict narrows them silently and they lose precision; "
                      "make the model use the file's dtype if that matters.")
    if fs and not fd:
        return True, "load_state_dict truncates the fractions silently."
    if src == "bool" or dst == "bool":
        return False, "load_state_dict converts silently."
    return False, "load_state_dict converts them silently."
