"""Pipes and devices given as checkpoints: a sentence at once, never a read that waits.

Opening a named pipe for reading blocks until something writes to it, so each case runs
in a child process with a timeout: a hang fails the test instead of stalling the run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

CHILD = """
import json, sys
import ckwidget as ck
for path in sys.argv[1:]:
    try:
        ckpt = ck.open_checkpoint(path)
        out = {"format": ckpt.format, "findings": [f.message for f in ckpt.findings]}
    except ck.CheckpointError as exc:
        out = {"error": type(exc).__name__, "message": str(exc)}
    print(json.dumps({"path": path, **out}), flush=True)
"""


def _open_all(paths: list[Path]) -> dict[str, dict]:
    run = subprocess.run([sys.executable, "-c", CHILD, *map(str, paths)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    return {Path(r["path"]).name: r for r in map(json.loads, run.stdout.splitlines())}


def test_pipes_and_devices_are_refused_without_reading(tmp_path: Path) -> None:
    sd = {"a.weight": torch.ones(2, 2), "b.weight": torch.zeros(3)}
    pipe = tmp_path / "ckpt.pt"
    os.mkfifo(pipe)

    shard_pipe = tmp_path / "shard-pipe"  # a sharded folder whose first shard is a pipe
    shard_pipe.mkdir()
    save_file({"b.weight": sd["b.weight"]}, str(shard_pipe / "model-2.safetensors"))
    os.mkfifo(shard_pipe / "model-1.safetensors")
    (shard_pipe / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"a.weight": "model-1.safetensors", "b.weight": "model-2.safetensors"}}))

    index_pipe = tmp_path / "index-pipe"  # ... whose index is a pipe
    index_pipe.mkdir()
    save_file(sd, str(index_pipe / "model-1.safetensors"))
    os.mkfifo(index_pipe / "model.safetensors.index.json")

    single_pipe = tmp_path / "single-pipe"  # a folder whose one weights file is a pipe
    single_pipe.mkdir()
    os.mkfifo(single_pipe / "model.safetensors")

    dcp_pipe = tmp_path / "dcp-pipe"  # a DCP folder whose .metadata is a pipe
    dcp_pipe.mkdir()
    os.mkfifo(dcp_pipe / ".metadata")
    (dcp_pipe / "__0_0.distcp").write_bytes(b"")

    got = _open_all([pipe, Path("/dev/zero"), shard_pipe, index_pipe, single_pipe, dcp_pipe])
    for name, kind in (("ckpt.pt", "named pipe"), ("zero", "character device"),
                       ("single-pipe", "named pipe"), ("dcp-pipe", "named pipe")):
        assert got[name].get("error") == "NotACheckpointError", got[name]
        assert f"is a {kind}, not a file" in got[name]["message"], got[name]
    # the sharded folders still open: the other shard's tensors, and a finding naming
    # the pipe
    assert got["shard-pipe"]["format"] == "hf-sharded"
    assert any("model-1.safetensors is a named pipe" in m
               for m in got["shard-pipe"]["findings"]), got["shard-pipe"]
    assert any("is a named pipe" in m for m in got["index-pipe"]["findings"]), got["index-pipe"]
