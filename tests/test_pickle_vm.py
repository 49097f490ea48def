"""The symbolic pickle machine on plain data: what it builds, what it refuses, its budgets."""

from __future__ import annotations

import pickle

import pytest

from ckwidget.readers.budgets import Budgets
from ckwidget.readers.pickle_vm import Call, Global, OpaqueKey, PickledSet, run_pickle

PLAIN = [
    {"a": [1, 2.5, "x", None, True, (1, 2, 3), {"n": 1}], 3: -5, "big": 2**70, "f": 1e300},
    list(range(3000)),
    "é\n'\"\\" * 300,
    (1,),
    (),
    {"nested": {"deeper": [[], [[]], ({},)]}},
]


@pytest.mark.parametrize("protocol", range(6))
def test_plain_values_come_back_equal_at_every_protocol(protocol: int) -> None:
    for value in PLAIN:
        result = run_pickle(pickle.dumps(value, protocol=protocol))
        assert result.complete, result.error
        assert result.root == value
    assert result.protocol == (protocol if protocol >= 2 else 0)


def test_calls_are_recorded_not_made() -> None:
    data = pickle.dumps({1, 2}, protocol=1)  # builtins.set(list) through REDUCE
    result = run_pickle(data)
    assert isinstance(result.root, Call) and isinstance(result.root.func, Global)
    # protocols < 3 name Python 2's module; pickle's fix_imports maps it, as recorded here
    assert result.root.func.full == "builtins.set"
    assert result.calls == {"builtins.set": 1}
    assert isinstance(run_pickle(pickle.dumps({1, 2}, protocol=4)).root, PickledSet)


def test_a_broken_stream_keeps_what_was_built_before_the_break() -> None:
    data = pickle.dumps({f"k{i}": i for i in range(2000)}, protocol=2)
    result = run_pickle(data[: len(data) // 2])
    assert not result.complete and "STOP" in result.error
    assert isinstance(result.root, dict) and 500 < len(result.root) < 2000
    assert all(result.root[k] == int(k[1:]) for k in result.root)


def test_colliding_integer_keys_do_not_flood_the_dict() -> None:
    """ints are hashed modulo 2**61 - 1 with no randomisation: 100,000 multiples of it
    share one hash. Kept as opaque keys, they cost a linear pass, not a quadratic one."""
    m = 2**61 - 1
    body = b"".join(b"\x8a\x0a" + (m * i).to_bytes(10, "little", signed=True) + b"K\x00"
                    for i in range(1, 100_000))
    result = run_pickle(b"\x80\x02}(" + body + b"u.")  # quadratic inserts take minutes
    assert result.complete and len(result.root) == 99_999
    assert all(type(k) is OpaqueKey for k in result.root)


def test_small_int_and_tuple_keys_stay_plain() -> None:
    value = {0: "a", -7: "b", (1, "x"): "c", True: "d"}
    assert run_pickle(pickle.dumps(value, protocol=2)).root == value


def test_budgets_stop_runaway_streams_with_a_sentence() -> None:
    deep = b"\x80\x02" + b"(" * 20_000 + b"."
    result = run_pickle(deep, Budgets(max_mark_depth=1000))
    assert result.budget_exceeded and "nests more than 1,000" in result.error
    huge = b"\x80\x02\x8e" + (2**62).to_bytes(8, "little") + b"abc."
    result = run_pickle(huge)
    assert not result.complete and "budget" in result.error
    many = b"\x80\x02" + b")" * 300_000 + b"."
    result = run_pickle(many, Budgets(max_ops=100_000))
    assert result.budget_exceeded and "opcodes" in result.error


def test_text_memo_indexes_are_bounded_like_binary_ones() -> None:
    m = 2**61 - 1
    flood = b"".join(b"N" + f"p{m * i}\n".encode() + b"0" for i in range(1, 50))
    result = run_pickle(b"(" + flood + b"l.")
    assert not result.complete and "bad index" in result.error
