"""Whether a file is still the one that was opened.

Tensor bytes are read after the index, often minutes later (a plot, Apply, Save), through
memory maps. A training job that rewrites the checkpoint in place meanwhile would make a
mapped read past the new end of the file kill the process (SIGBUS: the kernel dies), and
one that replaces the file would give other bytes than the index describes. So each
reader stamps the file before it reads the index, and checks the stamp before it reads
tensor bytes.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import CheckpointChangedError, NotACheckpointError

# -- remote objects (issue 22) ------------------------------------------------------------
# A remote checkpoint is read through a sparse local cache file per object (see
# readers/remote.py). The cache files are registered here by their path: reads through
# ``open_for_read`` fetch any range not yet cached before returning it (a hole is never
# read as data), and a stamp of a cache file asks the remote object whether it changed
# (its ETag, generation or size and time), since the cache file itself is written as
# ranges arrive. Local files never appear here: for them nothing changes.
REMOTE_FILES: dict[str, Any] = {}


def remote_file(path: str | os.PathLike[str]) -> Any:
    """The remote object whose cache file ``path`` is, or None (a local file)."""
    return REMOTE_FILES.get(os.fspath(path)) if REMOTE_FILES else None


def open_for_read(path: str | os.PathLike[str], buffering: int = -1,
                  stream: bool = False) -> Any:
    """``open(path, "rb")``; for a remote object's cache file, a file that fetches the
    ranges it is asked for before reading them (``stream``: without keeping them)."""
    remote = remote_file(path)
    if remote is None:
        return open(path, "rb", buffering=buffering)
    return remote.open(stream=stream)


def read_all(path: str | os.PathLike[str]) -> bytes:
    """``Path(path).read_bytes()``, through ``open_for_read``."""
    with open_for_read(path) as fh:
        return fh.read()


def ensure_cached(path: str | os.PathLike[str], start: int, length: int) -> None:
    """Before mapping bytes of a file: fetch ``[start, start + length)`` if ``path`` is a
    remote object's cache file (a memory map cannot ask for them); nothing otherwise."""
    remote = remote_file(path)
    if remote is not None:
        remote.ensure(start, start + length)


def changed_error(name: str, change: str) -> CheckpointChangedError:
    """The one sentence for a file (or remote object) that changed since it was opened."""
    return CheckpointChangedError(
        f"{name} changed on disk since it was opened ({change}), so its "
        "index no longer describes it; open it again to read it as it is now.")

_SPECIAL = ((stat.S_ISFIFO, "named pipe"), (stat.S_ISCHR, "character device"),
            (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket"), (stat.S_ISDIR, "folder"))


def require_regular(path: str | os.PathLike[str]) -> os.stat_result:
    """``os.stat(path)`` of a regular file; a pipe, device or socket is refused with a
    sentence, since reading one can block forever or never end."""
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        kind = next((name for test, name in _SPECIAL if test(st.st_mode)), "special file")
        raise NotACheckpointError(
            f"{Path(path).name} is a {kind}, not a file: reading it could wait forever or "
            "never end. Give the path of a checkpoint file or folder.")
    return st


@dataclass(frozen=True, slots=True)
class FileStamp:
    """A file's identity and version: device, inode, size and modification time."""

    path: Path
    device: int
    inode: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: str | os.PathLike[str]) -> FileStamp:
        """The stamp of a regular file (anything else is refused: see require_regular)."""
        st = require_regular(path)
        return cls(Path(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    def change(self) -> str | None:
        """What happened to the file since the stamp, in a few words; None if nothing."""
        remote = remote_file(self.path)
        if remote is not None:  # the cache file is written as ranges arrive: ask the object
            return remote.change()
        try:
            st = os.stat(self.path)
        except OSError as exc:
            return f"it can no longer be read: {exc.strerror or exc}"
        if (st.st_dev, st.st_ino) != (self.device, self.inode):
            return "another file now has its name"
        if st.st_size != self.size:
            return f"its size went from {self.size:,} to {st.st_size:,} bytes"
        if st.st_mtime_ns != self.mtime_ns:
            return "it was written again"
        return None

    def verify(self) -> None:
        """Raise :class:`CheckpointChangedError` if the file is not the one stamped."""
        change = self.change()
        if change is not None:
            raise changed_error(self.path.name, change)
