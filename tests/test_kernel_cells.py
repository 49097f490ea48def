"""Re-running a notebook cell in a real kernel closes the debugger its earlier run made.

A real ipykernel started through jupyter_client; each execute request carries the cell's
id in its metadata, as JupyterLab and Notebook 7 send it.
"""

from __future__ import annotations

import json
import uuid

from jupyter_client.manager import start_new_kernel

SETUP = """
import torch, ckwidget as ck
from safetensors.torch import save_file
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
save_file({"module." + k: v.clone() for k, v in net.state_dict().items()}, PATH)
made = []
"""
OPEN = "made.append(ck.debug(PATH, net)); made[-1]"
OPEN_TWO = "made.append(ck.debug(PATH, net)); made.append(ck.debug(PATH, net))"
STATE = "print(__import__('json').dumps([d.comm is None for d in made]))"


def _run(kc, code: str, cell: str) -> str:
    """Execute ``code`` as cell ``cell``; its stdout, or the error it raised."""
    msg = kc.session.msg("execute_request",
                         {"code": code, "silent": False, "store_history": True,
                          "user_expressions": {}, "allow_stdin": False,
                          "stop_on_error": True},
                         metadata={"cellId": cell})
    kc.shell_channel.send(msg)
    reply = kc.get_shell_msg(timeout=120)
    while reply["parent_header"].get("msg_id") != msg["header"]["msg_id"]:
        reply = kc.get_shell_msg(timeout=120)
    out = []
    while True:
        io = kc.get_iopub_msg(timeout=30)
        if io["parent_header"].get("msg_id") != msg["header"]["msg_id"]:
            continue
        if io["msg_type"] == "stream":
            out.append(io["content"]["text"])
        if io["msg_type"] == "status" and io["content"]["execution_state"] == "idle":
            break
    content = reply["content"]
    assert content["status"] == "ok", "\n".join(content.get("traceback", []))
    return "".join(out)


def test_rerunning_a_cell_closes_its_earlier_debuggers(tmp_path) -> None:
    km, kc = start_new_kernel(kernel_name="python3")
    try:
        path = str(tmp_path / "dp.safetensors")
        cell_a, cell_b = (str(uuid.uuid4()) for _ in range(2))
        _run(kc, SETUP.replace('PATH', repr(path)), "setup")
        _run(kc, OPEN.replace('PATH', repr(path)), cell_a)
        _run(kc, OPEN.replace('PATH', repr(path)), cell_b)
        assert json.loads(_run(kc, STATE, "state")) == [False, False]
        _run(kc, OPEN_TWO.replace('PATH', repr(path)), cell_a)  # cell A again: closes its first
        assert json.loads(_run(kc, STATE, "state")) == [True, False, False, False]
        _run(kc, OPEN.replace('PATH', repr(path)), cell_b)  # cell B again: closes its own only
        assert json.loads(_run(kc, STATE, "state")) == [True, True, False, False, False]
        _run(kc, "%load_ext ckwidget", "ext")
        _run(kc, f"d = %ckdebug {path} net\nmade.append(d)", cell_a)  # the magic: the same
        assert json.loads(_run(kc, STATE, "state")) == [True, True, True, True, False, False]
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def _updates(kc, code: str, cell: str) -> list[dict]:
    """Execute ``code``; the update_display_data messages it caused."""
    request = kc.session.msg("execute_request",
                             {"code": code, "silent": False, "store_history": True,
                              "user_expressions": {}, "allow_stdin": False,
                              "stop_on_error": True}, metadata={"cellId": cell})
    kc.shell_channel.send(request)
    found = []
    while True:
        io = kc.get_iopub_msg(timeout=60)
        if io["parent_header"].get("msg_id") != request["header"]["msg_id"]:
            continue
        if io["msg_type"] == "update_display_data":
            found.append(io["content"])
        if io["msg_type"] == "status" and io["content"]["execution_state"] == "idle":
            return found


def test_a_closed_debugger_leaves_its_static_report_in_place(tmp_path) -> None:
    """Closing a debugger (as re-running its cell does) replaces its output, by display
    id, with the static report: a notebook saved afterwards reopens on the report, not on
    a widget view whose model is gone."""
    km, kc = start_new_kernel(kernel_name="python3")
    try:
        path = str(tmp_path / "dp.safetensors")
        _run(kc, SETUP.replace('PATH', repr(path)), "setup")
        _run(kc, OPEN.replace('PATH', repr(path)), "cell-a")
        updates = _updates(kc, "made[-1].close()", "cell-b")
        # the widget's output becomes the report; the hidden copy below it (for a
        # notebook saved while the widget was live, ui/lifetime.py) is emptied
        report = [u for u in updates
                  if 'class="ck-reopen"' not in u["data"].get("text/html", "")]
        emptied = [u for u in updates if u not in report]
        assert len(report) == 1 and len(emptied) == 1, updates
        data = report[0]["data"]
        assert "application/vnd.jupyter.widget-view+json" not in data
        assert "was closed" in data["text/html"] and "ck-" in data["text/html"]
        assert report[0]["transient"]["display_id"]
        assert emptied[0]["data"]["text/html"].endswith('<div class="ck-reopen" hidden></div>')
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
