"""Checkpoints where they live: open a remote or object-store checkpoint by range reads.

``open_checkpoint("s3://bucket/run/model.pt")`` (any fsspec URL) describes the checkpoint
without downloading it. The design keeps every local reader as it is:

- **A sparse cache file per remote object.** Opening creates, in a private temporary
  folder, a file of the object's size (``truncate``: it takes no disk space) under the
  object's own name, or a folder mirroring the remote folder's listing. The local
  readers then run on it unchanged. Findings name the object (its name, or its URL
  where a reader quotes a folder's path).
- **Holes are never read as data.** The cache keeps the ranges it holds. Every read
  the readers make of a cache file goes through ``filestamp.open_for_read`` (zip
  directory and records, safetensors headers, folder files), which fetches what is
  missing before returning it; memory-mapped tensor reads ask first
  (``filestamp.ensure_cached``, the storage readers' ``buffer``, the loader). Readers
  that know nothing of ranges (plain pickles, numpy, tar, foreign formats) get their
  object whole when it is small (``WHOLE_OBJECT_LIMIT``), their documented prefix when
  that is all they read (HDF5 and GGUF markers), a bounded prefix checked against the
  pickle machine for large pickles, and otherwise a sentence instead of a guess.
- **Fetched ahead, in waves.** What the reader will read is fetched before it runs,
  in as few round trips as the format allows, each wave's requests sent at once
  (``cat_ranges``, HTTPFile's coroutines gathered on fsspec's loop, or a thread pool;
  s3fs gets ``CONNECTIONS`` connections) and neighbouring ranges coalesced: a torch zip's
  first and last 64 KiB (data.pkl, version, byteorder and the directory are usually
  there), then the directory, then every small record it names; a safetensors header;
  for a folder, its listing, then the index, configs and every shard's head and header
  at once.
- **Tensor bytes on demand.** A tensor read fetches its record's range first;
  ``RemoteCheckpoint.read_sample`` reads evenly spread blocks only; ``state_dict`` and
  Apply fetch the ranges of the tensors they need in one wave and say how much
  (``io_stats.notes`` and the ``ckwidget.remote`` logger); ``verify`` streams every byte
  without keeping it.
- **Changed objects.** The object's ETag, generation or version, size and time from
  ``info()`` at open are its stamp. Every wave after the open asks again (in parallel
  with its reads), and a changed object raises the same ``CheckpointChangedError``
  sentence as a changed local file. ``refresh()`` asks on demand.

A server that ignores range requests is detected on the first one: the object is then
read whole once (saying so) up to ``NO_RANGE_LIMIT``, and refused with a sentence above.
"""

from __future__ import annotations

import bisect
import logging
import os
import shutil
import struct
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from ..checkpoint import Checkpoint, Finding
from ..errors import CheckpointError, NotACheckpointError
from .budgets import DEFAULT_BUDGETS, Budgets
from .filestamp import REMOTE_FILES, changed_error, remote_file

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

log = logging.getLogger("ckwidget.remote")

EXTRA = "pip install ckwidget[remote]"
HEAD_BYTES = 64 << 10            # first bytes fetched of every file (sniffing, data.pkl...)
TAIL_BYTES = 65_536 + 22         # what the zip reader reads from the end of an archive
GAP = 64 << 10                   # ranges closer than this are fetched as one
PIECE = 8 << 20                  # the largest single request
WORKERS = 32                     # requests in flight at once (thread pool)
CONNECTIONS = 100                # an S3 client's connections (aiohttp's default for HTTP)
LOCAL_EXTRA = 128                # room for a zip record's local extra field (torch pads to 64)
RECORDS_LIMIT = 256 << 20        # small records fetched ahead, in all
SMALL_FILE = 1 << 20             # files of a folder fetched whole ahead (json, latest...)
SCAN_BYTES = 1 << 20             # what the HDF5 and GGUF readers scan (readers/foreign.py)
SAMPLE_BLOCKS = 4                # blocks read_samples reads from a big tensor
STREAM_AHEAD = 64 << 20          # verify's read-ahead (fetched in parallel, not kept)
WHOLE_OBJECT_LIMIT = 64 << 20    # formats read without ranges: fetched whole up to this
NO_RANGE_LIMIT = 1 << 30         # a server without range requests: whole up to this
READ_BUDGET = 32 << 20           # what single-tensor reads (RemoteCheckpoint.read) may
#                                  download in all; fetch/state_dict/Apply are not counted

_HTTP = ("http", "https")
# the readers of these kinds read nothing past the first bytes (sniff.HEAD_BYTES)...
_HEAD_ONLY = frozenset({"empty", "lfs-pointer", "html", "unknown", "7z", "gzip", "tf-index"})
# ...and of these, at most SCAN_BYTES
_SCANNED = frozenset({"hdf5", "gguf"})
# info() fields that change when an object is written again
_STAMP_KEYS = ("size", "ETag", "etag", "e_tag", "generation", "VersionId", "version_id",
               "md5Hash", "blob_id", "LastModified", "Last-Modified", "last_modified",
               "updated", "mtime", "created")


def human(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1000
    return f"{n} TB"  # pragma: no cover


@dataclass
class IOStats:
    """What reading a remote checkpoint cost so far (``RemoteCheckpoint.io_stats``)."""

    requests: int = 0        # requests sent: ranges, whole reads, info() and listings
    bytes_read: int = 0      # bytes received
    round_trips: int = 0     # waves of requests waited for (a wave's requests are parallel)
    seconds: float = 0.0     # time spent waiting for them
    size: int = 0            # bytes of the remote object(s)
    notes: list[str] = field(default_factory=list)  # whole reads and downloads, in words

    def summary(self) -> str:
        pct = 100 * self.bytes_read / self.size if self.size else 0.0
        share = (f" of {human(self.size)} ({pct:.0f}%)" if pct >= 1 else
                 f" of {human(self.size)} ({pct:.2g}%)") if self.size else ""
        return (f"{self.requests} requests in {self.round_trips} round trips, "
                f"{human(self.bytes_read)} read{share}, {self.seconds:.2f} s waiting")


class _Ranges:
    """Sorted, disjoint, non-touching [start, end) ranges: what a cache file holds."""

    __slots__ = ("ends", "starts")

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []

    def missing(self, start: int, end: int) -> list[tuple[int, int]]:
        out = []
        pos = start
        i = bisect.bisect_right(self.ends, start)
        while pos < end and i < len(self.starts) and self.starts[i] < end:
            if self.starts[i] > pos:
                out.append((pos, self.starts[i]))
            pos = max(pos, self.ends[i])
            i += 1
        if pos < end:
            out.append((pos, end))
        return out

    def add(self, start: int, end: int) -> None:
        if start >= end:
            return
        i = bisect.bisect_left(self.ends, start)
        j = bisect.bisect_right(self.starts, end)
        if i < j:
            start, end = min(start, self.starts[i]), max(end, self.ends[j - 1])
        self.starts[i:j] = [start]
        self.ends[i:j] = [end]

    def total(self) -> int:
        return sum(e - s for s, e in zip(self.starts, self.ends))


def _coalesce(ranges: Iterable[tuple[int, int]], gap: int) -> list[tuple[int, int]]:
    out: list[list[int]] = []
    for s, e in sorted(ranges):
        if out and s <= out[-1][1] + gap:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return [(s, e) for s, e in out]


def _stamp_of(info: dict[str, Any]) -> dict[str, str]:
    return {k: _plain(info[k]) for k in _STAMP_KEYS if info.get(k) is not None}


def _plain(value: Any) -> str:
    """A stamp field as text; times as seconds (listings and info() may differ in type)."""
    import datetime

    if isinstance(value, datetime.datetime):
        return repr(round(value.timestamp(), 3))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return repr(round(float(value), 3)) if isinstance(value, float) else str(value)
    return str(value)


def _stamp_change(old: dict[str, str], new: dict[str, str]) -> str | None:
    if old.get("size") != new.get("size"):
        try:
            return f"its size went from {int(old['size']):,} to {int(new['size']):,} bytes"
        except (KeyError, ValueError):
            return "its size changed"
    for key, value in old.items():
        if key in new and new[key] != value:
            return f"its {key} went from {value} to {new[key]}"
    return None


class _NoRanges(Exception):
    """The server answered a range request with the whole object (or refused it)."""


# -- one remote object and its cache file -------------------------------------------------
class RemoteObject:
    """One remote file: its info, its sparse cache file and the ranges it holds."""

    def __init__(self, session: Session, rpath: str, info: dict[str, Any], cache: Path,
                 url: str) -> None:
        self.session = session
        self.rpath = rpath
        self.url = url
        self.size = int(info.get("size") or 0)
        self.stamp = _stamp_of(info)
        self.cache = cache
        self.name = cache.name
        cache.parent.mkdir(parents=True, exist_ok=True)
        with open(cache, "wb") as fh:
            fh.truncate(self.size)  # sparse: no disk space until ranges arrive
        self.fd = os.open(cache, os.O_RDWR)
        self.filled = _Ranges()
        self.changed: str | None = None
        self.http_file: Any = None
        self.no_ranges = False  # the server answered a range request with the whole object
        REMOTE_FILES[str(cache)] = self

    def __repr__(self) -> str:
        return f"<RemoteObject {self.url} {self.filled.total():,}/{self.size:,} bytes cached>"

    # the interface filestamp and the open_checkpoint hook use
    def ensure(self, start: int, end: int) -> None:
        """Fetch whatever of ``[start, end)`` the cache does not hold yet."""
        if not self.holds(start, end):
            self.session.ensure([(self, start, end)])

    def holds(self, start: int, end: int) -> bool:
        with self.session.lock:
            return not self.filled.missing(max(0, start), min(self.size, end))

    def open(self, stream: bool = False) -> _GuardedFile:
        return _GuardedFile(self, stream)

    def change(self) -> str | None:
        """What changed about the object since it was opened, as the last wave of requests
        saw it (every wave after the open asks; ``refresh`` asks now); None if nothing."""
        return self.changed

    def read(self, run: Callable[[], Checkpoint], budgets: Budgets) -> Checkpoint:
        """Open the cache file with the local reader (``run``), having fetched what it
        will read first, then guard its tensor reads."""
        self.session.run_plans([(self, _file_plan(self, budgets))])
        ckpt = run()
        ckpt = _settle_legacy(self, ckpt, run)
        _adopt(self, ckpt)
        return ckpt

    # the cache
    def pread(self, start: int, n: int) -> bytes:
        """Bytes the cache holds (callers fetch them first)."""
        return os.pread(self.fd, n, start)

    def store(self, start: int, data: bytes) -> None:
        os.pwrite(self.fd, data, start)
        self.filled.add(start, start + len(data))

    def check(self) -> str | None:
        """Ask the remote object now whether it changed since it was opened."""
        try:
            info = self.session.info(self.rpath, fresh=True)
        except FileNotFoundError:
            change = "it can no longer be read: it was deleted"
        except Exception as exc:  # a transport error says nothing about the object
            log.debug("could not check %s: %s", self.url, exc)
            return self.changed
        else:
            change = _stamp_change(self.stamp, _stamp_of(info))
        if change is not None:
            self.changed = change
        return self.changed

    def close(self) -> None:
        if REMOTE_FILES.get(str(self.cache)) is self:
            del REMOTE_FILES[str(self.cache)]
        fd, self.fd = self.fd, -1
        if fd >= 0:  # once: a second close would close whatever reused the number
            os.close(fd)


class _GuardedFile:
    """A read-only file over a cache file that fetches every range before reading it.
    ``stream``: missing ranges are fetched ahead in parallel and not kept (verify)."""

    def __init__(self, obj: RemoteObject, stream: bool) -> None:
        self.obj = obj
        self.stream = stream
        self.pos = 0
        self.closed = False
        self._ahead = b""
        self._ahead_at = 0

    def __enter__(self) -> _GuardedFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.closed = True
        self._ahead = b""

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self.pos, 2: self.obj.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def tell(self) -> int:
        return self.pos

    def read(self, n: int | None = -1) -> bytes:
        size = self.obj.size
        end = size if n is None or n < 0 else min(size, self.pos + n)
        if end <= self.pos:
            return b""
        data = self._get(self.pos, end)
        self.pos += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def _get(self, start: int, end: int) -> bytes:
        obj = self.obj
        if not self.stream or obj.holds(start, end):
            obj.ensure(start, end)
            return obj.pread(start, end - start)
        ahead = self._ahead_at
        if not (ahead <= start and end <= ahead + len(self._ahead)):
            self._ahead_at = start
            self._ahead = obj.session.fetch(obj, start, min(obj.size,
                                                            max(end, start + STREAM_AHEAD)))
        return self._ahead[start - self._ahead_at:end - self._ahead_at]


# -- a session: one open remote checkpoint ------------------------------------------------
class Session:
    """The filesystem, the cache folder, the objects and the I/O counts of one open."""

    def __init__(self, fs: Any, url: str, options: dict[str, Any], root: Path) -> None:
        self.fs = fs
        self.url = url
        self.options = options
        self.root = root
        self.stats = IOStats()
        self.objects: dict[str, RemoteObject] = {}  # by remote path
        protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
        self.http = protocol in _HTTP
        self.opened = False  # after the open, every wave asks whether the objects changed
        self.ranges_seen = False  # an HTTP server answered a range request with the range
        self.closed = False
        self.lock = threading.RLock()
        self._pool: ThreadPoolExecutor | None = None

    def __repr__(self) -> str:
        return f"<remote session {self.url}: {self.stats.summary()}>"

    @property
    def pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="ckwidget-remote")
        return self._pool

    def close(self) -> None:
        with self.lock:
            if self.closed:
                return
            self.closed = True
            for obj in self.objects.values():
                obj.close()
            if self._pool is not None:
                self._pool.shutdown(wait=False)
            shutil.rmtree(self.root, ignore_errors=True)

    def add(self, rpath: str, info: dict[str, Any], cache: Path, url: str) -> RemoteObject:
        obj = RemoteObject(self, rpath, info, cache, url)
        self.objects[rpath] = obj
        self.stats.size += obj.size
        return obj

    # -- requests ----------------------------------------------------------------------
    def _count(self, requests: int, nbytes: int, started: float) -> None:
        stats = self.stats
        stats.requests += requests
        stats.bytes_read += nbytes
        stats.round_trips += 1
        stats.seconds += time.perf_counter() - started

    def info(self, rpath: str, fresh: bool = False) -> dict[str, Any]:
        """``fs.info`` (``fresh``: past any listing cache); not counted (callers count)."""
        if fresh:
            try:
                self.fs.invalidate_cache(rpath)
            except Exception:  # not every filesystem caches
                pass
        return self.fs.info(rpath)

    def call(self, fn: Callable[..., Any], *args: Any, requests: int = 1) -> Any:
        """One request (an info() or a listing) as a round trip of its own."""
        started = time.perf_counter()
        try:
            return fn(*args)
        except Exception as exc:
            raise self.failure(exc) from None
        finally:
            self._count(requests, 0, started)

    def parallel(self, fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
        """``fn`` over ``items`` as one round trip (thread pool); exceptions returned."""
        if not items:
            return []
        started = time.perf_counter()

        def safe(item: Any) -> Any:
            try:
                return fn(item)
            except Exception as exc:
                return exc
        try:
            return list(self.pool.map(safe, items))
        finally:
            self._count(len(items), 0, started)

    def failure(self, exc: BaseException, url: str | None = None) -> CheckpointError:
        """A transport or permission error as one sentence."""
        if isinstance(exc, CheckpointError):
            return exc
        where = url or self.url
        if isinstance(exc, FileNotFoundError):
            return NotACheckpointError(f"There is no file or folder at {where!r}.")
        if isinstance(exc, PermissionError):
            return NotACheckpointError(
                f"Permission denied reading {where!r}: check the credentials (storage_options "
                "or the environment).")
        text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        return CheckpointError(
            f"Reading {where!r} failed ({type(exc).__name__}{': ' + text if text else ''}); "
            "check the URL, the network and the credentials, then open it again.")

    def ensure(self, requests: list[tuple[RemoteObject, int, int]]) -> None:
        """Fetch the missing parts of these ranges, in one wave of parallel requests."""
        with self.lock:
            if self.closed:
                raise CheckpointError(
                    f"The remote checkpoint {self.url!r} was closed; open it again to read it.")
            gaps: dict[RemoteObject, list[tuple[int, int]]] = {}
            for obj, start, end in requests:
                start, end = max(0, start), min(obj.size, end)
                if start < end:
                    gaps.setdefault(obj, []).extend(obj.filled.missing(start, end))
            pieces = [(obj, a, min(e, a + PIECE)) for obj, spans in gaps.items()
                      for s, e in _coalesce(spans, GAP) for a in range(s, e, PIECE)]
            if not pieces:
                return
            try:
                datas = self._wave(pieces)
            except _NoRanges as exc:
                for obj in gaps:
                    self.whole(obj, str(exc))
                return
            for (obj, start, _), data in zip(pieces, datas):
                obj.store(start, data)

    def fetch(self, obj: RemoteObject, start: int, end: int) -> bytes:
        """Bytes of ``[start, end)`` fetched in parallel pieces and not kept (streaming)."""
        with self.lock:
            if obj.no_ranges:
                self.whole(obj, "the server does not answer range requests")
                return obj.pread(start, end - start)
            pieces = [(obj, a, min(end, a + PIECE)) for a in range(start, end, PIECE)]
            try:
                return b"".join(self._wave(pieces))
            except _NoRanges as exc:
                self.whole(obj, str(exc))
                return obj.pread(start, end - start)

    def _wave(self, pieces: list[tuple[RemoteObject, int, int]]) -> list[bytes]:
        started = time.perf_counter()
        checked = list({id(o): o for o, _, _ in pieces}.values()) if self.opened else []
        checks = [self.pool.submit(obj.check) for obj in checked]
        try:
            if self.http and not self.ranges_seen:
                datas = self._http_ranges(pieces)
            elif getattr(self.fs, "async_impl", False):
                datas = self.fs.cat_ranges([o.rpath for o, _, _ in pieces],
                                           [s for _, s, _ in pieces],
                                           [e for _, _, e in pieces], on_error="return")
            else:
                datas = list(self.pool.map(self._sync_range, pieces))
        finally:
            self._count(len(pieces) + len(checked), 0, started)
        for future in checks:
            future.result()
        for obj in checked:
            if obj.changed is not None:  # what arrived may be of the new version: dropped
                raise changed_error(obj.name, obj.changed)
        for (obj, start, end), data in zip(pieces, datas):
            if isinstance(data, _NoRanges):
                raise data
            if isinstance(data, BaseException):
                raise self.failure(data, obj.url)
            self.stats.bytes_read += len(data)
            if len(data) != end - start:
                if self.http and len(data) > end - start:
                    raise _NoRanges("the server answered a range request with the whole "
                                    "object")
                obj.check()
                if obj.changed is not None:
                    raise changed_error(obj.name, obj.changed)
                raise CheckpointError(
                    f"{obj.url} returned {len(data):,} bytes for a range of {end - start:,} "
                    f"at {start:,}: the object is shorter than it said, or the server is "
                    "misbehaving. Open it again.")
        return datas

    def _sync_range(self, piece: tuple[RemoteObject, int, int]) -> Any:
        obj, start, end = piece
        try:
            return self.fs.cat_file(obj.rpath, start=start, end=end)
        except Exception as exc:
            return exc

    def _http_ranges(self, pieces: list[tuple[RemoteObject, int, int]]) -> list[Any]:
        """Ranges over HTTP through fsspec's HTTPFile, which checks that the server
        answered with the range (206 or Content-Range) and never reads a whole body
        the server sends instead (it raises, or stops at the range for a start at 0).
        All of them at once on fsspec's event loop (as ``cat_ranges`` sends them), not
        a thread pool's worth at a time; exceptions returned."""
        opened: dict[int, Any] = {}
        for obj, _, _ in pieces:
            if id(obj) in opened:
                continue
            try:
                if obj.http_file is None:
                    obj.http_file = self.fs.open(obj.rpath, "rb", size=obj.size,
                                                 block_size=PIECE, cache_type="none")
                opened[id(obj)] = obj.http_file
            except Exception as exc:
                opened[id(obj)] = exc
        loop = getattr(self.fs, "loop", None)
        if loop is None or not all(hasattr(f, "async_fetch_range") for f in opened.values()
                                   if not isinstance(f, BaseException)):
            return list(self.pool.map(self._http_range, pieces))  # pragma: no cover
        from fsspec.asyn import sync

        async def one(piece: tuple[RemoteObject, int, int]) -> Any:
            obj, start, end = piece
            file = opened[id(obj)]
            if isinstance(file, BaseException):
                return file
            try:
                data = await file.async_fetch_range(start, end)
            except Exception as exc:
                return self._http_error(obj, exc)
            return self._http_answer(start, end, data)

        async def every() -> list[Any]:
            import asyncio

            return list(await asyncio.gather(*map(one, pieces)))

        return sync(loop, every)

    def _http_range(self, piece: tuple[RemoteObject, int, int]) -> Any:
        """One range of ``_http_ranges``, from a thread (fsspec without coroutines)."""
        obj, start, end = piece
        try:
            return self._http_answer(start, end, obj.http_file._fetch_range(start, end))
        except Exception as exc:
            return self._http_error(obj, exc)

    def _http_answer(self, start: int, end: int, data: bytes) -> bytes:
        if start > 0 and len(data) == end - start:
            self.ranges_seen = True  # from now on plain parallel range requests do
        return data

    def _http_error(self, obj: RemoteObject, exc: Exception) -> Exception:
        if isinstance(exc, ValueError) and "range" in str(exc):
            obj.no_ranges = True
            return _NoRanges("the server does not answer range requests")
        return exc

    def whole(self, obj: RemoteObject, why: str) -> None:
        """Read the whole object once into its cache (a server without range requests)."""
        if obj.holds(0, obj.size):
            return
        if obj.size > NO_RANGE_LIMIT:
            raise NotACheckpointError(
                f"{obj.url} is {human(obj.size)} and {why}, so ckwidget would have to "
                f"download all of it to read its index; download it once yourself "
                f"(e.g. fsspec.get) and open the local copy.")
        note = f"{obj.url}: {why}; it was read whole once ({human(obj.size)})."
        log.warning(note)
        self.stats.notes.append(note)
        started = time.perf_counter()
        pos = 0
        try:
            with self.fs.open(obj.rpath, "rb", block_size=0) as fh:
                while pos < obj.size:
                    chunk = fh.read(min(PIECE, obj.size - pos))
                    if not chunk:
                        break
                    obj.store(pos, chunk)
                    pos += len(chunk)
        except Exception as exc:
            raise self.failure(exc, obj.url) from None
        finally:
            self._count(1, pos, started)
        if pos != obj.size:
            raise changed_error(obj.name, f"it now holds {pos:,} bytes, not {obj.size:,}")

    def run_plans(self, plans: list[tuple[RemoteObject, Iterator[list[tuple[int, int]]]]]
                  ) -> None:
        """Advance every file's plan in lockstep: each step's ranges of all of them are
        fetched as one wave."""
        active = []
        for obj, plan in plans:
            step = next(plan, None)
            if step is not None:
                active.append((obj, plan, step))
        while active:
            self.ensure([(obj, s, e) for obj, _, step in active for s, e in step])
            following = []
            for obj, plan, _ in active:
                step = next(plan, None)
                if step is not None:
                    following.append((obj, plan, step))
            active = following


# -- what each format's reader reads --------------------------------------------------------
def _file_plan(obj: RemoteObject, budgets: Budgets) -> Iterator[list[tuple[int, int]]]:
    """The ranges a file's reader will read, as waves (each a list of ranges): the head
    and tail first, then what they say is needed. What a plan misses is fetched when
    read (the guarded reads): a plan only saves round trips."""
    from .sniff import sniff_bytes

    size = obj.size
    if size == 0:
        return
    if size <= HEAD_BYTES + TAIL_BYTES:
        yield [(0, size)]
    elif obj.name.endswith(".safetensors"):  # its header is at the head: no tail needed
        yield [(0, HEAD_BYTES)]
    else:
        yield [(0, HEAD_BYTES), (size - TAIL_BYTES, size)]
    head = obj.pread(0, min(size, 4096))
    kind = sniff_bytes(head, size, obj.name.lower())
    if kind == "zip":
        yield from _zip_plan(obj, budgets)
    elif kind == "safetensors" or (kind == "unknown" and head[8:10] in (b"{}", b'{"')):
        n = int.from_bytes(head[:8], "little")
        if n <= budgets.max_json:
            yield [(8, min(size, 8 + n))]
    elif kind in _HEAD_ONLY:
        return
    elif kind in _SCANNED and size > WHOLE_OBJECT_LIMIT:
        yield [(0, min(size, SCAN_BYTES))]
    elif kind == "pickle" and size > WHOLE_OBJECT_LIMIT:
        yield from _pickle_plan(obj, budgets)
    else:  # a reader that knows nothing of ranges: the whole object, or a sentence
        yield _whole_or_refuse(obj, kind)


def _whole_or_refuse(obj: RemoteObject, kind: str) -> list[tuple[int, int]]:
    if obj.size > WHOLE_OBJECT_LIMIT:
        raise NotACheckpointError(
            f"{obj.url} is a {kind} file of {human(obj.size)}: ckwidget reads this format "
            f"only whole, and reads remote objects whole only up to "
            f"{human(WHOLE_OBJECT_LIMIT)}. Download it once (e.g. fsspec.get) and open the "
            "local copy.")
    return [(0, obj.size)]


def _zip_plan(obj: RemoteObject, budgets: Budgets) -> Iterator[list[tuple[int, int]]]:
    """A zip archive: the end record (in the tail), the central directory, then every
    record the torch readers read whole (all but the storages)."""
    from .torch_export import is_export_archive
    from .zipdir import read_directory

    size = obj.size
    tail_start = max(0, size - TAIL_BYTES)
    tail = obj.pread(tail_start, size - tail_start)
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or at + 22 > len(tail):  # no directory: the reader scans local headers
        if size <= WHOLE_OBJECT_LIMIT:
            yield [(0, size)]
        return
    count, cd_size, cd_offset = struct.unpack_from("<4s4H2LH", tail, at)[4:7]
    eocd = tail_start + at
    if 0xFFFF == count or 0xFFFFFFFF in (cd_size, cd_offset):
        if eocd < 20:
            return
        yield [(eocd - 20, eocd)]
        loc = obj.pread(eocd - 20, 20)
        if loc[:4] != b"PK\x06\x07":
            return
        (end64,) = struct.unpack_from("<Q", loc, 8)
        yield [(end64, end64 + 56)]
        rec = obj.pread(end64, 56) if end64 + 56 <= size else b""
        if rec[:4] != b"PK\x06\x06":
            return
        count, cd_size, cd_offset = struct.unpack_from("<3Q", rec, 32)
    if count > budgets.max_entries or cd_offset + cd_size > size:
        return  # the reader says so without reading further
    yield [(cd_offset, cd_offset + cd_size)]
    directory = read_directory(obj.cache, budgets)  # from the cache: nothing to fetch
    names = directory.names
    if not names:
        return
    prefix = names[0].split("/", 1)[0] if "/" in names[0] else names[0]
    torch_like = (f"{prefix}/data.pkl" in directory.index
                  or is_export_archive(directory, prefix)
                  or any(n.endswith("/data.pkl") for n in names))
    if not torch_like:  # npz, keras, other zips: read by zipfile, which knows no ranges
        yield _whole_or_refuse(obj, "zip (not a torch archive)")
        return
    ranges = []
    total = 0
    storage = f"{prefix}/data/"
    for i, name in enumerate(names):
        if name.startswith(storage) and not name.endswith(".pkl"):
            continue  # tensor bytes: read on demand
        entry = directory.entry_at(i)
        limit = budgets.max_pickle_bytes if name.endswith(".pkl") else budgets.max_json
        if entry.compressed_size > limit or entry.flags & 1:
            continue  # the reader refuses it without reading it
        total += entry.compressed_size
        if total > RECORDS_LIMIT:
            break  # the rest are read when the reader asks
        start = entry.header_offset
        ranges.append((start, start + 30 + len(name.encode()) + LOCAL_EXTRA
                       + entry.compressed_size))
    yield ranges


def _pickle_plan(obj: RemoteObject, budgets: Budgets) -> Iterator[list[tuple[int, int]]]:
    """A large pickle file (torch's legacy format, or a plain pickle): a prefix that grows
    until the pickle machine finishes every pickle the reader runs in it (the magic
    number, protocol, sys_info, the data and the storage keys of a legacy file), within
    the reader's budget. The legacy storage headers after them are checked after the
    reader ran (``_settle_legacy``). The reader reads a larger window, but its pickle
    machine stops at the pickles' STOP, inside the fetched prefix."""
    from .pickle_vm import run_pickle
    from .sniff import LEGACY_MAGIC
    from .torch_common import interpret

    size = obj.size
    limit = min(size, budgets.max_pickle_bytes)
    have = min(size, HEAD_BYTES)
    while True:
        buf = obj.pread(0, have)
        first = run_pickle(buf[:64], budgets)
        legacy = first.complete and type(first.root) is int and first.root == LEGACY_MAGIC
        pos, cut = (first.end, False) if legacy else (0, False)
        for step in range(4 if legacy else 1):
            if legacy and step == 2:
                res = interpret(buf, None, budgets, legacy=True, start=pos).result
            else:
                res = run_pickle(buf, budgets, start=pos)
            if not res.complete:
                # cut off by the end of the prefix, or broken before it (then the reader
                # breaks at the same place, whatever follows)
                cut = (res.error_position or 0) >= len(buf) - 64
                break
            pos = res.end
        if not cut or have >= limit:
            yield [(0, min(size, pos + 8))]  # the first storage header of a legacy file
            return
        have = min(limit, have * 4)
        yield [(0, have)]


def _settle_legacy(obj: RemoteObject, ckpt: Checkpoint,
                   run: Callable[[], Checkpoint]) -> Checkpoint:
    """A legacy file's reader walks the storage headers after the pickles (8 bytes each,
    where the previous storage ends). Every header it read must have been real bytes:
    if some were not yet fetched, fetch the headers the pickle's storage sizes predict
    (all at once), and those the walk read, and read the file again, until the walk read
    only fetched bytes."""
    for _ in range(8):
        readers = {id(r): r for info in ckpt.tensors.values()
                   if hasattr(r := getattr(info.source, "reader", None), "offsets")}
        if not readers:
            return ckpt
        refs = {}
        for info in ckpt.tensors.values():
            ref = getattr(info.source, "storage", None)
            if ref is not None:
                refs[ref.key] = ref
        wanted = []
        for reader in readers.values():
            offsets = list(reader.offsets.items())
            read = [(off - 8, off) for _, (off, _) in offsets]
            if all(obj.holds(s, e) for s, e in read):
                continue
            wanted += read
            pos = offsets[0][1][0] - 8 if offsets else 0
            for key, _ in offsets:
                wanted.append((pos, pos + 8))
                ref = refs.get(key)
                if ref is None:
                    break
                pos += 8 + ref.nbytes
        if not wanted:
            return ckpt
        obj.session.ensure([(obj, s, e) for s, e in wanted])
        ckpt = run()
    raise NotACheckpointError(
        f"{obj.url}'s storages could not be located by range reads; download it once and "
        "open the local copy.")


# -- after the reader ran: guard the tensor reads ------------------------------------------
def _record_range(reader: Any, key: str) -> tuple[RemoteObject, int, int, Any] | None:
    """A zip storage record's guessed range (local header, room for its extra field, and
    the data), for a storage reader of a remote cache file."""
    directory = getattr(reader, "directory", None)
    obj = remote_file(directory.path) if directory is not None else None
    entry = reader.entry(key) if obj is not None else None
    if entry is None:
        return None
    if entry.data_offset is not None:
        return obj, entry.data_offset, entry.data_offset + entry.compressed_size, entry
    start = entry.header_offset
    return (obj, start, start + 30 + len(entry.name.encode()) + LOCAL_EXTRA
            + entry.compressed_size, entry)


def _exact_record(obj: RemoteObject, entry: Any) -> None:
    """After the guessed range arrived: the local header says where the data starts."""
    start = entry.header_offset
    head = obj.pread(start, 30) if obj.holds(start, start + 30) else b""
    if len(head) == 30 and head[:4] == b"PK\x03\x04":
        name_len, extra_len = struct.unpack_from("<2H", head, 26)
        obj.ensure(start, start + 30 + name_len + extra_len + entry.compressed_size)


def _guard_reader(reader: Any, obj: RemoteObject) -> None:
    """A storage reader (zip records, legacy offsets) fetches a storage's range before
    its memory map is read."""
    if getattr(reader, "_remote_guarded", False):
        return
    inner = reader.buffer
    if hasattr(reader, "directory"):
        def buffer(ref: Any) -> Any:
            found = _record_range(reader, ref.key)
            if found is not None:
                robj, s, e, entry = found
                robj.ensure(s, e)
                _exact_record(robj, entry)
            return inner(ref)
    elif hasattr(reader, "offsets"):
        def buffer(ref: Any) -> Any:
            off, count = reader.offsets.get(ref.key, (0, 0))
            obj.ensure(off, off + count)
            return inner(ref)
    else:
        def buffer(ref: Any) -> Any:
            obj.ensure(0, obj.size)
            return inner(ref)
    reader.buffer = buffer
    reader._remote_guarded = True


def _adopt(obj: RemoteObject, ckpt: Checkpoint) -> None:
    readers: dict[int, Any] = {}
    for info in ckpt.tensors.values():
        reader = getattr(info.source, "reader", None)
        if reader is not None:
            readers.setdefault(id(reader), reader)
    for reader in readers.values():
        _guard_reader(reader, obj)
    if not isinstance(ckpt._loader, RemoteLoader):
        ckpt._loader = RemoteLoader(ckpt._loader, ckpt, obj.session, obj)


def tensor_ranges(tensors: dict[str, Any], keys: Iterable[str], default: RemoteObject | None
                  ) -> tuple[list[tuple[RemoteObject, int, int]], list[Any], set[RemoteObject]]:
    """The byte ranges the tensors' sources will read, the zip entries whose exact data
    offset is checked afterwards, and the objects needed whole (sources of unknown
    layout, or tensors only torch.load materialises)."""
    ranges: list[tuple[RemoteObject, int, int]] = []
    entries: list[Any] = []
    whole: set[RemoteObject] = set()
    seen: set[int] = set()
    for key in keys:
        info = tensors.get(key)
        source = getattr(info, "source", None)
        if source is None:
            if default is not None and info is not None and info.nbytes:
                whole.add(default)
            continue
        reader = getattr(source, "reader", None)
        storage = getattr(source, "storage", None)
        file = getattr(source, "file", None)
        if reader is not None and storage is not None:
            if id(storage) in seen:
                continue
            seen.add(id(storage))
            if hasattr(reader, "directory"):
                found = _record_range(reader, storage.key)
                if found is not None:
                    ranges.append(found[:3])
                    entries.append(found)
                continue
            if hasattr(reader, "offsets"):
                robj = remote_file(reader.path)
                off, count = reader.offsets.get(storage.key, (0, 0))
                if robj is not None:
                    ranges.append((robj, off, off + count))
                continue
        elif file is not None and hasattr(source, "nbytes"):
            robj = remote_file(file.path)
            if robj is not None:
                ranges.append((robj, source.offset, source.offset + source.nbytes))
            continue
        elif hasattr(source, "pieces") and hasattr(source, "folder"):
            for _, _, rel, off, length in source.pieces:
                robj = remote_file(source.folder / rel)
                if robj is not None:
                    ranges.append((robj, off, off + length))
            continue
        elif hasattr(source, "tensor"):
            continue  # in memory
        if default is not None:
            whole.add(default)
    return ranges, entries, whole


class RemoteLoader:
    """A remote checkpoint's loader: fetches the ranges of the tensors asked for (one
    wave), says how much, then lets the reader's own loader read them from the cache.
    torch.load would read the whole archive through its own file handle, holes
    included, so it runs only once the object is wholly cached; until then ckwidget's
    storage reader (the same bytes) materialises the tensors."""

    def __init__(self, inner: Any, ckpt: Checkpoint, session: Session,
                 obj: RemoteObject | None) -> None:
        self.inner = inner
        self.ckpt = ckpt
        self.session = session
        self.obj = obj
        self.torch_accepts = getattr(inner, "torch_accepts", None)

    @property
    def stamp(self) -> Any:
        return getattr(self.inner, "stamp", None)

    def __call__(self, full_keys: list[str], map_location: Any) -> Any:
        from ..checkpoint import load_from_sources

        prefetch(self.session, self.ckpt.tensors, full_keys, self.obj)
        if self.inner is None:  # the checkpoint reads through its tensors' sources
            return load_from_sources(self.ckpt.tensors, full_keys, map_location)
        if self.torch_accepts is not None:
            whole = self.obj is not None and self.obj.holds(0, self.obj.size)
            self.inner.torch_accepts = bool(self.torch_accepts and whole)
        return self.inner(full_keys, map_location)


def prefetch(session: Session, tensors: dict[str, Any], keys: list[str],
             default: RemoteObject | None) -> int:
    """Fetch what these tensors' reads need, in one wave; returns the bytes fetched and
    says how much in ``io_stats.notes`` and the log when it is anything."""
    ranges, entries, whole = tensor_ranges(tensors, keys, default)
    ranges += [(obj, 0, obj.size) for obj in whole]
    missing = _missing(ranges)
    _say_download(session, ranges, missing, len(keys))
    session.ensure(ranges)
    for obj, _, _, entry in entries:
        _exact_record(obj, entry)
    return missing


def _missing(ranges: list[tuple[RemoteObject, int, int]]) -> int:
    """Bytes of these ranges the cache does not hold."""
    return sum(e - s for obj, s0, e0 in ranges
               for s, e in obj.filled.missing(max(0, s0), min(obj.size, e0)))


def _say_download(session: Session, ranges: list[tuple[RemoteObject, int, int]],
                  missing: int, count: int) -> None:
    """How much reading ``count`` tensors downloads, in ``io_stats.notes`` and the log."""
    if not missing:
        return
    objects = sorted({obj.url for obj, _, _ in ranges})
    where = objects[0] if len(objects) == 1 else f"{len(objects)} files of {session.url}"
    note = (f"Downloading {human(missing)} for {count} tensor(s) of {where} into the "
            "local cache.")
    log.info(note)
    session.stats.notes.append(note)


def _sample_blocks(numel: int, cap: int) -> list[tuple[int, int]]:
    """The runs of elements ``read_samples`` reads of a tensor of ``numel`` elements for
    at most ``cap`` values: all of them when they fit, else ``SAMPLE_BLOCKS`` evenly
    spread runs, as [first, end) element indexes."""
    if numel <= cap:
        return [(0, numel)]
    blocks = max(1, min(SAMPLE_BLOCKS, cap))
    per = max(1, cap // blocks)
    span = numel - per
    firsts = sorted({round(i * span / max(1, blocks - 1)) for i in range(blocks)})
    return [(f, f + per) for f in firsts]


# -- the checkpoint -------------------------------------------------------------------------
class RemotePath(type(Path())):  # type: ignore[misc]
    """``Checkpoint.path`` of a remote checkpoint: prints as its URL, and names no local
    file (the cache file holds holes; nothing may read it but the guarded readers)."""

    url = ""

    def __str__(self) -> str:
        return self.url or super().__str__()

    def __fspath__(self) -> str:
        return str(self)


def _remote_path(url: str) -> RemotePath:
    p = RemotePath(url)
    p.url = url
    return p


class RemoteCheckpoint(Checkpoint):
    """A Checkpoint read from a URL: ``url``, ``io_stats`` and the remote reads.

    ``read`` (one tensor, what plots and value checks use) downloads at most
    ``read_budget`` bytes in all, then refuses with a sentence saying how to go on;
    ``read_samples`` reads only evenly spread blocks of big tensors, all tensors in one
    wave; ``fetch`` fetches tensors ahead; ``state_dict`` (Apply, save) fetches what it
    needs in one wave and says how much; ``verify`` streams every byte; ``refresh`` asks
    whether the objects changed; ``close`` removes the cache."""

    session: Session
    url: str
    read_budget: int = READ_BUDGET
    _read_spent: int = 0

    @property
    def io_stats(self) -> IOStats:
        return self.session.stats

    @property
    def cache_path(self) -> Path:
        return self._cache_path

    def _object(self) -> RemoteObject | None:
        objects = list(self.session.objects.values())
        return objects[0] if len(objects) == 1 else None

    def _missing(self, keys: list[str]) -> int:
        ranges, _, whole = tensor_ranges(self.tensors, keys, self._object())
        return _missing(ranges + [(obj, 0, obj.size) for obj in whole])

    def fetch(self, keys: Iterable[str] | None = None) -> int:
        """Fetch these tensors' bytes (all of them by default) into the cache, in one
        wave; returns the bytes fetched."""
        wanted = list(self.tensors if keys is None else keys)
        return prefetch(self.session, self.tensors, wanted, self._object())

    def read(self, key: str, map_location: Any = "cpu") -> Any:
        if key in self.tensors:
            missing = self._missing([key])
            left = self.read_budget - self._read_spent
            if missing > left:
                raise CheckpointError(
                    f"Reading {key!r} would download {human(missing)} from {self.url}; "
                    f"single-tensor reads of a remote checkpoint download at most "
                    f"{human(self.read_budget)} in all ({human(max(0, left))} left). Call "
                    f"ckpt.fetch([{key!r}]) first, or raise ckpt.read_budget.")
            self._read_spent += missing
            self.fetch([key])
        return super().read(key, map_location)

    def read_sample(self, key: str, max_elements: int = 2048) -> np.ndarray:
        """``read_samples`` of one tensor."""
        return self.read_samples({key: max_elements})[key]

    def read_samples(self, wanted: dict[str, int]) -> dict[str, np.ndarray]:
        """At most ``wanted[key]`` values of each tensor, as float64 (complex: their
        magnitudes), without reading the rest: a big tensor whose elements lie in order
        in the file gives ``SAMPLE_BLOCKS`` evenly spread runs of elements; a small one
        is read whole (its values, then sampled like ``stats.sample_tensor``). Every
        range of every tensor is fetched in one wave: a zip record's blocks come with its
        local header (which says where its data starts), each widened by the room the
        header's extra field may take; tensors read otherwise (through ``read``, within
        ``read_budget``) come in the same wave."""
        import numpy as np
        import torch

        from ..stats import sample_tensor

        runs = {key: _byte_run(self.tensors[key]) for key in wanted}
        wave: list[tuple[RemoteObject, int, int]] = []
        plans: dict[str, list[tuple[RemoteObject, int, int]]] = {}
        pending = []  # zip records whose local header is not cached yet

        def plan(key: str, run: tuple[Any, ...], start: int, slack: int = 0
                 ) -> list[tuple[RemoteObject, int, int]]:
            obj, itemsize = run[0], run[2]
            return [(obj, start + a * itemsize, start + b * itemsize + slack)
                    for a, b in _sample_blocks(self.tensors[key].numel, max(1, wanted[key]))]

        for key, run in runs.items():
            if run is None:
                continue
            head = run[3]
            if head is not None and not head[0].holds(head[1], head[2]):
                obj, start, end, entry = head
                lowest = start + 30 + len(entry.name.encode()) + run[4] * run[2]
                wave += [(obj, start, end), *plan(key, run, lowest, LOCAL_EXTRA)]
                pending.append(key)
                continue
            start = _run_start(run)
            if start is not None:
                plans[key] = plan(key, run, start)
                wave += plans[key]
        other = [key for key in wanted if runs[key] is None]
        entries = []
        if other:  # what ``read`` would fetch for them, one by one, fetched now
            ranges, entries, whole = tensor_ranges(self.tensors, other, self._object())
            ranges += [(obj, 0, obj.size) for obj in whole]
            missing = _missing(ranges)
            if missing <= self.read_budget - self._read_spent:
                self._read_spent += missing
                _say_download(self.session, ranges, missing, len(other))
                wave += ranges
            else:
                entries = []
        self.session.ensure(wave)
        for obj, _, _, entry in entries:
            _exact_record(obj, entry)
        for key in pending:  # where the data starts, now that the header is here
            start = _run_start(runs[key])
            if start is not None:
                plans[key] = plan(key, runs[key], start)
        # held already, unless an extra field took more than LOCAL_EXTRA bytes
        self.session.ensure([r for key in pending for r in plans.get(key, ())])
        out: dict[str, np.ndarray] = {}
        for key, cap in wanted.items():
            ranges = plans.get(key)
            if ranges is None:
                out[key] = sample_tensor(self.read(key), cap)
                continue
            raw = b"".join(obj.pread(s, e - s) for obj, s, e in ranges)
            values = torch.frombuffer(bytearray(raw), dtype=getattr(torch, self.tensors[key]
                                                                   .dtype)) if raw else None
            if values is None:
                out[key] = np.empty(0, np.float64)
                continue
            if self.tensors[key].numel <= cap:
                out[key] = sample_tensor(values, cap)
                continue
            if values.is_complex():
                values = values.abs()
            out[key] = np.ascontiguousarray(values.to(torch.float64).numpy())
        return out

    def refresh(self) -> None:
        """Ask every remote object now whether it changed since it was opened; raise
        CheckpointChangedError if one did."""
        objects = list(self.session.objects.values())
        self.session.parallel(RemoteObject.check, objects)
        for obj in objects:
            if obj.changed is not None:
                raise changed_error(obj.name, obj.changed)

    def verify(self, progress: Callable[[int, int], Any] | None = None) -> list[Finding]:
        """``Checkpoint.verify`` for remote objects: every byte streamed once (fetched
        ahead in parallel, not kept), zip records' CRC-32 checked as they pass."""
        from .verify import VERIFIED_FORMATS, _Counter, _files, _record_findings, _Zip
        from .zipdir import verify_records

        if self.format not in VERIFIED_FORMATS:
            self.verified = []
            return []
        self.refresh()
        files = _files(self)
        report = _Counter(sum(f.total() for f in files), progress)
        findings: list[Finding] = []
        failures = []
        for f in files:
            if isinstance(f, _Zip):
                got = verify_records(f.directory, max_ratio=DEFAULT_BUDGETS.max_ratio,
                                     on_bytes=report.add)
                failures += [(f, x) for x in got]
                continue
            obj = remote_file(f.stamp.path)
            if obj is None:  # pragma: no cover - every file of a remote checkpoint is one
                continue
            with obj.open(stream=True) as fh:
                while fh.tell() < obj.size:
                    n = len(fh.read(PIECE))
                    if not n:
                        break
                    report.add(n)
        self.refresh()
        report.finish()
        self.verified = findings + _record_findings(failures)
        return list(self.verified)

    def close(self) -> None:
        """Remove the cache (tensors already materialised keep their values)."""
        self.session.close()

    def __repr__(self) -> str:
        return (f"<Checkpoint {self.format} {self.url}: {len(self.tensors)} tensors, "
                f"{len(self.findings)} findings>")


def _byte_run(info: Any) -> tuple[Any, ...] | None:
    """Where a tensor's elements lie, when they lie in order, little-endian, in one
    remote file: (object, byte offset or zip entry, item size, the zip local header's
    range to fetch first or None, first element); None otherwise."""
    from ..checkpoint import DTYPE_SIZES

    source = info.source
    itemsize = DTYPE_SIZES.get(info.dtype)
    if (source is None or not itemsize or info.layout != "strided"
            or info.dtype.startswith(("float4", "quint", "qint", "bits", "complex32"))):
        return None
    file = getattr(source, "file", None)
    if file is not None and hasattr(source, "offset") and hasattr(source, "nbytes"):
        obj = remote_file(file.path)
        return (obj, source.offset, itemsize, None, 0) if obj is not None else None
    reader, storage = getattr(source, "reader", None), getattr(source, "storage", None)
    if reader is None or storage is None or not getattr(reader, "little_endian", False):
        return None
    count = 1
    for n, step in zip(reversed(source.size), reversed(source.stride)):
        if n != 1 and step != count:
            return None
        count *= n
    if hasattr(reader, "directory"):
        found = _record_range(reader, storage.key)
        if found is None or found[3].method != 0:
            return None
        obj, _, _, entry = found
        head = (obj, entry.header_offset,
                entry.header_offset + 30 + len(entry.name.encode()) + LOCAL_EXTRA)
        return obj, entry, itemsize, (*head, entry), source.offset
    if hasattr(reader, "offsets"):
        obj = remote_file(reader.path)
        off, _ = reader.offsets.get(storage.key, (None, 0))
        if obj is None or off is None:
            return None
        return obj, off, itemsize, None, source.offset
    return None


def _run_start(run: tuple[Any, ...]) -> int | None:
    """The byte offset of a tensor's first element (a zip record's local header, fetched
    by now, says where its data starts)."""
    obj, base, itemsize, _, first = run
    if isinstance(base, int):
        return base + first * itemsize
    entry = base
    head = obj.pread(entry.header_offset, 30)
    if len(head) < 30 or head[:4] != b"PK\x03\x04":
        return None
    name_len, extra_len = struct.unpack_from("<2H", head, 26)
    return entry.header_offset + 30 + name_len + extra_len + first * itemsize


# -- opening ---------------------------------------------------------------------------------
def _filesystem(url: str, options: dict[str, Any]) -> tuple[Any, str]:
    try:
        import fsspec
    except ImportError:
        raise NotACheckpointError(
            f"Opening {url!r} needs fsspec, which is not installed: {EXTRA}.") from None
    try:
        return fsspec.core.url_to_fs(url, **_pooled(url, options))
    except ImportError as exc:
        raise NotACheckpointError(
            f"Opening {url!r} needs a package that is not installed ({exc}): {EXTRA}."
        ) from None
    except ValueError as exc:
        raise NotACheckpointError(f"ckwidget cannot open {url!r}: {exc}") from None


def _pooled(url: str, options: dict[str, Any]) -> dict[str, Any]:
    """s3fs keeps 10 connections by default (botocore's), so a wave of 100 ranges would
    wait for 10 answers at a time: ask for ``CONNECTIONS`` unless the caller chose."""
    if url.split("://", 1)[0] not in ("s3", "s3a"):
        return options
    config = dict(options.get("config_kwargs") or {})
    config.setdefault("max_pool_connections", CONNECTIONS)
    return {**options, "config_kwargs": config}


def _child_url(url: str, rel: str) -> str:
    return url.rstrip("/") + "/" + rel


def _locate(session: Session, rpath: str, url: str, budgets: Budgets
            ) -> tuple[dict[str, Any] | None, dict[str, dict[str, Any]]]:
    """(info of the file, {}) for a file; (None, {relative path: info}) for a folder,
    its files one level of sub-folders deep."""
    fs = session.fs
    if session.http:
        if not url.endswith("/"):
            return session.call(session.info, rpath), {}
        return None, _http_folder(session, rpath, budgets)
    listing = session.call(fs.ls, rpath, True)
    if not isinstance(listing, list):
        listing = list(listing)
    base = rpath.rstrip("/")
    if (len(listing) == 1 and listing[0].get("type") == "file"
            and listing[0]["name"].rstrip("/") == base):
        return listing[0], {}
    if not listing:
        info = session.call(session.info, rpath)
        if info.get("type") == "file":
            return info, {}
    return None, _folder(session, base, listing, budgets)


def _relative(base: str, name: str) -> str:
    name = name.rstrip("/")
    return name[len(base) + 1:] if name.startswith(base + "/") else PurePosixPath(name).name


def _folder(session: Session, base: str, listing: list[dict[str, Any]], budgets: Budgets
            ) -> dict[str, dict[str, Any]]:
    files: dict[str, dict[str, Any]] = {}
    subdirs = []
    for entry in listing:
        rel = _relative(base, entry["name"])
        if not rel or "/" in rel:
            continue
        if entry.get("type") == "directory":
            subdirs.append(rel)
        else:
            files[rel] = entry
    _budget(files, subdirs, budgets)
    if subdirs and not _plain_folder(set(files)):  # DeepSpeed steps, or weights deeper
        listed = session.parallel(lambda d: session.fs.ls(f"{base}/{d}", detail=True),
                                  subdirs[:200])
        for sub, entries in zip(subdirs, listed):
            if isinstance(entries, BaseException):
                continue
            for entry in entries:
                rel = _relative(base, entry["name"])
                if rel.count("/") == 1 and entry.get("type") != "directory":
                    files[rel] = entry
            files.setdefault(sub + "/", {"type": "directory"})
    for sub in subdirs:
        files.setdefault(sub + "/", {"type": "directory"})
    _budget(files, [], budgets)
    return files


def _http_folder(session: Session, url: str, budgets: Budgets) -> dict[str, dict[str, Any]]:
    """An HTTP folder: the links of its index page, and each file's size (HEAD, all at
    once)."""
    base = url.rstrip("/")
    listing = session.call(session.fs.ls, url, True)
    names = []
    subdirs = []
    for entry in listing:
        rel = _relative(base, entry["name"])
        if not rel or "/" in rel or rel in (".", ".."):
            continue
        if entry["name"].endswith("/"):
            subdirs.append(rel)
        else:
            names.append(rel)
    _budget(dict.fromkeys(names), subdirs, budgets)
    if subdirs and not _plain_folder(set(names)):  # DeepSpeed steps, or weights deeper
        listed = session.parallel(lambda d: session.fs.ls(f"{base}/{d}/", detail=True),
                                  subdirs[:200])
        for entries in listed:
            if isinstance(entries, BaseException):
                continue
            for entry in entries:
                rel = _relative(base, entry["name"])
                if rel.count("/") == 1 and not entry["name"].endswith("/"):
                    names.append(rel)
        _budget(dict.fromkeys(names), subdirs, budgets)
    infos = session.parallel(lambda rel: session.info(f"{base}/{rel}"), names)
    files: dict[str, dict[str, Any]] = {}
    for rel, info in zip(names, infos):
        if isinstance(info, BaseException):
            raise session.failure(info, f"{base}/{rel}")
        files[rel] = info
    for sub in subdirs:
        files[sub + "/"] = {"type": "directory"}
    return files


def _plain_folder(names: set[str]) -> bool:
    """A folder whose checkpoint is at its top level (Hugging Face, DCP): its sub-folders
    need not be listed."""
    from .folders import INDEX_FILES, WEIGHT_FILES

    return bool(names & set(INDEX_FILES) or names & set(WEIGHT_FILES) or ".metadata" in names
                or any(n.endswith(".index.json") for n in names))


def _budget(files: dict[str, Any], subdirs: list[str], budgets: Budgets) -> None:
    if len(files) + len(subdirs) > budgets.max_files:
        raise NotACheckpointError(
            f"The folder holds more than {budgets.max_files:,} entries; open the weights "
            "file or the checkpoint folder inside it directly.")


def _folder_plans(session: Session, objects: dict[str, RemoteObject], budgets: Budgets
                  ) -> list[tuple[RemoteObject, Iterator[list[tuple[int, int]]]]]:
    """What read_folder will read, fetched ahead: the small files (index, configs,
    ``latest``, DCP ``.metadata``) whole, and the weight files it will open."""
    from .folders import WEIGHT_FILES, WEIGHT_SUFFIXES

    top = {rel: obj for rel, obj in objects.items() if "/" not in rel}

    def whole(obj: RemoteObject) -> Iterator[list[tuple[int, int]]]:
        yield [(0, obj.size)]

    plans = [(obj, whole(obj)) for rel, obj in top.items()
             if (rel.endswith(".json") or rel in ("latest", ".metadata"))
             and obj.size <= (budgets.max_pickle_bytes if rel == ".metadata" else SMALL_FILE)]
    names = set(top)
    if any(n.endswith(".safetensors.index.json") for n in names):
        weights = [n for n in names if n.endswith(".safetensors")]
    elif any(n.endswith(".bin.index.json") for n in names):
        weights = [n for n in names if n.endswith(".bin")]
    elif ".metadata" in names:
        weights = []
    else:
        single = next((n for n in WEIGHT_FILES if n in names), None)
        weights = [single] if single else [n for n in names if n.endswith(WEIGHT_SUFFIXES)]
        if len(weights) > 1:
            weights = []
    plans += [(top[n], _file_plan(top[n], budgets)) for n in sorted(weights)]
    return plans


def open_remote(url: str, storage_options: dict[str, Any] | None = None, *,
                budgets: Budgets = DEFAULT_BUDGETS) -> RemoteCheckpoint:
    """Open a checkpoint file or folder at ``url`` by range reads (see the module)."""
    from . import open_checkpoint

    options = dict(storage_options or {})
    fs, rpath = _filesystem(url, options)
    root = Path(tempfile.mkdtemp(prefix="ckwidget-remote-"))
    session = Session(fs, url, options, root)
    try:
        info, listing = _locate(session, rpath, url, budgets)
        name = PurePosixPath(rpath.rstrip("/")).name or "checkpoint"
        local = root / name
        if info is not None:
            if info.get("type") == "directory":
                raise NotACheckpointError(f"There is no file at {url!r}: it is a folder; "
                                          "end the URL with '/'.")
            session.add(rpath, info, local, url)
        else:
            local.mkdir()
            objects = {}
            for rel, entry in listing.items():
                if rel.endswith("/"):
                    (local / rel).mkdir(parents=True, exist_ok=True)
                    continue
                rp = entry.get("name") or f"{rpath.rstrip('/')}/{rel}"
                if session.http:
                    rp = _child_url(url, rel)
                objects[rel] = session.add(rp, entry, local / rel, _child_url(url, rel))
            session.run_plans(_folder_plans(session, objects, budgets))
        ckpt = open_checkpoint(local, budgets=budgets)
    except BaseException:
        session.close()
        raise
    return _finish(ckpt, session, url, options, local)


def _finish(ckpt: Checkpoint, session: Session, url: str, options: dict[str, Any],
            local: Path) -> RemoteCheckpoint:
    ckpt.__class__ = RemoteCheckpoint
    assert isinstance(ckpt, RemoteCheckpoint)
    ckpt.session = session
    ckpt.url = url
    ckpt._cache_path = local
    ckpt.path = _remote_path(url.rstrip("/") if local.is_dir() else url)
    single = next(iter(session.objects.values())) if len(session.objects) == 1 else None
    if not isinstance(ckpt._loader, RemoteLoader):
        ckpt._loader = RemoteLoader(ckpt._loader, ckpt, session, single)
    # quoted paths of the cache folder name the URL instead
    where, shown = str(local), url.rstrip("/")
    for f in ckpt.findings:
        if where in f.message:
            f.message = f.message.replace(where, shown)
    for key, value in list(ckpt.metadata.items()):
        if isinstance(value, str) and where in value:
            ckpt.metadata[key] = value.replace(where, shown)
    ckpt.metadata["url"] = url
    ckpt.metadata["storage_options_keys"] = sorted(options)  # never the values (secrets)
    session.opened = True
    weakref.finalize(ckpt, session.close)
    return ckpt


__all__ = ["IOStats", "RemoteCheckpoint", "RemoteObject", "Session", "open_remote"]
