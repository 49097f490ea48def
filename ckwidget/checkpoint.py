"""The reader's product: what a checkpoint holds, described without reading tensor bytes.

Readers build a :class:`Checkpoint`; everything downstream (diagnosis, fixes, the widget)
consumes it. Tensor bytes are read only when :meth:`Checkpoint.state_dict` or
:meth:`Checkpoint.read` is called, through each tensor's :class:`TensorSource`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from operator import eq
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .errors import CheckpointError
from .kinds import FINDING_KINDS, Severity

if TYPE_CHECKING:  # pragma: no cover
    import torch

SEVERITY_RANK: dict[str, int] = {"error": 0, "warning": 1, "info": 2}

# Element sizes in bytes, by torch's dtype name (sub-byte types are packed per byte).
DTYPE_SIZES: dict[str, int] = {
    "float64": 8, "float32": 4, "float16": 2, "bfloat16": 2,
    "complex128": 16, "complex64": 8, "complex32": 4,
    "int64": 8, "int32": 4, "int16": 2, "int8": 1, "uint8": 1, "bool": 1,
    "uint16": 2, "uint32": 4, "uint64": 8,
    "qint8": 1, "quint8": 1, "qint32": 4, "quint4x2": 1, "quint2x4": 1,
    "float8_e4m3fn": 1, "float8_e5m2": 1, "float8_e4m3fnuz": 1, "float8_e5m2fnuz": 1,
    "float8_e8m0fnu": 1, "float4_e2m1fn_x2": 1, "bits8": 1, "bits16": 2,
    "bits1x8": 1, "bits2x4": 1, "bits4x2": 1,
}


class TensorSource(Protocol):
    """Where a tensor's bytes live; ``load`` reads them (memory-mapped where possible).

    A source may also offer ``raw()``: the elements' little-endian bytes as a numpy
    uint8 array when they lie in order in the file, else None. Checks that only count
    values (non-finite ones, see ``diagnosis.sampling``) read small tensors that way,
    without building a tensor for each.
    """

    def load(self) -> torch.Tensor:  # pragma: no cover - protocol
        ...


@dataclass(frozen=True, slots=True)
class TensorInfo:
    """Shape, dtype, device and exact byte size of one stored tensor.

    ``layout`` names tensors that are not plain dense ones ("sparse_coo", "quantized",
    "meta", "nested", "subclass", "numpy"); ``source`` reads the bytes on demand.
    Slotted: a 100,000-key checkpoint holds as many, and an instance dict would double
    their memory.
    """

    shape: tuple[int, ...]
    dtype: str
    device: str
    nbytes: int
    layout: str = "strided"
    source: TensorSource | None = field(default=None, compare=False, repr=False)

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    @property
    def readable(self) -> bool:
        return self.source is not None


@dataclass
class Finding:
    """One thing worth telling the user, with the keys that show it and fixes that help."""

    kind: str
    severity: Severity
    message: str
    keys: list[str] = field(default_factory=list)
    fixes: list[Any] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in FINDING_KINDS:  # the vocabulary is kinds.py's, nowhere else
            raise ValueError(f"{self.kind!r} is not a finding kind (see ckwidget/kinds.py)")

    def __repr__(self) -> str:
        extra = f", {len(self.keys)} keys" if self.keys else ""
        return f"<Finding {self.severity} {self.kind}: {self.message!r}{extra}>"


def sort_findings(findings: Iterable[Finding]) -> list[Finding]:
    """Most severe first; stable within a severity so checks keep their own order."""
    return sorted(findings, key=lambda f: SEVERITY_RANK.get(f.severity, 3))


Loader = Callable[[list[str], Any], dict[str, "torch.Tensor"]]


class Checkpoint:
    """An opened checkpoint: its tensors' metadata, containers, facts and findings.

    ``tensors`` is keyed by dotted path inside the file ("state_dict.fc.weight").
    ``candidates`` lists container paths that look like a model state dict, best
    first ("" is the top level). ``entry(candidate)`` gives that container's tensors
    keyed as the model would name them.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None,
        format: str,
        tensors: dict[str, TensorInfo] | None = None,
        candidates: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        findings: list[Finding] | None = None,
        *,
        size: int = 0,
        members: Mapping[str, Mapping[str, str]] | None = None,
        loader: Loader | None = None,
    ) -> None:
        self.path = Path(path) if path is not None else None
        self.format = format
        self.tensors: dict[str, TensorInfo] = dict(tensors or {})
        self.candidates: list[str] = list(candidates or [])
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.findings: list[Finding] = sort_findings(findings or [])
        self.size = size
        # candidate -> {key inside the container: full dotted key}
        self._members: dict[str, dict[str, str]] = {
            c: dict(m) for c, m in (members or {}).items()
        }
        self._loader = loader
        self.verified: list[Finding] | None = None  # the last verify()'s findings

    # -- views -------------------------------------------------------------------------
    def members(self, candidate: str | None = None) -> dict[str, str]:
        """Map the container's own keys to the full dotted keys in ``tensors``."""
        cand = self.default_candidate() if candidate is None else candidate
        if cand in self._members:
            return self._members[cand]
        if cand == "":
            return {k: k for k in self.tensors}
        prefix = cand + "."
        return {k[len(prefix):]: k for k in self.tensors if k.startswith(prefix)}

    def keys_are_full(self, candidate: str | None = None) -> bool:
        """Whether the container's keys are the file's own keys (the top level of a
        plain state dict): no mapping to build or look up."""
        cand = self.default_candidate() if candidate is None else candidate
        return cand == "" and "" not in self._members

    def entry(self, candidate: str | None = None) -> dict[str, TensorInfo]:
        """The tensors of one container, keyed as a state dict would key them."""
        if self.keys_are_full(candidate):
            return dict(self.tensors)
        members = self.members(candidate)
        tensors = self.tensors
        if (len(members) == len(tensors) and all(map(eq, members, tensors))
                and all(map(eq, members, members.values()))):
            return dict(tensors)  # the whole file, keyed as it is (a plain state dict)
        return {k: tensors[full] for k, full in members.items()}

    def default_candidate(self) -> str:
        return self.candidates[0] if self.candidates else ""

    def finding(self, kind: str) -> Finding | None:
        return next((f for f in self.findings if f.kind == kind), None)

    def has_finding(self, kind: str) -> bool:
        return self.finding(kind) is not None

    # -- bytes -------------------------------------------------------------------------
    def state_dict(
        self,
        candidate: str | None = None,
        map_location: Any = "cpu",
        keys: Iterable[str] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Materialise one container as torch tensors, without running code from the file.

        ``keys`` (container-relative) restricts what is read.
        """
        members = self.members(candidate)
        wanted = list(members) if keys is None else [k for k in keys if k in members]
        full = [members[k] for k in wanted]
        loaded = self._load(full, map_location)
        return {k: loaded[f] for k, f in zip(wanted, full)}

    def read(self, key: str, map_location: Any = "cpu") -> torch.Tensor:
        """One tensor by its full dotted key, read on demand."""
        if key not in self.tensors:
            raise CheckpointError(f"The checkpoint has no tensor named {key!r}.")
        if self.tensors[key].source is not None:
            # One tensor: map just its bytes rather than have torch.load open the whole file.
            return load_from_sources(self.tensors, [key], map_location)[key]
        return self._load([key], map_location)[key]

    def load(self, full_keys: Iterable[str], map_location: Any = "cpu") -> dict[str, torch.Tensor]:
        """Materialise tensors by their full dotted keys (any container), safely."""
        keys = list(full_keys)
        unknown = [k for k in keys if k not in self.tensors]
        if unknown:
            raise CheckpointError(f"The checkpoint has no tensor named {unknown[0]!r}.")
        return self._load(keys, map_location)

    def _load(self, full_keys: list[str], map_location: Any) -> dict[str, torch.Tensor]:
        if self._loader is not None:
            return self._loader(full_keys, map_location)
        return load_from_sources(self.tensors, full_keys, map_location)

    def verify(self, progress: Callable[[int, int], Any] | None = None) -> list[Finding]:
        """Read every byte of the file(s) once and report what does not match.

        torch zip archives: the CRC-32 of every record against the zip directory (torch
        never checks them, so a damaged storage loads as wrong weights without a word);
        safetensors files and sharded folders: every byte is read back, and the file must
        still be the one opened. Other formats: nothing is read, nothing found.
        Memory stays bounded (the bytes are streamed in chunks). ``progress``, if given,
        is called as ``progress(bytes_done, bytes_total)`` with increasing counts, the
        last one the total. The findings (``corrupt`` errors naming the record and its
        tensors) are returned and kept as ``verified``; ``findings`` is left as it was.
        Raises CheckpointChangedError if the file changed since it was opened.
        """
        from .readers.verify import verify

        self.verified = verify(self, progress)
        return list(self.verified)

    # -- constructors ------------------------------------------------------------------
    @classmethod
    def from_state_dict(
        cls, state_dict: Mapping[str, Any], *, name: str = "<in-memory state dict>"
    ) -> Checkpoint:
        """Describe an in-memory state dict, so a dict can be diagnosed like a file."""
        tensors = {k: describe_tensor(v) for k, v in state_dict.items() if _is_tensor(v)}
        ckpt = cls(None, "in-memory", tensors, [""], {"name": name})
        return ckpt

    def __repr__(self) -> str:
        where = str(self.path) if self.path is not None else self.metadata.get("name", "")
        return (
            f"<Checkpoint {self.format} {where!s}: {len(self.tensors)} tensors, "
            f"{len(self.findings)} findings>"
        )


def _is_tensor(value: Any) -> bool:
    import torch

    return isinstance(value, torch.Tensor)


class _InMemorySource:
    __slots__ = ("tensor",)

    def __init__(self, tensor: torch.Tensor) -> None:
        self.tensor = tensor

    def load(self) -> torch.Tensor:
        return self.tensor


def dtype_name(dtype: Any) -> str:
    """torch.float32 -> "float32"."""
    return str(dtype).removeprefix("torch.")


def describe_tensor(t: torch.Tensor) -> TensorInfo:
    """TensorInfo of a live tensor (meta, sparse and lazy included). A lazy module's
    uninitialised parameter has no shape yet: it takes the checkpoint's when loaded."""
    from torch.nn.parameter import is_lazy

    if is_lazy(t):
        return TensorInfo((), dtype_name(t.dtype), str(t.device), 0, "lazy")
    layout = "strided"
    if t.is_meta:
        layout = "meta"
    elif t.is_sparse:
        layout = "sparse_coo"
    elif t.is_quantized:
        layout = "quantized"
    nbytes = t.numel() * t.element_size()
    return TensorInfo(
        tuple(t.shape), dtype_name(t.dtype), str(t.device), nbytes, layout, _InMemorySource(t)
    )


def load_from_sources(
    tensors: Mapping[str, TensorInfo], full_keys: list[str], map_location: Any
) -> dict[str, torch.Tensor]:
    """Read tensors through their own sources, then place them as ``map_location`` asks."""
    out: dict[str, torch.Tensor] = {}
    for key in full_keys:
        info = tensors[key]
        if info.source is None:
            raise CheckpointError(
                f"Tensor {key!r} ({info.layout}) has no bytes ckwidget can read safely."
            )
        out[key] = place(info.source.load(), map_location, info.device)
    return out


def place(tensor: torch.Tensor, map_location: Any, saved_device: str = "cpu") -> torch.Tensor:
    """Apply torch.load-style ``map_location`` (device, string, dict or callable)."""
    import torch

    if map_location is None:
        target: Any = saved_device
    elif callable(map_location) and not isinstance(map_location, (str, torch.device)):
        result = map_location(tensor, saved_device)
        return result if isinstance(result, torch.Tensor) else tensor
    elif isinstance(map_location, Mapping):
        target = map_location.get(saved_device, saved_device)
    else:
        target = map_location
    target = str(target)
    if target == str(tensor.device):
        return tensor
    try:
        return tensor.to(target)
    except (RuntimeError, AssertionError) as exc:
        raise CheckpointError(
            f"Cannot place a tensor on {target!r} on this machine ({exc}); "
            "pass map_location='cpu'."
        ) from None
