"""Runs of tensor records read in bulk (``pickle_runs``) against the per-record fast path
and the opcode loop.

Each test runs a stream three ways (opcodes only; the fast path record by record; the
fast path with bulk runs) and compares everything the machine produced, with the helpers
of test_pickle_fast. Most streams here are edited on purpose to break the bulk reading: a
key that holds opcode bytes, a declared length that disagrees with the bytes, shared
storages, memo entries stored inside a run and read by it, failing hooks, huge memo
indexes, cuts inside a run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from test_pickle_fast import (
    READER,
    _memo_probe,
    _pickle_of,
    _save,
    context_facts,
    result_facts,
    run_both,
)

from ckwidget.readers import pickle_vm
from ckwidget.readers.budgets import DEFAULT_BUDGETS, Budgets
from ckwidget.readers.pickle_vm import run_pickle
from ckwidget.readers.torch_objects import TorchPickleContext

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


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
    of both fast forms are equal too. Returns the counter of the bulk side."""
    monkeypatch.setattr(pickle_vm, "BULK_RECORDS", False)
    slow, per_record, records = run_both(data, **kw)
    for key in slow:
        assert per_record[key] == slow[key], key
    ops_per_record = _ops(data, **kw)
    monkeypatch.setattr(pickle_vm, "BULK_RECORDS", True)
    counter = BulkCounter(monkeypatch)
    _, bulk, bulk_records = run_both(data, **kw)
    for key in slow:
        assert bulk[key] == slow[key], key
    assert bulk_records == records
    assert _ops(data, **kw) == ops_per_record
    return counter


def _ops(data: bytes, budgets: Budgets = DEFAULT_BUDGETS, **_kw: Any) -> int:
    ctx = TorchPickleContext(READER)
    return run_pickle(data, budgets, persistent_load=ctx.persistent_load,
                      reducers=ctx.reducers(), builders={"*": ctx.build}).ops


def _state(n: int, prefix: str = "module.layers") -> dict[str, torch.Tensor]:
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


@pytest.fixture(scope="module")
def big() -> bytes:
    return _pickle_of(_save(_state(3000)))


def test_runs_are_read_in_bulk_with_the_same_everything(big: bytes,
                                                        monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    counter = three_ways(big, monkeypatch)
    assert counter.units > 2500 and counter.runs > 10
    three_ways(_memo_probe(big), monkeypatch)
    three_ways(big, monkeypatch, torch_meaning=False)  # no hooks: no bulk form


def test_fast_false_and_the_switches_turn_bulk_off(big: bytes,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    counter = BulkCounter(monkeypatch)
    ctx = TorchPickleContext(READER)
    res = run_pickle(big, fast=False, persistent_load=ctx.persistent_load,
                     reducers=ctx.reducers(), builders={"*": ctx.build})
    assert res.complete and res.records == 0 and counter.units == 0
    monkeypatch.setattr(pickle_vm, "FAST_RECORDS", False)
    res = run_pickle(big, persistent_load=ctx.persistent_load, reducers=ctx.reducers())
    assert res.records == 0 and counter.units == 0


def test_keys_that_hold_opcode_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    record = _pickle_of(_save({"w": torch.ones(2)}))
    weird = ["((h", "tq\x05Q", "Rq", "r((((", "X\x05\x00\x00\x00", "é.weight", "\x00",
             record.decode("latin-1"), "q" * 300, "h" * 255, "a" * 256, " "]
    state = _state(600)
    for i, key in enumerate(weird):
        state[f"module.layers.{300 + i}.{key}"] = torch.ones(i + 1)
    data = _pickle_of(_save(state))
    assert three_ways(data, monkeypatch).units > 300


def test_declared_lengths_that_disagree_with_the_pattern(big: bytes,
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    key = b"module.layers.1500.weight"
    at = big.index(key)
    # the dict key's length one short, one long; the storage key's length off by one
    for delta in (-1, 1):
        edited = big[:at - 4] + (len(key) + delta).to_bytes(4, "little") + big[at:]
        three_ways(edited, monkeypatch)
    storage = big.index(b"X\x04\x00\x00\x001500")
    for length in (3, 5):
        edited = (big[:storage + 1] + length.to_bytes(4, "little")
                  + big[storage + 5:])
        three_ways(edited, monkeypatch)


def test_shared_storages_in_a_run(monkeypatch: pytest.MonkeyPatch) -> None:
    base = torch.arange(12.0)
    state: dict[str, Any] = _state(400)
    for i in range(50):
        state[f"view.{i}"] = base[i % 6:]
        state[f"own.{i}"] = torch.ones(2)
    state.update(_state(400, "tail"))
    data = _pickle_of(_save(state))
    assert three_ways(data, monkeypatch).units > 600
    # a literal storage key repeated inside a run (torch.save writes BINGET for views)
    big = _pickle_of(_save(_state(2000)))
    edited = big.replace(b"X\x04\x00\x00\x001001", b"X\x04\x00\x00\x001000", 1)
    assert edited != big
    three_ways(edited, monkeypatch)
    # and one whose view reads past the storage it now shares
    edited = big.replace(b"X\x04\x00\x00\x001003", b"X\x04\x00\x00\x001010", 1)
    three_ways(edited, monkeypatch)


def _long_put(index: int) -> bytes:
    return b"r" + index.to_bytes(4, "little")


def test_memo_entries_stored_and_read_inside_a_run(big: bytes,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    at = big.index(b"module.layers.2100.weight")
    put = big.index(b"r", at + 25)  # the dict key's LONG_BINPUT
    assert put == at + 25
    reads = {"location": 6, "storage tag": 3, "class": 4, "OrderedDict": 10, "rebuild": 2}
    for index in reads.values():
        edited = big[:put] + _long_put(index) + big[put + 5:]
        three_ways(edited, monkeypatch)
        three_ways(_memo_probe(edited), monkeypatch)
    # two PUTs of one run to the same index: the later one stays
    later = big.index(b"r", big.index(b"module.layers.2101.bias") + 23)
    same = big[put + 1:put + 5]
    three_ways(big[:later] + b"r" + same + big[later + 5:], monkeypatch)
    three_ways(_memo_probe(big[:later] + b"r" + same + big[later + 5:]), monkeypatch)


def test_huge_and_unordered_memo_indexes(big: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    at = big.index(b"module.layers.2100.weight")
    put = at + 25
    for index in (0xFFFFFFFF, 0x7FFFFFFF, 1 << 31, 257):
        edited = big[:put] + _long_put(index) + big[put + 5:]
        three_ways(edited, monkeypatch)
        three_ways(_memo_probe(edited), monkeypatch)


class _Failing(TorchPickleContext):
    """A context whose ``tensor`` fails at its n-th call: its bulk form is not offered."""

    def __init__(self, fail_at: int) -> None:
        super().__init__(READER)
        self.calls = 0
        self.fail_at = fail_at

    def tensor(self, *args: Any, **kw: Any) -> Any:
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("hook failed")
        return super().tensor(*args, **kw)


@pytest.mark.parametrize("fail_at", [5, 700, 2999])
def test_a_hook_that_raises_in_the_middle_of_a_run(big: bytes, fail_at: int,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    outcomes = []
    for fast in (False, True):
        counter = BulkCounter(monkeypatch)
        ctx = _Failing(fail_at)
        try:
            res = run_pickle(big, fast=fast, persistent_load=ctx.persistent_load,
                             reducers=ctx.reducers(), builders={"*": ctx.build})
            outcomes.append(("result", result_facts(res), context_facts(ctx)))
        except RuntimeError as exc:
            outcomes.append(("raised", str(exc), context_facts(ctx), ctx.calls))
        assert counter.units == 0
    assert outcomes[0] == outcomes[1]
    # a wrapped hook (not the context's own) turns the bulk form off too
    ctx = TorchPickleContext(READER)
    counter = BulkCounter(monkeypatch)
    run_pickle(big, persistent_load=lambda pid: ctx.persistent_load(pid),
               reducers=ctx.reducers())
    assert counter.units == 0


def test_truncation_inside_a_run(big: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    at = big.index(b"module.layers.2100.weight")
    for cut in range(at - 40, at + 260, 3):
        three_ways(big[:cut], monkeypatch)


@pytest.mark.parametrize("budgets", [Budgets(max_ops=20_000), Budgets(max_memo=5_000),
                                     Budgets(max_string=254), Budgets(max_mark_depth=3)])
def test_budgets_with_bulk_runs(big: bytes, budgets: Budgets,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pickle_vm, "BULK_RECORDS", False)
    slow, per_record, _ = run_both(big, budgets=budgets)
    monkeypatch.setattr(pickle_vm, "BULK_RECORDS", True)
    _, bulk, _ = run_both(big, budgets=budgets)
    # budgets are checked at the same points of the stream with or without bulk runs
    assert bulk == per_record
    assert bulk["error"] == slow["error"]
    assert bulk["budget_exceeded"] == slow["budget_exceeded"]


@pytest.mark.parametrize("fast", [True, False])
def test_a_read_leaves_no_cyclic_garbage(big: bytes, fast: bool) -> None:
    """The memo of a 3,000-tensor read is freed when the read ends, not at the next full
    collection (the record steps' closures must not keep it in a cycle)."""
    import gc

    ctx = TorchPickleContext(READER)
    gc.collect()
    gc.disable()
    try:
        res = run_pickle(big, DEFAULT_BUDGETS, persistent_load=ctx.persistent_load,
                         reducers=ctx.reducers(), builders={"*": ctx.build}, fast=fast)
        assert res.complete and (res.records > 2900 if fast else res.records == 0)
        del res, ctx
        assert gc.collect() < 100  # the memo alone holds over 20,000 objects
    finally:
        gc.enable()
