"""Files torch.load(weights_only=True) cannot read and no allowlist fixes: protocol 4+
pickles and whole pickled models. The plan reads them with ckwidget's reader, and the
snippet it writes runs in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

import ckwidget as ck
from ckwidget.fixes import AllowGlobals, ExtractWeights, SelectEntry

REPO = Path(__file__).resolve().parents[1]


def run_snippets(cases: list[tuple[str, str, Path]]) -> None:
    """exec each (model expression, snippet) in one fresh interpreter; each snippet must
    load the model so that it equals the state saved next to it (``<path>.expect``)."""
    body = ["import torch", "from torch import nn", "import sys",
            f"sys.path.insert(0, {str(REPO)!r})"]
    for i, (model_expr, code, expect) in enumerate(cases):
        body += [
            f"model = {model_expr}",
            f"exec(compile({code!r}, 'snippet{i}', 'exec'), {{'model': model}})",
            f"want = torch.load({str(expect)!r}, weights_only=True)",
            "got = model.state_dict()",
            "assert set(want) == set(got), (sorted(want), sorted(got))",
            f"assert all(torch.equal(want[k], got[k]) for k in want), {i}",
        ]
    out = subprocess.run([sys.executable, "-c", "\n".join(body)], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]


def expect(model: nn.Module, path: Path) -> Path:
    target = path.with_suffix(".expect")
    torch.save(model.state_dict(), target)
    return target


def test_protocol_4_and_whole_models_are_read_by_ckwidget(tmp_path):
    src = nn.Linear(3, 2)
    p4 = tmp_path / "p4.pt"
    torch.save(src.state_dict(), p4, pickle_protocol=4)
    with pytest.raises(Exception, match=r"149|Unsupported"):
        torch.load(p4, weights_only=True)  # the premise: plain torch refuses it
    report = ck.diagnose(p4, nn.Linear(3, 2))
    assert report.state_dict_fits, "the state dict itself fits the model"
    assert not report.loads_cleanly, "but torch.load(weights_only=True) refuses the file"
    assert report.status == "fixable" and report.plan.fixes == [ExtractWeights()]
    assert "loads as is" not in report.headline and "ckwidget's reader" in report.headline
    assert report.loadable_count == 0 and report.loadable_after_plan == 2
    assert "ckwidget.extract_weights(PATH" in report.plan.to_code()

    whole_src = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 1))
    whole = tmp_path / "whole.pt"
    torch.save(whole_src, whole)
    whole_report = ck.diagnose(whole, nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 1)))
    assert whole_report.plan.fixes == [ExtractWeights()]
    assert not any(isinstance(fix, AllowGlobals) for f in whole_report.findings for fix in f.fixes)

    lightning_src = nn.Linear(2, 2)
    nested = tmp_path / "nested4.ckpt"
    torch.save({"state_dict": lightning_src.state_dict(), "epoch": 3}, nested, pickle_protocol=4)
    nested_report = ck.diagnose(nested, nn.Linear(2, 2))
    assert nested_report.plan.fixes == [SelectEntry("state_dict"), ExtractWeights()]
    assert "entry='state_dict'" in nested_report.plan.to_code()

    model = nn.Linear(2, 2)
    nested_report.plan.apply(model)
    assert torch.equal(model.weight, lightning_src.weight)
    run_snippets([
        ("nn.Linear(3, 2)", report.plan.to_code(), expect(src, p4)),
        ("nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 1))",
         whole_report.plan.to_code(), expect(whole_src, whole)),
        ("nn.Linear(2, 2)", nested_report.plan.to_code(), expect(lightning_src, nested)),
    ])


def test_preview_after_reader_plan_is_clean(tmp_path):
    path = tmp_path / "p4.pt"
    torch.save(nn.Linear(3, 2).state_dict(), path, pickle_protocol=4)
    report = ck.diagnose(path, nn.Linear(3, 2))
    preview = report.plan.preview(nn.Linear(3, 2))
    assert preview.status == "ok" and not len(preview.plan)


def test_malicious_protocol_4_file_gets_no_plan(tmp_path):
    from tests._hostile_files import call, glob, text, torch_zip_with_body

    path = torch_zip_with_body(tmp_path / "evil.pt",
                               call(glob("os", "system"), text("echo pwned", protocol=4)),
                               protocol=4)
    report = ck.diagnose(path, nn.Linear(2, 2))
    assert report.status == "unsafe"
    assert not len(report.plan), "nothing should read a file that names code to run"
    offered = [fix for f in report.findings for fix in f.fixes]
    assert not [fix for fix in offered if isinstance(fix, (AllowGlobals, ExtractWeights))]
    assert "do not" in report.headline.lower() or "unsafe" in report.headline.lower()


def test_extract_weights_snippet_comment_is_one_line():
    plan = ck.Plan([ExtractWeights("a\nprint('x')")], source="x.pt")
    code = plan.to_code()
    assert "\nprint('x')" not in code
    compile(textwrap.dedent(code), "snippet", "exec")


def test_numpy_values_allowlist_snippet_runs_without_ckwidget(tmp_path):
    import numpy as np

    src = nn.Linear(2, 2)
    path = tmp_path / "np.pt"
    torch.save({"model": src.state_dict(), "best": np.float64(0.9), "arr": np.zeros(3),
                "step": np.int64(3), "flag": np.bool_(True)}, path)
    report = ck.diagnose(path, nn.Linear(2, 2))
    allow = [f for f in report.plan.fixes if isinstance(f, AllowGlobals)]
    assert allow and any("DType" in n for n in allow[0].names)
    assert not report.plan.extracts
    target = expect(src, path)
    prog = "\n".join([
        "import torch", "from torch import nn", "model = nn.Linear(2, 2)",
        report.plan.to_code(),
        f"want = torch.load({str(target)!r}, weights_only=True)",
        "assert all(torch.equal(want[k], v) for k, v in model.state_dict().items())",
    ])
    out = subprocess.run([sys.executable, "-I", "-c", prog], capture_output=True, text=True,
                         timeout=120)  # -I: ckwidget is not importable there
    assert out.returncode == 0, out.stderr[-2000:]
    assert "loaded 2 tensors" in out.stdout
