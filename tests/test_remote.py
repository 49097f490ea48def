"""Checkpoints where they live (issue 22): every format opens from a URL by range reads,
against real servers on loopback (an HTTP server with and without Range support, moto's
S3 server through s3fs) and fsspec's memory filesystem, with the same tensors, findings
and diagnosis as the local file; round trips counted; holes never read as data."""

from __future__ import annotations

import gzip
import importlib.util
import io
import json
import os
import pickle
import sys
import tarfile
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from tests._build_formats import gguf_bytes, keras_h5_bytes, mixed_state_dict, onnx_bytes

fsspec = pytest.importorskip("fsspec")
pytest.importorskip("aiohttp")

import ckwidget as ck  # noqa: E402
from ckwidget.errors import CheckpointChangedError, CheckpointError  # noqa: E402
from ckwidget.readers import remote  # noqa: E402

_BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "remote_open.py"
_spec = importlib.util.spec_from_file_location("ckwidget_bench_remote_open", _BENCH)
servers = importlib.util.module_from_spec(_spec)
assert _spec.loader is not None
sys.modules[_spec.name] = servers
_spec.loader.exec_module(servers)


# -- the checkpoints: every kind the suite builds ----------------------------------------------
class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.out = nn.Linear(3, 2)


def _net_state(prefix: str = "") -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    return {prefix + k: v.clone() for k, v in Net().state_dict().items()}


class _Evil:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, ("echo pwned",))


def _hf(root: Path, suffix: str) -> None:
    from safetensors.torch import save_file

    root.mkdir()
    sd = {k: v for k, v in mixed_state_dict().items() if k != "c"}
    keys = list(sd)
    weight_map = {}
    for i in range(2):
        shard = f"model-0000{i + 1}-of-00002{suffix}"
        part = {k: sd[k] for k in keys[i::2]}
        if suffix == ".safetensors":
            save_file(part, str(root / shard), metadata={"format": "pt"})
        else:
            torch.save(part, root / shard)
        weight_map.update(dict.fromkeys(part, shard))
    index = "model.safetensors" if suffix == ".safetensors" else "pytorch_model.bin"
    (root / f"{index}.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (root / "config.json").write_text(json.dumps({"model_type": "t", "hidden_size": 8}))


def build_all(root: Path) -> dict[str, tuple[str, type[nn.Module] | None]]:
    """name -> (path relative to root, model class to diagnose against or None)."""
    from safetensors.torch import save_file

    out: dict[str, tuple[str, type[nn.Module] | None]] = {}

    def put(name: str, rel: str, model: type[nn.Module] | None = None) -> Path:
        out[name] = (rel, model)
        return root / rel

    torch.save(_net_state(), put("torch-zip", "net.pt", Net))
    torch.save({"state_dict": _net_state("module."), "epoch": 3, "lr": 0.1},
               put("torch-zip-nested", "nested.ckpt", Net))
    torch.save(mixed_state_dict(), put("torch-zip-mixed", "mixed.pt"))
    # over the head and tail (128 KiB): the directory and records come in later waves
    big = {f"layers.{i}.weight": torch.randn(64, 64) for i in range(40)}
    torch.save(big, put("torch-zip-big", "big.pt"))
    torch.save(_net_state(), put("torch-legacy", "legacy.pt", Net),
               _use_new_zipfile_serialization=False)
    save_file(_net_state(), str(put("safetensors", "net.safetensors", Net)))
    save_file({k: v for k, v in mixed_state_dict().items() if k != "c"},
              str(put("safetensors-mixed", "mixed.safetensors")))
    import numpy as np

    np.save(put("npy", "arr.npy"), np.arange(12, dtype=np.float32).reshape(3, 4))
    np.savez(put("npz", "arrs.npz"), a=np.arange(4.0), b=np.ones((2, 2), dtype=np.int16))
    torch.jit.save(torch.jit.script(nn.Linear(2, 2)), put("torchscript", "script.pt"))
    put("pickle", "plain.pkl").write_bytes(pickle.dumps({"epoch": 3, "w": [1.0, 2.0]}))
    put("malicious", "evil.pkl").write_bytes(pickle.dumps({"x": _Evil()}))
    put("gguf", "m.gguf").write_bytes(gguf_bytes())
    put("onnx", "m.onnx").write_bytes(onnx_bytes())
    put("keras-h5", "tf_model.h5").write_bytes(keras_h5_bytes())
    buf = io.BytesIO()
    torch.save(_net_state(), buf)
    put("gzip", "net.pt.gz").write_bytes(gzip.compress(buf.getvalue()))
    with tarfile.open(put("tar", "ckpt.tar"), "w") as tar:
        info = tarfile.TarInfo("weights/readme.txt")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"hello"))
    put("empty", "empty.pt").write_bytes(b"")
    put("lfs-pointer", "lfs.bin").write_bytes(
        b"version https://git-lfs.github.com/spec/v1\noid sha256:" + b"a" * 64
        + b"\nsize 12345\n")
    put("html", "page.pt").write_bytes(b"<!DOCTYPE html><html><title>Sign in</title></html>")
    put("unknown", "junk.bin").write_bytes(bytes(range(7, 250)) * 3)
    put("truncated", "cut.pt").write_bytes((root / "big.pt").read_bytes()[:150_000])
    damaged = bytearray((root / "net.pt").read_bytes())
    at = damaged.find(b"data.pkl") + len(b"data.pkl") + 40  # inside data.pkl's bytes
    damaged[at] ^= 0x01
    put("crc", "crc.pt").write_bytes(bytes(damaged))
    _hf(put("hf-safetensors", "hf-st"), ".safetensors")
    _hf(put("hf-bin", "hf-bin"), ".bin")
    single = put("hf-single", "hf-single", Net)
    single.mkdir()
    save_file(_net_state(), str(single / "model.safetensors"))
    (single / "config.json").write_text(json.dumps({"model_type": "net"}))
    step = put("deepspeed", "ds", Net) / "global_step10"
    step.mkdir(parents=True)
    (root / "ds" / "latest").write_text("global_step10")
    torch.save({"module": _net_state(), "global_steps": 10},
               step / "mp_rank_00_model_states.pt")
    import warnings

    import torch.distributed.checkpoint as dcp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save(_net_state(), checkpoint_id=str(put("dcp", "dcp", Net)), no_dist=True)
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("remote-corpus")
    return root, build_all(root)


@pytest.fixture(scope="module")
def http(corpus):
    root, _ = corpus
    with servers.serve(root) as server:
        yield server


@pytest.fixture(scope="module")
def s3(corpus):
    pytest.importorskip("s3fs")
    pytest.importorskip("moto.server")
    root, _ = corpus
    with servers.moto_s3() as options:
        servers.make_bucket(options, "ckpts")
        fs = fsspec.filesystem("s3", **options)
        fs.put(str(root) + "/", "ckpts/", recursive=True)
        yield options


@pytest.fixture(scope="module")
def memory(corpus):
    root, _ = corpus
    fs = fsspec.filesystem("memory")
    fs.put(str(root) + "/", "/corpus/", recursive=True)
    yield "memory://corpus"
    fs.rm("/corpus", recursive=True)


def _url(transport: str, rel: str, root: Path, request) -> tuple[str, dict | None]:
    folder = (root / rel).is_dir()
    if transport == "memory":
        request.getfixturevalue("memory")
        return f"memory://corpus/{rel}", None
    if transport == "http":
        server = request.getfixturevalue("http")
        return f"{server.url}/{rel}{'/' if folder else ''}", None
    options = request.getfixturevalue("s3")
    return f"s3://ckpts/{rel}", options


def _summary(ckpt: ck.Checkpoint) -> tuple:
    return (ckpt.format, {k: (v.shape, v.dtype, v.layout) for k, v in ckpt.tensors.items()},
            sorted(f.kind for f in ckpt.findings), list(ckpt.candidates))


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    return a.contiguous().view(-1).view(torch.uint8).equal(b.contiguous().view(-1)
                                                           .view(torch.uint8))


FORMATS = ["torch-zip", "torch-zip-nested", "torch-zip-mixed", "torch-zip-big", "torch-legacy",
           "safetensors", "safetensors-mixed", "npy", "npz", "torchscript", "pickle",
           "malicious", "gguf", "onnx", "keras-h5", "gzip", "tar", "empty", "lfs-pointer",
           "html", "unknown", "truncated", "crc", "hf-safetensors", "hf-bin", "hf-single",
           "deepspeed", "dcp"]
TRANSPORTS = ["memory", "http", "s3"]


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("name", FORMATS)
def test_every_format_opens_remotely_as_locally(corpus, name: str, transport: str,
                                                request) -> None:
    root, built = corpus
    rel, model_cls = built[name]
    local = ck.open_checkpoint(root / rel)
    url, options = _url(transport, rel, root, request)
    far = ck.open_checkpoint(url, storage_options=options)
    assert isinstance(far, remote.RemoteCheckpoint)
    assert _summary(far) == _summary(local)
    assert far.metadata["url"] == url and str(far.path) == url.rstrip("/")
    assert far.io_stats.bytes_read <= max(far.io_stats.size, 1) * 1.01
    # the cache folder's path never shows; the URL does where a reader quotes the folder
    assert not any(str(far.cache_path) in f.message for f in far.findings)
    readable = [k for k, v in local.tensors.items() if v.source is not None]
    if readable:
        near, got = local.load(readable), far.load(readable)
        assert all(_same_bits(got[k], near[k]) for k in readable)
    if model_cls is not None:
        torch.manual_seed(0)
        mine, theirs = ck.diagnose(local, model_cls()), ck.diagnose(far, model_cls())
        assert theirs.status == mine.status
        assert [f.kind for f in theirs.plan] == [f.kind for f in mine.plan]
        assert sorted(f.kind for f in theirs.findings) == sorted(f.kind for f in mine.findings)
        a, b = model_cls(), model_cls()
        mine.plan.apply(a)
        theirs.plan.apply(b)
        assert all(_same_bits(x, y) for x, y in zip(a.state_dict().values(),
                                                      b.state_dict().values()))
    far.close()


# -- round trips and bytes --------------------------------------------------------------------
def _http_open(server, rel: str) -> tuple[ck.Checkpoint, int]:
    before = len(server.requests)
    ckpt = ck.open_checkpoint(f"{server.url}/{rel}")
    return ckpt, len(server.requests) - before


def test_a_torch_zip_opens_in_few_round_trips_and_bytes(tmp_path: Path) -> None:
    sd = {f"blocks.{i}.weight": torch.zeros(256, 256) for i in range(24)}  # 6 MB
    sd.update({f"blocks.{i}.bias": torch.zeros(256) for i in range(24)})
    torch.save({"model": sd, "step": 7}, tmp_path / "m.pt")
    size = (tmp_path / "m.pt").stat().st_size
    with servers.serve(tmp_path, latency=0.02) as server:
        ckpt, served = _http_open(server, "m.pt")
    stats = ckpt.io_stats
    assert len(ckpt.tensors) == 48 and ckpt.candidates[0] == "model"
    # info, then the first and last 64 KiB in parallel: data.pkl, the small records and
    # the directory are all in them
    assert stats.round_trips <= 2 and served == stats.requests <= 3
    assert stats.bytes_read <= 140_000 < size
    # an Apply-style read fetches what it needs in one more wave
    before = stats.round_trips
    got = ckpt.state_dict("model", keys=["blocks.3.weight", "blocks.5.bias"])
    assert got["blocks.3.weight"].shape == (256, 256)
    assert stats.round_trips == before + 1
    assert any("Downloading" in n for n in stats.notes)


def test_a_large_directory_takes_at_most_four_round_trips(tmp_path: Path) -> None:
    sd = {f"layer.{i}.w": torch.zeros(1) for i in range(4000)}  # a 300 KB directory
    torch.save(sd, tmp_path / "many.pt")
    with servers.serve(tmp_path) as server:
        ckpt, served = _http_open(server, "many.pt")
    assert len(ckpt.tensors) == 4000
    assert ckpt.io_stats.round_trips <= 4
    assert served == ckpt.io_stats.requests


def test_a_sharded_folder_reads_its_shards_in_parallel(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    folder = tmp_path / "hf"
    folder.mkdir()
    weight_map = {}
    for s in range(4):
        name = f"model-0000{s + 1}-of-00004.safetensors"
        part = {f"layers.{s}.{j}.weight": torch.zeros(64, 64) for j in range(8)}
        save_file(part, str(folder / name))
        weight_map.update(dict.fromkeys(part, name))
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (folder / "config.json").write_text("{}")
    with servers.serve(tmp_path, latency=0.05) as server:
        ckpt, served = _http_open(server, "hf/")
    stats = ckpt.io_stats
    assert ckpt.format == "hf-sharded" and len(ckpt.tensors) == 32
    # listing, each file's size (HEAD, together), then index, config and 4 shard headers
    assert stats.round_trips <= 3 and served == stats.requests
    fs = fsspec.filesystem("memory")
    fs.put(str(folder) + "/", "/hf4/", recursive=True)
    ckpt = ck.open_checkpoint("memory://hf4")
    assert ckpt.io_stats.round_trips <= 2 and len(ckpt.tensors) == 32


class _Shards(nn.Module):
    """The model of ``_sharded``'s folder: layers.{shard}.{i}.weight, 512 x 512."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            nn.ModuleList(nn.Linear(512, 512, bias=False) for _ in range(4)) for _ in range(4))


def _sharded(folder: Path, suffix: str) -> None:
    """4 shards of 4 tensors of 1 MB (sampled as spread blocks, not read whole); one
    tensor all NaN."""
    from safetensors.torch import save_file

    folder.mkdir()
    weight_map = {}
    torch.manual_seed(0)
    for s in range(4):
        name = f"model-0000{s + 1}-of-00004{suffix}"
        part = {f"layers.{s}.{j}.weight": torch.randn(512, 512) for j in range(4)}
        if s == 2:
            part["layers.2.1.weight"].fill_(float("nan"))
        if suffix == ".safetensors":
            save_file(part, str(folder / name), metadata={"format": "pt"})
        else:
            torch.save(part, folder / name)
        weight_map.update(dict.fromkeys(part, name))
    index = "model.safetensors" if suffix == ".safetensors" else "pytorch_model.bin"
    (folder / f"{index}.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (folder / "config.json").write_text("{}")


@pytest.mark.parametrize("suffix", [".safetensors", ".bin"])
def test_a_sampled_diagnosis_of_shards_reads_its_values_in_one_round_trip(
        tmp_path: Path, suffix: str) -> None:
    """The value checks' sampled ranges of every shard are fetched as one wave, all of
    its requests sent at once (not a thread pool's worth at a time); a torch zip
    record's blocks come with its local header. Counted, not timed: the latency only
    keeps the requests in flight long enough to be counted together."""
    _sharded(tmp_path / "hf", suffix)
    local = ck.diagnose(tmp_path / "hf", _Shards())
    with servers.serve(tmp_path, latency=0.2) as server:
        ckpt, _ = _http_open(server, "hf/")
        stats = ckpt.io_stats
        opened = (stats.round_trips, stats.requests, stats.bytes_read)
        server.most_in_flight = 0
        before = len(server.requests)
        report = ck.diagnose(ckpt, _Shards())
        sent = server.requests[before:]
        in_flight = server.most_in_flight
    trips, requests, nbytes = (stats.round_trips - opened[0], stats.requests - opened[1],
                               stats.bytes_read - opened[2])
    # one wave: every sampled block of the 16 tensors (4 each), and each shard asked
    # whether it changed (HEAD)
    assert trips == 1
    assert requests == len(sent) and sum(m == "HEAD" for m, _, _ in sent) == 4
    assert 4 * 4 < requests <= 16 * 4 + 4 + 4  # spread blocks, a few coalesced
    assert in_flight > remote.WORKERS  # sent together, not a thread pool at a time
    assert nbytes < 16 * (1 << 20) // 3  # blocks only, not the tensors
    assert report.status == local.status
    assert sorted(f.kind for f in report.findings) == sorted(f.kind for f in local.findings)
    got = next(f for f in report.findings if f.kind == "nonfinite")
    assert got.keys == ["layers.2.1.weight"]
    assert got.keys == next(f for f in local.findings if f.kind == "nonfinite").keys
    ckpt.close()


# -- holes, tensors on demand -----------------------------------------------------------------
def test_holes_are_never_read_as_data(tmp_path: Path) -> None:
    sd = {"ones": torch.ones(300_000), "twos": torch.full((300_000,), 2.0)}
    torch.save(sd, tmp_path / "m.pt")
    fsspec.filesystem("memory").put(str(tmp_path / "m.pt"), "/holes/m.pt")
    ckpt = ck.open_checkpoint("memory://holes/m.pt")
    obj = next(iter(ckpt.session.objects.values()))
    assert obj.filled.total() < obj.size // 4  # the tensors are not cached yet...
    assert torch.equal(ckpt.read("twos"), sd["twos"])  # ...and read as what they are
    assert torch.equal(ckpt.state_dict()["ones"], sd["ones"])
    # the readers' own file reads go through the cache's guard too
    from ckwidget.readers.filestamp import open_for_read

    fresh = ck.open_checkpoint("memory://holes/m.pt")
    with open_for_read(fresh.cache_path) as fh:
        raw = fh.read()
    assert raw == (tmp_path / "m.pt").read_bytes()


def test_read_sample_reads_only_its_blocks_and_read_has_a_limit(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    big = torch.arange(4_000_000, dtype=torch.float32)  # 16 MB
    save_file({"big": big}, str(tmp_path / "b.safetensors"))
    fsspec.filesystem("memory").put(str(tmp_path / "b.safetensors"), "/s/b.safetensors")
    ckpt = ck.open_checkpoint("memory://s/b.safetensors")
    before = ckpt.io_stats.bytes_read
    values = ckpt.read_sample("big", 4096)
    assert len(values) == 4096 and values[0] == 0 and values[-1] == 3_999_999
    assert set(values.tolist()) <= set(range(4_000_000))
    assert ckpt.io_stats.bytes_read - before < 40_000
    ckpt.read_budget = 1 << 20
    with pytest.raises(CheckpointError,
                       match=r"would download 1\d\.\d MB.*at most 1\.0 MB in all.*fetch"):
        ckpt.read("big")
    ckpt.fetch(["big"])
    assert torch.equal(ckpt.read("big"), big)
    # torch zip and legacy records too, many tensors in one wave (two for zip: headers)
    sd = {f"w{i}": torch.arange(500_000, dtype=torch.float32) * i for i in range(4)}
    sd["small"] = torch.tensor([1.5, float("nan")])
    torch.save(sd, tmp_path / "z.pt")
    torch.save(sd, tmp_path / "l.pt", _use_new_zipfile_serialization=False)
    for name in ("z.pt", "l.pt"):
        fsspec.filesystem("memory").put(str(tmp_path / name), f"/s/{name}")
        ckpt = ck.open_checkpoint(f"memory://s/{name}")
        before = (ckpt.io_stats.bytes_read, ckpt.io_stats.round_trips)
        got = ckpt.read_samples({**dict.fromkeys([f"w{i}" for i in range(4)], 800),
                                 "small": 10})
        assert ckpt.io_stats.round_trips - before[1] <= 2
        assert ckpt.io_stats.bytes_read - before[0] < 100_000
        assert got["w3"][0] == 0 and got["w3"][-1] == 3 * 499_999 and len(got["w3"]) == 800
        assert got["small"][0] == 1.5 and len(got["small"]) == 2


def test_verify_streams_every_record_and_finds_damage(tmp_path: Path) -> None:
    sd = {f"w{i}": torch.randn(100_000) for i in range(8)}
    torch.save(sd, tmp_path / "m.pt")
    raw = bytearray((tmp_path / "m.pt").read_bytes())
    at = raw.find(b"data/5") + 200
    raw[at] ^= 0xFF
    (tmp_path / "bad.pt").write_bytes(bytes(raw))
    fs = fsspec.filesystem("memory")
    fs.put(str(tmp_path / "m.pt"), "/v/m.pt")
    fs.put(str(tmp_path / "bad.pt"), "/v/bad.pt")
    good = ck.open_checkpoint("memory://v/m.pt")
    assert good.verify() == []
    obj = next(iter(good.session.objects.values()))
    assert obj.filled.total() < obj.size  # streamed, not kept
    bad = ck.open_checkpoint("memory://v/bad.pt")
    local = ck.open_checkpoint(tmp_path / "bad.pt").verify()
    found = bad.verify()
    assert [(f.kind, f.keys) for f in found] == [(f.kind, f.keys) for f in local]
    assert found and found[0].details["crc"]


# -- servers that do not answer ranges, changed objects, missing packages ---------------------
def test_a_server_without_ranges_is_read_whole_once_saying_so(tmp_path: Path,
                                                              monkeypatch) -> None:
    sd = {f"w{i}": torch.randn(20_000) for i in range(4)}  # 320 KB: over head and tail
    torch.save(sd, tmp_path / "m.pt")
    with servers.serve(tmp_path, ranges=False) as server:
        ckpt, served = _http_open(server, "m.pt")
        assert set(ckpt.tensors) == set(sd)
        assert any("range requests" in n and "whole once" in n for n in ckpt.io_stats.notes)
        assert all(torch.equal(ckpt.read(k), v) for k, v in sd.items())
        assert served <= 5
        monkeypatch.setattr(remote, "NO_RANGE_LIMIT", 100_000)
        with pytest.raises(ck.NotACheckpointError, match="download it once yourself"):
            ck.open_checkpoint(f"{server.url}/m.pt")


@pytest.mark.parametrize("transport", ["memory", "http"])
def test_a_changed_object_raises_the_changed_sentence(tmp_path: Path, transport: str) -> None:
    sd = {"a": torch.randn(100_000), "b": torch.randn(100_000)}
    torch.save(sd, tmp_path / "m.pt")
    fs = fsspec.filesystem("memory")
    if transport == "memory":
        fs.put(str(tmp_path / "m.pt"), "/chg/m.pt")
        ckpt = ck.open_checkpoint("memory://chg/m.pt")
    else:
        server_cm = servers.serve(tmp_path)
        server = server_cm.__enter__()
        ckpt = ck.open_checkpoint(f"{server.url}/m.pt")
    try:
        ckpt.read("a")
        time.sleep(0.01)
        torch.save({"a": torch.zeros(3)}, tmp_path / "m.pt")
        if transport == "memory":
            fs.put(str(tmp_path / "m.pt"), "/chg/m.pt")
        with pytest.raises(CheckpointChangedError,
                           match=r"m\.pt changed on disk since it was opened \(its "):
            ckpt.read("b")
        with pytest.raises(CheckpointChangedError):
            ckpt.refresh()
    finally:
        if transport == "http":
            server_cm.__exit__(None, None, None)


def test_without_fsspec_a_url_names_the_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "fsspec", None)
    with pytest.raises(ck.NotACheckpointError, match=r"pip install ckwidget\[remote\]"):
        ck.open_checkpoint("s3://bucket/model.pt")


def test_a_missing_object_is_one_sentence() -> None:
    with pytest.raises(ck.NotACheckpointError, match="There is no file or folder at"):
        ck.open_checkpoint("memory://nowhere/model.pt")


def test_large_files_of_formats_read_without_ranges_are_refused(tmp_path: Path,
                                                                monkeypatch) -> None:
    import numpy as np

    np.save(tmp_path / "a.npy", np.zeros(50_000, dtype=np.float32))
    fsspec.filesystem("memory").put(str(tmp_path / "a.npy"), "/big/a.npy")
    monkeypatch.setattr(remote, "WHOLE_OBJECT_LIMIT", 100_000)
    with pytest.raises(ck.NotACheckpointError, match="only whole"):
        ck.open_checkpoint("memory://big/a.npy")


def test_a_large_legacy_file_is_read_by_prefix_and_storage_headers(tmp_path: Path,
                                                                   monkeypatch) -> None:
    sd = {f"w{i}": torch.randn(50_000) for i in range(6)}  # 1.2 MB
    torch.save({"state_dict": sd}, tmp_path / "old.pt", _use_new_zipfile_serialization=False)
    fsspec.filesystem("memory").put(str(tmp_path / "old.pt"), "/leg/old.pt")
    monkeypatch.setattr(remote, "WHOLE_OBJECT_LIMIT", 100_000)
    far = ck.open_checkpoint("memory://leg/old.pt")
    near = ck.open_checkpoint(tmp_path / "old.pt")
    assert _summary(far) == _summary(near)
    assert far.io_stats.bytes_read < 150_000
    got = far.state_dict("state_dict")
    assert all(torch.equal(got[k], v) for k, v in sd.items())


# -- the public surface --------------------------------------------------------------------------
def test_diagnose_takes_storage_options_and_the_cli_a_storage_option(s3, capsys) -> None:
    report = ck.diagnose("s3://ckpts/nested.ckpt", Net(), storage_options=s3)
    assert report.status == "fixable"
    code = report.plan.to_code()
    assert "s3://ckpts/nested.ckpt" in code  # the plan names the URL, never the cache
    assert report.checkpoint.metadata["storage_options_keys"] == sorted(s3)
    from ckwidget.cli import main

    args = ["inspect", "s3://ckpts/net.pt", "-v"]
    for key in ("endpoint_url", "key", "secret"):
        args += ["--storage-option", f"{key}={s3[key]}"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "Remote reads" in out and "round trips" in out and "s3://ckpts/net.pt" in out
    assert main(["inspect", "memory://nowhere/x.pt"]) == 3
    assert main(["inspect", "s3://ckpts/net.pt", "--storage-option", "novalue"]) == 4
