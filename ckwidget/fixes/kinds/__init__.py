"""The fix kinds: small immutable values that repair a checkpoint for one model.

Each fix knows three things: a sentence saying what it does (``describe``), the plain
torch lines that do it (``code``), and a pure ``transform`` of a state dict. The same
``transform`` runs on :class:`~ckwidget.checkpoint.TensorInfo` values (a preview that
reads no bytes) and on real tensors (an apply), so the preview cannot drift from what
the apply does. One module per family: ``load_time`` (how the file is read), ``keys``
(prefixes, renames), ``tensors`` (per-key changes), ``joins`` (tensors merged or split),
``adapters`` (what training libraries leave: LoRA layers, pruning masks).

How to add a fix kind:

1. Write the class in the family's module (or a new module): a frozen dataclass
   subclassing :class:`Fix` with ``kind``, ``rank`` (its place in a plan: see
   ``Fix.rank``), ``describe``, ``code`` and ``transform`` (and ``problems``).
2. Add it to ``KINDS`` below: ``FIX_KINDS`` and the exports derive from that tuple.
3. Give it a row in docs/reference.md (the reference test checks it) and, where a
   diagnosis should offer it, build it in the check or the planner that finds the cause.
"""

from __future__ import annotations

from .adapters import FoldPruneMask, MergeLora
from .base import FLOATING_DTYPES, CodeContext, Fix
from .joins import FoldWeightNorm, FuseKeys, SplitKeys, UnfoldWeightNorm, fold_weight_norm
from .keys import AddPrefix, RenameKeys, StripPrefix, readable_rule
from .load_time import AllowGlobals, ExtractWeights, MapLocation, SelectEntry, entry_expr
from .tensors import CastDtype, DropKeys, Reshape, ResizeCopy, Transpose, torch_dtype

KINDS: tuple[type[Fix], ...] = (
    SelectEntry, MapLocation, AllowGlobals, ExtractWeights,
    StripPrefix, AddPrefix, RenameKeys,
    FoldWeightNorm, UnfoldWeightNorm, FuseKeys, SplitKeys, MergeLora, FoldPruneMask,
    DropKeys, Transpose, Reshape, ResizeCopy, CastDtype,
)
FIX_KINDS: dict[str, type[Fix]] = {cls.kind: cls for cls in KINDS}

__all__ = [
    "FIX_KINDS", "FLOATING_DTYPES", "KINDS", "CodeContext", "Fix", "entry_expr",
    "fold_weight_norm", "readable_rule", "torch_dtype",
    *(cls.__name__ for cls in KINDS),
]
