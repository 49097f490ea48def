"""safetensors files: read and validate the JSON header only; tensor bytes stay on disk.

The checks follow the reference reader (the Rust ``safetensors`` crate): header length
cap, UTF-8 JSON object, known dtype names, non-negative shapes, element counts with
checked arithmetic, byte size = elements x dtype size, offsets that tile the data
section with no overlap or hole, and a file length that agrees with the header. Every
violation becomes a Finding; tensors whose own entry is valid are still listed.
"""

from __future__ import annotations

import json
import mmap
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..checkpoint import Checkpoint, Finding, TensorInfo
from .budgets import Budgets
from .filestamp import FileStamp, ensure_cached, open_for_read

if TYPE_CHECKING:  # pragma: no cover
    import torch

# safetensors dtype name -> (torch dtype name, bits per element)
SAFETENSORS_DTYPES: dict[str, tuple[str, int]] = {
    "F64": ("float64", 64), "F32": ("float32", 32), "F16": ("float16", 16),
    "BF16": ("bfloat16", 16), "I64": ("int64", 64), "I32": ("int32", 32),
    "I16": ("int16", 16), "I8": ("int8", 8), "U8": ("uint8", 8), "U16": ("uint16", 16),
    "U32": ("uint32", 32), "U64": ("uint64", 64), "BOOL": ("bool", 8),
    "F8_E4M3": ("float8_e4m3fn", 8), "F8_E5M2": ("float8_e5m2", 8),
    "F8_E4M3FNUZ": ("float8_e4m3fnuz", 8), "F8_E5M2FNUZ": ("float8_e5m2fnuz", 8),
    "F8_E8M0": ("float8_e8m0fnu", 8), "C64": ("complex64", 64), "C128": ("complex128", 128),
    "F4": ("float4_e2m1fn_x2", 4), "F6_E2M3": ("float6_e2m3fn", 6),
    "F6_E3M2": ("float6_e3m2fn", 6),
}
U64_MAX = (1 << 64) - 1
REDOWNLOAD = (
    "Download or copy the file again (compare its size with the source), or re-save "
    "it with safetensors.torch.save_file."
)


def read_safetensors(path: Path, head: bytes, budgets: Budgets) -> Checkpoint:
    """Describe a .safetensors file from its header, never reading tensor data."""
    stamp = FileStamp.of(path)
    size = stamp.size
    findings: list[Finding] = []
    metadata: dict[str, Any] = {}

    def done(tensors: dict[str, TensorInfo] | None = None) -> Checkpoint:
        tensors = tensors or {}
        return Checkpoint(
            path, "safetensors", tensors, [""] if tensors else [], metadata, findings, size=size
        )

    if size < 8:
        findings.append(Finding(
            "truncated", "error",
            f"{path.name} is only {size} bytes: a safetensors file starts with an 8-byte "
            f"header length. {REDOWNLOAD}",
        ))
        return done()
    with open_for_read(path) as fh:  # a remote cache file fetches what is read
        n = int.from_bytes(fh.read(8), "little")
        metadata["header_bytes"] = n
        if n > budgets.max_json:
            findings.append(Finding(
                "corrupt", "error",
                f"{path.name} declares a {n:,}-byte safetensors header, more than the "
                f"{budgets.max_json:,}-byte limit (safetensors refuses headers over 100 MB); "
                f"the file is damaged or not safetensors. {REDOWNLOAD}",
            ))
            return done()
        if 8 + n > size:
            findings.append(Finding(
                "truncated", "error",
                f"{path.name} declares a {n:,}-byte header but only {size - 8:,} bytes "
                f"follow the length field: the file is cut short. {REDOWNLOAD}",
            ))
            return done()
        raw = fh.read(n)
    header = _parse_header(path.name, raw, findings)
    if header is None:
        return done()
    data_start = 8 + n
    data_len = size - data_start
    metadata["data_bytes"] = data_len
    meta = header.pop("__metadata__", None)
    if meta is not None:
        if isinstance(meta, dict) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in meta.items()
        ):
            metadata["safetensors_metadata"] = dict(meta)
        else:
            metadata["safetensors_metadata"] = _bounded_repr(meta)
            findings.append(Finding(
                "corrupt", "error",
                f"{path.name}'s __metadata__ must map strings to strings; safetensors "
                f"refuses to open it. Re-save the file with string metadata values.",
                ["__metadata__"],
            ))
    tensors, spans = _tensor_entries(stamp, header, data_start, data_len, findings)
    _check_layout(path.name, spans, data_len, findings)
    cut = [f for f in findings if f.kind == "truncated"]
    if len(cut) > 1:  # the per-tensor finding already says it; keep the one with keys
        findings.remove(next(f for f in cut if not f.keys))
    return done(tensors)


def _parse_header(name: str, raw: bytes, findings: list[Finding]) -> dict[str, Any] | None:
    duplicates: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in items:
            if k in out:
                duplicates.append(k)
            out[k] = v
        return out

    def no_constants(token: str) -> Any:
        raise ValueError(f"{token} is not valid JSON")

    problem = None
    if not raw.lstrip(b" ").startswith(b"{"):
        problem = "does not start with '{'"
    else:
        try:
            header = json.loads(
                raw.decode("utf-8"), object_pairs_hook=pairs, parse_constant=no_constants
            )
        except UnicodeDecodeError:
            problem = "is not valid UTF-8"
        except (ValueError, RecursionError) as exc:
            problem = f"is not valid JSON ({str(exc)[:120]})"
    if problem is None and not isinstance(header, dict):
        problem = "is not a JSON object"
    if problem is not None:
        findings.append(Finding(
            "corrupt", "error",
            f"{name}'s safetensors header {problem}; the file is damaged or was written "
            f"by something other than safetensors. {REDOWNLOAD}",
        ))
        return None
    if duplicates:
        shown = sorted(set(duplicates))
        findings.append(Finding(
            "corrupt", "warning",
            f"{name}'s safetensors header repeats {len(shown)} key(s) "
            f"({', '.join(map(repr, shown[:5]))}); safetensors silently keeps the last "
            f"copy, and so does ckwidget, but other readers may differ. Re-save the file "
            f"from the original tensors.",
            shown[:1000],
        ))
    return header


def _tensor_entries(
    stamp: FileStamp,
    header: dict[str, Any],
    data_start: int,
    data_len: int,
    findings: list[Finding],
) -> tuple[dict[str, TensorInfo], list[tuple[int, int, str]]]:
    """Validate each entry; returns the valid tensors and every usable byte span."""
    path = stamp.path
    tensors: dict[str, TensorInfo] = {}
    spans: list[tuple[int, int, str]] = []
    bad: list[tuple[str, str]] = []
    beyond: list[str] = []
    mapped = _MappedFile(stamp)
    for key, entry in header.items():
        if not isinstance(entry, dict):
            bad.append((key, "its entry is not an object"))
            continue
        offsets = entry.get("data_offsets")
        if not (
            isinstance(offsets, list) and len(offsets) == 2
            and all(_is_uint(o) for o in offsets)
        ):
            bad.append((key, f"data_offsets {_short(offsets)} are not two non-negative integers"))
            continue
        begin, end = offsets
        if end < begin:
            bad.append((key, f"data_offsets {_short(offsets)} end before they begin"))
            continue
        spans.append((begin, end, key))
        dtype_code = entry.get("dtype")
        if not isinstance(dtype_code, str) or dtype_code not in SAFETENSORS_DTYPES:
            bad.append((key, f"dtype {_short(dtype_code)} is not a safetensors dtype"))
            continue
        shape = entry.get("shape")
        if not (isinstance(shape, list) and all(_is_uint(s) for s in shape)):
            bad.append((key, f"shape {_short(shape)} is not a list of non-negative integers"))
            continue
        dtype, bits = SAFETENSORS_DTYPES[dtype_code]
        numel = 1
        overflow = False
        for s in shape:
            numel *= s
            if numel > U64_MAX:
                overflow = True
                break
        if overflow or numel * bits > U64_MAX:
            bad.append((key, f"shape {_short(shape)} overflows a 64-bit byte count"))
            continue
        if (numel * bits) % 8:
            bad.append((key, f"{numel} {dtype_code} elements do not fill whole bytes"))
            continue
        nbytes = numel * bits // 8
        if nbytes != end - begin:
            bad.append((
                key,
                f"shape {_short(shape)} x {dtype_code} needs {nbytes:,} bytes but "
                f"data_offsets give {end - begin:,}",
            ))
            continue
        source = None
        if end > data_len:
            beyond.append(key)
        elif _torch_can_hold(dtype, shape):
            source = SafetensorsSource(mapped, data_start + begin, nbytes, dtype, tuple(shape))
        listed = tuple(shape)
        if dtype == "float4_e2m1fn_x2" and listed and listed[-1] % 2 == 0:
            # safetensors counts 4-bit values; torch's x2 dtype holds two per element
            listed = (*listed[:-1], listed[-1] // 2)
        tensors[key] = TensorInfo(listed, dtype, "cpu", nbytes, "strided", source)
    if bad:
        shown = "; ".join(f"{k!r}: {why}" for k, why in bad[:3])
        more = f" (and {len(bad) - 3} more)" if len(bad) > 3 else ""
        findings.append(Finding(
            "corrupt", "error",
            f"{len(bad)} tensor entr{'y' if len(bad) == 1 else 'ies'} in "
            f"{path.name}'s header {'is' if len(bad) == 1 else 'are'} invalid and "
            f"left out: {shown}{more}. safetensors refuses the whole file. {REDOWNLOAD}",
            [k for k, _ in bad][:1000],
        ))
    if beyond:
        findings.append(Finding(
            "truncated", "error",
            f"{len(beyond)} tensor(s) in {path.name} lie past the end of the file "
            f"({data_len:,} data bytes present): the file is cut short and those tensors "
            f"cannot be read. {REDOWNLOAD}",
            beyond[:1000],
        ))
    return tensors, spans


def _check_layout(
    name: str, spans: list[tuple[int, int, str]], data_len: int, findings: list[Finding]
) -> None:
    """Offsets must tile [0, data_len) exactly, in order, like the reference reader."""
    overlaps: list[str] = []
    holes: list[str] = []
    expected = 0
    for begin, end, key in sorted(spans):
        if begin < expected:
            overlaps.append(key)
        elif begin > expected:
            holes.append(key)
        expected = max(expected, end)
    if overlaps:
        findings.append(Finding(
            "corrupt", "error",
            f"{len(overlaps)} tensor(s) in {name} share bytes with another tensor "
            f"(overlapping data_offsets, e.g. {overlaps[0]!r}); safetensors refuses such "
            f"files. Re-save from the original tensors with safetensors.torch.save_file.",
            overlaps[:1000],
        ))
    if holes:
        findings.append(Finding(
            "corrupt", "error",
            f"{name}'s data section has unused gaps before {len(holes)} tensor(s) "
            f"(e.g. {holes[0]!r}); safetensors refuses files with holes. Re-save it with "
            f"safetensors.torch.save_file.",
            holes[:1000],
        ))
    if expected < data_len:
        findings.append(Finding(
            "corrupt", "error",
            f"{name} has {data_len - expected:,} bytes after the last tensor that the header "
            f"does not describe; safetensors refuses it. The file was appended to or "
            f"damaged; {REDOWNLOAD}",
        ))
    elif expected > data_len:
        findings.append(Finding(
            "truncated", "error",
            f"{name}'s header describes {expected:,} data bytes but the file holds only "
            f"{data_len:,}: it is cut short. {REDOWNLOAD}",
        ))


def _is_uint(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= U64_MAX


def _short(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (list, int, str)) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _bounded_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 2000 else text[:2000] + "..."


def _torch_can_hold(dtype: str, shape: list[int]) -> bool:
    if dtype in ("float6_e2m3fn", "float6_e3m2fn"):
        return False  # torch has no 6-bit dtypes
    if dtype == "float4_e2m1fn_x2":
        return bool(shape) and shape[-1] % 2 == 0
    return True


class _MappedFile:
    """One copy-on-write memory map per file, opened on first use and shared; the file
    must still be the one whose header was read (its stamp)."""

    __slots__ = ("_map", "stamp")

    def __init__(self, stamp: FileStamp) -> None:
        self.stamp = stamp
        self._map: mmap.mmap | None = None

    @property
    def path(self) -> Path:
        return self.stamp.path

    def buffer(self, offset: int = 0, nbytes: int = 0) -> mmap.mmap:
        """The map; ``[offset, offset + nbytes)`` of it is about to be read (a remote
        object's cache file fetches that range first)."""
        self.stamp.verify()
        if nbytes:
            ensure_cached(self.stamp.path, offset, nbytes)
        if self._map is None:
            with open(self.path, "rb") as fh:
                self._map = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_COPY)
        return self._map


class SafetensorsSource:
    """Reads one tensor's bytes through the file's memory map (never writes the file)."""

    __slots__ = ("dtype", "file", "nbytes", "offset", "shape")

    def __init__(
        self, file: _MappedFile, offset: int, nbytes: int, dtype: str, shape: tuple[int, ...]
    ) -> None:
        self.file = file
        self.offset = offset
        self.nbytes = nbytes
        self.dtype = dtype
        self.shape = shape

    def load(self) -> torch.Tensor:
        import torch

        dtype = getattr(torch, self.dtype)
        shape = list(self.shape)
        if dtype == torch.float4_e2m1fn_x2:
            shape[-1] //= 2  # two 4-bit values per stored element
        if self.nbytes == 0:
            return torch.empty(shape, dtype=dtype)
        raw = torch.frombuffer(
            self.file.buffer(self.offset, self.nbytes), dtype=torch.uint8, count=self.nbytes,
            offset=self.offset
        )
        width = torch.empty((), dtype=dtype).element_size()
        if sys.byteorder == "big" and width > 1:
            raw = raw.view(-1, width).flip(-1).reshape(-1)  # safetensors is little-endian
        return raw.view(dtype).reshape(shape)

    def raw(self) -> Any:
        """The tensor's bytes (safetensors stores them in order, little-endian)."""
        import numpy as np

        if self.nbytes == 0:
            return np.zeros(0, np.uint8)
        return np.frombuffer(self.file.buffer(self.offset, self.nbytes), np.uint8, self.nbytes,
                             self.offset)
