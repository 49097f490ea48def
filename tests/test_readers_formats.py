"""Non-torch readers: safetensors, numpy, Hugging Face / DCP / DeepSpeed folders, broken and
foreign files. Every format is written with its real writer where one is installed and
compared, key by key, with what that library itself reports."""

from __future__ import annotations

import io
import json
import pickle
import struct
import tarfile
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
import safetensors
import safetensors.torch as st
import torch
from _build_formats import (
    dcp_save,
    gguf_bytes,
    keras_h5_bytes,
    mixed_state_dict,
    onnx_bytes,
    st_entry,
    st_file,
)

import ckwidget as ck
from ckwidget.errors import CheckpointError, NotACheckpointError
from ckwidget.readers import DEFAULT_BUDGETS, open_checkpoint
from ckwidget.readers.foreign import read_foreign
from ckwidget.readers.numpy_files import read_npz
from ckwidget.readers.safetensors import read_safetensors


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.numel() == 0:
        return True
    return torch.equal(a.contiguous().view(-1).view(torch.uint8),
                       b.contiguous().view(-1).view(torch.uint8))


def torch_name(st_dtype: str) -> str:
    return str(st._TYPES[st_dtype]).removeprefix("torch.")


# -- safetensors -------------------------------------------------------------------------
def test_safetensors_matches_the_library_key_by_key(tmp_path: Path) -> None:
    sd = mixed_state_dict()
    path = tmp_path / "model.safetensors"
    st.save_file(sd, str(path), metadata={"format": "pt", "epoch": "3"})
    ckpt = open_checkpoint(path)
    assert ckpt.format == "safetensors" and ckpt.candidates == [""] and not ckpt.findings
    with safetensors.safe_open(str(path), "pt") as f:
        assert ckpt.metadata["safetensors_metadata"] == f.metadata()
        assert set(ckpt.tensors) == set(f.keys())
        for key in f.keys():
            sl = f.get_slice(key)
            info = ckpt.tensors[key]
            assert list(info.shape) == sl.get_shape(), key
            assert info.dtype == torch_name(sl.get_dtype()), key
            assert info.device == "cpu"
            assert info.nbytes == sd[key].numel() * sd[key].element_size()
    reference = st.load_file(str(path))
    loaded = ckpt.state_dict()
    assert set(loaded) == set(reference)
    for key, tensor in reference.items():
        assert same_bits(loaded[key], tensor), key


def test_safetensors_materialising_never_writes_the_file(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    st.save_file({"w": torch.ones(4)}, str(path))
    before = path.read_bytes()
    t = open_checkpoint(path).read("w")
    t.mul_(7)  # copy-on-write map: the change stays in memory
    assert path.read_bytes() == before
    assert torch.equal(open_checkpoint(path).read("w"), torch.ones(4))


def _hostile_cases(tmp: Path) -> dict[str, tuple[Path, str | None]]:
    """name -> (file, finding kind expected, None when only an error is required)."""
    ok = {"a": st_entry("F32", [2], 0, 8)}
    data = b"\x00" * 8
    cases = {
        "huge header length": (st_file(tmp / "h1", ok, data, n=2**60), "corrupt"),
        "header longer than file": (st_file(tmp / "h2", ok, data, n=5000), "truncated"),
        "not json": (st_file(tmp / "h3", b"{not json at all" + b" " * 8, data), "corrupt"),
        "json list": (st_file(tmp / "h4", b"[1, 2, 3]", data), "corrupt"),
        "invalid utf8": (st_file(tmp / "h5", b'{"\xff\xfe": 1}', data), "corrupt"),
        "nan constant": (st_file(tmp / "h6", b'{"a": NaN}', data), "corrupt"),
        "overlapping offsets": (st_file(tmp / "h8", {
            "a": st_entry("F32", [2], 0, 8), "b": st_entry("F32", [2], 4, 12)},
            b"\x00" * 12), "corrupt"),
        "hole": (st_file(tmp / "h9", {"a": st_entry("F32", [1], 4, 8)}, data), "corrupt"),
        "negative shape": (st_file(tmp / "h10", {"a": st_entry("F32", [-2], 0, 8)}, data),
                           "corrupt"),
        "overflowing shape": (st_file(tmp / "h11", {
            "a": st_entry("F32", [2**40, 2**40], 0, 8)}, data), "corrupt"),
        "u64 overflow shape": (st_file(tmp / "h12", {
            "a": st_entry("F32", [2**64 + 1], 0, 8)}, data), "corrupt"),
        "unknown dtype": (st_file(tmp / "h13", {"a": st_entry("F33", [2], 0, 8)}, data),
                          "corrupt"),
        "offsets beyond file": (st_file(tmp / "h14", {
            "a": st_entry("F32", [2], 0, 8), "b": st_entry("F32", [1000], 8, 4008)}, data),
            "truncated"),
        "size mismatch": (st_file(tmp / "h15", {"a": st_entry("F32", [3], 0, 8)}, data),
                          "corrupt"),
        "trailing bytes": (st_file(tmp / "h16", ok, data + b"junk"), "corrupt"),
        "bad metadata": (st_file(tmp / "h17", {"__metadata__": {"x": 1}, **ok}, data),
                         "corrupt"),
        "offsets reversed": (st_file(tmp / "h18", {"a": st_entry("F32", [0], 8, 0)}, data),
                             "corrupt"),
        "tiny file": (st_file(tmp / "h19", b"", b"", n=0).with_name("h19"), None),
    }
    (tmp / "h19").write_bytes(b"\x05\x00")
    return cases


def test_hostile_safetensors_headers_give_findings_fast_and_small(tmp_path: Path) -> None:
    for name, (path, kind) in _hostile_cases(tmp_path).items():
        tracemalloc.start()
        try:
            ckpt = read_safetensors(path, path.read_bytes()[:4096], DEFAULT_BUDGETS)
        except CheckpointError as exc:  # allowed, with a sentence
            assert str(exc), name
            ckpt = None
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert peak < 20 << 20, (name, peak)
        if ckpt is not None:
            errors = [f for f in ckpt.findings if f.severity == "error"]
            assert errors, name
            assert all(len(f.message) > 40 for f in errors), name
            if kind is not None:
                assert kind in {f.kind for f in errors}, (name, ckpt.findings)
        # the reference reader refuses every one of these files too
        with pytest.raises(safetensors.SafetensorError):
            st.load_file(str(path))


def test_duplicate_safetensors_keys_keep_the_last_copy_like_the_library(
    tmp_path: Path,
) -> None:
    path = st_file(
        tmp_path / "dup.safetensors",
        b'{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, '
        b'"a": {"dtype": "I32", "shape": [2], "data_offsets": [0, 8]}}',
        struct.pack("<2i", 5, -6),
    )
    reference = st.load_file(str(path))  # accepted: serde keeps the last copy
    ckpt = open_checkpoint(path)
    f = ckpt.finding("corrupt")
    assert f.severity == "warning" and f.keys == ["a"] and "last" in f.message
    assert ckpt.tensors["a"].dtype == "int32"
    assert same_bits(ckpt.read("a"), reference["a"])


def test_hostile_safetensors_keep_the_valid_tensors(tmp_path: Path) -> None:
    path = st_file(tmp_path / "part.safetensors", {
        "good": st_entry("F32", [2], 0, 8), "bad": st_entry("Q4", [2], 8, 16),
        "cut": st_entry("F32", [4], 16, 32)}, struct.pack("<2f", 1.5, -2.0) + b"\x00" * 8)
    ckpt = open_checkpoint(path)
    assert set(ckpt.tensors) == {"good", "cut"}
    assert torch.equal(ckpt.read("good"), torch.tensor([1.5, -2.0]))
    assert not ckpt.tensors["cut"].readable
    kinds = {f.kind: f for f in ckpt.findings}
    assert kinds["corrupt"].keys == ["bad"]
    assert kinds["truncated"].keys == ["cut"]
    with pytest.raises(CheckpointError):
        ckpt.read("cut")


def test_safetensors_through_open_checkpoint_with_broken_header(tmp_path: Path) -> None:
    # Sniffed as safetensors (valid length, '{'), parsed as JSON garbage.
    path = st_file(tmp_path / "x.safetensors", b'{"a": [1, 2' + b" " * 20, b"")
    ckpt = open_checkpoint(path)
    assert ckpt.format == "safetensors"
    assert ckpt.finding("corrupt") is not None and not ckpt.tensors


# -- numpy -------------------------------------------------------------------------------
def _arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "fc.weight": rng.standard_normal((3, 4)).astype(np.float32),
        "big_endian": np.arange(6, dtype=">i4").reshape(2, 3),
        "fortran": np.asfortranarray(rng.standard_normal((3, 5))),
        "half": rng.standard_normal(7).astype(np.float16),
        "flags": np.array([True, False]),
        "scalar": np.array(3, dtype=np.int64),
        "empty": np.zeros((0, 3), dtype=np.uint8),
        "u32": np.arange(5, dtype=np.uint32),
    }


@pytest.mark.parametrize("name", list(_arrays()))
def test_npy_matches_numpy(tmp_path: Path, name: str) -> None:
    arr = _arrays()[name]
    path = tmp_path / f"{name}.npy"
    np.save(path, arr)
    ckpt = open_checkpoint(path)
    assert ckpt.format == "npy" and not ckpt.findings
    assert list(ckpt.tensors) == [name]  # keyed by the file's stem
    ref = np.load(path, allow_pickle=False)
    info = ckpt.tensors[name]
    assert info.shape == ref.shape
    assert info.dtype == str(torch.from_numpy(ref.astype(ref.dtype.newbyteorder("="))).dtype
                             ).removeprefix("torch.")
    assert info.nbytes == ref.nbytes
    assert ckpt.metadata["fortran_order"] == (ref.flags.f_contiguous and not
                                              ref.flags.c_contiguous)
    got = ckpt.state_dict()[name]
    assert np.array_equal(got.numpy(), ref)


def test_npy_object_array_is_reported_and_never_unpickled(tmp_path: Path) -> None:
    sentinel = tmp_path / "ran.txt"
    payload = np.empty(1, dtype=object)
    payload[0] = _Payload(str(sentinel))
    path = tmp_path / "obj.npy"
    np.save(path, payload, allow_pickle=True)
    assert not sentinel.exists()
    ckpt = open_checkpoint(path)
    assert not ckpt.tensors
    finding = ckpt.finding("unsafe-globals")
    assert finding is not None and "allow_pickle" in finding.message
    assert not sentinel.exists()


class _Payload:
    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.write_text, (Path(self.target), "ran"))


@pytest.mark.parametrize("compressed", [False, True])
def test_npz_matches_numpy(tmp_path: Path, compressed: bool) -> None:
    arrays = _arrays()
    arrays["labels"] = np.array(["cat", "dog"])  # not a tensor: listed, left out
    path = tmp_path / "w.npz"
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    names = zipfile.ZipFile(path).namelist()
    ckpt = read_npz(path, names, DEFAULT_BUDGETS)
    assert ckpt.format == "npz" and ckpt.metadata["compressed"] is compressed
    ref = np.load(path, allow_pickle=False)
    numeric = [k for k in ref.files if k != "labels"]
    assert sorted(ckpt.tensors) == sorted(numeric)
    assert "labels" in ckpt.metadata["non_tensor_arrays"]
    sd = ckpt.state_dict()
    for key in numeric:
        assert ckpt.tensors[key].shape == ref[key].shape
        assert np.array_equal(sd[key].numpy(), ref[key]), key


def test_npz_damaged_member_is_a_finding(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, a=np.arange(4.0), b=np.arange(3))
    raw = bytearray(path.read_bytes())
    start = raw.index(b"\x93NUMPY", raw.index(b"b.npy"))
    raw[start:start + 6] = b"garbag"  # b's header no longer starts with the npy magic
    path.write_bytes(bytes(raw))
    ckpt = read_npz(path, ["a.npy", "b.npy"], DEFAULT_BUDGETS)
    assert list(ckpt.tensors) == ["a"]
    assert ckpt.finding("corrupt").keys == ["b"]


# -- broken files ------------------------------------------------------------------------
def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(b"")
    ckpt = open_checkpoint(path)
    f = ckpt.finding("not-a-checkpoint")
    assert ckpt.format == "empty" and f.severity == "error" and "again" in f.message


def test_lfs_pointer(tmp_path: Path) -> None:
    oid = "4d7a2146" * 8
    path = tmp_path / "pytorch_model.bin"
    path.write_text(
        f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize 440473133\n"
    )
    ckpt = open_checkpoint(path)
    f = ckpt.finding("lfs-pointer")
    assert ckpt.format == "lfs-pointer" and f.severity == "error"
    assert "git lfs pull" in f.message and "440,473,133 bytes" in f.message
    assert ckpt.metadata["lfs_oid"] == oid and ckpt.metadata["lfs_size"] == 440473133


def test_html_page_title_is_cleaned(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_text(
        "<!DOCTYPE html>\n<html><head><title>Sign in &amp; <script>x()</script> "
        "Hugging Face</title></head><body>Please log in</body></html>"
    )
    ckpt = open_checkpoint(path)
    f = ckpt.finding("html-page")
    assert ckpt.format == "html" and f.severity == "error"
    assert "<" not in f.message and ">" not in f.message
    assert "Sign in & script x() /script Hugging Face" in f.message
    assert "hf_hub_download" in f.message


def test_unknown_bytes(tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    path.write_bytes(bytes(range(7, 200)))
    ckpt = open_checkpoint(path)
    f = ckpt.finding("not-a-checkpoint")
    assert ckpt.format == "unknown" and f.severity == "error"
    assert "07 08 09" in f.message


# -- foreign formats ---------------------------------------------------------------------
def _foreign(tmp_path: Path, name: str, data: bytes, fmt: str, *words: str):
    path = tmp_path / name
    path.write_bytes(data)
    ckpt = open_checkpoint(path)
    assert ckpt.format == fmt, (name, ckpt)
    f = ckpt.finding("foreign-format")
    assert f is not None and f.severity == "error" and not ckpt.tensors
    for word in words:
        assert word in f.message, (name, word, f.message)
    return ckpt


def test_keras_h5(tmp_path: Path) -> None:
    ckpt = _foreign(tmp_path, "tf_model.h5", keras_h5_bytes(), "keras-h5", "from_tf=True",
                    "h5py", "transpose")
    assert "layer_names" in ckpt.metadata["hdf5_markers"]
    whole = _foreign(tmp_path, "m.h5", keras_h5_bytes(True), "keras-h5", "whole Keras model")
    assert "model_weights" in whole.metadata["hdf5_markers"]
    plain = b"\x89HDF\r\n\x1a\n" + b"\x00" * 500
    _foreign(tmp_path, "data.h5", plain, "hdf5", "h5py")


def test_gguf(tmp_path: Path) -> None:
    ckpt = _foreign(tmp_path, "m.gguf", gguf_bytes(), "gguf", "gguf_file=", "GGUFReader")
    assert ckpt.metadata["gguf_version"] == 3 and ckpt.metadata["tensor_count"] == 7
    assert ckpt.metadata["general.architecture"] == "llama"
    assert ckpt.metadata["llama.context_length"] == 2048
    assert ckpt.metadata["general.name"] == "Tiny model"  # markup characters removed
    cut = _foreign(tmp_path, "cut.gguf", gguf_bytes()[:40], "gguf", "gguf_file=")
    assert cut.metadata["tensor_count"] == 7


def test_onnx(tmp_path: Path) -> None:
    ckpt = _foreign(tmp_path, "model.onnx", onnx_bytes(), "onnx", "numpy_helper", "onnx2torch")
    assert ckpt.metadata["ir_version"] == 9
    assert ckpt.metadata["producer_name"] == "pytorch"
    assert ckpt.metadata["opset_import"] == ["ai.onnx:17"]


def test_tensorflow_checkpoint_files(tmp_path: Path) -> None:
    (tmp_path / "model.ckpt.data-00000-of-00002").write_bytes(b"\x12\x34\x56junk")
    ckpt = _foreign(tmp_path, "model.ckpt.index", b"\x00\x00\x08some_var\x01",
                    "tensorflow-checkpoint", "tf.train.load_checkpoint", "from_tf=True",
                    "1 of its 2 data shards")
    assert ckpt.metadata["tf_prefix"] == "model.ckpt"
    data = open_checkpoint(tmp_path / "model.ckpt.data-00000-of-00002")
    assert data.format == "tensorflow-checkpoint"
    assert data.finding("foreign-format") is not None


def test_archives(tmp_path: Path) -> None:
    import gzip

    _foreign(tmp_path, "m.7z", b"7z\xbc\xaf\x27\x1c" + b"\x00" * 64, "7z", "7z x")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("ckpt/model.pt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    _foreign(tmp_path, "m.tar.gz", gzip.compress(buf.getvalue()), "tar.gz", "tar -xzf")
    gz = io.BytesIO()
    with gzip.GzipFile("model.pt", "wb", fileobj=gz) as fh:
        torch.save({"w": torch.ones(2)}, fh)
    ckpt = _foreign(tmp_path, "model.pt.gz", gz.getvalue(), "gzip", "gunzip", "torch.save")
    assert ckpt.metadata["original_name"] == "model.pt"


def test_zips_that_are_not_torch_archives(tmp_path: Path) -> None:
    keras = tmp_path / "m.keras"
    with zipfile.ZipFile(keras, "w") as zf:
        zf.writestr("metadata.json", json.dumps({"keras_version": "3.4.1"}))
        zf.writestr("config.json", "{}")
        zf.writestr("model.weights.h5", keras_h5_bytes())
    names = zipfile.ZipFile(keras).namelist()
    ckpt = read_foreign(keras, keras.read_bytes()[:4096], DEFAULT_BUDGETS, "unknown-zip",
                        names=names)
    assert ckpt.format == "keras" and ckpt.metadata["keras_version"] == "3.4.1"
    assert "load_model" in ckpt.finding("foreign-format").message
    other = read_foreign(keras, b"", DEFAULT_BUDGETS, "unknown-zip",
                         names=["weights/model.safetensors", "README.md"])
    assert other.format == "zip" and "model.safetensors" in other.findings[0].message
    tar = read_foreign(keras, b"", DEFAULT_BUDGETS, "tar-other", names=["a.txt", "b.txt"])
    assert tar.format == "tar" and "'a.txt'" in tar.findings[0].message


# -- Hugging Face folders ----------------------------------------------------------------
CONFIG = {"architectures": ["TinyModel"], "model_type": "tiny", "transformers_version":
          "4.50.0", "torch_dtype": "float32", "vocab_size": 11, "hidden_size": 8,
          "num_hidden_layers": 2, "id2label": {"0": "a"}}


def _hf_folder(root: Path, suffix: str) -> dict[str, torch.Tensor]:
    """A save_pretrained-style sharded folder: index.json, config.json, two shards."""
    sd = mixed_state_dict()
    keys = list(sd)
    shards = {f"model-0000{i + 1}-of-00002{suffix}": keys[i::2] for i in range(2)}
    index_name = ("model.safetensors" if suffix == ".safetensors" else "pytorch_model.bin")
    weight_map = {}
    for shard, shard_keys in shards.items():
        part = {k: sd[k] for k in shard_keys}
        if suffix == ".safetensors":
            st.save_file(part, str(root / shard), metadata={"format": "pt"})
        else:
            torch.save(part, root / shard)
        weight_map.update(dict.fromkeys(shard_keys, shard))
    total = sum(t.numel() * t.element_size() for t in sd.values())
    (root / f"{index_name}.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
    (root / "config.json").write_text(json.dumps(CONFIG))
    return sd


def test_hf_sharded_safetensors_folder(tmp_path: Path) -> None:
    sd = _hf_folder(tmp_path, ".safetensors")
    ckpt = open_checkpoint(tmp_path)
    assert ckpt.format == "hf-sharded" and ckpt.candidates == [""]
    assert set(ckpt.tensors) == set(sd)
    for key, tensor in sd.items():
        info = ckpt.tensors[key]
        assert (info.shape, info.dtype) == (tuple(tensor.shape), str(tensor.dtype)[6:]), key
    config = ckpt.metadata["config"]
    for key in ("architectures", "model_type", "transformers_version", "torch_dtype",
                "vocab_size", "hidden_size", "num_hidden_layers"):
        assert config[key] == CONFIG[key]
    sharded = ckpt.finding("sharded")
    assert sharded.severity == "info" and "2 shard(s)" in sharded.message
    assert "from_pretrained" in sharded.message
    assert [f.kind for f in ckpt.findings] == ["sharded"]
    loaded = ckpt.state_dict()
    for key, tensor in sd.items():
        assert same_bits(loaded[key], tensor), key


def test_hf_sharded_bin_folder(tmp_path: Path) -> None:
    """.bin shards go through the torch zip reader."""
    sd = _hf_folder(tmp_path, ".bin")
    ckpt = open_checkpoint(tmp_path)
    assert ckpt.format == "hf-sharded" and set(ckpt.tensors) == set(sd)
    assert not [f for f in ckpt.findings if f.severity == "error"], ckpt.findings
    loaded = ckpt.state_dict()
    for key, tensor in sd.items():
        assert same_bits(loaded[key], tensor), key


def test_hf_missing_shard_and_missing_tensor(tmp_path: Path) -> None:
    sd = _hf_folder(tmp_path, ".safetensors")
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    index["weight_map"]["ghost.weight"] = "model-00001-of-00002.safetensors"
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    ckpt = open_checkpoint(tmp_path)
    f = ckpt.finding("corrupt")
    assert f.severity == "error" and f.keys == ["ghost.weight"]
    (tmp_path / "model-00002-of-00002.safetensors").unlink()
    ckpt = open_checkpoint(tmp_path)
    f = ckpt.finding("corrupt")
    assert "missing" in f.message and "snapshot_download" in f.message
    assert set(f.keys) == {*list(sd)[1::2], "ghost.weight"}
    assert set(ckpt.tensors) == set(list(sd)[0::2])


def test_hf_index_with_path_traversal_is_refused(tmp_path: Path) -> None:
    st.save_file({"w": torch.ones(1)}, str(tmp_path.parent / "outside.safetensors"))
    (tmp_path / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"w": "../outside.safetensors"}}))
    ckpt = open_checkpoint(tmp_path)
    assert not ckpt.tensors and ckpt.finding("corrupt").keys == ["w"]


def test_hf_single_file_folder_and_adapter(tmp_path: Path) -> None:
    st.save_file({"lora_A.weight": torch.ones(2, 4)}, str(tmp_path / "adapter_model.safetensors"))
    (tmp_path / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "base_model_name_or_path": "org/base", "r": 8}))
    ckpt = open_checkpoint(tmp_path)
    assert ckpt.format == "safetensors" and list(ckpt.tensors) == ["lora_A.weight"]
    assert ckpt.metadata["adapter_config"]["r"] == 8
    assert "PeftModel.from_pretrained" in ckpt.finding("foreign-format").message


def test_unrecognised_folder_says_what_it_holds(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hi")
    (tmp_path / "model_index.json").write_text("{}")
    (tmp_path / "unet").mkdir()
    st.save_file({"w": torch.ones(1)}, str(tmp_path / "unet" /
                                           "diffusion_pytorch_model.safetensors"))
    (tmp_path / "text_encoder").mkdir()
    with pytest.raises(NotACheckpointError) as err:
        open_checkpoint(tmp_path)
    message = str(err.value)
    assert "notes.txt" in message and "diffusers" in message
    assert "unet/diffusion_pytorch_model.safetensors" in message
    unet = open_checkpoint(tmp_path / "unet")
    assert unet.format == "safetensors"


def test_tensorflow_savedmodel_folder(tmp_path: Path) -> None:
    (tmp_path / "saved_model.pb").write_bytes(b"\x08\x01")
    (tmp_path / "variables").mkdir()
    (tmp_path / "variables" / "variables.index").write_bytes(b"\x00")
    ckpt = open_checkpoint(tmp_path)
    assert ckpt.format == "tensorflow-savedmodel"
    assert "tf.train.load_checkpoint" in ckpt.finding("foreign-format").message


# -- torch.distributed.checkpoint ---------------------------------------------------------
def test_dcp_folder_matches_torch(tmp_path: Path) -> None:
    import torch.distributed.checkpoint as dcp

    model = {k: v for k, v in mixed_state_dict().items()
             if not k.startswith(("fp8", "c", "u16"))}
    sd = {"model": model, "step": 7, "extra": torch.arange(3.0)}
    dcp_save(tmp_path, sd)
    ckpt = open_checkpoint(tmp_path)
    assert ckpt.format == "dcp" and ckpt.candidates[0] == "model"
    meta = dcp.FileSystemReader(str(tmp_path)).read_metadata()  # our own file: trusted
    for fqn, item in meta.state_dict_metadata.items():
        if not hasattr(item, "size"):
            assert fqn in ckpt.metadata["non_tensor_keys"]
            continue
        info = ckpt.tensors[fqn]
        assert info.shape == tuple(item.size), fqn
        assert info.dtype == str(item.properties.dtype).removeprefix("torch."), fqn
    assert set(ckpt.tensors) == {
        k for k, v in meta.state_dict_metadata.items() if hasattr(v, "size")}
    f = ckpt.finding("foreign-format")
    assert f.severity == "warning" and "dcp_to_torch_save" in f.message
    from torch.distributed.checkpoint import format_utils

    assert hasattr(format_utils, "dcp_to_torch_save")
    loaded = ckpt.state_dict("model")
    template = {"model": {k: torch.zeros_like(v) for k, v in model.items()},
                "extra": torch.zeros(3)}
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.load(template, checkpoint_id=str(tmp_path), no_dist=True)
    for key, tensor in template["model"].items():
        assert same_bits(loaded[key], tensor), key
        assert same_bits(loaded[key], model[key]), key


def test_dcp_folder_that_fits_is_not_called_loadable_as_is(tmp_path: Path) -> None:
    """torch.load cannot open a DCP folder and torch's DCP reader unpickles its metadata:
    the report says the state dict fits but the file needs a reader (never "loads as
    is"), and its plan loads every model tensor from the folder's values."""
    source = torch.nn.Linear(3, 2)
    dcp_save(tmp_path / "dcp", source.state_dict())
    model = torch.nn.Linear(3, 2)
    report = ck.diagnose(tmp_path / "dcp", model)
    assert report.status == "fixable" and not report.loads_cleanly
    assert "DCP" in report.headline and "load as is" not in report.headline
    assert [f.kind for f in report.plan] == ["extract-weights"]
    code = report.plan.to_code()
    assert "import torch.distributed" not in code and "dcp.load" not in code  # no pickle.load
    report.plan.apply(model)
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


def test_dcp_malicious_metadata_is_flagged_and_not_run(tmp_path: Path) -> None:
    dcp_save(tmp_path, {"w": torch.ones(2)})
    sentinel = tmp_path / "ran.txt"

    class Evil:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            import os

            return (os.system, (f"touch {sentinel}",))

    (tmp_path / ".metadata").write_bytes(pickle.dumps({"x": Evil()}))
    ckpt = open_checkpoint(tmp_path)
    assert ckpt.finding("malicious") is not None
    assert "os.system" in ckpt.finding("malicious").message or \
        "posix.system" in ckpt.finding("malicious").message
    assert ckpt.finding("corrupt") is not None
    assert not sentinel.exists()


def test_dcp_metadata_cut_short(tmp_path: Path) -> None:
    dcp_save(tmp_path, {"w": torch.ones(2)})
    meta = tmp_path / ".metadata"
    meta.write_bytes(meta.read_bytes()[:100])
    ckpt = open_checkpoint(tmp_path)
    assert ckpt.format == "dcp" and ckpt.finding("corrupt").severity == "error"


# -- DeepSpeed ---------------------------------------------------------------------------
def test_deepspeed_folder(tmp_path: Path) -> None:
    step = tmp_path / "global_step10"
    step.mkdir()
    (tmp_path / "latest").write_text("global_step10")
    (tmp_path / "zero_to_fp32.py").write_text("# script\n")
    sd = {"fc.weight": torch.randn(3, 4), "fc.bias": torch.zeros(3)}
    torch.save({"module": sd, "global_steps": 10}, step / "mp_rank_00_model_states.pt")
    for rank in range(2):
        torch.save({"optimizer_state_dict": {}},
                   step / f"zero_pp_rank_{rank}_mp_rank_00_optim_states.pt")
    ckpt = open_checkpoint(tmp_path)
    assert ckpt.format == "deepspeed"
    assert ckpt.metadata["zero_ranks"] == 2 and ckpt.metadata["deepspeed_tag"] == "global_step10"
    f = ckpt.finding("sharded")
    assert "get_fp32_state_dict_from_zero_checkpoint" in f.message
    assert "zero_to_fp32.py" in f.message


def test_deepspeed_model_states_list_tensors(tmp_path: Path) -> None:
    """Tensors of the model-states file come from the torch zip reader."""
    step = tmp_path / "global_step3"
    step.mkdir()
    sd = {"fc.weight": torch.randn(3, 4), "fc.bias": torch.zeros(3)}
    torch.save({"module": sd}, step / "mp_rank_00_model_states.pt")
    ckpt = open_checkpoint(tmp_path)
    assert ckpt.format == "deepspeed" and ckpt.candidates[0] == "module"
    loaded = ckpt.state_dict("module")
    assert all(torch.equal(loaded[k], v) for k, v in sd.items())


# -- integration with the zip and tar readers, and damage at every byte --------------------
def test_npz_keras_and_tar_through_open_checkpoint(tmp_path: Path) -> None:
    np.savez_compressed(tmp_path / "a.npz", w=np.arange(6.0).reshape(2, 3))
    ckpt = open_checkpoint(tmp_path / "a.npz")
    assert ckpt.format == "npz" and ckpt.tensors["w"].shape == (2, 3)
    assert np.array_equal(ckpt.read("w").numpy(), np.arange(6.0).reshape(2, 3))
    with zipfile.ZipFile(tmp_path / "m.keras", "w") as zf:
        zf.writestr("config.json", "{}")
        zf.writestr("model.weights.h5", keras_h5_bytes())
    assert open_checkpoint(tmp_path / "m.keras").format == "keras"
    with zipfile.ZipFile(tmp_path / "bundle.zip", "w") as zf:
        zf.writestr("run/model.safetensors", b"x")
    bundle = open_checkpoint(tmp_path / "bundle.zip")
    assert bundle.format == "zip" and "run/model.safetensors" in bundle.findings[0].message
    with tarfile.open(tmp_path / "notes.tar", "w") as tar:
        info = tarfile.TarInfo("notes.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    notes = open_checkpoint(tmp_path / "notes.tar")
    assert notes.format == "tar" and notes.finding("foreign-format") is not None


def _small_files(tmp_path: Path) -> dict[str, bytes]:
    st.save_file({"a.weight": torch.randn(3, 2), "b": torch.arange(4)},
                 str(tmp_path / "s.safetensors"), metadata={"k": "v"})
    np.save(tmp_path / "n.npy", np.arange(10, dtype=np.float32))
    np.savez(tmp_path / "z.npz", a=np.arange(4.0), b=np.ones((2, 2), dtype=np.int16))
    return {name: (tmp_path / name).read_bytes()
            for name in ("s.safetensors", "n.npy", "z.npz")}


def _opens_or_explains(path: Path) -> None:
    try:
        ckpt = open_checkpoint(path)
    except CheckpointError as exc:
        assert str(exc)
        assert not getattr(exc, "internal", False), exc  # a handled case, not a crash
        return
    for key, info in ckpt.tensors.items():
        if info.readable:
            try:
                ckpt.read(key)
            except CheckpointError as exc:
                assert str(exc)


def test_truncation_at_every_byte_and_random_flips(tmp_path: Path) -> None:
    import random

    rng = random.Random(0)
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    for name, data in _small_files(tmp_path).items():
        for cut in range(len(data)):
            target = damaged / f"cut{cut}_{name}"
            target.write_bytes(data[:cut])
            _opens_or_explains(target)
            target.unlink()
        for i in range(150):
            flipped = bytearray(data)
            for _ in range(rng.randint(1, 3)):
                flipped[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
            target = damaged / f"flip{i}_{name}"
            target.write_bytes(bytes(flipped))
            _opens_or_explains(target)
            target.unlink()


def test_safetensors_cut_inside_the_header_is_called_truncated(tmp_path: Path) -> None:
    st.save_file({"w": torch.ones(3)}, str(tmp_path / "w.safetensors"))
    data = (tmp_path / "w.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[:30])
    ckpt = open_checkpoint(tmp_path / "cut.safetensors")
    assert ckpt.format == "safetensors" and ckpt.finding("truncated") is not None
