"""What every check sees: the checkpoint, the chosen entry, the model and the alignment."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..checkpoint import Checkpoint, Finding, TensorInfo
from .align import Alignment
from .model_side import ModelSide

NOT_YET = object()  # a field no check has filled in yet


@dataclass
class Context:
    ckpt: Checkpoint
    entry: str
    entry_reason: str
    model: ModelSide
    alignment: Alignment
    optimizer: Any = None
    sample_input: Any = None
    map_location: Any = None
    requested_entry: str | None = None  # the entry= the caller asked for, if any
    # What checks find for later checks and the summary (each written by one check):
    # finding kinds that stop torch.load as is (every file check)
    blockers: list[str] = field(default_factory=list)
    # why torch.load(weights_only=True) cannot read the file, "" when it can (version)
    needs_reader: str = ""
    # model weights a quantized file's codes would land on: not values (architecture)
    codes: list[str] = field(default_factory=list)
    # the file's quantized layers, found once (architecture; None: none; unset: not yet)
    quantized: Any = field(default=NOT_YET)
    # the adapter config for LoRA merges, and the LoRA tensors left unmerged (adapters)
    adapter_config: Any = None
    unmerged_lora: set[str] = field(default_factory=set)
    # the fixes the plan will hold, for the checks that run after it (pipeline)
    plan_fixes: list[Any] = field(default_factory=list)
    _members: dict[str, str] | None = field(default=None, repr=False)

    @property
    def entry_infos(self) -> dict[str, TensorInfo]:
        return self.alignment.ckpt

    @property
    def facts(self) -> dict[str, Any]:
        """The file's top-level non-tensor facts (epoch, hyper_parameters, versions...)."""
        meta = self.ckpt.metadata
        nested = meta.get("facts")
        return {**meta, **nested} if isinstance(nested, dict) else dict(meta)

    def file_findings(self, *kinds: str) -> list[Finding]:
        return [f for f in self.ckpt.findings if f.kind in kinds]

    @property
    def members(self) -> dict[str, str]:
        """Entry-relative key -> full dotted key in the file (computed once)."""
        if self._members is None:
            self._members = self.ckpt.members(self.entry)
        return self._members

    def full_key(self, key: str) -> str:
        """The dotted path in the file of an entry-relative key."""
        return self.members.get(key, key)
