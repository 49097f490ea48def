"""Builders for the non-torch formats, written with the real writers where they exist
and byte by byte (from the format specs) where the writer is not installed."""

from __future__ import annotations

import io
import json
import pickle
import struct
import tarfile
from pathlib import Path
from typing import Any

import torch


def st_file(path: Path, header: dict[str, Any] | bytes, data: bytes = b"",
            n: int | None = None) -> Path:
    """A safetensors file from a header (dict or raw bytes) and data, optionally lying
    about the header length."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw) if n is None else n) + raw + data)
    return path


def st_entry(dtype: str, shape: list[int], begin: int, end: int) -> dict[str, Any]:
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


def mixed_state_dict() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "encoder.layer.0.weight": torch.randn(8, 4, generator=g),
        "encoder.layer.0.bias": torch.randn(8, generator=g).to(torch.float16),
        "encoder.norm.weight": torch.randn(8, generator=g).to(torch.bfloat16),
        "head.weight": torch.randn(3, 8, generator=g, dtype=torch.float64),
        "fp8": torch.randn(5, generator=g).to(torch.float8_e4m3fn),
        "fp8b": torch.randn(5, generator=g).to(torch.float8_e5m2),
        "mask": torch.tensor([True, False, True]),
        "ids": torch.arange(6, dtype=torch.int64).reshape(2, 3),
        "small": torch.arange(4, dtype=torch.int8),
        "u16": torch.arange(4, dtype=torch.int32).to(torch.uint16),
        "empty": torch.zeros(0, 4),
        "scalar": torch.tensor(2.5),
        "c": torch.randn(2, generator=g, dtype=torch.complex64),
    }


def gguf_bytes(version: int = 3, tensors: int = 7, arch: str = "llama") -> bytes:
    def s(text: str) -> bytes:
        b = text.encode()
        return struct.pack("<Q", len(b)) + b

    kvs = [
        s("general.architecture") + struct.pack("<I", 8) + s(arch),
        s("general.name") + struct.pack("<I", 8) + s("Tiny <model>"),
        s("tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, 2) + s("a") + s("b"),
        s(f"{arch}.context_length") + struct.pack("<II", 4, 2048),
    ]
    return b"GGUF" + struct.pack("<IQQ", version, tensors, len(kvs)) + b"".join(kvs)


def _varint(n: int) -> bytes:
    out = b""
    while True:
        low, n = n & 0x7F, n >> 7
        if n:
            out += bytes([low | 0x80])
        else:
            return out + bytes([low])


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def onnx_bytes() -> bytes:
    """An ONNX ModelProto header as onnx serialises it: ir_version, producer, graph, opset."""
    graph = _field(1, b"\x00" * 500) + _field(2, b"main_graph")
    opset = b"\x0a\x00" + b"\x10" + _varint(17)
    return (_varint(1 << 3) + _varint(9) + _field(2, b"pytorch") + _field(3, b"2.13.0")
            + _field(7, graph) + _field(8, opset))


def keras_h5_bytes(whole_model: bool = False) -> bytes:
    """The HDF5 signature and superblock followed by the attribute names Keras writes."""
    names = [b"backend", b"keras_version"]
    names += [b"model_config", b"model_weights"] if whole_model else [b"layer_names"]
    body = b"\x00".join(names)
    return b"\x89HDF\r\n\x1a\n" + b"\x00" * 88 + b"OHDR" + body + b"\x00" * 256


def dcp_save(folder: Path, sd: dict) -> None:
    import warnings

    import torch.distributed.checkpoint as dcp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save(sd, checkpoint_id=str(folder), no_dist=True)


def tar_checkpoint(path: Path, tensors: dict[str, torch.Tensor], extra: dict[str, Any]) -> Path:
    """A torch 0.1.x tar checkpoint, laid out as torch/serialization.py's legacy_load reads
    it: 'storages' (count, then (key, location, storage type) + int64 numel + raw bytes per
    storage, then a list of storage views), 'tensors' (count, then (key, storage key, tensor
    type) + ndim + sizes + strides + offset per tensor) and 'pickle' (the object, tensors as
    persistent ids)."""
    storage_types = {torch.float32: torch.FloatStorage, torch.float64: torch.DoubleStorage,
                     torch.int64: torch.LongStorage, torch.int32: torch.IntStorage,
                     torch.uint8: torch.ByteStorage, torch.float16: torch.HalfStorage}
    storages = io.BytesIO()
    tensors_rec = io.BytesIO()
    ids: dict[str, int] = {}
    pickle.dump(len(tensors), storages, protocol=2)
    pickle.dump(len(tensors), tensors_rec, protocol=2)
    for i, (name, t) in enumerate(tensors.items()):
        storage_key, tensor_key = 1000 + i, i
        ids[name] = tensor_key
        base = t.untyped_storage()
        numel = base.nbytes() // t.element_size()
        pickle.dump((storage_key, "cpu", storage_types[t.dtype]), storages, protocol=2)
        storages.write(struct.pack("<q", numel))
        storages.write(bytes(base))
        pickle.dump((tensor_key, storage_key, "torch.FloatTensor"), tensors_rec, protocol=2)
        tensors_rec.write(struct.pack("<i", t.dim()) + b"\0" * 4)
        tensors_rec.write(struct.pack(f"<{t.dim()}q", *t.shape))
        tensors_rec.write(struct.pack(f"<{t.dim()}q", *t.stride()))
        tensors_rec.write(struct.pack("<q", t.storage_offset()))
    pickle.dump([], storages, protocol=2)  # no storage views

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj: Any) -> Any:
            if isinstance(obj, torch.Tensor):
                return str(ids[next(k for k, v in tensors.items() if v is obj)])
            return None

    main = io.BytesIO()
    Pickler(main, protocol=2).dump({"state_dict": dict(tensors), **extra})
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for member, data in (("sys_info", pickle.dumps({"little_endian": True}, protocol=2)),
                             ("pickle", main.getvalue()), ("tensors", tensors_rec.getvalue()),
                             ("storages", storages.getvalue())):
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path
