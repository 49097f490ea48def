"""Load-time fix kinds: they change how the checkpoint is read (which container, onto
which device, which globals torch may build, or ckwidget's own reader), not the dict.
Their code is the snippet's reading step, which ``fixes/codegen.py`` writes from the
plan as a whole (``Plan.entry``, ``map_location``, ``allowed_globals``, ``extracts``)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import ClassVar

from ...errors import FixError
from ...readers.safety import is_malicious, is_vetted
from .base import (
    Fix,
    _plural,
    _short,
)


def entry_expr(var: str, entry: str) -> str:
    """``ckpt["state_dict"]["model"]`` for the dotted container path "state_dict.model"."""
    expr = var
    for part in entry.split(".") if entry else []:
        expr += f"[{int(part)}]" if part.isdigit() else f"[{part!r}]"
    return expr


@dataclass(frozen=True)
class SelectEntry(Fix):
    """Read the model weights from one container of the checkpoint ("" is the top level)."""

    entry: str
    kind: ClassVar[str] = "select-entry"
    rank: ClassVar[float] = 0
    load_time: ClassVar[bool] = True

    def describe(self) -> str:
        if not self.entry:
            return "Use the checkpoint's top level as the state dict."
        return f"Use the weights stored under {self.entry!r} in the checkpoint."



@dataclass(frozen=True)
class MapLocation(Fix):
    """Load tensors onto ``device`` (a CUDA-saved file on a CPU machine)."""

    device: str = "cpu"
    kind: ClassVar[str] = "map-location"
    rank: ClassVar[float] = 0.5
    load_time: ClassVar[bool] = True

    def describe(self) -> str:
        return f"Load every tensor onto {self.device!r} (map_location={self.device!r})."



@dataclass(frozen=True)
class AllowGlobals(Fix):
    """Let torch.load(weights_only=True) accept these harmless globals by exact name."""

    names: tuple[str, ...]
    kind: ClassVar[str] = "allow-globals"
    rank: ClassVar[float] = 0.5
    load_time: ClassVar[bool] = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", tuple(self.names))
        for name in self.names:
            if not re.fullmatch(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)+", name):
                raise FixError(f"{name!r} is not a dotted global name like 'module.Class'.")
            if is_malicious(name):
                raise FixError(
                    f"{name} can run code or touch the system; ckwidget will not allowlist it."
                )
            if not is_vetted(name):
                raise FixError(
                    f"{name} is not a plain data constructor ckwidget has vetted; torch's "
                    "weights-only loader would call it with arguments from the file, so "
                    "ckwidget will not allowlist it (read the weights with extract-weights)."
                )

    def describe(self) -> str:
        return (
            f"Allow {_plural(len(self.names), 'global')} the file needs "
            f"({_short(self.names)}) in torch.load's weights-only mode."
        )



@dataclass(frozen=True)
class ExtractWeights(Fix):
    """Read the tensors with ckwidget's safe reader where torch.load(weights_only=True)
    cannot: a whole pickled nn.Module (its class would have to run), pickle protocol 4+
    files, classes that are not importable.

    This is the one fix whose snippet needs ckwidget installed: it calls the public
    helper ``ckwidget.extract_weights(PATH, entry=...)``, since plain torch cannot read
    these files without unpickling (and so running) what they name. ``why`` says why
    torch cannot (shown in ``describe``).
    """

    why: str = field(default="", compare=False)
    kind: ClassVar[str] = "extract-weights"
    rank: ClassVar[float] = 0.5
    load_time: ClassVar[bool] = True

    def describe(self) -> str:
        why = f" ({self.why})" if self.why else ""
        return (
            "Read the tensors with ckwidget's safe reader, which imports and runs nothing "
            f"from the file, because torch.load(weights_only=True) cannot{why}; the "
            "code for this step needs ckwidget."
        )

