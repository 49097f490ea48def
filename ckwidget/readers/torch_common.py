"""Shared by the torch readers: run a torch pickle symbolically and describe what it holds."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from itertools import islice
from operator import attrgetter
from typing import Any

from ..checkpoint import Finding, TensorInfo
from ..errors import BudgetExceededError
from ..gcpause import gc_paused
from .budgets import Budgets
from .pickle_vm import PickleResult, run_pickle
from .safety import GlobalsVerdict, classify_globals, globals_findings
from .torch_objects import ModuleDict, StorageBytes, TorchPickleContext
from .tree import Flattened, flatten, top_level_facts

# Version facts that training libraries store at the top level of their checkpoints.
VERSION_KEYS = {
    "pytorch-lightning_version": "lightning_version",
    "lightning_version": "lightning_version",
    "transformers_version": "transformers_version",
    "torch_version": "torch_version",
    "pytorch_version": "torch_version",
    "timm_version": "timm_version",
    "ds_version": "deepspeed_version",
}


@dataclass
class TorchPickle:
    result: PickleResult
    context: TorchPickleContext
    flat: Flattened
    verdict: GlobalsVerdict
    findings: list[Finding] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def torch_reads_protocol(self) -> bool:
        """torch's weights-only unpickler knows no protocol-4 opcodes ('Unsupported
        operand 149')."""
        res = self.result
        return res.protocol < 4 and not {"FRAME", "STACK_GLOBAL", "MEMOIZE"} & res.opcodes

    @property
    def torch_accepts_globals(self) -> bool:
        v = self.verdict
        return not (v.unsafe or v.missing or v.malicious)


def interpret(data: bytes, reader: StorageBytes | None, budgets: Budgets, *,
              legacy: bool = False, start: int = 0) -> TorchPickle:
    """Run the pickle machine with torch's meanings and flatten what it built."""
    context = TorchPickleContext(reader, legacy=legacy)
    with gc_paused():  # the machine allocates millions of small objects and frees none
        result = run_pickle(
            data, budgets, start=start, persistent_load=context.persistent_load,
            reducers=context.reducers(), builders={"*": context.build},
        )
    root = result.root
    findings: list[Finding] = []
    try:
        flat = flatten(root, max_visits=budgets.max_visits, max_depth=budgets.max_depth)
    except BudgetExceededError as exc:
        flat = Flattened()
        findings.append(Finding("corrupt", "error", str(exc)))
    for name in numpy_dtype_classes(context.numpy_dtype_codes):
        result.globals.setdefault(name, 0)
    verdict = classify_globals(result.globals)
    findings.extend(globals_findings(verdict, result.calls))
    metadata: dict[str, Any] = {
        "pickle_protocol": result.protocol,
        "globals": sorted(result.globals),
    }
    if result.opcodes:
        metadata["pickle_features"] = sorted(result.opcodes)
    if context.module_classes:
        metadata["module_classes"] = sorted(context.module_classes)
    if isinstance(root, ModuleDict):
        metadata["whole_module"] = True
    facts = top_level_facts(root) if isinstance(root, dict) else {}
    if facts:
        metadata["facts"] = facts
        for key, name in VERSION_KEYS.items():
            if key in facts and isinstance(facts[key], (str, int, float)):
                metadata[name] = str(facts[key])
        if isinstance(facts.get("hyper_parameters"), dict):
            metadata["hyper_parameters"] = facts["hyper_parameters"]
    groups = optimizer_param_groups(root)
    if groups:
        metadata["optimizer_param_groups"] = groups
    if context.layouts:
        metadata["special_layouts"] = dict(context.layouts)
    # counted in C, in first-seen order like a dict
    metadata["devices"] = dict(Counter(map(attrgetter("device"), flat.tensors.values())))
    return TorchPickle(result, context, flat, verdict, findings, metadata)


def optimizer_param_groups(root: Any, max_depth: int = 4) -> dict[str, list[int]]:
    """Sizes of each optimizer's param groups, by the dotted path of its state dict
    ("optimizer", "optimizer_states.0"), so a training check can match them to a model."""
    found: dict[str, list[int]] = {}
    stack: list[tuple[str, Any, int]] = [("", root, 0)]
    seen = 0
    while stack and seen < 10_000:
        path, node, depth = stack.pop()
        seen += 1
        if isinstance(node, dict):
            groups = node.get("param_groups")
            if isinstance(groups, list) and groups and all(isinstance(g, dict) for g in groups):
                sizes = [len(g["params"]) if isinstance(g.get("params"), list) else 0
                         for g in groups]
                found[path] = sizes
                continue
            items = list(islice(node.items(), 200))
        elif isinstance(node, list):
            items = list(islice(enumerate(node), 50))
        else:
            continue
        if depth < max_depth:
            for key, value in items:
                if isinstance(value, (dict, list)):
                    stack.append((f"{path}.{key}" if path else str(key), value, depth + 1))
    return found


def numpy_dtype_classes(codes: set[str]) -> list[str]:
    """numpy.dtypes class names for dtype codes like 'f8' (parsed by numpy, nothing run)."""
    import re

    names = []
    for code in sorted(codes):
        if not re.fullmatch(r"[<>|=]?[a-zA-Z]\d{0,2}", code):
            continue
        try:
            import numpy as np

            cls = type(np.dtype(code))
        except (TypeError, ValueError, ImportError):
            continue
        if cls.__module__ == "numpy.dtypes":
            names.append(f"numpy.dtypes.{cls.__name__}")
    return names


def pickle_break_finding(tp: TorchPickle, what: str) -> Finding | None:
    """A finding for a pickle that stopped early, keeping what was read before the break."""
    res = tp.result
    if res.complete:
        return None
    kept = len(tp.flat.tensors)
    if res.backstop:
        return Finding(
            "corrupt", "warning",
            f"{res.error}; this says nothing about the file, which may well be intact. "
            f"{kept} tensors were listed before it. Please report it to ckwidget.",
            details={"error": res.error, "position": res.error_position, "backstop": True},
        )
    if res.budget_exceeded:
        return Finding(
            "corrupt", "error",
            f"Reading {what} stopped at a safety budget: {res.error} "
            f"{kept} tensors were listed before it.",
            details={"error": res.error, "position": res.error_position},
        )
    return Finding(
        "corrupt", "error",
        f"{what} is damaged: {res.error}. torch.load fails on this file; "
        f"the {kept} tensors listed before the break are shown, the rest are lost "
        "unless you find an intact copy.",
        details={"error": res.error, "position": res.error_position},
    )


def special_layout_finding(tp: TorchPickle) -> Finding | None:
    layouts = tp.context.layouts
    if not layouts:
        return None
    listing = ", ".join(f"{n} {name}" for name, n in sorted(layouts.items()))
    return Finding(
        "version", "info",
        f"The file holds tensors ckwidget names but does not read itself: {listing}. "
        "torch.load(weights_only=True) materialises them.",
        details={"layouts": dict(layouts)},
    )


def view_problems_finding(tp: TorchPickle) -> Finding | None:
    problems = tp.context.problems
    if not problems:
        return None
    shown = "; ".join(problems[:5])
    more = f" and {len(problems) - 5} more" if len(problems) > 5 else ""
    return Finding(
        "corrupt", "error",
        f"Some tensors do not fit their storages: {shown}{more}. The file is damaged.",
        details={"problems": problems[:100]},
    )


def tensor_keys_of_storage(tensors: dict[str, TensorInfo], storage_keys: set[str]) -> list[str]:
    keys = []
    for name, info in tensors.items():
        source = info.source
        storage = getattr(source, "storage", None)
        if storage is not None and storage.key in storage_keys:
            keys.append(name)
    return keys
