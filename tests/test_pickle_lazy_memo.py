"""The lazy memo of bulk runs (``pickle_runs.LazyMemo``): a run's memo entries are built
only when something reads them, and read, count and iterate as if stored at once.

First the memo by itself, against a plain dict filled in the opcodes' order; then streams
that read pending entries (later records, the opcode loop, MEMOIZE, the budget), that
store over them or under them, compared three ways with test_pickle_runs' helpers
(opcodes only; per record; bulk runs with the lazy memo).
"""

from __future__ import annotations

import pickletools
import random
from typing import Any

import pytest
from _pickle_paths import (
    BulkCounter,
    describe,
    layers_state,
    memo_probe,
    pickle_of,
    run_both,
    saved_bytes,
    three_ways,
)

from ckwidget.readers import pickle_vm
from ckwidget.readers.budgets import Budgets
from ckwidget.readers.pickle_runs import LazyMemo, _Run

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

SLOTS = 8  # memo entries per unit: key, pid, size, stride, empty, args, tensor, dict key


class _Thing:
    """A ref or tensor stand-in, told apart by its name, compared by identity."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


def _toy(puts: list[int]) -> _Run:
    """A run of ``len(puts) // 8`` units with distinct objects in every column."""
    k = len(puts) // SLOTS
    return _Run(puts, min(puts), max(puts), "storage", [("kind", j % 2) for j in range(k)],
                "cpu",
                [f"key{j}" for j in range(k)], list(range(10, 10 + k)), list(range(k)),
                [tuple([j, 2]) for j in range(k)], [tuple([2, 1]) for _ in range(k)],
                bytes([0x88, 0x89] * k)[:k], [_Thing(f"ref{j}") for j in range(k)], dict,
                [_Thing(f"tensor{j}") for j in range(k)], [f"dict{j}" for j in range(k)])


def _eager(puts: list[int], run: _Run) -> dict[int, Any]:
    memo: dict[int, Any] = {}
    memo.update(zip(puts, run.entries()))
    return memo


def _picture(memo: dict[int, Any], order: list[int]) -> Any:
    """What reading ``order`` gives, sharing included (see ``describe``)."""
    return describe([memo[i] for i in order])


def test_reads_give_what_storing_at_once_gives_in_any_order() -> None:
    puts = list(range(100, 100 + 5 * SLOTS))
    rng = random.Random(3)
    for _ in range(20):
        order = rng.sample(puts, len(puts)) + rng.sample(puts, 12)
        lazy = LazyMemo()
        assert lazy.defer(_toy(puts))
        assert lazy.bound() == len(puts) and dict.__len__(lazy) == 0
        got = _picture(lazy, order)
        assert got == _picture(_eager(puts, _toy(puts)), order)
        assert len(lazy) == len(puts)
        assert _picture(lazy, puts) == _picture(_eager(puts, _toy(puts)), puts)


def test_identity_relations_hold_whatever_is_read_first() -> None:
    puts = list(range(SLOTS * 3))
    for first in range(SLOTS):
        lazy = LazyMemo()
        run = _toy(puts)
        assert lazy.defer(run)
        head = lazy[SLOTS + first]  # one entry of the second unit, then the others
        key, pid, size, stride, empty, args, value, dict_key = (
            lazy[SLOTS + s] for s in range(SLOTS))
        assert head is (key, pid, size, stride, empty, args, value, dict_key)[first]
        assert args[2] is size is run.sizes[1] and args[3] is stride is run.strides[1]
        assert args[5] is empty and empty == {} and args[0] is run.refs[1]
        assert args[4] is False and lazy[5][4] is True  # NEWFALSE, NEWTRUE
        assert pid == ("storage", ("kind", 1), "key1", "cpu", 11) and pid[1] is run.kinds[1]
        assert lazy[SLOTS + 1] is pid and lazy[SLOTS + 5] is args  # built once
        assert value is run.values[1] and key is run.keys[1]
        assert lazy[1] is not pid and lazy[4] is not empty  # fresh per unit
        lazy.settle()  # what was built stays; the rest matches
        assert lazy[SLOTS + 1] is pid and lazy[SLOTS + 4] is empty
        assert lazy[2 * SLOTS + 5][2] is lazy[2 * SLOTS + 2]


def test_membership_get_len_and_iteration_see_pending_entries() -> None:
    puts = [7, 9, 11, 13, 15, 17, 19, 21] * 2  # two units, the second's PUTs win
    lazy = LazyMemo()
    lazy[0] = "direct"
    run = _toy(puts)
    assert lazy.defer(run)
    assert 9 in lazy and 8 not in lazy and 0 in lazy and 22 not in lazy
    assert lazy.get(13) is run.strides[1] and lazy.get(8, "none") == "none"
    assert lazy.get("x") is None and "x" not in lazy
    with pytest.raises(KeyError) as caught:
        lazy[10]
    assert caught.value.args == (10,)  # as a dict says it, for the loop's message
    assert lazy.bound() >= len(lazy) == 9
    lazy2 = LazyMemo()
    assert lazy2.defer(_toy(puts))
    assert sorted(lazy2) == sorted(set(puts))
    lazy3 = LazyMemo()
    assert lazy3.defer(_toy(puts))
    eager = _eager(puts, _toy(puts))
    assert sorted(lazy3.keys()) == sorted(eager)
    assert describe(sorted(lazy3.items(), key=lambda kv: kv[0])[0][1]) == describe(eager[7])


def test_stores_in_both_orders() -> None:
    puts = list(range(50, 50 + 2 * SLOTS))
    # a direct store after the run wins, and counts once
    lazy = LazyMemo()
    assert lazy.defer(_toy(puts))
    lazy[53] = "later"
    assert lazy[53] == "later" and len(lazy) == len(puts) and lazy[53] == "later"
    # a run over an index stored before it is not left pending (the caller stores it)
    for before in (50, 57, 65, 1000):
        lazy = LazyMemo()
        lazy[before] = "earlier"
        assert not lazy.defer(_toy(puts))
    # nor a run under or over a pending one
    lazy = LazyMemo()
    assert lazy.defer(_toy(puts))
    assert not lazy.defer(_toy(list(range(60, 60 + SLOTS))))
    assert lazy.defer(_toy(list(range(70, 70 + SLOTS))))
    assert lazy[70] == "key0" and lazy[50] == "key0" and lazy[65] == "dict1"
    # entries read (cached) before a later run: still above every key
    lazy[200] = "x"
    assert not lazy.defer(_toy(list(range(100, 100 + SLOTS))))
    # deletions are followed (the newest keys are no longer the last ones)
    lazy = LazyMemo()
    lazy[300] = "a"
    lazy[5] = "b"
    assert lazy.pop(5) == "b"
    assert not lazy.defer(_toy(list(range(200, 200 + SLOTS))))
    del lazy[300]
    assert lazy.defer(_toy(list(range(200, 200 + SLOTS))))
    lazy.clear()
    assert len(lazy) == 0 and 200 not in lazy


# ----------------------------------------------------------------------------- streams


def _get(index: int) -> bytes:
    return b"j" + index.to_bytes(4, "little")


def _put(index: int) -> bytes:
    return b"r" + index.to_bytes(4, "little")


def _puts(data: bytes, until: int | None = None) -> list[int]:
    """The PUT indexes of ``data`` (before byte ``until``), in order."""
    return [arg for op, arg, pos in pickletools.genops(data)
            if op.name in ("BINPUT", "LONG_BINPUT") and (until is None or pos < until)]


def _reading(data: bytes, order: list[int], extra: bytes = b"") -> bytes:
    """``data``, then ``extra``, then reads of ``order`` (in that order, repeats kept):
    the root becomes (root, [values])."""
    assert data.endswith(b".")
    return data[:-1] + extra + b"](" + b"".join(map(_get, order)) + b"e\x86."


@pytest.fixture(scope="module")
def big() -> bytes:
    return pickle_of(saved_bytes(layers_state(3000)))


def test_the_opcode_loop_reads_pending_entries_in_any_order(big: bytes,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    puts = _puts(big)
    rng = random.Random(11)
    order = rng.sample(puts, 3000) + puts[::-1][:2000] + rng.sample(puts, 500)
    counter = three_ways(_reading(big, order), monkeypatch)
    assert counter.units > 2500
    three_ways(memo_probe(big), monkeypatch)


def test_later_records_read_pending_entries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Views of storages saved early (their key is a run's entry), and records whose
    storage tag or class are read from entries a run stored."""
    state: dict[str, Any] = layers_state(800)
    base = state["module.layers.12.weight"]
    for i in range(300):
        state[f"view.{i}"] = base[i % 2]
    data = pickle_of(saved_bytes(state))
    assert three_ways(data, monkeypatch).units > 700
    three_ways(memo_probe(data), monkeypatch)
    # a later record reading a run's entries where its constants should be
    big = pickle_of(saved_bytes(layers_state(2000)))
    at = big.index(b"module.layers.1800.weight")
    puts = _puts(big, at)
    rng = random.Random(5)
    where = big.index(b"((", at) + 2
    for _ in range(5):
        slot = where + 2 * rng.randrange(2)
        assert big[slot:slot + 1] == b"h"  # BINGET of 'storage', of the class
        edited = big[:slot] + _get(rng.choice(puts[-3000:])) + big[slot + 2:]
        three_ways(edited, monkeypatch)


def test_random_memo_reads_retargeted_into_runs(big: bytes,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Hostile streams: BINGETs turned into LONG_BINGETs of entries stored inside
    earlier runs."""
    gets = [(pos, arg) for op, arg, pos in pickletools.genops(big) if op.name == "BINGET"]
    rng = random.Random(7)
    for _ in range(6):
        pos, _arg = rng.choice(gets[len(gets) // 2:])
        earlier = _puts(big, pos)
        target = rng.choice(earlier[-4000:])
        edited = big[:pos] + _get(target) + big[pos + 2:]
        three_ways(edited, monkeypatch)
        for cut in (pos + 3, pos + 60):
            three_ways(edited[:cut], monkeypatch)


def test_a_direct_store_over_a_pending_entry_wins(big: bytes,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    puts = _puts(big)
    targets = [puts[len(puts) // 2 + s] for s in range(SLOTS)] + [puts[-20]]
    for t in targets:
        over = b"N" + _put(t) + b"0"
        three_ways(_reading(big, [t, t + 1, t - 1, t], over), monkeypatch)
        text = b"N" + b"p%d\n" % t + b"0"  # the text PUT counts the memo itself
        three_ways(_reading(big, [t, t - 1], text), monkeypatch)
    # MEMOIZE stores at len(memo): the pending entries count
    memoize = b"N\x94" + b"0"
    three_ways(_reading(big, [len(set(puts)), puts[-1]], memoize), monkeypatch)


def test_a_pending_store_over_an_earlier_entry_wins(big: bytes,
                                                    monkeypatch: pytest.MonkeyPatch
                                                    ) -> None:
    puts = _puts(big)
    assert big[:2] == b"\x80\x02"
    for t in (puts[len(puts) // 2], puts[len(puts) // 2 + 5], puts[-30], puts[-1]):
        early = big[:2] + b"X\x05\x00\x00\x00early" + _put(t) + b"0" + big[2:]
        three_ways(_reading(early, [t, t + 1]), monkeypatch)
        three_ways(memo_probe(early), monkeypatch)
    # two PUTs of one run to one index, and an earlier store of it: the run's last wins
    at = big.index(b"module.layers.2100.weight")
    later = big.index(b"r", big.index(b"module.layers.2101.bias") + 23)
    same = big[at + 26:at + 30]
    index = int.from_bytes(same, "little")
    twice = big[:later] + b"r" + same + big[later + 5:]
    three_ways(_reading(twice, [index, index - 1, index + 1]), monkeypatch)
    early = twice[:2] + b"N" + _put(index) + b"0" + twice[2:]
    three_ways(_reading(early, [index]), monkeypatch)


@pytest.mark.parametrize("delta", [-1, 0, 1])
@pytest.mark.parametrize("twice", [False, True])
def test_the_memo_budget_counts_pending_entries(big: bytes, delta: int, twice: bool,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    data = big
    if twice:  # two PUTs to one index: the count is below the number of PUTs
        at = big.index(b"module.layers.2100.weight")
        later = big.index(b"r", big.index(b"module.layers.2101.bias") + 23)
        data = big[:later] + b"r" + big[at + 26:at + 30] + big[later + 5:]
    entries = len(set(_puts(data)))
    # the checks between chunks, and MEMOIZE's own, at the edge of the budget
    for stream in (data, _reading(data, [5], b"N\x94" + b"0")):
        for limit in (entries + delta, len(_puts(data)) + delta, 5_000 + delta):
            budgets = Budgets(max_memo=limit)
            monkeypatch.setattr(pickle_vm, "BULK_RECORDS", False)
            slow, per_record, _ = run_both(stream, budgets=budgets)
            monkeypatch.setattr(pickle_vm, "BULK_RECORDS", True)
            counter = BulkCounter(monkeypatch)
            _, bulk, _ = run_both(stream, budgets=budgets)
            assert bulk == per_record, limit
            assert bulk["error"] == slow["error"]
            assert bulk["budget_exceeded"] == slow["budget_exceeded"]
            assert counter.units > 100


def test_protocol_4_streams_keep_a_plain_memo() -> None:
    """MEMOIZE calls len(memo) at every store: no Python-level len for those streams. A
    stream whose bulk runs never fit keeps its plain dict too (whose reads cost less);
    the first long run swaps in a LazyMemo with the same entries."""
    import torch

    data4 = pickle_of(saved_bytes({"a": torch.ones(2), "b": torch.ones(3)}, pickle_protocol=4))
    data2 = pickle_of(saved_bytes({f"t{i}": torch.ones(i % 3 + 1) for i in range(40)}))
    base = torch.zeros(50)
    views = pickle_of(saved_bytes({f"v{i}": base[i:] for i in range(40)}))  # shared storage
    made: list[Any] = []
    real = pickle_vm._TensorRecords.__init__

    def spy(self: Any, *args: Any) -> None:
        real(self, *args)
        made.append(self)

    pickle_vm._TensorRecords.__init__ = spy  # type: ignore[method-assign]
    try:
        seen = []
        for data, kw in ((data4, {}), (data2, {}), (data2, {"torch_meaning": False}),
                         (views, {})):
            made.clear()
            run_both(data, **kw)
            seen.append(type(made[-1].memo))
    finally:
        pickle_vm._TensorRecords.__init__ = real  # type: ignore[method-assign]
    assert seen == [dict, LazyMemo, dict, dict]
