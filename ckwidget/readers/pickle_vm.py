"""A symbolic pickle machine: it reads a pickle stream and never runs anything from it.

Globals become :class:`Global` names, calls become :class:`Call` records, persistent ids
are handed to the caller's hook (torch storages), and every resource is budgeted. A
``reducers`` table lets a reader turn known calls (``torch._utils._rebuild_tensor_v2``)
into values as they are read, so a 100,000-tensor file is interpreted in one pass.

If the stream breaks, what was built so far is kept (``PickleResult.root``), along with
the sentence that explains the break.
"""

from __future__ import annotations

import _compat_pickle
import codecs
import re
import struct
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from ..errors import BudgetExceededError
from .budgets import DEFAULT_BUDGETS, Budgets
from .pickle_runs import MAX_KEY, LazyMemo, make_bulk_runner

# Python 2 names that pickle's fix_imports maps before importing (protocols 0 to 2, the
# default in pickle.load and torch.load), and torch.load's own module renames: the mapped
# name is what gets imported and called.
_TORCH_MODULE_MAPPING = {"torch.tensor": "torch._tensor"}


def unpickled_name(module: str, name: str, protocol: int) -> tuple[str, str]:
    """The (module, name) the real unpickler imports for a GLOBAL naming these, as
    ``_pickle.c``'s ``find_class`` does with ``fix_imports=True`` and torch's
    ``UnpicklerWrapper`` does before it."""
    module = _TORCH_MODULE_MAPPING.get(module, module)
    if protocol < 3:
        mapped = _compat_pickle.NAME_MAPPING.get((module, name))
        if mapped is not None:
            return mapped
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
    return module, name


COMPUTED = ("<computed while loading>", "callable")
"""The (module, name) recorded for a callable or global name the stream computes with an
earlier call (``getattr(__import__('os'), 'system')``): never known, never trusted."""


class Global:
    """A name the pickle refers to (``module.name``); never imported."""

    __slots__ = ("full", "module", "name", "reducer")

    def __init__(self, module: str, name: str) -> None:
        self.module = module
        self.name = name
        self.full = f"{module}.{name}"
        self.reducer: Callable[..., Any] | None = None

    def __repr__(self) -> str:
        return f"<global {self.full}>"


class Call:
    """A call the pickle asks for (``func(*args)``), recorded, not made.

    ``state`` is what BUILD would pass to ``__setstate__``; ``items`` and ``list_items``
    collect SETITEM(S)/APPEND(S) applied to the result.
    """

    __slots__ = ("args", "func", "items", "kind", "list_items", "state")

    def __init__(self, func: Any, args: Any, kind: str = "reduce") -> None:
        self.func = func
        self.args = args
        self.kind = kind
        self.state: Any = None
        self.items: list[tuple[Any, Any]] | None = None
        self.list_items: list[Any] | None = None

    @property
    def name(self) -> str:
        return self.func.full if isinstance(self.func, Global) else repr(self.func)

    def __repr__(self) -> str:
        return f"<call {self.name}(...)>"


class PickledSet:
    """A set or frozenset, kept as a list so that nothing is hashed."""

    __slots__ = ("frozen", "items")

    def __init__(self, items: list[Any], frozen: bool) -> None:
        self.items = items
        self.frozen = frozen

    def __repr__(self) -> str:
        return f"<{'frozenset' if self.frozen else 'set'} of {len(self.items)}>"


class OpaqueKey:
    """A dict key too complex to hash safely (hashing a shared tuple can take forever)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"<key {type(self.value).__name__}>"


class PickleError(Exception):
    """The stream is malformed at ``position``."""

    def __init__(self, message: str, position: int) -> None:
        super().__init__(message)
        self.position = position


_MARK = object()
# Keys hashed as they are. Not ints beyond 2**60 or floats: their hashes are not
# randomised, so a file could hold thousands of keys with one hash and make every insert
# compare against all the others (a hash flood).
_HASHABLE = (str, bool, bytes, type(None), Global, Call)
_INT_LIMIT = 1 << 60
_STR_ONLY = frozenset({str})


def _plain_key(key: Any) -> bool:
    kt = type(key)
    return kt in _HASHABLE or (kt is int and -_INT_LIMIT < key < _INT_LIMIT)


def _safe_key(key: Any) -> Any:
    if _plain_key(key):
        return key
    if type(key) is tuple and len(key) <= 16 and all(_plain_key(k) for k in key):
        return key
    return OpaqueKey(key)


@dataclass
class PickleResult:
    """What the machine built, and what it saw on the way."""

    root: Any = None
    complete: bool = False
    error: str | None = None
    error_position: int | None = None
    end: int = 0  # offset just after STOP (or where reading stopped)
    protocol: int = 0
    ops: int = 0
    # opcodes beyond the common core (protocol 4+ framing, text forms, sets...): the
    # frequent ones are not tracked, to keep the loop fast
    opcodes: set[str] = field(default_factory=set)
    globals: dict[str, int] = field(default_factory=dict)  # "module.name" -> count
    calls: dict[str, int] = field(default_factory=dict)  # "module.name" -> REDUCE/NEWOBJ count
    budget_exceeded: bool = False
    backstop: bool = False  # stopped by the CPU-time backstop, not by a counted budget
    records: int = 0  # tensor records run as one step each (``fast``)


# Opcodes by byte value, for the record of which features a stream uses.
_OPNAMES = {
    0x28: "MARK", 0x2E: "STOP", 0x30: "POP", 0x31: "POP_MARK", 0x32: "DUP", 0x46: "FLOAT",
    0x49: "INT", 0x4A: "BININT", 0x4B: "BININT1", 0x4C: "LONG", 0x4D: "BININT2", 0x4E: "NONE",
    0x50: "PERSID", 0x51: "BINPERSID", 0x52: "REDUCE", 0x53: "STRING", 0x54: "BINSTRING",
    0x55: "SHORT_BINSTRING", 0x56: "UNICODE", 0x58: "BINUNICODE", 0x61: "APPEND", 0x62: "BUILD",
    0x63: "GLOBAL", 0x64: "DICT", 0x7D: "EMPTY_DICT", 0x65: "APPENDS", 0x67: "GET",
    0x68: "BINGET", 0x69: "INST", 0x6A: "LONG_BINGET", 0x6C: "LIST", 0x5D: "EMPTY_LIST",
    0x6F: "OBJ", 0x70: "PUT", 0x71: "BINPUT", 0x72: "LONG_BINPUT", 0x73: "SETITEM",
    0x74: "TUPLE", 0x29: "EMPTY_TUPLE", 0x75: "SETITEMS", 0x47: "BINFLOAT", 0x80: "PROTO",
    0x81: "NEWOBJ", 0x82: "EXT1", 0x83: "EXT2", 0x84: "EXT4", 0x85: "TUPLE1", 0x86: "TUPLE2",
    0x87: "TUPLE3", 0x88: "NEWTRUE", 0x89: "NEWFALSE", 0x8A: "LONG1", 0x8B: "LONG4",
    0x42: "BINBYTES", 0x43: "SHORT_BINBYTES", 0x8C: "SHORT_BINUNICODE", 0x8D: "BINUNICODE8",
    0x8E: "BINBYTES8", 0x8F: "EMPTY_SET", 0x90: "ADDITEMS", 0x91: "FROZENSET",
    0x92: "NEWOBJ_EX", 0x93: "STACK_GLOBAL", 0x94: "MEMOIZE", 0x95: "FRAME",
    0x96: "BYTEARRAY8", 0x97: "NEXT_BUFFER", 0x98: "READONLY_BUFFER",
}

_unpack_d = struct.Struct(">d").unpack_from
_U32 = struct.Struct("<I")
_PUT_GET = struct.Struct("<IxB")  # LONG_BINPUT's and the next BINGET's indexes
_REDUCER_ERRORS = (TypeError, ValueError, IndexError, KeyError, AttributeError)
_CHUNK_SIZE = 4096
_CHUNK = range(_CHUNK_SIZE)  # budgets are checked between chunks of opcodes


def run_pickle(
    data: bytes | memoryview,
    budgets: Budgets = DEFAULT_BUDGETS,
    *,
    start: int = 0,
    persistent_load: Callable[[Any], Any] | None = None,
    reducers: Mapping[str, Callable[..., Any]] | None = None,
    builders: Mapping[str, Callable[[Any, Any], Any]] | None = None,
    fast: bool | None = None,
    _file_reading: bool = False,
) -> PickleResult:
    """Run one pickle stream symbolically from ``start`` to its STOP.

    ``reducers`` maps "module.name" to a function called with the (symbolic) argument
    tuple instead of the real callable; its return value replaces the call. ``builders``
    maps "module.name" to a function ``(call, state)`` run on BUILD of such an object.
    ``fast`` (default: the module's ``FAST_RECORDS``) runs torch.save's tensor records as
    one step each, with the same effects as their opcodes (see ``_TensorRecords``).
    Never raises for malformed input: the result says what went wrong.
    """
    res = PickleResult()
    if isinstance(data, memoryview):
        data = bytes(data)
    # A stream may sit at the start of a larger file (legacy torch files, mmap'd): it may
    # not run further than the budget allows.
    n = min(len(data), start + budgets.max_pickle_bytes)
    capped = n < len(data)
    if capped:
        data = data[start:n]
        n -= start
        start = 0
    state = _Machine(res, reducers or {}, builders or {}, persistent_load)
    stack: list[Any] = []
    metastack: list[list[Any]] = []
    max_ops = budgets.max_ops
    max_string = budgets.max_string
    max_memo = budgets.max_memo
    max_marks = budgets.max_mark_depth
    max_stack = budgets.max_stack
    # a far backstop against a bug of ckwidget's own, in CPU time (never what decides a
    # real file's outcome: the counted budgets above do)
    backstop = time.process_time() + budgets.max_cpu_seconds
    call = state.call
    set_items = state.set_items
    append_items = state.append_items
    get_global = state.get_global
    calls = res.calls
    frombytes = int.from_bytes
    unpack_u32 = _U32.unpack_from
    pos = start
    ops = 0
    fast_func: Any = _NOTHING  # BINGET of this value may start a tensor record
    records: _TensorRecords | None = None
    memo: dict[int, Any] = {}
    if (FAST_RECORDS if fast is None else fast) and max_string >= _MAX_KEY_DIGITS:
        fast_func = state.preload_global("torch._utils", "_rebuild_tensor_v2")
        # bulk runs need BINPUT/LONG_BINPUT, which protocols 4 and 5 do not write (they
        # MEMOIZE): their streams keep a plain dict, whose len() is not a Python call
        bulk = data[start:start + 1] == b"\x80" and data[start + 1:start + 2] < b"\x04"
        records = _TensorRecords(data, metastack, state, max_marks, max_string, max_memo,
                                 bulk)
        memo = records.memo  # a plain dict; a LazyMemo once runs are read in bulk
    run_record = records.run if records is not None else None
    try:
        try:
            while True:
                ops += _CHUNK_SIZE
                if records is not None:
                    ops += records.ops
                    records.ops = 0
                if ops > max_ops:
                    raise BudgetExceededError(
                        f"The pickle runs more than {max_ops:,} opcodes; reading stopped."
                    )
                if time.process_time() > backstop:
                    res.backstop = True
                    raise BudgetExceededError(
                        f"ckwidget stopped reading the pickle after {budgets.max_cpu_seconds:g} "
                        "s of CPU time, a backstop against a fault of its own"
                    )
                # at least len(memo), and no dearer: pending bulk entries are counted
                # only near the budget (then exactly)
                if (memo.bound() if type(memo) is LazyMemo else len(memo)) > max_memo and (
                        len(memo) > max_memo):
                    raise BudgetExceededError(
                        f"The pickle stores more than {max_memo:,} memo entries."
                    )
                if len(stack) > max_stack:
                    raise BudgetExceededError(
                        f"The pickle stack grew past {max_stack:,} values; reading stopped."
                    )
                for step in _CHUNK:
                    op = data[pos]
                    pos += 1
                    # Most frequent opcodes of torch checkpoints first.
                    if op == 0x72:  # LONG_BINPUT
                        memo[unpack_u32(data, pos)[0]] = stack[-1]
                        pos += 4
                    elif op == 0x68:  # BINGET
                        value = memo[data[pos]]
                        pos += 1
                        if value is fast_func:  # a tensor record may start here
                            end = run_record(pos, stack)  # type: ignore[misc]
                            if end:
                                pos = end
                                memo = records.memo  # type: ignore[union-attr]
                                if records.ops > _CHUNK_SIZE:  # type: ignore[union-attr]
                                    # a chunk's worth of opcodes: check the budgets now,
                                    # charging only the steps this chunk has run
                                    ops -= _CHUNK_SIZE - 1 - step
                                    break
                                continue
                        stack.append(value)
                    elif op == 0x4B:  # BININT1
                        stack.append(data[pos])
                        pos += 1
                    elif op == 0x28:  # MARK
                        if len(metastack) >= max_marks:
                            raise BudgetExceededError(
                                f"The pickle nests more than {max_marks:,} containers; "
                                "reading stopped."
                            )
                        metastack.append(stack)
                        stack = []
                    elif op == 0x58:  # BINUNICODE
                        size = unpack_u32(data, pos)[0]
                        pos += 4
                        if size > max_string or pos + size > n:
                            _check_length(size, pos, n, max_string)
                        stack.append(data[pos:pos + size].decode("utf-8", "surrogatepass"))
                        pos += size
                    elif op == 0x74:  # TUPLE
                        value = tuple(stack)
                        stack = metastack.pop()
                        stack.append(value)
                    elif op == 0x85:  # TUPLE1
                        stack[-1] = (stack[-1],)
                    elif op == 0x52:  # REDUCE
                        args = stack.pop()
                        func = stack[-1]
                        if type(func) is Global and func.reducer is not None and (
                            type(args) is tuple
                        ):  # the torch rebuild calls: inlined, they are most of a checkpoint
                            calls[func.full] = calls.get(func.full, 0) + 1
                            try:
                                stack[-1] = func.reducer(*args)
                            except _REDUCER_ERRORS:
                                stack[-1] = Call(func, args, "reduce")
                        else:
                            stack[-1] = call(func, args, "reduce")
                    elif op == 0x51:  # BINPERSID
                        stack[-1] = state.persistent(stack[-1])
                    elif op == 0x89:  # NEWFALSE
                        stack.append(False)
                    elif op == 0x29:  # EMPTY_TUPLE
                        stack.append(())
                    elif op == 0x71:  # BINPUT
                        memo[data[pos]] = stack[-1]
                        pos += 1
                    elif op == 0x6A:  # LONG_BINGET
                        if pos + 4 > n:
                            raise PickleError("LONG_BINGET is cut off", pos)
                        value = memo[frombytes(data[pos:pos + 4], "little")]
                        pos += 4
                        if value is fast_func:
                            end = run_record(pos, stack)  # type: ignore[misc]
                            if end:
                                pos = end
                                memo = records.memo  # type: ignore[union-attr]
                                if records.ops > _CHUNK_SIZE:  # type: ignore[union-attr]
                                    # a chunk's worth of opcodes: check the budgets now,
                                    # charging only the steps this chunk has run
                                    ops -= _CHUNK_SIZE - 1 - step
                                    break
                                continue
                        stack.append(value)
                    elif op == 0x86:  # TUPLE2
                        b = stack.pop()
                        stack[-1] = (stack[-1], b)
                    elif op == 0x87:  # TUPLE3
                        c = stack.pop()
                        b = stack.pop()
                        stack[-1] = (stack[-1], b, c)
                    elif op == 0x88:  # NEWTRUE
                        stack.append(True)
                    elif op == 0x4A:  # BININT
                        if pos + 4 > n:
                            raise PickleError("BININT is cut off", pos)
                        stack.append(frombytes(data[pos:pos + 4], "little", signed=True))
                        pos += 4
                    elif op == 0x4D:  # BININT2
                        if pos + 2 > n:
                            raise PickleError("BININT2 is cut off", pos)
                        stack.append(frombytes(data[pos:pos + 2], "little"))
                        pos += 2
                    elif op == 0x75:  # SETITEMS
                        items = stack
                        stack = metastack.pop()
                        set_items(stack[-1], items, pos)
                    elif op == 0x73:  # SETITEM
                        value = stack.pop()
                        key = stack.pop()
                        set_items(stack[-1], [key, value], pos)
                    elif op == 0x7D:  # EMPTY_DICT
                        stack.append({})
                    elif op == 0x5D:  # EMPTY_LIST
                        stack.append([])
                    elif op == 0x65:  # APPENDS
                        items = stack
                        stack = metastack.pop()
                        append_items(stack[-1], items, pos)
                    elif op == 0x61:  # APPEND
                        value = stack.pop()
                        append_items(stack[-1], [value], pos)
                    elif op == 0x4E:  # NONE
                        stack.append(None)
                    elif op == 0x63:  # GLOBAL
                        raw, pos = _line(data, pos, n)
                        module = raw.decode("utf-8", "replace")
                        raw, pos = _line(data, pos, n)
                        stack.append(get_global(module, raw.decode("utf-8", "replace"), pos))
                    elif op == 0x94:  # MEMOIZE
                        state.seen.add(op)
                        size = len(memo)
                        if size >= max_memo:
                            raise BudgetExceededError(
                                f"The pickle stores more than {max_memo:,} memo entries."
                            )
                        memo[size] = stack[-1]
                    elif op == 0x8C:  # SHORT_BINUNICODE
                        size = data[pos]
                        pos += 1
                        if pos + size > n:
                            _check_length(size, pos, n, max_string)
                        stack.append(data[pos:pos + size].decode("utf-8", "surrogatepass"))
                        pos += size
                    elif op == 0x95:  # FRAME
                        # as _pickle.c's load_frame: the frame's bytes must be there, then
                        # opcodes are read on as one stream, across frame boundaries (the
                        # pure-Python pickle.py would stop at a boundary instead)
                        if pos + 8 > n:
                            raise PickleError("FRAME is cut off", pos)
                        state.seen.add(op)
                        size = frombytes(data[pos:pos + 8], "little")
                        state.frames.append((pos - 1, size))  # where it sits, how long
                        pos += 8
                        if size > n - pos:
                            raise PickleError(
                                f"a FRAME claims {size:,} bytes but {n - pos:,} follow", pos)
                    elif op == 0x93:  # STACK_GLOBAL
                        name = stack.pop()
                        module = stack.pop()
                        state.seen.add(op)
                        if type(module) is str and type(name) is str:
                            stack.append(get_global(module, name, pos))
                        elif type(module) is Call or type(name) is Call:
                            # a name computed while loading: any module, any callable
                            stack.append(get_global(*COMPUTED, pos))
                        else:  # _pickle.c refuses it: "STACK_GLOBAL requires str"
                            raise PickleError("STACK_GLOBAL needs two strings", pos)
                    elif op == 0x62:  # BUILD
                        value = stack.pop()
                        stack[-1] = state.build(stack[-1], value)
                    elif op == 0x80:  # PROTO
                        res.protocol = data[pos]
                        if res.protocol > 5:
                            raise PickleError(f"unknown pickle protocol {res.protocol}", pos)
                        pos += 1
                    elif op == 0x2E:  # STOP
                        res.root = stack.pop()
                        res.complete = True
                        break
                    elif op == 0x6C:  # LIST
                        items = stack
                        stack = metastack.pop()
                        stack.append(items)
                    elif op == 0x64:  # DICT
                        items = stack
                        stack = metastack.pop()
                        d: dict[Any, Any] = {}
                        stack.append(d)
                        set_items(d, items, pos)
                    elif op == 0x91:  # FROZENSET
                        items = stack
                        stack = metastack.pop()
                        stack.append(PickledSet(items, True))
                    elif op == 0x90:  # ADDITEMS
                        items = stack
                        stack = metastack.pop()
                        if type(stack[-1]) is not PickledSet:
                            raise PickleError("ADDITEMS without a set", pos)
                        stack[-1].items.extend(items)
                    elif op == 0x69:  # INST
                        raw, pos = _line(data, pos, n)
                        module = raw.decode("utf-8", "replace")
                        raw, pos = _line(data, pos, n)
                        func = get_global(module, raw.decode("utf-8", "replace"), pos)
                        args = tuple(stack)
                        stack = metastack.pop()
                        stack.append(call(func, args, "inst"))
                    elif op == 0x6F:  # OBJ
                        items = stack
                        stack = metastack.pop()
                        if not items:
                            raise PickleError("OBJ without a class", pos)
                        stack.append(call(items[0], tuple(items[1:]), "obj"))
                    elif op == 0x31:  # POP_MARK
                        stack = metastack.pop()
                    elif op == 0x30 and not stack:  # POP right after a MARK discards the mark
                        stack = metastack.pop()
                    else:
                        state.seen.add(op)
                        pos = _rare_op(op, data, pos, n, stack, memo, call, get_global,
                                       max_memo, max_string)
                if res.complete:
                    break
        except _Unwind as unwind:  # a hook failed inside a tensor record:
            # the state its opcodes would have left, then the same error
            stack, pos = unwind.stack, unwind.pos
            raise unwind.error from None
    except PickleError as exc:
        res.error = f"{exc} (byte {exc.position})"
        res.error_position = exc.position
    except BudgetExceededError as exc:
        res.error = str(exc)
        res.error_position = pos
        res.budget_exceeded = True
    except IndexError:
        if pos >= n and capped:
            res.error = (
                f"the pickle runs past the {budgets.max_pickle_bytes:,}-byte budget for one "
                "stream"
            )
            res.budget_exceeded = True
        elif pos >= n:
            res.error = f"the pickle ends before its STOP opcode (byte {n})"
        else:
            res.error = f"an opcode finds too few values on the stack (byte {pos})"
        res.error_position = min(pos, n)
    except KeyError as exc:
        res.error = f"memo entry {exc} was never stored (byte {pos})"
        res.error_position = pos
    except (UnicodeDecodeError, ValueError, OverflowError, struct.error) as exc:
        if isinstance(exc, struct.error) and pos + 8 >= n:
            res.error = f"the pickle ends before its STOP opcode (byte {n})"
        else:
            res.error = f"a value cannot be decoded ({type(exc).__name__}) (byte {pos})"
        res.error_position = pos
    except RecursionError:
        res.error = f"values nest too deeply (byte {pos})"
        res.error_position = pos
    res.end = min(pos, n)
    res.ops = ops
    if records is not None:
        res.ops += records.ops
        res.records = records.count
        # The record steps' closures and ``records`` refer to each other: without this
        # link the memo (a million objects at 100k tensors) would wait for a full
        # collection instead of going now.
        records.run = None  # type: ignore[assignment]
    res.opcodes = {_OPNAMES.get(o, f"0x{o:02x}") for o in state.seen}
    if 0x95 in state.seen and not _file_reading:
        _judge_file_reading(res, data, start, budgets, state.frames)
    if not res.complete:
        # Keep what was built before the break: the outermost object under construction.
        bottom = metastack[0] if metastack else stack
        if bottom:
            res.root = bottom[0]
    return res


FRAME_DIVERGENCE = ("<frames ending inside an opcode>", "stream")
"""Recorded as a global (never trusted) when a stream's frames end inside an opcode: the
file-reading and in-memory unpicklers then run different opcodes (pickle_frames)."""


def _judge_file_reading(res: PickleResult, data: bytes, start: int, budgets: Budgets,
                        frames: list[tuple[int, int]]) -> None:
    """A stream whose frames end inside an opcode is read as torch reads data.pkl (a file
    without peek) too: what that reading names joins the result, and the divergence
    itself is recorded as an untrusted global.

    The common case costs nothing: every frame ending where this run read the next FRAME
    opcode, or where the stream stopped, ends between opcodes (the walk found an opcode
    there), so both readings agree. Only other streams are walked byte by byte."""
    from .pickle_frames import file_reading

    starts = {at for at, _ in frames}
    ends = [at + 9 + size for at, size in frames]
    # frames one after another (none starts inside another), each ending on an opcode
    # this run read (the next FRAME) or at the stream's end
    if res.complete and all(nxt[0] >= end for nxt, end in zip(frames[1:], ends)) and all(
            end in starts or end == res.end for end in ends):
        return

    end = min(len(data), start + budgets.max_pickle_bytes)
    other = file_reading(data[:end], start, budgets.max_ops)
    if other is None:
        return
    name = ".".join(FRAME_DIVERGENCE)
    res.globals[name] = res.globals.get(name, 0) + 1
    second = run_pickle(other, budgets, fast=False, _file_reading=True)
    for table, more in ((res.globals, second.globals), (res.calls, second.calls)):
        for key, n in more.items():
            table[key] = table.get(key, 0) + n


# -- tensor records: one step for ~30 opcodes ---------------------------------------------

FAST_RECORDS = True
"""Run torch.save's tensor records as one step each; tests switch it off to compare."""

BULK_RECORDS = True
"""Within the fast path, read runs of records in bulk; tests switch it off to compare."""

_NOTHING = object()  # matches no memo value
_MAX_KEY_DIGITS = 9  # storage keys the record pattern reads inline ("0" .. "999999999")
_MAX_DIMS = 64  # sizes and strides longer than this go through the opcodes


def _record_pattern() -> re.Pattern[bytes]:
    """The bytes torch.save writes for each tensor after BINGET of
    ``torch._utils._rebuild_tensor_v2``: ``((`` storage-id tuple ``Q`` offset, size,
    stride, requires_grad, ``OrderedDict()``, ``tR``. Every element's opcode variants
    (BINGET/LONG_BINGET, BINPUT/LONG_BINPUT, MEMOIZE (protocols 4 and 5) or none,
    BININT1/2/BININT, BINUNICODE or SHORT_BINUNICODE keys, the tuple forms) are accepted;
    anything else is left to the opcode loop. Groups, in order: 1 'storage', 2 storage
    class, 3 key literal (opcode, length, digits), 4 its PUT, 5 key BINGET (a shared
    storage), 6 location, 7 numel, 8 PUT of the storage-id tuple, 9 offset, 10 size, 11 its
    PUT, 12 stride, 13 its PUT, 14 requires_grad, 15 OrderedDict, 16-18 PUTs of the empty
    OrderedDict, of the argument tuple and of the tensor."""
    get = rb"(h.|j....)"
    put = rb"(q.|r....|\x94)?"
    num = rb"(?:K.|M..|J....)"
    tup = (rb"(\)|" + num + rb"\x85|" + num + rb"{2}\x86|" + num + rb"{3}\x87|\("
           + num + rb"{0,%d}t)" % _MAX_DIMS)
    # the key's length is matched exactly: one alternative per count of digits
    key = b"|".join(
        [b"X" + re.escape(bytes([k, 0, 0, 0])) + rb"\d{%d}" % k
         for k in range(1, _MAX_KEY_DIGITS + 1)]
        + [b"\x8c" + re.escape(bytes([k])) + rb"\d{%d}" % k
           for k in range(1, _MAX_KEY_DIGITS + 1)])
    return re.compile(
        rb"\(\(" + get + get + rb"(?:(" + key + rb")" + put + rb"|" + get + rb")" + get
        + rb"(" + num + rb")t" + put + rb"Q(" + num + rb")" + tup + put + tup + put
        + rb"([\x88\x89])" + get + rb"\)R" + put + rb"t" + put + rb"R" + put,
        re.DOTALL,
    )


_RECORD = _record_pattern()
# struct codes of the arguments of the opcodes a record holds: BINGET, LONG_BINGET, BINPUT,
# LONG_BINPUT, BININT1, BININT2, BININT
_ARG_CODES = {0x68: "B", 0x6A: "I", 0x71: "B", 0x72: "I", 0x4B: "B", 0x4D: "H", 0x4A: "i"}
_MAX_LAYOUTS = 1024  # layouts learned per stream (each costs a regex compile)
_RECENT_LAYOUTS = 6  # layouts tried before the general pattern
_MEMOIZED = -2  # where a layout's PUT is a MEMOIZE: stored at len(memo), no argument
_MAX_SKIP = 128  # records left to the loop, at most, after a streak of misses


def _layout(m: re.Match[bytes]) -> tuple[Any, ...] | None:
    """The fixed byte layout of the record ``m`` matched: a pattern that matches exactly
    the records with the same opcodes (only arguments differ), a struct that reads every
    argument at once, and where each value sits in what the struct returns (-1: absent,
    ``_MEMOIZED``: a PUT that is a MEMOIZE). None when its PUTs mix MEMOIZE with
    BINPUT/LONG_BINPUT (torch.save never does).

    Returned as one tuple, read by ``_TensorRecords``: pattern.match, struct.unpack_from,
    length, opcode count, key is a literal, then value positions (key, key PUT, location,
    numel, id PUT, offset, size start and end, size PUT, stride start and end, stride PUT,
    requires_grad, OrderedDict, its PUT, arguments PUT, tensor PUT), then the offsets just
    after BINPERSID, the first REDUCE and the last REDUCE, the pattern's bytes."""
    rx: list[bytes] = [rb"\(\("]
    fmt: list[str] = ["<2x"]
    count = [0]
    ops = 2

    def lit(raw: bytes) -> None:
        rx.append(re.escape(raw))
        fmt.append(f"{len(raw)}x")

    def arg(raw: bytes | None) -> int:
        nonlocal ops
        if raw is None:
            return -1
        ops += 1
        if raw == b"\x94":  # MEMOIZE
            lit(raw)
            return _MEMOIZED
        rx.append(re.escape(raw[:1]) + b"." * (len(raw) - 1))
        fmt.append("x" + _ARG_CODES[raw[0]])
        count[0] += 1
        return count[0] - 1

    def ints(raw: bytes) -> tuple[int, int]:
        nonlocal ops
        start = count[0]
        if raw[0] == 0x29:  # EMPTY_TUPLE
            lit(raw)
            ops += 1
            return start, start
        pos = 0
        if raw[0] == 0x28:  # MARK ... TUPLE
            lit(raw[:1])
            ops += 1
            pos = 1
        while pos < len(raw) - 1:
            width = 2 if raw[pos] == 0x4B else 3 if raw[pos] == 0x4D else 5
            arg(raw[pos:pos + width])
            pos += width
        lit(raw[-1:])
        ops += 1
        return start, count[0]

    g = m.groups()
    puts = [g[i] for i in (3, 7, 10, 12, 15, 16, 17) if g[i] is not None]
    if b"\x94" in puts and set(puts) != {b"\x94"}:
        return None
    arg(g[0])
    arg(g[1])
    key_literal = g[2] is not None
    if key_literal:
        head = 5 if g[2][0] == 0x58 else 2  # BINUNICODE, SHORT_BINUNICODE
        digits = len(g[2]) - head
        rx.append(re.escape(g[2][:head]) + rb"\d{%d}" % digits)
        fmt.append(f"{head}x{digits}s")
        count[0] += 1
        ops += 1
        p_key = count[0] - 1
    else:
        p_key = arg(g[4])
    p_key_put = arg(g[3])
    p_loc = arg(g[5])
    p_numel = arg(g[6])
    lit(b"t")
    p_pid_put = arg(g[7])
    lit(b"Q")
    p_offset = arg(g[8])
    size0, size1 = ints(g[9])
    p_size_put = arg(g[10])
    stride0, stride1 = ints(g[11])
    p_stride_put = arg(g[12])
    rx.append(rb"[\x88\x89]")  # the byte itself is read: NEWTRUE or NEWFALSE
    fmt.append("B")
    count[0] += 1
    p_rg = count[0] - 1
    p_od = arg(g[14])
    lit(b")R")
    p_od_put = arg(g[15])
    lit(b"t")
    p_args_put = arg(g[16])
    lit(b"R")
    p_put = arg(g[17])
    # the literal opcodes: TUPLE, BINPERSID, NEWTRUE/NEWFALSE, EMPTY_TUPLE, REDUCE, TUPLE,
    # REDUCE (the BINGET that starts the record is counted by the loop as its own step)
    ops += 7
    pattern = b"".join(rx)
    unpack = struct.Struct("".join(fmt))
    at = m.start()
    length = m.end() - at
    if unpack.size != length:  # pragma: no cover - a bug in the layout, never the file
        raise AssertionError("record layout disagrees with its pattern")
    return (
        re.compile(pattern, re.DOTALL).match, unpack.unpack_from, length, ops, key_literal,
        p_key, p_key_put, p_loc, p_numel, p_pid_put, p_offset, size0, size1, p_size_put,
        stride0, stride1, p_stride_put, p_rg, p_od, p_od_put, p_args_put, p_put,
        m.start(9) - at, m.end(15) + 2 - at, (m.start(18) if g[17] else m.end()) - at,
        pattern,
    )


class _Unwind(Exception):
    """A hook failed inside a tensor record: the stack and position the opcodes would
    have had at that moment, so the failure reads exactly as it would have."""

    def __init__(self, stack: list[Any], pos: int, error: BaseException) -> None:
        super().__init__()
        self.stack = stack
        self.pos = pos
        self.error = error


class _TensorRecords:
    """Tensor records as single steps: where the loop reads BINGET of
    ``_rebuild_tensor_v2``, a record whose bytes have a layout seen before is matched by
    that layout's pattern and read by one struct call; then exactly the effects its
    opcodes have, in their order: the same values, memo entries at the same indexes, the
    same hook and reducer calls with the same arguments, the same call counts. A record no
    layout fits is checked by the general pattern, which teaches a new layout. Records
    the patterns do not match, or whose memo reads they cannot vouch for (an entry
    missing, or stored by the record itself), run through the opcode loop instead.

    In protocols 4 and 5 a record's PUTs are MEMOIZEs: the step stores at ``len(memo)``
    as the loop does, when every memo read is of an entry below the record's first store
    and the memo budget leaves room for all its stores (else the loop runs the record).

    A record followed by the next dict key (BINUNICODE or SHORT_BINUNICODE, PUT or
    MEMOIZE) and BINGET of the rebuild function runs that key and the next record too, up
    to a chunk of opcodes, so the loop checks its budgets as often as it would have.
    Records no layout fits cost a match of the general pattern each: after a streak of
    such misses the next records go straight to the loop, twice as many after each miss
    (up to ``_MAX_SKIP``), until a record runs here again; so a stream of records the
    patterns never fit costs the plain loop and little more.

    In a protocol 2 or 3 stream whose hooks are a torch context's own, a run of such
    records and keys is first tried in bulk (``pickle_runs``), up to the same point of
    the chunk; its memo entries are then left pending in ``memo``, a ``LazyMemo`` from
    the first long run on (the loop takes the new ``memo`` after each step), until
    something reads them."""

    __slots__ = ("count", "memo", "ops", "run")

    def __init__(self, data: bytes, metastack: list[list[Any]], state: _Machine,
                 max_marks: int, max_string: int, max_memo: int,
                 bulk_runs: bool = True) -> None:
        self.ops = 0  # opcodes run here beyond the loop's one step per record
        self.count = 0  # records run (each calls the rebuild function once)
        general = _RECORD.match
        calls = state.res.calls
        call = state.call
        persistent = state.persistent_load or state.persistent
        func = state.preload_global("torch._utils", "_rebuild_tensor_v2")
        func_full = func.full
        func_reducer = func.reducer
        errors = _REDUCER_ERRORS
        layouts: dict[bytes, Callable[[int, list[Any]], int]] = {}  # bytes hash randomly
        recent: list[Callable[[int, list[Any]], int]] = []
        absent = (-1,)  # what a missing PUT's position (-1) reads
        mark_room = max_marks - 2  # the loop raises at a MARK beyond the budget
        unpack_u32 = _U32.unpack_from
        put_get = _PUT_GET.unpack_from
        chunk = _CHUNK_SIZE
        me = self
        bulk = None
        # the memo: a plain dict, swapped for one where bulk runs leave their entries
        # pending (a LazyMemo, whose reads cost a little more) at the first long run
        memo: dict[int, Any] = {}
        self.memo = memo

        def lazy() -> LazyMemo:
            nonlocal memo
            memo = LazyMemo()
            dict.update(memo, self.memo)
            self.memo = memo
            return memo

        if (BULK_RECORDS and bulk_runs and max_string >= MAX_KEY
                and func_reducer is not None):
            hook = _bulk_hook(state.persistent_load, func_reducer)
            if hook is not None:
                bulk = make_bulk_runner(data, memo, metastack, func, calls, hook, me,
                                        mark_room, chunk, lazy)
        def empty_of(od: Any) -> Any:
            """The record's empty OrderedDict (backward hooks), as REDUCE makes it."""
            if type(od) is Global and od.reducer is not None:
                calls[od.full] = calls.get(od.full, 0) + 1
                try:
                    return od.reducer()
                except errors:
                    return Call(od, (), "reduce")
            return call(od, (), "reduce")

        def rebuilt(args: tuple[Any, ...]) -> Any:
            """The rebuild call the record ends with, as REDUCE makes it (counted)."""
            calls[func_full] = calls.get(func_full, 0) + 1
            if func_reducer is None:
                return Call(func, args, "reduce")
            try:
                return func_reducer(*args)
            except errors:
                return Call(func, args, "reduce")

        seen_add = state.seen.add
        misses = 0  # records in a row that no layout ran
        skip = 0  # records left to the loop before the next try

        def memoized(lay: tuple[Any, ...]) -> Callable[[int, list[Any]], int]:
            """The step for a layout whose PUTs are MEMOIZEs (protocols 4 and 5): each
            stores at ``len(memo)``, in the opcodes' order, once every read is known to be
            of an entry below the first of them and the budget has room for them all."""
            (match, unpack, length, nops, key_literal, p_key, p_key_put, p_loc, p_numel,
             _pid_put, p_offset, size0, size1, p_size_put, stride0, stride1, p_stride_put,
             p_rg, p_od, p_od_put, p_args_put, p_put, after_pid, after_od, after_all,
             _) = lay
            pick = itemgetter(0, 1, p_key, p_loc, p_numel, p_offset, p_rg, p_od)
            key_put = p_key_put == _MEMOIZED
            size_put = p_size_put == _MEMOIZED
            stride_put = p_stride_put == _MEMOIZED
            od_put = p_od_put == _MEMOIZED
            args_put = p_args_put == _MEMOIZED
            put = p_put == _MEMOIZED
            stores = 1 + key_put + size_put + stride_put + od_put + args_put + put

            def step(at: int, stack: list[Any]) -> int:
                if match(data, at) is None:
                    return -1
                if len(metastack) >= mark_room:
                    return 0
                v = unpack(data, at)
                i_storage, i_kind, key, i_loc, numel, offset, rg, i_od = pick(v)
                low = len(memo)  # where the first MEMOIZE stores; the rest above it
                if low + stores > max_memo or i_loc >= low or i_od >= low:
                    return 0  # the loop raises at a MEMOIZE, or a read may see a store
                try:
                    storage = memo[i_storage]
                    kind = memo[i_kind]
                    key = key.decode("ascii") if key_literal else memo[key]
                    location = memo[i_loc]
                    od = memo[i_od]
                except KeyError:
                    return 0  # the loop reports the missing entry where it is read
                seen_add(0x94)  # the storage id's MEMOIZE comes before any hook
                if key_put:
                    memo[len(memo)] = key
                pid = (storage, kind, key, location, numel)
                memo[len(memo)] = pid
                try:
                    ref = persistent(pid)
                except BaseException as exc:
                    stack.append(func)
                    metastack.append(stack)
                    raise _Unwind([pid], at + after_pid, exc) from None
                size = v[size0:size1]
                stride = v[stride0:stride1]
                if size_put:
                    memo[len(memo)] = size
                if stride_put:
                    memo[len(memo)] = stride
                rg = rg == 0x88
                try:
                    empty = empty_of(od)
                except BaseException as exc:
                    stack.append(func)
                    metastack.append(stack)
                    raise _Unwind([ref, offset, size, stride, rg, od], at + after_od,
                                  exc) from None
                if od_put:
                    memo[len(memo)] = empty
                args = (ref, offset, size, stride, rg, empty)
                if args_put:
                    memo[len(memo)] = args
                try:
                    value = rebuilt(args)
                except BaseException as exc:
                    stack.append(func)
                    raise _Unwind(stack, at + after_all, exc) from None
                stack.append(value)
                if put:
                    memo[len(memo)] = value
                me.ops += nops
                me.count += 1
                return at + length

            return step

        def runner(lay: tuple[Any, ...]) -> Callable[[int, list[Any]], int]:
            """The step for one layout: -1 when its pattern does not match, 0 when the
            opcode loop must run the record, else the position after it. Three forms: one
            for the layout torch.save writes for a tensor with dimensions and a storage
            of its own (a literal key, every PUT present), one for layouts of MEMOIZEs,
            one for any other layout."""
            (match, unpack, length, nops, key_literal, p_key, p_key_put, p_loc, p_numel,
             p_pid_put, p_offset, size0, size1, p_size_put, stride0, stride1, p_stride_put,
             p_rg, p_od, p_od_put, p_args_put, p_put, after_pid, after_od, after_all,
             _) = lay
            if p_pid_put == _MEMOIZED:
                return memoized(lay)
            # the record's values in one C call: memo reads and writes (-1: absent), key,
            # numel, offset, requires_grad's opcode
            pick = itemgetter(0, 1, p_key, p_key_put, p_loc, p_numel, p_pid_put, p_offset,
                              p_size_put, p_stride_put, p_rg, p_od, p_od_put, p_args_put,
                              p_put)
            positions = (p_key_put, p_pid_put, p_size_put, p_stride_put, p_od_put,
                         p_args_put, p_put)

            def step(at: int, stack: list[Any]) -> int:
                if match(data, at) is None:
                    return -1
                if len(metastack) >= mark_room:
                    return 0
                v = unpack(data, at) + absent
                (i_storage, i_kind, key, key_put, i_loc, numel, pid_put, offset, size_put,
                 stride_put, rg, i_od, od_put, args_put, put) = pick(v)
                if i_loc == key_put or i_od in (key_put, pid_put, size_put, stride_put):
                    return 0  # reads what the record itself stores: the opcodes know
                try:
                    storage = memo[i_storage]
                    kind = memo[i_kind]
                    key = key.decode("ascii") if key_literal else memo[key]
                    location = memo[i_loc]
                    od = memo[i_od]
                except KeyError:
                    return 0  # the loop reports the missing entry where it is read
                if key_put >= 0:
                    memo[key_put] = key
                pid = (storage, kind, key, location, numel)
                if pid_put >= 0:
                    memo[pid_put] = pid
                try:
                    ref = persistent(pid)
                except BaseException as exc:
                    stack.append(func)
                    metastack.append(stack)
                    raise _Unwind([pid], at + after_pid, exc) from None
                size = v[size0:size1]
                stride = v[stride0:stride1]
                if size_put >= 0:
                    memo[size_put] = size
                if stride_put >= 0:
                    memo[stride_put] = stride
                rg = rg == 0x88
                try:
                    empty = empty_of(od)
                except BaseException as exc:
                    stack.append(func)
                    metastack.append(stack)
                    raise _Unwind([ref, offset, size, stride, rg, od], at + after_od,
                                  exc) from None
                if od_put >= 0:
                    memo[od_put] = empty
                args = (ref, offset, size, stride, rg, empty)
                if args_put >= 0:
                    memo[args_put] = args
                try:
                    value = rebuilt(args)
                except BaseException as exc:
                    stack.append(func)
                    raise _Unwind(stack, at + after_all, exc) from None
                stack.append(value)
                if put >= 0:
                    memo[put] = value
                me.ops += nops
                me.count += 1
                return at + length

            if not key_literal or -1 in positions or func_reducer is None:
                return step

            def step_full(at: int, stack: list[Any]) -> int:
                """``step`` where every PUT is present, the key is a literal and the
                rebuild function has a reducer: the same effects, fewer tests."""
                if match(data, at) is None:
                    return -1
                if len(metastack) >= mark_room:
                    return 0
                v = unpack(data, at)
                (i_storage, i_kind, key, key_put, i_loc, numel, pid_put, offset, size_put,
                 stride_put, rg, i_od, od_put, args_put, put) = pick(v)
                if i_loc == key_put or i_od in (key_put, pid_put, size_put, stride_put):
                    return 0
                try:
                    storage = memo[i_storage]
                    kind = memo[i_kind]
                    location = memo[i_loc]
                    od = memo[i_od]
                except KeyError:
                    return 0
                memo[key_put] = key = key.decode("ascii")
                memo[pid_put] = pid = (storage, kind, key, location, numel)
                try:
                    ref = persistent(pid)
                except BaseException as exc:
                    stack.append(func)
                    metastack.append(stack)
                    raise _Unwind([pid], at + after_pid, exc) from None
                memo[size_put] = size = v[size0:size1]
                memo[stride_put] = stride = v[stride0:stride1]
                rg = rg == 0x88
                try:
                    empty = empty_of(od)
                except BaseException as exc:
                    stack.append(func)
                    metastack.append(stack)
                    raise _Unwind([ref, offset, size, stride, rg, od], at + after_od,
                                  exc) from None
                memo[od_put] = empty
                memo[args_put] = args = (ref, offset, size, stride, rg, empty)
                try:
                    value = rebuilt(args)
                except BaseException as exc:
                    stack.append(func)
                    raise _Unwind(stack, at + after_all, exc) from None
                stack.append(value)
                memo[put] = value
                me.ops += nops
                me.count += 1
                return at + length

            return step_full

        def learn(at: int) -> Callable[[int, list[Any]], int] | None:
            m = general(data, at)
            if m is None:
                return None
            lay = _layout(m)
            # MEMOIZEs: only where len(memo) is a dict's own, and the storage id's among
            # them (so the opcode set is the loop's even when a hook fails)
            if lay is None or (_MEMOIZED in lay[6:22] and (
                    type(memo) is not dict or lay[9] != _MEMOIZED)):
                return None
            known = layouts.get(lay[-1])
            if known is None:
                if len(layouts) >= _MAX_LAYOUTS:
                    return None
                layouts[lay[-1]] = known = runner(lay)
            recent.insert(0, known)
            del recent[_RECENT_LAYOUTS:]
            return known

        def run(at: int, stack: list[Any]) -> int:
            """Run the record after the BINGET that ends at ``at``, and the keys and
            records that follow it; the position after them, or 0 when the opcode loop
            must run the record."""
            nonlocal misses, skip
            if skip:
                skip -= 1
                return 0
            chained = False
            while True:
                if bulk is not None:
                    end = bulk(at, stack)
                    if end:  # a run of records and keys: the next record is run below
                        at = end
                        chained = True
                for step in recent:
                    end = step(at, stack)
                    if end >= 0:
                        break
                else:
                    step = learn(at)
                    end = -1 if step is None else step(at, stack)
                if end <= 0:
                    if not chained:
                        misses += 1
                        skip = min((1 << (misses - 1)) - 1, _MAX_SKIP)
                        return 0
                    stack.append(func)  # as the loop leaves it after the BINGET
                    return at
                misses = 0
                # the next dict key, its PUT, and BINGET of the rebuild function?
                if me.ops > chunk:
                    return end
                memoize = False
                try:  # a read past the end raises: the loop reports it where it is
                    op = data[end]
                    if op == 0x58:  # BINUNICODE
                        size = unpack_u32(data, end + 1)[0]
                        if size > max_string:
                            return end
                        text = end + 5
                    elif op == 0x8C:  # SHORT_BINUNICODE
                        size = data[end + 1]
                        text = end + 2
                    else:
                        return end
                    at = text + size
                    op = data[at]
                    if op == 0x72 and data[at + 5] == 0x68:
                        # LONG_BINPUT, BINGET: as torch.save writes past 256 memo entries
                        key_put, i_func = put_get(data, at + 1)
                        at += 7
                    else:
                        if op == 0x71:  # BINPUT
                            key_put = data[at + 1]
                            at += 2
                        elif op == 0x72:  # LONG_BINPUT
                            key_put = unpack_u32(data, at + 1)[0]
                            at += 5
                        elif op == 0x94 and type(memo) is dict:  # MEMOIZE
                            key_put = len(memo)
                            if key_put >= max_memo:
                                return end  # the loop raises there
                            memoize = True
                            at += 1
                        else:
                            return end
                        op = data[at]
                        if op == 0x68:  # BINGET
                            i_func = data[at + 1]
                            at += 2
                        elif op == 0x6A:  # LONG_BINGET
                            i_func = unpack_u32(data, at + 1)[0]
                            at += 5
                        else:
                            return end
                    key = data[text:text + size].decode("utf-8", "surrogatepass")
                except (IndexError, struct.error, UnicodeDecodeError):
                    return end
                if i_func == key_put:
                    return end
                try:  # ``[]``: a LazyMemo's ``get`` is a Python call
                    if memo[i_func] is not func:
                        return end
                except KeyError:
                    return end
                stack.append(key)
                if memoize:
                    seen_add(0x94)
                memo[key_put] = key
                me.ops += 3
                chained = True

        self.run = run


def _bulk_hook(persistent_load: Any, rebuild: Any) -> Callable[..., Any] | None:
    """The bulk form of the hooks, when their owner (a torch context) offers one for
    exactly these hooks (see ``TorchPickleContext.bulk_form``)."""
    offer = getattr(getattr(persistent_load, "__self__", None), "bulk_form", None)
    return None if offer is None else offer(persistent_load, rebuild)


def _check_length(size: int, pos: int, n: int, max_string: int) -> None:
    if size > max_string:
        raise BudgetExceededError(
            f"A string or bytes value claims {size:,} bytes, over the "
            f"{max_string:,}-byte budget."
        )
    if pos + size > n:
        raise PickleError(
            f"a value claims {size:,} bytes but the stream ends after {n - pos:,}", pos
        )


class _Machine:
    """The parts of the machine that are not in the hot loop."""

    __slots__ = ("builders", "frames", "gcache", "persistent_load", "reducers", "res",
                 "seen")

    def __init__(self, res: PickleResult, reducers: Mapping[str, Callable[..., Any]],
                 builders: Mapping[str, Callable[[Any, Any], Any]],
                 persistent_load: Callable[[Any], Any] | None) -> None:
        self.res = res
        self.reducers = reducers
        self.builders = builders
        self.persistent_load = persistent_load
        self.gcache: dict[tuple[str, str], Global] = {}
        self.seen: set[int] = set()
        self.frames: list[tuple[int, int]] = []  # (offset of each FRAME opcode, its length)

    def preload_global(self, module: str, name: str) -> Global:
        """The one Global object for a name, made before the stream names it (not counted
        as seen: only the stream's own GLOBAL opcodes count)."""
        key = (module, name)
        g = self.gcache.get(key)
        if g is None:
            g = Global(module, name)
            g.reducer = self.reducers.get(f"{module}.{name}")
            self.gcache[key] = g
        return g

    def get_global(self, module: str, name: str, pos: int) -> Global:
        if self.res.protocol < 3 or module in _TORCH_MODULE_MAPPING:
            module, name = unpickled_name(module, name, self.res.protocol)
        key = (module, name)
        g = self.gcache.get(key)
        if g is None:
            if len(module) > 1000 or len(name) > 1000:
                raise PickleError("a global name is implausibly long", pos)
            g = Global(module, name)
            g.reducer = self.reducers.get(f"{module}.{name}")
            self.gcache[key] = g
        counts = self.res.globals
        counts[g.full] = counts.get(g.full, 0) + 1
        return g

    def persistent(self, pid: Any) -> Any:
        if self.persistent_load is None:
            return Call(None, pid, "pid")
        return self.persistent_load(pid)

    def call(self, func: Any, args: Any, kind: str) -> Any:
        if type(func) is Call:
            # calling what an earlier call returned (getattr chains and the like): the
            # callable is decided at load time, so it is recorded as such, never trusted
            func = self.get_global(*COMPUTED, 0)
        if type(func) is Global:
            counts = self.res.calls
            counts[func.full] = counts.get(func.full, 0) + 1
            if func.reducer is not None and type(args) is tuple:
                try:
                    return func.reducer(*args)
                except _REDUCER_ERRORS:
                    pass  # arguments of an unexpected shape: keep the record instead
        return Call(func, args, kind)

    def build(self, target: Any, value: Any) -> Any:
        if type(target) is Call:
            builder = self.builders.get(target.name) or self.builders.get("*")
            if builder is not None:
                return builder(target, value)
            target.state = value
        # BUILD on plain values (an OrderedDict's attributes) carries no tensors.
        return target

    @staticmethod
    def set_items(target: Any, pairs: list[Any], pos: int) -> None:
        if len(pairs) % 2:
            raise PickleError("SETITEMS has an odd number of values", pos)
        if type(target) is dict:
            it = iter(pairs)
            if set(map(type, pairs[::2])) <= _STR_ONLY:  # a state dict's keys: all in C
                target.update(zip(it, it))
            else:
                for key, value in zip(it, it):
                    target[key if type(key) is str else _safe_key(key)] = value
        elif type(target) is Call:
            if target.items is None:
                target.items = []
            target.items.extend(zip(pairs[::2], pairs[1::2]))
        else:
            raise PickleError(f"SETITEM on a {type(target).__name__}", pos)

    @staticmethod
    def append_items(target: Any, values: list[Any], pos: int) -> None:
        if type(target) is list:
            target.extend(values)
        elif type(target) is Call:
            if target.list_items is None:
                target.list_items = []
            target.list_items.extend(values)
        else:
            raise PickleError(f"APPEND on a {type(target).__name__}", pos)


def _rare_op(op, data, pos, n, stack, memo, call, get_global,
             max_memo, max_string):
    """The less frequent opcodes that do not consume a MARK; returns the new position."""
    frombytes = int.from_bytes
    if op == 0x30:  # POP
        stack.pop()
        return pos
    if op == 0x32:  # DUP
        if not stack:
            raise PickleError("DUP on an empty stack", pos)
        stack.append(stack[-1])
        return pos
    if op == 0x46:  # FLOAT
        text, pos = _line(data, pos, n)
        stack.append(float(text))
        return pos
    if op == 0x47:  # BINFLOAT
        if pos + 8 > n:
            raise PickleError("BINFLOAT is cut off", pos)
        stack.append(_unpack_d(data, pos)[0])
        return pos + 8
    if op == 0x49:  # INT
        text, pos = _line(data, pos, n)
        if text == b"00":
            stack.append(False)
        elif text == b"01":
            stack.append(True)
        else:
            if len(text) > 100:
                raise PickleError("an INT literal is implausibly long", pos)
            stack.append(int(text))
        return pos
    if op == 0x4C:  # LONG
        text, pos = _line(data, pos, n)
        text = text.rstrip(b"L")
        if len(text) > 1000:
            raise PickleError("a LONG literal is implausibly long", pos)
        stack.append(int(text))
        return pos
    if op == 0x8A:  # LONG1
        if pos >= n:
            raise PickleError("LONG1 is cut off", pos)
        size = data[pos]
        start = pos + 1
        if start + size > n:
            raise PickleError("LONG1 is cut off", pos)
        stack.append(frombytes(data[start:start + size], "little", signed=True))
        return start + size
    if op == 0x8B:  # LONG4
        if pos + 4 > n:
            raise PickleError("LONG4 is cut off", pos)
        size = frombytes(data[pos:pos + 4], "little", signed=True)
        if size < 0 or size > 1024:
            raise PickleError("a LONG4 integer is implausibly long", pos)
        start = pos + 4
        if start + size > n:
            raise PickleError("LONG4 is cut off", pos)
        stack.append(frombytes(data[start:start + size], "little", signed=True))
        return start + size
    if op == 0x53:  # STRING (protocol 0): a quoted repr
        text, pos = _line(data, pos, n)
        if len(text) < 2 or text[:1] not in (b"'", b'"') or text[-1:] != text[:1]:
            raise PickleError("STRING is not quoted", pos)
        stack.append(codecs.escape_decode(text[1:-1])[0].decode("latin-1"))
        return pos
    if op == 0x56:  # UNICODE (protocol 0)
        text, pos = _line(data, pos, n)
        stack.append(text.decode("raw_unicode_escape"))
        return pos
    if op in _LENGTH_PREFIXED:
        width, signed = _LENGTH_PREFIXED[op]
        if pos + width > n:
            raise PickleError("a length is cut off", pos)
        size = frombytes(data[pos:pos + width], "little", signed=signed)
        start = pos + width
        if size < 0:
            raise PickleError("a negative length", pos)
        if size > max_string:
            raise BudgetExceededError(
                f"A string or bytes value claims {size:,} bytes, over the "
                f"{max_string:,}-byte budget."
            )
        if size > n - start:
            raise PickleError(
                f"a value claims {size:,} bytes but the stream ends after {n - start:,}", pos
            )
        raw = data[start:start + size]
        if op in (0x54, 0x55):
            stack.append(raw.decode("latin-1"))
        elif op == 0x8D:
            stack.append(raw.decode("utf-8", "surrogatepass"))
        elif op == 0x96:
            stack.append(bytearray(raw))
        else:
            stack.append(raw)
        return start + size
    if op == 0x50:  # PERSID
        text, pos = _line(data, pos, n)
        pid = text.decode("ascii", "replace")
        stack.append(Call(None, pid, "pid"))
        return pos
    if op == 0x67:  # GET
        text, pos = _line(data, pos, n)
        try:
            stack.append(memo[int(text)])
        except (KeyError, ValueError):
            raise PickleError("GET of a memo entry that was never stored", pos) from None
        return pos
    if op == 0x70:  # PUT
        text, pos = _line(data, pos, n)
        if not stack:
            raise PickleError("PUT on an empty stack", pos)
        if len(memo) >= max_memo:
            raise BudgetExceededError(f"The pickle stores more than {max_memo:,} memo entries.")
        index = int(text) if len(text) <= 12 and text.isdigit() else -1
        if not 0 <= index < 1 << 32:  # as LONG_BINPUT; huge indexes could flood the memo
            raise PickleError("PUT with a bad index", pos)
        memo[index] = stack[-1]
        return pos
    if op == 0x8F:  # EMPTY_SET
        stack.append(PickledSet([], False))
        return pos
    if op == 0x81:  # NEWOBJ
        if len(stack) < 2:
            raise PickleError("NEWOBJ on a short stack", pos)
        args = stack.pop()
        stack[-1] = call(stack[-1], args, "newobj")
        return pos
    if op == 0x92:  # NEWOBJ_EX
        if len(stack) < 3:
            raise PickleError("NEWOBJ_EX on a short stack", pos)
        kwargs = stack.pop()
        args = stack.pop()
        record = call(stack[-1], args, "newobj")
        if type(record) is Call:
            record.state = {"__kwargs__": kwargs}
        stack[-1] = record
        return pos
    if op in (0x82, 0x83, 0x84):  # EXT1/2/4: the copyreg registry is never consulted
        width = {0x82: 1, 0x83: 2, 0x84: 4}[op]
        if pos + width > n:
            raise PickleError("EXT is cut off", pos)
        code = frombytes(data[pos:pos + width], "little")
        stack.append(get_global("copyreg._extension_registry", str(code), pos))
        return pos + width
    if op in (0x97, 0x98):  # NEXT_BUFFER / READONLY_BUFFER
        raise PickleError("out-of-band buffers are not part of any checkpoint format", pos)
    raise PickleError(f"unknown opcode 0x{op:02x}", pos - 1)


_LENGTH_PREFIXED = {  # opcode: (width of the length, signed)
    0x54: (4, True), 0x55: (1, False), 0x42: (4, False), 0x43: (1, False),
    0x8D: (8, False), 0x8E: (8, False), 0x96: (8, False),
}


_MAX_LINE = 1 << 20


def _line(data: bytes, pos: int, n: int) -> tuple[bytes, int]:
    """A newline-terminated argument of the text opcodes, and the position after it."""
    end = data.find(b"\n", pos, min(n, pos + _MAX_LINE))
    if end < 0:
        raise PickleError("a text argument has no end of line", pos)
    return data[pos:end], end + 1
