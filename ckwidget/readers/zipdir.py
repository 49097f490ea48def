"""A strict, budgeted reader of zip archive directories, as torch's reader sees them.

The standard library's zipfile is slow on 100,000 records and lenient where torch is
strict, so the central directory is parsed here with struct, and every disagreement a
hostile archive could exploit (duplicate names, local and central names that differ,
encrypted or compressed records, path traversal) is recorded for the caller.
"""

from __future__ import annotations

import mmap
import struct
import zlib
from dataclasses import dataclass, field
from operator import attrgetter
from pathlib import Path

from ..errors import BudgetExceededError, CorruptCheckpointError
from .budgets import Budgets

_EOCD = b"PK\x05\x06"
_EOCD64_LOC = b"PK\x06\x07"
_EOCD64 = b"PK\x06\x06"
_CENTRAL = b"PK\x01\x02"
_LOCAL = b"PK\x03\x04"
_CENTRAL_FMT = struct.Struct("<4s6H3L5H2L")  # 46 bytes
# the fields read of it: signature, flags, method, crc, sizes, name/extra/comment lengths,
# local header offset
_CENTRAL_FIELDS = struct.Struct("<4s4xHH4xLLLHHH8xL")
_LOCAL_FMT = struct.Struct("<4s5H3L2H")  # 30 bytes


class ZipEntry:
    """One record of the directory (a plain slotted class: archives hold 100,000 of them)."""

    __slots__ = ("compressed_size", "crc", "data_offset", "flags", "header_offset", "method",
                 "name", "size")

    def __init__(self, name: str, method: int, flags: int, crc: int, compressed_size: int,
                 size: int, header_offset: int, data_offset: int | None = None) -> None:
        self.name = name
        self.method = method
        self.flags = flags
        self.crc = crc
        self.compressed_size = compressed_size
        self.size = size
        self.header_offset = header_offset
        self.data_offset = data_offset  # filled from the local header when needed

    def __repr__(self) -> str:
        return f"<ZipEntry {self.name!r} {self.size} bytes at {self.header_offset}>"


@dataclass
class ZipDirectory:
    """Records by name (first occurrence wins, as a lookup by name in torch does), plus
    the archive's oddities."""

    path: Path
    file_size: int
    entries: list[ZipEntry]
    by_name: dict[str, ZipEntry]
    duplicates: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    recovered: bool = False  # built by scanning local headers: the directory was missing
    names: list[str] = field(default_factory=list)  # of every entry, in order (read often)


def read_directory(path: Path, budgets: Budgets) -> ZipDirectory:
    """Parse the central directory; fall back to scanning local headers when the end
    of the archive is missing (a truncated download)."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        tail_len = min(size, 65_536 + 22)
        fh.seek(size - tail_len)
        tail = fh.read(tail_len)
        at = tail.rfind(_EOCD)
        if at < 0 or at + 22 > len(tail):
            return _scan_local_headers(path, size, budgets)
        (_, _disk, _, _, count, cd_size, cd_offset, _) = struct.unpack_from(
            "<4s4H2LH", tail, at
        )
        eocd_pos = size - tail_len + at
        if count == 0xFFFF or cd_offset == 0xFFFFFFFF or cd_size == 0xFFFFFFFF:
            count, cd_size, cd_offset = _zip64_end(fh, eocd_pos, size)
        if count > budgets.max_entries:
            raise BudgetExceededError(
                f"The archive lists {count:,} records, over the {budgets.max_entries:,} budget."
            )
        if cd_offset + cd_size > size:
            return _scan_local_headers(path, size, budgets)
        fh.seek(cd_offset)
        central = fh.read(cd_size)
    entries: list[ZipEntry] = []
    append = entries.append
    unpack = _CENTRAL_FIELDS.unpack_from
    new = object.__new__
    pos = 0
    last = len(central) - 46  # the last offset a whole fixed part fits at
    problems: list[str] = []
    for index in range(count):
        if pos > last:
            break
        (sig, flags, method, crc, csize, usize, name_len, extra_len, comment_len,
         offset) = unpack(central, pos)
        if sig != _CENTRAL:
            problems.append(f"central directory record {index} has a bad signature")
            break
        name_end = pos + 46 + name_len
        name = central[pos + 46:name_end].decode("utf-8", "replace")
        if csize == 0xFFFFFFFF or usize == 0xFFFFFFFF or offset == 0xFFFFFFFF:
            extra = central[name_end:name_end + extra_len]
            usize, csize, offset = _zip64_extra(extra, usize, csize, offset)
        # ZipEntry.__init__'s work without the call (one per record, 100,000 of them)
        e = new(ZipEntry)
        e.name = name
        e.method = method
        e.flags = flags
        e.crc = crc
        e.compressed_size = csize
        e.size = usize
        e.header_offset = offset
        e.data_offset = None
        append(e)
        pos = name_end + extra_len + comment_len
    if len(entries) < count:
        problems.append(
            f"the directory promises {count:,} records but holds {len(entries):,}"
        )
    return _finish(path, size, entries, problems, recovered=False)


def _zip64_end(fh, eocd_pos: int, size: int) -> tuple[int, int, int]:
    if eocd_pos < 20:
        raise CorruptCheckpointError("The archive's zip64 end record is missing.")
    fh.seek(eocd_pos - 20)
    loc = fh.read(20)
    if loc[:4] != _EOCD64_LOC:
        raise CorruptCheckpointError("The archive's zip64 end record is missing.")
    (eocd64_offset,) = struct.unpack_from("<Q", loc, 8)
    if eocd64_offset + 56 > size:
        raise CorruptCheckpointError("The archive's zip64 end record points past the file.")
    fh.seek(eocd64_offset)
    rec = fh.read(56)
    if rec[:4] != _EOCD64:
        raise CorruptCheckpointError("The archive's zip64 end record is damaged.")
    count, cd_size, cd_offset = struct.unpack_from("<3Q", rec, 32)
    return count, cd_size, cd_offset


def _zip64_extra(extra: bytes, usize: int, csize: int, offset: int) -> tuple[int, int, int]:
    pos = 0
    while pos + 4 <= len(extra):
        tag, length = struct.unpack_from("<2H", extra, pos)
        body = extra[pos + 4:pos + 4 + length]
        if tag == 0x0001:
            values = [struct.unpack_from("<Q", body, i)[0] for i in range(0, len(body) - 7, 8)]
            it = iter(values)
            if usize == 0xFFFFFFFF:
                usize = next(it, usize)
            if csize == 0xFFFFFFFF:
                csize = next(it, csize)
            if offset == 0xFFFFFFFF:
                offset = next(it, offset)
            break
        pos += 4 + length
    return usize, csize, offset


def _scan_local_headers(path: Path, size: int, budgets: Budgets) -> ZipDirectory:
    """Walk local headers from the start: how a truncated archive can still be listed."""
    entries: list[ZipEntry] = []
    problems: list[str] = []  # the missing directory itself is the caller's finding
    with open(path, "rb") as fh:
        pos = 0
        while pos + 30 <= size and len(entries) < budgets.max_entries:
            fh.seek(pos)
            head = fh.read(30)
            if head[:4] != _LOCAL:
                break
            (_, _, flags, method, _, _, crc, csize, usize, name_len, extra_len) = (
                _LOCAL_FMT.unpack(head)
            )
            name = fh.read(name_len).decode("utf-8", "replace")
            extra = fh.read(extra_len)
            if 0xFFFFFFFF in (csize, usize):
                usize, csize, _ = _zip64_extra(extra, usize, csize, 0)
            data_offset = pos + 30 + name_len + extra_len
            after = data_offset + csize
            if flags & 0x08 and csize == 0:
                # torch writes sizes in a descriptor after the data: find it
                found = _find_descriptor(fh, data_offset, size)
                if found is None:
                    break  # the record is cut off: nothing after it survives
                crc, csize, usize, after = found
            if data_offset + csize > size:
                break
            entries.append(ZipEntry(name, method, flags, crc, csize, usize, pos, data_offset))
            pos = after
    return _finish(path, size, entries, problems, recovered=True)


def _find_descriptor(fh, start: int, size: int) -> tuple[int, int, int, int] | None:
    """The data descriptor (signature, crc, sizes) that ends a record begun at ``start``."""
    chunk = 1 << 22
    at = start
    carry = b""
    while at < size:
        fh.seek(at)
        block = carry + fh.read(chunk)
        base = at - len(carry)
        idx = block.find(b"PK\x07\x08")
        while idx >= 0:
            q = base + idx
            tail = block[idx:idx + 24]
            if len(tail) >= 16:
                crc, c32, u32 = struct.unpack_from("<3L", tail, 4)
                if c32 == q - start:
                    return crc, c32, u32, q + 16
            if len(tail) >= 24:
                crc = struct.unpack_from("<L", tail, 4)[0]
                c64, u64 = struct.unpack_from("<2Q", tail, 8)
                if c64 == q - start:
                    return crc, c64, u64, q + 24
            idx = block.find(b"PK\x07\x08", idx + 1)
        carry = block[-23:]
        at += chunk
    return None


def _finish(path: Path, size: int, entries: list[ZipEntry], problems: list[str],
            *, recovered: bool) -> ZipDirectory:
    by_name: dict[str, ZipEntry] = {}
    duplicates: list[str] = []
    for e in entries:
        name = e.name
        if name in by_name:
            duplicates.append(name)
            continue
        by_name[name] = e
        if e.flags & 0x01 or ".." in name or name.startswith(("/", "\\")):
            if name.startswith(("/", "\\")) or ".." in name.replace("\\", "/").split("/"):
                problems.append(f"record name {name!r} points outside the archive")
            if e.flags & 0x01:
                problems.append(f"record {name!r} is encrypted")
    return ZipDirectory(path, size, entries, by_name, duplicates, problems, recovered,
                        list(map(attrgetter("name"), entries)))


def data_offset(directory: ZipDirectory, entry: ZipEntry, fh=None) -> int:
    """Where a record's bytes start, from its local header (as torch computes it);
    checks that the local name agrees with the central one."""
    if entry.data_offset is not None:
        return entry.data_offset
    own = fh is None
    fh = fh or open(directory.path, "rb")
    try:
        fh.seek(entry.header_offset)
        head = fh.read(30)
        if len(head) < 30 or head[:4] != _LOCAL:
            raise CorruptCheckpointError(
                f"Record {entry.name!r} has no local header where the directory says; "
                "the archive is damaged."
            )
        name_len, extra_len = struct.unpack_from("<2H", head, 26)
        local_name = fh.read(name_len).decode("utf-8", "replace")
        if local_name != entry.name:
            raise CorruptCheckpointError(
                f"Record {entry.name!r} is called {local_name!r} in its local header: the "
                "archive was tampered with or damaged, and tools would disagree on it."
            )
    finally:
        if own:
            fh.close()
    entry.data_offset = entry.header_offset + 30 + name_len + extra_len
    return entry.data_offset


def read_record(directory: ZipDirectory, entry: ZipEntry, budgets: Budgets, *,
                limit: int, check_crc: bool = True) -> bytes:
    """The bytes of a small record (data.pkl, version...), decompressed within budgets."""
    if entry.flags & 0x01:
        raise CorruptCheckpointError(f"Record {entry.name!r} is encrypted; torch cannot read it.")
    if entry.size > limit:
        raise BudgetExceededError(
            f"Record {entry.name!r} is {entry.size:,} bytes, over the {limit:,}-byte budget."
        )
    if entry.method == 8 and entry.compressed_size and (
        entry.size / entry.compressed_size > budgets.max_ratio
    ):
        raise BudgetExceededError(
            f"Record {entry.name!r} claims a compression ratio of "
            f"{entry.size / entry.compressed_size:,.0f}:1 (a decompression bomb?)."
        )
    start = data_offset(directory, entry)
    if start + entry.compressed_size > directory.file_size:
        raise CorruptCheckpointError(
            f"Record {entry.name!r} runs past the end of the file: the file is truncated."
        )
    with open(directory.path, "rb") as fh:
        fh.seek(start)
        raw = fh.read(entry.compressed_size)
    if entry.method == 0:
        data = raw[: entry.size] if entry.size <= len(raw) else raw
    elif entry.method == 8:
        inflater = zlib.decompressobj(-15)
        # Never inflate more than the directory declares: a stream that lies about its
        # size would otherwise grow up to the whole budget before the CRC check fails.
        try:
            data = inflater.decompress(raw, entry.size + 1)
        except zlib.error as exc:
            raise CorruptCheckpointError(
                f"Record {entry.name!r} cannot be decompressed ({exc})."
            ) from None
        if len(data) > entry.size:
            raise CorruptCheckpointError(
                f"Record {entry.name!r} inflates past the {entry.size:,} bytes its directory "
                "entry declares (a disguised decompression bomb, or a damaged archive)."
            )
    else:
        raise CorruptCheckpointError(
            f"Record {entry.name!r} uses compression method {entry.method}, "
            "which torch cannot read."
        )
    if check_crc and zlib.crc32(data) != entry.crc:
        raise CorruptCheckpointError(
            f"Record {entry.name!r} fails its CRC check: its bytes were damaged after saving."
        )
    return data


def crc_matches(directory: ZipDirectory, entry: ZipEntry, chunk: int = 1 << 24) -> bool:
    """Check a stored record's CRC by streaming it (reads the record's bytes once)."""
    start = data_offset(directory, entry)
    if entry.method != 0 or start + entry.size > directory.file_size:
        return False
    crc = 0
    with open(directory.path, "rb") as fh:
        if entry.size == 0:
            return entry.crc == 0
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            for at in range(start, start + entry.size, chunk):
                crc = zlib.crc32(mm[at:min(at + chunk, start + entry.size)], crc)
    return crc == entry.crc
