"""The Report's displays: readable in a terminal, escaped in a notebook."""

from __future__ import annotations

import torch
from torch import nn

import ckwidget as ck

HOSTILE = "<img src=x onerror=alert(1)>"


def test_html_escapes_every_string_from_the_file():
    model = nn.Linear(2, 2)
    sd = {f"module.{k}": v for k, v in model.state_dict().items()}
    sd[HOSTILE] = torch.ones(1)
    sd[f"{HOSTILE}.weight"] = torch.ones(1)
    report = ck.diagnose(sd, model)
    assert any(HOSTILE in f.message or HOSTILE in " ".join(f.keys) for f in report.findings)
    page = report._repr_html_()
    assert "<img" not in page and "onerror=alert(1)>" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert 'class="ck-headline"' in page and 'class="ck-table"' in page


def test_repr_is_a_readable_summary():
    model = nn.Linear(2, 2)
    sd = {f"module.{k}": v for k, v in model.state_dict().items()}
    sd["module.bad\x1b[31m"] = torch.ones(1)
    text = repr(ck.diagnose(sd, model))
    lines = text.splitlines()
    assert lines[0].startswith("ckwidget report:")
    assert "0 of 2 model tensors would load as is; all 2 after the suggested plan" in text
    assert "Suggested plan:" in text and "1. Remove the prefix 'module.'" in text
    assert "\x1b" not in text, "control characters from the file are escaped"


def test_clean_checkpoint_reports_ok(tmp_path):
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    path = tmp_path / "m.pt"
    torch.save(model.state_dict(), path)
    report = ck.diagnose(path, model)
    assert report.loads_cleanly and report.status == "ok"
    assert report.headline == "All 4 model tensors load as is."
    assert not report.plan and len(report.table) == 4
    assert set(report.table["status"]) == {"match"}


def test_broken_file_gives_findings_not_tracebacks(tmp_path):
    path = tmp_path / "weights.pt"
    path.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:" + "a" * 64
                    + "\nsize 12345\n")
    report = ck.diagnose(path, nn.Linear(2, 2))
    assert report.findings[0].kind == "lfs-pointer"
    assert report.status == "broken"
    assert report.finding("missing-keys") is None, "no pile-on of key findings"
    assert "lfs" in report.headline


def test_preview_diagnoses_the_plan_result(tmp_path):
    model = nn.Linear(2, 2)
    path = tmp_path / "dp.pt"
    torch.save(nn.DataParallel(model).state_dict(), path)
    report = ck.diagnose(path, nn.Linear(2, 2))
    after = ck.diagnose(path, nn.Linear(2, 2), plan=report.plan)
    assert after.loads_cleanly and not after.plan
