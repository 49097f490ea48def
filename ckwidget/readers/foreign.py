"""Files from other frameworks or archives: say what they are and which tool converts them.

Each reader peeks at a bounded number of header bytes (no h5py, onnx or gguf needed)
and returns a Checkpoint with no tensors and a ``foreign-format`` Finding.
"""

from __future__ import annotations

import json
import re
import struct
import zipfile
import zlib
from pathlib import Path
from typing import IO, Any

from ..checkpoint import Checkpoint, Finding
from .broken import clean_text
from .budgets import Budgets

SCAN_BYTES = 1 << 20  # bytes scanned for markers in HDF5, GGUF and ONNX headers
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors", ".npz", ".h5", ".pkl")
_HDF5_KERAS_MARKERS = (
    b"model_weights", b"layer_names", b"keras_version", b"model_config", b"training_config",
    b"weight_names",
)
_SHARDS = re.compile(r"^(?P<prefix>.+)\.data-(?P<i>\d+)-of-(?P<n>\d+)$")


def read_foreign(
    path: Path,
    head: bytes,
    budgets: Budgets,
    kind: str,
    names: list[str] | None = None,
) -> Checkpoint:
    """Name a foreign file (``kind`` from the sniffer or the zip/tar readers)."""
    size = path.stat().st_size
    if kind == "hdf5":
        fmt, facts, message = _hdf5(path)
    elif kind == "gguf":
        fmt, facts, message = _gguf(path, budgets)
    elif kind == "onnx":
        fmt, facts, message = _onnx(path, budgets)
    elif kind in ("tf-index", "tf-data"):
        fmt, facts, message = _tf_checkpoint(path)
    elif kind == "7z":
        fmt, facts, message = "7z", {}, (
            "is a 7-Zip archive, not a checkpoint: extract it first (`7z x FILE`, or the "
            "py7zr package) and open the checkpoint inside."
        )
    elif kind == "gzip":
        fmt, facts, message = _gzip(path, head)
    elif kind == "unknown-zip":
        fmt, facts, message = _zip(path, names or [], budgets)
    elif kind == "tar-other":
        fmt, facts, message = _archive("tar", names or [], "tar -xf FILE", "tarfile")
    else:
        fmt, facts, message = kind, {}, (
            f"is a {kind} file, not a PyTorch checkpoint; convert it to a state dict with "
            f"the tool that wrote it."
        )
    finding = Finding("foreign-format", "error", f"{path.name} {message}", details=dict(facts))
    return Checkpoint(path, fmt, metadata=facts, findings=[finding], size=size)


# -- HDF5 / Keras ------------------------------------------------------------------------
def _hdf5(path: Path) -> tuple[str, dict[str, Any], str]:
    with open(path, "rb") as fh:
        data = fh.read(SCAN_BYTES)
    markers = [m.decode() for m in _HDF5_KERAS_MARKERS if m in data]
    facts: dict[str, Any] = {"hdf5_markers": markers}
    if not markers:
        return "hdf5", facts, (
            "is an HDF5 file, not a PyTorch checkpoint: read its datasets with h5py "
            "(h5py.File(path)['name'][()]) and build a state dict with torch.from_numpy."
        )
    whole = "model_config" in markers or "model_weights" in markers
    what = "a whole Keras model" if whole else "Keras weights from save_weights"
    return "keras-h5", facts, (
        f"is a Keras .h5 file ({what}), not a PyTorch checkpoint. For a Hugging Face "
        f"model (tf_model.h5) load it with transformers' from_pretrained(..., "
        f"from_tf=True); otherwise read each layer's weights with h5py and map them by "
        f"hand: Keras Dense kernels are [in, out] (transpose for nn.Linear) and Conv2D "
        f"kernels are [h, w, in, out] (permute(3, 2, 0, 1) for nn.Conv2d)."
    )


# -- GGUF --------------------------------------------------------------------------------
_GGUF_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
                 10: "<Q", 11: "<q", 12: "<d"}
_GGUF_KEEP = ("general.architecture", "general.name", "general.file_type",
              "general.quantization_version", "general.size_label", "general.basename")


class _Short(Exception):
    """The bytes read so far end before the value."""


def _gguf(path: Path, budgets: Budgets) -> tuple[str, dict[str, Any], str]:
    with open(path, "rb") as fh:
        data = fh.read(SCAN_BYTES)
    facts: dict[str, Any] = {}
    try:
        version = struct.unpack_from("<I", data, 4)[0]
        facts["gguf_version"] = version
        if version == 1:
            tensors, kvs = struct.unpack_from("<II", data, 8)
            pos, width = 16, "<I"
        else:
            tensors, kvs = struct.unpack_from("<QQ", data, 8)
            pos, width = 24, "<Q"
        facts.update(tensor_count=tensors, metadata_count=kvs)
        facts.update(_gguf_kvs(data, pos, width, min(kvs, 10_000), budgets))
    except (struct.error, _Short, UnicodeDecodeError, ValueError):
        pass  # keep what was read: the header fields above are enough to name the file
    arch = facts.get("general.architecture")
    about = f" ({arch} architecture, {facts.get('tensor_count', '?')} tensors)" if arch else ""
    return "gguf", facts, (
        f"is a GGUF file (llama.cpp / ggml){about}, not a PyTorch checkpoint. Load it into "
        f"a transformers model with from_pretrained(repo_or_dir, gguf_file=NAME) (it "
        f"dequantizes to torch tensors), or read tensors with the `gguf` package "
        f"(gguf.GGUFReader)."
    )


def _gguf_kvs(
    data: bytes, pos: int, width: str, count: int, budgets: Budgets
) -> dict[str, Any]:
    found: dict[str, Any] = {}
    lw = struct.calcsize(width)

    def string(at: int) -> tuple[str, int]:
        if at + lw > len(data):
            raise _Short
        n = struct.unpack_from(width, data, at)[0]
        if n > budgets.max_string or at + lw + n > len(data):
            raise _Short
        return data[at + lw: at + lw + n].decode("utf-8"), at + lw + n

    def skip(at: int, vtype: int, depth: int = 0) -> tuple[Any, int]:
        if vtype in _GGUF_SCALARS:
            fmt = _GGUF_SCALARS[vtype]
            if at + struct.calcsize(fmt) > len(data):
                raise _Short
            return struct.unpack_from(fmt, data, at)[0], at + struct.calcsize(fmt)
        if vtype == 8:
            return string(at)
        if vtype == 9 and depth < 4:
            if at + 4 + lw > len(data):
                raise _Short
            itype = struct.unpack_from("<I", data, at)[0]
            n = struct.unpack_from(width, data, at + 4)[0]
            at += 4 + lw
            if itype in _GGUF_SCALARS:
                at += n * struct.calcsize(_GGUF_SCALARS[itype])
                if at > len(data):
                    raise _Short
                return f"<array of {n}>", at
            for _ in range(n):
                _, at = skip(at, itype, depth + 1)
            return f"<array of {n}>", at
        raise ValueError(f"unknown GGUF value type {vtype}")

    for _ in range(count):
        key, pos = string(pos)
        if pos + 4 > len(data):
            raise _Short
        vtype = struct.unpack_from("<I", data, pos)[0]
        value, pos = skip(pos + 4, vtype)
        if key in _GGUF_KEEP or key.endswith((".context_length", ".block_count")):
            found[key] = clean_text(value, 200) if isinstance(value, str) else value
    return found


# -- ONNX --------------------------------------------------------------------------------
def _varint(fh: IO[bytes]) -> int | None:
    shift = result = 0
    for _ in range(10):
        b = fh.read(1)
        if not b:
            return None
        result |= (b[0] & 0x7F) << shift
        if not b[0] & 0x80:
            return result
        shift += 7
    return None


def _onnx(path: Path, budgets: Budgets) -> tuple[str, dict[str, Any], str]:
    facts: dict[str, Any] = {}
    names = {1: "ir_version", 2: "producer_name", 3: "producer_version", 4: "domain",
             5: "model_version"}
    opsets: list[str] = []
    with open(path, "rb") as fh:
        for _ in range(1000):
            tag = _varint(fh)
            if tag is None:
                break
            field, wire = tag >> 3, tag & 7
            if wire == 0:
                value = _varint(fh)
                if value is None:
                    break
                if field in names:
                    facts[names[field]] = value
            elif wire == 2:
                n = _varint(fh)
                if n is None:
                    break
                if field in (2, 3, 4) and n <= 4096:
                    facts[names[field]] = clean_text(fh.read(n).decode("utf-8", "replace"))
                elif field == 8 and n <= 4096:
                    opsets.append(_onnx_opset(fh.read(n)))
                else:
                    fh.seek(n, 1)  # the graph and docs: skipped, never read
            elif wire in (1, 5):
                fh.seek(8 if wire == 1 else 4, 1)
            else:
                break
    if opsets:
        facts["opset_import"] = opsets
    made = f" (made by {facts['producer_name']})" if facts.get("producer_name") else ""
    return "onnx", facts, (
        f"is an ONNX model{made}, not a PyTorch checkpoint. Get its weights as numpy "
        f"arrays with onnx.load(path) and onnx.numpy_helper.to_array(init) for each "
        f"graph.initializer (then torch.from_numpy), or convert the whole model with "
        f"onnx2torch.convert(path)."
    )


def _onnx_opset(raw: bytes) -> str:
    domain, version = "", "?"
    i = 0
    try:
        while i < len(raw):
            tag = raw[i]
            i += 1
            if tag == 0x0A:  # field 1, domain string
                n = raw[i]
                domain = raw[i + 1: i + 1 + n].decode("utf-8", "replace")
                i += 1 + n
            elif tag == 0x10:  # field 2, version varint
                value, shift = 0, 0
                while True:
                    b = raw[i]
                    i += 1
                    value |= (b & 0x7F) << shift
                    shift += 7
                    if not b & 0x80:
                        break
                version = str(value)
            else:
                break
    except IndexError:
        pass
    return f"{clean_text(domain, 60) or 'ai.onnx'}:{version}"


# -- TensorFlow checkpoints --------------------------------------------------------------
def _tf_checkpoint(path: Path) -> tuple[str, dict[str, Any], str]:
    name = path.name
    if name.endswith(".index"):
        prefix = name[: -len(".index")]
    else:
        match = _SHARDS.match(name)
        prefix = match.group("prefix") if match else name
    shards = sorted(
        p.name for p in path.parent.glob(f"{glob_escape(prefix)}.data-*-of-*")
    )[:1000]
    facts: dict[str, Any] = {"tf_prefix": prefix, "tf_data_shards": shards}
    expected = {int(m.group("n")) for s in shards if (m := _SHARDS.match(s))}
    missing = ""
    if expected:
        total = max(expected)
        facts["tf_shard_count"] = total
        if len(shards) < total:
            missing = f" Only {len(shards)} of its {total} data shards are next to it."
    has_index = (path.parent / f"{prefix}.index").exists()
    if not has_index:
        missing += f" Its index file {prefix}.index is missing; TensorFlow needs it."
    return "tensorflow-checkpoint", facts, (
        f"is part of a TensorFlow checkpoint (prefix {prefix!r}), not a PyTorch "
        f"checkpoint.{missing} List and read its variables with "
        f"tf.train.load_checkpoint(prefix) / tf.train.list_variables(prefix) and map them "
        f"to the model's keys by hand (Dense kernels are [in, out]: transpose them); for "
        f"Hugging Face models, transformers' from_pretrained(..., from_tf=True) converts it."
    )


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


# -- gzip --------------------------------------------------------------------------------
def _gzip(path: Path, head: bytes) -> tuple[str, dict[str, Any], str]:
    facts: dict[str, Any] = {}
    original = _gzip_name(head)
    if original:
        facts["original_name"] = original
    inner = b""
    try:
        decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
        inner = decompressor.decompress(head, 1024)  # bounded: at most 1 KiB out
    except zlib.error:
        pass
    if len(inner) > 262 and inner[257:262] == b"ustar":
        return "tar.gz", facts, (
            "is a gzip-compressed tar archive (.tar.gz), not a checkpoint: extract it "
            "(`tar -xzf FILE`, or tarfile.open(path, 'r:gz').extractall(filter='data')) "
            "and open the checkpoint inside."
        )
    named = f" of {original!r}" if original else ""
    what = ""
    if inner.startswith(b"PK\x03\x04") or inner[:1] == b"\x80":
        what = " It holds what looks like a torch.save file."
    return "gzip", facts, (
        f"is a gzip-compressed file{named}, not a checkpoint: decompress it first "
        f"(`gunzip -k FILE`, or gzip.open) and open the result.{what}"
    )


def _gzip_name(head: bytes) -> str:
    if len(head) < 10 or not head[3] & 0x08:
        return ""
    pos = 10
    if head[3] & 0x04 and len(head) >= 12:  # FEXTRA
        pos += 2 + int.from_bytes(head[10:12], "little")
    end = head.find(b"\x00", pos)
    if end < 0:
        return ""
    return clean_text(head[pos:end].decode("latin-1"), 200)


# -- zip / tar archives that are not torch files -----------------------------------------
def _zip(path: Path, names: list[str], budgets: Budgets) -> tuple[str, dict[str, Any], str]:
    if "config.json" in names and any(n.endswith(".weights.h5") for n in names):
        facts: dict[str, Any] = {"members": names[:20]}
        facts.update(_keras_metadata(path, budgets))
        version = f" (Keras {facts['keras_version']})" if facts.get("keras_version") else ""
        return "keras", facts, (
            f"is a Keras 3 .keras model archive{version}, not a PyTorch checkpoint. Load "
            f"it with keras.saving.load_model (with KERAS_BACKEND=torch its weights are "
            f"torch tensors), or unzip it and read model.weights.h5 with h5py, mapping "
            f"layers by hand (Dense kernels are [in, out]: transpose them for nn.Linear)."
        )
    return _archive("zip", names, "unzip FILE", "zipfile")


def _keras_metadata(path: Path, budgets: Budgets) -> dict[str, Any]:
    try:
        with zipfile.ZipFile(path) as zf:
            info = zf.getinfo("metadata.json")
            if info.file_size > budgets.max_small_record:
                return {}
            meta = json.loads(zf.read(info).decode("utf-8"))
    except (KeyError, zipfile.BadZipFile, OSError, ValueError, RuntimeError,
            NotImplementedError, EOFError):
        return {}
    if not isinstance(meta, dict):
        return {}
    return {k: clean_text(str(meta[k]), 60) for k in ("keras_version", "date_saved")
            if k in meta}


def _archive(
    kind: str, names: list[str], command: str, module: str
) -> tuple[str, dict[str, Any], str]:
    inside = [n for n in names if n.lower().endswith(CHECKPOINT_SUFFIXES)]
    facts: dict[str, Any] = {"members": [clean_text(n, 200) for n in names[:20]],
                             "member_count": len(names)}
    if inside:
        shown = ", ".join(repr(clean_text(n, 80)) for n in inside[:3])
        return kind, facts, (
            f"is a {kind} archive holding {shown}, not a checkpoint itself: extract it "
            f"(`{command}`) and open that file."
        )
    listed = ", ".join(repr(clean_text(n, 80)) for n in names[:5])
    more = f" and {len(names) - 5} more" if len(names) > 5 else ""
    return kind, facts, (
        f"is a {kind} archive that is not a PyTorch checkpoint (it holds "
        f"{listed or 'nothing'}{more}); extract it (`{command}`, or Python's {module} "
        f"module) and open the weights file inside, if there is one."
    )
