"""The ``ckwidget`` command line, run as users run it: the installed console script and
``python -m ckwidget`` in subprocesses, on scenario checkpoints built here with torch.save.

Each subprocess that builds a model imports torch (seconds on a small machine), so the
end-to-end runs start together once per module and the tests assert on their results;
the exit-code matrix and the usage mistakes run ``main()`` in process.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import ckwidget as ck
from ckwidget import cli
from ckwidget.cli.format import Style, clean, use_colour
from ckwidget.cli.grouping import group_keys, ranges
from ckwidget.cli.model import build_model, load_factory

MODELS = '''
import torch
from torch import nn

BUILT_ON = []


class Net(nn.Module):
    def __init__(self, classes=3):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(8, 8) for _ in range(3))
        self.head = nn.Linear(8, classes)
        self.register_buffer("scale", torch.ones(8))


def build():
    net = Net()
    BUILT_ON.append(str(net.head.weight.device))
    return net


def build_on(device="cpu"):
    BUILT_ON.append(device)
    with torch.device(device):
        return Net()


class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.out = nn.Linear(4, 10, bias=False)
        self.out.weight = self.embed.weight


def no_meta():
    if torch.empty(0).is_meta:
        raise RuntimeError("this factory cannot build on meta")
    return Net()


def broken():
    raise RuntimeError("config file missing")


def not_a_model():
    return 42
'''


def _source_state() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    sd = {}
    for i in range(3):
        sd[f"layers.{i}.weight"] = torch.randn(8, 8, generator=g)
        sd[f"layers.{i}.bias"] = torch.randn(8, generator=g)
    sd["head.weight"] = torch.randn(3, 8, generator=g)
    sd["head.bias"] = torch.randn(3, generator=g)
    sd["scale"] = torch.full((8,), 2.0)
    return sd


def _malicious(path: Path, marker: Path) -> Path:
    """A torch zip whose data.pkl calls os.system (GLOBAL, BINUNICODE, TUPLE1, REDUCE)."""
    cmd = f"touch {marker}".encode()
    pkl = (b"\x80\x02cos\nsystem\nX" + struct.pack("<I", len(cmd)) + cmd + b"\x85R.")
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pkl)
        z.writestr("archive/byteorder", "little")
        z.writestr("archive/version", "3\n")
    return path


def _scenarios(root: Path) -> dict[str, Path]:
    (root / "models.py").write_text(MODELS)
    sd = _source_state()
    files = {"clean": root / "clean.pt", "dp": root / "dp.pt", "head": root / "head.pt",
             "extra": root / "extra.pt", "trunc": root / "trunc.pt",
             "evil": root / "evil.pt", "marker": root / "PWNED"}
    torch.save(sd, files["clean"])
    torch.save({"module." + k: v for k, v in sd.items()}, files["dp"])
    head = dict(sd, **{"head.weight": torch.randn(5, 8), "head.bias": torch.randn(5)})
    torch.save({"epoch": 7, "state_dict": head}, files["head"])
    torch.save(dict(sd, **{"aux.weight": torch.randn(2, 2)}), files["extra"])
    data = files["clean"].read_bytes()
    files["trunc"].write_bytes(data[: len(data) * 2 // 3])
    _malicious(files["evil"], files["marker"])
    return files


def _script() -> str:
    here = Path(sys.executable).parent / "ckwidget"
    found = str(here) if here.exists() else shutil.which("ckwidget")
    assert found, "the ckwidget console script is not installed: pip install -e . --no-deps"
    return found


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("NO_COLOR", None)
    env["OMP_NUM_THREADS"] = "1"
    return env


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Start every end-to-end run at once; each test asserts on one of them."""
    root = tmp_path_factory.mktemp("cli")
    files = _scenarios(root)
    m = "models.py:build"
    py = [sys.executable, "-m", "ckwidget"]
    commands = {
        "check_dp": [_script(), "check", "dp.pt", "--model", m],
        "check_evil": [*py, "check", "evil.pt", "-m", m, "--json"],
        "fix_dp": [_script(), "fix", "dp.pt", "-m", m, "-o", "dp.safetensors", "--code"],
        "fix_head": [*py, "fix", "head.pt", "-m", "models.py:build_on", "-o", "head_fixed.pt",
                     "--format", "torch", "--allow-partial"],
        # no --format: the suffix of -o chooses (a .pt name gets a file torch.load reads)
        "fix_dp_pt": [*py, "fix", "dp.pt", "-m", m, "-o", "repaired.pt"],
        "fix_mismatch": [*py, "fix", "dp.pt", "-m", m, "-o", "wrong.pt",
                         "--format", "safetensors"],
        # -X importtime lists every module imported: inspect must not import torch.
        "inspect_trunc": [sys.executable, "-X", "importtime", "-m", "ckwidget", "inspect",
                          "trunc.pt"],
        "inspect_clean": [_script(), "inspect", "clean.pt"],
        "inspect_clean_v": [_script(), "inspect", "clean.pt", "-v"],
        "inspect_json": [*py, "inspect", "dp.pt", "--json"],
    }
    procs = {k: subprocess.Popen(c, cwd=root, env=_env(), stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
             for k, c in commands.items()}
    results = {}
    for k, p in procs.items():
        out, err = p.communicate(timeout=300)
        results[k] = (p.returncode, out, err)
    return files, results


def _ok(result, code):
    rc, out, err = result
    assert rc == code, f"exit {rc} (expected {code})\nstdout:\n{out}\nstderr:\n{err}"
    assert "Traceback" not in err and "\x1b[" not in out  # no colour when not a terminal
    return out, err


# -- end to end, in subprocesses -----------------------------------------------------------
def test_check_prefixed_checkpoint_exits_1_with_the_plan(runs):
    _, results = runs
    out, _ = _ok(results["check_dp"], cli.FIXABLE)
    assert "0 of 9 model tensors would load as is; all 9 after" in out
    assert "verdict: fixable (exit 1)" in out
    assert "prefix" in out and "Remove the prefix 'module.'" in out
    assert "Suggested plan" in out and "Next: ckwidget fix dp.pt" in out
    # the key table is aligned: the status column starts at the same place on every row
    rows = [line for line in out.splitlines() if " renamed " in line]
    assert len(rows) == 9 and len({r.index(" renamed ") for r in rows}) == 1


def test_malicious_file_exits_3_and_nothing_runs(runs):
    files, results = runs
    out, _ = _ok(results["check_evil"], cli.BAD_FILE)
    doc = json.loads(out)
    assert doc["status"] == "unsafe" and doc["exit_code"] == 3
    assert doc["findings"][0]["kind"] == "malicious"
    assert "os.system" in doc["findings"][0]["message"]
    assert doc["plan"] == [] and doc["code"] is None
    assert not files["marker"].exists()


def test_fix_writes_safetensors_equal_to_plan_apply(runs):
    files, results = runs
    out, _ = _ok(results["fix_dp"], cli.OK)
    written = files["dp"].parent / "dp.safetensors"
    assert f"Wrote the repaired checkpoint: {written.name}" in out
    assert "safetensors, 9 tensors" in out and "strict=True" in out
    assert "The same in plain torch" in out and "removeprefix('module.')" in out
    sd = load_file(written)
    model = load_factory(f"{files['dp'].parent / 'models.py'}:Net")[0]()
    ck.diagnose(files["dp"], model).plan.apply(model)
    expected = model.state_dict()
    assert sd.keys() == expected.keys()
    assert all(torch.equal(sd[k], expected[k]) for k in sd)
    assert not list(written.parent.glob(".dp.safetensors.*"))  # no temporary file left


def test_fix_partial_torch_file_keeps_loaded_tensors_only(runs):
    files, results = runs
    out, _ = _ok(results["fix_head"], cli.OK)
    assert "verdict: partial (exit 2)" in out  # the verdict is still shown
    assert "torch, 7 tensors" in out and "strict=False" in out
    sd = torch.load(files["head"].parent / "head_fixed.pt", weights_only=True)
    source = _source_state()
    assert sorted(sd) == sorted(k for k in source if not k.startswith("head."))
    assert all(torch.equal(sd[k], source[k]) for k in sd)


def test_fix_to_a_pt_name_writes_a_file_torch_load_reads(runs):
    files, results = runs
    out, _ = _ok(results["fix_dp_pt"], cli.OK)
    assert "torch, 9 tensors" in out and "torch.load(path, weights_only=True)" in out
    sd = torch.load(files["dp"].parent / "repaired.pt", weights_only=True)
    source = _source_state()
    assert sorted(sd) == sorted(source) and all(torch.equal(sd[k], source[k]) for k in sd)


def test_fix_refuses_a_format_that_contradicts_the_suffix(runs):
    files, results = runs
    rc, out, err = results["fix_mismatch"]
    assert rc == cli.USAGE, (out, err)
    assert "'wrong.pt' names a torch file" in err and "Traceback" not in err
    assert not (files["dp"].parent / "wrong.pt").exists()


def test_inspect_never_imports_torch_and_reports_broken_files(runs):
    _, results = runs
    rc, out, err = results["inspect_trunc"]
    assert rc == cli.BAD_FILE, err
    imported = [line.split("|")[-1].strip() for line in err.splitlines()
                if line.startswith("import time:")]
    assert "ckwidget.cli" in imported
    assert not [m for m in imported if m == "torch" or m.startswith("torch.")]
    assert "BROKEN" in out and "exit 3" in out


def test_inspect_text_groups_layers(runs):
    _, results = runs
    out, _ = _ok(results["inspect_clean"], cli.OK)
    assert "format    torch-zip" in out
    assert "9 tensors" in out and "float32 ×9" in out
    assert "layers.{0..2}.weight  ×3  float32  8×8" in out
    # the one finding is info: counted, shown with -v
    assert "head.weight" in out and "(1 info finding: -v shows it)" in out
    assert "Findings" not in out


def test_inspect_verbose_shows_info_findings(runs):
    _, results = runs
    out, _ = _ok(results["inspect_clean_v"], cli.OK)
    assert "Findings (1)" in out and "info" in out and "-v shows" not in out


def test_inspect_json_document(runs):
    _, results = runs
    out, _ = _ok(results["inspect_json"], cli.OK)
    doc = json.loads(out)
    assert doc["format"] == "torch-zip" and doc["state"] == "ok"
    assert doc["tensor_count"] == 9 and doc["candidates"] == [""]
    assert doc["tensors"]["module.layers.0.weight"] == {
        "shape": [8, 8], "dtype": "float32", "device": "cpu", "nbytes": 256}
    assert doc["tensor_bytes"] == sum(t["nbytes"] for t in doc["tensors"].values())
    assert isinstance(doc["metadata"], dict)
    assert all({"kind", "severity", "message", "keys"} <= set(f) for f in doc["findings"])


# -- in process: the exit-code matrix and the mistakes --------------------------------------
@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Scenario files; the user modules main() imports are forgotten afterwards."""
    path, modules = list(sys.path), set(sys.modules)
    yield _scenarios(tmp_path_factory.mktemp("cli-inproc"))
    sys.path[:] = path
    for name in set(sys.modules) - modules:
        if name.startswith("_ckwidget_user_"):
            del sys.modules[name]


def _main(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_exit_codes_for_each_scenario(files, capsys):
    m = f"{files['clean'].parent / 'models.py'}:build"
    cases = [
        (["check", str(files["clean"]), "-m", m], cli.OK, "All 9 model tensors load as is"),
        # the resized head keeps its initial values while the file's head goes unused
        (["check", str(files["head"]), "-m", m], cli.CANNOT_LOAD, "partial (exit 2)"),
        (["check", str(files["extra"]), "-m", m], cli.FIXABLE, "aux.weight"),
        (["check", str(files["extra"]), "-m", m, "--strict"], cli.CANNOT_LOAD, "--strict"),
        (["check", str(files["trunc"]), "-m", m], cli.BAD_FILE, "broken file"),
        (["check", str(files["evil"]), "-m", m], cli.BAD_FILE, "unsafe file"),
    ]
    for argv, code, words in cases:
        got, out, err = _main(capsys, *argv)
        assert (got, words in out) == (code, True), (argv, out, err)
    assert not files["marker"].exists()


def test_verdict_is_the_report_status(files, capsys, tmp_path):
    """check's exit code and verdict word come from Report.status. Three cases where the
    CLI used to say otherwise: NaN weights under matching keys (status partial; the CLI
    said "ok", exit 0), a checkpoint without the model's head (status fixable; the CLI
    said "cannot be repaired", exit 2), and an npz holding one array of strings beside
    the weights (an info foreign-format finding; status ok; the CLI said "broken file",
    exit 3, and inspect said BROKEN)."""
    import numpy as np

    models = files["clean"].parent / "models.py"
    m = f"{models}:build"
    sd = _source_state()
    nan, headless, mixed = tmp_path / "nan.pt", tmp_path / "headless.pt", tmp_path / "m.npz"
    torch.save(dict(sd, **{"head.weight": torch.full((3, 8), float("nan"))}), nan)
    torch.save({k: v for k, v in sd.items() if not k.startswith("head.")}, headless)
    np.savez(mixed, **{k: v.numpy() for k, v in sd.items()}, names=np.array(["a", "b"]))
    codes = {"ok": cli.OK, "fixable": cli.FIXABLE, "partial": cli.CANNOT_LOAD,
             "broken": cli.CANNOT_LOAD, "unsafe": cli.BAD_FILE}
    cases = [(nan, [], "partial", cli.CANNOT_LOAD, "partial (exit 2): values are not finite"),
             (headless, [], "fixable", cli.FIXABLE,
              "fixable (exit 1): loads after the suggested plan (2 model tensors keep"),
             (headless, ["--strict"], "fixable", cli.CANNOT_LOAD,
              "(exit 2): --strict, and some model tensors would keep their initial values"),
             (mixed, [], "ok", cli.OK, "ok (exit 0): loads as is")]
    for path, extra, status, code, words in cases:
        report = ck.diagnose(path, load_factory(m)[0]())
        assert report.status == status and (code == codes[status]) != bool(extra), path
        got, out, err = _main(capsys, "check", str(path), "-m", m, *extra)
        assert (got, words in out) == (code, True), (path, extra, out, err)
        got, out, _ = _main(capsys, "check", str(path), "-m", m, "--json", *extra)
        doc = json.loads(out)
        assert (got, doc["status"], doc["exit_code"]) == (code, status, code)
    assert _main(capsys, "inspect", str(mixed))[0] == cli.OK  # was BROKEN, exit 3
    # the file fix writes from NaN weights would not be the model's: refused as partial
    got, out, _ = _main(capsys, "fix", str(nan), "-m", m, "-o", str(tmp_path / "n.pt"))
    assert got == cli.CANNOT_LOAD and "Nothing written" in out
    assert not (tmp_path / "n.pt").exists()
    # and the head the file lacks keeps its initial values: the file is written
    got, out, _ = _main(capsys, "fix", str(headless), "-m", m, "-o", str(tmp_path / "h.pt"))
    assert got == cli.OK and "torch, 7 tensors" in out and "strict=False" in out


def test_every_scenario_exit_code_follows_its_status(files, capsys):
    """The exit code of each scenario is its report's status, the broken ones split by
    whether the file itself gives no weights (3, as inspect says) or the model's side (2)."""
    m = f"{files['clean'].parent / 'models.py'}:build"
    expected = {"ok": {cli.OK}, "fixable": {cli.FIXABLE}, "partial": {cli.CANNOT_LOAD},
                "broken": {cli.CANNOT_LOAD, cli.BAD_FILE}, "unsafe": {cli.BAD_FILE}}
    seen = set()
    for name in ("clean", "dp", "head", "extra", "trunc", "evil"):
        code, out, _ = _main(capsys, "check", str(files[name]), "-m", m, "--json")
        doc = json.loads(out)
        assert code == doc["exit_code"] and code in expected[doc["status"]], (name, doc)
        inspected = _main(capsys, "inspect", str(files[name]))[0]
        assert (code == cli.BAD_FILE) == (inspected == cli.BAD_FILE), name
        seen.add(doc["status"])
    assert seen == set(expected)
    assert not files["marker"].exists()


def test_check_json_and_code(files, capsys):
    m = f"{files['clean'].parent / 'models.py'}:build"
    code, out, _ = _main(capsys, "check", str(files["head"]), "-m", m, "--json")
    doc = json.loads(out)
    assert code == doc["exit_code"] == cli.CANNOT_LOAD
    assert doc["entry"] == "state_dict" and doc["model_class"] == "Net"
    assert doc["model_tensor_count"] == 9 and doc["loadable_after_plan"] == 7
    assert {k["key"] for k in doc["keys"] if k["status"] == "shape-mismatch"} == {
        "head.weight", "head.bias"}
    assert [p["kind"] for p in doc["plan"]] == [f.kind for f in ck.diagnose(
        files["head"], load_factory(m)[0]()).plan]
    assert "torch.load(" in doc["code"]


def test_mistakes_give_one_sentence_and_distinct_codes(files, capsys, tmp_path):
    folder = files["clean"].parent
    models = folder / "models.py"
    cases = [
        (["check", str(tmp_path / "nope.pt"), "-m", f"{models}:build"], cli.USAGE,
         "There is no file or folder"),
        (["check", str(files["dp"]), "-m", "build"], cli.USAGE, "MODULE:FACTORY"),
        (["check", str(files["dp"]), "-m", f"{models}:missing"], cli.USAGE, "no attribute"),
        (["check", str(files["dp"]), "-m", "no_such_module_xyz:build"], cli.USAGE,
         "No module named"),
        (["check", str(files["head"]), "-m", f"{models}:build", "--entry", "ema"], cli.USAGE,
         "no entry 'ema'"),
        (["check", str(files["dp"]), "-m", f"{models}:broken"], cli.MODEL_FAILED,
         "config file missing"),
        (["check", str(files["dp"]), "-m", f"{models}:not_a_model"], cli.MODEL_FAILED,
         "not a torch.nn.Module"),
        (["fix", str(files["dp"]), "-m", f"{models}:build", "-o", str(files["dp"])],
         cli.USAGE, "source checkpoint"),
        (["fix", str(files["dp"]), "-m", f"{models}:build", "-o", str(tmp_path / "a" / "b")],
         cli.USAGE, "does not exist"),
        (["fix", str(files["evil"]), "-m", f"{models}:build", "-o", str(tmp_path / "x.pt")],
         cli.BAD_FILE, ""),
        (["fix", str(files["head"]), "-m", f"{models}:build", "-o", str(tmp_path / "y.pt")],
         cli.CANNOT_LOAD, ""),
    ]
    for argv, code, words in cases:
        got, out, err = _main(capsys, *argv)
        assert got == code, (argv, got, out, err)
        if words:
            assert err.startswith("ckwidget: ") and words in err and err.count("\n") == 1, err
        assert "Traceback" not in err
    assert not (tmp_path / "x.pt").exists() and not (tmp_path / "y.pt").exists()
    # argparse's own mistakes use the usage code too, not 2 (which means "unrepairable")
    with pytest.raises(SystemExit) as exc:
        cli.main(["check", str(files["dp"])])
    assert exc.value.code == cli.USAGE
    assert "--model" in capsys.readouterr().err


def test_help_teaches_examples_and_exit_codes(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["check", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for words in ("examples:", "ckwidget check ckpt.pt --model models.py:build",
                  "exit codes:", "  3  the file is unsafe", "MODULE:FACTORY", "--strict"):
        assert words in text


# -- pieces ---------------------------------------------------------------------------------
def test_models_are_built_on_meta_as_shape_only_stand_ins(files):
    models = files["clean"].parent / "models.py"
    for name in ("build", "build_on"):
        factory, label = load_factory(f"{models}:{name}")
        model, stand_in = build_model(factory, label)
        assert stand_in
        sd = model.state_dict()
        assert sd["layers.0.weight"].shape == (8, 8) and sd["scale"].dtype == torch.float32
        assert all(t.device.type == "cpu" and t.untyped_storage().nbytes() <= 4
                   for t in sd.values())
    module = sys.modules[factory.__module__]
    assert module.BUILT_ON[-1] == "meta"  # the factory that takes device= got "meta"
    tied, _ = build_model(load_factory(f"{models}:Tied")[0], "Tied")
    assert tied.out.weight is tied.embed.weight  # tied weights stay tied
    real, stand_in = build_model(load_factory(f"{models}:no_meta")[0], "no_meta")
    assert not stand_in and real.head.weight.abs().sum() > 0  # fell back to a real build


def test_terminal_safety_and_colour(tmp_path, capsys, monkeypatch):
    path = tmp_path / "ansi.safetensors"
    save_file({"\x1b[2Jevil\nkey": torch.zeros(2)}, path)
    code, out, _ = _main(capsys, "inspect", str(path))
    assert code == cli.OK and "\x1b" not in out and "\\x1b[2Jevil\\nkey" in out
    assert clean("a\x07b") == "a\\x07b"

    class Tty:
        def isatty(self):
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    assert use_colour(Tty()) and not use_colour(object())
    monkeypatch.setenv("NO_COLOR", "1")
    assert not use_colour(Tty())
    assert Style(True)("x", "red") == "\x1b[31mx\x1b[0m" and Style(False)("x", "red") == "x"


def test_grouping_collapses_grids_and_keeps_outliers():
    assert ranges([0, 1, 2, 3, 7, 9, 10]) == "0..3,7,9,10"
    assert ranges(range(0, 2000, 7)) == "0,7,14,21,28,35,42,49,56,63,70,...,1995"
    items = {f"layers.{i}.attn.qkv.weight": (768, 2304) for i in range(12)}
    items["layers.5.attn.qkv.weight"] = (768, 1)  # one layer differs: its own row
    items.update({f"moe.{i}.experts.{j}.w": (4,) for i in range(2) for j in range(3)})
    items.update({"moe.2.experts.0.w": (4,)})  # not a full grid
    rows = [(name, n) for name, n, _ in group_keys(items, lambda v: v)]
    assert rows == [("layers.{0..4,6..11}.attn.qkv.weight", 11),
                    ("layers.5.attn.qkv.weight", 1),
                    ("moe.{0,1}.experts.{0..2}.w", 6), ("moe.2.experts.0.w", 1)]
