"""``report.table``: one row per key of either side, model order, then unexpected keys."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from itertools import compress, islice, repeat
from operator import ne
from typing import Any

from .align import Alignment
from .keys import module_of

COLUMNS = ["key", "status", "checkpoint_key", "model_key", "checkpoint_shape", "model_shape",
           "checkpoint_dtype", "model_dtype", "checkpoint_device", "model_device", "module",
           "note", "source"]


def table_columns(a: Alignment, model_keys: list[str] | None = None,
                  unexpected: list[str] | None = None) -> dict[str, list[Any]]:
    """The table as plain column lists (the DataFrame is built on first use); with
    ``model_keys`` and ``unexpected``, only the rows of those keys, in that order."""
    infos = a.model.infos
    if model_keys is None:
        model_keys = list(infos)
        minfos = list(infos.values())
        served = len(a.pairs) == len(model_keys)
    else:
        minfos = list(map(infos.__getitem__, model_keys))
        served = model_keys == list(filter(a.pairs.__contains__, model_keys))
    ck_keys = list(map(a.pairs.get, model_keys))
    ckpt = a.ckpt
    if served:  # every model key is served (the common case)
        cinfos = list(map(ckpt.__getitem__, ck_keys))
        c_shapes = [c.shape for c in cinfos]
        c_dtypes = [c.dtype for c in cinfos]
        c_devices = [c.device for c in cinfos]
    else:  # a key some fix makes from stored tensors shows what it is given
        joined = a.joined.get
        cinfos = [joined(m) if c is None else ckpt[c] for m, c in zip(model_keys, ck_keys)]
        c_shapes = [None if c is None else c.shape for c in cinfos]
        c_dtypes = [None if c is None else c.dtype for c in cinfos]
        c_devices = [None if c is None else c.device for c in cinfos]
    unexpected = a.unexpected if unexpected is None else unexpected
    uinfos = [ckpt[k] for k in unexpected]
    nu = len(unexpected)
    none = [None] * nu
    notes_get = a.notes.get
    statuses = _statuses(a, model_keys)
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


def _statuses(a: Alignment, model_keys: list[str]) -> list[str]:
    return list(map(a.status.get, model_keys, repeat("missing")))


def _model_statuses(a: Alignment) -> tuple[Iterable[str], Iterable[str]]:
    """Every model key and its status, in model order: align's own dict when it gives
    every model key one (then no lookups), else looked up key by key."""
    if len(a.status) == len(a.model.infos):
        return a.status, a.status.values()
    keys = list(a.model.infos)
    return keys, _statuses(a, keys)


def status_counts(a: Alignment) -> Counter[str]:
    """Rows per status, as ``Counter(table_columns(a)["status"])`` counts them, without
    building the columns (the widget's filter buttons need only these)."""
    counts = Counter(_model_statuses(a)[1])
    if a.unexpected:
        counts["unexpected"] += len(a.unexpected)
    return counts


def attention_columns(a: Alignment, limit: int) -> dict[str, list[Any]]:
    """The columns of the first ``limit`` rows whose status is not "match", in table
    order: what a page of "keys that need attention" shows, without the other rows."""
    keys, statuses = _model_statuses(a)
    odd = list(islice(compress(keys, map(ne, statuses, repeat("match"))), limit))
    return table_columns(a, odd, a.unexpected[:limit - len(odd)])


def _unexpected_note(key: str, mapped: str) -> str:
    return "not in the model" if mapped == key else f"not in the model (as {mapped})"


def build_table(cols: dict[str, list[Any]]):
    import pandas as pd

    if not cols:
        return pd.DataFrame(columns=COLUMNS)
    return pd.DataFrame(cols, columns=COLUMNS)
