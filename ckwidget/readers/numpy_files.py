"""NumPy .npy and .npz files: array headers only, never pickles.

A .npy file holds one array; ckwidget keys it by the file's stem ("fc.weight.npy" ->
"fc.weight", falling back to "array"), so per-parameter .npy files line up with model
keys. A .npz archive holds one .npy per member and is keyed like ``numpy.load`` keys it
(the member name without ".npy"). Object arrays need pickle to load, so they are
reported and never read.
"""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ..checkpoint import Checkpoint, Finding, TensorInfo
from ..errors import BudgetExceededError, CheckpointError
from .budgets import Budgets
from .filestamp import FileStamp

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch

# numpy dtype kind + itemsize -> torch dtype name
_TORCH_NAMES = {
    ("f", 2): "float16", ("f", 4): "float32", ("f", 8): "float64",
    ("i", 1): "int8", ("i", 2): "int16", ("i", 4): "int32", ("i", 8): "int64",
    ("u", 1): "uint8", ("u", 2): "uint16", ("u", 4): "uint32", ("u", 8): "uint64",
    ("b", 1): "bool", ("c", 8): "complex64", ("c", 16): "complex128",
}
REDOWNLOAD = "Download or copy the file again, or re-save it with numpy.save."


class _BadHeader(Exception):
    """The array header cannot be read; the message says why."""


def read_header(fh: IO[bytes]) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran_order, dtype) from an open .npy stream, as numpy.load reads it."""
    from numpy.lib import format as npformat

    try:
        version = npformat.read_magic(fh)
        if version == (1, 0):
            return npformat.read_array_header_1_0(fh)
        # 3.0 differs from 2.0 only in allowing UTF-8 field names of structured dtypes.
        return npformat.read_array_header_2_0(fh)
    except Exception as exc:  # numpy's parser raises ValueError, SyntaxError, TokenError...
        raise _BadHeader(str(exc)[:200] or type(exc).__name__) from None


def torch_dtype_name(dtype: np.dtype) -> str | None:
    """The torch name of a numeric numpy dtype, or None for strings, records, objects."""
    if dtype.fields is not None or dtype.subdtype is not None:
        return None
    return _TORCH_NAMES.get((dtype.kind, dtype.itemsize))


def _describe(
    key: str,
    shape: tuple[int, ...],
    fortran: bool,
    dtype: np.dtype,
    problems: dict[str, list[str]],
) -> tuple[TensorInfo | None, int]:
    """TensorInfo (without source) and byte size, or None with the problem recorded."""
    numel = 1
    for s in shape:
        numel *= s
    nbytes = numel * dtype.itemsize
    if dtype.hasobject:
        problems["object"].append(key)
        return None, nbytes
    name = torch_dtype_name(dtype)
    if name is None:
        problems["non-numeric"].append(f"{key} ({dtype.str})")
        return None, nbytes
    return TensorInfo(tuple(shape), name, "cpu", nbytes, "strided"), nbytes


def _problem_findings(
    name: str, problems: dict[str, list[str]], findings: list[Finding]
) -> None:
    if problems["object"]:
        keys = problems["object"]
        findings.append(Finding(
            "unsafe-globals", "warning",
            f"{len(keys)} array(s) in {name} hold Python objects ({', '.join(keys[:3])}): "
            f"numpy needs pickle (allow_pickle=True) to load them, which can run code from "
            f"the file. ckwidget leaves them out; load them only if you trust the source, "
            f"and convert them to numeric arrays.",
            keys[:1000],
        ))
    if problems["non-numeric"]:
        keys = problems["non-numeric"]
        findings.append(Finding(
            "foreign-format", "info",
            f"{len(keys)} array(s) in {name} are not numeric tensors "
            f"({', '.join(keys[:3])}); they are listed in metadata['non_tensor_arrays'] "
            f"and left out of the tensors.",
        ))


def read_npy(path: Path, head: bytes, budgets: Budgets) -> Checkpoint:
    """Describe a .npy file from its header; the array is memory-mapped on demand."""
    stamp = FileStamp.of(path)
    size = stamp.size
    key = _npy_key(path.name)
    findings: list[Finding] = []
    metadata: dict[str, Any] = {}
    tensors: dict[str, TensorInfo] = {}
    with open(path, "rb") as fh:
        try:
            shape, fortran, dtype = read_header(fh)
        except _BadHeader as exc:
            findings.append(Finding(
                "corrupt", "error",
                f"{path.name} starts like a NumPy .npy file but its header cannot be read "
                f"({exc}). {REDOWNLOAD}",
            ))
            return Checkpoint(path, "npy", metadata=metadata, findings=findings, size=size)
        offset = fh.tell()
    metadata.update(npy_version=_version_of(head), fortran_order=fortran, numpy_dtype=dtype.str)
    problems: dict[str, list[str]] = {"object": [], "non-numeric": []}
    info, nbytes = _describe(key, shape, fortran, dtype, problems)
    _problem_findings(path.name, problems, findings)
    if problems["non-numeric"]:
        metadata["non_tensor_arrays"] = {key: {"dtype": dtype.str, "shape": list(shape)}}
    if info is not None:
        if offset + nbytes > size:
            findings.append(Finding(
                "truncated", "error",
                f"{path.name} declares a {dtype.str}{list(shape)} array of {nbytes:,} bytes "
                f"but holds only {max(size - offset, 0):,} after its header: the file is cut "
                f"short. {REDOWNLOAD}",
                [key],
            ))
        else:
            if offset + nbytes < size:
                findings.append(Finding(
                    "corrupt", "warning",
                    f"{path.name} has {size - offset - nbytes:,} unexpected bytes after the "
                    f"array; numpy ignores them, but the file may be damaged.",
                ))
            info = _with_source(info, NpySource(stamp, offset, dtype, shape, fortran))
        tensors[key] = info
    return Checkpoint(
        path, "npy", tensors, [""] if tensors else [], metadata, findings, size=size
    )


def read_npz(path: Path, names: list[str], budgets: Budgets) -> Checkpoint:
    """Describe a .npz archive (numpy.savez / savez_compressed) from member headers."""
    stamp = FileStamp.of(path)
    size = stamp.size
    findings: list[Finding] = []
    metadata: dict[str, Any] = {}
    tensors: dict[str, TensorInfo] = {}
    problems: dict[str, list[str]] = {"object": [], "non-numeric": []}
    non_tensor: dict[str, Any] = {}
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError,
            RuntimeError, struct.error) as exc:
        findings.append(Finding(
            "corrupt" if size > 22 else "truncated", "error",
            f"{path.name} starts like a .npz (zip) archive but its directory cannot be read "
            f"({exc}); the file is truncated or damaged. {REDOWNLOAD}",
        ))
        return Checkpoint(path, "npz", findings=findings, size=size)
    with zf:
        infos = zf.infolist()
        if len(infos) > budgets.max_entries:
            raise BudgetExceededError(
                f"{path.name} lists {len(infos):,} archive entries, more than the "
                f"{budgets.max_entries:,} ckwidget reads; it is damaged or hostile."
            )
        other = [i.filename for i in infos if not i.filename.endswith(".npy")]
        if other:
            metadata["other_members"] = other[:100]
        compressed = any(i.compress_type != zipfile.ZIP_STORED for i in infos)
        metadata["compressed"] = compressed
        damaged: list[str] = []
        seen: set[str] = set()
        with open(path, "rb") as raw:
            for info in infos:
                if not info.filename.endswith(".npy"):
                    continue
                key = info.filename[: -len(".npy")]
                if key in seen:
                    damaged.append(f"{key} (listed twice)")
                    continue
                seen.add(key)
                try:
                    tensor = _npz_member(stamp, zf, raw, info, key, budgets, problems)
                except _BadHeader as exc:
                    damaged.append(f"{key} ({exc})")
                    continue
                except (OSError, ValueError, EOFError, OverflowError, struct.error,
                        zipfile.BadZipFile, NotImplementedError, RuntimeError) as exc:
                    # a damaged directory entry
                    damaged.append(f"{key} ({type(exc).__name__}: {str(exc)[:100]})")
                    continue
                if isinstance(tensor, dict):
                    non_tensor[key] = tensor
                elif tensor is not None:
                    tensors[key] = tensor
    if damaged:
        findings.append(Finding(
            "corrupt", "error",
            f"{len(damaged)} member(s) of {path.name} cannot be read: "
            f"{'; '.join(damaged[:3])}. The other arrays are listed; {REDOWNLOAD}",
            [d.split(" ", 1)[0] for d in damaged][:1000],
        ))
    _problem_findings(path.name, problems, findings)
    if non_tensor:
        metadata["non_tensor_arrays"] = non_tensor
    return Checkpoint(
        path, "npz", tensors, [""] if tensors else [], metadata, findings, size=size
    )


def _npz_member(
    stamp: FileStamp,
    zf: zipfile.ZipFile,
    raw: IO[bytes],
    info: zipfile.ZipInfo,
    key: str,
    budgets: Budgets,
    problems: dict[str, list[str]],
) -> TensorInfo | dict[str, Any] | None:
    size = stamp.size
    if info.flag_bits & 0x1:
        raise _BadHeader("encrypted")
    if info.compress_type == zipfile.ZIP_STORED:
        start = _stored_data_start(raw, info, size)
        raw.seek(start)
        shape, fortran, dtype = read_header(raw)
        header_len = raw.tell() - start
    else:
        try:
            with zf.open(info) as member:
                shape, fortran, dtype = read_header(member)
                header_len = member.tell()
        except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, RuntimeError,
                ValueError) as exc:
            raise _BadHeader(str(exc)[:200]) from None
    tensor, nbytes = _describe(key, shape, fortran, dtype, problems)
    if tensor is None:
        return {"dtype": dtype.str, "shape": list(shape)} if not dtype.hasobject else None
    if info.file_size != header_len + nbytes:
        raise _BadHeader(
            f"the member is {info.file_size:,} bytes but its header needs "
            f"{header_len + nbytes:,}"
        )
    if info.compress_type == zipfile.ZIP_STORED:
        source: Any = NpySource(stamp, start + header_len, dtype, shape, fortran)
    else:
        source = NpzMemberSource(stamp, info.filename, header_len, dtype, shape, fortran)
    return _with_source(tensor, source)


def _stored_data_start(raw: IO[bytes], info: zipfile.ZipInfo, size: int) -> int:
    """Where a stored member's bytes begin, from its local header (as zipfile does)."""
    if not 0 <= info.header_offset < size:
        raise _BadHeader("its directory entry points outside the file")
    raw.seek(info.header_offset)
    local = raw.read(30)
    if len(local) < 30 or local[:4] != b"PK\x03\x04":
        raise _BadHeader("its local header is missing")
    name_len, extra_len = struct.unpack("<HH", local[26:30])
    start = info.header_offset + 30 + name_len + extra_len
    if start + info.file_size > size:
        raise _BadHeader("its bytes run past the end of the file")
    return start


def _npy_key(filename: str) -> str:
    stem = filename[: -len(".npy")] if filename.lower().endswith(".npy") else filename
    return stem or "array"


def _version_of(head: bytes) -> str:
    return f"{head[6]}.{head[7]}" if len(head) >= 8 else "?"


def _with_source(info: TensorInfo, source: Any) -> TensorInfo:
    return TensorInfo(info.shape, info.dtype, info.device, info.nbytes, info.layout, source)


def _native(dtype: np.dtype) -> np.dtype:
    return dtype if dtype.isnative else dtype.newbyteorder("=")


class NpySource:
    """One array memory-mapped copy-on-write from a .npy file or a stored .npz member."""

    __slots__ = ("dtype", "fortran", "offset", "shape", "stamp")

    def __init__(
        self, stamp: FileStamp, offset: int, dtype: np.dtype, shape: tuple[int, ...],
        fortran: bool,
    ) -> None:
        self.stamp = stamp  # the file as indexed: checked before each read
        self.offset = offset
        self.dtype = dtype
        self.shape = tuple(shape)
        self.fortran = fortran

    @property
    def path(self) -> Path:
        return self.stamp.path

    def load(self) -> torch.Tensor:
        import numpy as np
        import torch

        self.stamp.verify()
        if 0 in self.shape:
            return torch.from_numpy(np.empty(self.shape, dtype=_native(self.dtype)))
        arr = np.memmap(
            self.path, dtype=self.dtype, mode="c", offset=self.offset, shape=self.shape,
            order="F" if self.fortran else "C",
        )
        if not self.dtype.isnative:
            arr = arr.astype(_native(self.dtype))
        return torch.from_numpy(arr)


class NpzMemberSource:
    """One compressed .npz member, decompressed on demand and never past its declared size."""

    __slots__ = ("dtype", "fortran", "header_len", "member", "shape", "stamp")

    def __init__(
        self, stamp: FileStamp, member: str, header_len: int, dtype: np.dtype,
        shape: tuple[int, ...], fortran: bool,
    ) -> None:
        self.stamp = stamp  # the archive as indexed: checked before each read
        self.member = member
        self.header_len = header_len
        self.dtype = dtype
        self.shape = tuple(shape)
        self.fortran = fortran

    @property
    def path(self) -> Path:
        return self.stamp.path

    def load(self) -> torch.Tensor:
        import numpy as np
        import torch

        count = 1
        for s in self.shape:
            count *= s
        nbytes = count * self.dtype.itemsize
        self.stamp.verify()  # another archive under the same name is not this one
        try:
            with zipfile.ZipFile(self.path) as zf, zf.open(self.member) as fh:
                fh.read(self.header_len)
                data = fh.read(nbytes)
        except (zipfile.BadZipFile, OSError, EOFError, KeyError, ValueError,
                NotImplementedError, RuntimeError) as exc:
            raise CheckpointError(
                f"{self.path.name}: member {self.member!r} cannot be decompressed ({exc})."
            ) from None
        if len(data) != nbytes:
            raise CheckpointError(
                f"{self.path.name}: member {self.member!r} holds {len(data):,} of its "
                f"{nbytes:,} bytes; the archive is damaged."
            )
        arr = np.frombuffer(bytearray(data), dtype=self.dtype)
        arr = arr.reshape(self.shape, order="F" if self.fortran else "C")
        if not self.dtype.isnative:
            arr = arr.astype(_native(self.dtype))
        return torch.from_numpy(arr)
