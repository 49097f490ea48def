"""``report.table``: one row per key of either side, model order, then unexpected keys."""

from __future__ import annotations

from typing import Any

from .align import Alignment
from .keys import module_of

COLUMNS = ["key", "status", "checkpoint_key", "model_key", "checkpoint_shape", "model_shape",
           "checkpoint_dtype", "model_dtype", "checkpoint_device", "model_device", "module",
           "note"]


def table_columns(a: Alignment) -> dict[str, list[Any]]:
    """The table as plain column lists (cheap; the DataFrame is built on first use)."""
    cols: dict[str, list[Any]] = {c: [] for c in COLUMNS}
    key, status, ck_key, m_key = (cols["key"], cols["status"], cols["checkpoint_key"],
                                  cols["model_key"])
    cs, ms, cd, md, cdev, mdev = (cols["checkpoint_shape"], cols["model_shape"],
                                  cols["checkpoint_dtype"], cols["model_dtype"],
                                  cols["checkpoint_device"], cols["model_device"])
    module, note = cols["module"], cols["note"]
    pairs, statuses, notes, ckpt = a.pairs, a.status, a.notes, a.ckpt
    for mk, minfo in a.model.infos.items():
        ck = pairs.get(mk)
        key.append(mk)
        status.append(statuses.get(mk, "missing"))
        m_key.append(mk)
        ms.append(minfo.shape)
        md.append(minfo.dtype)
        mdev.append(minfo.device)
        module.append(module_of(mk))
        note.append(notes.get(mk, ""))
        if ck is None:
            ck_key.append(None)
            cs.append(None)
            cd.append(None)
            cdev.append(None)
        else:
            cinfo = ckpt[ck]
            ck_key.append(ck)
            cs.append(cinfo.shape)
            cd.append(cinfo.dtype)
            cdev.append(cinfo.device)
    for ck in a.unexpected:
        cinfo = ckpt[ck]
        mapped = a.unexpected_mapped.get(ck, ck)
        key.append(ck)
        status.append("unexpected")
        ck_key.append(ck)
        m_key.append(None)
        cs.append(cinfo.shape)
        cd.append(cinfo.dtype)
        cdev.append(cinfo.device)
        ms.append(None)
        md.append(None)
        mdev.append(None)
        module.append(module_of(mapped))
        note.append("not in the model" if mapped == ck
                    else f"not in the model (as {mapped})")
    return cols


def build_table(cols: dict[str, list[Any]]):
    import pandas as pd

    return pd.DataFrame(cols, columns=COLUMNS)
