"""A failed comparison of two large structures reports in a second, with the first
difference, instead of pytest's full diff (minutes of difflib at 70,000 keys)."""

from __future__ import annotations

from tests.conftest import first_difference, pytest_assertrepr_compare


def big(n: int = 70_000) -> dict[str, list]:
    return {f"k{i}": [i, {"x": i}] for i in range(n)}


def test_large_dicts_get_a_compact_explanation() -> None:
    a, b = big(), big()
    b["k500"] = [0]
    lines = pytest_assertrepr_compare(None, "==", a, b)
    assert lines[0] == "dict of 70,000 == dict of 70,000 failed"
    assert "'k500'" in lines[1] and "[0]" in lines[1]


def test_first_difference_names_missing_keys_indexes_and_lengths() -> None:
    assert "only on the right ['new']" in first_difference({"a": 1}, {"a": 1, "new": 2})
    assert "index 2" in first_difference([1, 2, 3, 4], [1, 2, 9, 4])
    assert "lengths differ: 3 vs 2" in first_difference([1, 2, 3], [1, 2])
    assert "types differ" in first_difference([1], (1,))


def test_small_values_keep_pytests_own_explanation() -> None:
    assert pytest_assertrepr_compare(None, "==", {"a": 1}, {"a": 2}) is None
    assert pytest_assertrepr_compare(None, "!=", big(300), big(300)) is None
