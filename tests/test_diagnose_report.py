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


def test_a_report_has_one_html_rendering_the_static_report():
    """A Report shown in a notebook and the widget's static fallback are one renderer:
    same header, findings, plan code and keys, with its own scoped style."""
    from ckwidget.ui.static import static_html

    model = nn.Linear(2, 2)
    report = ck.diagnose({f"module.{k}": v for k, v in model.state_dict().items()}, model)
    page = report._repr_html_()
    assert page == static_html(report)
    assert "<style" in page and "ck-static" in page and "ck-snippet" in page


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


class _Tied(nn.Module):
    """Embedding tied to the output head, Conv1D-style projections, a norm."""

    def __init__(self, vocab: int = 10, width: int = 4, heads_out: int = 10) -> None:
        super().__init__()
        self.wte = nn.Embedding(vocab, width)
        self.blocks = nn.ModuleList(nn.Linear(width, 2 * width) for _ in range(3))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, heads_out, bias=False)
        self.head.weight = self.wte.weight


def _after_plan_situations():
    torch.manual_seed(0)
    model = _Tied()
    sd = model.state_dict()
    yield "prefix", {f"module.{k}": v for k, v in sd.items()}, model
    yield "transposed", {k: (v.t().contiguous() if k.startswith("blocks") and v.dim() == 2
                             else v) for k, v in sd.items()}, model
    yield "renamed+bf16", {k.replace("blocks.", "layers.").replace("norm.", "ln."):
                           v.to(torch.bfloat16) for k, v in sd.items()}, model
    resized = {k: v for k, v in sd.items() if k != "head.weight"}
    resized["wte.weight"] = torch.zeros(12, 4)
    yield "resized-vocab", resized, model
    missing = {k: v for k, v in sd.items() if not k.startswith("norm")}
    missing["extra.weight"] = torch.ones(3)
    yield "missing+unexpected", {f"model.{k}": v for k, v in missing.items()}, model


def test_after_plan_count_matches_a_full_simulation():
    """The count diagnosis takes from the alignment equals simulating the whole plan
    key by key and counting what lands with the model's shapes."""
    from ckwidget.diagnosis.engine import _received
    from ckwidget.diagnosis.model_side import describe_model

    for name, sd, model in _after_plan_situations():
        report = ck.diagnose(sd, model)
        side = describe_model(model)
        full = _received(report.plan.simulate(report.checkpoint, side.infos), side)
        assert report.loadable_after_plan == full, name
        assert len(report.plan), name


def test_status_counts_and_attention_rows_agree_with_the_full_columns():
    """The widget's first display counts statuses and lists the rows that need attention
    without building the columns: both must equal what the columns say."""
    from collections import Counter

    for name, sd, model in _after_plan_situations():
        for limit in (1, 3, 100):
            report = ck.diagnose(sd, model)
            counts = report.status_counts()
            attention = report.attention_columns(limit)
            cols = report.columns  # built after, so the two above did not use them
            assert counts == dict(Counter(cols["status"])), name
            rows = [i for i, s in enumerate(cols["status"]) if s != "match"][:limit]
            assert attention == {c: [v[i] for i in rows] for c, v in cols.items()}, name
        assert report.status_counts() == counts  # cached, and from the columns alike
    assert report.status_counts().get("unexpected") and report.status_counts().get("missing")


def test_offered_fixes_are_the_plan_then_other_kinds_the_findings_offer(tmp_path):
    """What the widget offers as toggles comes from the report: a changed head's plan
    drops it, and resizing it into the model is offered beside that, not planned."""
    from ckwidget.fixes import DropKeys, ResizeCopy

    src = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 10))
    torch.save(src.state_dict(), tmp_path / "head.pt")
    report = ck.diagnose(tmp_path / "head.pt",
                         torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 5)))
    offered = report.offered_fixes
    assert offered[:len(report.plan.fixes)] == list(report.plan.fixes)
    assert any(isinstance(f, DropKeys) for f in report.plan.fixes)
    extra = offered[len(report.plan.fixes):]
    assert [type(f) for f in extra] == [ResizeCopy]
