"""Builders for the non-torch formats, written with the real writers where they exist
and byte by byte (from the format specs) where the writer is not installed."""

from __future__ import annotations

import json
import struct
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
