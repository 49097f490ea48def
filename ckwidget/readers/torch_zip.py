"""torch.save's zip archives (and TorchScript archives), read the way torch reads them."""

from __future__ import annotations

import dataclasses
import threading
from itertools import compress, filterfalse
from operator import attrgetter, methodcaller
from pathlib import Path
from typing import Any

from ..checkpoint import Checkpoint, Finding, TensorInfo, load_from_sources
from ..errors import BudgetExceededError, CheckpointError, CorruptCheckpointError
from ..kinds import GLOBALS_KINDS
from .budgets import Budgets
from .filestamp import FileStamp
from .torch_common import (
    TorchPickle,
    interpret,
    pickle_break_finding,
    special_layout_finding,
    tensor_keys_of_storage,
    view_problems_finding,
)
from .torch_objects import StorageBytes, StorageRef
from .zipdir import ZipDirectory, ZipEntry, data_offset, read_directory, read_record

MAX_ARCHIVE_VERSION = 10  # torch's kMaxSupportedFileFormatVersion family


class ZipStorageBytes(StorageBytes):
    """Storage records of a zip archive, memory-mapped copy-on-write (the file is never
    written)."""

    def __init__(self, directory: ZipDirectory, prefix: str, little_endian: bool) -> None:
        self.directory = directory
        self.prefix = prefix
        self.little_endian = little_endian
        self._cache: dict[str, Any] = {}
        self._whole: Any = None  # the file, mapped once; storages are slices of it
        self._lock = threading.Lock()

    def entry(self, key: str) -> ZipEntry | None:
        return self.directory.entry(f"{self.prefix}/data/{key}")

    def buffer(self, ref: StorageRef) -> Any:
        import numpy as np

        if self.directory.stamp is not None:
            self.directory.stamp.verify()  # a rewritten file must not be read through a map
        with self._lock:
            cached = self._cache.get(ref.key)
            if cached is not None:
                return cached
            entry = self.entry(ref.key)
            if entry is None:
                raise CorruptCheckpointError(
                    f"Storage record data/{ref.key} is missing from the archive."
                )
            if entry.method != 0:
                raise CorruptCheckpointError(
                    f"Storage record data/{ref.key} is compressed; ckwidget reads only stored "
                    "records (as torch.save writes them)."
                )
            nbytes = ref.nbytes
            if entry.size < nbytes:
                raise CorruptCheckpointError(
                    f"Storage record data/{ref.key} holds {entry.size:,} bytes but the "
                    f"tensor needs {nbytes:,}."
                )
            # one copy-on-write map of the whole file (a map per storage, or reading
            # each local header through a fresh file handle, costs system calls each:
            # sampling reads hundreds of small tensors)
            if self._whole is None and self.directory.file_size:
                # as a plain array over the map: np.memmap's slicing runs Python code
                # for each slice, and sampling slices three times per record
                self._whole = np.memmap(self.directory.path, dtype=np.uint8, mode="c",
                                        shape=(self.directory.file_size,)).view(np.ndarray)
            start = data_offset(self.directory, entry, mapped=self._whole)
            if start + nbytes > self.directory.file_size:
                raise CorruptCheckpointError(
                    f"Storage record data/{ref.key} runs past the end of the file."
                )
            if nbytes == 0:
                buf = np.zeros(0, dtype=np.uint8)
            else:
                buf = self._whole[start:start + nbytes]
            self._cache[ref.key] = buf
            return buf


def read_zip(path: Path, head: bytes, budgets: Budgets) -> Checkpoint:
    directory = read_directory(path, budgets)
    names = directory.names
    if not names:
        if directory.recovered:
            finding = Finding(
                "truncated", "error",
                f"{path.name} is a zip archive cut off inside its first record "
                f"({directory.file_size:,} bytes survive): the download or copy stopped "
                "early. Download the file again.",
            )
        elif _archives_in(path) > 1:
            finding = Finding(
                "corrupt", "error",
                f"{path.name} holds {_archives_in(path)} zip archives one after another: "
                "torch reads the last one's directory, whose records are not where it "
                "says ('PytorchStreamReader failed reading zip archive'), and other tools "
                "may read the first. Someone appended to the file; take it from its source "
                "again.", details={"appended_archives": True})
        else:
            finding = Finding("not-a-checkpoint", "error",
                              f"{path.name} is an empty zip archive.")
        return Checkpoint(path, "zip", findings=[finding], size=directory.file_size)
    first = names[0]
    prefix = first.split("/", 1)[0] if "/" in first else first
    pkl_name = f"{prefix}/data.pkl"
    if pkl_name not in directory.index:
        from .torch_export import is_export_archive, read_export

        if is_export_archive(directory, prefix):
            return read_export(path, directory, prefix, budgets)
        others = [n for n in names if n.endswith("/data.pkl")]
        if not others:
            return _not_torch_zip(path, head, budgets, names)
        prefix = others[0].rsplit("/", 1)[0]
        pkl_name = others[0]
        misplaced = Finding(
            "corrupt", "error",
            f"torch looks for {first.split('/', 1)[0]}/data.pkl (named by the first record) "
            f"but the archive has {pkl_name}: torch.load fails with 'file not found'.",
            keys=[], details={"first_record": first},
        )
    else:
        misplaced = None
    return _read_torch_archive(path, directory, prefix, pkl_name, budgets, misplaced)


def _archives_in(path: Path, limit: int = 64 << 20) -> int:
    """How many end-of-central-directory records the file holds (up to ``limit`` bytes
    are looked at, from the end): two or more mean archives one after another."""
    with open(path, "rb") as fh:
        fh.seek(0, 2)
        size = fh.tell()
        fh.seek(max(0, size - limit))
        return fh.read(limit).count(b"PK\x05\x06")


def _not_torch_zip(path: Path, head: bytes, budgets: Budgets, names: list[str]) -> Checkpoint:
    if all(n.endswith(".npy") for n in names):
        from .numpy_files import read_npz

        return read_npz(path, names, budgets)
    from .foreign import read_foreign

    return read_foreign(path, head, budgets, "unknown-zip", names=names)


def _small_record(directory: ZipDirectory, name: str, budgets: Budgets,
                  findings: list[Finding]) -> bytes | None:
    entry = directory.entry(name)
    if entry is None:
        return None
    try:
        return read_record(directory, entry, budgets, limit=budgets.max_small_record)
    except CheckpointError as exc:
        if "CRC" in str(exc):
            findings.append(_crc_finding(exc, name))
            return read_record(directory, entry, budgets, limit=budgets.max_small_record,
                               check_crc=False)
        findings.append(Finding("corrupt", "error", str(exc), details={"record": name}))
        return None


def _crc_finding(exc: Exception, name: str) -> Finding:
    return Finding(
        "corrupt", "error",
        f"{exc} torch does not check CRCs, so it loads the damaged bytes without a word.",
        details={"record": name, "crc": True},
    )


def _read_torch_archive(path: Path, directory: ZipDirectory, prefix: str, pkl_name: str,
                        budgets: Budgets, misplaced: Finding | None) -> Checkpoint:
    findings: list[Finding] = [misplaced] if misplaced else []
    metadata: dict[str, Any] = {"archive_prefix": prefix, "records": len(directory.names)}
    by_name = directory.index
    code = f"{prefix}/code/"
    text = directory.names_text
    # a name that starts with code/ starts the joined names or follows a newline in
    # them: that test (in C, over one string) comes first, the exact one only on a hit
    torchscript = f"{prefix}/constants.pkl" in by_name or (
        (text.startswith(code) or "\n" + code in text)
        and any(map(methodcaller("startswith", code), by_name))
    )
    _archive_oddities(directory, prefix, findings)

    # version and byte order records
    version_raw = _small_record(directory, f"{prefix}/.data/version", budgets, findings)
    if version_raw is None:
        version_raw = _small_record(directory, f"{prefix}/version", budgets, findings)
    version = _parse_version(version_raw, findings)
    metadata["archive_version"] = version
    order_raw = _small_record(directory, f"{prefix}/byteorder", budgets, findings)
    little = True
    if order_raw is not None:
        order = order_raw.decode("ascii", "replace").strip()
        metadata["byteorder"] = order
        if order == "big":
            little = False
        elif order != "little":
            findings.append(Finding(
                "corrupt", "error",
                f"The byteorder record says {order[:40]!r}; torch accepts only 'little' or "
                "'big' and refuses the file.",
            ))
    else:
        metadata["byteorder"] = "little (no record)"
    for extra in (".format_version", ".storage_alignment", ".data/serialization_id"):
        raw = _small_record(directory, f"{prefix}/{extra}", budgets, [])
        if raw is not None:
            metadata[extra.lstrip(".").replace("/", "_")] = raw.decode("ascii", "replace")[:64]

    # the pickle
    pkl_entry = directory.entry_at(by_name[pkl_name])
    try:
        data = read_record(directory, pkl_entry, budgets, limit=budgets.max_pickle_bytes)
    except CorruptCheckpointError as exc:
        if "in its local header" in str(exc):
            # torch reads records by the directory's names and never looks at the local
            # one: the pickle it would run is this one, so it is read and judged too
            findings.append(Finding(
                "corrupt", "error",
                f"{exc} torch goes by the directory and loads it as {pkl_name}; ckwidget "
                "reads it the same way to judge what it would run.",
                details={"record": pkl_name, "local_name_differs": True}))
            data = _pickle_by_directory(directory, pkl_entry, budgets, findings)
        elif "CRC" not in str(exc):
            return _unreadable(path, directory, findings, metadata, exc)
        else:
            findings.append(_crc_finding(exc, pkl_name))
            data = read_record(directory, pkl_entry, budgets,
                               limit=budgets.max_pickle_bytes, check_crc=False)
        if data is None:
            return _unreadable(path, directory, findings, metadata, exc)
    except BudgetExceededError as exc:
        return _unreadable(path, directory, findings, metadata, exc)
    reader = ZipStorageBytes(directory, prefix, little)
    tp = interpret(data, reader, budgets)
    findings.extend(tp.findings)
    metadata.update(tp.metadata)
    for dup in _duplicate_pickles(directory, pkl_name, budgets):
        findings.append(dup)
    findings.extend(_other_pickles(directory, pkl_name, budgets))
    broken = pickle_break_finding(tp, "data.pkl")
    if broken:
        if directory.recovered:
            broken.kind = "truncated"
        findings.append(broken)
    for f in (view_problems_finding(tp), special_layout_finding(tp)):
        if f:
            findings.append(f)
    tensors = _check_storages(tp, reader, directory, findings)

    fmt = "torchscript" if torchscript or tp.context.torchscript else "torch-zip"
    if fmt == "torchscript":
        findings = _torchscript_globals(findings, tp)
        findings.append(Finding(
            "torchscript", "warning",
            "This is a TorchScript archive (torch.jit.save), not a torch.save checkpoint: "
            "torch.load refuses it under weights_only. Load it with torch.jit.load only if you "
            "trust it (it runs the archived code), or take its "
            f"{len(tensors)} tensors from ckwidget, which reads them without running anything.",
            details={"code_records": sum(1 for n in by_name if n.startswith(f'{prefix}/code/'))},
        ))
    if directory.recovered:
        findings.append(Finding(
            "truncated", "error",
            f"{path.name} ends before its zip directory: the download or copy was cut off "
            f"(torch says 'failed finding central directory'). {len(directory.names)} records "
            "survive; download the file again.",
            details={"file_size": directory.file_size},
        ))
    accepts = _torch_accepts(tp, findings, version, fmt)
    metadata["torch_weights_only_accepts"] = accepts
    findings.append(_version_finding(metadata, tp, accepts, fmt))
    members = dict(tp.flat.members)
    candidates = tp.flat.candidates
    return Checkpoint(
        path, fmt, tensors, candidates, metadata, findings, size=directory.file_size,
        members=members,
        loader=_Loader(path, tensors, accepts and fmt == "torch-zip", directory.stamp),
    )


def _pickle_by_directory(directory: ZipDirectory, entry: Any, budgets: Budgets,
                         findings: list[Finding]) -> bytes | None:
    """The pickle record read as torch reads it (by the directory's name and offsets),
    CRC errors noted rather than fatal; None when even that cannot be read."""
    try:
        return read_record(directory, entry, budgets, limit=budgets.max_pickle_bytes,
                           check_crc=False, check_name=False)
    except (CheckpointError, BudgetExceededError) as exc:
        findings.append(Finding("corrupt", "error", str(exc), details={"record": entry.name}))
        return None


def _torchscript_globals(findings: list[Finding], tp: Any) -> list[Finding]:
    """A TorchScript archive names its own classes (``__torch__.*``, defined by the
    archived code) and TorchScript's data constructors: neither is noise worth a finding.
    Anything else it names is judged as in any pickle (``os.system`` stays malicious)."""
    from .safety import globals_findings, torchscript_names_removed

    kinds = GLOBALS_KINDS
    kept = [f for f in findings if f.kind not in kinds or "record" in f.details
            or f.message.startswith("In the duplicate")]
    own = [f for f in findings if f not in kept]
    if not own:
        return findings
    verdict = torchscript_names_removed(tp.verdict)
    return [*globals_findings(verdict, tp.result.calls), *kept]


def _unreadable(path: Path, directory: ZipDirectory, findings: list[Finding],
                metadata: dict[str, Any], exc: Exception) -> Checkpoint:
    kind = "truncated" if directory.recovered or "past the end" in str(exc) else "corrupt"
    findings.append(Finding(kind, "error", f"{exc} Nothing in the file can be listed."))
    return Checkpoint(path, "torch-zip", {}, [], metadata, findings, size=directory.file_size)


def _archive_oddities(directory: ZipDirectory, prefix: str, findings: list[Finding]) -> None:
    if directory.duplicates:
        findings.append(Finding(
            "corrupt", "error",
            f"The archive holds several records named {sorted(set(directory.duplicates))[:5]}: "
            "different tools read different copies, a known way to hide a payload from "
            "scanners. Treat the file as hostile.",
            details={"duplicates": sorted(set(directory.duplicates))[:100]},
        ))
    strays = [] if _all_start_with(directory, prefix + "/") else list(
        filterfalse(methodcaller("startswith", prefix + "/"), directory.names))
    problems = list(directory.problems)
    if strays:
        problems.append(f"{len(strays)} records sit outside the '{prefix}/' folder "
                        f"(e.g. {strays[0]!r})")
    if problems:
        findings.append(Finding(
            "corrupt", "warning" if not directory.recovered else "error",
            "The archive has irregularities: " + "; ".join(problems[:6]) + ".",
            details={"problems": problems[:100]},
        ))


def _all_start_with(directory: ZipDirectory, start: str) -> bool:
    """Whether every name starts with ``start``, counted over the joined names in C. A
    False may be wrong (names holding newlines): callers then check name by name."""
    names = directory.names
    if not start or "\n" in start or directory.names_have_newline:
        return False
    # without newlines in names or in start, each occurrence of "\n" + start in the
    # joined names is exactly one name (all but the first) that begins with start
    text = directory.names_text
    return text.startswith(start) and text.count("\n" + start) == len(names) - 1


def _duplicate_pickles(directory: ZipDirectory, pkl_name: str, budgets: Budgets):
    """A second data.pkl is scanned too, so a payload cannot hide behind the first."""
    from .pickle_vm import run_pickle
    from .safety import classify_globals, globals_findings

    names = directory.names
    if names.count(pkl_name) < 2:  # the usual case, counted in C
        return
    seen_first = False
    for i, name in enumerate(names):
        if name != pkl_name:
            continue
        if not seen_first:
            seen_first = True
            continue
        entry = directory.entry_at(i)
        try:
            data = read_record(directory, entry, budgets, limit=budgets.max_pickle_bytes,
                               check_crc=False)
        except CheckpointError:
            continue
        res = run_pickle(data, budgets)
        for f in globals_findings(classify_globals(res.globals), res.calls):
            f.message = "In the duplicate data.pkl: " + f.message
            yield f


_MAX_OTHER_PICKLES = 64


def _other_pickles(directory: ZipDirectory, pkl_name: str, budgets: Budgets) -> list[Finding]:
    """Other .pkl records (constants.pkl of TorchScript, or anything hidden beside
    data.pkl) are scanned for dangerous globals: torch.load never reads them, but other
    tools and scanners do, and a payload there is never an accident."""
    from .pickle_vm import run_pickle
    from .safety import classify_globals, globals_findings

    findings: list[Finding] = []
    scanned = 0
    total = 0
    names = directory.names
    if _only_pickle(directory, pkl_name):
        return findings
    pickles = compress(range(len(names)), map(methodcaller("endswith", ".pkl"),
                                              names))  # filtered in C
    for i in pickles:
        if names[i] == pkl_name:
            continue
        entry = directory.entry_at(i)
        if scanned >= _MAX_OTHER_PICKLES or total + entry.size > budgets.max_pickle_bytes:
            break
        scanned += 1
        total += entry.size
        try:
            data = read_record(directory, entry, budgets, limit=budgets.max_pickle_bytes,
                               check_crc=False)
        except CheckpointError:
            continue
        res = run_pickle(data, budgets)
        verdict = classify_globals(res.globals)
        if not verdict.malicious:
            continue
        verdict.unsafe, verdict.missing = [], []
        for f in globals_findings(verdict, res.calls):
            f.message = (f"In record {entry.name!r}, which torch.load never reads but other "
                         f"tools may: {f.message}")
            f.details["record"] = entry.name
            findings.append(f)
    return findings


def _only_pickle(directory: ZipDirectory, pkl_name: str) -> bool:
    """Whether every name that ends in .pkl is ``pkl_name`` (the usual archive), counted
    in C over the joined names.

    Each .pkl name but the last is followed by a separator, so the ".pkl\\n" count (plus
    the last name) is at least the number of .pkl names, newlines in names or not; and
    that number is at least the count of ``pkl_name``: equal ends mean equal all along.
    A name holding a newline can only raise the first count: a False is then unsure,
    and the caller looks name by name."""
    if not pkl_name.endswith(".pkl"):
        return False
    text = directory.names_text
    ending = text.count(".pkl\n") + text.endswith(".pkl")
    return ending == directory.names.count(pkl_name)


def _parse_version(raw: bytes | None, findings: list[Finding]) -> int | None:
    if raw is None:
        return None
    text = raw.decode("ascii", "replace").strip()
    try:
        version = int(text)
    except ValueError:
        findings.append(Finding(
            "corrupt", "error",
            f"The archive's version record reads {text[:40]!r}, not a number: torch refuses it.",
        ))
        return None
    if not 1 <= version <= MAX_ARCHIVE_VERSION:
        findings.append(Finding(
            "version", "error",
            f"The archive's format version is {version}; this torch reads versions 1 to "
            f"{MAX_ARCHIVE_VERSION}. Save it again with a torch that matches, or upgrade torch.",
            details={"archive_version": version},
        ))
    return version


def _check_storages(tp: TorchPickle, reader: ZipStorageBytes, directory: ZipDirectory,
                    findings: list[Finding]) -> dict[str, TensorInfo]:
    """Every storage the pickle names must have its record, stored, of its size."""
    storages = tp.context.storages
    record = f"{reader.prefix}/data/"  # as ZipStorageBytes.entry names them
    if _storages_sound(storages, record, directory):
        return tp.flat.tensors
    missing: set[str] = set()
    short: list[str] = []
    compressed: list[str] = []
    find = directory.index.get
    sizes = directory.values("size")
    methods = directory.values("method")
    for key, ref in storages.items():
        at = find(record + key)
        if at is None:
            missing.add(key)
            continue
        size = sizes[at]
        if size != ref.nbytes:
            short.append(f"data/{key}: {size:,} bytes for {ref.nbytes:,} declared")
            if size < ref.nbytes:
                missing.add(key)
        if methods[at] != 0:
            compressed.append(key)
    tensors = tp.flat.tensors
    if missing:
        keys = tensor_keys_of_storage(tensors, missing)
        kind = "truncated" if directory.recovered else "corrupt"
        findings.append(Finding(
            kind, "error",
            f"{len(missing)} storage records are missing or short, so {len(keys)} tensors "
            "cannot be read; torch.load fails on this file.",
            keys=keys[:1000], details={"storages": sorted(missing)[:100]},
        ))
        tensors = {
            k: (dataclasses.replace(v, source=None) if k in set(keys) else v)
            for k, v in tensors.items()
        }
    if short:
        findings.append(Finding(
            "corrupt", "error",
            "Declared storage sizes differ from their records: " + "; ".join(short[:5]) + ".",
            details={"mismatches": short[:100]},
        ))
    if compressed:
        findings.append(Finding(
            "corrupt", "warning",
            f"{len(compressed)} storage records are compressed; torch.save never writes that, "
            "so another tool rewrote the archive.",
        ))
    return tensors


def _storages_sound(storages: dict[str, Any], record: str, directory: ZipDirectory) -> bool:
    """Whether every storage has its record, stored and of the declared size: the usual
    archive, checked in C (False sends the caller to its per-storage loop)."""
    if not storages:
        return True
    sizes = directory.values("size")
    methods = directory.values("method")
    declared = list(map(attrgetter("nbytes"), storages.values()))
    names = directory.names
    n = len(storages)
    first = directory.index.get(record + next(iter(storages)))
    if first is not None and not directory.duplicates and not directory.names_have_newline:
        # torch writes the storage records back to back in the pickle's order: then the
        # joined names of that run equal the joined record names (both have exactly
        # n - 1 newlines, so the runs match name by name), and each name is its only record
        if "\n".join(names[first:first + n]) == record + ("\n" + record).join(storages):
            return sizes[first:first + n] == declared and not any(methods[first:first + n])
    at = list(map(directory.index.get, map(record.__add__, storages)))
    if None in at:
        return False
    return (list(map(sizes.__getitem__, at)) == declared
            and not any(map(methods.__getitem__, at)))


def _torch_accepts(tp: TorchPickle, findings: list[Finding], version: int | None,
                   fmt: str) -> bool:
    if fmt != "torch-zip" or not tp.result.complete:
        return False
    if not tp.torch_accepts_globals:
        return False
    if not tp.torch_reads_protocol:
        return False
    if version is not None and not 1 <= version <= MAX_ARCHIVE_VERSION:
        return False
    # torch never checks CRCs: damage it cannot see does not stop it
    return not any(f.severity == "error" and f.kind in ("corrupt", "truncated")
                   and not f.details.get("crc") for f in findings)


def _version_finding(metadata: dict[str, Any], tp: TorchPickle, accepts: bool,
                     fmt: str) -> Finding:
    facts = []
    for key, label in (("torch_version", "torch"), ("lightning_version", "Lightning"),
                       ("transformers_version", "transformers")):
        if metadata.get(key):
            facts.append(f"{label} {metadata[key]}")
    recorded = f"; saved with {', '.join(facts)}" if facts else ""
    consequences = []
    severity = "info"
    if tp.result.protocol >= 4 and fmt == "torch-zip":
        consequences.append(
            f"it uses pickle protocol {tp.result.protocol}, which torch.load(weights_only=True) "
            "cannot read ('Unsupported operand 149'); save it again with the default protocol "
            "or read it with ckwidget"
        )
        severity = "warning"
    devices = [d for d in metadata.get("devices", {}) if d not in ("cpu", "meta")]
    if devices:
        consequences.append(
            f"its tensors were saved on {', '.join(sorted(devices))}; pass "
            "map_location='cpu' on a machine without that device"
        )
    if accepts:
        verdict = "torch.load(weights_only=True) accepts it"
    elif fmt == "torchscript":
        verdict = "torch.load refuses it (TorchScript); torch.jit.load would run its code"
    else:
        verdict = "torch.load(weights_only=True) refuses it"
        severity = "warning"
    text = (
        f"torch zip archive, format version {metadata.get('archive_version')}, pickle "
        f"protocol {tp.result.protocol}{recorded}. {verdict}"
    )
    if consequences:
        text += "; " + "; ".join(consequences)
    return Finding("version", severity, text + ".", details={
        k: metadata.get(k) for k in ("archive_version", "pickle_protocol", "torch_version",
                                     "lightning_version", "transformers_version",
                                     "torch_weights_only_accepts")
    })


class _Loader:
    """Materialise tensors: torch.load(weights_only=True, mmap=True) where torch accepts
    the file, ckwidget's own memory-mapped storage reader everywhere else."""

    def __init__(self, path: Path, tensors: dict[str, TensorInfo], torch_accepts: bool,
                 stamp: FileStamp | None = None) -> None:
        self.path = path
        self.tensors = tensors
        self.torch_accepts = torch_accepts
        self.stamp = stamp

    def __call__(self, full_keys: list[str], map_location: Any) -> dict[str, Any]:
        if self.stamp is not None:
            self.stamp.verify()  # torch.load of another file would give other tensors
        if self.torch_accepts:
            try:
                return self.with_torch(full_keys, map_location)
            except Exception:  # torch disagreed with our prediction: read it ourselves
                pass
        return load_from_sources(self.tensors, full_keys, map_location)

    def with_torch(self, full_keys: list[str], map_location: Any) -> dict[str, Any]:
        import torch

        obj = torch.load(self.path, map_location=map_location or "cpu", weights_only=True,
                         mmap=True)
        found = walk_loaded(obj)
        return {k: found[k] for k in full_keys}


def walk_loaded(obj: Any) -> dict[str, Any]:
    """Dotted keys of every tensor in a torch.load result (the reader's naming)."""
    import torch

    out: dict[str, Any] = {}
    stack: list[tuple[str, Any]] = [("", obj)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, torch.Tensor):
            out[path] = node
        elif isinstance(node, dict):
            stack.extend((f"{path}.{k}" if path else str(k), v) for k, v in node.items())
        elif isinstance(node, (list, tuple)):
            stack.extend((f"{path}.{i}" if path else str(i), v) for i, v in enumerate(node))
    return out
