"""Readers: recognise a checkpoint file or folder and index it without running it."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from ..checkpoint import Checkpoint
from ..errors import CheckpointError, CorruptCheckpointError, NotACheckpointError
from ..gcpause import gc_paused
from .budgets import DEFAULT_BUDGETS, Budgets
from .filestamp import require_regular
from .sniff import read_head, sniff_bytes

Reader = Callable[[Path, bytes, Budgets], Checkpoint]


def _reader(kind: str) -> Reader:
    """Import the reader module for ``kind`` only when a file of that kind appears."""
    if kind == "zip":
        from .torch_zip import read_zip

        return read_zip
    if kind == "pickle":
        from .torch_legacy import read_pickle_file

        return read_pickle_file
    if kind == "tar":
        from .torch_legacy import read_tar

        return read_tar
    if kind == "safetensors":
        from .safetensors import read_safetensors

        return read_safetensors
    if kind in ("npy",):
        from .numpy_files import read_npy

        return read_npy
    if kind in ("empty", "lfs-pointer", "html", "unknown"):
        from .broken import read_broken

        return lambda path, head, budgets: read_broken(path, head, budgets, kind)
    from .foreign import read_foreign

    return lambda path, head, budgets: read_foreign(path, head, budgets, kind)


def open_checkpoint(
    path: str | os.PathLike[str], *, budgets: Budgets = DEFAULT_BUDGETS
) -> Checkpoint:
    """Open a checkpoint file or folder and describe it, never executing anything from it.

    Damaged, foreign and hostile files still open: their ``findings`` say what they are.
    Raises :class:`~ckwidget.errors.CheckpointError` (with one sentence) only when
    nothing at all can be described.

    Args:
        path: a checkpoint file (torch zip or legacy, safetensors, pickle, npz...) or
            folder (Hugging Face shards, DCP, DeepSpeed).
        budgets: the counted limits every reader keeps (see ``Budgets``).
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise NotACheckpointError(f"There is no file or folder at {str(p)!r}.")
    started = time.perf_counter()
    # Reading allocates millions of small objects and frees none: collector passes over
    # them would cost more than the read itself.
    with gc_paused(promote=True):
        try:
            if p.is_dir():
                from .folders import read_folder

                ckpt = read_folder(p, budgets)
            else:
                size = require_regular(p).st_size  # a pipe would block the read below
                head = read_head(p)
                ckpt = _reader(sniff_bytes(head, size, p.name.lower()))(p, head, budgets)
        except CheckpointError:
            raise
        except PermissionError:
            raise NotACheckpointError(f"Permission denied reading {str(p)!r}.") from None
        except (MemoryError, RecursionError) as exc:
            raise CorruptCheckpointError(
                f"{p.name} needs more memory or nesting than a checkpoint should "
                f"({type(exc).__name__}); it is damaged or hostile."
            ) from None
        except Exception as exc:  # the promise is: nothing else escapes
            error = CorruptCheckpointError(
                f"{p.name} could not be read: {type(exc).__name__}: {exc}"[:500]
            )
            error.internal = True  # type: ignore[attr-defined]
            raise error from exc
    ckpt.metadata.setdefault("open_seconds", round(time.perf_counter() - started, 4))
    return ckpt


__all__ = ["DEFAULT_BUDGETS", "Budgets", "open_checkpoint"]
