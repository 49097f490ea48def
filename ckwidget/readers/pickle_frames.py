"""Frames as CPython's C unpickler reads them from a file, where that differs from bytes.

``pickle.loads(data)`` reads a protocol 4+ stream on across FRAME ends, as if frames
were not there. The same unpickler reading a file without ``peek`` (``io.BytesIO``, which
is how ``torch.load`` reads ``data.pkl``) keeps one buffer: a frame is read into it, and
an opcode argument that runs past the buffer's end drops what is left and is read afresh
from the file after the frame (``_Unpickler_ReadImpl`` and ``_Unpickler_Readline`` in
``Modules/_pickle.c``; ``_Unpickler_ReadInto``, used for BINBYTES and BYTEARRAY8 data,
takes the rest of the buffer first). pickle writers end frames between opcodes, so the two
readings agree on every real file; a frame that ends inside an opcode is a crafted
disagreement (fickling's "frame boundary divergence"), and the file reading can run calls
that the in-memory one never sees. Files opened with ``open()`` (which have ``peek``) fall
between the two, depending on their buffer: ckwidget judges a stream with any such frame
as hostile whatever the reading, and reads it the file way too, to name what that runs.
"""

from __future__ import annotations

import struct


def _opcode_table() -> tuple[dict[int, int], dict[int, int], dict[int, tuple[int, bool, bool]],
                             frozenset[int]]:
    """How many bytes, lines or counted bytes each opcode's argument takes, from
    pickletools' own description of the protocol."""
    import pickletools as pt

    lines, fixed, counted, none = {}, {}, {}, set()
    widths = {pt.TAKEN_FROM_ARGUMENT1: (1, False), pt.TAKEN_FROM_ARGUMENT4: (4, True),
              pt.TAKEN_FROM_ARGUMENT4U: (4, False), pt.TAKEN_FROM_ARGUMENT8U: (8, False)}
    # _pickle.c reads these payloads with _Unpickler_ReadInto (buffer first, then file)
    into = {"BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8"}
    for op in pt.opcodes:
        code, arg = ord(op.code.encode("latin-1")), op.arg
        if arg is None:
            none.add(code)
        elif arg.n == pt.UP_TO_NEWLINE:
            lines[code] = 2 if arg.name == "stringnl_noescape_pair" else 1
        elif arg.n >= 0:
            fixed[code] = arg.n
        else:
            width, signed = widths[arg.n]
            counted[code] = (width, signed, op.name in into)
    return lines, fixed, counted, frozenset(none)


_LINES, _FIXED, _COUNTED, _NO_ARG = _opcode_table()
_STOP = 0x2E
_FRAME = 0x95


class _Ended(Exception):
    """The stream ends (or is malformed) here: the walk stops, as the unpickler would."""


class _FileReader:
    """The C unpickler's buffer over a file without peek: consumed bytes, in order."""

    __slots__ = ("buf_end", "data", "diverged", "file_pos", "out", "pos")

    def __init__(self, data: bytes, start: int) -> None:
        self.data = data
        self.pos = start      # next byte of the buffer
        self.buf_end = start  # end of the buffer (the file was read up to here)
        self.file_pos = start
        self.out = bytearray()
        self.diverged = False

    def _fresh(self, n: int) -> bytes:
        if self.pos < self.buf_end:
            self.diverged = True  # the rest of the buffer is dropped
        chunk = self.data[self.file_pos:self.file_pos + n]
        if len(chunk) < n:
            raise _Ended
        self.file_pos += n
        self.pos = self.buf_end = self.file_pos
        return chunk

    def read(self, n: int) -> bytes:
        if self.pos + n <= self.buf_end:
            chunk = self.data[self.pos:self.pos + n]
            self.pos += n
        else:
            chunk = self._fresh(n)
        self.out += chunk
        return chunk

    def read_into(self, n: int) -> None:
        """BINBYTES data: the rest of the buffer, then the file."""
        have = min(n, self.buf_end - self.pos)
        self.out += self.data[self.pos:self.pos + have]
        self.pos += have
        rest = n - have
        if rest:
            chunk = self.data[self.file_pos:self.file_pos + rest]
            if len(chunk) < rest:
                raise _Ended
            self.file_pos += rest
            self.pos = self.buf_end = self.file_pos
            self.out += chunk

    def readline(self) -> None:
        end = self.data.find(b"\n", self.pos, self.buf_end)
        if end >= 0:
            self.out += self.data[self.pos:end + 1]
            self.pos = end + 1
            return
        if self.pos < self.buf_end:
            self.diverged = True
        end = self.data.find(b"\n", self.file_pos)
        if end < 0:
            raise _Ended
        self.out += self.data[self.file_pos:end + 1]
        self.file_pos = self.pos = self.buf_end = end + 1

    def frame(self, n: int) -> None:
        """load_frame: the frame's bytes must be in the buffer; reading goes on there."""
        if self.pos + n <= self.buf_end:
            return
        start = self.file_pos
        self._fresh(n)
        self.pos = start


def file_reading(data: bytes, start: int = 0, max_ops: int = 50_000_000) -> bytes | None:
    """The bytes the C unpickler consumes reading ``data[start:]`` from a file without
    peek, when a frame ends inside an opcode (so they differ from ``data``); None when
    the two readings agree. Stops at STOP, at the end, or where the stream breaks."""
    if _FRAME not in data[start:]:
        return None
    reader = _FileReader(data, start)
    read, readline = reader.read, reader.readline
    unpack = struct.unpack
    try:
        for _ in range(max_ops):
            op = read(1)[0]
            if op in _NO_ARG:
                if op == _STOP:
                    break
                continue
            if op == _FRAME:
                (size,) = unpack("<Q", read(8))
                del reader.out[-9:]  # the reading is one stream: no frames in it
                if size > len(data):
                    break
                reader.frame(size)
                continue
            fixed = _FIXED.get(op)
            if fixed is not None:
                read(fixed)
                continue
            lines = _LINES.get(op)
            if lines is not None:
                for _ in range(lines):
                    readline()
                continue
            counted = _COUNTED.get(op)
            if counted is not None:
                width, signed, into = counted
                raw = read(width)
                size = int.from_bytes(raw, "little", signed=signed)
                if size < 0 or size > len(data):
                    break  # the unpickler refuses it here
                if into:
                    reader.read_into(size)
                else:
                    read(size)
                continue
            break  # an unknown opcode: the unpickler stops
    except _Ended:
        pass
    return bytes(reader.out) if reader.diverged else None
