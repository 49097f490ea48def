"""Turn a nested container of tensors into a Checkpoint's keys, containers and candidates.

Readers hand over plain Python containers (dicts, lists, tuples) whose leaves are
TensorInfo values or plain facts; this module flattens them into dotted keys,
remembers which container each tensor sits in, and ranks the containers that look
like a model's state dict.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..checkpoint import TensorInfo
from ..errors import BudgetExceededError

# Container names, best first, that usually hold the model weights.
PREFERRED_NAMES = [
    "state_dict", "model_state_dict", "model_state", "model", "module", "net", "network",
    "weights", "params", "model_weights", "generator", "student", "encoder",
    "state_dict_ema", "model_ema", "ema", "ema_model", "ema_state_dict", "teacher",
]
# Containers that hold training state rather than weights.
TRAINING_STATE = re.compile(
    r"(^|\.)(optimizer|optimizer_states?|optim|opt|scheduler|lr_schedulers?|scaler|"
    r"grad_scaler|amp|callbacks|loops|state|param_groups)(\.|$)"
)


@dataclass
class Flattened:
    """Every tensor by its dotted path, and each container's own keys mapped to those
    paths (``members``). A root that is a plain state dict has no ``members`` entry:
    its keys are its paths, which is what ``Checkpoint.members`` assumes for a
    container without one (a 100,000-key mapping of each key to itself, spared)."""

    tensors: dict[str, TensorInfo] = field(default_factory=dict)
    members: dict[str, dict[str, str]] = field(default_factory=dict)
    candidates: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)


def join(prefix: str, key: Any) -> str:
    return f"{prefix}.{key}" if prefix else str(key)


def flatten(root: Any, *, max_visits: int = 5_000_000, max_depth: int = 1_000) -> Flattened:
    """Walk ``root`` once; shared sub-containers are listed under every path that reaches
    them (tied weights), within a visit budget so a shared-reference bomb stops early.
    Containers without tensors are skipped whole (their facts are read elsewhere)."""
    out = Flattened()
    holds = _TensorIndex(max_visits)
    visits = 0
    stack: list[tuple[str, Any, int]] = [("", root, 0)] if holds(root) else []
    tensors = out.tensors
    plain_root = False
    while stack:
        path, node, depth = stack.pop()
        if type(node) is TensorInfo:
            tensors[path] = node
            continue
        if depth > max_depth:
            raise BudgetExceededError(
                f"The checkpoint nests containers more than {max_depth:,} levels deep; "
                "reading stopped."
            )
        dotted = path + "." if path else ""
        direct = _all_tensors(node, dotted, tensors, holds.only_tensors)
        if direct is not None:  # a plain state dict: recorded in C, no per-key loop
            visits += len(direct) + 1
            if visits > max_visits:
                raise BudgetExceededError(
                    f"The checkpoint's object tree has more than {max_visits:,} nodes "
                    "(a shared-reference bomb or an unusually large file); reading stopped."
                )
            if direct is node:  # the root itself: no entry (see Flattened)
                plain_root = True
            else:
                out.members[path] = direct
            continue
        items = _children(node)
        if not items:
            continue
        direct = {}
        children: list[tuple[str, Any, int]] = []
        for key, value in items:
            if type(value) is TensorInfo:
                # Leaves are recorded here rather than pushed: a 100,000-key state dict
                # is one pass.
                name = key if type(key) is str else str(key)
                child = dotted + name
                direct[name] = child
                tensors[child] = value
            elif holds(value):
                children.append((dotted + (key if type(key) is str else str(key)), value,
                                 depth + 1))
        visits += len(direct) + len(children) + 1
        if visits > max_visits:
            raise BudgetExceededError(
                f"The checkpoint's object tree has more than {max_visits:,} nodes "
                "(a shared-reference bomb or an unusually large file); reading stopped."
            )
        if direct:
            if (not path and type(node) is dict and len(direct) == len(node)
                    and all(type(k) is str for k in node)):
                plain_root = True  # every value a tensor: as _all_tensors leaves it
            else:
                out.members[path] = direct
        stack.extend(reversed(children))
    # A walk in stack order visits keys in file order; tensors dict keeps that order.
    # A plain root is ranked like any container (its keys are those of ``tensors``).
    out.candidates = rank_candidates({"": tensors} if plain_root else out.members)
    return out


_CONTAINERS = (dict, list, tuple)  # what the readers build; ABC checks are too slow here
_TENSORS_ONLY = {TensorInfo}
_STR_ONLY = {str}
# exact types whose values are never containers (isinstance(v, _CONTAINERS) is False)
_LEAVES = frozenset({TensorInfo, str, int, float, bool, bytes, type(None)})


def _all_tensors(node: Any, dotted: str, tensors: dict[str, TensorInfo],
                 only_tensors: set[int]) -> dict[str, Any] | None:
    """When every value of a plain dict with str keys, or of a list or tuple, is a
    TensorInfo (``only_tensors``: ids of such containers, from ``_TensorIndex``), record
    them in ``tensors`` as the per-key loop of ``flatten`` would, in the same order, and
    return the container's members (the root itself for the root: its names are its
    paths); else None (the loop handles it)."""
    if id(node) not in only_tensors:
        return None
    kind = type(node)
    if kind is dict:
        if set(map(type, node)) != _STR_ONLY:
            return None
        if not dotted:  # the root: names are the paths, so it is its own members
            tensors.update(node)
            return node
        names: Any = node
        values = node.values()
    elif kind is list or kind is tuple:
        names = list(map(str, range(len(node))))
        values = node
    else:
        return None
    paths = list(map(dotted.__add__, names)) if dotted else names
    tensors.update(zip(paths, values))
    return dict(zip(names, paths))


class _TensorIndex:
    """Whether a container holds a tensor anywhere below it, worked out once per object,
    so shared containers without tensors cost nothing however often they are reached."""

    def __init__(self, max_visits: int) -> None:
        self.known: dict[int, bool] = {}
        self.keep: list[Any] = []  # keeps ids stable while the walk runs
        self.budget = max_visits
        self.only_tensors: set[int] = set()  # ids of containers of TensorInfo values only

    def __call__(self, node: Any) -> bool:
        if type(node) is TensorInfo:
            return True
        if not isinstance(node, _CONTAINERS) or not node:
            return False
        known = self.known.get(id(node))
        if known is not None:
            return known
        known_map = self.known
        leaf_only: dict[int, bool] = {}  # nodes whose values are all leaves: the answer
        order: list[Any] = []
        pending = [node]
        while pending:
            current = pending.pop()
            if id(current) in known_map:
                continue
            known_map[id(current)] = False  # provisional: cycles count as tensor-free
            self.keep.append(current)
            order.append(current)
            values = current.values() if isinstance(current, dict) else current
            self.budget -= len(values)
            if self.budget < 0:
                raise BudgetExceededError(
                    "The checkpoint's object tree is too large to index (a shared-reference "
                    "bomb or an unusually large file); reading stopped."
                )
            if len(values) >= 8:
                kinds = set(map(type, values))  # in C: a state dict is one pass
                if kinds <= _LEAVES:  # no containers below: settled here
                    leaf_only[id(current)] = TensorInfo in kinds
                    if kinds == _TENSORS_ONLY:
                        self.only_tensors.add(id(current))
                    continue
            for value in values:
                if value and isinstance(value, _CONTAINERS) and id(value) not in known_map:
                    pending.append(value)
        for current in reversed(order):
            found = leaf_only.get(id(current))
            if found is not None:
                known_map[id(current)] = found
                continue
            values = current.values() if isinstance(current, dict) else current
            found = False
            for v in values:
                if type(v) is TensorInfo or (
                    v and isinstance(v, _CONTAINERS) and known_map.get(id(v), False)
                ):
                    found = True
                    break
            known_map[id(current)] = found
        return known_map[id(node)]


def _children(node: Any) -> Any:
    """A container's (key, value) pairs (a dict's own items view: no copy), or None."""
    if isinstance(node, Mapping):
        return node.items()
    if isinstance(node, (list, tuple)):
        return list(enumerate(node))
    return None


def rank_candidates(members: Mapping[str, Mapping[str, str]]) -> list[str]:
    """Containers that look like a model state dict, best first."""
    scored = []
    for order, (path, direct) in enumerate(members.items()):
        name = path.rsplit(".", 1)[-1] if path else ""
        keys = list(direct)
        if keys and all(k.isdigit() for k in keys) and TRAINING_STATE.search(path or "state"):
            continue  # optimizer state per parameter index: never a model state dict
        if TRAINING_STATE.search(path):
            continue
        score = 0.0
        lowered = name.lower()
        if lowered in PREFERRED_NAMES:
            score += 100 - PREFERRED_NAMES.index(lowered)
        if any(tag in lowered for tag in ("ema", "teacher", "average", "swa")):
            score -= 40  # an averaged copy is a second choice, never the default
        if path == "":
            score += 50
        score += min(len(keys), 10_000) / 1000.0
        if any("." in k for k in keys):
            score += 5  # module-style keys ("layer.weight") mark a real state dict
        scored.append((-score, order, path))
    scored.sort()
    return [p for _, _, p in scored]


def plain_facts(node: Any, *, max_items: int = 200, max_depth: int = 6,
                budget: list[int] | None = None) -> Any:
    """A bounded, display-safe copy of non-tensor values for ``Checkpoint.metadata``;
    at most ~20,000 values in all, however the file shares its containers."""
    budget = [20_000] if budget is None else budget
    budget[0] -= 1
    if max_depth <= 0 or budget[0] < 0:
        return "..."
    if isinstance(node, TensorInfo):
        return f"<tensor {node.dtype}{list(node.shape)}>"
    if isinstance(node, (str, int, float, bool)) or node is None:
        if isinstance(node, str) and len(node) > 2000:
            return node[:2000] + "..."
        return node
    if isinstance(node, (bytes, bytearray)):
        return f"<{len(node)} bytes>"
    if isinstance(node, Mapping):
        result = {}
        for i, (k, v) in enumerate(node.items()):
            if i >= max_items or budget[0] < 0:
                result["..."] = f"{len(node) - i} more"
                break
            result[str(k)] = plain_facts(v, max_items=max_items, max_depth=max_depth - 1,
                                         budget=budget)
        return result
    if isinstance(node, (list, tuple)):
        values = []
        for i, v in enumerate(node):
            if i >= max_items or budget[0] < 0:
                values.append(f"... {len(node) - i} more")
                break
            values.append(plain_facts(v, max_items=max_items, max_depth=max_depth - 1,
                                      budget=budget))
        return values
    return str(node)[:2000]


def top_level_facts(root: Any) -> dict[str, Any]:
    """Non-tensor entries of a top-level dict (epoch, versions, hyper-parameters...)."""
    facts: dict[str, Any] = {}
    budget = [20_000]
    holds = _TensorIndex(5_000_000)
    if isinstance(root, Mapping):
        for i, (key, value) in enumerate(root.items()):
            if i >= 1000 or budget[0] < 0:
                facts["..."] = f"{len(root) - i} more entries"
                break
            if holds(value):
                continue
            facts[str(key)] = plain_facts(value, budget=budget)
    return facts
