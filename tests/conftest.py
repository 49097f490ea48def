"""Shared test settings: a fixed seed and a temporary folder per test are enough."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("CKWIDGET_TESTING", "1")
# Torch threads fight with the other test processes on a 2-core machine.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def _seed():
    import torch

    torch.manual_seed(0)
    yield


# -- failures that report in a second ---------------------------------------------------
# pytest explains a failed ``a == b`` with a full diff of both sides; for two large
# structures (a 70,000-key reader result) difflib takes many minutes. Large containers
# get a compact summary instead: sizes, then the first difference.
_LARGE = 200


def _size(value: object) -> int:
    return len(value) if isinstance(value, (dict, list, tuple, set, frozenset)) else 0


def _short(value: object, limit: int = 160) -> str:
    import reprlib

    short = reprlib.Repr()
    short.maxlevel, short.maxdict, short.maxlist, short.maxtuple = 3, 6, 6, 6
    short.maxstring = short.maxother = 60
    text = short.repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def first_difference(left: object, right: object) -> str:
    """Where two containers first differ, in one line (equal parts compared in C)."""
    if type(left) is not type(right):
        return f"types differ: {type(left).__name__} vs {type(right).__name__}"
    if isinstance(left, dict):
        only_left = [k for k in left if k not in right][:3]
        only_right = [k for k in right if k not in left][:3]
        if only_left or only_right:
            return (f"keys only on the left {_short(only_left)}, "
                    f"only on the right {_short(only_right)}")
        for k in left:
            if left[k] != right[k]:
                return (f"first differing key {_short(k)}: "
                        f"{_short(left[k])} vs {_short(right[k])}")
    elif isinstance(left, (list, tuple)):
        for i, (a, b) in enumerate(zip(left, right)):
            if a != b:
                return f"first difference at index {i}: {_short(a)} vs {_short(b)}"
        if len(left) != len(right):
            return f"lengths differ: {len(left):,} vs {len(right):,}"
    elif isinstance(left, (set, frozenset)):
        return (f"only on the left {_short(sorted(left - right, key=repr)[:3])}, "
                f"only on the right {_short(sorted(right - left, key=repr)[:3])}")
    return "the values differ"


def pytest_assertrepr_compare(config, op, left, right):
    if op != "==" or max(_size(left), _size(right)) < _LARGE:
        return None  # pytest's own explanation is quick for small values
    return [f"{type(left).__name__} of {_size(left):,} == {type(right).__name__} of "
            f"{_size(right):,} failed", first_difference(left, right)]
