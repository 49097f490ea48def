"""What the pickle-machine tests share: runners that take a stream both ways (fast
path off and on, bulk runs off and on) and compare every fact, and the torch.save
corpora they run on. Imported by test_pickle_fast, test_pickle_runs and
test_pickle_lazy_memo."""

from __future__ import annotations

import io
import pickletools
import zipfile
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from ckwidget.checkpoint import TensorInfo
from ckwidget.readers import pickle_runs, pickle_vm
from ckwidget.readers.budgets import DEFAULT_BUDGETS, Budgets
from ckwidget.readers.pickle_vm import (
    Call,
    Global,
    OpaqueKey,
    PickledSet,
    PickleResult,
    run_pickle,
)
from ckwidget.readers.torch_objects import (
    StorageBytes,
    StorageRef,
    StorageTensorSource,
    TorchPickleContext,
)

READER = StorageBytes()  # sources are compared by their fields; no bytes are read


def describe(root: Any) -> Any:
    """A plain, comparable picture of what the machine built: every container, call and
    tensor with its fields, and sharing made explicit (an object reached a second time
    reads ('seen', n), n its first-visit number), so two trees compare equal only when
    they hold the same values with the same identities; tuples of ints are values."""
    seen: dict[int, int] = {}
    keep: list[Any] = []

    def walk(obj: Any) -> Any:
        kind = type(obj)
        if obj is None or kind in (bool, int, float, str, bytes, complex):
            return (kind.__name__, obj)
        if kind is tuple and all(type(v) is int for v in obj):
            # a value, like the ints in it: bulk runs share one tuple among the records
            # that hold the same size or stride bytes, where the opcodes build one each
            return ("tuple", [("int", v) for v in obj])
        if id(obj) in seen:
            return ("seen", seen[id(obj)])
        seen[id(obj)] = len(seen)
        keep.append(obj)
        if kind is Global:
            return ("global", obj.full, obj.reducer is not None)
        if kind in (tuple, list, bytearray):
            return (kind.__name__, [walk(v) for v in obj])
        if isinstance(obj, dict):
            return (kind.__name__, [(walk(k), walk(v)) for k, v in obj.items()])
        if kind is Call:
            return ("call", walk(obj.func), walk(obj.args), obj.kind, walk(obj.state),
                    walk(obj.items), walk(obj.list_items))
        if kind is PickledSet:
            return ("set", obj.frozen, walk(obj.items))
        if kind is OpaqueKey:
            return ("opaque", walk(obj.value))
        if kind is TensorInfo:
            return ("tensor", walk(obj.shape), obj.dtype, obj.device, obj.nbytes, obj.layout,
                    walk(obj.source))
        if kind is StorageTensorSource:
            return ("source", type(obj.reader).__name__, obj.offset,
                    walk(obj.size), walk(obj.stride), obj.dtype,
                    walk(obj.storage))
        if kind is StorageRef:
            return ("storage", obj.key, obj.dtype, obj.location, obj.numel, obj.nbytes,
                    obj.itemsize)
        return ("other", kind.__name__, repr(obj))

    return walk(root)


def result_facts(res: PickleResult) -> dict[str, Any]:
    """Everything a PickleResult says except the opcode count, which the fast path keeps
    as an upper bound (see test_opcode_counts_stay_an_upper_bound)."""
    return {
        "root": describe(res.root), "complete": res.complete, "error": res.error,
        "error_position": res.error_position, "end": res.end, "protocol": res.protocol,
        "opcodes": sorted(res.opcodes), "globals": list(res.globals.items()),
        "calls": list(res.calls.items()), "budget_exceeded": res.budget_exceeded,
    }


def context_facts(ctx: TorchPickleContext) -> dict[str, Any]:
    return {
        "storages": describe(ctx.storages), "problems": list(ctx.problems),
        "layouts": dict(ctx.layouts), "module_classes": dict(ctx.module_classes),
        "numpy": sorted(ctx.numpy_dtype_codes), "torchscript": ctx.torchscript,
    }


def run_both(data: bytes, *, budgets: Budgets = DEFAULT_BUDGETS, torch_meaning: bool = True,
             **kw: Any) -> tuple[dict[str, Any], dict[str, Any], int]:
    """Run ``data`` with the fast path off, then on; the facts of each, and how many
    records the fast path ran."""
    facts = []
    for fast in (False, True):
        kwargs = dict(kw)
        ctx = None
        if torch_meaning:
            ctx = TorchPickleContext(READER)
            kwargs.setdefault("persistent_load", ctx.persistent_load)
            kwargs.setdefault("reducers", ctx.reducers())
            kwargs.setdefault("builders", {"*": ctx.build})
        res = run_pickle(data, budgets, fast=fast, **kwargs)
        got = result_facts(res)
        if ctx is not None:
            got["context"] = context_facts(ctx)
        got["records"] = res.records
        facts.append(got)
    slow, fast_ = facts
    assert slow.pop("records") == 0
    return slow, fast_, fast_.pop("records")


def resnet_state(blocks: int) -> dict[str, torch.Tensor]:
    """ResNet-style blocks: conv, batch norm (its 0-d int64 num_batches_tracked between
    float tensors), linear; the first block's classes are named inline (GLOBAL)."""
    torch.manual_seed(blocks)
    out: dict[str, torch.Tensor] = {}
    for b in range(blocks):
        conv, bn, fc = nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.Linear(3, 2)
        for name, module in (("conv", conv), ("bn", bn), ("fc", fc)):
            for key, value in module.state_dict().items():
                out[f"layer{b}.{name}.{key}"] = value
    return out


def mixed_dtypes_state(n: int) -> dict[str, torch.Tensor]:
    """Record by record another dtype and shape, 0-d ones among them."""
    kinds = (torch.float32, torch.float16, torch.int64, torch.bool, torch.bfloat16,
             torch.uint8, torch.float64)
    shapes = ((2, 2), (), (3,), (1, 2, 1))
    return {f"m.{i}": torch.zeros(shapes[i % 4], dtype=kinds[i % 7]) for i in range(n)}


def saved_bytes(obj: Any, **kw: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf, **kw)
    return buf.getvalue()


def pickle_of(archive: bytes) -> bytes:
    with zipfile.ZipFile(io.BytesIO(archive)) as z:
        name = next(n for n in z.namelist() if n.endswith("/data.pkl"))
        return z.read(name)


def memo_probe(data: bytes) -> bytes:
    """``data`` with its STOP replaced by code that returns (root, [every memo entry the
    stream stored]): comparing it shows the memo is the same, entry by entry."""
    indexes: list[int] = []
    memoized = 0
    proto = 2
    for op, arg, _pos in pickletools.genops(data):
        if op.name == "PROTO":
            proto = arg
        if op.name in ("PUT", "BINPUT", "LONG_BINPUT"):
            indexes.append(arg)
        elif op.name == "MEMOIZE":
            indexes.append(memoized)
        if op.name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
            memoized += 1
    assert data.endswith(b".")
    body = b"".join(b"j" + i.to_bytes(4, "little") for i in sorted(set(indexes)))
    head = data[:-1]
    if proto >= 4:  # a FRAME's length no longer holds once the end changes: drop framing
        head = unframed(head)
    return head + b"](" + body + b"e\x86."


def unframed(data: bytes) -> bytes:
    out = bytearray()
    last = 0
    for op, _arg, pos in pickletools.genops(data + b"."):
        if op.name == "FRAME":
            out += data[last:pos]
            last = pos + 9
    out += data[last:]
    return bytes(out)


# ----------------------------------------------------------------------------- tests


class BulkCounter:
    """Counts the units the bulk runner reads (wraps ``make_bulk_runner``)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.units = 0
        self.runs = 0
        real = pickle_vm.make_bulk_runner

        def make(*args: Any, **kw: Any) -> Callable[[int, list[Any]], int]:
            run = real(*args, **kw)
            me = args[6]

            def counted(at: int, stack: list[Any]) -> int:
                before = me.count
                end = run(at, stack)
                if end:
                    self.runs += 1
                    self.units += me.count - before
                return end
            return counted

        monkeypatch.setattr(pickle_vm, "make_bulk_runner", make)


def three_ways(data: bytes, monkeypatch: pytest.MonkeyPatch, **kw: Any) -> BulkCounter:
    """The same facts with bulk runs on and off (and the opcode loop); the opcode counts
    of both fast forms are equal too. Bulk runs go twice, reading the fixed-width fields
    with numpy and from the groups (``pickle_runs.NUMPY_RUNS``): the same facts, and the
    same units read in bulk. Returns the counter of the bulk side (the numpy runs)."""
    monkeypatch.setattr(pickle_vm, "BULK_RECORDS", False)
    slow, per_record, records = run_both(data, **kw)
    for key in slow:
        assert per_record[key] == slow[key], key
    ops_per_record = op_count(data, **kw)
    monkeypatch.setattr(pickle_vm, "BULK_RECORDS", True)
    with monkeypatch.context() as patch:  # counters for this call only: no nesting
        patch.setattr(pickle_runs, "NUMPY_RUNS", False)
        groups = BulkCounter(patch)
        plain, plain_records = fast_facts(data, **kw)
        assert op_count(data, **kw) == ops_per_record
    with monkeypatch.context() as patch:
        counter = BulkCounter(patch)
        _, bulk, bulk_records = run_both(data, **kw)
        assert op_count(data, **kw) == ops_per_record
    for key in slow:
        assert bulk[key] == slow[key], key
    assert bulk_records == records
    assert plain == bulk and plain_records == records
    assert (groups.units, groups.runs) == (counter.units, counter.runs)
    return counter


def fast_facts(data: bytes, *, budgets: Budgets = DEFAULT_BUDGETS,
                torch_meaning: bool = True, **kw: Any) -> tuple[dict[str, Any], int]:
    """The fast half of ``run_both``: its facts and how many records it ran."""
    if torch_meaning:
        ctx = TorchPickleContext(READER)
        kw.setdefault("persistent_load", ctx.persistent_load)
        kw.setdefault("reducers", ctx.reducers())
        kw.setdefault("builders", {"*": ctx.build})
    res = run_pickle(data, budgets, **kw)
    got = result_facts(res)
    if torch_meaning:
        got["context"] = context_facts(ctx)
    return got, res.records


def op_count(data: bytes, budgets: Budgets = DEFAULT_BUDGETS, **_kw: Any) -> int:
    ctx = TorchPickleContext(READER)
    return run_pickle(data, budgets, persistent_load=ctx.persistent_load,
                      reducers=ctx.reducers(), builders={"*": ctx.build}).ops


def layers_state(n: int, prefix: str = "module.layers") -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(n)
    out = {}
    for i in range(n):
        if i % 7 == 3:
            out[f"{prefix}.{i}.scale"] = torch.tensor(float(i))
        elif i % 2:
            out[f"{prefix}.{i}.bias"] = torch.randn(3, generator=g)
        else:
            out[f"{prefix}.{i}.weight"] = torch.randn(2, 3, generator=g)
    return out
