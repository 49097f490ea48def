"""``Checkpoint.verify``: read every byte of a checkpoint once and say what does not match.

Opening reads no tensor bytes, and torch.load never checks a zip record's CRC-32: a file
whose last storage was zero-filled by a crashed copy (same size) loads silently with
wrong weights. Verification streams the bytes in bounded chunks (no map, no whole-file
read):

- torch zip archives (torch-zip, torchscript): the CRC-32 of every record against the
  central directory; a mismatch names the record and the tensors stored in it;
- safetensors files: every byte is read back (the header's ranges were checked at
  open), and the file must still be the one opened (its stamp, before and after);
- Hugging Face sharded folders: each shard as above;
- other formats: nothing is read and nothing is found.

A file that changed since it was opened raises :class:`CheckpointChangedError` (its
index no longer describes it), as every other read does. Results depend on the bytes
alone, never on time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ..checkpoint import Checkpoint, Finding
from ..errors import CheckpointChangedError
from .budgets import DEFAULT_BUDGETS
from .filestamp import FileStamp
from .zipdir import VERIFY_CHUNK, RecordFailure, ZipDirectory, read_directory, verified_bytes
from .zipdir import verify_records as _verify_records

Progress = Callable[[int, int], Any]

ZIP_FORMATS = ("torch-zip", "torchscript")
VERIFIED_FORMATS = (*ZIP_FORMATS, "safetensors", "hf-sharded")
MAX_RECORD_FINDINGS = 20  # one finding per damaged record up to this; then one for the rest
_KEYS_SHOWN = 4

REDOWNLOAD = ("Download or copy the file again from its source (compare its checksum), "
              "or use another checkpoint.")


class _Zip:
    """A torch zip archive to verify: its directory as indexed, the tensors per record."""

    def __init__(self, directory: ZipDirectory, label: str | None) -> None:
        self.directory = directory
        self.label = label  # the shard's file name in a sharded folder, else None
        self.tensors: dict[str, list[str]] = {}  # record name -> tensor keys stored in it

    @property
    def stamp(self) -> FileStamp | None:
        return self.directory.stamp

    def total(self) -> int:
        return verified_bytes(self.directory)


class _Plain:
    """A file whose bytes are read back whole (safetensors): no checksum to compare."""

    def __init__(self, stamp: FileStamp, label: str | None) -> None:
        self.stamp = stamp
        self.label = label

    def total(self) -> int:
        return self.stamp.size


def verify(ckpt: Checkpoint, progress: Progress | None = None) -> list[Finding]:
    """What ``Checkpoint.verify`` returns (see the module's docstring)."""
    if ckpt.format not in VERIFIED_FORMATS or ckpt.path is None:
        return []
    files = _files(ckpt)
    if not files:
        return []
    for f in files:
        _check_stamp(f.stamp)
    totals = [f.total() for f in files]
    report = _Counter(sum(totals), progress)
    findings: list[Finding] = []
    failures: list[tuple[_Zip, RecordFailure]] = []
    for f in files:
        if isinstance(f, _Zip):
            got = _verify_records(f.directory, max_ratio=DEFAULT_BUDGETS.max_ratio,
                                  on_bytes=report.add)
            failures += [(f, x) for x in got]
        else:
            problem = _read_back(f.stamp, report.add)
            if problem:
                findings.append(_unreadable_finding(f, problem))
        _check_stamp(f.stamp)  # changed while it was read: the bytes read mean nothing
    report.finish()
    return findings + _record_findings(failures)


def unreported(found: Iterable[Finding], reported: Iterable[Finding]) -> list[Finding]:
    """The findings of ``found`` that no finding of ``reported`` already gives (the reader
    checks small records such as data.pkl at open, with the same details)."""
    seen = set()
    for g in reported:
        record = g.details.get("record")
        if record is not None:
            seen.add((g.kind, record, bool(g.details.get("crc")), _shard_of(g)))
    return [f for f in found if (f.kind, f.details.get("record"), bool(f.details.get("crc")),
                                 f.details.get("shard")) not in seen]


def _shard_of(f: Finding) -> str | None:
    """The shard a sharded folder's finding is about ("Shard NAME: ..." messages)."""
    if f.message.startswith("Shard ") and ": " in f.message:
        return f.message[6:f.message.index(": ")]
    return None


# -- what to read -----------------------------------------------------------------------------
def _files(ckpt: Checkpoint) -> list[_Zip | _Plain]:
    """The files of the checkpoint as they were indexed, found through the tensors' own
    sources (which hold the directory or map and stamp of their file), in a stable order."""
    zips: dict[int, _Zip] = {}
    plains: dict[int, _Plain] = {}
    sharded = ckpt.format == "hf-sharded"
    for key, info in ckpt.tensors.items():
        source = info.source
        reader = getattr(source, "reader", None)
        directory = getattr(reader, "directory", None)
        if isinstance(directory, ZipDirectory):
            z = zips.get(id(directory))
            if z is None:
                label = _label(ckpt, directory.path) if sharded else None
                z = zips[id(directory)] = _Zip(directory, label)
            storage = getattr(source, "storage", None)
            if storage is not None:
                record = f"{reader.prefix}/data/{storage.key}"
                z.tensors.setdefault(record, []).append(key)
            continue
        mapped = getattr(source, "file", None)
        stamp = getattr(mapped, "stamp", None)
        if isinstance(stamp, FileStamp) and id(mapped) not in plains:
            plains[id(mapped)] = _Plain(stamp, _label(ckpt, stamp.path) if sharded else None)
    files: list[_Zip | _Plain] = [*zips.values(), *plains.values()]
    if not files and ckpt.path.is_file():  # no readable tensor: the file as it is now
        files = _fallback(ckpt)
    return sorted(files, key=lambda f: str(f.stamp.path if f.stamp else ""))


def _label(ckpt: Checkpoint, path: Path) -> str:
    """A shard's name as the folder's findings give it (its path inside the folder)."""
    try:
        return path.relative_to(ckpt.path).as_posix() if ckpt.path else path.name
    except ValueError:
        return path.name


def _fallback(ckpt: Checkpoint) -> list[_Zip | _Plain]:
    """A checkpoint none of whose tensors can be read (an empty state dict, a damaged
    index): its file as it is now, which must still have the size it had at open."""
    path = ckpt.path
    assert path is not None
    opened = getattr(ckpt._loader, "stamp", None)  # a torch archive's loader keeps it
    if isinstance(opened, FileStamp):
        opened.verify()
    stamp = FileStamp.of(path)
    if stamp.size != ckpt.size:
        raise CheckpointChangedError(
            f"{path.name} changed on disk since it was opened (its size went from "
            f"{ckpt.size:,} to {stamp.size:,} bytes), so its index no longer describes it; "
            "open it again to read it as it is now.")
    if ckpt.format in ZIP_FORMATS:
        return [_Zip(read_directory(path, DEFAULT_BUDGETS), None)]
    if ckpt.format == "safetensors":
        return [_Plain(stamp, None)]
    return []


def _check_stamp(stamp: FileStamp | None) -> None:
    if stamp is not None:
        stamp.verify()


class _Counter:
    """Feeds ``progress(done, total)``: strictly increasing counts, the last one the total."""

    def __init__(self, total: int, progress: Progress | None) -> None:
        self.total = total
        self.done = 0
        self.told = -1
        self.progress = progress
        self._tell()

    def add(self, n: int) -> None:
        self.done = min(self.total, self.done + n)
        self._tell()

    def finish(self) -> None:
        self.done = self.total
        self._tell()

    def _tell(self) -> None:
        if self.progress is not None and self.done > self.told:
            self.told = self.done
            self.progress(self.done, self.total)


def _read_back(stamp: FileStamp, on_bytes: Callable[[int], Any],
               chunk: int = VERIFY_CHUNK) -> str | None:
    """Read every byte of the file once; what went wrong, in a clause, or None."""
    buf = bytearray(max(1, min(chunk, stamp.size)))
    view = memoryview(buf)
    done = 0
    try:
        with open(stamp.path, "rb", buffering=0) as fh:
            while done < stamp.size:
                n = fh.readinto(view[:min(len(buf), stamp.size - done)])
                if not n:
                    break
                done += n
                on_bytes(n)
    except OSError as exc:
        on_bytes(stamp.size - done)
        return f"reading it failed at byte {done:,} ({exc.strerror or exc})"
    if done < stamp.size:
        on_bytes(stamp.size - done)
        return f"it ends after {done:,} of its {stamp.size:,} bytes"
    return None


# -- findings ---------------------------------------------------------------------------------
def _unreadable_finding(f: _Plain, problem: str) -> Finding:
    name = f.stamp.path.name
    return Finding(
        "corrupt", "error",
        f"{name} cannot be read back whole: {problem}. The disk or the copy is damaged; "
        f"{REDOWNLOAD}",
        details={"record": name, "verified": True, **({"shard": f.label} if f.label else {})},
    )


def _record_findings(failures: list[tuple[_Zip, RecordFailure]]) -> list[Finding]:
    out = [_record_finding(z, x) for z, x in failures[:MAX_RECORD_FINDINGS]]
    rest = failures[MAX_RECORD_FINDINGS:]
    if rest:
        keys = [k for z, x in rest for k in z.tensors.get(x.name, ())]
        crc = any(x.is_crc for _, x in rest)
        names = [_where(z, x.name) for z, x in rest]
        out.append(Finding(
            "corrupt", "error",
            f"{len(rest)} more records fail verification ({', '.join(names[:3])}"
            f"{', ...' if len(names) > 3 else ''}), holding {len(keys)} more tensors"
            f"{_keys_text(keys)}: their bytes changed after saving. torch does not check "
            f"CRCs, so it loads the damaged bytes without a word. {REDOWNLOAD}",
            keys=keys[:1000],
            details={"crc": crc, "record": rest[0][1].name, "records": names[:1000],
                     "verified": True},
        ))
    return out


def _record_finding(z: _Zip, x: RecordFailure) -> Finding:
    keys = z.tensors.get(x.name, [])
    where = _where(z, x.name)
    if keys:
        holds = (f"It stores the tensor {keys[0]}, whose values are not what was saved. "
                 if len(keys) == 1 else f"It stores {len(keys)} tensors{_keys_text(keys)}, "
                 "whose values are not what was saved. ")
    elif x.name.endswith("/data.pkl"):
        holds = "It is the pickle that names every tensor. "
    else:
        holds = ""
    if x.is_crc:
        what = (f"Record {where} {x.reason}: its bytes changed after saving (a damaged "
                f"copy, download or disk). {holds}torch does not check CRCs, so it loads "
                "the damaged bytes without a word.")
    else:
        what = f"Record {where} {x.reason}. {holds}".rstrip()
    details: dict[str, Any] = {"crc": x.is_crc, "record": x.name, "verified": True}
    if x.is_crc:
        details.update(expected_crc=f"{x.crc:08x}", actual_crc=f"{x.actual:08x}")
    if keys:
        details["tensors"] = keys[:1000]
    if z.label:
        details["shard"] = z.label
    return Finding("corrupt", "error", f"{what} {REDOWNLOAD}", keys=keys[:1000],
                   details=details)


def _where(z: _Zip, name: str) -> str:
    return f"{name!r} of {z.label}" if z.label else repr(name)


def _keys_text(keys: list[str]) -> str:
    if not keys:
        return ""
    shown = ", ".join(keys[:_KEYS_SHOWN])
    more = f" and {len(keys) - _KEYS_SHOWN} more" if len(keys) > _KEYS_SHOWN else ""
    return f" ({shown}{more})"
