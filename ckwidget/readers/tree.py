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
    tensors: dict[str, TensorInfo] = field(default_factory=dict)
    members: dict[str, dict[str, str]] = field(default_factory=dict)
    candidates: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)


def join(prefix: str, key: Any) -> str:
    return f"{prefix}.{key}" if prefix else str(key)


def flatten(root: Any, *, max_visits: int = 5_000_000, max_depth: int = 1_000) -> Flattened:
    """Walk ``root`` once; shared sub-containers are listed under every path that reaches
    them (tied weights), within a visit budget so a shared-reference bomb stops early."""
    out = Flattened()
    visits = 0
    stack: list[tuple[str, Any, int]] = [("", root, 0)]
    while stack:
        path, node, depth = stack.pop()
        visits += 1
        if visits > max_visits:
            raise BudgetExceededError(
                f"The checkpoint's object tree has more than {max_visits:,} nodes "
                "(a shared-reference bomb or an unusually large file); reading stopped."
            )
        if depth > max_depth:
            raise BudgetExceededError(
                f"The checkpoint nests containers more than {max_depth:,} levels deep; "
                "reading stopped."
            )
        if isinstance(node, TensorInfo):
            out.tensors[path] = node
            continue
        items = _children(node)
        if items is None:
            continue
        direct: dict[str, str] = {}
        children: list[tuple[str, Any, int]] = []
        tensors = out.tensors
        dotted = path + "." if path else ""
        for key, value in items:
            child = dotted + (key if type(key) is str else str(key))
            if type(value) is TensorInfo:
                # Leaves are recorded here rather than pushed: a 100,000-key state dict
                # is one pass.
                direct[child[len(dotted):]] = child
                tensors[child] = value
                visits += 1
            else:
                children.append((child, value, depth + 1))
        if direct:
            out.members[path] = direct
        if visits > max_visits:
            raise BudgetExceededError(
                f"The checkpoint's object tree has more than {max_visits:,} nodes "
                "(a shared-reference bomb or an unusually large file); reading stopped."
            )
        stack.extend(reversed(children))
    # A walk in stack order visits keys in file order; tensors dict keeps that order.
    out.candidates = rank_candidates(out.members)
    return out


def _children(node: Any) -> list[tuple[Any, Any]] | None:
    if isinstance(node, Mapping):
        return list(node.items())
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


def plain_facts(node: Any, *, max_items: int = 200, max_depth: int = 6) -> Any:
    """A bounded, display-safe copy of non-tensor values for ``Checkpoint.metadata``."""
    if max_depth <= 0:
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
            if i >= max_items:
                result["..."] = f"{len(node) - max_items} more"
                break
            result[str(k)] = plain_facts(v, max_items=max_items, max_depth=max_depth - 1)
        return result
    if isinstance(node, (list, tuple)):
        values = [plain_facts(v, max_items=max_items, max_depth=max_depth - 1)
                  for v in list(node)[:max_items]]
        if len(node) > max_items:
            values.append(f"... {len(node) - max_items} more")
        return values
    return str(node)[:2000]


def top_level_facts(root: Any) -> dict[str, Any]:
    """Non-tensor entries of a top-level dict (epoch, versions, hyper-parameters...)."""
    facts: dict[str, Any] = {}
    if isinstance(root, Mapping):
        for key, value in root.items():
            if _holds_tensors(value):
                continue
            facts[str(key)] = plain_facts(value)
    return facts


def _holds_tensors(node: Any, depth: int = 0) -> bool:
    if isinstance(node, TensorInfo):
        return True
    if depth > 3:
        return False
    items = _children(node)
    if not items:
        return False
    return any(_holds_tensors(v, depth + 1) for _, v in items[:50])
