"""``diagnose()``: open, align, run every check, choose the plan, count what loads."""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Mapping
from itertools import chain, compress, filterfalse, repeat
from operator import and_, eq
from typing import Any

from ..checkpoint import Checkpoint, Finding, TensorInfo, describe_tensor, sort_findings
from ..errors import CheckpointError, FixError
from ..formatting import summarise_keys
from ..gcpause import gc_paused
from ..kinds import UNREPAIRABLE_KINDS
from . import checks
from .align import align, leading_parts, spread
from .context import Context
from .model_side import ModelSide, describe_model
from .provenance import Provenance, trace_plan
from .report import Report

LIGHTNING_KEYS = ("lightning_version", "pytorch-lightning_version")


def diagnose(
    path_or_ckpt: str | os.PathLike[str] | Checkpoint | Mapping[str, Any],
    model: Any,
    optimizer: Any = None,
    sample_input: Any = None,
    *,
    entry: str | None = None,
    map_location: Any = None,
    plan: Any = None,
    assume_materialized: bool = False,
) -> Report:
    """Why ``path_or_ckpt`` does or does not load into ``model``, and the plan that fixes it.

    Args:
        path_or_ckpt: a checkpoint file or folder, an opened Checkpoint, or a state dict.
        model: the nn.Module (or a state dict of the shapes it expects) to load into;
            nothing is loaded: only its keys, shapes, dtypes and devices are read.
        optimizer: an optimizer whose saved state the file may hold; its param groups
            are compared with the model's parameters.
        sample_input: a batch of inputs, compared with the statistics the file records
            (normalisation, image size, vocabulary).
        entry: the container holding the weights ("state_dict", "model", "ema"...;
            "" is the top level); chosen automatically by default.
        map_location: the device the tensors should load on (as torch.load's).
        plan: diagnose the checkpoint as it would be after this plan (``Plan.preview``).
        assume_materialized: treat a model built on the meta device as a shape template
            for a real one (the CLI builds models that way to compare shapes cheaply).

    Returns a Report: ``status``, ``headline``, ``findings``, ``table``, ``plan`` and
    ``provenance`` (where each model tensor's value would come from after the plan).
    """
    started = time.perf_counter()
    with gc_paused(promote=True):  # the report lives on
        report = _diagnose(path_or_ckpt, model, optimizer, sample_input, entry,
                           map_location, plan, assume_materialized)
    report.seconds = round(time.perf_counter() - started, 4)
    return report


def _diagnose(path_or_ckpt: Any, model: Any, optimizer: Any, sample_input: Any,
              entry: str | None, map_location: Any, plan: Any,
              assume_materialized: bool = False) -> Report:
    ckpt = as_checkpoint(path_or_ckpt)
    side = describe_model(model)
    if assume_materialized:
        side.devices.discard("meta")  # a shape template: judge it as the real model
    if plan is not None and len(plan):
        ckpt, map_location = _after_plan(ckpt, plan, side, map_location)
        entry = ""
    chosen, reason = choose_entry(ckpt, side, entry)
    entry_infos = _entry_infos(ckpt, chosen)
    alignment = align(entry_infos, side)
    ctx = Context(ckpt, chosen, reason, side, alignment, optimizer, sample_input, map_location,
                  requested_entry=entry)
    findings = checks.run(ctx)
    from ..fixes import Plan

    suggested = Plan(ctx.plan_fixes, source=ckpt, assign=side.is_meta)
    return _summarise(ctx, sort_findings(findings), suggested, model)


def _entry_infos(ckpt: Checkpoint, chosen: str) -> dict[str, TensorInfo]:
    """``ckpt.entry(chosen)``, or {} for a container that holds no tensors."""
    return ckpt.entry(chosen) if (chosen in ckpt.candidates or ckpt.members(chosen)) else {}


def as_checkpoint(source: Any) -> Checkpoint:
    if isinstance(source, Checkpoint):
        return source
    if isinstance(source, (str, os.PathLike)):
        from ..readers import open_checkpoint

        return open_checkpoint(source)
    if isinstance(source, Mapping):
        return _from_nested(source)
    raise CheckpointError(
        f"diagnose() needs a path, a Checkpoint or a state dict, not {type(source).__name__}.")


def _from_nested(obj: Mapping[str, Any]) -> Checkpoint:
    """An in-memory dict, nested or flat, described like a file would be."""
    import torch

    from ..readers.tree import flatten, top_level_facts

    if all(isinstance(v, torch.Tensor) for v in obj.values()):
        return Checkpoint.from_state_dict(obj)

    def convert(node: Any, depth: int = 0) -> Any:
        if isinstance(node, torch.Tensor):
            return describe_tensor(node)
        if depth > 50:
            return None
        if isinstance(node, Mapping):
            return {str(k): convert(v, depth + 1) for k, v in node.items()}
        if isinstance(node, (list, tuple)):
            return [convert(v, depth + 1) for v in node]
        return node

    tree = convert(obj)
    flat = flatten(tree)
    facts = top_level_facts(tree)
    metadata: dict[str, Any] = {"name": "<in-memory checkpoint>", "facts": facts}
    for key, name in (("pytorch-lightning_version", "lightning_version"),
                      ("lightning_version", "lightning_version"),
                      ("transformers_version", "transformers_version")):
        if isinstance(facts.get(key), (str, int, float)):
            metadata[name] = str(facts[key])
    if isinstance(facts.get("hyper_parameters"), dict):
        metadata["hyper_parameters"] = facts["hyper_parameters"]
    return Checkpoint(None, "in-memory", flat.tensors, flat.candidates or [""], metadata,
                      members=flat.members)


# -- entry ------------------------------------------------------------------------------
def _score(infos: Mapping[str, TensorInfo], model: Mapping[str, TensorInfo]) -> float:
    """Estimated model keys this container serves, with or without a prefix (sampled)."""
    keys = list(infos)
    sample = spread(keys)
    hits = sum(1 for key in sample
               if key in model or any(rest in model for _, rest in leading_parts(key)))
    return hits * len(keys) / max(1, len(sample))


def choose_entry(ckpt: Checkpoint, side: ModelSide, entry: str | None) -> tuple[str, str]:
    """The container to load, and why (a sentence, empty for the top level)."""
    if entry is not None:
        return entry, f"you chose the entry {entry!r}."
    candidates = list(ckpt.candidates)
    if not candidates:
        return "", ""
    best = candidates[0]
    if len(candidates) > 1:
        scores = [(_score(ckpt.entry(c), side.infos), -i, c) for i, c in enumerate(candidates[:8])]
        best = max(scores)[2]
    if best == "":
        return "", ""
    meta = ckpt.metadata
    # The file's own top-level entries: its non-tensor facts and its other containers
    # (never the reader's metadata such as the archive's records).
    facts_of = meta.get("facts") if isinstance(meta.get("facts"), dict) else {}
    head = best.split(".", 1)[0]
    others = [c for c in candidates if c != best]
    for top in dict.fromkeys([k.partition(".")[0] for k in ckpt.tensors]):
        if top != head and top not in others and top not in facts_of:
            others.append(top)
    averaged = [c for c in others if any(t in c.lower() for t in ("ema", "swa", "average"))]
    lightning = next((meta[k] for k in LIGHTNING_KEYS if k in meta), None)
    items = [str(k) for k in facts_of][:6] + others[:3]
    if lightning is not None:
        reason = (f"this is a PyTorch Lightning checkpoint (Lightning {lightning}); the weights "
                  f"are under {best!r}"
                  + (f", next to training state ({', '.join(items)})" if items else "") + ".")
    else:
        reason = (f"the file is a dict whose {best!r} entry holds the model's weights"
                  + (f" (other entries: {', '.join(items)})" if items else "") + ".")
    if averaged:
        reason += (f" An averaged copy is also stored under {averaged[0]!r}; pass "
                   f"entry={averaged[0]!r} to use it instead.")
    return best, reason


# -- counts and status ------------------------------------------------------------------
def _received(received: Mapping[str, TensorInfo], side: ModelSide) -> int:
    """Model tensors that get a value of their shape (tied ones through their partner)."""
    infos = side.infos
    n = 0
    for key, got in received.items():
        info = infos.get(key)
        if info is not None and got.shape == info.shape:
            n += 1
    for key, owner in side.tied.items():
        # one of the pair is missing from ``received``: it shares its partner's value
        a, b = (key, owner) if key not in received else (owner, key)
        if a not in received and b in received and received[b].shape == infos[a].shape:
            n += 1
    return n


def _simulate(ctx: Context, plan: Any) -> dict[str, TensorInfo]:
    """What the model receives after the plan. When the plan's key-mapping fixes are
    exactly the alignment's steps, the alignment already knows where every key lands."""
    a = ctx.alignment
    renames = ctx.model.load_hooks.renames
    if plan.extracts or (plan.entry or "") != ctx.entry:
        return plan.simulate(ctx.ckpt, ctx.model.infos, renames=renames)
    if not a.collisions and [f for f in plan if f.maps_keys] == [s.fix() for s in a.steps]:
        ckpt = a.ckpt
        landed = {mk: ckpt[ck] for mk, ck in a.pairs.items()}
        return plan.simulate(ctx.ckpt, ctx.model.infos, landed, keys_mapped=True)
    return plan.simulate(ctx.ckpt, ctx.model.infos, ctx.entry_infos, renames=renames)


def _count_after(ctx: Context, plan: Any) -> int:
    """Model tensors that receive a value of their shape after ``plan``.

    When the plan's key mapping is the alignment's own and its other fixes name their
    keys, only those keys are simulated: every other key keeps the shape the alignment
    already compared (a cast changes dtypes, never shapes)."""
    from ..fixes.kinds import CastDtype, Transpose
    a, side = ctx.alignment, ctx.model
    per_key = [f for f in plan if not f.load_time and not f.maps_keys]
    if (plan.extracts or (plan.entry or "") != ctx.entry or a.collisions
            or [f for f in plan if f.maps_keys] != [s.fix() for s in a.steps]
            or not all(f.keyed for f in per_key)):
        return _received(_simulate(ctx, plan), side)
    ckpt, pairs, status, infos = a.ckpt, a.pairs, a.status, side.infos
    reshaping = [f for f in per_key if not isinstance(f, CastDtype)]
    touches = Counter(chain.from_iterable(f.keys for f in reshaping))
    # A transpose of a key the alignment found transposed, and that no other fix
    # touches, gives it the model's shape: no need to simulate it.
    quick: set[str] = set()
    for fix in reshaping:
        if isinstance(fix, Transpose):
            keys = fix.keys
            if not all(map(pairs.__contains__, keys)):
                return _received(_simulate(ctx, plan), side)  # it raises: say why there
            once = map(eq, map(touches.__getitem__, keys), repeat(1))
            stored = map(eq, map(status.__getitem__, keys), repeat("transposed"))
            quick.update(compress(keys, map(and_, once, stored)))
    rest = touches.keys() - quick
    subset = {k: ckpt[pairs[k]] for k in rest if k in pairs}
    for fix in reshaping:
        if isinstance(fix, Transpose):
            fix = Transpose(tuple(filterfalse(quick.__contains__, fix.keys)))
        subset = fix.transform(subset, infos)
    fits = ("match", "dtype-differs", "renamed")
    n = (a.loadable_count + len(quick)  # quick keys were "transposed": not counted yet
         - sum(1 for k in rest if k in pairs and status[k] in fits)
         + sum(1 for k, v in subset.items() if k in infos and v.shape == infos[k].shape))
    if not side.tied:
        return n

    def shape_of(key: str) -> tuple[int, ...] | None:
        if key in quick:
            return infos[key].shape
        if key in subset:
            return subset[key].shape
        if key in pairs and key not in touches:
            return ckpt[pairs[key]].shape
        return None

    for key, owner in side.tied.items():
        # one of the pair receives nothing: it shares its partner's value
        first, second = (key, owner) if shape_of(key) is None else (owner, key)
        got = shape_of(second)
        if shape_of(first) is None and got is not None and got == infos[first].shape:
            n += 1
    return n


def _summarise(ctx: Context, findings: list[Finding], plan: Any, model: Any) -> Report:
    side, a, ckpt = ctx.model, ctx.alignment, ctx.ckpt
    total = len(side.infos)
    blockers = set(ctx.blockers)
    reader = ctx.needs_reader  # torch.load cannot read the file
    if blockers or side.is_meta or reader:
        as_is = 0  # torch.load fails, or load_state_dict copies into nothing
    elif ctx.entry == "":
        counts = Counter(a.status.values())
        as_is = counts["match"] + counts["dtype-differs"]
        # a quantized file's codes would be copied, not its values (checks/architecture)
        as_is -= sum(1 for k in ctx.codes
                     if a.status.get(k) in ("match", "dtype-differs"))
    else:
        top = ckpt.entry("") if "" in ckpt.candidates else {}
        as_is = sum(1 for k, info in side.infos.items()
                    if (c := top.get(k)) is not None and c.shape == info.shape)
    unrepairable = blockers & UNREPAIRABLE_KINDS
    try:
        after = 0 if unrepairable else _count_after(ctx, plan)
    except CheckpointError:
        after = len(a.loadable) + len(a.transposed)
    clean = (not blockers and ctx.entry == "" and not a.missing and not a.unexpected
             and not a.mismatched and not a.transposed and not a.steps and not a.folds
             and not a.fused and not a.split and not a.unfolds and not a.lora
             and not a.masks and not side.is_meta)
    errors = [f for f in findings if f.severity == "error"]
    nonfinite = next((f for f in findings if f.kind == "nonfinite"), None)
    prov = None
    if not unrepairable and total and (after < total or a.unexpected or plan.partial):
        try:  # the plan leaves something out: say exactly what, traced through its fixes
            prov = trace_plan(ckpt, plan, side)
        except (CheckpointError, FixError):
            prov = None
    if any(f.kind == "malicious" for f in findings):
        status = "unsafe"
    elif clean and not errors and not reader:
        status = "ok"
    elif unrepairable or (total and after == 0) or any(
            f.kind == "shape-mismatch" and not f.fixes for f in errors):
        status = "broken"
    elif nonfinite is not None or (prov is not None and prov.partial):
        status = "partial"
    else:
        status = "fixable"
    headline = _headline(total, as_is, after, len(plan), clean and not reader, status,
                         findings)
    if prov is not None and status in ("fixable", "partial"):
        headline += _provenance_sentence(prov)
    if nonfinite is not None and status != "unsafe":
        n = len(nonfinite.keys)
        headline += (f" But {n} tensor{'s hold' if n != 1 else ' holds'} NaN/Inf: "
                     f"{summarise_keys(nonfinite.keys)}.")
    if reader and status != "unsafe":
        if clean:
            headline = (f"The state dict fits the model (all {total} tensors), but "
                        f"torch.load(weights_only=True) cannot read the file: {reader}. The "
                        "suggested plan reads it with ckwidget's reader; or save it again "
                        "with torch.save to load it with plain torch.")
        else:
            headline += (" torch.load(weights_only=True) cannot read the file; the plan "
                         "reads it with ckwidget's reader.")
    if side.is_meta and status != "unsafe":
        if not len(plan) and not unrepairable:
            headline = (f"0 of {total} model tensors would load as is (the model is on the "
                        f"meta device); {after} with assign=True, which report.plan.apply uses.")
        else:
            headline += (" The model is on the meta device: load with assign=True "
                         "(report.plan.apply does).")
    name = type(model).__name__ if not isinstance(model, Mapping) else "state dict"
    return Report(ckpt, ctx.entry, findings, plan, total, as_is, after, clean and not reader,
                  status, headline, model_name=name, alignment=a, state_dict_fits=clean,
                  _provenance=prov)


def _provenance_sentence(prov: Provenance) -> str:
    """What the plan leaves out, in plain words (empty when it leaves nothing out)."""
    kept, unused = prov.kept_initial, prov.unused_learned
    parts = []
    if kept:
        parts.append(f"{len(kept)} model tensor{'s keep their' if len(kept) != 1 else ' keeps its'}"
                     f" initial value{'s' if len(kept) != 1 else ''} ({summarise_keys(kept)})")
    if unused:
        parts.append(f"{len(unused)} learned tensor{'s' if len(unused) != 1 else ''} in the "
                     f"file {'are' if len(unused) != 1 else 'is'} not used "
                     f"({summarise_keys(unused)})")
    return (" " + "; ".join(parts) + ".") if parts else ""


def _headline(total: int, as_is: int, after: int, n_fixes: int, clean: bool, status: str,
              findings: list[Finding]) -> str:
    if status == "unsafe":
        return "Unsafe: this file names code that would run on load; do not unpickle it."
    first = f"{as_is:,} of {total:,} model tensors would load as is"
    if clean:
        return f"All {total:,} model tensors load as is."
    if n_fixes:
        fixes = f"{n_fixes} fix{'es' if n_fixes != 1 else ''}"
        if after == total:
            return f"{first}; all {total:,} after the suggested plan ({fixes})."
        return f"{first}; {after:,} after the suggested plan ({fixes})."
    blocker = next((f for f in findings if f.severity == "error"), None)
    if blocker is not None and as_is == 0 and after == 0:
        return f"{first}: {blocker.kind.replace('-', ' ')}."
    return first + "."


# -- preview ----------------------------------------------------------------------------
def _after_plan(ckpt: Checkpoint, plan: Any, side: ModelSide,
                map_location: Any) -> tuple[Checkpoint, Any]:
    """The checkpoint as the plan's load would see it: one entry, fixes applied."""
    received = plan.simulate(ckpt, side.infos)
    covered: set[str] = set()
    allowed = set(getattr(plan, "allowed_globals", ()) or ())
    findings = []
    extracts = bool(getattr(plan, "extracts", False))
    for f in ckpt.findings:
        if f.kind == "unsafe-globals" and (extracts or set(f.details.get("globals", ()))
                                           <= allowed):
            covered.add(f.kind)
            continue
        if f.kind == "missing-class" and extracts:
            continue
        findings.append(f)
    location = map_location
    if location is None and any(f.kind == "map-location" for f in plan):
        location = plan.map_location
    meta = {k: v for k, v in ckpt.metadata.items()}
    if extracts:
        meta["read_by_ckwidget"] = True  # torch.load's limits no longer apply
    out = Checkpoint(ckpt.path, ckpt.format, dict(received), [""], meta, findings,
                     size=ckpt.size)
    return out, location
