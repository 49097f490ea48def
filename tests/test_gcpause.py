"""The collector pause around bulk work: restored as it was, and long-lived results
promoted without a scan, unless the application froze objects itself."""

from __future__ import annotations

import gc

import pytest

from ckwidget.gcpause import gc_paused


def test_pause_restores_the_collector_even_on_error():
    assert gc.isenabled()
    with pytest.raises(ValueError), gc_paused():
        assert not gc.isenabled()
        raise ValueError("boom")
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_paused(promote=True):
            pass
        assert not gc.isenabled()  # it was off before: it stays off
    finally:
        gc.enable()


def _young_collections_after(promote: bool) -> int:
    """Collections of the youngest generation set off by the work's objects."""
    keep = []
    before = gc.get_stats()[0]["collections"]
    with gc_paused(promote=promote):
        keep.extend([i] for i in range(50_000))  # tracked containers that live on
    _ = [[i] for i in range(10)]  # the next allocations after the pause
    return gc.get_stats()[0]["collections"] - before


def test_promote_spares_the_collection_of_long_lived_results():
    assert _young_collections_after(promote=False) >= 1  # the 50,000 are scanned
    assert _young_collections_after(promote=True) == 0


def test_promote_leaves_an_applications_frozen_objects_frozen():
    frozen_before = gc.get_freeze_count()
    marker = [object()]
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        assert frozen > frozen_before
        with gc_paused(promote=True):
            _ = [[i] for i in range(1000)]
        assert gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()
    assert marker
