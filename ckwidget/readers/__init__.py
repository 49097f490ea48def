"""Readers: recognise a checkpoint file or folder and index it without running it."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from pathlib import Path

from ..checkpoint import Checkpoint
from ..errors import CheckpointError, CorruptCheckpointError, NotACheckpointError
from ..gcpause import gc_paused
from .budgets import DEFAULT_BUDGETS, Budgets
from .filestamp import remote_file, require_regular
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


# "s3://bucket/key", "hf://org/repo/file", "simplecache::s3://..." (any fsspec protocol)
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*(://|::)")


def is_url(path: object) -> bool:
    """Whether ``path`` is a URL (``s3://``, ``https://``, ``hf://``...) rather than a
    local path; ``file://`` URLs count as local paths."""
    return (isinstance(path, str) and _URL.match(path) is not None
            and not path.startswith("file://"))


def _read_file(p: Path, budgets: Budgets) -> Checkpoint:
    """Sniff a local file by its first bytes and read it with the reader for its kind."""
    size = require_regular(p).st_size  # a pipe would block the read below
    head = read_head(p)
    return _reader(sniff_bytes(head, size, p.name.lower()))(p, head, budgets)


def open_checkpoint(
    path: str | os.PathLike[str], storage_options: dict | None = None, *,
    budgets: Budgets = DEFAULT_BUDGETS,
) -> Checkpoint:
    """Open a checkpoint file or folder and describe it, never executing anything from it.

    Damaged, foreign and hostile files still open: their ``findings`` say what they are.
    Raises :class:`~ckwidget.errors.CheckpointError` (with one sentence) only when
    nothing at all can be described.

    Args:
        path: a checkpoint file (torch zip or legacy, safetensors, pickle, npz...) or
            folder (Hugging Face shards, DCP, DeepSpeed), or the URL of one (``s3://``,
            ``gs://``, ``az://``, ``http(s)://``, ``hf://``, ``memory://`` or any fsspec
            protocol): it is read by ranges, never downloaded whole (readers/remote.py).
        storage_options: for a URL, passed to fsspec (credentials, ``endpoint_url``...).
        budgets: the counted limits every reader keeps (see ``Budgets``).
    """
    if is_url(path):
        from .remote import open_remote

        return open_remote(str(path), storage_options, budgets=budgets)
    if isinstance(path, str) and path.startswith("file://"):
        path = path[len("file://"):]
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
            elif (remote := remote_file(p)) is not None:
                # the cache file of a remote object (a shard of a remote folder): it
                # fetches what the reader will read first, then guards the tensor reads
                ckpt = remote.read(lambda: _read_file(p, budgets), budgets)
            else:
                ckpt = _read_file(p, budgets)
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


__all__ = ["DEFAULT_BUDGETS", "Budgets", "is_url", "open_checkpoint"]
