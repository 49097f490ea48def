"""What training libraries leave in a state dict for a model without them, as findings:
a PEFT LoRA model's full state dict (merged as ``merge_and_unload()`` does), and a model
pruned with ``torch.nn.utils.prune`` and saved without ``prune.remove`` (folded).

The layouts are found with the other joins (``diagnosis/joins.py``): here they become
findings with their fixes. LoRA's scaling, ``lora_alpha / r``, needs ``lora_alpha``,
which a state dict does not hold: it is read from the adapter config (the folder's
``adapter_config.json`` as the reader records it, one beside the file, or
``ckpt.metadata["lora_alpha"]`` set by hand). Without it there is no merge in the plan:
any guess of the scale gives a model that runs and is quietly wrong, which is the failure
this check exists to stop; the finding says exactly what to pass.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ...checkpoint import Finding
from ...fixes.kinds import DropKeys, FoldPruneMask, MergeLora
from ...formatting import summarise_keys
from ..contents import is_lora_key
from ..context import Context
from ..joins import PeftModule

CONFIG_NAME = "adapter_config.json"
MAX_CONFIG_BYTES = 1 << 20
MERGE_SENTENCE = ("a PEFT LoRA model's full state dict: the adapters are merged into the "
                  "base weights as merge_and_unload() does")
PRUNE_SENTENCE = ("a pruned model saved without prune.remove: weight = weight_orig * "
                  "weight_mask")


def check(ctx: Context) -> list[Finding]:
    out = _pruned(ctx)
    out += _lora(ctx)
    out += _unmerged(ctx)
    return out


# -- torch.nn.utils.prune ------------------------------------------------------------------
def _pruned(ctx: Context) -> list[Finding]:
    masks = list(getattr(ctx.alignment, "masks", ()))
    if not masks:
        return []
    lines = [f"{o} * {m} -> {w}" for o, m, w in masks]
    return [Finding(
        "renamed", "error",
        f"The file is {PRUNE_SENTENCE}. {_count(len(masks), 'tensor')} "
        f"{'were' if len(masks) != 1 else 'was'} pruned with "
        "torch.nn.utils.prune and are stored as the original values and a 0/1 mask "
        f"({'; '.join(lines[:3])}{' and more' if len(lines) > 3 else ''}); a pruned module "
        "computes its weight from them before each forward and does not save it, and the "
        "model holds plain tensors. Fold each pair, as prune.remove would have before "
        "saving; loading them as extra tensors would leave these weights at their initial "
        "values.",
        keys=[w for _, _, w in masks], fixes=[FoldPruneMask(tuple(masks))],
        details={"prune_masks": [list(f) for f in masks]})]


# -- PEFT LoRA -----------------------------------------------------------------------------
def _lora(ctx: Context) -> list[Finding]:
    modules: list[PeftModule] = list(getattr(ctx.alignment, "lora", ()))
    if not modules:
        return []
    layers = [m for m in modules if m.lora]
    copies = [m for m in modules if not m.lora]
    forms = _forms(ctx, layers)
    ranks = sorted({m.lora[5] for m in layers})
    config, where, refused = adapter_config(ctx)
    shown = [f"{m.lora[0]} + lora_B @ lora_A" for m in layers]
    what = f"The file is {MERGE_SENTENCE}."
    if layers:
        what += (f" {_count(len(layers), 'adapted layer')} "
                 f"{'store their' if len(layers) != 1 else 'stores its'} frozen base weight "
                 f"and a low-rank update beside it ({summarise_keys(shown, 3)})")
    if copies:
        what += (f"{',' if layers else ''} {_count(len(copies), 'module')} of "
                 f"modules_to_save {'keep a' if len(copies) != 1 else 'keeps its'} trained "
                 "copy beside the frozen original")
    what += ("; loading only the base weights would give the model from before fine-tuning.")
    keys = [k for m in modules for k in m.model_keys()]
    details: dict[str, Any] = {"lora_layers": [m.module for m in layers], "ranks": ranks,
                               "modules_to_save": [m.module for m in copies]}
    alpha = None if config is None else _number(config.get("lora_alpha"))
    if not layers:  # only modules_to_save copies: no scaling involved
        return [Finding(
            "renamed", "error",
            f"{what} Keep the trained copies, as merge_and_unload() does.", keys=keys,
            fixes=[MergeLora((), 1.0, renames=tuple(mv for m in copies for mv in m.moves),
                             drops=tuple(d for m in copies for d in m.drops))],
            details=details)]
    if alpha is None:
        r_text = " or ".join(map(str, ranks))
        reason = refused or (f"the file does not record lora_alpha and no {CONFIG_NAME} is "
                             "beside it")
        dropped = _unsettle(ctx, modules, "lora_alpha unknown")
        return [Finding(
            "renamed", "error",
            f"{what} Merging needs the scaling lora_alpha / r (r = {r_text}, from lora_A's "
            f"shape), but {reason}. ckwidget does not guess it (lora_alpha is a free "
            "setting: a wrong scale gives a model that runs and is quietly wrong), so the "
            "plan leaves these layers at their initial values. Pass it: put the training "
            f"run's {CONFIG_NAME} beside the file (peft_model.peft_config['default']"
            ".save_pretrained(folder)), or set it on the checkpoint and diagnose that: "
            "ckpt = ck.open_checkpoint(path); ckpt.metadata['lora_alpha'] = <lora_alpha of "
            "your LoraConfig> (and ckpt.metadata['use_rslora'] = True for rsLoRA); "
            "ck.diagnose(ckpt, model).",
            keys=keys, fixes=[DropKeys(tuple(dropped), "LoRA layers: lora_alpha unknown")],
            details={**details, "needs": "lora_alpha"})]
    rslora = config.get("use_rslora") is True
    patterns = config.get("alpha_pattern") or {}
    by_scaling: dict[float, list[tuple[PeftModule, str]]] = {}
    alphas: dict[float, tuple[float, int]] = {}
    for m in layers:
        r = m.lora[5]
        a = _pattern_alpha(patterns, m.module, alpha)
        scaling = a / math.sqrt(r) if rslora else a / r
        by_scaling.setdefault(scaling, []).append((m, forms[m.module]))
        alphas[scaling] = (a, r)
    fixes = []
    for i, (scaling, group) in enumerate(by_scaling.items()):
        a, r = alphas[scaling]
        formula = (f"lora_alpha / sqrt(r) = {a:g} / sqrt({r})" if rslora
                   else f"lora_alpha / r = {a:g} / {r}")
        moves = [mv for m, _ in group for mv in m.moves]
        drops: list[str] = []
        if i == 0:
            moves += [mv for m in copies for mv in m.moves]
            drops = [d for m in copies for d in m.drops]
        fixes.append(MergeLora(
            tuple((*m.lora[:4], form) for m, form in group),
            scaling, renames=tuple(moves),
            biases=tuple(m.bias for m, _ in group if m.bias),
            drops=tuple(drops), alpha=f"{formula}, from {where}"))
    scales = "; ".join(f.alpha for f in fixes)
    transposed = sum(1 for m in layers if forms[m.module] == "transposed")
    return [Finding(
        "renamed", "error",
        f"{what} Merge them: W + B @ A * scaling, scaling = {scales}"
        + (f"; {_count(transposed, 'layer')} (Conv1D's fan_in_fan_out, embeddings) "
           f"take{'s' if transposed == 1 else ''} the transposed update" if transposed else "")
        + ("; the modules_to_save copies replace their frozen originals" if copies else "")
        + ".",
        keys=keys, fixes=fixes,
        details={**details, "scaling": [f.scaling for f in fixes], "config": where})]


def _count(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _unsettle(ctx: Context, modules: list[PeftModule], note: str) -> list[str]:
    """Hand a PEFT model's modules back to the alignment as what they are without a merge:
    their model keys missing (they keep their initial values), their tensors unexpected;
    so the counts, the table and the status say what the plan really loads. Returns the
    tensors' names as the plan's key steps leave them (what a drop-keys fix names)."""
    a = ctx.alignment
    names = list(a.ckpt)
    for step in a.steps:
        names = step.map_all(names)
    in_file = dict(zip(names, a.ckpt))  # name after the key steps -> key in the entry
    back = [c for m in modules for c in m.checkpoint_names()]
    served = [k for m in modules for k in m.model_keys()]
    for mk in served:
        a.status[mk] = "missing"
        a.notes[mk] = f"LoRA layer not merged ({note}): keeps its initial value"
        a.joined.pop(mk, None)
    stored = {c: in_file[c] for c in back if c in in_file}
    a.unexpected_mapped.update({k: c for c, k in stored.items()})
    order = {k: i for i, k in enumerate(a.model.infos)}
    a.missing = sorted({*a.missing, *served}, key=order.__getitem__)
    file_order = {k: i for i, k in enumerate(a.ckpt)}
    a.unexpected = sorted({*a.unexpected, *stored.values()}, key=file_order.__getitem__)
    gone = set(map(id, modules))
    a.lora = [m for m in a.lora if id(m) not in gone]
    ctx.unmerged_lora = set(stored.values())
    return back


def _forms(ctx: Context, layers: list[PeftModule]) -> dict[str, str]:
    """Each layer's form; a square 2-D weight is Linear or Conv1D (fan_in_fan_out), by the
    model's own module, else by the config, else by the non-square layers' majority."""
    forms = {m.module: m.lora[4] for m in layers}
    square = [mod for mod, f in forms.items() if f == "square"]
    if not square:
        return forms
    side = ctx.model
    types = {}
    wanted = set(square)
    for name, obj in zip(side.module_names, side.module_objects):
        if name in wanted:
            types[name] = type(obj).__name__
    config, _, _ = adapter_config(ctx)
    fan = config.get("fan_in_fan_out") if config else None
    votes = [f for f in forms.values() if f in ("linear", "transposed")]
    majority = ("transposed" if votes and votes.count("transposed") * 2 > len(votes)
                else "linear")
    for mod in square:
        kind = types.get(mod)
        if kind == "Conv1D":  # peft sets fan_in_fan_out for transformers' Conv1D itself
            forms[mod] = "transposed"
        elif kind is not None:
            forms[mod] = "linear"
        elif isinstance(fan, bool):
            forms[mod] = "transposed" if fan else "linear"
        else:
            forms[mod] = majority
    return forms


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) and value > 0 else None


def _pattern_alpha(patterns: Any, module: str, default: float) -> float:
    """peft's ``alpha_pattern``: the first pattern that matches the module's name at a
    dot boundary (peft's get_pattern_key), else lora_alpha."""
    if not isinstance(patterns, Mapping):
        return default
    for pattern, value in patterns.items():
        if re.match(rf"(.*\.)?({pattern})$", module):  # names only: see _odd_pattern
            return _number(value) or default
    return default


_NAME = re.compile(r"[\w.\-]{1,300}")


def _odd_pattern(patterns: Any) -> str:
    """The first ``alpha_pattern`` entry ckwidget does not evaluate: a regular expression
    beyond a module name (a file's own regex could take exponential time to match), or an
    alpha that is no positive number."""
    if patterns in (None, {}):
        return ""
    if not isinstance(patterns, Mapping):
        return repr(patterns)[:80]
    for pattern, value in patterns.items():
        if not isinstance(pattern, str) or not _NAME.fullmatch(pattern) or _number(
                value) is None:
            return f"{str(pattern)[:80]!r}: {str(value)[:20]}"
    return ""


def adapter_config(ctx: Context) -> tuple[dict[str, Any] | None, str, str]:
    """(config, where it came from, why one found was refused): ``ckpt.metadata``'s
    ``lora_alpha`` set by hand, the folder's adapter config as the reader records it,
    the file's own hyper-parameters, or ``adapter_config.json`` beside the file."""
    cached = ctx.adapter_config
    if cached is not None:
        return cached
    found = _find_config(ctx)
    ranks = {m.lora[5] for m in getattr(ctx.alignment, "lora", ()) if m.lora}
    refused = ""
    config, where = found
    if config is not None:
        r = config.get("r")
        peft_type = config.get("peft_type")
        if isinstance(peft_type, str) and peft_type.upper() != "LORA":
            refused = f"the {where} is for {peft_type}, not LoRA"
        elif (isinstance(r, int) and not isinstance(r, bool) and ranks and ranks != {r}
              and not config.get("rank_pattern")):
            refused = (f"the {where} says r = {r} while lora_A has rank "
                       f"{' or '.join(map(str, sorted(ranks)))}: it belongs to another run")
        elif odd := _odd_pattern(config.get("alpha_pattern")):
            refused = (f"the {where}'s alpha_pattern has an entry ckwidget does not evaluate "
                       f"({odd}; it matches module names, not regular expressions)")
        if refused:
            config = None
    result = (config, where, refused)
    ctx.adapter_config = result
    return result


def _find_config(ctx: Context) -> tuple[dict[str, Any] | None, str]:
    meta = ctx.ckpt.metadata
    if "lora_alpha" in meta:
        return ({"lora_alpha": meta.get("lora_alpha"), "use_rslora": meta.get("use_rslora"),
                 "alpha_pattern": meta.get("alpha_pattern")}, "ckpt.metadata")
    if isinstance(meta.get("adapter_config"), Mapping):
        return dict(meta["adapter_config"]), f"folder's {CONFIG_NAME}"
    facts = ctx.facts
    for holder in (facts, facts.get("hyper_parameters")):
        if isinstance(holder, Mapping) and _number(holder.get("lora_alpha")) is not None:
            return dict(holder), "file's hyper-parameters"
    path = ctx.ckpt.path
    if path is None:
        return None, ""
    try:
        local = Path(path)
        beside = (local if local.is_dir() else local.parent) / CONFIG_NAME
        if not beside.is_file() or beside.stat().st_size > MAX_CONFIG_BYTES:
            return None, ""
        config = json.loads(beside.read_bytes().decode("utf-8"))
    except (OSError, ValueError, RecursionError):
        return None, ""
    return (dict(config), f"{CONFIG_NAME} beside the file") if isinstance(
        config, Mapping) else (None, "")


def _unmerged(ctx: Context) -> list[Finding]:
    """Adapter tensors of a PEFT model that no merge takes (DoRA's magnitude, several
    adapters, a layer of an unknown form): the plan would load those layers' base weights."""
    a = ctx.alignment
    if not a.unexpected or not any(".base_layer." in k for k in a.ckpt):
        return []
    told = ctx.unmerged_lora
    left = [k for k in a.unexpected if is_lora_key(k) and k not in told]
    if not left:
        return []
    return [Finding(
        "unexpected-keys", "error",
        f"The file is a PEFT model's full state dict, and {len(left)} adapter tensors "
        f"({summarise_keys(left, 3)}) are of a kind ckwidget does not merge (DoRA's "
        "magnitude, several adapters in one file, or a layer of an unknown form): the plan "
        "loads those layers' base weights, from before fine-tuning. Merge with PEFT "
        "instead (PeftModel's merge_and_unload(), then save the merged model's "
        "state_dict) and load that file.",
        keys=left, details={"unmerged_adapters": left})]
