"""Runs of tensor records read in bulk, for the pickle machine's tensor-record fast path.

A state dict saved by torch.save is, between its SETITEMS marks, a long run of the same
bytes with different arguments: the tensor record (see ``pickle_vm._record_pattern``),
then the next dict key (BINUNICODE, PUT) and BINGET of the rebuild function. Here a run
of such units is matched by one ``findall`` of a pattern learned from its first unit (the
memo indexes it reads are literal in the pattern), and its values are built column by
column with C-level calls (``map``, ``zip``, ``struct``), with exactly the effects the
opcodes have. Whatever the pattern cannot vouch for (a declared length that disagrees
with the bytes it matched, a memo read of an entry stored inside the run, hooks that are
not the torch context's own, a value outside the plain case) is left to the per-record
step and the opcode loop, which give the same results more slowly.

Nothing from the file is imported or called: the only callable run per record is the
torch context's own bulk form of ``persistent_load`` and ``tensor``.
"""

from __future__ import annotations

import re
import struct
from bisect import bisect_right
from collections.abc import Callable
from itertools import accumulate, chain, repeat
from operator import add, call
from typing import Any

MAX_KEY = 255  # dict keys longer than this (or not printable ASCII) take the per-record step
_MAX_FAMILIES = 64  # run patterns learned per stream (each costs a regex compile)
_MAX_TUPLE_READERS = 4096  # distinct size/stride byte strings remembered per stream
_BACKOFF = 16  # records run one by one after a run could not be read in bulk
_LONGEST = 2048  # bytes a unit may take beyond the span guessed from the last run
_START = re.Match.start
_END = re.Match.end
_GROUPS = re.Match.groups

_GET = rb"(h.|j....)"
_PUT = rb"(q.|r....)"
_NUM = rb"(?:K.|M..|J....)"
_TUP = (rb"(\)|" + _NUM + rb"\x85|" + _NUM + rb"{2}\x86|" + _NUM + rb"{3}\x87|\("
        + _NUM + rb"{0,64}t)")
_KEY = rb"X(....)([ -~]{1,%d})" % MAX_KEY


def _unit(get: Callable[[int], bytes], put: bytes, gap: bytes = b"") -> bytes:
    """One unit's pattern: the record with every PUT present and a literal storage key,
    the next dict key, its PUT, and BINGET of the rebuild function. ``get(i)`` is the
    pattern of the i-th memo read (0 storage tag, 1 storage class, 2 location,
    3 OrderedDict, 4 rebuild function)."""
    return (gap + rb"\(\(" + get(0) + get(1) + rb"X(....)(\d{1,9})" + put + get(2)
            + rb"(" + _NUM + rb")t" + put + rb"Q(" + _NUM + rb")" + _TUP + put + _TUP + put
            + rb"([\x88\x89])" + get(3) + rb"\)R" + put + rb"t" + put + rb"R" + put + _KEY
            + put + get(4))


# Groups: 1 storage tag, 2 class, 3 key length, 4 key, 5 its PUT, 6 location, 7 numel,
# 8 PUT of the id tuple, 9 offset, 10 size, 11 its PUT, 12 stride, 13 its PUT,
# 14 requires_grad, 15 OrderedDict, 16-18 PUTs of the empty dict, arguments, tensor,
# 19 dict key length, 20 dict key, 21 its PUT, 22 rebuild function.
_GENERAL = re.compile(_unit(lambda i: _GET, _PUT), re.DOTALL).match
_READS = (1, 2, 6, 15, 22)
_PUTS = (5, 8, 11, 13, 16, 17, 18, 21)
# Groups of a family's findall rows (reads are literal, PUT groups hold the index only):
# 0 key length, 1 key, 2 key PUT, 3 numel, 4 id PUT, 5 offset, 6 size, 7 size PUT,
# 8 stride, 9 stride PUT, 10 requires_grad, 11-13 PUTs, 14 dict key length, 15 dict key,
# 16 dict key PUT.
_ROW_PUTS = (2, 4, 7, 9, 11, 12, 13, 16)


def _index(raw: bytes) -> int:
    """The memo index of a BINGET/LONG_BINGET/BINPUT/LONG_BINPUT."""
    return raw[1] if len(raw) == 2 else int.from_bytes(raw[1:5], "little")


def _number(raw: bytes) -> int:
    """The value of a BININT1/BININT2/BININT."""
    if raw[0] == 0x4B:
        return raw[1]
    if raw[0] == 0x4D:
        return int.from_bytes(raw[1:3], "little")
    return int.from_bytes(raw[1:5], "little", signed=True)


def _numbers(col: tuple[bytes, ...]) -> list[int]:
    """A column of BININT1/BININT2/BININT values, in C when all have one opcode."""
    n = len(col)
    joined = b"".join(col)
    if len(joined) == 2 * n and joined[::2] == b"K" * n:
        return list(joined[1::2])
    if len(joined) == 3 * n and joined[::3] == b"M" * n:
        body = bytearray(joined)
        del body[::3]
        return list(struct.unpack(f"<{n}H", body))
    if len(joined) == 5 * n and joined[::5] == b"J" * n:
        body = bytearray(joined)
        del body[::5]
        return list(struct.unpack(f"<{n}i", body))
    return list(map(_number, col))


def _indexes(col: tuple[bytes, ...], width: int) -> list[int]:
    """A column of PUT indexes (the bytes after the opcode, ``width`` each)."""
    if width == 1:
        return list(b"".join(col))
    return list(struct.unpack(f"<{len(col)}I", b"".join(col)))


def _tuple_reader(raw: bytes) -> Callable[[bytes], tuple[int, ...]]:
    """A struct reading the ints of one size/stride form (``)``, ``K.K.\\x86``,
    ``(K.M..t``...) as a fresh tuple, as TUPLE/TUPLE1-3 build one per record."""
    fmt = ["<x"] if raw[0] in (0x28, 0x29) else ["<"]
    pos = 1 if raw[0] == 0x28 else 0
    while raw[pos] in (0x4B, 0x4D, 0x4A):
        fmt.append({0x4B: "xB", 0x4D: "xH", 0x4A: "xi"}[raw[pos]])
        pos += {0x4B: 2, 0x4D: 3, 0x4A: 5}[raw[pos]]
    if raw[0] != 0x29:
        fmt.append("x")
    return struct.Struct("".join(fmt)).unpack


class _TupleReaders(dict):
    """Size/stride byte string -> its reader. Keys are bytes, whose hashes are salted:
    a file cannot make them collide."""

    def __missing__(self, raw: bytes) -> Callable[[bytes], tuple[int, ...]]:
        reader = _tuple_reader(raw)
        if len(self) < _MAX_TUPLE_READERS:
            self[raw] = reader
        return reader


class _TupleOps(dict):
    """Size/stride byte string -> the opcodes it runs: its ints, its TUPLE (or
    EMPTY_TUPLE), and a MARK if it has one."""

    def __missing__(self, raw: bytes) -> int:
        ops = len(_tuple_reader(raw)(raw)) + 1 + (raw[0] == 0x28)
        if len(self) < _MAX_TUPLE_READERS:
            self[raw] = ops
        return ops


class _Family:
    """The pattern for units that read the same five memo entries and store with the same
    PUT opcode (those reads are literal in it: the run reads them once)."""

    __slots__ = ("finditer", "ops_hint", "put_width", "read_max", "reads", "size_hint")

    def __init__(self, m: re.Match[bytes]) -> None:
        g = m.groups()
        reads = [g[i - 1] for i in _READS]
        self.put_width = len(g[_PUTS[0] - 1]) - 1
        put = rb"q(.)" if self.put_width == 1 else rb"r(....)"
        lits = [re.escape(r) for r in reads]

        def get(i: int) -> bytes:
            return lits[i]

        unit = re.compile(_unit(get, put), re.DOTALL)
        self.finditer = unit.finditer
        indexes = [_index(r) for r in reads]
        self.reads = (indexes[0], indexes[1], indexes[2], indexes[3], indexes[4])
        self.read_max = max(indexes)
        self.size_hint = m.end() - m.start()
        self.ops_hint = 28


def family_key(m: re.Match[bytes]) -> bytes | None:
    """What identifies a unit's family (its reads and PUT opcode), or None when its PUTs
    mix opcodes (a run crossing memo index 256 is read record by record)."""
    g = m.groups()
    ops = {g[i - 1][0] for i in _PUTS}
    if len(ops) != 1:
        return None
    return b"".join(g[i - 1] for i in _READS) + bytes(ops)


def make_bulk_runner(data: bytes, memo: dict[int, Any], metastack: list[list[Any]],
                     func: Any, calls: dict[str, int], hook: Callable[..., Any],
                     me: Any, mark_room: int, chunk: int) -> Callable[[int, list[Any]], int]:
    """The bulk step for one stream: ``run(at, stack)`` reads the run of units starting
    at ``at`` (just after BINGET of the rebuild function), applies their effects and
    returns the position after the last unit's BINGET, or 0 when nothing was read in
    bulk (the caller then runs the record by itself).

    ``hook(tag, kind, location, keys, numels, offsets, sizes, strides, shapes, od)`` is the torch
    context's bulk form of ``persistent_load`` and ``tensor``: ``(refs, empties, values)``
    exactly as calling them (and the OrderedDict reducer) record by record would give, or
    None when any record is outside its plain case. ``me`` carries ``ops`` and ``count``
    as ``_TensorRecords`` does; runs end where the per-record step would have stopped for
    the budgets (``chunk`` opcodes), so the loop checks them exactly as often."""
    families: dict[bytes, _Family] = {}  # bytes hash randomly: no flood
    readers = _TupleReaders()
    read_tuple = readers.__getitem__
    tuple_ops = _TupleOps().__getitem__
    func_full = func.full
    state = [None, 0]  # the last family used, records left to run one by one

    def learn(at: int) -> _Family | None:
        m = _GENERAL(data, at)
        if m is None:
            return None
        key = family_key(m)
        if key is None:
            return None
        fam = families.get(key)
        if fam is None:
            if len(families) >= _MAX_FAMILIES:
                return None
            families[key] = fam = _Family(m)
        return fam

    def give_up() -> int:
        state[1] = _BACKOFF
        return 0

    def run(at: int, stack: list[Any]) -> int:
        if state[1]:
            state[1] -= 1
            return 0
        if len(metastack) >= mark_room:
            return 0  # the loop raises at the record's MARK
        room = chunk - me.ops + 3  # opcodes the per-record step would still run
        fam = state[0]
        if fam is None:
            fam = learn(at)
            if fam is None:
                return give_up()
            state[0] = fam
        if room < fam.ops_hint:
            return 0
        span = (room // fam.ops_hint + 2) * fam.size_hint * 5 // 4
        found = list(fam.finditer(data, at, at + span))
        if not found or found[0].start() != at:
            found = list(fam.finditer(data, at, at + _LONGEST))  # a unit longer than the span?
            if not found or found[0].start() != at:
                fam = learn(at)
                if fam is None:
                    return give_up()
                state[0] = fam
                found = list(fam.finditer(data, at, at + max(span, _LONGEST)))
                if not found or found[0].start() != at:  # pragma: no cover - learned here
                    return give_up()
        # units are read while each starts where the last ended
        starts = list(map(_START, found))
        ends = list(map(_END, found))
        if starts[1:] != ends[:-1]:
            k = next(i for i, (a, b) in enumerate(zip(starts[1:], ends)) if a != b) + 1
            del found[k:], ends[k:]
        cols = list(zip(*map(_GROUPS, found)))
        k = len(found)
        sizes_raw = cols[6]
        strides_raw = cols[8]
        sizes = list(map(call, map(read_tuple, sizes_raw), sizes_raw))
        strides = list(map(call, map(read_tuple, strides_raw), strides_raw))
        # opcodes per unit: 26, and each tuple's (its ints, its TUPLE, a MARK if any)
        cum = list(accumulate(map(add, map(add, map(tuple_ops, sizes_raw),
                                               map(tuple_ops, strides_raw)), repeat(26))))
        k = min(k, bisect_right(cum, room))
        if not k:
            return 0
        # declared lengths must be the lengths matched (a key may hold any bytes)
        for length_col, text_col in ((0, 1), (14, 15)):
            declared = struct.unpack(f"<{k}I", b"".join(cols[length_col][:k]))
            matched = list(map(len, cols[text_col][:k]))
            if list(declared) != matched:
                k = next(i for i, (a, b) in enumerate(zip(declared, matched)) if a != b)
                if not k:
                    return give_up()
        if k < len(cols[0]):
            cols = [c[:k] for c in cols]
            del sizes[k:], strides[k:]
        # memo: the run's PUT indexes, in the order the opcodes store them
        puts = _indexes(tuple(chain.from_iterable(zip(*[cols[i] for i in _ROW_PUTS]))),
                        fam.put_width)
        if min(puts) <= fam.read_max and not set(puts).isdisjoint(fam.reads):
            return give_up()  # a unit reads what the run stores: the opcodes know
        i_tag, i_kind, i_loc, i_od, i_func = fam.reads
        try:
            tag = memo[i_tag]
            kind = memo[i_kind]
            location = memo[i_loc]
            od = memo[i_od]
            rebuild = memo[i_func]
        except KeyError:
            return give_up()
        if rebuild is not func:
            return give_up()
        keys = list(map(bytes.decode, cols[1]))
        numels = _numbers(cols[3])
        offsets = _numbers(cols[5])
        shapes = list(map(add, sizes_raw[:k], strides_raw[:k]))  # a size form ends itself
        made = hook(tag, kind, location, keys, numels, offsets, sizes, strides, shapes, od)
        if made is None:
            return give_up()
        refs, empties, values = made
        dict_keys = list(map(bytes.decode, cols[15]))
        rgs = list(map((0x88).__eq__, b"".join(cols[10])))
        pids = list(zip(repeat(tag, k), repeat(kind), keys, repeat(location), numels))
        args = list(zip(refs, offsets, sizes, strides, rgs, empties))
        memo.update(zip(puts, chain.from_iterable(zip(
            keys, pids, sizes, strides, empties, args, values, dict_keys))))
        calls[od.full] = calls.get(od.full, 0) + k
        calls[func_full] = calls.get(func_full, 0) + k
        stack.extend(chain.from_iterable(zip(values, dict_keys)))
        me.ops += cum[k - 1]
        me.count += k
        fam.ops_hint = max(28, cum[k - 1] // k)
        end = ends[k - 1]
        fam.size_hint = (end - at) // k
        return end

    return run
