"""torch.export archives (``torch.export.save``, ``.pt2``), read without running them.

A PT2 archive is a torch zip archive without a ``data.pkl``: every record sits under one
prefix (``<prefix>/archive_format`` says ``pt2``), each exported program has
``models/<name>.json`` (the graph), ``data/weights/<name>_weights_config.json`` and
``data/constants/<name>_constants_config.json`` (JSON: for every parameter, buffer or
constant, the record that holds its bytes and its dtype, sizes, strides and offset),
raw weight records ``data/weights/weight_<i>`` and ``data/constants/tensor_<i>`` (the
bytes of one storage, shared by the views on it), and ``data/sample_inputs/<name>.pt``
(a nested torch.save archive).

Weights are listed from the JSON configs and read from their raw records, so nothing is
unpickled. ``torch.export.load`` does unpickle some records, and those are scanned:
the sample inputs (``torch.load(weights_only=True)``, and on failure
``weights_only=False``), payloads marked ``use_pickle`` (tensor subclasses:
``weights_only=False``), ``custom_obj_*`` constants (TorchScript's unpickler) and
``opaque_obj_*`` constants (plain ``pickle.loads``).

Keys: a single program's state dict (``ExportedProgram.state_dict``) at the top level,
as the model names it; its tensor constants (lifted tensor attributes, non-persistent
buffers: ``ExportedProgram.constants``) under ``constants.``. An archive of several
programs nests each under its name.

``torch_zip.read_zip`` hands an archive over when its first record's prefix has no
``data.pkl`` but ``is_export_archive`` says yes.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

from ..checkpoint import DTYPE_SIZES, Checkpoint, Finding, TensorInfo
from ..errors import CheckpointError
from .budgets import Budgets
from .torch_objects import StorageRef, StorageTensorSource
from .tree import flatten
from .zipdir import ZipDirectory, read_record

ARCHIVE_FORMAT_PATH = "archive_format"
ARCHIVE_FORMAT_VALUE = "pt2"
MODELS_DIR = "models/"
WEIGHTS_DIR = "data/weights/"
CONSTANTS_DIR = "data/constants/"
WEIGHTS_CONFIG = "data/weights/{}_weights_config.json"
CONSTANTS_CONFIG = "data/constants/{}_constants_config.json"
SAMPLE_INPUTS = "data/sample_inputs/{}.pt"
TENSOR_CONSTANT_PREFIX = "tensor_"
CUSTOM_OBJ_PREFIX = "custom_obj_"
OPAQUE_OBJ_PREFIX = "opaque_obj_"
MAX_PICKLES = 256  # nested pickles scanned per archive

# torch._export.serde.schema.ScalarType -> torch dtype name
SCALAR_TYPES: dict[int, str] = {
    1: "uint8", 2: "int8", 3: "int16", 4: "int32", 5: "int64", 6: "float16", 7: "float32",
    8: "float64", 9: "complex32", 10: "complex64", 11: "complex128", 12: "bool",
    13: "bfloat16", 28: "uint16", 29: "float8_e4m3fn", 30: "float8_e5m2",
    31: "float8_e4m3fnuz", 32: "float8_e5m2fnuz", 33: "float8_e8m0fnu", 34: "uint32",
    35: "uint64",
}
STRIDED_LAYOUT = 7  # torch._export.serde.schema.Layout.Strided


def is_export_archive(directory: ZipDirectory, prefix: str) -> bool:
    """Whether the archive under ``prefix`` is a torch.export (PT2) archive."""
    if f"{prefix}/{ARCHIVE_FORMAT_PATH}" in directory.index:
        return True
    models = f"{prefix}/{MODELS_DIR}"
    return any(n.startswith(models) and n.endswith(".json") for n in directory.names)


class _Records:
    """Small records of one archive, read within budgets; problems become findings."""

    def __init__(self, directory: ZipDirectory, prefix: str, budgets: Budgets,
                 findings: list[Finding]) -> None:
        self.directory = directory
        self.prefix = prefix
        self.budgets = budgets
        self.findings = findings

    def name(self, relative: str) -> str:
        return f"{self.prefix}/{relative}"

    def has(self, relative: str) -> bool:
        return self.name(relative) in self.directory.index

    def read(self, relative: str, limit: int) -> bytes | None:
        entry = self.directory.entry(self.name(relative))
        if entry is None:
            return None
        try:
            return read_record(self.directory, entry, self.budgets, limit=limit)
        except CheckpointError as exc:
            self.findings.append(Finding("corrupt", "error", str(exc),
                                         details={"record": entry.name}))
            return None

    def json(self, relative: str) -> Any:
        raw = self.read(relative, self.budgets.max_json)
        if raw is None:
            return None
        try:
            return json.loads(raw)
        except (ValueError, RecursionError) as exc:
            self.findings.append(Finding(
                "corrupt", "error",
                f"Record {self.name(relative)!r} is not valid JSON ({exc}); "
                "torch.export.load fails on this archive.",
                details={"record": self.name(relative)}))
            return None


def read_export(path: Path, directory: ZipDirectory, prefix: str,
                budgets: Budgets) -> Checkpoint:
    from .torch_zip import ZipStorageBytes

    findings: list[Finding] = []
    records = _Records(directory, prefix, budgets, findings)
    metadata: dict[str, Any] = {"archive_prefix": prefix, "records": len(directory.names)}
    for key, relative in (("archive_format", ARCHIVE_FORMAT_PATH),
                          ("archive_version", "archive_version"),
                          ("byteorder", "byteorder")):
        raw = records.read(relative, budgets.max_small_record)
        if raw is not None:
            metadata[key] = raw.decode("ascii", "replace").strip()[:64]
    little = metadata.get("byteorder", "little") != "big"
    storage = ZipStorageBytes(directory, prefix, little)
    models_dir = f"{prefix}/{MODELS_DIR}"
    models = sorted(n[len(models_dir):-len(".json")] for n in directory.names
                    if n.startswith(models_dir) and n.endswith(".json")
                    and "/" not in n[len(models_dir):])
    metadata["programs"] = models
    tree: dict[str, Any] = {}
    pickles: list[tuple[str, str]] = []  # (record, how torch.export.load reads it)
    for model in models:
        program = records.json(f"{MODELS_DIR}{model}.json")
        if isinstance(program, dict):
            for key in ("torch_version", "schema_version", "opset_version"):
                if key in program and key not in metadata:
                    metadata[key] = _plain(program[key])
        node: dict[str, Any] = {}
        legacy = f"{WEIGHTS_DIR}{model}.pt"
        if records.has(legacy):
            # torch 2.6-era archives: one torch.save of the whole state dict
            pickles.append((legacy, "torch.save"))
        else:
            node.update(_payloads(records, WEIGHTS_CONFIG.format(model), WEIGHTS_DIR,
                                  storage, pickles))
        constants = _payloads(records, CONSTANTS_CONFIG.format(model), CONSTANTS_DIR,
                              storage, pickles, constants=True)
        if constants:
            node["constants"] = constants
        if records.has(SAMPLE_INPUTS.format(model)):
            pickles.append((SAMPLE_INPUTS.format(model), "torch.save-fallback"))
        if len(models) == 1:
            tree.update(node)
        else:
            tree[model] = node
    if not models:
        findings.append(Finding(
            "corrupt", "error",
            f"{path.name} is marked as a torch.export archive but holds no program "
            f"({models_dir}*.json): torch.export.load fails on it.",
        ))
    findings.extend(_scan_pickles(records, pickles))
    flat = flatten(tree, max_visits=budgets.max_visits, max_depth=budgets.max_depth)
    unreadable = [k for k, v in flat.tensors.items() if v.source is None]
    findings.append(Finding(
        "version", "info",
        f"torch.export archive (.pt2, torch.export.save){_saved_with(metadata)} with "
        f"{len(flat.tensors)} tensors in {len(models)} program(s). torch.load cannot read "
        "it; torch.export.load(path).state_dict gives the weights, but it also unpickles "
        "the sample inputs (falling back to weights_only=False). ckwidget lists the "
        "weights from the archive's JSON configs and reads their raw records without "
        "running anything."
        + (f" {len(unreadable)} tensors are pickled payloads ckwidget does not read."
           if unreadable else ""),
        keys=unreadable[:1000],
        details={k: metadata.get(k) for k in ("archive_format", "archive_version",
                                              "torch_version", "programs")},
    ))
    metadata["torch_weights_only_accepts"] = False
    return Checkpoint(path, "torch-export", flat.tensors, flat.candidates, metadata,
                      findings, size=directory.file_size, members=flat.members)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): v for k, v in list(value.items())[:20]
                if isinstance(v, (str, int, float, bool))}
    return value if isinstance(value, (str, int, float, bool)) else str(value)[:64]


def _saved_with(metadata: dict[str, Any]) -> str:
    version = metadata.get("torch_version")
    return f", saved with torch {version}," if isinstance(version, str) else ""


def _int(value: Any) -> int | None:
    """``{"as_int": n}`` (a static size, stride or offset) -> n; symbolic ones -> None."""
    if isinstance(value, dict):
        value = value.get("as_int")
    return value if type(value) is int else None


def _payloads(records: _Records, config_name: str, base: str, storage: Any,
              pickles: list[tuple[str, str]], *, constants: bool = False
              ) -> dict[str, TensorInfo]:
    """The tensors one weights or constants config describes, by their names."""
    config = records.json(config_name)
    if config is None:
        if not constants and not records.has(config_name):
            records.findings.append(Finding(
                "corrupt", "error",
                f"The archive has no {records.name(config_name)}: torch.export.load fails "
                "on it ('not found in PT2 archive').",
            ))
        return {}
    entries = config.get("config") if isinstance(config, dict) else None
    if not isinstance(entries, dict):
        records.findings.append(Finding(
            "corrupt", "error", f"{records.name(config_name)} has no 'config' mapping."))
        return {}
    out: dict[str, TensorInfo] = {}
    refs: dict[str, StorageRef] = {}
    problems: list[str] = []
    for fqn, meta in entries.items():
        if not isinstance(meta, dict) or not isinstance(meta.get("path_name"), str):
            problems.append(f"{fqn!r} has no record name")
            continue
        path_name = meta["path_name"]
        record = base + path_name
        if constants and path_name.startswith(CUSTOM_OBJ_PREFIX):
            pickles.append((record, "torchscript"))
            continue
        if constants and path_name.startswith(OPAQUE_OBJ_PREFIX):
            pickles.append((record, "pickle"))
            continue
        info = _tensor_meta(meta.get("tensor_meta"))
        if info is None:
            problems.append(f"{fqn!r} has no static tensor_meta")
            continue
        dtype, shape, stride, offset, device = info
        itemsize = DTYPE_SIZES.get(dtype, 1)
        numel = 1
        for s in shape:
            numel *= s
        nbytes = numel * itemsize
        if meta.get("use_pickle"):
            pickles.append((record, "torch.save-unsafe"))
            out[str(fqn)] = TensorInfo(shape, dtype, device, nbytes, "subclass", None)
            continue
        entry = records.directory.entry(records.name(record))
        if entry is None:
            problems.append(f"{fqn!r}: record {record} is missing")
            out[str(fqn)] = TensorInfo(shape, dtype, device, nbytes, "strided", None)
            continue
        ref = refs.get(path_name)
        if ref is None:
            # the record is one storage's bytes; torch.export.load views it as
            # size // itemsize elements of the first dtype that names it
            ref = refs[path_name] = StorageRef(record[len("data/"):], dtype, device,
                                               entry.size // itemsize)
        extent = offset + sum((s - 1) * st for s, st in zip(shape, stride)) + 1
        source = None
        if entry.size % itemsize:
            problems.append(f"{fqn!r}: record {record} is not a whole number of {dtype}")
        elif numel and extent > entry.size // DTYPE_SIZES.get(ref.dtype, 1):
            problems.append(f"{fqn!r} reads past the end of record {record}")
        elif entry.method != 0:
            problems.append(f"record {record} is compressed")
        else:
            source = StorageTensorSource(storage, ref, offset, shape, stride, dtype)
        out[str(fqn)] = TensorInfo(shape, dtype, device, nbytes, "strided", source)
    if problems:
        records.findings.append(Finding(
            "corrupt", "error",
            f"{records.name(config_name)} describes tensors the archive does not hold: "
            + "; ".join(problems[:5]) + (f" and {len(problems) - 5} more"
                                         if len(problems) > 5 else "")
            + ". torch.export.load fails on this archive.",
            details={"problems": problems[:100]}))
    return out


def _tensor_meta(meta: Any) -> tuple[str, tuple[int, ...], tuple[int, ...], int, str] | None:
    if not isinstance(meta, dict):
        return None
    dtype = SCALAR_TYPES.get(meta.get("dtype"))  # type: ignore[arg-type]
    sizes = meta.get("sizes")
    strides = meta.get("strides")
    if dtype is None or not isinstance(sizes, list) or not isinstance(strides, list):
        return None
    if meta.get("layout", STRIDED_LAYOUT) != STRIDED_LAYOUT:
        return None
    shape = tuple(_int(s) for s in sizes)
    stride = tuple(_int(s) for s in strides)
    offset = _int(meta.get("storage_offset", {"as_int": 0}))
    if (None in shape or None in stride or offset is None or len(shape) != len(stride)
            or any(s < 0 for s in shape) or any(s < 0 for s in stride) or offset < 0):
        return None
    device = meta.get("device") if isinstance(meta.get("device"), dict) else {}
    kind = device.get("type") if isinstance(device.get("type"), str) else "cpu"
    index = device.get("index")
    where = f"{kind}:{index}" if type(index) is int else kind
    return dtype, shape, stride, offset, where  # type: ignore[return-value]


_HOW = {
    "torch.save-fallback": "torch.export.load unpickles with torch.load(weights_only=True) "
                           "and, when that fails, weights_only=False",
    "torch.save-unsafe": "torch.export.load unpickles with torch.load(weights_only=False)",
    "torch.save": "torch.export.load unpickles with torch.load",
    "torchscript": "torch.export.load unpickles with TorchScript's unpickler",
    "pickle": "torch.export.load unpickles with pickle.loads",
}


def _scan_pickles(records: _Records, pickles: list[tuple[str, str]]) -> list[Finding]:
    """Safety findings for the records torch.export.load unpickles."""
    from .pickle_vm import run_pickle
    from .safety import classify_globals, globals_findings, torchscript_names_removed
    from .torch_common import interpret

    out: list[Finding] = []
    budgets = records.budgets
    seen: set[str] = set()
    for record, how in pickles:
        if record in seen:
            continue
        seen.add(record)
        where = records.name(record)
        if len(seen) > MAX_PICKLES:
            out.append(_unscanned(where, how, "too many pickled records"))
            break
        raw = records.read(record, budgets.max_pickle_bytes)
        if raw is None:
            continue
        if how.startswith("torch.save"):
            data = _nested_data_pkl(raw, budgets)
            if data is None:
                data = raw  # a legacy (non-zip) torch.save, or plain pickle bytes
            tp = interpret(data, None, budgets)
            verdict, calls, complete = tp.verdict, tp.result.calls, tp.result.complete
        else:
            res = run_pickle(raw, budgets)
            verdict = classify_globals(res.globals)
            if how == "torchscript":
                verdict = torchscript_names_removed(verdict)
            calls, complete = res.calls, res.complete
        found = globals_findings(verdict, calls)
        for f in found:
            f.message = f"In record {where!r}, which {_HOW[how]}: {f.message}"
            f.details["record"] = where
        out.extend(found)
        if not complete:
            out.append(_unscanned(where, how, "its pickle is damaged or over a budget"))
    return out


def _unscanned(where: str, how: str, why: str) -> Finding:
    return Finding(
        "corrupt", "error",
        f"ckwidget could not scan record {where!r} ({why}), which {_HOW.get(how, how)}: "
        "what it would run is unknown, so do not load this archive with torch.export.load.",
        details={"record": where})


def _nested_data_pkl(raw: bytes, budgets: Budgets) -> bytes | None:
    """The data.pkl of a torch.save archive held in a record (read the way torch reads
    it: by the central directory, the prefix named by the first record)."""
    if not raw.startswith(b"PK\x03\x04"):
        return None
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as nested:
            infos = nested.infolist()
            if not infos or len(infos) > budgets.max_entries:
                return None
            first = infos[0].filename
            prefix = first.split("/", 1)[0]
            info = nested.getinfo(f"{prefix}/data.pkl")
            if info.file_size > budgets.max_pickle_bytes or (
                    info.compress_size and info.file_size / info.compress_size
                    > budgets.max_ratio and info.compress_type != zipfile.ZIP_STORED):
                return None
            return nested.read(info)
    except (zipfile.BadZipFile, KeyError, OSError, RuntimeError, EOFError, ValueError):
        return None
