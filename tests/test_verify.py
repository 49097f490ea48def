"""``Checkpoint.verify``: every byte read once, CRCs torch never checks, safetensors read back.

The case that matters: a crashed copy left the last storage of a torch.save file
zero-filled in place (same size). torch.load accepts it without a word and gives wrong
weights; verify names the record and the tensors stored in it.
"""

from __future__ import annotations

import os
import random
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file

import ckwidget as ck
from ckwidget.diagnosis.checks import integrity
from ckwidget.errors import CheckpointChangedError
from ckwidget.readers.budgets import DEFAULT_BUDGETS
from ckwidget.readers.zipdir import read_directory, verified_bytes, verify_records

MODELS = '''
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(16, 16)])
        self.embed = nn.Embedding(10, 16)
        self.out = nn.Linear(16, 10, bias=False)
        self.out.weight = self.embed.weight  # tied: one storage, two keys


def build():
    return Net()
'''


def _net_state() -> dict[str, torch.Tensor]:
    namespace: dict = {}
    exec(MODELS, namespace)
    return namespace["build"]().state_dict()


def _record_span(path: Path, name: str) -> tuple[int, int]:
    """Where a stored record's bytes start, and how many there are."""
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(name)
    with open(path, "rb") as fh:
        fh.seek(info.header_offset + 26)
        name_len, extra_len = struct.unpack("<2H", fh.read(4))
    return info.header_offset + 30 + name_len + extra_len, info.file_size


def _last_storage(path: Path) -> str:
    with zipfile.ZipFile(path) as z:
        records = [i for i in z.infolist() if "/data/" in i.filename
                   and not i.filename.endswith("/data.pkl")]
    return max(records, key=lambda i: i.header_offset).filename


def _zero_fill(path: Path, name: str) -> None:
    """What a crashed copy leaves: the record's bytes zeroed in place, the size kept."""
    start, size = _record_span(path, name)
    with open(path, "r+b") as fh:
        fh.seek(start)
        fh.write(bytes(size))


@pytest.fixture
def damaged(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor], str]:
    sd = _net_state()
    path = tmp_path / "damaged.pt"
    torch.save(sd, path)
    record = _last_storage(path)
    size_before = path.stat().st_size
    _zero_fill(path, record)
    assert path.stat().st_size == size_before
    return path, sd, record


def test_zero_filled_last_storage_loads_in_torch_and_verify_names_it(damaged) -> None:
    path, sd, record = damaged
    # the point: torch loads the damaged file without a word, with other weights
    loaded = torch.load(path, weights_only=True)
    assert set(loaded) == set(sd)
    assert not loaded["embed.weight"].any() and sd["embed.weight"].any()
    assert loaded["out.weight"].data_ptr() == loaded["embed.weight"].data_ptr()

    ckpt = ck.open_checkpoint(path)
    assert not [f for f in ckpt.findings if f.details.get("crc")]  # open reads no weights
    found = ckpt.verify()
    assert len(found) == 1, found
    f = found[0]
    assert (f.kind, f.severity) == ("corrupt", "error")
    assert f.details["crc"] is True and f.details["record"] == record
    assert sorted(f.keys) == ["embed.weight", "out.weight"]
    assert record in f.message and "embed.weight" in f.message and "out.weight" in f.message
    assert "torch does not check CRCs" in f.message and "without a word" in f.message
    assert ckpt.verified == found
    assert ckpt.verify() == found  # deterministic: the same answer again


def test_intact_file_has_no_findings_and_progress_reaches_the_total(tmp_path: Path) -> None:
    path = tmp_path / "ok.pt"
    torch.save(_net_state(), path)
    ckpt = ck.open_checkpoint(path)
    calls: list[tuple[int, int]] = []
    assert ckpt.verify(progress=lambda done, total: calls.append((done, total))) == []
    done = [d for d, _ in calls]
    assert done == sorted(set(done)), calls  # strictly increasing
    total = calls[-1][1]
    assert {t for _, t in calls} == {total} and done[-1] == total
    with zipfile.ZipFile(path) as z:
        assert total == sum(i.compress_size for i in z.infolist())


def test_records_stream_in_chunks_with_bounded_counts(tmp_path: Path) -> None:
    path = tmp_path / "big.pt"
    torch.save({"w": torch.randn(64, 64), "b": torch.randn(64)}, path)
    directory = read_directory(path, DEFAULT_BUDGETS)
    steps: list[int] = []
    assert verify_records(directory, chunk=1000, on_bytes=steps.append) == []
    assert sum(steps) == verified_bytes(directory)
    assert len(steps) > 10 and all(0 < s < 1000 + 16384 for s in steps)


def test_deflated_records_are_checked_on_their_inflated_bytes(tmp_path: Path) -> None:
    path = tmp_path / "plain.zip"
    text = b"weights " * 500 + random.Random(0).randbytes(20_000)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("a/stored", b"x" * 100, zipfile.ZIP_STORED)
        z.writestr("a/deflated", text, zipfile.ZIP_DEFLATED)
    assert verify_records(read_directory(path, DEFAULT_BUDGETS), chunk=64) == []
    # same size, other content: the CRC in the directory is now wrong
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("a/deflated")
    data = bytearray(path.read_bytes())
    other = zlib.compressobj(9, zlib.DEFLATED, -15)
    body = other.compress(b"Weights " + text[8:]) + other.flush()
    start, _ = _record_span(path, "a/deflated")
    assert len(body) <= info.compress_size
    data[start:start + len(body)] = body
    path.write_bytes(bytes(data))
    failures = verify_records(read_directory(path, DEFAULT_BUDGETS), chunk=64)
    assert [x.name for x in failures] == ["a/deflated"]


def test_damaged_pickle_is_not_reported_twice(tmp_path: Path) -> None:
    path = tmp_path / "pkl.pt"
    torch.save({"weight_a": torch.ones(2), "weight_b": torch.zeros(3)}, path)
    data = path.read_bytes()
    at = data.index(b"weight_a")
    path.write_bytes(data[:at] + b"weight_c" + data[at + 8:])  # CRC kept
    ckpt = ck.open_checkpoint(path)
    at_open = [f for f in ckpt.findings if f.details.get("crc")]
    assert len(at_open) == 1
    found = ckpt.verify()
    assert [f.details["record"] for f in found] == [at_open[0].details["record"]]
    assert "pickle" in found[0].message
    ctx = SimpleNamespace(ckpt=ckpt, blockers=[])
    assert integrity.check(ctx) == [] and ctx.blockers == []


def test_safetensors_reads_back_and_sees_changes(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    save_file({"a": torch.randn(100), "b": torch.randn(3, 4)}, str(path))
    ckpt = ck.open_checkpoint(path)
    calls: list[tuple[int, int]] = []
    assert ckpt.verify(progress=lambda d, t: calls.append((d, t))) == []
    assert calls[-1] == (path.stat().st_size, path.stat().st_size)

    data = path.read_bytes()
    path.write_bytes(data[:-40])  # truncated after it was opened
    with pytest.raises(CheckpointChangedError, match="its size went from") as exc:
        ckpt.verify()
    assert "changed on disk since it was opened" in str(exc.value)
    assert "open it again" in str(exc.value)

    path.write_bytes(data)
    again = ck.open_checkpoint(path)
    path.write_bytes(data[:-4] + b"\x00" * 4)  # same size, written again
    os.utime(path, ns=(0, 1))
    with pytest.raises(CheckpointChangedError, match="it was written again"):
        again.verify()


def test_safetensors_cut_short_before_open_keeps_the_open_findings(tmp_path: Path) -> None:
    path = tmp_path / "cut.safetensors"
    save_file({"a": torch.randn(100), "b": torch.randn(50)}, str(path))
    path.write_bytes(path.read_bytes()[:-100])
    ckpt = ck.open_checkpoint(path)
    assert ckpt.has_finding("truncated")
    assert ckpt.verify() == []  # the ranges were judged at open; the bytes read back


def test_sharded_folder_verifies_every_shard(tmp_path: Path) -> None:
    folder = tmp_path / "hf"
    folder.mkdir()
    save_file({"a": torch.randn(10)}, str(folder / "model-00001-of-00002.safetensors"))
    save_file({"b": torch.randn(20)}, str(folder / "model-00002-of-00002.safetensors"))
    import json

    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        "a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    ckpt = ck.open_checkpoint(folder)
    assert ckpt.format == "hf-sharded"
    calls: list[tuple[int, int]] = []
    assert ckpt.verify(progress=lambda d, t: calls.append((d, t))) == []
    total = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
    assert calls[-1] == (total, total)


def test_other_formats_read_nothing(tmp_path: Path) -> None:
    path = tmp_path / "legacy.pt"
    torch.save({"w": torch.ones(3)}, path, _use_new_zipfile_serialization=False)
    calls: list = []
    assert ck.open_checkpoint(path).verify(progress=calls.append) == []
    assert calls == []
    mem = ck.Checkpoint.from_state_dict({"w": torch.ones(2)})
    assert mem.verify() == []


def test_check_runs_verify_up_to_the_default_size(damaged, monkeypatch) -> None:
    path, _, record = damaged
    ckpt = ck.open_checkpoint(path)
    monkeypatch.setattr(integrity, "VERIFY_BY_DEFAULT_BYTES", ckpt.size - 1)
    ctx = SimpleNamespace(ckpt=ckpt, blockers=[])
    assert integrity.check(ctx) == [] and ckpt.verified is None  # too big: nothing read
    monkeypatch.setattr(integrity, "VERIFY_BY_DEFAULT_BYTES", ckpt.size)
    out = integrity.check(ctx)
    assert [f.details["record"] for f in out] == [record] and ctx.blockers == ["corrupt"]


def test_diagnose_reports_the_damaged_storage(damaged, monkeypatch) -> None:
    from ckwidget.diagnosis import engine
    from ckwidget.diagnosis.checks import corruption

    path, _, record = damaged
    if not hasattr(engine, "integrity"):  # not wired into the engine yet: run it beside
        original = corruption.check
        monkeypatch.setattr(corruption, "check",
                            lambda ctx: [*original(ctx), *integrity.check(ctx)])
    namespace: dict = {}
    exec(MODELS, namespace)
    report = ck.diagnose(path, namespace["build"]())
    crc = [f for f in report.findings if f.details.get("crc")]
    assert len(crc) == 1 and crc[0].details["record"] == record
    assert sorted(crc[0].keys) == ["embed.weight", "out.weight"]
    assert report.status == "broken"


def test_cli_verify_exits_3_and_names_the_tensor(damaged) -> None:
    path, _, record = damaged
    (path.parent / "models.py").write_text(MODELS)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("NO_COLOR", None)
    py = [sys.executable, "-m", "ckwidget"]
    commands = {
        "check": [*py, "check", path.name, "--model", "models.py:build", "--verify"],
        "inspect": [sys.executable, "-X", "importtime", "-m", "ckwidget", "inspect",
                    path.name, "--verify"],
        "inspect_plain": [*py, "inspect", path.name],
    }
    procs = {k: subprocess.Popen(c, cwd=path.parent, env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
             for k, c in commands.items()}
    results = {k: (p.communicate(timeout=300), p.returncode) for k, p in procs.items()}
    (out, err), rc = results["check"]
    assert rc == 3, (out, err)
    assert "Traceback" not in err and "broken file (exit 3)" in out
    assert "embed.weight" in out and "out.weight" in out and record in out
    assert "without a word" in out
    (out, err), rc = results["inspect"]
    assert rc == 3, (out, err)
    assert "embed.weight" in out and "BROKEN" in out
    imported = [line.split("|")[-1].strip() for line in err.splitlines()
                if line.startswith("import time:")]
    assert not [m for m in imported if m == "torch" or m.startswith("torch.")]
    (out, err), rc = results["inspect_plain"]
    assert rc == 0, (out, err)  # without --verify nothing reads the weights' bytes
