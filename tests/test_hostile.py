"""Hostile inputs: pickle payloads, zip tricks and machine exhaustion, all generated in
code (tests/_hostile_files.py).

For every case: open_checkpoint never runs anything (each payload's sentinel file is
absent after opening and after materialising the tensors), a payload's `malicious`
finding names its exact globals, and opening finishes within 2 s and 256 MB. Time and
peak memory are measured in a forked child of a small worker process (wait4 gives the
child's own peak RSS), so one case cannot hide another's cost and a hang is killed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import _hostile_files as H
import pytest
import torch

import ckwidget as ck
from ckwidget.checkpoint import load_from_sources
from ckwidget.errors import CheckpointError

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

# A far backstop against a hang, never an outcome: the readers stop hostile input by
# counted budgets (opcodes, bytes, entries), so no assertion here depends on the clock.
HANG_AFTER_S = 120.0
MEMORY_LIMIT_MB = 256

# --------------------------------------------------------------------------- the worker

WORKER = r'''
import json, os, select, sys, time
import ckwidget.readers as readers
import ckwidget.readers.torch_zip, ckwidget.readers.torch_legacy, ckwidget.readers.broken
import ckwidget.readers.foreign, ckwidget.readers.numpy_files, numpy
from ckwidget.checkpoint import load_from_sources
from ckwidget.errors import CheckpointError

def rss_kb(field):
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0

def child(path, out):
    start_kb = rss_kb("VmRSS")
    started = time.perf_counter()
    try:
        ckpt = readers.open_checkpoint(path)
        result = {"ok": True, "format": ckpt.format, "tensors": len(ckpt.tensors),
                  "findings": [{"kind": f.kind, "severity": f.severity, "message": f.message,
                                "globals": [str(g) for g in f.details.get("globals", [])]}
                               for f in ckpt.findings]}
    except CheckpointError as exc:
        result = {"ok": False, "error": type(exc).__name__, "message": str(exc),
                  "internal": getattr(exc, "internal", False)}
    except BaseException as exc:
        result = {"ok": False, "error": "ESCAPED " + type(exc).__name__, "message": str(exc)[:500],
                  "internal": True}
    result["seconds"] = time.perf_counter() - started
    result["growth_mb"] = (rss_kb("VmHWM") - start_kb) / 1024
    os.write(out, json.dumps(result).encode())
    os.close(out)

for line in sys.stdin:
    request = json.loads(line)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            child(request["path"], write)
        finally:
            os._exit(0)
    os.close(write)
    chunks, deadline, status, usage = [], time.monotonic() + request["kill_after"], None, None
    while True:
        ready, _, _ = select.select([read], [], [], 0.05)
        if ready:
            chunk = os.read(read, 1 << 20)
            if chunk:
                chunks.append(chunk)
                continue
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            while True:
                chunk = os.read(read, 1 << 20)
                if not chunk:
                    break
                chunks.append(chunk)
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            _, status, usage = os.wait4(pid, 0)
            chunks = [json.dumps({"ok": False, "error": "HANG", "message": "killed",
                                  "seconds": request["kill_after"]}).encode()]
            break
    os.close(read)
    try:
        result = json.loads(b"".join(chunks) or b"{}")
    except ValueError:
        result = {"ok": False, "error": "CRASH", "message": repr(b"".join(chunks)[:200])}
    if not result:
        result = {"ok": False, "error": "CRASH", "message": f"status {status}"}
    result["peak_mb"] = usage.ru_maxrss / 1024
    print(json.dumps(result), flush=True)
'''


class Worker:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True, bufsize=1,
        )

    def open(self, path: Path, kill_after: float = HANG_AFTER_S) -> dict[str, Any]:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps({"path": str(path), "kill_after": kill_after}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, "the worker died"
        return json.loads(line)

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(timeout=10)
        if self.proc.stdout:
            self.proc.stdout.close()


@pytest.fixture(scope="module")
def worker() -> Iterator[Worker]:
    w = Worker()
    yield w
    w.close()


def measured(worker: Worker, path: Path) -> dict[str, Any]:
    """Open in a forked child; check the contract every case keeps."""
    result = worker.open(path)
    assert result.get("error") not in ("HANG", "CRASH"), result
    assert not str(result.get("error", "")).startswith("ESCAPED"), result
    if not result["ok"]:
        assert result["message"].strip(), result
        assert result.get("internal") is not True, result
    assert result["growth_mb"] < MEMORY_LIMIT_MB, (path.name, result["growth_mb"])
    return result


def malicious_globals(result: dict[str, Any]) -> list[str]:
    return [g for f in result.get("findings", []) if f["kind"] == "malicious"
            for g in f["globals"]]


# --------------------------------------------------------------------------- payloads


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every payload in three containers (plain pickle, torch zip, legacy file), each with
    its own sentinel folder, and the proof that each payload is real: the real unpickler
    (pickle.loads, torch.load(weights_only=False)) creates every sentinel."""
    root = tmp_path_factory.mktemp("hostile")
    cases: dict[str, tuple[Path, H.Payload, Path]] = {}
    for container in ("plain", "zip", "legacy", "proof"):
        folder = root / container
        folder.mkdir()
        for p in H.payloads(folder):
            for helper, data in p.files.items():
                helper.write_bytes(data)
            if container in ("plain", "proof"):
                path = folder / f"{p.name}.bin"
                path.write_bytes(p.data)
            elif p.body is None:
                continue
            elif container == "zip":
                path = H.torch_zip_with_body(folder / f"{p.name}.pt", p.body,
                                             H.embed_protocol(p))
            else:
                path = H.legacy_with_body(folder / f"{p.name}.pt", p.body,
                                          H.embed_protocol(p))
            cases[f"{container}/{p.name}"] = (path, p, folder)
    zip_and_legacy = [str(path) for key, (path, _, _) in cases.items()
                      if key.startswith(("zip/", "legacy/"))]
    # Run the real loaders on copies whose sentinels live in the 'proof' folder: the
    # zip and legacy files are regenerated there under other names.
    proof_files = []
    for key, (path, _, _) in list(cases.items()):
        if key.startswith("proof/"):
            proof_files.append(str(path))
            del cases[key]
    for container in ("zip", "legacy"):
        folder = root / f"proof-{container}"
        folder.mkdir()
        for p in H.payloads(folder):
            if p.body is None:
                continue
            for helper, data in p.files.items():
                helper.write_bytes(data)
            make = H.torch_zip_with_body if container == "zip" else H.legacy_with_body
            zip_and_legacy.append(str(make(folder / f"{p.name}.pt", p.body,
                                           H.embed_protocol(p))))
    script = f"""
import copyreg, pickle, sys, time, warnings
warnings.simplefilter("ignore")
copyreg.add_extension("posix", "system", 240)
for f in {proof_files!r}:
    try:
        pickle.loads(open(f, "rb").read())
    except BaseException:
        pass
import torch
for f in {[f for f in zip_and_legacy if "/proof-" in f]!r}:
    try:
        torch.load(f, weights_only=False)
    except BaseException:
        pass
time.sleep(0.3)
"""
    subprocess.run([sys.executable, "-c", script], cwd=root, check=True, timeout=120,
                   capture_output=True)
    proved = {}
    for folder_name in ("proof", "proof-zip", "proof-legacy"):
        made = {s.name.removeprefix("sentinel-") for s in H.sentinels(root / folder_name)}
        proved[folder_name] = made
    return {"root": root, "cases": cases, "proved": proved}


PAYLOAD_NAMES = [p.name for p in H.payloads(Path("/nonexistent"))]
BODY_NAMES = [p.name for p in H.payloads(Path("/nonexistent")) if p.body is not None]


def test_there_are_at_least_25_real_payloads(corpus: dict[str, Any]) -> None:
    assert len(PAYLOAD_NAMES) >= 25
    assert corpus["proved"]["proof"] == set(PAYLOAD_NAMES)
    assert corpus["proved"]["proof-zip"] == set(BODY_NAMES)
    assert corpus["proved"]["proof-legacy"] == set(BODY_NAMES)


def check_payload_case(worker: Worker, corpus: dict[str, Any], key: str) -> None:
    path, payload, folder = corpus["cases"][key]
    result = measured(worker, path)
    assert H.sentinels(folder) == [], "opening ran the payload"
    assert result["ok"], result
    named = malicious_globals(result)
    for expected in payload.expected:
        assert expected in named, (key, named, result["findings"])
    # materialise every container, in this process: nothing runs either
    ckpt = ck.open_checkpoint(path)
    assert ckpt.has_finding("malicious")
    for candidate in ckpt.candidates:
        try:
            values = ckpt.state_dict(candidate)
        except CheckpointError:
            continue
        assert all(isinstance(v, torch.Tensor) for v in values.values())
    if key.startswith(("zip/", "legacy/")):
        sd = ckpt.state_dict()
        ref = H.small_state()
        assert set(sd) == set(ref)
        for k, v in ref.items():
            assert torch.equal(sd[k], v)
    assert H.sentinels(folder) == [], "materialising ran the payload"


@pytest.mark.parametrize("name", PAYLOAD_NAMES)
def test_payload_as_plain_pickle(worker: Worker, corpus: dict[str, Any], name: str) -> None:
    check_payload_case(worker, corpus, f"plain/{name}")


@pytest.mark.parametrize("name", BODY_NAMES)
def test_payload_inside_torch_zip(worker: Worker, corpus: dict[str, Any], name: str) -> None:
    check_payload_case(worker, corpus, f"zip/{name}")


@pytest.mark.parametrize("name", BODY_NAMES)
def test_payload_inside_legacy_file(worker: Worker, corpus: dict[str, Any],
                                    name: str) -> None:
    check_payload_case(worker, corpus, f"legacy/{name}")


@pytest.mark.parametrize("legacy", [False, True])
def test_torch_save_of_an_object_that_reduces_to_os_system(
    worker: Worker, tmp_path: Path, legacy: bool
) -> None:
    """The real writer puts the payload there: torch.save pickles the object's __reduce__."""
    sentinel = tmp_path / "sentinel-evil"
    obj = {"model": H.small_state(), "extra": H.Evil(f"touch {sentinel}")}
    path = tmp_path / "evil.pt"
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    result = measured(worker, path)
    assert "posix.system" in malicious_globals(result)
    ckpt = ck.open_checkpoint(path)
    assert ckpt.candidates[0] == "model"
    sd = ckpt.state_dict()
    assert torch.equal(sd["fc.weight"], obj["model"]["fc.weight"])
    assert not sentinel.exists()


def zip_with_payload_pickle(tmp_path: Path, payload: H.Payload, *, first: bytes) -> Path:
    """A torch archive whose data.pkl is replaced by ``first``."""
    records = [(n, first if n == "archive/data.pkl" else d) for n, d in H.torch_records()]
    return H.raw_zip(tmp_path / f"{payload.name}.pt", records)


def payload_named(tmp_path: Path, name: str) -> H.Payload:
    return next(p for p in H.payloads(tmp_path) if p.name == name)


def test_payload_then_broken_pickle_inside_a_zip(worker: Worker, tmp_path: Path) -> None:
    p = payload_named(tmp_path, "broken-after-reduce")
    path = zip_with_payload_pickle(tmp_path, p, first=p.data)
    result = measured(worker, path)
    assert "posix.system" in malicious_globals(result)
    kinds = {f["kind"] for f in result["findings"]}
    assert "corrupt" in kinds  # the break is reported too
    assert H.sentinels(tmp_path) == []


@pytest.mark.parametrize("payload_first", [False, True])
def test_duplicate_data_pkl(worker: Worker, tmp_path: Path, payload_first: bool) -> None:
    p = payload_named(tmp_path, "posix-system-stack-global")
    records = H.torch_records()
    benign = dict(records)["archive/data.pkl"]
    hostile = H.proto(2) + p.body + H.POP + benign[2:]
    first, second = (hostile, benign) if payload_first else (benign, hostile)
    out = [(n, first if n == "archive/data.pkl" else d) for n, d in records]
    out.append(("archive/data.pkl", second))
    path = tmp_path / "dup.pt"
    with pytest.warns(UserWarning, match="Duplicate name"):
        H.raw_zip(path, out)
    result = measured(worker, path)
    assert "posix.system" in malicious_globals(result)
    assert any("several records named" in f["message"] for f in result["findings"])
    ck.open_checkpoint(path).state_dict()
    assert H.sentinels(tmp_path) == []


@pytest.mark.parametrize("record", ["extra/evil.pkl", "constants.pkl", "data/evil"])
def test_payload_in_a_record_torch_never_reads(worker: Worker, tmp_path: Path,
                                               record: str) -> None:
    """torch.load reads data.pkl only; other tools (torch.jit.load reads constants.pkl,
    scanners and converters read any .pkl) may run a payload hidden elsewhere."""
    p = payload_named(tmp_path, "posix-system-stack-global")
    path = tmp_path / "hidden.pt"
    torch.save(H.small_state(), path)
    H.replace_records(path, {}, extra={record: p.data})
    result = measured(worker, path)
    assert result["ok"]
    ckpt = ck.open_checkpoint(path)
    assert set(ckpt.tensors) == set(H.small_state())
    ckpt.state_dict()
    assert H.sentinels(tmp_path) == []
    if record.endswith(".pkl"):
        assert "posix.system" in malicious_globals(result), result["findings"]


# --------------------------------------------------------------------------- zip tricks


def open_ok(worker: Worker, path: Path) -> tuple[dict[str, Any], ck.Checkpoint | None]:
    result = measured(worker, path)
    try:
        ckpt = ck.open_checkpoint(path)
    except CheckpointError as exc:
        assert str(exc).strip()
        return result, None
    return result, ckpt


def test_crc_error_in_data_pkl(worker: Worker, tmp_path: Path) -> None:
    path = tmp_path / "crc.pt"
    torch.save({"weight_a": torch.ones(2), "weight_b": torch.zeros(3)}, path)
    data = path.read_bytes()
    at = data.index(b"weight_a")
    path.write_bytes(data[:at] + b"weight_c" + data[at + 8:])  # a key renamed, CRC kept
    _, ckpt = open_ok(worker, path)
    assert ckpt is not None
    crc = [f for f in ckpt.findings if "CRC" in f.message]
    assert crc and crc[0].kind == "corrupt"
    # torch does not check CRCs: both read the damaged key
    assert set(ckpt.tensors) == set(torch.load(path, weights_only=True)) == {"weight_c",
                                                                              "weight_b"}


def test_crc_error_in_a_storage(worker: Worker, tmp_path: Path) -> None:
    path = tmp_path / "crc.pt"
    torch.save({"w": torch.zeros(16)}, path)
    H.flip_byte_in_record(path, f"{zipfile.ZipFile(path).namelist()[0].split('/')[0]}/data/0",
                          5)
    _, ckpt = open_ok(worker, path)
    assert ckpt is not None
    # opening reads no tensor bytes, so the damage shows only when the values are read,
    # and both readers see exactly what torch sees
    theirs = torch.load(path, weights_only=True)["w"]
    assert theirs.count_nonzero() == 1
    assert torch.equal(ckpt.state_dict()["w"], theirs)
    assert torch.equal(ckpt.read("w"), theirs)


def test_encrypted_flag_on_data_pkl(worker: Worker, tmp_path: Path) -> None:
    path = H.raw_zip(tmp_path / "enc.pt", H.torch_records())
    H.patch_central(path, "archive/data.pkl", flags=0x01)
    _, ckpt = open_ok(worker, path)
    assert ckpt is not None
    assert any("encrypted" in f.message for f in ckpt.findings if f.severity == "error")


def test_data_descriptor_flag(worker: Worker, tmp_path: Path) -> None:
    path = H.raw_zip(tmp_path / "dd.pt", H.torch_records())
    H.patch_central(path, "archive/data.pkl", flags=0x08)
    H.patch_central(path, "archive/data.pkl", flags=0x08, local=True)
    _, ckpt = open_ok(worker, path)
    assert ckpt is not None and set(ckpt.tensors) == set(H.small_state())


@pytest.mark.parametrize("record", ["data.pkl", "data/0"])
def test_local_and_central_names_disagree(worker: Worker, tmp_path: Path,
                                          record: str) -> None:
    path = H.raw_zip(tmp_path / "names.pt", H.torch_records())
    name = f"archive/{record}"
    H.patch_central(path, name, new_name=name[:-1].encode() + b"X", local=True)
    _, ckpt = open_ok(worker, path)
    assert ckpt is not None
    if record == "data.pkl":
        # torch goes by the central directory; ckwidget refuses to guess and says why
        assert any("local header" in f.message and f.severity == "error"
                   for f in ckpt.findings)
    else:
        # opening reads no storage headers; torch.load (the loader) reads the record by
        # its central entry, ckwidget's own reader refuses the disagreeing record
        theirs = torch.load(path, weights_only=True)
        assert torch.equal(ckpt.state_dict()["fc.weight"], theirs["fc.weight"])
        with pytest.raises(CheckpointError, match="local header"):
            load_from_sources(ckpt.tensors, list(ckpt.tensors), "cpu")


def test_storage_local_header_damaged(worker: Worker, tmp_path: Path) -> None:
    """A storage whose local header signature is gone: listing still works (it reads no
    storage headers), reading that tensor says the archive is damaged, in one sentence."""
    path = H.raw_zip(tmp_path / "hdr.pt", H.torch_records())
    with zipfile.ZipFile(path) as z:
        at = z.getinfo("archive/data/0").header_offset
    data = bytearray(path.read_bytes())
    assert data[at:at + 4] == b"PK\x03\x04"
    data[at:at + 4] = b"XXXX"
    path.write_bytes(bytes(data))
    _, ckpt = open_ok(worker, path)
    assert ckpt is not None and set(ckpt.tensors) == set(H.small_state())
    with pytest.raises(CheckpointError, match="no local header where the directory says"):
        load_from_sources(ckpt.tensors, list(ckpt.tensors), "cpu")


def test_path_traversal_names(worker: Worker, tmp_path: Path) -> None:
    records = [*H.torch_records(), ("../../evil", b"x"), ("/etc/evil2", b"y"),
               ("archive/../../evil3", b"z")]
    path = H.raw_zip(tmp_path / "trav.pt", records)
    _, ckpt = open_ok(worker, path)
    assert ckpt is not None
    messages = " ".join(f.message for f in ckpt.findings)
    assert "outside the archive" in messages
    assert set(ckpt.tensors) == set(H.small_state())
    assert not (tmp_path.parent / "evil").exists()


def bomb_archive(path: Path, megabytes: int, declared: int | None) -> Path:
    others = [H.RawRecord(n, d) for n, d in H.torch_records() if not n.endswith("data.pkl")]
    stream = H.deflated_zeros(megabytes)
    pkl = H.RawRecord("archive/data.pkl", stream, method=8, crc=0,
                      size=megabytes << 20 if declared is None else declared)
    return H.build_zip(path, [pkl, *others])


@pytest.mark.parametrize(("megabytes", "message"), [(400, "decompression bomb"),
                                                    (3000, "over the")])
def test_decompression_bomb(worker: Worker, tmp_path: Path, megabytes: int,
                            message: str) -> None:
    """About 1,000:1, declared honestly: refused by its ratio (or by its size) before a
    byte is inflated."""
    path = bomb_archive(tmp_path / "bomb.pt", megabytes, None)
    _, ckpt = open_ok(worker, path)
    assert ckpt is not None
    assert any(message in f.message and f.severity == "error" for f in ckpt.findings)


def test_decompression_bomb_that_lies_about_its_size(worker: Worker, tmp_path: Path) -> None:
    """The directory claims a modest size (a ratio within budget) but the stream inflates
    to 400 MB: the reader must stop at the declared size, not at the pickle budget."""
    stream_len = len(H.deflated_zeros(400))
    path = bomb_archive(tmp_path / "liar.pt", 400, declared=stream_len * 50)
    _, ckpt = open_ok(worker, path)
    assert ckpt is not None
    assert any(f.severity == "error" and f.kind in ("corrupt", "truncated")
               for f in ckpt.findings)


def test_more_than_10000_entries(worker: Worker, tmp_path: Path) -> None:
    records = H.torch_records() + [(f"archive/extra/{i}", b"") for i in range(12_000)]
    path = H.raw_zip(tmp_path / "many.pt", records)
    _, ckpt = open_ok(worker, path)
    assert ckpt is not None and set(ckpt.tensors) == set(H.small_state())
    assert ckpt.metadata["records"] == len(records)


def test_zip64_archive(worker: Worker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every record with zip64 extras and a zip64 end record, as zipfile writes archives
    over 4 GB or 65,535 records; torch reads it, so must ckwidget."""
    monkeypatch.setattr(zipfile, "ZIP64_LIMIT", 0)
    monkeypatch.setattr(zipfile, "ZIP_FILECOUNT_LIMIT", 0)
    path = H.raw_zip(tmp_path / "z64.pt", H.torch_records())
    monkeypatch.undo()
    assert b"PK\x06\x06" in path.read_bytes()
    ref = torch.load(path, weights_only=True)
    _, ckpt = open_ok(worker, path)
    assert ckpt is not None
    assert set(ckpt.tensors) == set(ref)
    sd = ckpt.state_dict()
    for k, v in ref.items():
        assert torch.equal(sd[k], v)


# --------------------------------------------------------------------------- exhaustion


EXHAUSTION = {
    "deep-marks": H.deep_marks,
    "deep-lists": H.deep_lists,
    "billion-laughs": H.billion_laughs,
    "binunicode8-2**62": lambda: H.huge_length(b"\x8d"),
    "binbytes8-2**62": lambda: H.huge_length(b"\x8e"),
    "bytearray8-2**62": lambda: H.huge_length(b"\x96"),
    "binunicode-4GB": lambda: H.proto(2) + b"X\xff\xff\xff\xff" + b"a" * 10 + b".",
    "huge-long4": H.huge_long4,
    "big-long4": H.big_long4,
    "hash-bomb": H.hash_bomb,
    "millions-of-empty-tuples": H.many_empty_tuples,
    "millions-on-the-stack": H.many_empty_tuples_on_the_stack,
}


WIDE_TUPLE = [pytest.mark.slow]


@pytest.mark.parametrize("container", ["plain", "zip"])
@pytest.mark.parametrize("name", [
    pytest.param(n, marks=WIDE_TUPLE) if n == "millions-of-empty-tuples" else n
    for n in EXHAUSTION])
def test_machine_exhaustion(worker: Worker, tmp_path: Path, name: str, container: str) -> None:
    data = EXHAUSTION[name]()
    if container == "plain":
        path = tmp_path / f"{name}.bin"
        path.write_bytes(data)
    else:
        path = H.raw_zip(tmp_path / f"{name}.pt", [
            (n, data if n.endswith("data.pkl") else d) for n, d in H.torch_records()])
    result = measured(worker, path)
    if result["ok"]:
        assert result["findings"], result


# Shared-reference bombs that once made the tree walks hang (killed after 6 s); they run
# with the slow tests.
@pytest.mark.slow
def test_shared_reference_bomb_written_by_torch_save(worker: Worker, tmp_path: Path) -> None:
    path = tmp_path / "shared.pt"
    torch.save({"model": H.small_state(), "bomb": H.shared_bomb()}, path)
    assert path.stat().st_size < 100_000
    result = measured(worker, path)
    assert result["ok"]


@pytest.mark.slow
def test_shared_reference_bomb_of_wide_lists(worker: Worker, tmp_path: Path) -> None:
    """Wide levels: a metadata summary that walks 200 items per level, 6 levels deep,
    would visit 200**6 nodes."""
    path = tmp_path / "wide.pt"
    torch.save({"model": H.small_state(), "bomb": H.shared_bomb(levels=8, width=300)}, path)
    result = measured(worker, path)
    assert result["ok"]
