"""``report.table``: one row per key of either side, model order, then unexpected keys."""

from __future__ import annotations

from typing import Any

from .align import Alignment
from .keys import module_of

COLUMNS = ["key", "status", "checkpoint_key", "model_key", "checkpoint_shape", "model_shape",
           "checkpoint_dtype", "model_dtype", "checkpoint_device", "model_device", "module",
           "note"]


def table_columns(a: Alignment) -> dict[str, list[Any]]:
    """The table as plain column lists (the DataFrame is built on first use)."""
    infos = a.model.infos
    model_keys = list(infos)
    minfos = list(infos.values())
    ck_keys = list(map(a.pairs.get, model_keys))
    ckpt = a.ckpt
    if len(a.pairs) == len(model_keys):  # every model key is served (the common case)
        cinfos = list(map(ckpt.__getitem__, ck_keys))
        c_shapes = [c.shape for c in cinfos]
        c_dtypes = [c.dtype for c in cinfos]
        c_devices = [c.device for c in cinfos]
    else:
        cinfos = [None if c is None else ckpt[c] for c in ck_keys]
        c_shapes = [None if c is None else c.shape for c in cinfos]
        c_dtypes = [None if c is None else c.dtype for c in cinfos]
        c_devices = [None if c is None else c.device for c in cinfos]
    unexpected = a.unexpected
    uinfos = [ckpt[k] for k in unexpected]
    nu = len(unexpected)
    none = [None] * nu
    status_get, notes_get = a.status.get, a.notes.get
    statuses = [status_get(k, "missing") for k in model_keys]
    return {
        "key": model_keys + unexpected,
        "status": statuses + ["unexpected"] * nu,
        "checkpoint_key": ck_keys + unexpected,
        "model_key": model_keys + none,
        "checkpoint_shape": c_shapes + [i.shape for i in uinfos],
        "model_shape": [i.shape for i in minfos] + none,
        "checkpoint_dtype": c_dtypes + [i.dtype for i in uinfos],
        "model_dtype": [i.dtype for i in minfos] + none,
        "checkpoint_device": c_devices + [i.device for i in uinfos],
        "model_device": [i.device for i in minfos] + none,
        "module": [k.rpartition(".")[0] for k in model_keys]
        + [module_of(a.unexpected_mapped.get(k, k)) for k in unexpected],
        # renamed rows say where their value comes from; a shape mismatch says why only
        "note": [((f"from {c}; {n}" if n else f"from {c}")
                  if c is not None and c != k and s != "shape-mismatch" else n or "")
                 for k, c, n, s in zip(model_keys, ck_keys, map(notes_get, model_keys),
                                       statuses)]
        + [_unexpected_note(k, a.unexpected_mapped.get(k, k)) for k in unexpected],
    }


def _unexpected_note(key: str, mapped: str) -> str:
    return "not in the model" if mapped == key else f"not in the model (as {mapped})"


def build_table(cols: dict[str, list[Any]]):
    import pandas as pd

    if not cols:
        return pd.DataFrame(columns=COLUMNS)
    return pd.DataFrame(cols, columns=COLUMNS)
