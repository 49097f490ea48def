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
def gc_paused() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
