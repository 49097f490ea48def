"""Training state: will ``optimizer.load_state_dict`` accept the file's optimizer state?

torch checks only the number of parameter groups and their sizes, then pairs saved
state with parameters by position. So a layer added after the save either fails that
check or silently gives one parameter another's moments; both show up as a shape that
differs from the parameter the state is paired with.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ...checkpoint import Finding, TensorInfo
from ...keytemplates import join_lines
from ..context import Context

STATE = re.compile(
    r"^(?P<root>(?:.*\.)?(?:optimizer|optimizer_state_dict|optimizer_state|optimizer_states"
    r"(?:\.\d+)?|optim|opt|optimizers?(?:\.\d+)?))\.state\.(?P<idx>\d+)\.(?P<name>[^.]+)$")
TRAINING_ENTRIES = re.compile(
    r"^(lr_schedulers?|schedulers?|scheduler_state_dict|scaler|grad_scaler|amp|epoch|"
    r"global_step|step|iteration|iter|rng_state|rng_states|torch_rng_state|cuda_rng_state|"
    r"numpy_rng_state|random_state|python_rng_state|loops|callbacks|best_.*|optimizer.*)$")
# the same names as the first component of a tensor key, in keys joined by newlines with
# one before and after (a leading newline lets ``re`` skip to line starts)
_TRAINING_HEADS = re.compile(
    TRAINING_ENTRIES.pattern.replace(".*", "[^.\n]*").replace("^(", "\n(")
    .replace(")$", r")(?=[.\n])"))
STATE_CLASSES = {
    "exp_avg": "Adam/AdamW", "exp_avg_sq": "Adam/AdamW", "momentum_buffer": "SGD",
    "square_avg": "RMSprop/Adadelta", "sum": "Adagrad", "acc_delta": "Adadelta",
    "ax": "ASGD", "prev": "Rprop", "mu_product": "NAdam",
}
CLASS_STATES = {"Adam": "exp_avg", "AdamW": "exp_avg", "SGD": "momentum_buffer",
                "RMSprop": "square_avg", "Adagrad": "sum", "Adadelta": "square_avg"}


def saved_state(ckpt_tensors: Mapping[str, TensorInfo], joined: str | None = None
                ) -> tuple[str, dict[int, dict[str, str]]]:
    """(root, {param index: {state name: full key}}) of the first optimizer state found.
    ``joined``: the keys joined by newlines, when the caller has them (one search then
    rules out the common file with no optimizer state)."""
    if joined is not None and ".state." not in joined:
        return "", {}
    roots: dict[str, dict[int, dict[str, str]]] = {}
    for key in ckpt_tensors:
        if ".state." not in key:
            continue
        m = STATE.match(key)
        if m:
            roots.setdefault(m["root"], {}).setdefault(int(m["idx"]), {})[m["name"]] = key
    if not roots:
        return "", {}
    root = next(iter(roots))
    return root, roots[root]


def saved_groups(metadata: Mapping[str, Any], root: str) -> list[int] | None:
    """Sizes of the saved param groups: from the reader's ``optimizer_param_groups``
    ({container path: [group sizes]}), else from a ``param_groups`` kept in the facts."""
    recorded = metadata.get("optimizer_param_groups")
    if isinstance(recorded, Mapping) and isinstance(recorded.get(root), list):
        groups: Any = recorded[root]
    else:
        groups = metadata.get(f"{root}.param_groups")
        if groups is None:
            node: Any = metadata
            for part in root.split("."):
                if isinstance(node, Mapping):
                    node = node.get(part)
                elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                    node = node[int(part)]
                else:
                    return None
            groups = node.get("param_groups") if isinstance(node, Mapping) else None
    if not isinstance(groups, list):
        return None
    if all(isinstance(g, int) for g in groups):
        return list(groups)
    sizes = []
    for g in groups:
        if not isinstance(g, Mapping) or not isinstance(g.get("params"), list):
            return None
        sizes.append(len(g["params"]))
    return sizes


def check(ctx: Context) -> list[Finding]:
    out: list[Finding] = []
    keys = list(ctx.ckpt.tensors)
    joined = join_lines(keys)
    root, state = saved_state(ctx.ckpt.tensors, joined)
    listing = _training_entries(ctx, root, keys, joined)
    if ctx.optimizer is not None:
        out += _check_optimizer(ctx, root, state)
    elif listing or state:
        extra = (" Pass optimizer= to check that its saved state fits your optimizer."
                 if state else "")
        out.append(Finding(
            "optimizer", "info",
            f"Training state in the file: {', '.join(listing) or root}.{extra}",
            keys=[k for s in state.values() for k in s.values()][:1000],
            details={"entries": listing, "optimizer_root": root}))
    return out


def _training_entries(ctx: Context, root: str, keys: list[str], joined: str | None
                      ) -> list[str]:
    names: dict[str, None] = {}
    meta = ctx.ckpt.metadata.get("facts")
    meta = meta if isinstance(meta, dict) else ctx.ckpt.metadata
    for key, value in meta.items():
        if TRAINING_ENTRIES.match(str(key)):
            shown = f"{key}={value}" if isinstance(value, (int, float)) else str(key)
            names[shown] = None
    for head in _training_heads(keys, joined):
        if head not in names:
            names[head] = None
    if root and root.split(".", 1)[0] not in names:
        names[root] = None
    return list(names)


def _training_heads(keys: list[str], text: str | None) -> list[str]:
    """First key components that name training state, in order: one multiline search
    over the keys joined by newlines (``text``; None when a key holds a newline) rather
    than a split per key."""
    if text is None:  # a key holds a newline: one by one
        heads = dict.fromkeys(key.partition(".")[0] for key in keys)
        return [h for h in heads if TRAINING_ENTRIES.match(h)]
    return list(dict.fromkeys(_TRAINING_HEADS.findall(f"\n{text}\n")))


def _check_optimizer(ctx: Context, root: str, state: dict[int, dict[str, str]]) -> list[Finding]:
    opt = ctx.optimizer
    groups = getattr(opt, "param_groups", None)
    if not isinstance(groups, list):
        return [Finding("optimizer", "warning",
                        f"optimizer= is a {type(opt).__name__}, not a torch optimizer; "
                        "its state was not checked.")]
    params = [p for g in groups for p in g["params"]]
    live_sizes = [len(g["params"]) for g in groups]
    names = ctx.model.param_names
    cls = type(opt).__name__
    if not root:
        return [Finding(
            "optimizer", "info",
            f"The file holds no optimizer state to restore into your {cls}; it starts fresh "
            "(learning-rate warm-up and moments begin again).")]
    keys = [k for s in state.values() for k in s.values()]
    problems: list[str] = []
    severity = "info"
    saved_sizes = saved_groups(ctx.facts, root)
    if saved_sizes is not None and saved_sizes != live_sizes:
        severity = "error"
        problems.append(
            f"optimizer.load_state_dict will raise ValueError: the file's parameter groups "
            f"hold {saved_sizes} parameters, your {cls}'s {live_sizes}")
    elif saved_sizes is None and state and (
            max(state) + 1 > len(params)
            or (len(state) == max(state) + 1 and len(state) != len(params))):
        severity = "error"
        problems.append(
            f"the file has optimizer state for {max(state) + 1} parameters but your {cls} "
            f"has {len(params)}, so optimizer.load_state_dict will raise ValueError (its "
            "parameter groups differ in size)")
    saved_kinds = {STATE_CLASSES[n] for s in state.values() for n in s if n in STATE_CLASSES}
    expected = CLASS_STATES.get(cls)
    if expected and saved_kinds and STATE_CLASSES[expected] not in saved_kinds:
        severity = "error" if severity == "error" else "warning"
        problems.append(f"the saved state looks like {', '.join(sorted(saved_kinds))}, "
                        f"not {cls}")
    first_bad = None
    for idx in sorted(state):
        if idx >= len(params):
            first_bad = first_bad if first_bad is not None else idx
            continue
        shape = tuple(params[idx].shape)
        for name, key in state[idx].items():
            sshape = ctx.ckpt.tensors[key].shape
            if sshape and sshape != shape:
                if first_bad is None:
                    first_bad = idx
                    pname = names.get(id(params[idx]), f"parameter {idx}")
                    problems.append(
                        f"from state {idx} on the shapes stop matching: the file's {name} "
                        f"{tuple(sshape)} is paired with your {pname} {shape}, so a layer "
                        "was added, removed or reordered since the save")
                    severity = "error" if severity == "error" else "warning"
    if not problems:
        return [Finding(
            "optimizer", "info",
            f"The file's optimizer state ({len(state)} parameters with state, groups "
            f"{saved_sizes or '?'}) fits your {cls}: optimizer.load_state_dict will accept it.",
            keys=keys[:1000], details={"groups": saved_sizes, "live_groups": live_sizes})]
    evidence = keys if first_bad is None else [
        k for i in sorted(state) if i >= first_bad for k in state[i].values()]
    return [Finding(
        "optimizer", severity,
        "The optimizer state does not fit: " + "; ".join(problems) + ". Start the optimizer "
        "fresh (skip optimizer.load_state_dict and keep the model weights), or rebuild the "
        "optimizer over the parameters in the order they had when it was saved.",
        keys=evidence[:1000],
        details={"groups": saved_sizes, "live_groups": live_sizes, "first_mismatch": first_bad,
                 "root": root})]
