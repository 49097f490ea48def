"""Public helpers the generated snippets may call where plain torch cannot do the job.

``extract_weights`` takes the tensors out of a whole pickled ``nn.Module`` without
unpickling it: ckwidget's reader records the module tree (``_modules`` /
``_parameters`` / ``_buffers``) as names and storages, and this helper turns that tree
back into state-dict keys ("encoder.layers.0.weight").
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from ..checkpoint import Checkpoint
from ..errors import FixError

if TYPE_CHECKING:  # pragma: no cover
    import torch

_TREE = ("_modules", "_parameters", "_buffers")


def _tree_key(parts: list[str]) -> str | None:
    """["_modules", "fc", "_parameters", "weight"] -> "fc.weight" (None if not a tree path)."""
    names: list[str] = []
    i = 0
    while i + 1 < len(parts):
        tag, name = parts[i], parts[i + 1]
        if tag == "_modules":
            names.append(name)
            i += 2
            continue
        if tag in ("_parameters", "_buffers") and i + 2 == len(parts):
            names.append(name)
            return ".".join(names)
        return None
    return None


def module_tree_members(ckpt: Checkpoint, entry: str | None = None) -> dict[str, str]:
    """State-dict key -> full dotted key for the tensors of a pickled module tree.

    ``entry`` names the module object's path inside the file ("" or None: the largest
    tree found). Falls back to the reader's best candidate when no tree is recorded.
    """
    trees: dict[str, dict[str, str]] = {}
    for full in ckpt.tensors:
        parts = full.split(".")
        start = next((i for i, p in enumerate(parts) if p in _TREE), None)
        if start is None:
            continue
        key = _tree_key(parts[start:])
        if key is None:
            continue
        root = ".".join(parts[:start])
        trees.setdefault(root, {})[key] = full
    if entry and entry in trees:
        return trees[entry]
    if trees and not entry:
        return max(trees.values(), key=len)
    candidate = entry if entry else ckpt.default_candidate()
    members = ckpt.members(candidate)
    if not members:
        raise FixError(
            "No pickled module tree (its _parameters and _buffers) was found in the "
            "checkpoint, so there are no weights to extract."
        )
    return dict(members)


def load_full_keys(
    ckpt: Checkpoint, full_keys: list[str], map_location: Any = "cpu"
) -> dict[str, torch.Tensor]:
    """Read tensors by their full dotted keys in one pass through the reader."""
    loader = getattr(ckpt, "_load", None)
    if loader is not None:
        return loader(full_keys, map_location)
    return {k: ckpt.read(k, map_location) for k in full_keys}  # pragma: no cover


def extract_weights(
    path: str | os.PathLike[str] | Checkpoint,
    map_location: Any = "cpu",
    entry: str | None = None,
) -> dict[str, torch.Tensor]:
    """The state dict of a whole pickled ``nn.Module``, read safely (nothing is imported).

    ``torch.save(model)`` files need the model's class to unpickle; this reads the
    module tree's tensors directly, so ``model.load_state_dict(extract_weights(path))``
    works without the class and without executing anything from the file.
    """
    if isinstance(path, Checkpoint):
        ckpt = path
    else:
        from ..readers import open_checkpoint

        ckpt = open_checkpoint(path)
    members = module_tree_members(ckpt, entry)
    loaded = load_full_keys(ckpt, list(members.values()), map_location)
    return {key: loaded[full] for key, full in members.items()}

