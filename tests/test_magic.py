"""%ckdebug through IPython's own shell: parsing, evaluation, errors, the returned widget."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from IPython.core.error import UsageError
from safetensors.torch import save_file

from ckwidget.magic import parse_line


@pytest.fixture(scope="module")
def ip():
    from IPython.testing.globalipapp import start_ipython

    shell = start_ipython()
    shell.run_line_magic("load_ext", "ckwidget")
    yield shell
    shell.run_line_magic("unload_ext", "ckwidget")


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU())
        self.head = torch.nn.Linear(8, 3)


@pytest.fixture
def broken(tmp_path: Path) -> tuple[Path, Net]:
    """A DataParallel-style checkpoint (every key under 'module.') in a path with spaces."""
    torch.manual_seed(0)
    donor = Net()
    sd = {"module." + k: v.clone() for k, v in donor.state_dict().items()}
    folder = tmp_path / "my runs" / "it's here"
    folder.mkdir(parents=True)
    path = folder / "ckpt.safetensors"
    save_file(sd, str(path))
    return path, donor


def test_parse_quoted_path_and_options() -> None:
    args = parse_line(
        "'/tmp/my runs/a b.pt' net.encoder --entry state_dict --map-location cpu "
        "--sample 'torch.zeros(1, 4)' --optimizer opt --export"
    )
    assert args.path == "/tmp/my runs/a b.pt"
    assert args.model == "net.encoder"
    assert (args.entry, args.map_location, args.optimizer) == ("state_dict", "cpu", "opt")
    assert args.sample == "torch.zeros(1, 4)" and args.export


def test_parse_double_quotes_with_apostrophe() -> None:
    assert parse_line('"/data/it\'s here/x.pt" m').path == "/data/it's here/x.pt"


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("", "checkpoint path and a model"),
        ("only_a_path.pt", "missing"),
        ("a.pt m --bogus 1", "unrecognized"),
        ("a.pt m --entry", "expected one argument"),
        ("'unterminated m", "quotes"),
    ],
)
def test_bad_lines_are_one_sentence_usage_errors(line: str, words: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_line(line)
    message = str(info.value)
    assert words.lower() in message.lower()
    assert "\n" not in message and "Traceback" not in message


def test_magic_returns_widget_and_evaluates_model_expression(ip, broken) -> None:
    path, _donor = broken
    ip.user_ns["net"] = Net()
    ip.user_ns["ckpt_path"] = str(path)
    widget = ip.run_line_magic("ckdebug", f'"{path}" net')
    from ckwidget.ui.widget import CheckpointDebugger

    assert isinstance(widget, CheckpointDebugger)
    assert widget.model is ip.user_ns["net"]
    assert widget.model_name == "net"
    assert "strip-prefix" in [f.kind for f in widget.plan.fixes]


def test_assignment_form_binds_the_widget(ip, broken) -> None:
    path, donor = broken
    ip.user_ns["net"] = Net()
    result = ip.run_cell(f'dbg = %ckdebug "{path}" net')
    assert result.success, result.error_in_exec
    dbg = ip.user_ns["dbg"]
    dbg.apply()
    for key, value in donor.state_dict().items():
        assert torch.equal(ip.user_ns["net"].state_dict()[key], value)


def test_submodule_expression_is_the_model(ip, tmp_path) -> None:
    net = Net()
    path = tmp_path / "enc.safetensors"
    save_file({k: v.clone() for k, v in net.encoder.state_dict().items()}, str(path))
    ip.user_ns["net"] = net
    widget = ip.run_line_magic("ckdebug", f"{path} net.encoder")
    assert widget.model is net.encoder and widget.model_name == "net.encoder"
    assert widget.report.loads_cleanly


def test_export_flag_puts_code_in_next_cell(ip, broken, monkeypatch) -> None:
    path, _ = broken
    ip.user_ns["net"] = Net()
    seen: list[str] = []
    monkeypatch.setattr(ip, "set_next_input", lambda code, replace=False: seen.append(code))
    widget = ip.run_line_magic("ckdebug", f'"{path}" net --export')
    assert seen and seen[0] == widget.last_code
    assert "net" in seen[0] and str(path) in seen[0]


def test_missing_file_is_a_usage_error(ip) -> None:
    ip.user_ns["net"] = Net()
    with pytest.raises(UsageError, match="no file or folder"):
        ip.run_line_magic("ckdebug", "/nonexistent/ckpt.pt net")


def test_undefined_model_is_a_usage_error(ip, broken) -> None:
    path, _ = broken
    with pytest.raises(UsageError, match="Could not evaluate MODEL 'nope'"):
        ip.run_line_magic("ckdebug", f'"{path}" nope')


def test_model_that_is_not_a_module_is_a_usage_error(ip, broken) -> None:
    path, _ = broken
    ip.user_ns["notamodel"] = {"a": 1}
    with pytest.raises(UsageError, match=r"not a torch\.nn\.Module"):
        ip.run_line_magic("ckdebug", f'"{path}" notamodel')


def test_unreadable_file_is_a_usage_error_not_a_traceback(ip, tmp_path) -> None:
    ip.user_ns["net"] = Net()
    # an empty file opens: its finding says what it is
    path = tmp_path / "empty.pt"
    path.write_bytes(b"")
    result = ip.run_cell(f"dbg = %ckdebug {path} net")
    assert result.success
    assert "not-a-checkpoint" in ip.user_ns["dbg"].report.kinds
    # a path that is not there is a one-line UsageError, not a traceback
    result = ip.run_cell(f"%ckdebug {tmp_path / 'nowhere.pt'} net")
    assert not result.success and isinstance(result.error_in_exec, UsageError)
    assert "There is no file or folder" in str(result.error_in_exec)


def test_unload_removes_the_magic(ip) -> None:
    ip.run_line_magic("unload_ext", "ckwidget")
    assert "ckdebug" not in ip.magics_manager.magics["line"]
    ip.run_line_magic("load_ext", "ckwidget")
    assert "ckdebug" in ip.magics_manager.magics["line"]


def test_static_flag_shows_the_html_report(ip, broken) -> None:
    from ckwidget.ui.static import StaticReport

    path, _ = broken
    ip.user_ns["net"] = Net()
    report = ip.run_line_magic("ckdebug", f'"{path}" net --static')
    assert isinstance(report, StaticReport)
    html = report._repr_mimebundle_()["text/html"]
    assert "ck-headline" in html and "removeprefix" in html
