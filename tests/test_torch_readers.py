"""The torch readers against the real writers: every torch format is built in code with
torch.save / torch.jit.save (or byte by byte after torch's own loader where no writer is
left), and ckwidget's metadata is compared with what torch itself reports, key by key.
On files torch accepts, both materialisation paths (torch.load through the loader and
ckwidget's own memory-mapped reader) must give bit-identical tensors with equal strides.
"""

from __future__ import annotations

import collections
import importlib
import io
import pickle
import sys
import warnings
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch
from _build_formats import tar_checkpoint

import ckwidget as ck
from ckwidget.checkpoint import dtype_name, load_from_sources
from ckwidget.readers import torch_zip

pytestmark = pytest.mark.filterwarnings(
    "ignore:.*(TypedStorage|quantize_per|ComplexHalf|pickle protocol).*:UserWarning"
)

# --------------------------------------------------------------------------- helpers


def walk(obj: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """Dotted keys of every tensor in a loaded object, named the way the reader names them."""
    out: dict[str, torch.Tensor] = {}
    if isinstance(obj, torch.Tensor):
        out[prefix] = obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            out.update(walk(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            out.update(walk(v, f"{prefix}.{i}" if prefix else str(i)))
    return out


def torch_facts(t: torch.Tensor) -> tuple:
    return (tuple(t.shape), dtype_name(t.dtype), str(t.device), t.numel() * t.element_size())


def assert_same_metadata(ckpt: ck.Checkpoint, reference: dict[str, torch.Tensor]) -> None:
    """Shape, dtype name, device, nbytes and the set of keys, one key at a time."""
    assert set(ckpt.tensors) == set(reference), (
        sorted(set(ckpt.tensors) ^ set(reference))
    )
    for key, t in reference.items():
        info = ckpt.tensors[key]
        got = (info.shape, info.dtype, info.device, info.nbytes)
        assert got == torch_facts(t), key


def raw_bytes(t: torch.Tensor) -> bytes:
    """The tensor's values as bytes, in logical order (NaN-safe, any dense dtype)."""
    flat = t.detach().contiguous().reshape(-1)
    if flat.numel() == 0:
        return b""
    return bytes(flat.view(torch.uint8).numpy().tobytes())


def assert_bit_identical(a: torch.Tensor, b: torch.Tensor, key: str = "") -> None:
    assert a.dtype == b.dtype, key
    assert tuple(a.shape) == tuple(b.shape), key
    assert a.stride() == b.stride(), key
    assert a.storage_offset() == b.storage_offset(), key
    assert raw_bytes(a) == raw_bytes(b), key


def both_paths(ckpt: ck.Checkpoint, reference: dict[str, torch.Tensor],
               monkeypatch: pytest.MonkeyPatch, *, torch_accepts: bool = True) -> None:
    """The loader (torch.load where torch accepts the file) and ckwidget's own reader give
    the same bits as torch, with the same strides."""
    keys = list(reference)
    assert ckpt.metadata.get("torch_weights_only_accepts") is torch_accepts
    own = load_from_sources(ckpt.tensors, keys, "cpu")
    if torch_accepts:
        # Prove the loader really goes through torch.load: the own reader is cut off.
        def refuse(*_a: Any, **_k: Any) -> None:
            raise AssertionError("the loader fell back to the own reader")

        monkeypatch.setattr(torch_zip, "load_from_sources", refuse)
    # every tensor of the file in one call, whatever container it sits in
    via_loader = ckpt.load(keys, "cpu")
    monkeypatch.undo()
    for key, ref in reference.items():
        assert_bit_identical(own[key], ref, key)
        assert_bit_identical(via_loader[key], ref, key)


def save(tmp_path: Path, obj: Any, name: str = "ck.pt", **kwargs: Any) -> Path:
    path = tmp_path / name
    torch.save(obj, path, **kwargs)
    return path


def load_ref(path: Path, **kw: Any) -> Any:
    """What torch reports for a file this test wrote itself (so unpickling is safe)."""
    return torch.load(path, map_location="cpu", **{"weights_only": True, **kw})


def every_dtype() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    base = torch.randn(2, 3, generator=g)
    out = {
        "float64": base.double(), "float32": base, "float16": base.half(),
        "bfloat16": base.bfloat16(),
        "complex64": torch.randn(2, 3, generator=g, dtype=torch.complex64),
        "complex128": torch.randn(2, 3, generator=g, dtype=torch.complex128),
        "int8": torch.arange(-3, 3, dtype=torch.int8),
        "int16": torch.arange(-3, 3, dtype=torch.int16),
        "int32": torch.arange(-3, 3, dtype=torch.int32),
        "int64": torch.arange(-3, 3, dtype=torch.int64) * (1 << 40),
        "uint8": torch.arange(250, 256, dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]),
        "nan": torch.tensor([float("nan"), float("inf"), -0.0]),
        "scalar": torch.tensor(3.5),
        "empty": torch.zeros(0, 5),
    }
    for name in ("uint16", "uint32", "uint64"):
        out[name] = torch.arange(6, dtype=torch.int64).to(getattr(torch, name))
    for name in ("float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz",
                 "float8_e8m0fnu", "complex32"):
        dtype = getattr(torch, name, None)
        if dtype is not None:
            out[name] = base.to(dtype) if name != "float8_e8m0fnu" else base.abs().to(dtype)
    return out


# --------------------------------------------------------------------------- torch zip


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_every_dtype_every_protocol(tmp_path: Path, protocol: int,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    sd = every_dtype()
    path = save(tmp_path, sd, pickle_protocol=protocol)
    ckpt = ck.open_checkpoint(path)
    assert ckpt.format == "torch-zip"
    assert ckpt.metadata["pickle_protocol"] == protocol
    if protocol <= 3:
        assert_same_metadata(ckpt, walk(load_ref(path)))
        both_paths(ckpt, walk(load_ref(path)), monkeypatch)
    else:
        # torch's weights-only unpickler cannot read protocol 4+ ("Unsupported operand").
        with pytest.raises(pickle.UnpicklingError):
            load_ref(path)
        reference = walk(load_ref(path, weights_only=False))
        assert_same_metadata(ckpt, reference)
        both_paths(ckpt, reference, monkeypatch, torch_accepts=False)
        version = ckpt.finding("version")
        assert version is not None and f"protocol {protocol}" in version.message
    assert ckpt.candidates[0] == ""


def test_views_share_storages_with_offsets_and_strides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = torch.arange(48, dtype=torch.float32).reshape(6, 8)
    sd = {
        "base": base, "t": base.t(), "rows": base[2:5], "cols": base[:, 3:7],
        "col": base[:, 1], "step": base[::2, ::3], "elem": base[4, 5],
        "flat_tail": base.reshape(-1)[40:], "expand": base[0, :1].expand(4, 3),
        "other": torch.arange(10, dtype=torch.int16)[3:],
    }
    path = save(tmp_path, sd)
    ckpt = ck.open_checkpoint(path)
    ref = walk(load_ref(path))
    assert_same_metadata(ckpt, ref)
    # nbytes is the view's own size, not the shared storage's
    assert ckpt.tensors["col"].nbytes == 6 * 4
    both_paths(ckpt, ref, monkeypatch)
    # every view keeps its stride and offset as torch rebuilds it
    own = load_from_sources(ckpt.tensors, list(ref), "cpu")
    for key in ("t", "step", "elem", "expand"):
        assert own[key].stride() == sd[key].stride()
        assert own[key].storage_offset() == sd[key].storage_offset()


def test_parameters_and_nested_containers(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    p = torch.nn.Parameter(torch.randn(3, 2))
    obj = {
        "params": collections.OrderedDict([("w", p), ("frozen", torch.nn.Parameter(
            torch.ones(2), requires_grad=False))]),
        "list": [torch.zeros(2), [torch.ones(1, dtype=torch.int32), {"deep": torch.eye(2)}]],
        "tuple": (torch.arange(3), "text", 7),
        "od": collections.OrderedDict(a=collections.OrderedDict(b=torch.full((2,), 2.0))),
        "none": None,
        7: torch.tensor([7]),
    }
    path = save(tmp_path, obj)
    ckpt = ck.open_checkpoint(path)
    ref = walk(load_ref(path))
    assert set(ref) >= {"params.w", "list.1.1.deep", "tuple.0", "od.a.b", "7"}
    assert_same_metadata(ckpt, ref)
    both_paths(ckpt, ref, monkeypatch)
    assert ckpt.state_dict("params")["w"].equal(p.detach())


def test_optimizer_state_dict(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(5, 4)).sum().backward()
    opt.step()
    obj = {"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 1}
    path = save(tmp_path, obj)
    ckpt = ck.open_checkpoint(path)
    ref = walk(load_ref(path))
    assert "optimizer.state.0.exp_avg_sq" in ref and "optimizer.state.3.step" in ref
    assert_same_metadata(ckpt, ref)
    both_paths(ckpt, ref, monkeypatch)
    assert ckpt.candidates[0] == "model"
    assert not any(c.startswith("optimizer") for c in ckpt.candidates)
    assert ckpt.metadata["facts"]["epoch"] == 1


def test_lightning_style_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = torch.nn.Linear(3, 2)
    obj = {
        "epoch": 4, "global_step": 1234, "pytorch-lightning_version": "2.4.0",
        "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
        "hyper_parameters": {"lr": 0.01, "hidden": [32, 64], "name": "tiny"},
        "optimizer_states": [{"state": {}, "param_groups": [{"lr": 0.01, "params": [0, 1]}]}],
        "lr_schedulers": [], "callbacks": {},
    }
    path = save(tmp_path, obj)
    ckpt = ck.open_checkpoint(path)
    ref = walk(load_ref(path))
    assert_same_metadata(ckpt, ref)
    both_paths(ckpt, ref, monkeypatch)
    assert ckpt.candidates[0] == "state_dict"
    assert ckpt.metadata["lightning_version"] == "2.4.0"
    assert ckpt.metadata["hyper_parameters"] == obj["hyper_parameters"]
    assert ckpt.metadata["facts"]["epoch"] == 4
    assert ckpt.metadata["facts"]["global_step"] == 1234
    version = ckpt.finding("version")
    assert version is not None and "Lightning 2.4.0" in version.message


def test_archive_prefix_other_than_the_file_name(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    sd = {"w": torch.randn(4, 4), "b": torch.arange(4)}
    # saved under one name, renamed after: the prefix stays the old name
    first = save(tmp_path, sd, "original_name.pt")
    moved = first.rename(tmp_path / "renamed.pth")
    ckpt = ck.open_checkpoint(moved)
    assert ckpt.metadata["archive_prefix"] == "original_name"
    ref = walk(load_ref(moved))
    assert_same_metadata(ckpt, ref)
    both_paths(ckpt, ref, monkeypatch)
    # saved to a buffer: the prefix is "archive"
    buf = io.BytesIO()
    torch.save(sd, buf)
    (tmp_path / "buffer.bin").write_bytes(buf.getvalue())
    assert ck.open_checkpoint(tmp_path / "buffer.bin").metadata["archive_prefix"] == "archive"
    # rewritten with an internal folder that matches nothing about the file
    odd = rewrite_zip(moved, tmp_path / "odd.ckpt", prefix="some-folder")
    ckpt = ck.open_checkpoint(odd)
    assert ckpt.metadata["archive_prefix"] == "some-folder"
    assert_same_metadata(ckpt, walk(load_ref(odd)))
    both_paths(ckpt, walk(load_ref(odd)), monkeypatch)


def rewrite_zip(src: Path, dst: Path, *, prefix: str | None = None,
                replace: dict[str, bytes] | None = None) -> Path:
    """Copy a torch archive record by record (stored, as torch writes them), optionally
    renaming its folder and replacing some records' bytes (by name without the folder)."""
    replace = replace or {}
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            old_prefix, rest = info.filename.split("/", 1)
            name = f"{prefix or old_prefix}/{rest}"
            zout.writestr(zipfile.ZipInfo(name), replace.get(rest, zin.read(info)))
    return dst


def big_endian_copy(tmp_path: Path, sd: dict[str, torch.Tensor]) -> Path:
    """torch.save, then the byteorder record set to "big" and every storage byteswapped
    by hand, per element (per component for complex values, as torch swaps them)."""
    little = save(tmp_path, sd, "little.pt")
    swapped: dict[str, bytes] = {"byteorder": b"big"}
    with zipfile.ZipFile(little) as z:
        prefix = z.namelist()[0].split("/")[0]
        for key, size in storage_element_sizes(little).items():
            swapped[f"data/{key}"] = byteswap(z.read(f"{prefix}/data/{key}"), size)
    return rewrite_zip(little, tmp_path / "big.pt", replace=swapped)


def check_big_endian(tmp_path: Path, sd: dict[str, torch.Tensor]) -> None:
    big = big_endian_copy(tmp_path, sd)
    ref = walk(load_ref(big))
    for key, t in sd.items():  # torch swaps the bytes back on load
        assert_bit_identical(ref[key], t, key)
    ckpt = ck.open_checkpoint(big)
    assert ckpt.metadata["byteorder"] == "big"
    assert_same_metadata(ckpt, ref)
    own = load_from_sources(ckpt.tensors, list(ref), "cpu")
    for key in ref:
        assert_bit_identical(own[key], ref[key], key)
    for key, value in ckpt.state_dict("").items():
        assert_bit_identical(value, ref[key], key)


def test_big_endian_archive(tmp_path: Path) -> None:
    check_big_endian(tmp_path, {
        "f32": torch.randn(3, 4), "f64": torch.randn(5, dtype=torch.float64),
        "i16": torch.arange(-4, 4, dtype=torch.int16), "u8": torch.arange(7, dtype=torch.uint8),
        "bf16": torch.randn(6).bfloat16(), "i64": torch.arange(5) * (1 << 33),
        "view": torch.arange(20, dtype=torch.int32).reshape(4, 5)[1:, ::2],
    })


def test_big_endian_complex_values(tmp_path: Path) -> None:
    check_big_endian(tmp_path, {"c64": torch.randn(3, dtype=torch.complex64),
                                "c128": torch.randn(2, dtype=torch.complex128)})


def storage_element_sizes(path: Path) -> dict[str, int]:
    """Element size of every storage record of a torch archive (the test's own file):
    storage classes are resolved, every other global becomes a no-op."""
    sizes: dict[str, int] = {}

    class Recorder(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            if name.endswith("Storage"):
                return getattr(torch, name)
            return lambda *a, **k: None

        def persistent_load(self, pid: Any) -> Any:
            _, storage_type, key, _location, _numel = pid
            dtype = storage_type.dtype
            # torch swaps complex values per component (real and imaginary parts)
            sizes[key] = torch.empty(0, dtype=dtype).element_size() // (
                2 if dtype.is_complex else 1)
            return None

    with zipfile.ZipFile(path) as z:
        name = next(n for n in z.namelist() if n.endswith("data.pkl"))
        Recorder(io.BytesIO(z.read(name))).load()
    return sizes


def byteswap(raw: bytes, itemsize: int) -> bytes:
    if itemsize <= 1:
        return raw
    return b"".join(raw[i:i + itemsize][::-1] for i in range(0, len(raw), itemsize))


def test_cuda_location_tags_on_a_cpu_machine(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    sd = {"w": torch.randn(3, 3), "b": torch.arange(3.0), "i": torch.arange(4)}
    with monkeypatch.context() as m:
        m.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        path = save(tmp_path, sd)
    with zipfile.ZipFile(path) as z:
        assert b"cuda:0" in z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    ckpt = ck.open_checkpoint(path)
    ref = walk(load_ref(path))  # map_location="cpu"
    assert {k: ckpt.tensors[k].device for k in sd} == dict.fromkeys(sd, "cuda:0")
    for key, t in ref.items():
        info = ckpt.tensors[key]
        assert (info.shape, info.dtype, info.nbytes) == torch_facts(t)[:1] + torch_facts(t)[1:2] \
            + torch_facts(t)[3:]
    assert ckpt.metadata["devices"] == {"cuda:0": 3}
    version = ckpt.finding("version")
    assert version is not None and "map_location" in version.message
    loaded = ckpt.state_dict(map_location="cpu")
    own = load_from_sources(ckpt.tensors, list(sd), "cpu")
    for key, t in sd.items():
        assert_bit_identical(loaded[key], t, key)
        assert_bit_identical(own[key], t, key)
        assert loaded[key].device.type == "cpu"


def test_quantized_sparse_and_meta_are_recognised_and_named(tmp_path: Path) -> None:
    x = torch.randn(6)
    obj = {
        "q": torch.quantize_per_tensor(x, 0.1, 3, torch.quint8),
        "qi": torch.quantize_per_tensor(x, 0.05, 0, torch.qint8),
        "sparse": torch.tensor([[0.0, 2.0], [3.0, 0.0]]).to_sparse(),
        "meta": torch.empty(4, 5, device="meta", dtype=torch.float16),
        "plain": torch.ones(2),
    }
    path = save(tmp_path, obj)
    ref = walk(load_ref(path))
    ckpt = ck.open_checkpoint(path)
    assert set(ckpt.tensors) == set(ref)
    assert [ckpt.tensors[k].layout for k in ("q", "qi", "sparse", "meta", "plain")] == [
        "quantized", "quantized", "sparse_coo", "meta", "strided"]
    for key in ("q", "qi", "meta", "plain"):
        info = ckpt.tensors[key]
        assert (info.shape, info.dtype, info.device, info.nbytes) == torch_facts(ref[key]), key
    sparse = ckpt.tensors["sparse"]
    assert (sparse.shape, sparse.dtype) == ((2, 2), "float32")
    stored = ref["sparse"].coalesce()
    # a sparse tensor's nbytes are its stored parts: indices plus values
    assert sparse.nbytes == (stored.indices().numel() * 8 + stored.values().numel() * 4)
    assert ckpt.metadata["special_layouts"] == {"quantized": 2, "sparse_coo": 1, "meta": 1}
    named = [f for f in ckpt.findings if "does not read itself" in f.message]
    assert named and "sparse_coo" in named[0].message and "meta" in named[0].message
    # torch materialises what ckwidget only names
    assert ckpt.metadata["torch_weights_only_accepts"] is True
    loaded = ckpt.state_dict("")
    assert torch.equal(loaded["q"].dequantize(), obj["q"].dequantize())
    assert torch.equal(loaded["sparse"].to_dense(), obj["sparse"].to_dense())
    assert loaded["meta"].is_meta and loaded["meta"].shape == (4, 5)


# --------------------------------------------------------------------------- legacy formats


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_legacy_stacked_pickles(tmp_path: Path, protocol: int) -> None:
    base = torch.arange(30, dtype=torch.float64).reshape(5, 6)
    obj = {"model": {"w": torch.randn(3, 4), "b": torch.arange(4, dtype=torch.int32),
                     "h": torch.randn(2).half(), "bf": torch.randn(2).bfloat16()},
           "view": base[1:4, ::2], "t": base.t(), "epoch": 2}
    path = save(tmp_path, obj, "legacy.pt", _use_new_zipfile_serialization=False,
                pickle_protocol=protocol)
    assert not zipfile.is_zipfile(path)
    # weights_only refuses protocol 4+; the test's own file is safe to unpickle
    ref = walk(load_ref(path, weights_only=protocol <= 3))
    ckpt = ck.open_checkpoint(path)
    assert ckpt.format == "torch-legacy"
    assert ckpt.metadata["legacy_protocol_version"] == 1001
    assert_same_metadata(ckpt, ref)
    own = load_from_sources(ckpt.tensors, list(ref), "cpu")
    via_ckpt = ckpt.load(list(ref), "cpu")
    for key, t in ref.items():
        assert_bit_identical(own[key], t, key)
        assert_bit_identical(via_ckpt[key], t, key)
    assert ckpt.candidates[0] == "model"
    assert not [f for f in ckpt.findings if f.severity == "error"]


def test_legacy_every_dtype(tmp_path: Path) -> None:
    # dtypes without a legacy storage class (uint16/32/64, float8, complex32) cannot be
    # loaded back by torch from this format, so torch cannot be the reference for them
    sd = {k: v for k, v in every_dtype().items()
          if not k.startswith(("uint1", "uint3", "uint6", "float8", "complex32"))}
    path = save(tmp_path, sd, "legacy.pt", _use_new_zipfile_serialization=False)
    ref = walk(load_ref(path))
    ckpt = ck.open_checkpoint(path)
    assert_same_metadata(ckpt, ref)
    own = load_from_sources(ckpt.tensors, list(ref), "cpu")
    for key, t in ref.items():
        assert_bit_identical(own[key], t, key)


def test_tar_checkpoint_of_torch_0_1(tmp_path: Path) -> None:
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    tensors = {"fc.weight": torch.randn(2, 3), "fc.bias": torch.arange(2, dtype=torch.int64),
               "view": base[1:, 1:3], "half": torch.randn(5).half(),
               "d": torch.randn(2, 2, dtype=torch.float64)}
    path = tar_checkpoint(tmp_path / "old.pth.tar", tensors, {"epoch": 9, "arch": "tiny"})
    # torch 2.6+ refuses the tar format under weights_only; our own file is safe to unpickle
    with pytest.raises(Exception, match="tar"):
        torch.load(path, weights_only=True)
    ref = walk(torch.load(path, weights_only=False))
    assert set(ref) == {f"state_dict.{k}" for k in tensors}
    ckpt = ck.open_checkpoint(path)
    assert ckpt.format == "torch-tar"
    assert_same_metadata(ckpt, ref)
    own = load_from_sources(ckpt.tensors, list(ref), "cpu")
    for key, t in ref.items():
        assert_bit_identical(own[key], t, key)
    assert ckpt.candidates[0] == "state_dict"
    assert "0.1.x tar" in ckpt.finding("version").message
    assert ckpt.state_dict()["view"].equal(tensors["view"])


# --------------------------------------------------------------------------- whole modules


MODULE_SOURCE = '''
import torch


class Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 3)
        self.register_buffer("running", torch.arange(3.0))
        self.register_buffer("scratch", torch.ones(2), persistent=False)


class {name}(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.block = Block()
        self.head = torch.nn.Linear(3, 2, bias=False)
        self.norm = torch.nn.BatchNorm1d(2)
        self.scale = torch.nn.Parameter(torch.tensor(0.5))

    def forward(self, x):
        return self.norm(self.head(self.block.lin(x))) * self.scale
'''


def import_from(tmp_path: Path, module: str, source: str) -> Any:
    folder = tmp_path / f"src_{module}"
    folder.mkdir()
    (folder / f"{module}.py").write_text(source)
    sys.path.insert(0, str(folder))
    try:
        return importlib.import_module(module)
    finally:
        sys.path.remove(str(folder))


def test_whole_pickled_module_with_missing_class(tmp_path: Path) -> None:
    mod_name = f"ck_tmp_models_{tmp_path.name.replace('-', '_')}"
    module = import_from(tmp_path, mod_name, MODULE_SOURCE.format(name="TinyNet"))
    torch.manual_seed(0)
    model = module.TinyNet()
    model.norm.running_mean += 1.5
    path = save(tmp_path, model, "model.pt")
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    del sys.modules[mod_name]  # the class is gone: torch.load cannot find it any more
    with pytest.raises(ModuleNotFoundError):
        torch.load(path, weights_only=False)
    ckpt = ck.open_checkpoint(path)
    assert set(ckpt.tensors) == set(expected)
    assert "block.scratch" not in ckpt.tensors  # a non-persistent buffer is not saved
    for key, t in expected.items():
        info = ckpt.tensors[key]
        assert (info.shape, info.dtype, info.device, info.nbytes) == torch_facts(t), key
    missing = ckpt.finding("missing-class")
    assert missing is not None
    assert f"{mod_name}.TinyNet" in missing.details["globals"]
    assert f"{mod_name}.Block" in missing.details["globals"]
    assert ckpt.metadata.get("whole_module") is True
    assert ckpt.metadata["torch_weights_only_accepts"] is False
    loaded = ckpt.state_dict()
    assert set(loaded) == set(expected)
    for key, t in expected.items():
        assert_bit_identical(loaded[key], t, key)
    assert not ckpt.has_finding("malicious")


def test_torchscript_archive(tmp_path: Path) -> None:
    mod_name = f"ck_tmp_script_{tmp_path.name.replace('-', '_')}"
    module = import_from(tmp_path, mod_name, MODULE_SOURCE.format(name="ScriptNet"))
    torch.manual_seed(0)
    model = module.ScriptNet().eval()
    scripted = torch.jit.script(model)
    path = tmp_path / "scripted.pt"
    torch.jit.save(scripted, str(path))
    del sys.modules[mod_name]
    with pytest.raises(RuntimeError, match="TorchScript"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.load(path, weights_only=True)
    ckpt = ck.open_checkpoint(path)
    assert ckpt.format == "torchscript"
    # what torch.jit.load(...).state_dict() gives: TorchScript keeps non-persistent buffers
    expected = scripted.state_dict()
    assert set(expected) == set(model.state_dict()) | {"block.scratch"}
    ts = ckpt.finding("torchscript")
    assert ts is not None and "torch.jit.load" in ts.message
    entry = ckpt.entry()
    assert set(entry) == set(expected)
    for key, t in expected.items():
        info = entry[key]
        assert (info.shape, info.dtype, info.device, info.nbytes) == torch_facts(t), key
    loaded = ckpt.state_dict()
    for key, t in expected.items():
        assert_bit_identical(loaded[key].contiguous(), t.contiguous(), key)
