"""Child process of test_file_changes.py: opens checkpoints, changes them on disk, reads.

Prints one JSON line per case as it finishes (a case that crashes the process leaves its
"start" line last). Run: python _file_changes_child.py FOLDER
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).parent))
from _build_formats import dcp_save, tar_checkpoint

import ckwidget as ck
from ckwidget.errors import CheckpointChangedError


def tensors() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {f"layer{i}.weight": torch.randn(256, 256) for i in range(4)}


def write(fmt: str, path: Path, sd: dict[str, torch.Tensor]) -> Path:
    if fmt == "torch-zip":
        torch.save(sd, path)
    elif fmt == "torch-legacy":
        torch.save(sd, path, _use_new_zipfile_serialization=False)
    elif fmt == "safetensors":
        save_file(sd, str(path))
    elif fmt == "npy":
        np.save(path, next(iter(sd.values())).numpy())
    elif fmt == "npz-compressed":  # members read by decompressing, not through a map
        np.savez_compressed(path, **{k: v.numpy() for k, v in sd.items()})
    elif fmt == "torch-tar":
        tar_checkpoint(path, sd, {})
    elif fmt == "dcp":
        dcp_save(path, sd)
    elif fmt == "hf-sharded":
        path.mkdir()
        keys = list(sd)
        index = {"metadata": {}, "weight_map": {}}
        for i, part in enumerate((keys[:2], keys[2:])):
            shard = f"model-{i + 1:05d}-of-00002.safetensors"
            save_file({k: sd[k] for k in part}, str(path / shard))
            index["weight_map"].update(dict.fromkeys(part, shard))
        (path / "model.safetensors.index.json").write_text(json.dumps(index))
    return path


def data_file(fmt: str, path: Path) -> Path:
    if fmt == "dcp":
        return next(path.glob("*.distcp"))
    return path / "model-00001-of-00002.safetensors" if fmt == "hf-sharded" else path


def expected(fmt: str, key: str, sd: dict[str, torch.Tensor]) -> torch.Tensor:
    if fmt == "npy":  # the file holds the first tensor alone
        return next(iter(sd.values()))
    return sd[key.removeprefix("state_dict.")]  # the tar file nests them


def change(kind: str, file: Path) -> None:
    if kind == "rewritten-shorter":  # torch.save over the same path: truncate, then write
        head = file.read_bytes()[:1000]
        with open(file, "r+b") as fh:
            fh.truncate(0)
            fh.write(head)
    elif kind == "replaced":  # same bytes, a new file put in its place
        tmp = file.with_name(file.name + ".tmp")
        tmp.write_bytes(file.read_bytes())
        os.replace(tmp, file)
    elif kind == "deleted":
        file.unlink()
    elif kind == "touched":
        st = file.stat()
        os.utime(file, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def main(folder: Path) -> None:
    sd = tensors()
    for fmt in ("torch-zip", "torch-legacy", "safetensors", "npy", "npz-compressed",
                "torch-tar", "hf-sharded", "dcp"):
        for kind in ("unchanged", "rewritten-shorter", "replaced", "touched", "deleted"):
            case = {"format": fmt, "change": kind}
            print(json.dumps({**case, "start": True}), flush=True)
            suffix = {"npy": ".npy", "npz-compressed": ".npz"}.get(fmt, ".ckpt")
            path = write(fmt, folder / f"{fmt}-{kind}{suffix}", sd)
            ckpt = ck.open_checkpoint(path)
            keys = list(ckpt.tensors)
            ckpt.read(keys[0])  # maps the file, as sampling at open does
            change(kind, data_file(fmt, path))
            try:
                got = ckpt.load(keys)
            except CheckpointChangedError as exc:
                print(json.dumps({**case, "error": str(exc)}), flush=True)
                continue
            same = all(torch.equal(got[k], expected(fmt, k, sd)) for k in keys)
            print(json.dumps({**case, "loaded": len(got), "same": same}), flush=True)
    # the widget: Apply after the file was rewritten says so, and the model is unchanged
    path = folder / "dp.pt"
    torch.save({"module." + k: v for k, v in sd.items()}, path)
    model = torch.nn.Module()
    for i in range(4):
        model.add_module(f"layer{i}", torch.nn.Linear(256, 256, bias=False))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    dbg = ck.debug(path, model, background=False)
    change("rewritten-shorter", path)
    dbg.apply_button.click()
    unchanged = all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    print(json.dumps({"format": "widget", "change": "rewritten-shorter",
                      "error": type(dbg.last_error).__name__, "shown": dbg.error_area.value,
                      "result": dbg.result_html.value, "model_unchanged": unchanged}),
          flush=True)
    # the Distributions tab: the overview says why nothing was read; a plot says so too
    panel = dbg.open_distributions()
    dbg.wait()
    note = panel.nonfinite.box.children[0].value
    dbg._clear_error()
    panel.plot("layer0.weight")
    dbg.wait()
    print(json.dumps({"format": "distributions", "change": "rewritten-shorter",
                      "note": note, "shown": dbg.error_area.value,
                      "histogram": panel.last_histogram is not None}), flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
