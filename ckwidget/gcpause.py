"""Pause Python's cyclic garbage collector around bulk work.

Reading or diagnosing 100,000 keys allocates hundreds of thousands of small objects
next to a model of as many modules. Each allocation burst would trigger collections
that rescan the whole model for nothing: none of these objects form cycles that must
be freed before the work ends. The collector is restored as it was, even on error.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def gc_paused(*, promote: bool = False) -> Iterator[None]:
    """``promote=True`` for work whose objects outlive it (a checkpoint, a report): they
    go straight to the collector's oldest generation when the pause ends, see
    :func:`promote_new_objects`."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if promote:
            promote_new_objects()
        if was_enabled:
            gc.enable()


def promote_new_objects() -> None:
    """Move the objects the collector has not examined yet (a read's million, which live
    as long as the checkpoint) straight to its oldest generation. Otherwise the first
    collection after the work scans them all, and the next ones again as they age; the
    oldest generation is scanned only by the rare full collections, which still free any
    cycle among them. Skipped where the application froze objects itself
    (``gc.freeze``): unfreezing would undo that."""
    if gc.get_freeze_count() == 0:
        gc.freeze()
        gc.unfreeze()
