"""Recognise a file by its first bytes, never by its name alone."""

from __future__ import annotations

from pathlib import Path

HEAD_BYTES = 4096

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


def read_head(path: Path, n: int = HEAD_BYTES) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(n)


def sniff_bytes(head: bytes, size: int, name: str = "") -> str:
    """Name the kind of file these first bytes start: a key of ``readers.READERS``."""
    if size == 0:
        return "empty"
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return "zip"
    if head.startswith(b"version https://git-lfs"):
        return "lfs-pointer"
    stripped = head.lstrip()[:512].lower()
    if stripped.startswith((b"<!doctype html", b"<html", b"<head", b"<?xml", b"<body")) or (
        stripped.startswith(b"<") and b"<html" in head.lower()
    ):
        return "html"
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return "hdf5"
    if head.startswith(b"GGUF"):
        return "gguf"
    if head.startswith(b"7z\xbc\xaf\x27\x1c"):
        return "7z"
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if len(head) > 262 and head[257:262] == b"ustar":
        return "tar"
    if _looks_like_safetensors(head, size):
        return "safetensors"
    if head[:1] == b"\x80" and len(head) > 1 and head[1] <= 5:
        return "pickle"
    if name.endswith(".onnx") or _looks_like_onnx(head):
        return "onnx"
    if name.endswith(".index") and head[:1] == b"\x00":
        return "tf-index"
    if head[:1] in (b"(", b"}", b"]", b"c") or (head[:1] in (b"L", b"I") and head[1:2].isdigit()):
        # protocol 0/1 pickles have no PROTO opcode; legacy torch files at protocol 0/1
        # start with the magic number as a LONG
        return "pickle"
    if _runs_as_pickle(head, size):
        return "pickle"
    return "unknown"


def _runs_as_pickle(head: bytes, size: int) -> bool:
    """Would pickle.load get somewhere with these bytes? Protocol 0 and 1 pickles may
    start with any opcode (``V``, ``S``, ``N``...), so there is no magic number to look
    for: the symbolic machine runs the first bytes, and a stream that names a global,
    completes, or runs cleanly to the end of what was read is a pickle (and gets a
    safety verdict), while text or binary junk breaks within a few bytes."""
    from .pickle_vm import _OPNAMES, run_pickle

    if head[0] not in _OPNAMES:
        return False
    res = run_pickle(head)
    if res.globals or res.complete:
        return True
    # cut off by the end of the head, not broken: the rest of the file decides
    return len(head) < size and res.error is not None and (
        "ends before its STOP" in res.error or "cut off" in res.error
        or "claims" in res.error)


def _looks_like_safetensors(head: bytes, size: int) -> bool:
    if len(head) < 10:
        return False
    n = int.from_bytes(head[:8], "little")
    # A header longer than the file is still safetensors: a truncated one.
    return 2 <= n < (1 << 40) and head[8:9] == b"{"


def _looks_like_onnx(head: bytes) -> bool:
    # ModelProto starts with field 1 (ir_version, varint): 0x08, then usually a
    # producer_name (field 2, 0x12) or opset_import (field 8, 0x42).
    return len(head) > 4 and head[0] == 0x08 and head[1] < 0x20 and head[2] in (0x12, 0x3A, 0x42)


def is_tf_data_shard(name: str) -> bool:
    return ".data-" in name and "-of-" in name
