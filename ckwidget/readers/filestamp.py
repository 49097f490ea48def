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
from dataclasses import dataclass
from pathlib import Path

from ..errors import CheckpointChangedError


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
        st = os.stat(path)
        return cls(Path(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    def change(self) -> str | None:
        """What happened to the file since the stamp, in a few words; None if nothing."""
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
            raise CheckpointChangedError(
                f"{self.path.name} changed on disk since it was opened ({change}), so its "
                "index no longer describes it; open it again to read it as it is now.")
