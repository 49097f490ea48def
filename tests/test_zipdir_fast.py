"""The fast paths of the zip side of an open agree with the record-by-record reference.

``zipdir._parse_bulk`` (numpy over the whole central directory) must read exactly what
``zipdir._parse_walk`` reads, or give up; ``_finish``'s one-string pre-checks, the C-level
checks in ``torch_zip`` and ``flatten``'s per-container shortcut must change nothing a
reader reports. Each is compared with the reference on real torch.save files and on
archives built to break it: signature bytes inside names, length fields that lie, extra
fields, comments, zip64 records, a directory cut short, duplicated names, odd names, and
thousands of random byte flips.
"""

from __future__ import annotations

import io
import random
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Any

import pytest
import torch

from ckwidget.checkpoint import TensorInfo
from ckwidget.errors import BudgetExceededError, CheckpointError
from ckwidget.readers import open_checkpoint, torch_zip, tree, zipdir
from ckwidget.readers.budgets import Budgets

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")

BIG = 10**12  # a _FAST_MIN no archive reaches: the walk only


# --------------------------------------------------------------------------- helpers


@pytest.fixture
def bulk_always(monkeypatch: pytest.MonkeyPatch) -> None:
    """Use the bulk parser for every archive, however small."""
    monkeypatch.setattr(zipdir, "_FAST_MIN", 1)


def reference_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    """Switch every fast path off: the record-by-record reference."""
    monkeypatch.setattr(zipdir, "_FAST_MIN", BIG)
    monkeypatch.setattr(torch_zip, "_storages_sound", lambda *a: False)
    monkeypatch.setattr(torch_zip, "_all_start_with", lambda *a: False)
    monkeypatch.setattr(torch_zip, "_only_pickle", lambda *a: False)
    monkeypatch.setattr(tree, "_all_tensors", lambda *a: None)
    monkeypatch.setattr(tree, "_LEAVES", frozenset())


def central_and_count(data: bytes) -> tuple[bytes, int]:
    """The bytes read_directory hands the parsers, and the record count."""
    at = data.rfind(b"PK\x05\x06")
    _, _, _, _, count, cd_size, cd_offset, _ = struct.unpack_from("<4s4H2LH", data, at)
    if count == 0xFFFF or cd_size == 0xFFFFFFFF or cd_offset == 0xFFFFFFFF:
        (eocd64,) = struct.unpack_from("<Q", data, at - 20 + 8)
        count, cd_size, cd_offset = struct.unpack_from("<3Q", data, eocd64 + 32)
    return data[cd_offset:cd_offset + cd_size], count


def same_parse(central: bytes, count: int) -> bool:
    """Assert the bulk parser reads what the walk reads; False when it gave up."""
    problems: list[str] = []
    names, columns = zipdir._parse_walk(central, count, problems)
    got = zipdir._parse_bulk(central, count)
    if got is None:
        return False
    bulk_names, bulk_columns, text = got
    assert problems == [] and len(names) == count  # it only accepts clean directories
    assert bulk_names == names
    assert all(type(n) is str for n in bulk_names)
    assert [[int(v) for v in c] for c in bulk_columns] == [list(c) for c in columns]
    assert text == "\n".join(names)
    return True


def directory_facts(path: Path, budgets: Budgets | None = None) -> Any:
    """Everything a ZipDirectory tells its users, or the error reading it raised."""
    try:
        d = zipdir.read_directory(path, budgets or Budgets())
    except CheckpointError as exc:
        return type(exc).__name__, str(exc)
    entries = [(e.name, e.method, e.flags, e.crc, e.compressed_size, e.size,
                e.header_offset, e.data_offset) for e in d.entries]
    by_name = {k: v.header_offset for k, v in d.by_name.items()}
    return (d.file_size, d.names, entries, dict(d.index), by_name, d.duplicates,
            d.problems, d.recovered, d.names_text, d.names_have_newline,
            [d.values(f) for f in zipdir._FIELDS])


def both_directories(path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any]:
    with monkeypatch.context() as m:
        m.setattr(zipdir, "_FAST_MIN", 1)
        fast = directory_facts(path)
    with monkeypatch.context() as m:
        m.setattr(zipdir, "_FAST_MIN", BIG)
        slow = directory_facts(path)
    return fast, slow


def snapshot(path: Path) -> Any:
    """What open_checkpoint reports, in comparable form."""
    try:
        ck = open_checkpoint(path)
    except CheckpointError as exc:
        return type(exc).__name__, str(exc)
    tensors = [(k, v.shape, v.dtype, v.device, v.nbytes, v.layout, v.source is None)
               for k, v in ck.tensors.items()]
    findings = [(f.kind, f.severity, f.message, f.keys, repr(f.details)) for f in ck.findings]
    members = {c: list(m.items()) for c, m in ck._members.items()}
    meta = {k: v for k, v in ck.metadata.items() if k != "open_seconds"}
    return ck.format, tensors, ck.candidates, members, findings, repr(meta), ck.size


def same_open(path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Open ``path`` with every fast path on (the bulk parser even for small archives)
    and with all of them off; assert the reports agree, return the fast one."""
    with monkeypatch.context() as m:
        m.setattr(zipdir, "_FAST_MIN", 1)
        fast = snapshot(path)
    with monkeypatch.context() as m:
        reference_mode(m)
        slow = snapshot(path)
    assert fast == slow
    return fast


# --------------------------------------------------------------------------- archives


def central_record(name: bytes, *, flags: int = 0, method: int = 0, crc: int = 0,
                   csize: int = 0, usize: int = 0, offset: int = 0, extra: bytes = b"",
                   comment: bytes = b"", name_len: int | None = None) -> bytes:
    return struct.pack(
        "<4s6H3L5H2L", b"PK\x01\x02", 45, 20, flags, method, 0, 0, crc, csize, usize,
        len(name) if name_len is None else name_len, len(extra), len(comment), 0, 0, 0,
        offset,
    ) + name + extra + comment


def eocd(count: int, cd_size: int, cd_offset: int) -> bytes:
    return struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, count, count, cd_size, cd_offset, 0)


def zip64_end(count: int, cd_size: int, cd_offset: int, at: int) -> bytes:
    """A zip64 end record at ``at``, its locator, and an end record full of sentinels."""
    rec = struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, count, count, cd_size,
                      cd_offset)
    loc = struct.pack("<4sLQL", b"PK\x06\x07", 0, at, 1)
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF,
                      0xFFFFFFFF, 0)
    return rec + loc + end


def rebuild(data: bytes, *, extra: bytes = b"", comment: bytes = b"", zip64: bool = False,
            zip64_end_record: bool = False, count_delta: int = 0, trailing: bytes = b"",
            edit: Any = None) -> bytes:
    """The same records with a central directory written anew: extra fields, comments,
    zip64 sizes and offsets, a zip64 end record, a count that lies, bytes after the
    records, or any ``edit`` of the (name, fields) list."""
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        infos = z.infolist()
        body_end = z.start_dir
    records = []
    for i in infos:
        fields = {"flags": i.flag_bits, "method": i.compress_type, "crc": i.CRC,
                  "csize": i.compress_size, "usize": i.file_size, "offset": i.header_offset,
                  "extra": extra, "comment": comment}
        if zip64:
            fields["extra"] = struct.pack("<2H3Q", 1, 24, i.file_size, i.compress_size,
                                          i.header_offset) + extra
            fields["csize"] = fields["usize"] = fields["offset"] = 0xFFFFFFFF
        records.append((i.filename.encode("utf-8"), fields))
    if edit is not None:
        records = edit(records)
    central = b"".join(central_record(n, **f) for n, f in records) + trailing
    count = len(records) + count_delta
    head = data[:body_end]
    if zip64_end_record:
        return head + central + zip64_end(count, len(central), body_end,
                                          body_end + len(central))
    return head + central + eocd(count, len(central), body_end)


def torch_bytes(obj: Any, **kwargs: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf, **kwargs)
    return buf.getvalue()


def wide_state(n: int, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    return {f"layers.{i}.weight": torch.zeros(2, dtype=dtype) + i % 3 for i in range(n)}


DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int8,
          torch.uint8, torch.int16, torch.int32, torch.int64, torch.bool, torch.complex64,
          torch.complex128]
for _name in ("float8_e4m3fn", "float8_e5m2", "uint16", "uint32", "uint64"):
    if hasattr(torch, _name):
        DTYPES.append(getattr(torch, _name))


def every_dtype() -> dict[str, torch.Tensor]:
    out = {}
    for dt in DTYPES:
        base = torch.arange(6).reshape(2, 3) % 2
        out[str(dt).removeprefix("torch.")] = base.to(dt)
    return out


def real_files() -> dict[str, Any]:
    """Objects torch.save turns into archives of 1 to a few thousand records."""
    shared = torch.arange(12.0)
    return {
        "empty": {},
        "one": {"w": torch.ones(3)},
        "dtypes": every_dtype(),
        "nested": {"model": wide_state(40), "optimizer": {"state": {0: {"step": torch.tensor(1)}},
                                                          "param_groups": [{"params": [0]}]},
                   "epoch": 3, "name": "x"},
        "list": [torch.ones(2) * i for i in range(30)],
        "tuple": tuple(torch.ones(1) * i for i in range(12)),
        "views": {"a": shared[:4], "b": shared[4:], "c": shared.view(3, 4)},
        "wide-600": wide_state(600),
        "wide-2500-half": wide_state(2500, torch.float16),
    }


# --------------------------------------------------------------------------- parser


@pytest.mark.parametrize("name", list(real_files()))
@pytest.mark.parametrize("legacy", [False, True])
def test_real_files_parse_and_open_the_same(tmp_path: Path, name: str, legacy: bool,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / f"{name}.pt"
    path.write_bytes(torch_bytes(real_files()[name], _use_new_zipfile_serialization=not legacy))
    if not legacy:
        central, count = central_and_count(path.read_bytes())
        assert same_parse(central, count)  # torch's layout always takes the bulk path
        fast, slow = both_directories(path, monkeypatch)
        assert fast == slow
    same_open(path, monkeypatch)


def test_every_dtype_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for dt, tensor in every_dtype().items():
        path = tmp_path / f"{dt}.pt"
        path.write_bytes(torch_bytes({"t": tensor, "more": wide_state(3)}))
        assert same_parse(*central_and_count(path.read_bytes()))
        snap = same_open(path, monkeypatch)
        assert snap[1][0][2] == dt


def test_numpy_is_loaded_for_the_bulk_parser_only_when_it_pays(
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert zipdir._use_bulk(zipdir._FAST_MIN)
    assert not zipdir._use_bulk(zipdir._FAST_MIN - 1)

    class NoNumpy:
        modules: dict = {}

    monkeypatch.setattr(zipdir, "sys", NoNumpy)
    assert not zipdir._use_bulk(zipdir._FAST_IMPORT_MIN - 1)
    assert zipdir._use_bulk(zipdir._FAST_IMPORT_MIN)


def test_the_big_default_path_is_taken(tmp_path: Path) -> None:
    """Archives of _FAST_MIN records or more use the bulk parser without being told
    (numpy loaded, as in the widget)."""
    import numpy  # noqa: F401
    path = tmp_path / "wide.pt"
    path.write_bytes(torch_bytes(wide_state(zipdir._FAST_MIN)))
    called = []
    real = zipdir._parse_bulk

    def spy(central: bytes, count: int) -> Any:
        called.append(count)
        return real(central, count)

    with pytest.MonkeyPatch.context() as m:
        m.setattr(zipdir, "_parse_bulk", spy)
        d = zipdir.read_directory(path, Budgets())
    assert called and called[0] == len(d.names) > zipdir._FAST_MIN


def test_signature_bytes_inside_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    records = [("archive/data.pkl", b"x"), ("archive/PK\x01\x02", b"a"),
               ("archive/xPK\x01\x02PK\x01\x02y", b"b"), ("PK\x01\x02", b"")]
    path = tmp_path / "sig.zip"
    with zipfile.ZipFile(path, "w") as z:
        for n, d in records:
            z.writestr(n, d)
    central, count = central_and_count(path.read_bytes())
    assert zipdir._parse_bulk(central, count) is None  # the chain breaks: it gives up
    fast, slow = both_directories(path, monkeypatch)
    assert fast == slow and fast[1] == [n for n, _ in records]


def test_signature_bytes_in_fixed_fields_and_extras(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    base = torch_bytes(wide_state(20))
    sig = b"PK\x01\x02"
    for extra, comment in ((sig, b""), (b"", sig), (sig * 3, sig + b"z")):
        path = tmp_path / "extra.pt"
        path.write_bytes(rebuild(base, extra=struct.pack("<2H", 0x7777, len(extra)) + extra,
                                 comment=comment))
        central, count = central_and_count(path.read_bytes())
        assert not same_parse(central, count)
        fast, slow = both_directories(path, monkeypatch)
        assert fast == slow and not fast[6]
    # a CRC whose bytes are the signature
    crc_sig = struct.unpack("<L", sig)[0]

    def set_crc(records: list) -> list:
        records[1][1]["crc"] = crc_sig
        return records

    path.write_bytes(rebuild(base, edit=set_crc))
    assert not same_parse(*central_and_count(path.read_bytes()))
    fast, slow = both_directories(path, monkeypatch)
    assert fast == slow


def test_extra_fields_and_comments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = torch_bytes(wide_state(50))
    for extra, comment in ((b"\x99\x99\x04\x00abcd", b""), (b"", b"a comment"),
                           (b"\x01\x02\x00\x00", b"\n\n"), (b"\xfe\xca\x00\x00", b"c" * 300)):
        path = tmp_path / "x.pt"
        path.write_bytes(rebuild(base, extra=extra, comment=comment))
        assert same_parse(*central_and_count(path.read_bytes()))
        fast, slow = both_directories(path, monkeypatch)
        assert fast == slow and fast[6] == []
        same_open(path, monkeypatch)


@pytest.mark.parametrize("end_record", [False, True])
def test_zip64_records(tmp_path: Path, end_record: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    base = torch_bytes(wide_state(30))
    path = tmp_path / "z64.pt"
    path.write_bytes(rebuild(base, zip64=True, zip64_end_record=end_record))
    assert same_parse(*central_and_count(path.read_bytes()))
    fast, slow = both_directories(path, monkeypatch)
    assert fast == slow
    plain, _ = both_directories(_write(tmp_path / "plain.pt", base), monkeypatch)
    assert fast[2] == plain[2]  # the zip64 extras hold the same sizes and offsets
    snap = same_open(path, monkeypatch)
    assert len(snap[1]) == 30


def test_zip64_some_records_and_short_extras(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    base = torch_bytes(wide_state(30))

    def mixed(records: list) -> list:
        for k, (_, f) in enumerate(records):
            if k % 3 == 0:  # offset only, in the extra
                f["extra"] = struct.pack("<2HQ", 1, 8, f["offset"])
                f["offset"] = 0xFFFFFFFF
            elif k % 3 == 1:  # sentinel with a short or missing zip64 field
                f["extra"] = struct.pack("<2H", 1, 4) + b"abcd" if k % 2 else b""
                f["usize"] = 0xFFFFFFFF
        return records

    path = _write(tmp_path / "mixed.pt", rebuild(base, edit=mixed))
    assert same_parse(*central_and_count(path.read_bytes()))
    fast, slow = both_directories(path, monkeypatch)
    assert fast == slow
    same_open(path, monkeypatch)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("delta", [-7, -1, 1, 2, 500, 0x8000])
def test_name_length_fields_that_lie(tmp_path: Path, delta: int,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    base = torch_bytes(wide_state(40))
    for victim in (0, 5, 39, -1):
        def lie(records: list, victim: int = victim) -> list:
            name, f = records[victim]
            f["name_len"] = max(0, min(0xFFFF, len(name) + delta))
            return records

        path = _write(tmp_path / "lie.pt", rebuild(base, edit=lie))
        central, count = central_and_count(path.read_bytes())
        same_parse(central, count)  # whatever it decides, it may not differ
        if victim != -1:
            assert zipdir._parse_bulk(central, count) is None
        fast, slow = both_directories(path, monkeypatch)
        assert fast == slow
        same_open(path, monkeypatch)


@pytest.mark.parametrize("how", ["count+1", "count+1000", "count-1", "cut-central",
                                 "cut-name", "trailing-garbage", "trailing-signature",
                                 "leading-garbage", "leading-signature", "cut-file"])
def test_directory_cut_short_or_padded(tmp_path: Path, how: str,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    base = torch_bytes(wide_state(60))
    if how.startswith("count"):
        data = rebuild(base, count_delta=int(how[5:]))
    elif how.startswith("cut-") and how != "cut-file":
        # cut inside the last record's fixed part, or inside its name (which the walk
        # reads cut short, without a word: the lookup by name reports it later)
        data = rebuild(base, edit=lambda r: r)
        central, count = central_and_count(data)
        cd_offset = data.find(central)
        short = central[:len(central) - (100 if how == "cut-central" else 5)]
        data = data[:cd_offset] + short + eocd(count, len(short), cd_offset)
    elif how == "trailing-garbage":
        data = rebuild(base, trailing=b"\0" * 100)
    elif how == "trailing-signature":
        data = rebuild(base, trailing=b"PK\x01\x02" + b"\0" * 60)
    elif how.startswith("leading-"):  # the directory's offset points before it
        data = rebuild(base, edit=lambda r: r)
        central, count = central_and_count(data)
        cd_offset = data.find(central)
        pad = b"\0" * 10 if how == "leading-garbage" else b"PK\x01\x02" + b"\0" * 42
        data = (data[:cd_offset] + pad + central
                + eocd(count, len(pad) + len(central), cd_offset))
    else:
        data = base[:len(base) * 2 // 3]  # no directory at all: the local-header scan
    path = _write(tmp_path / "cut.pt", data)
    if how != "cut-file":
        same_parse(*central_and_count(data))
    fast, slow = both_directories(path, monkeypatch)
    assert fast == slow
    if how in ("count+1", "count+1000", "cut-central"):
        assert any("promises" in p or "signature" in p for p in fast[6])
    same_open(path, monkeypatch)


def test_duplicated_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = torch_bytes(wide_state(30))

    def dup(records: list) -> list:
        records.insert(3, (records[7][0], dict(records[7][1], flags=1)))
        records.append((records[0][0], dict(records[0][1])))
        return records

    path = _write(tmp_path / "dup.pt", rebuild(base, edit=dup))
    assert same_parse(*central_and_count(path.read_bytes()))
    fast, slow = both_directories(path, monkeypatch)
    assert fast == slow
    names = fast[1]
    assert fast[5] == [names[3], names[0]]
    assert fast[3][names[3]] == 3  # the first record of a name wins
    assert fast[6] == [f"record {names[3]!r} is encrypted"]
    snap = same_open(path, monkeypatch)
    assert any("several records named" in f[2] for f in snap[4])


def test_odd_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Non-ASCII, invalid UTF-8, newlines, empty names, traversal and encryption."""
    base = torch_bytes(wide_state(20))
    extra_names = [b"archive/caf\xc3\xa9", b"archive/bad\xff\xfe", b"archive/line\nbreak",
                   b"", b"../evil", b"/abs", b"\\win", b"archive/a/../b", b"archive/a..b",
                   b"archive/\xe2\x82", b"archive/..", b"archive\\..\\x", b"\n/evil"]

    for k, extra_name in enumerate(extra_names):
        def add(records: list, extra_name: bytes = extra_name) -> list:
            f = dict(records[2][1])
            records.insert(4, (extra_name, f))
            return records

        path = _write(tmp_path / f"odd{k}.pt", rebuild(base, edit=add))
        assert same_parse(*central_and_count(path.read_bytes()))
        fast, slow = both_directories(path, monkeypatch)
        assert fast == slow
        assert fast[6] == _reference_problems(fast[1], fast[10][0])
        same_open(path, monkeypatch)


def _reference_problems(names: list[str], flags: list[int]) -> list[str]:
    """The checks _finish made record by record before its one-string pre-check."""
    seen: set[str] = set()
    problems = []
    for name, flag in zip(names, flags):
        if name in seen:
            continue
        seen.add(name)
        if flag & 0x01 or ".." in name or name.startswith(("/", "\\")):
            if name.startswith(("/", "\\")) or ".." in name.replace("\\", "/").split("/"):
                problems.append(f"record name {name!r} points outside the archive")
            if flag & 0x01:
                problems.append(f"record {name!r} is encrypted")
    return problems


def test_finish_prechecks_against_the_reference() -> None:
    rng = random.Random(3)
    parts = ["a", "..", ".", "/", "\\", "\n", "x.pkl", "archive", "é", ""]
    for _ in range(3000):
        names = ["".join(rng.choice(parts) for _ in range(rng.randint(0, 4)))
                 for _ in range(rng.randint(0, 6))]
        flags = [rng.choice([0, 0, 0, 1, 8, 9]) for _ in names]
        cols = (flags, [0] * len(names), [0] * len(names), [0] * len(names), [0] * len(names),
                list(range(len(names))))
        d = zipdir._finish(Path("x"), 0, names, cols, [], recovered=False)
        assert d.problems == _reference_problems(names, flags)
        first: dict[str, int] = {}
        dups = []
        for i, n in enumerate(names):
            if n in first:
                dups.append(n)
            else:
                first[n] = i
        assert d.index == first and list(d.index) == list(first) and d.duplicates == dups
        assert d.names_text == "\n".join(names)
        assert d.names_have_newline == any("\n" in n for n in names)


def test_random_byte_flips_in_the_directory(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    base = torch_bytes(wide_state(40))
    central, _ = central_and_count(base)
    cd_offset = base.find(central)
    rng = random.Random(7)
    path = tmp_path / "flip.pt"
    took_bulk = 0
    for trial in range(1500):
        data = bytearray(base)
        for _ in range(rng.choice([1, 1, 2, 5])):
            at = cd_offset + rng.randrange(len(central) + 22)
            data[at] = rng.choice([rng.randrange(256), 0, 0xFF, ord("P"), ord("K"), 1, 2])
        data = bytes(data)
        path.write_bytes(data)
        try:
            c, n = central_and_count(data)
        except struct.error:
            c, n = b"", 0
        if n and len(c) == len(central):
            took_bulk += same_parse(c, n)
        fast, slow = both_directories(path, monkeypatch)
        assert fast == slow, trial
        if trial % 25 == 0:
            same_open(path, monkeypatch)
    assert took_bulk > 100  # most flips land in fields the chain does not read


def test_random_byte_flips_in_names_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Flips inside names keep the chain whole: the bulk path must decode them as the
    walk does (non-ASCII, newlines, invalid UTF-8)."""
    base = torch_bytes(wide_state(25))
    central, count = central_and_count(base)
    cd_offset = base.find(central)
    problems: list[str] = []
    names, _ = zipdir._parse_walk(central, count, problems)
    spans = []
    pos = 0
    for name in names:
        n = len(name.encode())
        _, _, _, _, _, _, nl, el, cl, _ = zipdir._CENTRAL_FIELDS.unpack_from(central, pos)
        spans.append((pos + 46, pos + 46 + nl))
        pos += 46 + nl + el + cl
        assert n == nl
    rng = random.Random(11)
    path = tmp_path / "names.pt"
    for _ in range(400):
        data = bytearray(base)
        for _ in range(rng.randint(1, 4)):
            a, b = rng.choice(spans)
            if b > a:
                data[cd_offset + rng.randrange(a, b)] = rng.choice([0x0A, 0xFF, 0xC3, 0x80,
                                                                   0x2E, 0x2F, 0x5C, 0x00])
        path.write_bytes(bytes(data))
        assert same_parse(*central_and_count(bytes(data)))
        fast, slow = both_directories(path, monkeypatch)
        assert fast == slow


def test_budget_on_entries_still_applies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path / "wide.pt", torch_bytes(wide_state(600)))
    small = Budgets(max_entries=100)
    with pytest.raises(BudgetExceededError):
        zipdir.read_directory(path, small)
    monkeypatch.setattr(zipdir, "_FAST_MIN", BIG)
    with pytest.raises(BudgetExceededError):
        zipdir.read_directory(path, small)


def test_entries_are_made_once_and_remember_their_data_offset(tmp_path: Path) -> None:
    path = _write(tmp_path / "wide.pt", torch_bytes(wide_state(600)))
    d = zipdir.read_directory(path, Budgets())
    name = d.names[10]
    e = d.entry(name)
    assert e is d.entry(name) is d.entry_at(10) is d.by_name[name] is d.entries[10]
    assert d.entry("no/such/record") is None
    off = zipdir.data_offset(d, e)
    assert e.data_offset == off and d.entry(name).data_offset == off
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(name)
        assert (e.size, e.compressed_size, e.crc, e.header_offset) == (
            info.file_size, info.compress_size, info.CRC, info.header_offset)
        assert zipdir.read_record(d, d.entry(d.names[-1]), Budgets(), limit=1 << 20) == (
            z.read(d.names[-1]))
    assert all(type(v) is int for v in d.values("size"))
    assert len(d) == len(d.names) == len(d.entries)


def test_against_the_standard_library(tmp_path: Path) -> None:
    for name, obj in real_files().items():
        path = _write(tmp_path / f"{name}.pt", torch_bytes(obj))
        d = zipdir.read_directory(path, Budgets())
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
        assert d.names == [i.filename for i in infos]
        assert d.values("size") == [i.file_size for i in infos]
        assert d.values("compressed_size") == [i.compress_size for i in infos]
        assert d.values("crc") == [i.CRC for i in infos]
        assert d.values("header_offset") == [i.header_offset for i in infos]
        assert d.values("method") == [i.compress_type for i in infos]
        assert d.values("flags") == [i.flag_bits for i in infos]


# --------------------------------------------------------------------------- torch_zip


def _rewrite(data: bytes, change: Any) -> bytes:
    """Rewrite an archive record by record with zipfile: change(name, bytes) returns
    a list of (name, bytes, compress_type) to write instead."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as zin, zipfile.ZipFile(out, "w") as zout:
        for info in zin.infolist():
            for name, body, method in change(info.filename, zin.read(info)):
                zout.writestr(zipfile.ZipInfo(name), body, compress_type=method)
    return out.getvalue()


STORED, DEFLATED = zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED


def storage_cases() -> dict[str, Any]:
    def missing(name: str, body: bytes) -> list:
        return [] if name.endswith("/data/7") else [(name, body, STORED)]

    def short(name: str, body: bytes) -> list:
        return [(name, body[:-2] if name.endswith("/data/3") else body, STORED)]

    def long(name: str, body: bytes) -> list:
        return [(name, body + b"xx" if name.endswith("/data/3") else body, STORED)]

    def compressed(name: str, body: bytes) -> list:
        return [(name, body, DEFLATED if "/data/1" in name else STORED)]

    def duplicated(name: str, body: bytes) -> list:
        extra = [(name, body[:-1], STORED)] if name.endswith("/data/5") else []
        return [(name, body, STORED), *extra]

    def shadowed(name: str, body: bytes) -> list:  # the short copy comes first
        extra = [(name, body[:-1], STORED)] if name.endswith("/data/5") else []
        return [*extra, (name, body, STORED)]

    def shadowed_early(name: str, body: bytes) -> list:  # a short copy before the run
        if name.endswith("/data.pkl"):
            prefix = name.rsplit("/", 1)[0]
            return [(name, body, STORED), (f"{prefix}/data/5", b"x", STORED)]
        return [(name, body, STORED)]

    def stray(name: str, body: bytes) -> list:
        extra = [("elsewhere/x.pkl", b"\x80\x02}q\x00.", STORED)] if name.endswith(
            "/version") else []
        return [(name, body, STORED), *extra]

    def newline(name: str, body: bytes) -> list:
        extra = [(name.rsplit("/", 1)[0] + "/odd\nname", b"", STORED)] if name.endswith(
            "/version") else []
        return [(name, body, STORED), *extra]

    def code_after_newline(name: str, body: bytes) -> list:
        prefix = name.split("/", 1)[0]
        extra = [(f"x\n{prefix}/code/y", b"", STORED)] if name.endswith("/version") else []
        return [(name, body, STORED), *extra]

    return {"missing": missing, "short": short, "long": long, "compressed": compressed,
            "duplicated": duplicated, "shadowed": shadowed,
            "shadowed-early": shadowed_early, "stray": stray,
            "newline": newline, "code-after-newline": code_after_newline}


@pytest.mark.parametrize("case", list(storage_cases()))
@pytest.mark.parametrize("order", ["torch", "sorted", "reversed"])
def test_storage_checks_agree(tmp_path: Path, case: str, order: str,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    base = torch_bytes(wide_state(40))
    data = _rewrite(base, storage_cases()[case])
    if order != "torch":  # older torch wrote storages sorted by key, as text
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            items = [(i.filename, z.read(i), i.compress_type) for i in z.infolist()]
        head, rest = items[:1], items[1:]
        rest.sort(key=lambda t: t[0], reverse=order == "reversed")
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as z:
            for name, body, method in head + rest:
                z.writestr(zipfile.ZipInfo(name), body, compress_type=method)
        data = out.getvalue()
    path = _write(tmp_path / "case.pt", data)
    snap = same_open(path, monkeypatch)
    messages = " ".join(f[2] for f in snap[4])
    if case in ("missing", "short"):
        assert "missing or short" in messages
    if case == "long":
        assert "differ from their records" in messages
    if case == "compressed":
        assert "compressed" in messages
    if case in ("duplicated", "shadowed", "shadowed-early"):
        assert "several records named" in messages
    if case in ("shadowed", "shadowed-early"):
        assert "missing or short" in messages
    if case == "stray":
        assert "outside the" in messages
    if case == "code-after-newline":
        assert snap[0] == "torch-zip"


def test_other_pickles_and_torchscript_tests(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    base = torch_bytes(wide_state(10))
    prefix = zipfile.ZipFile(io.BytesIO(base)).namelist()[0].split("/", 1)[0]
    payload = b"cos\nsystem\n(S'echo hi'\ntR."
    variants = {
        "hidden-pickle": [(f"{prefix}/extra.pkl", payload)],
        "pickle-named-like-main": [(f"{prefix}/data.pkl.pkl", payload)],
        "second-data-pkl": [(f"{prefix}/data.pkl", payload)],
        "constants": [(f"{prefix}/constants.pkl", b"\x80\x02).")],
        "code": [(f"{prefix}/code/__torch__.py", b"x = 1\n")],
        "code-name-in-the-middle": [(f"{prefix}/notcode/{prefix}/code/x", b"")],
        "newline-pkl": [(f"{prefix}/a.pkl\nb", b""), (f"{prefix}/c\nd.pkl", payload)],
    }
    for label, extra in variants.items():
        def add(name: str, body: bytes, extra: list = extra) -> list:
            out = [(name, body, STORED)]
            if name.endswith("/version"):
                out += [(n, b, STORED) for n, b in extra]
            return out

        path = _write(tmp_path / f"{label}.pt", _rewrite(base, add))
        snap = same_open(path, monkeypatch)
        if label in ("constants", "code"):
            assert snap[0] == "torchscript", label
        else:
            assert snap[0] == "torch-zip", label
        if label in ("hidden-pickle", "pickle-named-like-main", "second-data-pkl"):
            assert any("system" in f[2] for f in snap[4]), label

    def code_first(name: str, body: bytes) -> list:  # the very first name is code/
        first = [(f"{prefix}/code/a.py", b"", STORED)] if name.endswith("/data.pkl") else []
        return [*first, (name, body, STORED)]

    path = _write(tmp_path / "code-first.pt", _rewrite(base, code_first))
    assert same_open(path, monkeypatch)[0] == "torchscript"


def test_torchscript_archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = torch.jit.script(torch.nn.Linear(2, 2))
    path = tmp_path / "script.pt"
    torch.jit.save(module, str(path))
    assert same_open(path, monkeypatch)[0] == "torchscript"


def test_helpers_of_torch_zip_against_the_plain_checks() -> None:
    rng = random.Random(5)
    parts = ["archive/", "data/", "x.pkl", ".pkl", "\n", "code/", "a", "archive", ""]
    for _ in range(3000):
        names = ["".join(rng.choice(parts) for _ in range(rng.randint(0, 4)))
                 for _ in range(rng.randint(0, 7))]
        cols = tuple([0] * len(names) for _ in zipdir._FIELDS)
        d = zipdir._finish(Path("x"), 0, names, cols, [], recovered=False)
        start = rng.choice(["archive/", "archive/data/", "a", "\n", ""])
        if torch_zip._all_start_with(d, start):
            assert all(n.startswith(start) for n in names)
        elif not d.names_have_newline and start and "\n" not in start:
            assert not all(n.startswith(start) for n in names) or not names
        pkl = rng.choice(["archive/x.pkl", "x.pkl", "archive/data/x.pkl", ".pkl"])
        truth = all(n == pkl for n in names if n.endswith(".pkl"))
        if torch_zip._only_pickle(d, pkl):  # never wrong when it says yes
            assert truth
        elif not d.names_have_newline:  # and exact without newlines in names
            assert not truth


# --------------------------------------------------------------------------- flatten


def _info(i: int) -> TensorInfo:
    return TensorInfo((i % 5,), "float32", "cpu", 4 * (i % 5))


def _random_tree(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.random()
    if depth > 3 or kind < 0.25:
        return rng.choice([_info(rng.randrange(100)), 3, "text", None, 2.5, b"b", True])
    n = rng.choice([0, 1, 3, 8, 9, 20])
    if kind < 0.55:
        keys = [rng.choice([f"k{j}", j, f"{j}", ("t", j)]) for j in range(n)]
        if rng.random() < 0.5:
            return {k: _info(j) for j, k in enumerate(keys)}
        return {k: _random_tree(rng, depth + 1) for k in keys}
    items = ([_info(j) for j in range(n)] if rng.random() < 0.5
             else [_random_tree(rng, depth + 1) for _ in range(n)])
    return items if kind < 0.8 else tuple(items)


def _flat(root: Any, **kw: Any) -> Any:
    try:
        f = tree.flatten(root, **kw)
    except BudgetExceededError as exc:
        return str(exc)
    return (list(f.tensors.items()), {k: list(v.items()) for k, v in f.members.items()},
            f.candidates)


def test_flatten_fast_path_matches_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(1)
    roots = [_random_tree(rng) for _ in range(600)]
    shared = {f"w{j}": _info(j) for j in range(12)}
    roots += [
        {"a": shared, "b": shared, "c": [shared, shared]},  # tied weights
        {"a.b": _info(1), "a": {"b": _info(2), **{f"x{j}": _info(j) for j in range(9)}}},
        {f"layer.{j}": _info(j) for j in range(5000)},
        [_info(j) for j in range(50)],
        {"state_dict": {f"m.{j}": _info(j) for j in range(300)}, "epoch": 2,
         "opt": {"state": {j: {"m": _info(j)} for j in range(20)}}},
        {1: _info(1), "1": _info(2), **{str(j): _info(j) for j in range(2, 10)}},
    ]
    budgets = [{}, {"max_visits": 40}, {"max_visits": 5001}, {"max_depth": 1}]
    fast = [_flat(r, **b) for r in roots for b in budgets]
    monkeypatch.setattr(tree, "_all_tensors", lambda *a: None)
    monkeypatch.setattr(tree, "_LEAVES", frozenset())
    slow = [_flat(r, **b) for r in roots for b in budgets]
    assert fast == slow


def test_tensor_index_fast_path_matches_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(2)
    roots = [_random_tree(rng) for _ in range(400)] + [[1, 2, 3] * 10, {"a": ["x"] * 20}]

    def answers() -> list:
        out = []
        for r in roots:
            index = tree._TensorIndex(5_000_000)
            try:
                out.append((index(r), top_facts(r)))
            except BudgetExceededError as exc:
                out.append(str(exc))
        return out

    def top_facts(r: Any) -> Any:
        return repr(tree.top_level_facts(r))

    fast = answers()
    monkeypatch.setattr(tree, "_LEAVES", frozenset())
    assert answers() == fast
    with pytest.raises(BudgetExceededError):
        tree._TensorIndex(100)({f"k{j}": _info(j) for j in range(200)})


def test_crc_stays_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A damaged small record is still caught with the bulk parser (CRC from columns)."""
    base = torch_bytes(wide_state(20))
    with zipfile.ZipFile(io.BytesIO(base)) as z:
        info = next(i for i in z.infolist() if i.filename.endswith("/version"))
    data = bytearray(base)
    name_len, extra_len = struct.unpack_from("<2H", data, info.header_offset + 26)
    data[info.header_offset + 30 + name_len + extra_len] ^= 0x01
    assert zlib.crc32(bytes(data)) != zlib.crc32(base)
    path = _write(tmp_path / "crc.pt", bytes(data))
    snap = same_open(path, monkeypatch)
    assert any("CRC" in f[2] for f in snap[4])


def test_a_plain_root_is_its_own_members(tmp_path: Path) -> None:
    """A root that is a plain state dict has no ``members`` entry (its keys are its
    paths), on both flatten paths; a root with anything else keeps its entry; the
    checkpoint's API reads the same either way."""
    plain = {f"m.{j}": _info(j) for j in range(5)}
    flat = tree.flatten(plain)
    assert flat.members == {} and flat.candidates == [""]
    assert list(flat.tensors) == list(plain)
    mixed = {**plain, "epoch": 3}
    assert list(tree.flatten(mixed).members[""].items()) == [(k, k) for k in plain]
    assert list(tree.flatten({"x": plain}).members) == ["x"]
    path = tmp_path / "sd.pt"
    torch.save({f"m.{j}": torch.ones(j + 1) for j in range(5)}, path)
    ck = open_checkpoint(path)
    assert ck.candidates == [""] and ck.keys_are_full("")
    assert ck.members("") == {k: k for k in ck.tensors}
    assert ck.entry("") == ck.tensors and ck.entry("") is not ck.tensors
