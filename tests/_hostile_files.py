"""Hostile checkpoint files, generated in code (after picklescan's and fickling's corpora,
written from scratch): pickle payloads that would create a sentinel file if unpickled,
zip tricks, and machine-exhaustion pickles.

Every payload is real: ``tests/test_hostile.py`` runs each one once through the real
``pickle.loads`` in a throwaway subprocess to prove that it does create its sentinel, so
"the sentinel is absent after ckwidget opened the file" means something.
"""

from __future__ import annotations

import io
import os
import pickle
import pickletools
import shlex
import struct
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

# --------------------------------------------------------------------------- assembler

MARK, STOP, POP, TUPLE, REDUCE, EMPTY_TUPLE = b"(", b".", b"0", b"t", b"R", b")"


def proto(n: int) -> bytes:
    return b"\x80" + bytes([n]) if n >= 2 else b""


def text(value: str, protocol: int = 2) -> bytes:
    """A str on the stack: UNICODE (protocol 0, a text line) or BINUNICODE."""
    if protocol == 0:
        return b"V" + value.encode("raw_unicode_escape") + b"\n"
    raw = value.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def glob(module: str, name: str, how: str = "GLOBAL") -> bytes:
    if how == "STACK_GLOBAL":
        return text(module) + text(name) + b"\x93"
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def tup(*items: bytes) -> bytes:
    return MARK + b"".join(items) + TUPLE


def call(func: bytes, *args: bytes) -> bytes:
    """func(*args) through REDUCE."""
    return func + tup(*args) + REDUCE


def lst(*items: bytes) -> bytes:
    return MARK + b"".join(items) + b"l"


def empty_dict() -> bytes:
    return b"}"


def whole(body: bytes, protocol: int = 2) -> bytes:
    """A complete pickle whose result is the value ``body`` pushes."""
    return proto(protocol) + body + STOP


# --------------------------------------------------------------------------- payloads


@dataclass
class Payload:
    """One hostile pickle: ``data`` is a complete pickle stream; ``body`` (when the payload
    can be embedded in another pickle) pushes one value and leaves the rest alone."""

    name: str
    data: bytes
    expected: list[str]  # globals the malicious finding must name
    body: bytes | None = None
    needs: list[str] = field(default_factory=list)  # what the victim's process must have
    delayed: bool = False  # the sentinel appears a moment later (Popen)
    files: dict[Path, bytes] = field(default_factory=dict)  # helper files it refers to


def _cmd(sentinel: Path) -> str:
    return f"touch {shlex.quote(str(sentinel))}"


def _code(sentinel: Path) -> str:
    return f"open({str(sentinel)!r}, 'w').close()"


class _Reduce:
    """Pickled by the real pickler as func(*args)."""

    def __init__(self, func: Callable, *args: object) -> None:
        self.func = func
        self.args = args

    def __reduce__(self):
        return self.func, self.args


def payloads(folder: Path) -> list[Payload]:
    """At least 25 payload variants; each would create ``folder/sentinel-<name>``."""
    out: list[Payload] = []

    def sentinel(name: str) -> Path:
        return folder / f"sentinel-{name}"

    def add(name: str, body: bytes, expected: list[str], protocol: int = 2,
            **kw: object) -> None:
        out.append(Payload(name, whole(body, protocol), expected, body, **kw))

    # the real pickler, every protocol: os.system pickles as posix.system
    for p in range(6):
        name = f"os-system-real-pickler-p{p}"
        out.append(Payload(name, pickle.dumps(_Reduce(os.system, _cmd(sentinel(name))),
                                              protocol=p), ["posix.system"]))
    # by hand, GLOBAL in protocol 0 (text opcodes only)
    name = "os-system-global-p0"
    add(name, call(glob("os", "system"), text(_cmd(sentinel(name)), 0)), ["os.system"], 0)
    name = "posix-system-stack-global"
    add(name, call(glob("posix", "system", "STACK_GLOBAL"), text(_cmd(sentinel(name)))),
        ["posix.system"], 4)
    name = "subprocess-check-output"
    add(name, call(glob("subprocess", "check_output", "STACK_GLOBAL"),
                   lst(text("touch"), text(str(sentinel(name))))),
        ["subprocess.check_output"], 4)
    name = "subprocess-popen-inst"
    add(name, MARK + lst(text("touch", 0), text(str(sentinel(name)), 0))
        + b"isubprocess\nPopen\n", ["subprocess.Popen"], 0, delayed=True)
    name = "eval-obj"
    add(name, MARK + glob("builtins", "eval") + text(_code(sentinel(name))) + b"o",
        ["builtins.eval"], 1)
    name = "exec-newobj-partial"
    add(name, glob("functools", "partial") + tup(glob("builtins", "exec"),
                                                 text(_code(sentinel(name)))) + b"\x81"
        + EMPTY_TUPLE + REDUCE, ["builtins.exec"])
    name = "system-newobj-ex"
    add(name, glob("functools", "partial", "STACK_GLOBAL")
        + tup(glob("posix", "system", "STACK_GLOBAL"), text(_cmd(sentinel(name))))
        + empty_dict() + b"\x92" + EMPTY_TUPLE + REDUCE, ["posix.system"], 4)
    name = "exec-build-setstate"
    exec_ = glob("builtins", "exec")
    add(name, call(glob("functools", "partial"), exec_)
        + tup(exec_, tup(text(_code(sentinel(name)))), empty_dict(), b"N") + b"b"
        + EMPTY_TUPLE + REDUCE, ["builtins.exec"])
    name = "getattr-import-gadget"
    os_module = call(glob("builtins", "__import__"), text("os"))
    add(name, call(call(glob("builtins", "getattr"), os_module, text("system")),
                   text(_cmd(sentinel(name)))), ["builtins.getattr", "builtins.__import__"])
    name = "operator-methodcaller"
    add(name, call(call(glob("operator", "methodcaller"), text("system"),
                        text(_cmd(sentinel(name)))), os_module),
        ["operator.methodcaller", "builtins.__import__"])
    name = "c-operator-methodcaller"
    add(name, call(call(glob("_operator", "methodcaller"), text("system"),
                        text(_cmd(sentinel(name)))), os_module),
        ["_operator.methodcaller", "builtins.__import__"])
    name = "runpy-run-code"
    add(name, call(glob("runpy", "_run_code"), text(_code(sentinel(name))), empty_dict()),
        ["runpy._run_code"])
    name = "nested-pickle-loads"
    inner = pickle.dumps(_Reduce(os.system, _cmd(sentinel(name))), protocol=2)
    add(name, call(glob("pickle", "loads"), b"B" + struct.pack("<I", len(inner)) + inner),
        ["pickle.loads"], 3)
    name = "nested-torch-load"
    inner_file = folder / "inner-payload.bin"
    inner = pickle.dumps(_Reduce(os.system, _cmd(sentinel(name))), protocol=2)
    load = glob("torch", "load")
    partial = call(glob("functools", "partial"), load) + tup(
        load, EMPTY_TUPLE, b"}" + text("weights_only") + b"\x89s", b"N") + b"b"
    add(name, call(partial, text(str(inner_file))), ["torch.load"], needs=["torch"],
        files={inner_file: inner})
    name = "memo-put-get"
    add(name, glob("posix", "system") + b"p7\n" + POP + b"(I1\nI2\nt0"
        + b"g7\n" + tup(text(_cmd(sentinel(name)), 0)) + REDUCE, ["posix.system"], 0)
    name = "memo-memoize-binget"
    add(name, glob("posix", "system", "STACK_GLOBAL") + b"\x94" + POP + b"h\x00"
        + tup(text(_cmd(sentinel(name)))) + REDUCE, ["posix.system"], 4)
    name = "ext-code"
    add(name, b"\x82\xf0" + tup(text(_cmd(sentinel(name)))) + REDUCE,
        ["copyreg._extension_registry.240"], needs=["ext:posix.system:240"])
    name = "py2-builtin-eval"
    add(name, call(glob("__builtin__", "eval"), text(_code(sentinel(name)), 0)),
        ["builtins.eval"], 0)  # fix_imports maps the name: the mapped one runs
    name = "submodule-dotted-name"
    add(name, call(glob("subprocess", "os.system", "STACK_GLOBAL"),
                   text(_cmd(sentinel(name)))), ["subprocess.os.system"], 4)
    name = "timeit-stmt"
    add(name, call(glob("timeit", "timeit"), text("pass"), text(_code(sentinel(name)))),
        ["timeit.timeit"])
    name = "eval-fakes-legacy-magic"
    out.append(Payload(name, whole(call(glob("builtins", "eval"), text(
        f"({_code(sentinel(name))}, 0x1950A86A20F9469CFC6C)[1]"))) + whole(b"M\xe9\x03"),
        ["builtins.eval"]))
    name = "broken-after-reduce"
    out.append(Payload(name, proto(2) + call(glob("posix", "system"),
                                              text(_cmd(sentinel(name)))) + b"}q\x00(X",
                       ["posix.system"]))
    return out


def sentinels(folder: Path) -> list[Path]:
    return sorted(folder.glob("sentinel-*"))


# --------------------------------------------------------------------------- containers


def small_state() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return {"fc.weight": torch.randn(4, 3, generator=g), "fc.bias": torch.randn(4, generator=g)}


def embed_protocol(payload: Payload) -> int:
    """The protocol the enclosing pickle must declare for the payload to work (dotted
    STACK_GLOBAL names need 4)."""
    return max(2, payload.data[1]) if payload.data[:1] == b"\x80" else 2


def torch_zip_with_body(path: Path, body: bytes, protocol: int = 2) -> Path:
    """A torch.save archive whose data.pkl runs ``body`` first (its value popped), then
    builds the real state dict: torch.load(weights_only=False) would run the payload and
    load the tensors."""
    torch.save(small_state(), path)
    return replace_records(path, {"data.pkl": lambda old: proto(protocol) + body + POP
                                  + old[2:]})


def replace_records(path: Path, edits: dict[str, Callable[[bytes], bytes]],
                    extra: dict[str, bytes] | None = None, out: Path | None = None) -> Path:
    """Rewrite a torch archive record by record (stored), editing some by name (the part
    after the archive folder) and appending others."""
    target = out or path
    with zipfile.ZipFile(path) as z:
        records = [(i.filename, z.read(i)) for i in z.infolist()]
    prefix = records[0][0].split("/", 1)[0]
    with zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as z:
        for name, data in records:
            rest = name.split("/", 1)[1]
            z.writestr(name, edits[rest](data) if rest in edits else data)
        for rest, data in (extra or {}).items():
            z.writestr(f"{prefix}/{rest}", data)
    return target


def pickle_bounds(data: bytes, start: int = 0) -> int:
    """Offset just after the STOP of the pickle starting at ``start`` (a trusted file)."""
    for op, _arg, pos in pickletools.genops(io.BytesIO(data[start:])):
        if op.name == "STOP":
            return start + pos + 1
    raise ValueError("no STOP")


def legacy_with_body(path: Path, body: bytes, protocol: int = 2) -> Path:
    """torch.save(_use_new_zipfile_serialization=False), with the main pickle (the fourth
    stacked pickle) running ``body`` first."""
    torch.save(small_state(), path, _use_new_zipfile_serialization=False)
    data = path.read_bytes()
    pos = 0
    for _ in range(3):  # magic number, protocol version, sys_info
        pos = pickle_bounds(data, pos)
    assert data[pos:pos + 2] == b"\x80\x02"
    path.write_bytes(data[:pos] + proto(protocol) + body + POP + data[pos + 2:])
    return path


class Evil:
    """An object that torch.save itself pickles as a call to os.system."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


# --------------------------------------------------------------------------- zip tricks


def raw_zip(path: Path, records: list[tuple[str, bytes]], *, method: int = zipfile.ZIP_STORED,
            level: int | None = None) -> Path:
    with zipfile.ZipFile(path, "w", method, compresslevel=level) as z:
        for name, data in records:
            z.writestr(name, data)
    return path


def torch_records(state: dict | None = None) -> list[tuple[str, bytes]]:
    """The records of a real torch.save archive (prefix 'archive')."""
    buf = io.BytesIO()
    torch.save(small_state() if state is None else state, buf)
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as z:
        return [(i.filename, z.read(i)) for i in z.infolist()]


def patch_central(path: Path, name: str, *, flags: int | None = None,
                  new_name: bytes | None = None, local: bool = False) -> None:
    """Set general-purpose flag bits, or rename a record in its central (or local) header
    only, keeping the length."""
    data = bytearray(path.read_bytes())
    sig = b"PK\x03\x04" if local else b"PK\x01\x02"
    name_at = 30 if local else 46
    flag_at = 6 if local else 8
    pos = data.find(sig)
    while pos >= 0:
        (name_len,) = struct.unpack_from("<H", data, pos + (26 if local else 28))
        got = bytes(data[pos + name_at:pos + name_at + name_len])
        if got == name.encode():
            if flags is not None:
                (old,) = struct.unpack_from("<H", data, pos + flag_at)
                struct.pack_into("<H", data, pos + flag_at, old | flags)
            if new_name is not None:
                assert len(new_name) == name_len
                data[pos + name_at:pos + name_at + name_len] = new_name
            path.write_bytes(bytes(data))
            return
        pos = data.find(sig, pos + 4)
    raise KeyError(name)


def flip_byte_in_record(path: Path, name: str, offset_in_record: int) -> None:
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(name)
    data = bytearray(path.read_bytes())
    (name_len, extra_len) = struct.unpack_from("<2H", data, info.header_offset + 26)
    at = info.header_offset + 30 + name_len + extra_len + offset_in_record
    data[at] ^= 0x20
    path.write_bytes(bytes(data))


# --------------------------------------------------------------------------- exhaustion


def deep_marks(n: int = 100_000) -> bytes:
    return proto(2) + MARK * n + STOP


def deep_lists(n: int = 100_000) -> bytes:
    """[[[[...]]]] nested n deep through EMPTY_LIST / APPEND."""
    return proto(2) + b"]" * n + b"a" * (n - 1) + STOP


def billion_laughs(levels: int = 40, width: int = 10) -> bytes:
    """Each level is a list holding the previous level ``width`` times (GET, not copies):
    a few hundred bytes describing width**levels leaves."""
    body = b"]q\x00"  # level 0: an empty list in memo 0
    for level in range(1, levels + 1):
        body += b"(" + (b"h" + bytes([level - 1])) * width + b"l" + b"q" + bytes([level])
    return proto(2) + b"}" + text("bomb") + body + b"s" + STOP


def shared_bomb(levels: int = 40, width: int = 10) -> list:
    """The same bomb as a Python object, for torch.save to write (it memoizes shared
    references, so the file stays small)."""
    node: list = []
    for _ in range(levels):
        node = [node] * width
    return node


def huge_length(opcode: bytes, claim: int = 2**62) -> bytes:
    return proto(4) + opcode + struct.pack("<Q", claim) + b"abc" + STOP


def huge_long4() -> bytes:
    return proto(2) + b"\x8b" + struct.pack("<i", 2**31 - 1) + b"\x01" * 8 + STOP


def big_long4(n: int = 1024) -> bytes:
    return proto(2) + b"\x8b" + struct.pack("<i", n) + b"\x7f" * n + STOP


def hash_bomb(levels: int = 80) -> bytes:
    """t_k = (t_{k-1}, t_{k-1}) through the memo; t_80 used as a dict key: hashing it
    visits 2**80 tuples."""
    body = b")q\x00"
    for level in range(1, levels + 1):
        body += b"h" + bytes([level - 1]) + b"h" + bytes([level - 1]) + b"\x86q" + bytes([level])
    return proto(2) + b"}" + body + text("v") + b"s" + STOP


def many_empty_tuples(n: int = 3_000_000) -> bytes:
    """One tuple of n empty tuples."""
    return proto(2) + MARK + EMPTY_TUPLE * n + TUPLE + STOP


def many_empty_tuples_on_the_stack(n: int = 3_000_000) -> bytes:
    """n values left on the stack (no MARK): the stack itself grows."""
    return proto(2) + EMPTY_TUPLE * n + STOP


def deflated_zeros(megabytes: int) -> bytes:
    """A raw deflate stream of ``megabytes`` MB of zero bytes, built from one fully
    flushed 1 MB segment repeated (about 1,000:1), in milliseconds."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    segment = c.compress(b"\0" * (1 << 20)) + c.flush(zlib.Z_FULL_FLUSH)
    end = zlib.compressobj(9, zlib.DEFLATED, -15).flush()
    return segment * megabytes + end


@dataclass
class RawRecord:
    name: str
    data: bytes  # as stored in the archive (compressed when method is 8)
    method: int = 0
    crc: int | None = None  # None: the CRC of data
    size: int | None = None  # declared uncompressed size; None: len(data)
    flags: int = 0


def build_zip(path: Path, records: list[RawRecord]) -> Path:
    """A zip archive written field by field, so that it can lie about sizes and CRCs."""
    body = bytearray()
    central = bytearray()
    for r in records:
        name = r.name.encode()
        crc = zlib.crc32(r.data) if r.crc is None else r.crc
        size = len(r.data) if r.size is None else r.size
        offset = len(body)
        body += struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, r.flags, r.method, 0, 0, crc,
                            len(r.data), size, len(name), 0) + name + r.data
        central += struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, r.flags, r.method, 0, 0,
                               crc, len(r.data), size, len(name), 0, 0, 0, 0, 0,
                               offset) + name
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(records), len(records),
                      len(central), len(body), 0)
    path.write_bytes(bytes(body + central + end))
    return path
