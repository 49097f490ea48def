"""Runs of tensor records read in bulk (``pickle_runs``) against the per-record fast path
and the opcode loop.

Each test runs a stream three ways (opcodes only; the fast path record by record; the
fast path with bulk runs, whose fixed-width fields are read both with numpy and from the
pattern's groups) and compares everything the machine produced, with the helpers of
test_pickle_fast. Most streams here are edited on purpose to break the bulk reading: a
key that holds opcode bytes, a declared length that disagrees with the bytes, shared
storages, memo entries stored inside a run and read by it, failing hooks, huge memo
indexes, cuts inside a run.
"""

from __future__ import annotations

import random
import sys
from typing import Any

import pytest
import torch
from _pickle_paths import (
    READER,
    BulkCounter,
    context_facts,
    fast_facts,
    layers_state,
    memo_probe,
    mixed_dtypes_state,
    pickle_of,
    resnet_state,
    result_facts,
    run_both,
    saved_bytes,
    three_ways,
)

from ckwidget.readers import pickle_runs, pickle_vm
from ckwidget.readers.budgets import DEFAULT_BUDGETS, Budgets
from ckwidget.readers.pickle_vm import run_pickle
from ckwidget.readers.torch_objects import TorchPickleContext

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def big() -> bytes:
    return pickle_of(saved_bytes(layers_state(3000)))


def test_runs_are_read_in_bulk_with_the_same_everything(big: bytes,
                                                        monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    counter = three_ways(big, monkeypatch)
    assert counter.units > 2500 and counter.runs > 10
    three_ways(memo_probe(big), monkeypatch)
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
    record = pickle_of(saved_bytes({"w": torch.ones(2)}))
    weird = ["((h", "tq\x05Q", "Rq", "r((((", "X\x05\x00\x00\x00", "é.weight", "\x00",
             record.decode("latin-1"), "q" * 300, "h" * 255, "a" * 256, " "]
    state = layers_state(600)
    for i, key in enumerate(weird):
        state[f"module.layers.{300 + i}.{key}"] = torch.ones(i + 1)
    data = pickle_of(saved_bytes(state))
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
    state: dict[str, Any] = layers_state(400)
    for i in range(50):
        state[f"view.{i}"] = base[i % 6:]
        state[f"own.{i}"] = torch.ones(2)
    state.update(layers_state(400, "tail"))
    data = pickle_of(saved_bytes(state))
    assert three_ways(data, monkeypatch).units > 600
    # a literal storage key repeated inside a run (torch.save writes BINGET for views)
    big = pickle_of(saved_bytes(layers_state(2000)))
    edited = big.replace(b"X\x04\x00\x00\x001001", b"X\x04\x00\x00\x001000", 1)
    assert edited != big
    three_ways(edited, monkeypatch)
    # and one whose view reads past the storage it now shares
    edited = big.replace(b"X\x04\x00\x00\x001003", b"X\x04\x00\x00\x001010", 1)
    three_ways(edited, monkeypatch)


def test_runs_span_dtypes_and_scalars(monkeypatch: pytest.MonkeyPatch) -> None:
    """A run reads each unit's storage class (a state dict mixes dtypes record by record)
    and takes 0-d tensors (no PUT after their empty size and stride): ResNet-style blocks
    and a dtype mix are read in bulk almost whole."""
    resnet = pickle_of(saved_bytes(resnet_state(60)))  # 7 tensors a block, 1 of them 0-d int64
    counter = three_ways(resnet, monkeypatch)
    assert counter.units > 0.9 * 7 * 60 and counter.runs < 20
    three_ways(memo_probe(resnet), monkeypatch)
    mixed = pickle_of(saved_bytes(mixed_dtypes_state(500)))
    counter = three_ways(mixed, monkeypatch)
    assert counter.units > 0.9 * 500
    three_ways(memo_probe(mixed), monkeypatch)


def test_empty_tuples_with_puts_and_tuples_without(monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty size followed by a PUT, a size of one dimension with none: forms pickle
    never writes, which the units must not read as the usual ones."""
    state = layers_state(300)
    data = pickle_of(saved_bytes(state))
    scalar = data.index(b"module.layers.150.scale")
    empty = data.index(b"))", scalar + 40)  # its size and stride: EMPTY_TUPLE twice
    put = b"r" + (70_000).to_bytes(4, "little")
    for edited in (data[:empty + 1] + put + data[empty + 1:],
                   data[:empty + 2] + put + data[empty + 2:]):
        three_ways(edited, monkeypatch)
    bias = data.index(b"module.layers.151.bias")
    size = data.index(b"K\x03\x85r", bias)  # (3,) and its LONG_BINPUT
    three_ways(data[:size + 3] + data[size + 8:], monkeypatch)


def test_units_that_never_fit_cost_few_tries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Storages shared record after record (BINGET keys, no unit fits): after a streak of
    misses the bulk runner tries the general pattern less and less often; a run later in
    the stream is still read in bulk."""
    tries = [0]
    general = pickle_runs._GENERAL

    def counted(data: bytes, at: int) -> Any:
        tries[0] += 1
        return general(data, at)

    state: dict[str, Any] = {}
    for i in range(600):
        base = torch.zeros(4, 6)
        state[f"enc.{i}.weight"] = base
        state[f"dec.{i}.weight_t"] = base.t()
        state[f"dec.{i}.row"] = base[2]
    state.update(layers_state(600, "tail"))
    data = pickle_of(saved_bytes(state))
    monkeypatch.setattr(pickle_runs, "_GENERAL", counted)
    counter = three_ways(data, monkeypatch)
    assert counter.units > 400  # the tail
    tries[0] = 0
    fast_facts(data)
    assert tries[0] < 1800 // 20


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
        three_ways(memo_probe(edited), monkeypatch)
    # two PUTs of one run to the same index: the later one stays
    later = big.index(b"r", big.index(b"module.layers.2101.bias") + 23)
    same = big[put + 1:put + 5]
    three_ways(big[:later] + b"r" + same + big[later + 5:], monkeypatch)
    three_ways(memo_probe(big[:later] + b"r" + same + big[later + 5:]), monkeypatch)


def test_huge_and_unordered_memo_indexes(big: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    at = big.index(b"module.layers.2100.weight")
    put = at + 25
    for index in (0xFFFFFFFF, 0x7FFFFFFF, 1 << 31, 257):
        edited = big[:put] + _long_put(index) + big[put + 5:]
        three_ways(edited, monkeypatch)
        three_ways(memo_probe(edited), monkeypatch)


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


@pytest.mark.parametrize(("fast", "numpy_runs"), [(True, True), (True, False), (False, True)])
def test_a_read_leaves_no_cyclic_garbage(big: bytes, fast: bool, numpy_runs: bool,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The memo of a 3,000-tensor read is freed when the read ends, not at the next full
    collection (the record steps' closures must not keep it in a cycle)."""
    import gc

    monkeypatch.setattr(pickle_runs, "NUMPY_RUNS", numpy_runs)
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


# ------------------------------------------------ fixed-width fields: numpy and groups


def _varied(n: int) -> dict[str, torch.Tensor]:
    """Units with every width the fields between the fixed-width ones take: keys of 1 to
    255 characters, numels and offsets of BININT1, BININT2 and BININT, sizes of 0 to 5
    dims and strides past 255 bytes (55 dims of BININT), requires_grad both ways."""
    g = torch.Generator().manual_seed(n)
    out: dict[str, torch.Tensor] = {}
    for i in range(n):
        key = (f"{i}." + "x" * (i * 37 % 254))[:255]
        if i in (2, 9):  # the shortest key and the longest read in bulk
            key = "z" if i == 2 else "k" * 255
        kind = i % 8
        if kind == 0:
            t = torch.tensor(float(i))
        elif kind == 1:
            t = torch.randn(3, generator=g)
        elif kind == 2:
            t = torch.zeros(2, 3, 4)
        elif kind == 3:
            t = torch.zeros(1000)[300 + i % 7:]
        elif kind == 4 and i % 40 == 4:
            t = torch.zeros(70_000)[66_000 + i % 5:]
        elif kind == 4:
            t = torch.zeros(2, 300).t()
        elif kind == 5:
            t = torch.ones(2, requires_grad=True)
        elif kind == 6:
            t = torch.zeros(1, 2, 1, 2, 1)
        elif i % 16 == 7:
            t = torch.zeros(1).as_strided([1] * 55, [70_000] * 55)
        else:
            t = torch.ones(i % 3 + 1)
        out[key] = t
    return out


@pytest.fixture(scope="module")
def varied() -> dict[int, bytes]:
    """Streams of 25 units (one-byte PUTs only) and 120 (both widths)."""
    return {n: pickle_of(saved_bytes(_varied(n))) for n in (25, 120)}


class FieldsSpy:
    """The families learned (their PUT width, whether numpy reads their fields) and the
    units whose fields numpy read."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.families: set[tuple[int, bool]] = set()
        self.units = 0
        family = pickle_runs._Family.__init__
        read = pickle_runs._Fields.read

        def learned(fam: Any, m: Any, np: Any = None, words: Any = None) -> None:
            family(fam, m, np, words)
            self.families.add((fam.put_width, np is not None))

        def counted(fields: Any, starts: list[int], cols: Any, k: int) -> Any:
            got = read(fields, starts, cols, k)
            self.units += got[0]
            return got

        monkeypatch.setattr(pickle_runs._Family, "__init__", learned)
        monkeypatch.setattr(pickle_runs._Fields, "read", counted)


def _fixed_fields(data: bytes) -> list[int]:
    """Where the fixed-width fields of every unit the general pattern finds sit: the
    declared lengths, the PUT indexes and the requires_grad byte."""
    spots = []
    for m in pickle_runs._GENERAL.__self__.finditer(data):
        for g in pickle_runs._GENERAL_FIXED:
            first = m.start(g) + (g in pickle_runs._PUTS)  # a PUT's index
            spots.extend(range(first, m.end(g)))
    return spots


def test_numpy_and_groups_read_the_same_fields(varied: dict[int, bytes],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    spy = FieldsSpy(monkeypatch)
    counter = three_ways(varied[120], monkeypatch)
    assert counter.units > 60 and spy.units == counter.units
    assert spy.families >= {(1, True), (4, True), (1, False), (4, False)}
    three_ways(memo_probe(varied[120]), monkeypatch)
    assert three_ways(varied[25], monkeypatch).units > 10
    # units whose strides take over 255 bytes (55 BININTs): widths past one byte
    assert sum(len(m.group(12)) > 255 for m in pickle_runs._GENERAL.__self__.finditer(
        varied[120])) >= 2


def test_numpy_off_or_not_loaded_reads_the_groups(varied: dict[int, bytes],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    spy = FieldsSpy(monkeypatch)
    monkeypatch.setattr(pickle_runs, "NUMPY_RUNS", False)
    assert assert_fast(varied[120]) > 0
    assert spy.units == 0 and spy.families == {(1, False), (4, False)}
    monkeypatch.setattr(pickle_runs, "NUMPY_RUNS", True)
    monkeypatch.delitem(sys.modules, "numpy")  # the reader does not import it
    assert assert_fast(varied[120]) > 0
    assert spy.units == 0 and spy.families == {(1, False), (4, False)}
    assert "numpy" not in sys.modules


def assert_fast(data: bytes) -> int:
    """Records the fast path ran on ``data``, its facts checked against the opcodes'."""
    slow, fast, records = run_both(data)
    assert fast == slow
    return records


def test_flips_of_the_fixed_width_fields(varied: dict[int, bytes],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Each byte numpy reads, made one more, one less, another requires_grad byte, or any
    byte: both readings and the per-record step agree."""
    rng = random.Random(31)
    for n in (25, 120):
        data = varied[n]
        spots = _fixed_fields(data)
        assert len(spots) > 40 * (n // 10)
        for i in range(60 if n == 25 else 120):
            damaged = bytearray(data)
            for at in rng.sample(spots, 1 + i % 2):
                damaged[at] = rng.choice([(data[at] + 1) % 256, (data[at] - 1) % 256,
                                          data[at] ^ 1, rng.randrange(256)])
            three_ways(bytes(damaged), monkeypatch)


def test_truncations_across_one_byte_puts(varied: dict[int, bytes],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    data = varied[25]
    units = list(pickle_runs._GENERAL.__self__.finditer(data))
    assert len(units) > 10
    for cut in range(units[4].start() - 3, units[6].end() + 3):
        three_ways(data[:cut], monkeypatch)
