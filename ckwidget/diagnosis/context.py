"""What every check sees: the checkpoint, the chosen entry, the model and the alignment."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..checkpoint import Checkpoint, Finding, TensorInfo
from .align import Alignment
from .model_side import ModelSide


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
    # Load-time facts filled by the checks: kinds that stop torch.load as is.
    blockers: list[str] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)

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
        cached = self.notes.get("members")
        if cached is None:
            cached = self.notes["members"] = self.ckpt.members(self.entry)
        return cached

    def full_key(self, key: str) -> str:
        """The dotted path in the file of an entry-relative key."""
        return self.members.get(key, key)
