"""torch's older formats: stacked pickles (before 1.6) and the 0.1.x tar layout; plain
pickles that are not torch files at all."""

from __future__ import annotations

import struct
import tarfile
from pathlib import Path
from typing import Any

from ..checkpoint import DTYPE_SIZES, Checkpoint, Finding, TensorInfo
from ..errors import BudgetExceededError
from .budgets import Budgets
from .filestamp import FileStamp
from .pickle_vm import run_pickle
from .sniff import LEGACY_MAGIC
from .torch_common import (
    TorchPickle,
    interpret,
    pickle_break_finding,
    special_layout_finding,
    tensor_keys_of_storage,
    view_problems_finding,
)
from .torch_objects import STORAGE_DTYPES, StorageBytes, StorageRef

_WINDOW = 64 << 20
_MAGIC_PREFIX = 64
# The storage classes torch's legacy loader can rebuild: it reads ``storage_type.dtype``,
# which only the typed storage classes have. For dtypes without one (uint16/32/64, float8,
# float4, complex32, bits*) torch.save(..., _use_new_zipfile_serialization=False) writes
# torch.storage.UntypedStorage, and torch.load then fails, weights_only True or False
# ("type object 'torch.storage.UntypedStorage' has no attribute 'dtype'").
_LEGACY_STORAGE_CLASSES = frozenset(
    name for name in STORAGE_DTYPES if name not in ("UntypedStorage", "TypedStorage"))
_LEGACY_STORAGE_MODULES = ("torch", "torch.cuda")
_CLASSIC_DTYPES = frozenset(
    STORAGE_DTYPES[name] for name in _LEGACY_STORAGE_CLASSES)


class OffsetStorageBytes(StorageBytes):
    """Storages at known offsets of a file (legacy layouts), memory-mapped on demand."""

    def __init__(self, stamp: FileStamp, offsets: dict[str, tuple[int, int]],
                 little: bool) -> None:
        self.stamp = stamp  # the file as indexed: checked before each read
        self.offsets = offsets  # key -> (byte offset of the data, byte count)
        self.little_endian = little
        self._cache: dict[str, Any] = {}

    @property
    def path(self) -> Path:
        return self.stamp.path

    def buffer(self, ref: StorageRef) -> Any:
        import numpy as np

        from ..errors import CorruptCheckpointError

        self.stamp.verify()
        if ref.key in self._cache:
            return self._cache[ref.key]
        if ref.key not in self.offsets:
            raise CorruptCheckpointError(f"Storage {ref.key} is missing from the file.")
        offset, count = self.offsets[ref.key]
        if count == 0:
            buf = np.zeros(0, dtype=np.uint8)
        else:
            buf = np.memmap(self.path, dtype=np.uint8, mode="c", offset=offset, shape=(count,))
        self._cache[ref.key] = buf
        return buf


def _read_window(path: Path, size: int, budgets: Budgets) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(min(size, _WINDOW, budgets.max_pickle_bytes))


def read_pickle_file(path: Path, head: bytes, budgets: Budgets) -> Checkpoint:
    """A file that starts with a pickle: torch's legacy format, or a plain pickle."""
    stamp = FileStamp.of(path)
    size = stamp.size
    window = _read_window(path, size, budgets)
    # The magic number's pickle is a few dozen bytes in every protocol: looking at a short
    # prefix avoids running a large plain pickle twice.
    first = run_pickle(window[:_MAGIC_PREFIX], budgets)
    if first.complete and type(first.root) is int and first.root == LEGACY_MAGIC:
        return _read_legacy(path, stamp, window, first.end, budgets)
    return _read_plain_pickle(path, size, window, budgets)


def _grow(path: Path, size: int, window: bytes, budgets: Budgets) -> bytes | None:
    """A larger window when a pickle runs past the current one, within the budget."""
    if len(window) >= size or len(window) >= budgets.max_pickle_bytes:
        return None
    with open(path, "rb") as fh:
        return fh.read(min(size, len(window) * 4, budgets.max_pickle_bytes))


def _interpret_growing(path: Path, size: int, window: bytes, budgets: Budgets,
                       reader: OffsetStorageBytes | None, *, legacy: bool = False,
                       start: int = 0) -> tuple[TorchPickle, bytes]:
    """Interpret the pickle at ``start``, reading more of the file while it runs past the
    window (within the budget); returns the result and the window it was read from."""
    while True:
        tp = interpret(window, reader, budgets, legacy=legacy, start=start)
        if tp.result.complete:
            return tp, window
        bigger = _grow(path, size, window, budgets)
        if bigger is None:
            return tp, window
        window = bigger


def _read_plain_pickle(path: Path, size: int, window: bytes, budgets: Budgets) -> Checkpoint:
    tp, window = _interpret_growing(path, size, window, budgets, None)
    findings = list(tp.findings)
    broken = pickle_break_finding(tp, f"The pickle in {path.name}")
    if broken:
        if tp.result.end >= size:
            broken.kind = "truncated"
        findings.append(broken)
    tensors = tp.flat.tensors
    message = (
        f"{path.name} is a plain Python pickle, not a torch.save file"
        + (f", holding {len(tensors)} tensors" if tensors else " and holds no torch tensors")
        + ". torch.load reads it only through pickle, which can run code; ckwidget lists it "
        "without running anything."
    )
    findings.append(Finding("version", "warning", message,
                            details={"pickle_protocol": tp.result.protocol}))
    if not tensors and not any(f.severity == "error" for f in findings):
        findings.append(Finding(
            "not-a-checkpoint", "error",
            f"{path.name} holds no tensors: it is a pickle of other data, not weights.",
        ))
    metadata = dict(tp.metadata)
    return Checkpoint(path, "pickle", tensors, tp.flat.candidates, metadata, findings,
                      size=size, members=tp.flat.members)


def _side_pickle_findings(results: list[tuple[str, Any]]) -> list[Finding]:
    """Safety findings for the small pickles around a legacy file's main one."""
    from .safety import classify_globals, globals_findings

    out: list[Finding] = []
    for which, res in results:
        if res is None or not res.globals:
            continue
        verdict = classify_globals(res.globals)
        verdict.safe = []
        for f in globals_findings(verdict, res.calls):
            f.message = (f"In the {which} pickle, which torch.load unpickles beside the "
                         f"weights: {f.message}")
            f.details["pickle"] = which
            out.append(f)
    return out


def _read_legacy(path: Path, stamp: FileStamp, window: bytes, pos: int,
                 budgets: Budgets) -> Checkpoint:
    size = stamp.size
    findings: list[Finding] = []
    metadata: dict[str, Any] = {"legacy_magic": True}
    proto = run_pickle(window, budgets, start=pos)
    sys_info = run_pickle(window, budgets, start=proto.end) if proto.complete else proto
    metadata["legacy_protocol_version"] = proto.root if proto.complete else None
    little = True
    if sys_info.complete and isinstance(sys_info.root, dict):
        little = bool(sys_info.root.get("little_endian", True))
        metadata["sys_info"] = {str(k): v for k, v in sys_info.root.items()
                                if isinstance(v, (int, bool, str, dict))}
    if proto.complete and proto.root != 1001:
        findings.append(Finding(
            "version", "error",
            f"The legacy protocol version is {proto.root!r}; torch reads only 1001.",
        ))
    main_start = sys_info.end if sys_info.complete else len(window)
    reader = OffsetStorageBytes(stamp, {}, little)  # offsets are known after the pickle
    tp, window = _interpret_growing(path, size, window, budgets, reader, legacy=True,
                                    start=main_start)
    findings.extend(tp.findings)
    metadata.update(tp.metadata)
    broken = pickle_break_finding(tp, "The legacy pickle")
    offsets: dict[str, tuple[int, int]] = {}
    keys_res = None
    if broken:
        broken.kind = "truncated" if tp.result.end >= len(window) >= size else "corrupt"
        findings.append(broken)
    else:
        keys_res = run_pickle(window, budgets, start=tp.result.end)
        if keys_res.complete and isinstance(keys_res.root, list):
            offsets, problem = _storage_offsets(path, size, keys_res.end, keys_res.root,
                                                tp.context.storages)
            if problem:
                findings.append(Finding("truncated", "error", problem))
        else:
            findings.append(Finding(
                "truncated", "error",
                "The list of storage keys after the main pickle is missing or damaged: the "
                "file was cut off. Download or copy it again.",
            ))
    # torch.load unpickles all five pickles of the file with the full unpickler: a call
    # in the protocol number, the sys_info dict or the storage keys runs as surely as one
    # in the weights
    findings.extend(_side_pickle_findings(
        [("protocol-version", proto), ("sys_info", sys_info), ("storage-keys", keys_res)]))
    reader.offsets = offsets
    tensors = _attach(tp.flat.tensors, reader)
    missing = {k for k in tp.context.storages if k not in offsets}
    if missing and not broken:
        keys = tensor_keys_of_storage(tensors, missing)
        findings.append(Finding("truncated", "error", f"{len(keys)} tensors have no bytes in "
                                "the file.", keys=keys[:1000]))
    for f in (view_problems_finding(tp), special_layout_finding(tp)):
        if f:
            findings.append(f)
    protocol = tp.result.protocol
    untyped = _storage_classes_torch_cannot_rebuild(tp)
    accepts = (tp.result.complete and tp.torch_accepts_globals and protocol >= 2
               and tp.torch_reads_protocol and not untyped
               and not any(f.severity == "error" for f in findings))
    metadata["torch_weights_only_accepts"] = accepts
    if untyped:
        metadata["legacy_storage_classes_torch_cannot_rebuild"] = untyped
        dtypes = sorted({i.dtype for i in tensors.values()} - _CLASSIC_DTYPES)
        held = f" (it holds {', '.join(dtypes)}, which have no legacy storage class)" if (
            dtypes) else ""
        verdict = (
            f"torch.load cannot read it at all, with weights_only=True or False: its "
            f"storages are saved as {', '.join(untyped)}{held}, and torch's legacy loader "
            f"fails with \"type object '{untyped[0]}' has no attribute 'dtype'\"")
    elif accepts:
        verdict = "torch.load still reads it with weights_only=True"
    elif protocol >= 4:
        verdict = (f"torch.load(weights_only=True) cannot read its pickle protocol {protocol} "
                   "('Unsupported operand')")
    elif protocol < 2:
        verdict = ("torch.load(weights_only=True) refuses its pickle protocol (0 or 1, "
                   "from before protocol 2); only weights_only=False, which runs code, reads it")
    else:
        verdict = "torch.load(weights_only=True) refuses it"
    findings.append(Finding(
        "version", "warning",
        "This is torch's legacy serialization (before torch 1.6, or "
        f"_use_new_zipfile_serialization=False): {verdict}, and it cannot be memory-mapped "
        "(mmap=True fails). " + (
            "ckwidget reads its tensors itself: save them with torch.save "
            "(ckwidget.extract_weights, then torch.save) to get the zip format." if untyped
            else "Save it again with torch.save to get the zip format."),
        details={"pickle_protocol": protocol, "torch_weights_only_accepts": accepts,
                 "storage_classes_torch_cannot_rebuild": untyped},
    ))
    return Checkpoint(path, "torch-legacy", tensors, tp.flat.candidates, metadata, findings,
                      size=size, members=tp.flat.members)


def _storage_classes_torch_cannot_rebuild(tp: TorchPickle) -> list[str]:
    """The storage classes the pickle's persistent ids name that torch's legacy loader
    cannot rebuild (anything but the typed storage classes of torch and torch.cuda)."""
    named = getattr(tp.context, "_dtypes", {})  # storage class -> (dtype, itemsize)
    return sorted({
        str(getattr(g, "full", g)) for g in named
        if not (getattr(g, "module", None) in _LEGACY_STORAGE_MODULES
                and getattr(g, "name", None) in _LEGACY_STORAGE_CLASSES)
    })


def _storage_offsets(path: Path, size: int, start: int, keys: list[Any],
                     storages: dict[str, StorageRef]) -> tuple[dict[str, tuple[int, int]], str]:
    offsets: dict[str, tuple[int, int]] = {}
    pos = start
    with open(path, "rb") as fh:
        for key in keys:
            key = str(key)
            ref = storages.get(key)
            fh.seek(pos)
            raw = fh.read(8)
            if len(raw) < 8:
                return offsets, f"The file ends before storage {key}: it was cut off."
            (numel,) = struct.unpack("<q", raw)
            itemsize = DTYPE_SIZES.get(ref.dtype, 1) if ref else 1
            count = numel * itemsize
            if numel < 0 or pos + 8 + count > size:
                return offsets, (
                    f"Storage {key} claims {numel:,} elements but the file ends first: it was "
                    "cut off or damaged."
                )
            offsets[key] = (pos + 8, count)
            pos += 8 + count
    return offsets, ""


def _attach(tensors: dict[str, TensorInfo], reader: OffsetStorageBytes) -> dict[str, TensorInfo]:
    """Tensors whose storage has no bytes in the file cannot be read."""
    import dataclasses

    out = {}
    for k, info in tensors.items():
        source = info.source
        if source is not None and source.storage.key not in reader.offsets:
            info = dataclasses.replace(info, source=None)
        out[k] = info
    return out


def read_tar(path: Path, head: bytes, budgets: Budgets) -> Checkpoint:
    """torch 0.1.x tar checkpoints (members sys_info, pickle, tensors, storages)."""
    stamp = FileStamp.of(path)
    try:
        with tarfile.open(path, "r:") as tar:
            members = {}
            for i, m in enumerate(tar):
                if i >= budgets.max_entries:
                    raise BudgetExceededError("The tar archive has too many members.")
                members[m.name] = m
    except tarfile.TarError as exc:
        from .foreign import read_foreign

        return read_foreign(path, head, budgets, "tar-other", names=[str(exc)])
    if not {"pickle", "storages", "tensors"} <= set(members):
        from .foreign import read_foreign

        return read_foreign(path, head, budgets, "tar-other", names=sorted(members)[:50])
    return _read_torch_tar(path, stamp, members, budgets)


def _read_torch_tar(path: Path, stamp: FileStamp, members: dict[str, tarfile.TarInfo],
                    budgets: Budgets) -> Checkpoint:
    size = stamp.size
    findings: list[Finding] = []
    with open(path, "rb") as fh:
        def member_bytes(name: str, limit: int) -> bytes:
            m = members[name]
            fh.seek(m.offset_data)
            return fh.read(min(m.size, limit))

        storages_raw = member_bytes("storages", budgets.max_pickle_bytes)
        tensors_raw = member_bytes("tensors", budgets.max_pickle_bytes)
        pickle_raw = member_bytes("pickle", budgets.max_pickle_bytes)
    base = members["storages"].offset_data
    storage_refs: dict[str, StorageRef] = {}
    offsets: dict[str, tuple[int, int]] = {}
    count = run_pickle(storages_raw, budgets)
    pos = count.end
    problem = ""
    from .torch_objects import STORAGE_DTYPES

    for _ in range(count.root if isinstance(count.root, int) and count.root >= 0 else 0):
        rec = run_pickle(storages_raw, budgets, start=pos)
        if not rec.complete or not isinstance(rec.root, tuple) or len(rec.root) != 3:
            problem = "a storage header in the 'storages' member is damaged"
            break
        key, location, storage_type = rec.root
        dtype = STORAGE_DTYPES.get(getattr(storage_type, "name", ""), "uint8")
        pos = rec.end
        if pos + 8 > len(storages_raw):
            problem = "the 'storages' member is cut off"
            break
        (numel,) = struct.unpack_from("<q", storages_raw, pos)
        nbytes = numel * DTYPE_SIZES.get(dtype, 1)
        if numel < 0 or pos + 8 + nbytes > len(storages_raw):
            problem = "the 'storages' member is cut off"
            break
        storage_refs[str(key)] = StorageRef(str(key), dtype, str(location), numel)
        offsets[str(key)] = (base + pos + 8, nbytes)
        pos += 8 + nbytes
    reader = OffsetStorageBytes(stamp, offsets, True)
    tensor_infos: dict[str, TensorInfo] = {}
    nt = run_pickle(tensors_raw, budgets)
    pos = nt.end
    from .torch_objects import StorageTensorSource

    for _ in range(nt.root if isinstance(nt.root, int) and nt.root >= 0 else 0):
        rec = run_pickle(tensors_raw, budgets, start=pos)
        if not rec.complete or not isinstance(rec.root, tuple) or len(rec.root) != 3:
            problem = problem or "a tensor header in the 'tensors' member is damaged"
            break
        key, storage_id, _ttype = rec.root
        pos = rec.end
        try:
            (ndim,) = struct.unpack_from("<i", tensors_raw, pos)
            pos += 8
            if not 0 <= ndim <= 64:
                raise struct.error
            shape = struct.unpack_from(f"<{ndim}q", tensors_raw, pos)
            pos += 8 * ndim
            stride = struct.unpack_from(f"<{ndim}q", tensors_raw, pos)
            pos += 8 * ndim
            (offset,) = struct.unpack_from("<q", tensors_raw, pos)
            pos += 8
        except struct.error:
            problem = problem or "the 'tensors' member is cut off"
            break
        ref = storage_refs.get(str(storage_id))
        if ref is None:
            continue
        numel = 1
        for s in shape:
            numel *= s
        source = StorageTensorSource(reader, ref, offset, tuple(shape), tuple(stride), ref.dtype)
        tensor_infos[str(key)] = TensorInfo(tuple(shape), ref.dtype, ref.location,
                                            numel * DTYPE_SIZES.get(ref.dtype, 1), "strided",
                                            source)
    tp = interpret(pickle_raw, None, budgets)
    findings.extend(tp.findings)

    def resolve(node: Any) -> Any:
        from .pickle_vm import Call

        if isinstance(node, Call) and node.kind == "pid":
            return tensor_infos.get(str(node.args))
        if isinstance(node, dict):
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    from .tree import flatten

    flat = flatten(resolve(tp.result.root), max_visits=budgets.max_visits)
    if problem:
        findings.append(Finding("truncated", "error", f"The tar checkpoint is damaged: {problem}."))
    findings.append(Finding(
        "version", "warning",
        "This is torch's 0.1.x tar checkpoint format: torch 2.6 and later refuse it under "
        "weights_only=True. Load it once with an old torch (or through ckwidget) and save it "
        "again with torch.save.",
    ))
    return Checkpoint(path, "torch-tar", flat.tensors, flat.candidates, {"tar_members":
                      sorted(members)}, findings, size=size, members=flat.members)
