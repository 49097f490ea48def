"""ckwidget.readers.torch_export: torch.export (.pt2) archives, read straight from the
reader (torch_zip.read_zip does not hand them over yet: see the module's docstring)."""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path

import pytest
import torch
from benign_corpus import ExportNet, TinyNet

from ckwidget.readers.budgets import DEFAULT_BUDGETS
from ckwidget.readers.torch_export import SCALAR_TYPES, is_export_archive, read_export
from ckwidget.readers.zipdir import read_directory


def _open(path: Path):
    directory = read_directory(path, DEFAULT_BUDGETS)
    prefix = directory.names[0].split("/", 1)[0]
    assert is_export_archive(directory, prefix)
    return read_export(path, directory, prefix, DEFAULT_BUDGETS)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("export") / "net.pt2"
    torch.export.save(torch.export.export(ExportNet().eval(), (torch.randn(2, 3),)), path)
    return path


def test_scalar_types_match_torch() -> None:
    from torch._export.serde.serialize import _SERIALIZE_TO_TORCH_DTYPE

    assert {k: str(v).removeprefix("torch.") for k, v in
            _SERIALIZE_TO_TORCH_DTYPE.items()} == SCALAR_TYPES


def test_weights_and_constants_equal_torch_export_load(exported: Path) -> None:
    ckpt = _open(exported)
    ep = torch.export.load(exported)
    assert ckpt.format == "torch-export"
    assert not [f for f in ckpt.findings if f.severity == "error" or f.kind == "malicious"]
    want = {**{k: v.detach() for k, v in ep.state_dict.items()},
            **{f"constants.{k}": v for k, v in ep.constants.items()}}
    assert {k: (tuple(v.shape), str(v.dtype)[6:]) for k, v in want.items()} == {
        k: (v.shape, v.dtype) for k, v in ckpt.tensors.items()}
    assert ckpt.candidates[0] == ""
    got = {**ckpt.state_dict(""), **{f"constants.{k}": v for k, v in
                                     ckpt.state_dict("constants").items()}}
    for key, value in want.items():
        assert torch.equal(got[key], value), key


def test_views_share_one_record(tmp_path: Path) -> None:
    """Tied and sliced weights are one record viewed with offsets and strides."""

    class Tied(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = torch.nn.Linear(4, 4, bias=False)
            self.b = torch.nn.Linear(4, 4, bias=False)
            self.b.weight = self.a.weight
            self.register_buffer("rows", torch.arange(24.0).reshape(4, 6)[1:3, ::2])

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(self.a(x)).sum() + self.rows.sum()

    path = tmp_path / "tied.pt2"
    torch.export.save(torch.export.export(Tied(), (torch.randn(1, 4),)), path)
    ckpt = _open(path)
    ep = torch.export.load(path)
    got = ckpt.state_dict("")
    assert set(got) == set(ep.state_dict)
    for key, value in ep.state_dict.items():
        assert torch.equal(got[key], value.detach()), key


def _rewrite(source: Path, target: Path, replace: dict[str, bytes]) -> None:
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as out:
        for info in src.infolist():
            out.writestr(info.filename, replace.get(info.filename.split("/", 1)[1],
                                                    src.read(info)))


class _Payload:
    def __reduce__(self):
        import os

        return (os.system, ("echo hostile",))


def test_hostile_sample_inputs_are_reported(exported: Path, tmp_path: Path) -> None:
    """torch.export.load unpickles the sample inputs, with weights_only=False when
    weights_only=True fails: a payload there must be found."""
    nested = io.BytesIO()
    with zipfile.ZipFile(nested, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps(_Payload(), protocol=2))
        z.writestr("archive/version", "3\n")
    path = tmp_path / "hostile.pt2"
    _rewrite(exported, path, {"data/sample_inputs/model.pt": nested.getvalue()})
    ckpt = _open(path)
    malicious = [f for f in ckpt.findings if f.kind == "malicious"]
    assert malicious and "sample_inputs" in malicious[0].message


def test_hostile_opaque_constant_is_reported(exported: Path, tmp_path: Path) -> None:
    import json

    with zipfile.ZipFile(exported) as z:
        prefix = z.namelist()[0].split("/", 1)[0]
        config = json.loads(z.read(f"{prefix}/data/constants/model_constants_config.json"))
    config["config"]["evil"] = {"path_name": "opaque_obj_0", "is_param": False,
                                "use_pickle": True, "tensor_meta": None}
    path = tmp_path / "opaque.pt2"
    _rewrite(exported, path, {
        "data/constants/model_constants_config.json": json.dumps(config).encode(),
    })
    with zipfile.ZipFile(path, "a") as z:
        z.writestr(f"{prefix}/data/constants/opaque_obj_0", pickle.dumps(_Payload()))
    ckpt = _open(path)
    assert [f for f in ckpt.findings if f.kind == "malicious"]


def test_conv_net(tmp_path: Path) -> None:
    path = tmp_path / "conv.pt2"
    torch.export.save(torch.export.export(TinyNet().eval(), (torch.randn(1, 2, 4, 4),)), path)
    ckpt = _open(path)
    assert set(ckpt.tensors) == set(TinyNet().state_dict())
