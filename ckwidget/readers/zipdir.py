"""A strict, budgeted reader of zip archive directories, as torch's reader sees them.

The standard library's zipfile is slow on 100,000 records and lenient where torch is
strict, so the central directory is parsed here (record by record with struct, or in
bulk with numpy when the records provably sit where that walk would find them), and
every disagreement a hostile archive could exploit (duplicate names, local and central
names that differ, encrypted or compressed records, path traversal) is recorded for the
caller. Records are kept column-wise; entry objects are made only for records in use.
"""

from __future__ import annotations

import struct
import sys
import zlib
from functools import cached_property
from operator import attrgetter
from pathlib import Path
from typing import Any

from ..errors import BudgetExceededError, CorruptCheckpointError
from .budgets import Budgets
from .filestamp import FileStamp, open_for_read

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


_FIELDS = ("flags", "method", "crc", "compressed_size", "size", "header_offset")
_FLAGS, _METHOD, _CRC, _CSIZE, _SIZE, _OFFSET = range(6)


class ZipDirectory:
    """The archive's records, held column-wise: one list of names and one sequence per
    header field (``_FIELDS``). An archive can hold 100,000 records and an open looks
    at a handful, so ZipEntry objects are made on demand, once per record (a record's
    data offset is remembered on its entry). ``index`` maps a name to its first record,
    as a lookup by name in torch finds it; ``problems`` are the archive's oddities."""

    def __init__(self, path: Path, file_size: int, names: list[str],
                 columns: tuple[Any, ...], index: dict[str, int], duplicates: list[str],
                 problems: list[str], recovered: bool, names_text: str | None = None,
                 made: dict[int, ZipEntry] | None = None) -> None:
        self.path = path
        self.file_size = file_size
        self.names = names  # of every record, in order
        self.index = index
        self.duplicates = duplicates
        self.problems = problems
        self.recovered = recovered  # built by scanning local headers: no directory
        self._columns = columns  # lists, or numpy arrays from the bulk parser
        self._names_text = names_text
        self._made: dict[int, ZipEntry] = made if made is not None else {}
        self._lists: dict[int, list[int]] = {}
        self._newline: bool | None = None
        self.stamp: FileStamp | None = None  # the file as indexed (read_directory sets it)

    def __len__(self) -> int:
        return len(self.names)

    def entry_at(self, i: int) -> ZipEntry:
        """The record at position ``i`` (always the same object for the same record)."""
        e = self._made.get(i)
        if e is None:
            c = self._columns
            e = ZipEntry(self.names[i], int(c[_METHOD][i]), int(c[_FLAGS][i]),
                         int(c[_CRC][i]), int(c[_CSIZE][i]), int(c[_SIZE][i]),
                         int(c[_OFFSET][i]))
            e = self._made.setdefault(i, e)
        return e

    def entry(self, name: str) -> ZipEntry | None:
        """The first record called ``name`` (the one torch reads), or None."""
        i = self.index.get(name)
        return None if i is None else self.entry_at(i)

    def values(self, name: str) -> list[int]:
        """One header field of every record, in order, as a list of ints (for checks
        that run over all records at C speed)."""
        k = _FIELDS.index(name)
        got = self._lists.get(k)
        if got is None:
            col = self._columns[k]
            got = col if isinstance(col, list) else col.tolist()
            self._lists[k] = got
        return got

    @property
    def names_text(self) -> str:
        """Every name joined by newlines: substring tests on it stand in for a pass over
        all names (a name holding a newline can only add false alarms; callers that
        need exactness check ``names_have_newline``)."""
        if self._names_text is None:
            self._names_text = "\n".join(self.names)
        return self._names_text

    @property
    def names_have_newline(self) -> bool:
        """Whether some name holds a newline (then ``names_text`` cannot be split back)."""
        if self._newline is None:
            self._newline = self.names_text.count("\n") != max(len(self.names) - 1, 0)
        return self._newline

    @cached_property
    def entries(self) -> list[ZipEntry]:
        """Every record, in order (builds all of them: hot paths use the columns)."""
        return [self.entry_at(i) for i in range(len(self.names))]

    @cached_property
    def by_name(self) -> dict[str, ZipEntry]:
        """First record by name (builds an entry per name: hot paths use ``entry``)."""
        return {name: self.entry_at(i) for name, i in self.index.items()}


_CENTRAL_WORD = int.from_bytes(_CENTRAL, "little")
_FAST_MIN = 512  # fewer records: the plain walk is as quick
# Loading numpy costs about as much as walking 200,000 records: the bulk parser loads it
# only for bigger directories (the widget and diagnosis have it loaded already).
_FAST_IMPORT_MIN = 200_000


def _use_bulk(count: int) -> bool:
    return count >= _FAST_MIN and ("numpy" in sys.modules or count >= _FAST_IMPORT_MIN)


def read_directory(path: Path, budgets: Budgets) -> ZipDirectory:
    """Parse the central directory; fall back to scanning local headers when the end
    of the archive is missing (a truncated download). The directory keeps the file's
    stamp from before the read (``stamp``): readers check it before reading records."""
    stamp = FileStamp.of(path)
    directory = _read_directory(path, stamp.size, budgets)
    directory.stamp = stamp
    return directory


def _read_directory(path: Path, size: int, budgets: Budgets) -> ZipDirectory:
    with open_for_read(path) as fh:  # a remote cache file fetches what is read
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
    problems: list[str] = []
    parsed = _parse_bulk(central, count) if _use_bulk(count) else None
    if parsed is None:
        names, columns = _parse_walk(central, count, problems)
        text = None
    else:
        names, columns, text = parsed
    if len(names) < count:
        problems.append(
            f"the directory promises {count:,} records but holds {len(names):,}"
        )
    return _finish(path, size, names, columns, problems, recovered=False, names_text=text)


def _parse_walk(central: bytes, count: int,
                problems: list[str]) -> tuple[list[str], tuple[list[int], ...]]:
    """Walk the central directory record by record: the reference reading, for any
    archive whatever its layout."""
    names: list[str] = []
    columns: tuple[list[int], ...] = ([], [], [], [], [], [])
    add_name = names.append
    add_flags, add_method, add_crc, add_csize, add_size, add_offset = (
        c.append for c in columns
    )
    unpack = _CENTRAL_FIELDS.unpack_from
    pos = 0
    last = len(central) - 46  # the last offset a whole fixed part fits at
    for index in range(count):
        if pos > last:
            break
        (sig, flags, method, crc, csize, usize, name_len, extra_len, comment_len,
         offset) = unpack(central, pos)
        if sig != _CENTRAL:
            problems.append(f"central directory record {index} has a bad signature")
            break
        name_end = pos + 46 + name_len
        add_name(central[pos + 46:name_end].decode("utf-8", "replace"))
        if csize == 0xFFFFFFFF or usize == 0xFFFFFFFF or offset == 0xFFFFFFFF:
            extra = central[name_end:name_end + extra_len]
            usize, csize, offset = _zip64_extra(extra, usize, csize, offset)
        add_flags(flags)
        add_method(method)
        add_crc(crc)
        add_csize(csize)
        add_size(usize)
        add_offset(offset)
        pos = name_end + extra_len + comment_len
    return names, columns


def _parse_bulk(central: bytes, count: int) -> tuple[list[str], tuple[Any, ...], str] | None:
    """The same reading as ``_parse_walk``, done in bulk with numpy, or None when the
    archive is not laid out so that the two must agree (the caller then walks it).

    Every offset holding the record signature is found at once; the first ``count`` of
    them must start at 0 and each must sit exactly where the previous record's three
    length fields say it ends. Then, by induction, the walk visits exactly these
    offsets and reads the same bytes: a signature inside a name, a length field that
    lies, a record cut short or anything before, between or inside the records breaks
    the chain and sends the archive to the walk."""
    import numpy as np

    size = len(central)
    if count < 1 or size < 46 * count:
        return None
    found = []
    for k in range(4):  # the signature at every byte offset, four aligned passes
        words = np.frombuffer(central, dtype="<u4", count=(size - k) // 4, offset=k)
        found.append(np.flatnonzero(words == _CENTRAL_WORD) * 4 + k)
    starts = np.concatenate(found)
    if len(starts) < count:
        return None
    starts.sort()
    pos = starts[:count]
    if pos[0] != 0 or pos[-1] > size - 46:
        return None
    # unaligned little-endian views at every byte offset: a field is one gather
    u16 = np.ndarray((size - 1,), dtype="<u2", buffer=central, strides=(1,))
    u32 = np.ndarray((size - 3,), dtype="<u4", buffer=central, strides=(1,))
    name_len = u16[pos + 28].astype(np.int64)
    extra_len = u16[pos + 30].astype(np.int64)
    ends = pos + 46 + name_len + extra_len + u16[pos + 32]
    if not np.array_equal(ends[:-1], pos[1:]):
        return None
    flags, method = u16[pos + 8], u16[pos + 10]
    crc, csize, usize, offset = u32[pos + 16], u32[pos + 20], u32[pos + 24], u32[pos + 42]
    name_start = pos + 46
    names, text = _bulk_names(central, name_start, name_len, np)
    columns: tuple[Any, ...] = (flags, method, crc, csize, usize, offset)
    big = np.flatnonzero((csize == 0xFFFFFFFF) | (usize == 0xFFFFFFFF)
                         | (offset == 0xFFFFFFFF))
    if len(big):  # zip64 records: their sizes and offset are in the extra field
        csize, usize, offset = csize.tolist(), usize.tolist(), offset.tolist()
        for i in big.tolist():
            name_end = int(name_start[i] + name_len[i])
            extra = central[name_end:name_end + int(extra_len[i])]
            usize[i], csize[i], offset[i] = _zip64_extra(extra, usize[i], csize[i], offset[i])
        columns = (flags, method, crc, csize, usize, offset)
    return names, columns, text


def _bulk_names(central: bytes, start: Any, length: Any, np: Any) -> tuple[list[str], str]:
    """The names at ``start`` (``length`` bytes each, cut at the end of ``central`` like a
    slice), decoded as ``_parse_walk`` decodes them, and joined by newlines.

    All names are gathered into one newline-separated buffer and split in C when they
    are ASCII without newlines (as torch writes them); otherwise each is sliced. The
    gather uses 32-bit offsets: fresh memory is slow to fault in."""
    size = len(central)
    if size < 2**31 - 2**17:
        width = (np.minimum(start + length, size) - start).astype(np.int32)
        step = width + 1  # each name and its separator
        out_start = np.cumsum(step, dtype=np.int32)
        out_start -= step
        total = int(out_start[-1]) + int(width[-1])
        where = np.repeat((start - out_start).astype(np.int32), step)[:total]
        where += np.arange(total, dtype=np.int32)
        # a separator's slot reads the byte after its name (always inside central),
        # overwritten below; that byte may be a newline, which only costs the fast way
        buf = np.frombuffer(central, dtype=np.uint8)[where]
        del where
        if not np.count_nonzero(buf == 0x0A):  # no name holds a newline
            buf[(out_start + width)[:-1]] = 0x0A
            joined = buf.tobytes()
            if joined.isascii():
                text = joined.decode("ascii")
                return text.split("\n"), text
    names = [central[a:b].decode("utf-8", "replace")
             for a, b in zip(start.tolist(), (start + length).tolist())]
    return names, "\n".join(names)


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
    with open_for_read(path) as fh:
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
    columns = tuple(list(map(attrgetter(f), entries)) for f in _FIELDS)
    return _finish(path, size, [e.name for e in entries], columns, problems, recovered=True,
                   made=dict(enumerate(entries)))


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


def _finish(path: Path, size: int, names: list[str], columns: tuple[Any, ...],
            problems: list[str], *, recovered: bool, names_text: str | None = None,
            made: dict[int, ZipEntry] | None = None) -> ZipDirectory:
    """Index the records by name (the first of a name wins) and record duplicates,
    names that point outside the archive and encrypted records."""
    index = dict(zip(names, range(len(names))))  # the last of a name wins here...
    duplicates: list[str] = []
    if len(index) != len(names):  # ...so a repeated name is indexed again, in order
        index = {}
        for i, name in enumerate(names):
            if name in index:
                duplicates.append(name)
            else:
                index[name] = i
    text = "\n".join(names) if names_text is None else names_text
    flags = columns[_FLAGS]
    odd_flags = bool((flags & 1).any()) if not isinstance(flags, list) else any(
        map((1).__and__, flags))
    # a cheap test over all names at once first: only a hit walks them
    if odd_flags or ".." in text or text.startswith(("/", "\\")) or "\n/" in text or (
            "\n\\" in text):
        for name, i in index.items():
            encrypted = flags[i] & 0x01
            if encrypted or ".." in name or name.startswith(("/", "\\")):
                if name.startswith(("/", "\\")) or ".." in name.replace("\\", "/").split("/"):
                    problems.append(f"record name {name!r} points outside the archive")
                if encrypted:
                    problems.append(f"record {name!r} is encrypted")
    return ZipDirectory(path, size, names, columns, index, duplicates, problems, recovered,
                        text, made)


def data_offset(directory: ZipDirectory, entry: ZipEntry, fh=None, mapped: Any = None,
                check_name: bool = True) -> int:
    """Where a record's bytes start, from its local header (as torch computes it);
    checks that the local name agrees with the central one. ``mapped`` (the whole file,
    memory-mapped) spares opening the file: sampling reads hundreds of records."""
    if entry.data_offset is not None:
        return entry.data_offset
    at = entry.header_offset
    if not check_name:  # torch's reader (miniz) takes the name from the directory only
        return _offset_by_directory(directory, entry)
    own = mapped is None and fh is None
    if own:
        fh = open_for_read(directory.path)

    def read(start: int, n: int) -> bytes:
        if mapped is not None:
            return bytes(mapped[start:start + n])
        fh.seek(start)
        return fh.read(n)

    try:
        head = read(at, 30)
        name_len = extra_len = 0
        if len(head) == 30:
            name_len, extra_len = struct.unpack_from("<2H", head, 26)
        _check_local(entry, head, read(at + 30, name_len))
    finally:
        if own:
            fh.close()
    entry.data_offset = at + 30 + name_len + extra_len
    return entry.data_offset


def _offset_by_directory(directory: ZipDirectory, entry: ZipEntry) -> int:
    """Where the record's bytes start as torch computes it, whatever name its local header
    gives (the name check is the caller's finding); not cached."""
    with open_for_read(directory.path) as fh:
        fh.seek(entry.header_offset)
        head = fh.read(30)
    if len(head) < 30 or head[:4] != _LOCAL:
        raise CorruptCheckpointError(
            f"Record {entry.name!r} has no local header where the directory says; "
            "the archive is damaged."
        )
    name_len, extra_len = struct.unpack_from("<2H", head, 26)
    return entry.header_offset + 30 + name_len + extra_len


def _check_local(entry: ZipEntry, head: bytes, local_name: bytes) -> None:
    """The local header is where the directory says, and names the same record."""
    if len(head) < 30 or head[:4] != _LOCAL:
        raise CorruptCheckpointError(
            f"Record {entry.name!r} has no local header where the directory says; "
            "the archive is damaged."
        )
    name = local_name.decode("utf-8", "replace")
    if name != entry.name:
        raise CorruptCheckpointError(
            f"Record {entry.name!r} is called {name!r} in its local header: the "
            "archive was tampered with or damaged, and tools would disagree on it."
        )


def read_record(directory: ZipDirectory, entry: ZipEntry, budgets: Budgets, *,
                limit: int, check_crc: bool = True, check_name: bool = True) -> bytes:
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
    start = data_offset(directory, entry, check_name=check_name)
    if start + entry.compressed_size > directory.file_size:
        raise CorruptCheckpointError(
            f"Record {entry.name!r} runs past the end of the file: the file is truncated."
        )
    with open_for_read(directory.path) as fh:
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


class RecordFailure:
    """One record whose bytes do not match its directory entry (``verify_records``)."""

    __slots__ = ("actual", "crc", "index", "name", "reason")

    def __init__(self, index: int, name: str, reason: str, crc: int,
                 actual: int | None = None) -> None:
        self.index = index
        self.name = name
        self.reason = reason  # a clause: "fails its CRC check (...)", "runs past the end..."
        self.crc = crc  # the CRC-32 the directory records
        self.actual = actual  # the CRC-32 of the bytes as they are (None: not computed)

    @property
    def is_crc(self) -> bool:
        return self.actual is not None

    def __repr__(self) -> str:
        return f"<RecordFailure {self.name!r}: {self.reason}>"


VERIFY_CHUNK = 1 << 23  # bytes read (and CRC'd) at a time: the memory verify needs


def verified_bytes(directory: ZipDirectory) -> int:
    """The bytes ``verify_records`` reads: every record's data, encrypted ones left out."""
    flags = directory.values("flags")
    sizes = directory.values("compressed_size")
    if not any(map((1).__and__, flags)):
        return sum(sizes)
    return sum(s for s, f in zip(sizes, flags) if not f & 1)


def verify_records(directory: ZipDirectory, *, max_ratio: float = 200.0,
                   chunk: int = VERIFY_CHUNK,
                   on_bytes: Any = None) -> list[RecordFailure]:
    """Stream every record's bytes once, in file order, and compare their CRC-32 (of the
    inflated bytes for a deflated record) with the directory's; torch never does.

    Memory stays at one ``chunk``: nothing is mapped (a file cut short meanwhile gives
    a short read here, where a map would kill the process) and no record is held whole.
    ``on_bytes(n)`` is told of ``n`` more bytes read, at most once per ``chunk`` bytes
    and once at the end, so the counts add up to ``verified_bytes(directory)``.
    Encrypted records are skipped (the open reports them); a record whose local header
    is missing or whose data runs past the end of the file is a failure too."""
    names = directory.names
    offsets = directory.values("header_offset")
    csizes = directory.values("compressed_size")
    sizes = directory.values("size")
    crcs = directory.values("crc")
    methods = directory.values("method")
    flags = directory.values("flags")
    file_size = directory.file_size
    made = directory._made if directory.recovered else {}
    failures: list[RecordFailure] = []
    pending = 0

    def advance(n: int) -> None:
        nonlocal pending
        pending += n
        if pending >= chunk and on_bytes is not None:
            on_bytes(pending)
            pending = 0

    order = sorted(range(len(names)), key=offsets.__getitem__)
    largest = max(csizes, default=0)
    buf = bytearray(max(1, min(chunk, largest)))
    view = memoryview(buf)
    # a remote object's records are streamed (fetched ahead in parallel, not kept)
    with open_for_read(directory.path, buffering=1 << 16, stream=True) as fh:
        for i in order:
            if flags[i] & 1:
                continue
            csize, name = csizes[i], names[i]

            def fail(reason: str, actual: int | None = None, *, i: int = i,
                     name: str = name) -> None:
                failures.append(RecordFailure(i, name, reason, crcs[i], actual))

            made_entry = made.get(i)
            if made_entry is not None and made_entry.data_offset is not None:
                start = made_entry.data_offset
            else:
                at = offsets[i]
                fh.seek(at)
                head = fh.read(30)
                if len(head) < 30 or head[:4] != _LOCAL:
                    fail("has no local header where the directory says")
                    advance(csize)
                    continue
                name_len, extra_len = struct.unpack_from("<2H", head, 26)
                start = at + 30 + name_len + extra_len
            if start + csize > file_size:
                fail(f"runs past the end of the file ({start + csize - file_size:,} of its "
                     f"{csize:,} bytes are missing)")
                advance(csize)
                continue
            method = methods[i]
            if method not in (0, 8):
                advance(csize)  # torch cannot read it either: the open says so
                continue
            if method == 8 and csize and sizes[i] / csize > max_ratio:
                fail(f"claims a compression ratio of {sizes[i] / csize:,.0f}:1, over the "
                     f"{max_ratio:,.0f}:1 budget, so it was not inflated")
                advance(csize)
                continue
            inflater = zlib.decompressobj(-15) if method == 8 else None
            fh.seek(start)
            remaining, crc, produced, short = csize, 0, 0, False
            while remaining:
                n = fh.readinto(view[:min(len(buf), remaining)])
                if not n:
                    short = True
                    break
                remaining -= n
                advance(n)
                if inflater is None:
                    crc = zlib.crc32(view[:n], crc)
                    continue
                try:
                    piece = inflater.decompress(view[:n], chunk)
                    while True:
                        produced += len(piece)
                        crc = zlib.crc32(piece, crc)
                        if produced > sizes[i] or not inflater.unconsumed_tail:
                            break
                        piece = inflater.decompress(inflater.unconsumed_tail, chunk)
                except zlib.error as exc:
                    fail(f"cannot be decompressed ({exc})")
                    short = True
                    break
                if produced > sizes[i]:
                    fail(f"inflates past the {sizes[i]:,} bytes its directory entry declares")
                    short = True
                    break
            if remaining:
                advance(remaining)  # the counts still add up to the total
            if short:
                if not (failures and failures[-1].index == i):
                    fail("ends early: the file was cut short while it was read")
                continue
            if inflater is not None:
                try:
                    rest = inflater.flush()
                except zlib.error as exc:
                    fail(f"cannot be decompressed ({exc})")
                    continue
                produced += len(rest)
                crc = zlib.crc32(rest, crc)
                if produced != sizes[i]:
                    fail(f"inflates to {produced:,} bytes, not the {sizes[i]:,} its directory "
                         "entry declares")
                    continue
            if crc != crcs[i]:
                fail(f"fails its CRC check (the directory records {crcs[i]:08x}, its bytes "
                     f"give {crc:08x})", crc)
    if pending and on_bytes is not None:
        on_bytes(pending)
    return failures
