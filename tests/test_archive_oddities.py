"""Archives that are not what their first bytes say: each described as what it is."""

from __future__ import annotations

import io
import zipfile

import torch

import ckwidget as ck


def _torch_zip(tmp_path) -> bytes:
    torch.save({"a": torch.ones(2)}, tmp_path / "a.pt")
    return (tmp_path / "a.pt").read_bytes()


def test_an_appended_second_archive_is_named_not_called_empty(tmp_path) -> None:
    extra = io.BytesIO()
    with zipfile.ZipFile(extra, "w") as z:
        z.writestr("x.txt", "hello")
    path = tmp_path / "appended.pt"
    path.write_bytes(_torch_zip(tmp_path) + extra.getvalue())
    finding = ck.open_checkpoint(path).findings[0]
    assert finding.kind == "corrupt" and "2 zip archives one after another" in finding.message
    assert "empty" not in finding.message


def test_a_prefixed_archive_says_where_the_zip_starts(tmp_path) -> None:
    path = tmp_path / "prefixed.pt"
    path.write_bytes(b"\x00" * 512 + _torch_zip(tmp_path))
    finding = ck.open_checkpoint(path).findings[0]
    assert finding.kind == "not-a-checkpoint"
    assert "starts at byte 512" in finding.message and finding.details["zip_offset"] == 512
