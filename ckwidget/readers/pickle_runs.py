"""Runs of tensor records read in bulk, for the pickle machine's tensor-record fast path.

A state dict saved by torch.save is, between its SETITEMS marks, a long run of the same
bytes with different arguments: the tensor record (see ``pickle_vm._record_pattern``),
then the next dict key (BINUNICODE, PUT) and BINGET of the rebuild function. Here a run
of such units is matched by a pattern learned from its first unit (the memo indexes it
reads are literal in the pattern, but the storage class's, read per unit: state dicts
mix dtypes record by record; 0-d tensors, whose empty size and stride have no PUT, fit
too), taken from ``finditer`` while the units follow each other, and its values are
built column by column with C-level calls (``map``, ``zip``, ``struct``), with exactly
the effects the opcodes have. When numpy is loaded already, the pattern captures only
the six fields of variable width, and numpy reads the others at offsets known per family
(``_Fields``): capturing groups is what costs ``re`` most. Whatever the pattern cannot vouch for (a
declared length that disagrees with the bytes it matched, a memo read of an entry stored
inside the run, hooks that are not the torch context's own, a value outside the plain
case) is left to the per-record step and the opcode loop, which give the same results
more slowly. Misses make the runner try less often (``make_bulk_runner``), so a stream
that runs do not fit costs about what the per-record step costs.

Nothing from the file is imported or called: the only callable run per record is the
torch context's own bulk form of ``persistent_load`` and ``tensor``.
"""

from __future__ import annotations

import re
import struct
import sys
from bisect import bisect_right
from collections.abc import Callable, Iterator
from itertools import accumulate, chain, islice, repeat
from operator import add
from typing import Any

NUMPY_RUNS = True
"""Read a family's fixed-width fields with numpy when it is loaded already (tests switch
it off to compare); the reader never imports numpy for this (the CLI does without it)."""
MAX_KEY = 255  # dict keys longer than this (or not printable ASCII) take the per-record step
_MAX_FAMILIES = 64  # run patterns learned per stream (each costs a regex compile)
_RECENT_FAMILIES = 4  # families tried (anchored) before the general pattern
_MAX_TUPLE_FORMS = 4096  # distinct size/stride byte strings remembered per stream
_SHORT = 4  # a run of fewer units, ended by a unit outside it, counts as a miss
_MAX_SKIP = 128  # records run one by one, at most, after a streak of misses
_START = re.Match.start
_END = re.Match.end
_GROUPS = re.Match.groups

_GET = rb"(h.|j....)"
_PUT = rb"(q.|r....)"
_NUM = rb"(?:K.|M..|J....)"
_TUP = (rb"(\)|" + _NUM + rb"\x85|" + _NUM + rb"{2}\x86|" + _NUM + rb"{3}\x87|\("
        + _NUM + rb"{0,64}t)")


def _tuple_put(put: bytes) -> bytes:
    """The PUT after a size or stride: pickle memoizes every tuple but the empty one, so
    an empty tuple (the only form that ends with ``)``) has none and any other has one."""
    return rb"(?:(?<=\))|(?<!\))" + put + rb")"


def _unit(get: Callable[[int], bytes], put: bytes, hold: bool = True) -> bytes:
    """One unit's pattern: the record with a literal storage key (every PUT present but
    those of empty sizes and strides), the next dict key, its PUT, and BINGET of the
    rebuild function. ``get(i)`` is the pattern of the i-th memo read (0 storage tag,
    1 storage class, 2 location, 3 OrderedDict, 4 rebuild function). Without ``hold`` the
    declared lengths and the requires_grad byte are not captured (nor, as ``put`` and
    ``get(1)`` say, the PUTs and the class read): each group costs ``re`` time, and
    ``_Fields`` reads them at their offsets instead."""

    def fixed(p: bytes) -> bytes:
        return rb"(" + p + rb")" if hold else p

    length = rb"X" + fixed(rb"....")
    return (rb"\(\(" + get(0) + get(1) + length + rb"(\d{1,9})" + put + get(2)
            + rb"(" + _NUM + rb")t" + put + rb"Q(" + _NUM + rb")" + _TUP + _tuple_put(put)
            + _TUP + _tuple_put(put) + fixed(rb"[\x88\x89]") + get(3) + rb"\)R" + put
            + rb"t" + put + rb"R" + put + length + rb"([ -~]{1,%d})" % MAX_KEY + put
            + get(4))


# Groups: 1 storage tag, 2 class, 3 key length, 4 key, 5 its PUT, 6 location, 7 numel,
# 8 PUT of the id tuple, 9 offset, 10 size, 11 its PUT (None for an empty size),
# 12 stride, 13 its PUT (None for an empty stride), 14 requires_grad, 15 OrderedDict,
# 16-18 PUTs of the empty dict, arguments, tensor, 19 dict key length, 20 dict key,
# 21 its PUT, 22 rebuild function.
_GENERAL = re.compile(_unit(lambda i: _GET, _PUT), re.DOTALL).match
_READS = (1, 6, 15, 22)  # literal in a family's pattern (the class is read per unit)
_PUTS = (5, 8, 11, 13, 16, 17, 18, 21)
_TUPLE_PUTS = (11, 13)  # absent after an empty tuple
# Groups of a family's findall rows (reads but the class are literal, PUT groups and the
# class read hold the index only): 0 class, 1 key length, 2 key, 3 key PUT, 4 numel,
# 5 id PUT, 6 offset, 7 size, 8 size PUT, 9 stride, 10 stride PUT, 11 requires_grad,
# 12-14 PUTs, 15 dict key length, 16 dict key, 17 dict key PUT.
_ROW_PUTS = (3, 5, 8, 10, 12, 13, 14, 17)
_ROW_VARS = (2, 4, 6, 7, 9, 16)  # key, numel, offset, size, stride, dict key
# With ``_Fields``, a family's rows hold only those six. _GENERAL's groups of variable
# width, in the bytes' order (the PUTs of sizes and strides count as such: present or
# not), and those of fixed width: the eight PUTs (in the opcodes' order), requires_grad,
# the declared lengths of the key and of the dict key, the class read.
_GENERAL_VARS = (4, 7, 9, 10, 11, 12, 13, 20)
_GENERAL_FIXED = (*_PUTS, 14, 3, 19, 2)


_dict_len = dict.__len__
_dict_set = dict.__setitem__
_dict_update = dict.update
_dict_contains = dict.__contains__
_dict_reversed = dict.__reversed__
_dict_keys = dict.keys


class _Run:
    """A bulk run's memo entries, not yet stored: its PUT indexes in the opcodes' order
    (eight per unit: storage key, storage-id tuple, size, stride, empty OrderedDict,
    argument tuple, tensor, dict key; an empty size or stride, which has no PUT, takes the
    index of the empty OrderedDict's, stored later in the unit: that store wins, as
    the opcodes leave it) and the columns that rebuild each value. The tuples
    and empty values are built on demand (``LazyMemo`` keeps each one it hands out, and
    the empty value and argument tuple of a unit are built once, as a pair), so every read
    gives the same object and an argument tuple holds the very size, stride and empty
    value stored beside it."""

    __slots__ = ("args", "dict_keys", "empties", "hi", "keys", "kinds", "lo", "location",
                 "make_empty", "numels", "offsets", "puts", "refs", "rgs", "sizes",
                 "strides", "tag", "values", "where")

    def __init__(self, puts: Any, lo: int, hi: int, tag: Any, kinds: list[Any],
                 location: Any, keys: list[str], numels: list[int], offsets: list[int],
                 sizes: list[Any], strides: list[Any], rgs: bytes, refs: list[Any],
                 make_empty: Callable[[], Any], values: list[Any],
                 dict_keys: list[str]) -> None:
        self.puts = puts
        self.lo = lo
        self.hi = hi
        self.tag = tag
        self.kinds = kinds  # the storage class of each unit
        self.location = location
        self.keys = keys
        self.numels = numels
        self.offsets = offsets
        self.sizes = sizes
        self.strides = strides
        self.rgs = rgs  # NEWTRUE/NEWFALSE bytes, one per unit
        self.refs = refs
        self.make_empty = make_empty
        self.values = values
        self.dict_keys = dict_keys
        self.empties: dict[int, Any] = {}
        self.args: dict[int, tuple[Any, ...]] = {}
        self.where: dict[int, int] | None = None  # index -> its last PUT, once needed

    def empty(self, j: int) -> Any:
        made = self.empties.get(j, _NONE)
        if made is _NONE:
            made = self.empties[j] = self.make_empty()
        return made

    def arg(self, j: int) -> tuple[Any, ...]:
        made = self.args.get(j)
        if made is None:
            made = self.args[j] = (self.refs[j], self.offsets[j], self.sizes[j],
                                   self.strides[j], self.rgs[j] == 0x88, self.empty(j))
        return made

    def find(self, index: int) -> Any:
        """The value the run's last PUT to ``index`` stored, or ``_NONE``."""
        where = self.where
        if where is None:  # a later PUT to the same index replaces the earlier one
            where = self.where = dict(zip(_ints(self.puts), range(len(self.puts))))
        p = where.get(index)
        if p is None:
            return _NONE
        j, slot = divmod(p, 8)
        if slot == 0:
            return self.keys[j]
        if slot == 1:  # held by no other value: the memo keeps the one built
            return (self.tag, self.kinds[j], self.keys[j], self.location, self.numels[j])
        if slot == 2:
            return self.sizes[j]
        if slot == 3:
            return self.strides[j]
        if slot == 4:
            return self.empty(j)
        if slot == 5:
            return self.arg(j)
        if slot == 6:
            return self.values[j]
        return self.dict_keys[j]

    def entries(self) -> Iterator[Any]:
        """Every value, in the order of ``puts`` (those built already reused)."""
        k = len(self.keys)
        pids = list(zip(repeat(self.tag, k), self.kinds, self.keys,
                        repeat(self.location), self.numels))
        make = self.make_empty
        empties = [make() for _ in range(k)]
        for j, made in self.empties.items():
            empties[j] = made
        rgs = list(map((0x88).__eq__, self.rgs))
        args = list(zip(self.refs, self.offsets, self.sizes, self.strides, rgs, empties))
        for j, made in self.args.items():
            args[j] = made
        return chain.from_iterable(zip(self.keys, pids, self.sizes, self.strides, empties,
                                       args, self.values, self.dict_keys))


_NONE = object()


def _ints(puts: Any) -> list[int]:
    """PUT indexes as a list of ints (the numpy path keeps them as an array)."""
    return puts if type(puts) is list else puts.tolist()


class LazyMemo(dict):  # type: ignore[type-arg]
    """The pickle memo, where bulk runs leave their PUTs pending: a run of 100,000
    records stores 800,000 entries that later records almost never read, so they are
    built only when read. A pending entry reads, counts and iterates exactly as if it had
    been stored: ``[]`` finds it through ``__missing__``; ``len``, ``in``, ``get`` and
    iteration see it. A run is left pending only when every index it stores is above
    every index stored before it (``defer``), so no earlier value can hide it; a later
    direct store to its index lands in the dict and, being found first, wins, as the
    opcodes' order says. ``bound`` is an upper limit on ``len`` that costs nothing."""

    __slots__ = ("_los", "_runs", "_seen", "_top", "_upper")

    def __init__(self) -> None:
        super().__init__()
        self._runs: list[_Run] = []  # pending runs, by increasing (disjoint) index ranges
        self._los: list[int] = []  # their lowest indexes, for bisect
        self._top = -1  # the highest index in the dict, over its first ``_seen`` keys
        self._seen = 0
        self._upper = 0  # PUTs pending (an index stored twice counts twice)

    def defer(self, run: _Run) -> bool:
        """Leave ``run`` pending when its indexes are all new (above every index stored
        or pending); False when the caller must store its entries now."""
        n = _dict_len(self)
        if n < self._seen:  # ``del`` removed keys (see below): look at them all again
            self._top = max(_dict_keys(self), default=-1)
            self._seen = n
        elif n != self._seen:  # keys are only ever added (see _forget): the new ones last
            self._top = max(self._top, max(islice(_dict_reversed(self), n - self._seen)))
            self._seen = n
        runs = self._runs
        if run.lo <= self._top or (runs and run.lo <= runs[-1].hi):
            return False
        runs.append(run)
        self._los.append(run.lo)
        self._upper += len(run.puts)
        return True

    def __missing__(self, index: Any) -> Any:
        runs = self._runs
        if runs and type(index) is int:
            r = bisect_right(self._los, index) - 1
            if r >= 0 and index <= runs[r].hi:
                value = runs[r].find(index)
                if value is not _NONE:
                    _dict_set(self, index, value)  # the same object at every read
                    return value
        raise KeyError(index)

    def bound(self) -> int:
        """At least ``len(self)``, at no cost: the budget check's first test."""
        return _dict_len(self) + self._upper

    def settle(self) -> None:
        """Store every pending entry (an index stored directly since stays as it is:
        that store came later)."""
        for run in self._runs:
            entries = dict(zip(_ints(run.puts), run.entries()))
            for index in entries.keys() & _dict_keys(self):
                del entries[index]
            _dict_update(self, entries)
        self._runs.clear()
        self._los.clear()
        self._upper = 0

    def _forget(self) -> None:
        """After a deletion the newest keys are no longer the last ones: rescan."""
        self._seen = 0
        self._top = -1

    def __len__(self) -> int:
        if self._runs:
            self.settle()
        return _dict_len(self)

    def __contains__(self, index: object) -> bool:
        if _dict_contains(self, index):
            return True
        try:
            self[index]
        except KeyError:
            return False
        return True

    def get(self, index: Any, default: Any = None) -> Any:
        try:
            return self[index]
        except KeyError:
            return default

    def _settled(name: str) -> Any:  # builds the methods below
        method = getattr(dict, name)

        def settled(self: LazyMemo, *args: Any) -> Any:
            if self._runs:
                self.settle()
            return method(self, *args)

        settled.__name__ = name
        settled.__doc__ = f"``dict.{name}``, with the pending entries stored first."
        return settled

    __iter__ = _settled("__iter__")
    __reversed__ = _settled("__reversed__")
    __eq__ = _settled("__eq__")
    __ne__ = _settled("__ne__")
    __or__ = _settled("__or__")
    __ror__ = _settled("__ror__")
    __repr__ = _settled("__repr__")
    keys = _settled("keys")
    values = _settled("values")
    items = _settled("items")
    copy = _settled("copy")
    setdefault = _settled("setdefault")

    def _deleting(name: str) -> Any:  # builds the methods below
        method = getattr(dict, name)

        def deleting(self: LazyMemo, *args: Any) -> Any:
            if self._runs:
                self.settle()
            try:
                return method(self, *args)
            finally:
                self._forget()

        deleting.__name__ = name
        deleting.__doc__ = f"``dict.{name}``, with the pending entries stored first."
        return deleting

    # ``del memo[i]`` stays dict's own: a ``__delitem__`` written here would send every
    # ``memo[i] = value`` of the machine through CPython's generic slot (five times
    # dearer). The machine never deletes; ``del`` removes stored entries only, and
    # ``defer`` looks at every key again once the dict has shrunk (use ``pop`` to delete
    # and store in between).
    pop = _deleting("pop")
    popitem = _deleting("popitem")
    clear = _deleting("clear")
    del _settled, _deleting


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
    ``(K.M..t``...) as a tuple."""
    fmt = ["<x"] if raw[0] in (0x28, 0x29) else ["<"]
    pos = 1 if raw[0] == 0x28 else 0
    while raw[pos] in (0x4B, 0x4D, 0x4A):
        fmt.append({0x4B: "xB", 0x4D: "xH", 0x4A: "xi"}[raw[pos]])
        pos += {0x4B: 2, 0x4D: 3, 0x4A: 5}[raw[pos]]
    if raw[0] != 0x29:
        fmt.append("x")
    return struct.Struct("".join(fmt)).unpack


class _TupleValues(dict):
    """Size/stride byte string -> the tuple of ints it builds, made once and shared by
    every record of the stream that holds those bytes: a tuple of ints is a value, and
    100,000 records of a few shapes then hold a few tuples instead of 200,000. Keys are
    bytes, whose hashes are salted: a file cannot make them collide."""

    def __missing__(self, raw: bytes) -> tuple[int, ...]:
        value = _tuple_reader(raw)(raw)
        if len(self) < _MAX_TUPLE_FORMS:
            self[raw] = value
        return value


class _TupleOps(dict):
    """Size/stride byte string -> the opcodes it runs: its ints, its TUPLE (or
    EMPTY_TUPLE), a MARK if it has one, and its PUT (every tuple but the empty one)."""

    def __missing__(self, raw: bytes) -> int:
        ops = len(_tuple_reader(raw)(raw)) + 1 + (raw[0] == 0x28) + (raw != b")")
        if len(self) < _MAX_TUPLE_FORMS:
            self[raw] = ops
        return ops


class _Fields:
    """Where a family's fixed-width fields sit: at the unit's start, plus a constant (its
    reads and PUTs are of known width), plus the widths of the variable fields before
    them, so numpy reads them all in one gather per run; capturing them as groups would
    cost ``re`` more than matching does. The PUT of a size or stride counts as a variable
    field (absent after an empty tuple, whose PUT then reads as the empty OrderedDict's,
    see ``_Run``). ``words`` is the stream as little-endian words at every byte offset;
    a one-byte field is the top byte of the word that ends at it (each has at least three
    bytes of its unit before it)."""

    __slots__ = ("before", "np", "offsets", "put_width", "shifts", "words")

    def __init__(self, m: re.Match[bytes], np: Any, words: Any, put_width: int) -> None:
        self.np = np
        self.words = words
        self.put_width = put_width

        def width(g: int) -> int:
            return 0 if m.group(g) is None else len(m.group(g))

        def start(g: int) -> int:  # an absent tuple PUT would start where its tuple ends
            return m.end(g - 1) if m.group(g) is None else m.start(g)

        widths = [width(g) for g in _GENERAL_VARS]
        before = [[v < g for v in _GENERAL_VARS] for g in _GENERAL_FIXED]
        offsets, shifts = [], []
        for g, row in zip(_GENERAL_FIXED, before):
            at = start(g) - m.start() - sum(w for w, b in zip(widths, row) if b)
            index = g in _PUTS or g == 2  # a PUT's or a read's index, after its opcode
            at += index
            size = (1 + put_width) if g in _TUPLE_PUTS else width(g)
            one = size == (2 if index else 1)
            offsets.append(at - 3 if one else at)
            shifts.append(24 if one else 0)
        self.before = np.array(before, np.intp)  # fields x variable fields, 0 or 1
        self.offsets = np.array(offsets, np.intp)[:, None]
        self.shifts = np.array(shifts, np.uint32)[:, None]

    def read(self, starts: list[int], cols: list[tuple[bytes, ...]], k: int
             ) -> tuple[int, Any, bytes, int, int, list[int]]:
        """As ``_Family.fixed``, for rows of the six variable fields."""
        np = self.np
        rows = [c[:k] for c in cols]
        try:  # a byte each, but for sizes or strides of over 50 BININTs
            widths = np.frombuffer(bytes(map(len, chain.from_iterable(rows))), np.uint8)
        except ValueError:
            widths = np.fromiter(map(len, chain.from_iterable(rows)), np.intp, 6 * k)
        widths = widths.reshape(6, k).astype(np.intp)
        empty_size = widths[3] == 1  # ``)``: no PUT follows
        empty_stride = widths[4] == 1
        put = 1 + self.put_width
        size_put = np.where(empty_size, 0, put)
        stride_put = np.where(empty_stride, 0, put)
        # in _GENERAL_VARS' order: key, numel, offset, size, its PUT, stride, its PUT, dict key
        all_widths = np.stack((widths[0], widths[1], widths[2], widths[3], size_put,
                               widths[4], stride_put, widths[5]))
        at = self.before @ all_widths
        at += self.offsets
        at += np.fromiter(starts, np.intp, k)
        fields = self.words[at]
        fields >>= self.shifts
        declared = np.stack((widths[0], widths[5]))
        if not np.array_equal(fields[9:11], declared):  # declared: key, dict key
            k = int((fields[9:11] != declared).any(axis=0).argmax())
            fields = fields[:, :k]
            empty_size = empty_size[:k]
            empty_stride = empty_stride[:k]
        if not k:
            return 0, [], b"", 0, 0, []
        puts = fields[:8]
        if empty_size.any():
            puts[2] = np.where(empty_size, puts[4], puts[2])
        if empty_stride.any():
            puts[3] = np.where(empty_stride, puts[4], puts[3])
        # the PUT indexes stay an array: a run's memo entries are pending (``LazyMemo``)
        # and almost never read, so 800,000 int objects are made only if they are
        return (k, puts.T.ravel(), fields[8].astype(np.uint8).tobytes(),
                int(puts.min()), int(puts.max()), fields[11].tolist())


class _Family:
    """The pattern for units that read the same four memo entries (storage tag, location,
    OrderedDict, rebuild function: literal in it, so the run reads them once), read the
    storage class with the same opcode (its index is read per unit: a state dict mixes
    dtypes) and store with the same PUT opcode. With numpy (see ``_Fields``) its rows hold
    only the variable fields."""

    __slots__ = ("expect", "fields", "finditer", "kind_width", "match", "ops_hint",
                 "put_width", "read_max", "reads", "size_hint", "vars")

    def __init__(self, m: re.Match[bytes], np: Any = None, words: Any = None) -> None:
        g = m.groups()
        reads = [g[i - 1] for i in _READS]
        self.put_width = len(g[_PUTS[0] - 1]) - 1
        kind = g[1]
        self.kind_width = len(kind) - 1
        lits = [re.escape(r) for r in reads]

        def get(i: int) -> bytes:
            if i == 1:  # the class: its opcode literal, its index read per unit
                arg = rb"(.)" if len(kind) == 2 else rb"(....)"
                if self.fields is not None:
                    arg = arg[1:-1]
                return re.escape(kind[:1]) + arg
            return lits[i if i == 0 else i - 1]

        self.fields = None if np is None else _Fields(m, np, words, self.put_width)
        if self.fields is None:
            put = rb"q(.)" if self.put_width == 1 else rb"r(....)"
            unit = re.compile(_unit(get, put), re.DOTALL)
            self.vars = _ROW_VARS
        else:
            put = rb"q." if self.put_width == 1 else rb"r...."
            unit = re.compile(_unit(get, put, hold=False), re.DOTALL)
            self.vars = range(6)
        self.match = unit.match
        self.finditer = unit.finditer
        indexes = [_index(r) for r in reads]
        self.reads = (indexes[0], indexes[1], indexes[2], indexes[3])
        self.read_max = max(indexes)
        self.size_hint = m.end() - m.start()
        self.ops_hint = 26
        self.expect = 8  # units the first batch of a run asks for

    def fixed(self, starts: list[int], cols: list[tuple[bytes, ...]], k: int
              ) -> tuple[int, Any, bytes, int, int, list[int]]:
        """Of the first ``k`` rows: how many declare the lengths they matched (0: not the
        first; a key may hold any bytes), their PUT indexes in the order the opcodes store
        them, their requires_grad bytes, the lowest and highest PUT index, and the index
        each unit reads its storage class from."""
        if self.fields is not None:
            return self.fields.read(starts, cols, k)
        for length_col, text_col in ((1, 2), (15, 16)):
            declared = struct.unpack(f"<{k}I", b"".join(cols[length_col][:k]))
            matched = list(map(len, cols[text_col][:k]))
            if list(declared) != matched:
                k = next(i for i, (a, b) in enumerate(zip(declared, matched)) if a != b)
                if not k:
                    return 0, [], b"", 0, 0, []
        put_cols = [cols[i][:k] for i in _ROW_PUTS]
        for slot in (2, 3):  # an empty size or stride: the empty dict's PUT stores over it
            if None in put_cols[slot]:
                put_cols[slot] = [o if p is None else p
                                  for p, o in zip(put_cols[slot], put_cols[4])]
        puts = _indexes(tuple(chain.from_iterable(zip(*put_cols))), self.put_width)
        kinds = _indexes(cols[0][:k], self.kind_width)
        return k, puts, b"".join(cols[11][:k]), min(puts), max(puts), kinds


def family_key(m: re.Match[bytes]) -> bytes | None:
    """What identifies a unit's family (its literal reads, its class read's opcode and
    its PUT opcode), or None when its PUTs mix opcodes (a run crossing memo index 256 is
    read record by record)."""
    g = m.groups()
    ops = {g[i - 1][0] for i in _PUTS if g[i - 1] is not None}
    if len(ops) != 1:
        return None
    return b"".join(g[i - 1] for i in _READS) + g[1][:1] + bytes(ops)


def make_bulk_runner(data: bytes, memo: dict[int, Any], metastack: list[list[Any]],
                     func: Any, calls: dict[str, int], hook: Callable[..., Any],
                     me: Any, mark_room: int, chunk: int,
                     lazy: Callable[[], LazyMemo] | None = None
                     ) -> Callable[[int, list[Any]], int]:
    """The bulk step for one stream: ``run(at, stack)`` reads the run of units starting
    at ``at`` (just after BINGET of the rebuild function), applies their effects and
    returns the position after the last unit's BINGET, or 0 when nothing was read in
    bulk (the caller then runs the record by itself).

    ``hook(tag, kinds, location, keys, numels, offsets, sizes, strides, shapes, od)`` is
    the torch context's bulk form of ``persistent_load`` and ``tensor``: ``(refs,
    make_empty, values)`` exactly as calling them record by record would give
    (``make_empty()``: what the OrderedDict reducer gives, called only when an empty
    value is read), or None when any record is outside its plain case. A ``LazyMemo``
    gets the run's PUTs pending (see ``LazyMemo.defer``); any other memo gets them stored
    at once, until a run of ``_SHORT`` units or more calls ``lazy()`` (when given): it
    puts a LazyMemo with the same entries in the caller's place and returns it, so a
    stream that runs hardly ever fit keeps its plain dict (whose reads cost less).
    ``me`` carries ``ops`` and ``count`` as ``_TensorRecords`` does; runs end where the
    per-record step would have stopped for the budgets (``chunk`` opcodes), so the loop
    checks them exactly as often.

    Trying costs little where it fails: the families known are tried anchored at ``at``
    first, a run's units are taken from ``finditer`` in batches that double while they
    follow each other (so a run that stops early scans little past its end), and a
    streak of misses (no unit read, or a short run cut by a unit outside it) leaves the
    next records to the per-record step, twice as many after each miss, up to
    ``_MAX_SKIP``; a long run ends the streak. Decisions count units, never time."""
    families: dict[bytes, _Family] = {}  # bytes hash randomly: no flood
    recent: list[_Family] = []  # the families last used, most recent first
    tuple_of = _TupleValues().__getitem__
    tuple_ops = _TupleOps().__getitem__
    func_full = func.full
    defer = memo.defer if type(memo) is LazyMemo else None  # else stored at once
    state = [0, 0]  # records left to run one by one, misses in a row
    words = None
    np = sys.modules.get("numpy") if NUMPY_RUNS else None  # loaded by the caller, or not
    if np is not None:
        words = np.ndarray((max(len(data) - 3, 0),), "<u4", data, strides=(1,))

    def learn(at: int) -> _Family | None:
        m = _GENERAL(data, at)
        if m is None:
            return None
        key = family_key(m)
        if key is None:
            return None
        fam = families.get(key)
        if fam is None:
            try:  # a unit followed by another value than the rebuild function (a tensor
                # saved twice): no family worth a regex compile
                if memo[_index(m.group(22))] is not func:
                    return None
            except KeyError:
                return None
            if len(families) >= _MAX_FAMILIES:
                return None
            families[key] = fam = _Family(m, np, words)
        return fam

    def miss() -> int:
        misses = state[1] = state[1] + 1
        state[0] = min((1 << (misses - 1)) - 1, _MAX_SKIP)
        return 0

    def run(at: int, stack: list[Any]) -> int:
        nonlocal memo, defer, lazy
        if state[0]:
            state[0] -= 1
            return 0
        if len(metastack) >= mark_room:
            return 0  # the loop raises at the record's MARK
        room = chunk - me.ops + 3  # opcodes the per-record step would still run
        first = None
        for fam in recent:
            first = fam.match(data, at)
            if first is not None:
                break
        else:
            fam = learn(at)
            if fam is None:
                return miss()
            first = fam.match(data, at)
            if first is None:  # pragma: no cover - the family was learned from this unit
                return miss()
        if recent[:1] != [fam]:
            if fam in recent:
                recent.remove(fam)
            recent.insert(0, fam)
            del recent[_RECENT_FAMILIES:]
        if room < fam.ops_hint:
            return 0
        end = at + max((room // fam.ops_hint + 2) * fam.size_hint * 5 // 4,
                       first.end() - at)
        # units are read while each starts where the last ended: in batches that double
        found = [first]
        more = fam.finditer(data, first.end(), end)
        want = fam.expect - 1
        cut = False  # the run ended at a unit outside it (not at the span's end)
        while want:
            batch = list(islice(more, want))
            if not batch:
                break
            starts = list(map(_START, batch))
            ends = list(map(_END, batch))
            if starts[0] != found[-1].end():
                cut = True
                break
            if starts[1:] != ends[:-1]:
                k = next(i for i, (a, b) in enumerate(zip(starts[1:], ends)) if a != b) + 1
                found += batch[:k]
                cut = True
                break
            found += batch
            if len(batch) < want:
                break
            want *= 2
        starts = list(map(_START, found))
        ends = list(map(_END, found))
        cols = list(zip(*map(_GROUPS, found)))
        k = len(found)
        fam.expect = k + 2 if cut else max(k * 2, 8)
        i_key, i_numel, i_offset, i_size, i_stride, i_dict_key = fam.vars
        sizes_raw = cols[i_size]
        strides_raw = cols[i_stride]
        sizes = list(map(tuple_of, sizes_raw))
        strides = list(map(tuple_of, strides_raw))
        # opcodes per unit: 24, and each tuple's (its ints, its TUPLE, a MARK if any, its
        # PUT if any)
        cum = list(accumulate(map(add, map(add, map(tuple_ops, sizes_raw),
                                               map(tuple_ops, strides_raw)), repeat(24))))
        fit = bisect_right(cum, room)
        if fit < k:
            k = fit
            cut = False
        if not k:
            return 0
        # declared lengths must be the lengths matched; memo: the run's PUT indexes
        k, puts, rgs, lowest, highest, kind_at = fam.fixed(starts, cols, k)
        if not k:
            return miss()
        if k < len(cols[0]):
            cols = [c[:k] for c in cols]
            del sizes[k:], strides[k:]
        kind_reads = set(kind_at)
        if lowest <= max(fam.read_max, max(kind_reads)) and not set(_ints(puts)).isdisjoint(
                (*fam.reads, *kind_reads)):
            return miss()  # a unit reads what the run stores: the opcodes know
        i_tag, i_loc, i_od, i_func = fam.reads
        try:
            tag = memo[i_tag]
            location = memo[i_loc]
            od = memo[i_od]
            rebuild = memo[i_func]
            classes = {i: memo[i] for i in kind_reads}
        except KeyError:
            return miss()
        if rebuild is not func:
            return miss()
        if len(classes) == 1:
            kinds = [classes[kind_at[0]]] * k
        else:
            kinds = list(map(classes.__getitem__, kind_at))
        keys = list(map(bytes.decode, cols[i_key]))
        numels = _numbers(cols[i_numel])
        offsets = _numbers(cols[i_offset])
        shapes = list(map(add, sizes_raw[:k], strides_raw[:k]))  # a size form ends itself
        made = hook(tag, kinds, location, keys, numels, offsets, sizes, strides, shapes, od)
        if made is None:
            return miss()
        refs, make_empty, values = made
        dict_keys = list(map(bytes.decode, cols[i_dict_key]))
        run = _Run(puts, lowest, highest, tag, kinds, location, keys, numels, offsets,
                   sizes, strides, rgs, refs, make_empty, values, dict_keys)
        if defer is None and lazy is not None and k >= _SHORT:
            memo = lazy()  # the same entries, in the caller's place from now on
            defer = memo.defer
            lazy = None
        if defer is None or not defer(run):  # stored now, in the opcodes' order
            memo.update(zip(_ints(puts), run.entries()))
        calls[od.full] = calls.get(od.full, 0) + k
        calls[func_full] = calls.get(func_full, 0) + k
        stack.extend(chain.from_iterable(zip(values, dict_keys)))
        me.ops += cum[k - 1]
        me.count += k
        fam.ops_hint = max(26, cum[k - 1] // k)
        end = ends[k - 1]
        fam.size_hint = (end - at) // k
        if cut and k < _SHORT:
            miss()  # read, but a short run among records of other forms
        else:
            state[1] = 0
        return end

    return run
