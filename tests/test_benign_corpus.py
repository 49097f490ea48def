"""The benign corpus (tests/benign_corpus.py): real files written by the real libraries
must open, diagnose without a `malicious` finding or an `unsafe` status, and list the
same tensors (keys, shapes, dtypes) as the library's own loader reads back."""

from __future__ import annotations

import copy
import json
import os
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from benign_corpus import CorpusFile, build_corpus, planned

import ckwidget

PLANNED = planned()
GROUP_OF = {name: group for group, names in PLANNED.items() for name in names}
NAMES = list(GROUP_OF)
TORCH_FILES = [n for n in NAMES if not n.startswith(("hf-", "peft-lora", "timm-save",
                                                      "dcp-", "export-", "jit-"))
               and "safetensors" not in n]
REFUSED = [n for n in NAMES if n.startswith("legacy-")]


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    build = build_corpus(tmp_path_factory.mktemp("benign"))
    return {"files": {f.name: f for f in build.files}, "skipped": build.skipped}


def _file(corpus: dict[str, Any], name: str) -> CorpusFile:
    group = GROUP_OF[name]
    if group in corpus["skipped"]:
        why = f"{group}: {corpus['skipped'][group]}"
        if os.environ.get("CKWIDGET_REQUIRE_LIBRARIES") == "1":  # scripts/test installs them
            pytest.fail(why)
        pytest.skip(why)
    return corpus["files"][name]


def _kinds(findings: list[Any]) -> list[str]:
    return [f.kind for f in findings]


def _malicious(findings: list[Any]) -> list[str]:
    return [f"{f.kind}: {f.message}" for f in findings if f.kind == "malicious"]


# -- what the real loaders read ------------------------------------------------------------
def _walk(obj: Any, prefix: str, out: dict[str, torch.Tensor], depth: int = 0) -> None:
    """Dotted keys of every tensor in a loaded object, as ckwidget keys them: dict keys
    and list indices joined by dots; a whole pickled module by its state dict."""
    if depth > 50:
        return
    if isinstance(obj, torch.Tensor):
        out[prefix] = obj
        return
    if isinstance(obj, torch.nn.Module):
        for key, value in obj.state_dict(keep_vars=True).items():
            out[f"{prefix}.{key}" if prefix else key] = value
        return
    if isinstance(obj, dict):
        items = list(obj.items())
    elif isinstance(obj, (list, tuple)):
        items = list(enumerate(obj))
    else:
        return
    for key, value in items:
        _walk(value, f"{prefix}.{key}" if prefix else str(key), out, depth + 1)


def _torch_load(path: Path) -> tuple[Any, bool]:
    """(the loaded object, whether weights_only=True read it). These files are the
    corpus's own: weights_only=False is safe on them here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return torch.load(path, map_location="cpu", weights_only=True), True
        except Exception:
            return torch.load(path, map_location="cpu", weights_only=False), False


def _hf_weight_files(folder: Path) -> list[Path]:
    """The weight files transformers / peft / timm load from a folder, in their order of
    preference: safetensors before pickles, an index's shards before a single file."""
    for index, single in (("model.safetensors.index.json", "model.safetensors"),
                          ("pytorch_model.bin.index.json", "pytorch_model.bin"),
                          (None, "adapter_model.safetensors"), (None, "adapter_model.bin")):
        if index and (folder / index).exists():
            shards = json.loads((folder / index).read_text())["weight_map"].values()
            return [folder / s for s in dict.fromkeys(shards)]
        if (folder / single).exists():
            return [folder / single]
    raise AssertionError(f"no weights in {folder}")


def real_tensors(f: CorpusFile) -> dict[str, torch.Tensor]:
    import safetensors.torch as st

    out: dict[str, torch.Tensor] = {}
    if f.reader == "torch":
        if f.torch_refuses:
            with pytest.raises(Exception, match="has no attribute 'dtype'"):
                torch.load(f.path, weights_only=False)
            assert f.saved is not None
            return dict(f.saved)  # no loader reads it: what was saved
        obj, _ = _torch_load(f.path)
        _walk(obj, "", out)
    elif f.reader == "safetensors":
        out.update(st.load_file(f.path))
    elif f.reader == "jit":
        out.update(torch.jit.load(f.path, map_location="cpu").state_dict())
    elif f.reader == "export":
        ep = torch.export.load(f.path)
        out.update(ep.state_dict)
        out.update({f"constants.{k}": v for k, v in ep.constants.items()
                    if isinstance(v, torch.Tensor)})
    elif f.reader == "dcp":
        from torch.distributed.checkpoint import FileSystemReader
        from torch.distributed.checkpoint.metadata import TensorStorageMetadata

        meta = FileSystemReader(f.path).read_metadata().state_dict_metadata
        for key, m in meta.items():
            if isinstance(m, TensorStorageMetadata):
                out[key] = torch.empty(m.size, dtype=m.properties.dtype, device="meta")
    elif f.reader == "hf":
        for part in _hf_weight_files(f.path):
            if part.suffix == ".safetensors":
                out.update(st.load_file(part))
            else:
                out.update(torch.load(part, map_location="cpu", weights_only=True))
    else:  # pragma: no cover
        raise AssertionError(f.reader)
    return out


def _described(tensors: dict[str, Any]) -> dict[str, tuple[tuple[int, ...], str]]:
    return {k: (tuple(v.shape), str(v.dtype).removeprefix("torch."))
            for k, v in tensors.items()}


# -- the corpus itself -----------------------------------------------------------------------
def test_corpus_is_built_as_planned(corpus: dict[str, Any]) -> None:
    built = set(corpus["files"])
    expected = {n for g, names in PLANNED.items() if g not in corpus["skipped"]
                for n in names}
    assert built == expected
    assert len(built) >= 40, corpus["skipped"]
    for f in corpus["files"].values():
        assert f.path.exists(), f.name


# -- every file -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_opens_without_malicious(corpus: dict[str, Any], name: str) -> None:
    f = _file(corpus, name)
    ckpt = ckwidget.open_checkpoint(f.path)
    assert not _malicious(ckpt.findings), (ckpt.format, _kinds(ckpt.findings))


@pytest.mark.parametrize("name", NAMES)
def test_diagnose_is_not_unsafe(corpus: dict[str, Any], name: str) -> None:
    f = _file(corpus, name)
    report = ckwidget.diagnose(f.path, f.model)
    assert not _malicious(report.findings), report.headline
    assert report.status != "unsafe", (report.headline, _kinds(report.findings))


@pytest.mark.parametrize("name", NAMES)
def test_tensors_match_real_loader(corpus: dict[str, Any], name: str) -> None:
    f = _file(corpus, name)
    ckpt = ckwidget.open_checkpoint(f.path)
    listed = {k: (tuple(v.shape), v.dtype) for k, v in ckpt.tensors.items()}
    with warnings.catch_warnings():  # torch.jit.load's deprecation, export's notes
        warnings.simplefilter("ignore")
        real = _described(real_tensors(f))
    missing = sorted(set(real) - set(listed))
    extra = sorted(set(listed) - set(real))
    differ = {k: (listed[k], real[k]) for k in set(real) & set(listed) if listed[k] != real[k]}
    assert not (missing or extra or differ), (
        f"{ckpt.format}: {len(listed)} listed, {len(real)} real; missing {missing[:8]}, "
        f"extra {extra[:8]}, differ (ckwidget, real) {dict(list(differ.items())[:8])}")


# -- torch.load(weights_only=True): what ckwidget claims ------------------------------------
@pytest.mark.parametrize("name", TORCH_FILES)
def test_loads_cleanly_agrees_with_torch(corpus: dict[str, Any], name: str) -> None:
    """report.loads_cleanly: plain model.load_state_dict(torch.load(path,
    weights_only=True)) succeeds as is."""
    f = _file(corpus, name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            obj = torch.load(f.path, map_location="cpu", weights_only=True)
            model = copy.deepcopy(f.model)
            model.load_state_dict(obj)
            real = True
        except Exception:
            real = False
    report = ckwidget.diagnose(f.path, f.model)
    assert report.loads_cleanly == real, (report.status, report.headline)


@pytest.mark.parametrize("name", REFUSED)
def test_legacy_dtypes_torch_cannot_load(corpus: dict[str, Any], name: str) -> None:
    """A legacy-format file holding a dtype without a legacy storage class (uint16/32/64,
    float8, float4, complex32, bits): torch writes an UntypedStorage, and torch.load then
    fails with weights_only True or False. ckwidget must not say that torch loads it."""
    f = _file(corpus, name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(Exception):  # noqa: B017 - protocol 4 fails earlier, on opcodes
            torch.load(f.path, weights_only=True)
        with pytest.raises(Exception, match="has no attribute 'dtype'"):
            torch.load(f.path, weights_only=False)
    ckpt = ckwidget.open_checkpoint(f.path)
    assert ckpt.format == "torch-legacy"
    assert ckpt.metadata.get("torch_weights_only_accepts") is False
    version = [m.message for m in ckpt.findings if m.kind == "version"]
    assert version and not any("still reads it" in m for m in version), version
    assert any("UntypedStorage" in m for m in version), version
    # ckwidget's own reader still reads the bytes torch cannot
    got = ckpt.state_dict()
    assert f.saved is not None
    for key, want in f.saved.items():
        assert got[key].dtype == want.dtype
        assert torch.equal(got[key].view(torch.uint8), want.view(torch.uint8)), key
    report = ckwidget.diagnose(f.path, f.model)
    assert report.status != "ok", report.headline
    assert report.loads_cleanly is False, report.headline
