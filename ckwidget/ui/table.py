"""The Keys tab's table: filter, group repeated layers, page, render one page as HTML.

Why this shape: a checkpoint can have 100,000 keys. Filtering uses vectorised pandas
string operations over columns derived once; grouping and paging are cached per filter;
only the visible page (at most ``PAGE_SIZE`` rows) is turned into HTML, with every
string escaped because keys come from the file.
"""

from __future__ import annotations

import html
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import compress, repeat
from operator import is_
from typing import Any

import numpy as np
import pandas as pd

from ..formatting import fold_keys
from ..formatting import shape_text as _shape_text
from ..keytemplates import join_lines

PAGE_SIZE = 100
STATUSES = (
    "match", "missing", "unexpected", "shape-mismatch", "dtype-differs", "transposed",
    "renamed",
)
# Rows that need attention first: what keeps its initial value or fails, then what
# changes on the way in, then what only moves, then what matches.
_RANK = {"missing": 0, "shape-mismatch": 0, "unexpected": 1, "transposed": 2,
         "dtype-differs": 2, "renamed": 3, "match": 4}
ATTENTION = tuple(s for s in STATUSES if s != "match")
_NUM_PART = re.compile(r"\.\d+(?=\.|$)")  # a numeric path component, after its dot
_NUM_JOINED = re.compile(r"\.\d+(?=\.|$)", re.MULTILINE)  # the same, keys joined by newlines


@dataclass(frozen=True)
class TablePage:
    """One rendered page and where it sits in the filtered, grouped result."""

    html: str
    page: int
    pages: int
    rows: int  # rows (or groups) after filtering and grouping
    keys: int  # keys after filtering

    @property
    def summary(self) -> str:
        if self.rows == 0:
            return "No keys match."
        grouped = f" in {self.rows:,} rows" if self.rows != self.keys else ""
        return f"{self.keys:,} keys{grouped} · page {self.page + 1} of {self.pages}"


def shape_text(shape: object) -> str:
    """(3, 4) -> "3×4"; () -> "scalar"; None -> "" (ckwidget.formatting)."""
    return _shape_text(shape)  # type: ignore[arg-type]


def _col(df: pd.DataFrame, name: str) -> pd.Series:
    if name in df.columns:
        return df[name]
    return pd.Series([None] * len(df), index=df.index, dtype=object)


def _text(series: pd.Series) -> pd.Series:
    """Object-dtype strings ("" for missing): faster than pandas' str dtype without arrow."""
    values = series.astype(object)
    return values.where(values.notna(), "").astype(object)


class KeyTable:
    """Filtering, grouping and paging over a report's comparison table."""

    def __init__(self, table: pd.DataFrame, page_size: int = PAGE_SIZE) -> None:
        self.page_size = page_size
        df = table.reset_index(drop=True)
        n = len(df)
        key = _text(_col(df, "key"))
        ck_key = _text(_col(df, "checkpoint_key"))
        model_key = _text(_col(df, "model_key"))
        derived = pd.DataFrame(
            {
                "key": key,
                "status": _text(_col(df, "status")),
                "checkpoint_key": ck_key,
                "model_key": model_key,
                "ck_shape": _shape_texts(_col(df, "checkpoint_shape")),
                "model_shape": _shape_texts(_col(df, "model_shape")),
                "ck_dtype": _text(_col(df, "checkpoint_dtype")),
                "model_dtype": _text(_col(df, "model_dtype")),
                "note": _text(_col(df, "note")),
            },
            index=pd.RangeIndex(n),
        )
        derived["pattern"] = patterns(key)
        # rows fold only when their notes agree but for layer numbers: a tensor holding
        # NaN never folds with its clean siblings
        note = derived["note"]
        derived["note_pattern"] = patterns(note) if note.ne("").any() else note
        # keys kept at their initial value while learned values go unused come first
        rank = derived["status"].map(_RANK).fillna(5).astype(np.int8)
        source = _text(_col(df, "source"))
        rank[source.eq("initial value").to_numpy()] = -1
        order = np.argsort(rank.to_numpy(), kind="stable")
        self._df = derived.iloc[order].reset_index(drop=True)
        self._haystack: pd.Series | None = None
        self._cache: tuple[tuple[str, tuple[str, ...], bool], pd.DataFrame, int] | None = None
        self._labels: dict[Any, tuple[str, str, str]] = {}  # folded rows' texts, per row

    def __len__(self) -> int:
        return len(self._df)

    def status_counts(self) -> dict[str, int]:
        """Keys per status, in the canonical status order."""
        return ordered_counts(self._df["status"].tolist())

    def filtered(self, text: str = "", statuses: Iterable[str] = ()) -> pd.DataFrame:
        """Rows whose keys contain ``text`` (case-insensitive) and whose status is chosen."""
        df = self._df
        mask = np.ones(len(df), dtype=bool)
        needle = text.strip().lower()
        if needle:
            if self._haystack is None:  # built on the first text filter, not at open
                self._haystack = (df["key"] + "\n" + df["checkpoint_key"] + "\n"
                                  + df["model_key"]).str.lower()
            mask &= self._haystack.str.contains(needle, regex=False).to_numpy()
        wanted = tuple(statuses)
        if wanted:
            mask &= df["status"].isin(wanted).to_numpy()
        return df[mask]

    def rows(
        self, text: str = "", statuses: Iterable[str] = (), group: bool = True
    ) -> pd.DataFrame:
        """Filtered rows, with repeated layers folded into one row each when ``group``."""
        wanted = tuple(sorted(statuses))
        cache_key = (text.strip().lower(), wanted, group)
        if self._cache is not None and self._cache[0] == cache_key:
            return self._cache[1]
        df = self.filtered(text, wanted)
        keys = len(df)
        out = group_rows(df) if group else df.assign(count=1, label=df["key"])
        self._cache = (cache_key, out, keys)
        self._labels = {}
        return out

    def page(
        self, page: int = 0, text: str = "", statuses: Iterable[str] = (), group: bool = True
    ) -> TablePage:
        """Render one page (clamped into range) of the filtered, grouped rows."""
        rows = self.rows(text, statuses, group)
        keys = self._cache[2] if self._cache is not None else len(rows)
        pages = max(1, -(-len(rows) // self.page_size))
        page = min(max(0, page), pages - 1)
        chunk = rows.iloc[page * self.page_size : (page + 1) * self.page_size]
        chunk = label_rows(chunk, self._labels)
        return TablePage(render_rows(chunk), page, pages, len(rows), keys)


def ordered_counts(statuses: Iterable[str] | Mapping[str, int]) -> dict[str, int]:
    """How many keys have each status (given the statuses, or their counts): the known
    statuses in their canonical order, then any others."""
    counts = statuses if isinstance(statuses, Mapping) else Counter(statuses)
    ordered = {s: counts[s] for s in STATUSES if s in counts}
    ordered.update({s: n for s, n in counts.items() if s not in ordered})
    return ordered


def patterns(keys: pd.Series) -> pd.Series:
    """Keys with numeric path components replaced by "*" ("layers.3.w" -> "layers.*.w")."""
    return pd.Series(pattern_list(keys.tolist()), index=keys.index, dtype=object)


def pattern_list(values: list[str]) -> list[str]:
    """``patterns`` on a plain list."""
    joined = join_lines(values)
    if joined is None:  # a key holds a newline: one at a time
        sub = _NUM_PART.sub
        return [sub(".*", "." + k)[1:] if k else k for k in values]
    if not values:
        return []
    if joined.isascii() and _MARK not in joined and _whole_numbers_only(values):
        out = _patterns_by_form(values, joined)
        if out is not None:
            return out
    return _fold_joined(joined)


_MARK = "\x01"
_MASK_DIGITS = str.maketrans("0123456789", _MARK * 10)
_WHOLE_MARKS = re.compile("(?:^|(?<=\\.))" + _MARK + "+(?=\\.|$)")
_MAX_FORMS = 4096


def _form_pattern(form: str) -> str | None:
    """The pattern of a form's keys; None when a digit sits inside a name ("conv1")."""
    pattern = _WHOLE_MARKS.sub("*", form)
    return None if _MARK in pattern else pattern


def _whole_numbers_only(values: list[str], probes: int = 512) -> bool:
    """Whether keys spread evenly over ``values`` have numbers only as whole components:
    then forms pay (see ``_patterns_by_form``); names like "conv1" in most layers are
    folded faster key by key in the joined text."""
    spread = values[:: max(1, len(values) // probes)]
    forms = "\n".join(spread).translate(_MASK_DIGITS).split("\n")
    return None not in [_form_pattern(form) for form in dict.fromkeys(forms)]


def _patterns_by_form(values: list[str], joined: str) -> list[str] | None:
    """Patterns of ASCII keys from their forms (each digit masked, one ``translate``):
    100,000 keys of a model have a few dozen forms, and a form whose digit runs are all
    whole components ("layers.##.weight") gives the pattern of all its keys at once.
    Keys whose digits sit inside a component ("conv1") take the joined fold; None when
    the keys have too many forms for this to pay. ``joined``: ``values`` joined by
    newlines."""
    forms = joined.translate(_MASK_DIGITS).split("\n")
    patterns: dict[str, str | None] = dict.fromkeys(forms)
    if len(patterns) > _MAX_FORMS:
        return None
    for form in patterns:
        patterns[form] = _form_pattern(form)
    out = list(map(patterns.__getitem__, forms))
    if None in patterns.values():
        where = list(compress(range(len(out)), map(is_, out, repeat(None))))
        for i, pattern in zip(where, _fold_joined("\n".join([values[i] for i in where]))):
            out[i] = pattern
    return out  # type: ignore[return-value]


def _fold_joined(joined: str) -> list[str]:
    """Patterns of keys joined by newlines: every key behind a dot, one substitution over
    all of them at once (C speed)."""
    text = "." + joined.replace("\n", "\n.")
    folded = _fold_ascii(text)
    if folded is None:
        folded = _NUM_JOINED.sub(".*", text)
    return folded[1:].split("\n.")


_DOT, _NEWLINE, _STAR, _ZERO, _NINE = b".\n*09"


def _fold_ascii(text: str) -> str | None:
    """``_NUM_JOINED.sub(".*", text)`` for ASCII text, in numpy passes: the regex tries
    a match at each of 300,000 dots of 100,000 keys, which costs more than grouping them.
    Each run of digits after a dot and before a dot, a newline or the end becomes one
    "*". None for other text (``\\d`` matches more than ASCII digits there)."""
    if not text.isascii():
        return None
    a = np.frombuffer(text.encode("ascii"), np.uint8)
    n = len(a)
    padded = np.zeros(n + 2, np.int8)
    padded[1:-1] = (a >= _ZERO) & (a <= _NINE)
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    starts, ends = edges[::2], edges[1::2]  # each run of digits: [start, end)
    before = a[np.maximum(starts - 1, 0)]
    after = a[np.minimum(ends, n - 1)]
    fold = ((starts > 0) & (before == _DOT)
            & ((ends == n) | (after == _DOT) | (after == _NEWLINE)))
    if not fold.any():
        return text
    starts, ends = starts[fold], ends[fold]
    out = a.copy()
    out[starts] = _STAR
    extra = ends - starts - 1  # each run's other digits go: positions start+1 .. end-1
    gone = np.arange(int(extra.sum())) + np.repeat(starts + 1 - np.cumsum(extra) + extra,
                                                   extra)
    keep = np.ones(n, bool)
    keep[gone] = False
    return out[keep].tobytes().decode("ascii")


def _shape_texts(series: pd.Series) -> pd.Series:
    values = series.tolist()
    try:
        texts = {v: shape_text(v) for v in dict.fromkeys(values)}  # each shape once
    except TypeError:  # unhashable (a list): one at a time
        return pd.Series([shape_text(v) for v in values], index=series.index, dtype=object)
    return pd.Series(list(map(texts.__getitem__, values)), index=series.index, dtype=object)


_GROUP_COLS = ["pattern", "status", "ck_shape", "model_shape", "ck_dtype", "model_dtype",
               "note_pattern"]


def group_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Fold rows that differ only in layer numbers (same status, shapes and dtypes).

    A folded row keeps its first key's values and, in ``members`` and ``ck_members``,
    the keys it stands for: its label (``layers.{0..11}.w``) is written only when its
    page is drawn (see :func:`label_rows`)."""
    if df.empty:
        return df.assign(count=pd.Series(dtype=int), label=pd.Series(dtype=object))
    has_num = df["pattern"].ne(df["key"])
    plain = df[~has_num].assign(count=1, label=df.loc[~has_num, "key"], order=df.index[~has_num])
    numbered = df[has_num]
    if numbered.empty:
        return plain.drop(columns="order")
    grouped = numbered.groupby(_GROUP_COLS, sort=False, dropna=False)
    first = grouped.head(1).copy()
    sizes = grouped.size()
    first["count"] = sizes.reindex(pd.MultiIndex.from_frame(first[_GROUP_COLS])).to_numpy()
    first["order"] = first.index
    first["label"] = first["key"]
    where = grouped.indices  # group -> positions of its rows in ``numbered``
    keys = numbered["key"].to_numpy()
    ck_keys = numbered["checkpoint_key"].to_numpy()
    groups = list(first[_GROUP_COLS].itertuples(index=False, name=None))
    first["members"] = [keys[where[g]] for g in groups]
    first["ck_members"] = [ck_keys[where[g]] for g in groups]
    out = pd.concat([plain, first]).sort_values("order", kind="stable")
    return out.drop(columns="order")


def label_rows(rows: pd.DataFrame,
               memo: dict[Any, tuple[str, str, str]] | None = None) -> pd.DataFrame:
    """One page of rows with each folded row's label, checkpoint key and note written in
    the one folded notation (:func:`ckwidget.formatting.fold_keys`). ``memo`` keeps
    each row's texts by its index (folding 25,000 keys takes a tenth of a second)."""
    if "members" not in rows.columns or not (rows["count"] > 1).any():
        return rows
    memo = {} if memo is None else memo
    rows = rows.copy()
    where = rows.columns.get_indexer(["label", "checkpoint_key", "note"])
    for i in np.flatnonzero((rows["count"] > 1).to_numpy()):
        index = rows.index[i]
        if index not in memo:
            memo[index] = _folded_row(rows.iloc[i])
        rows.iloc[i, where] = list(memo[index])
    return rows


def _folded_row(r: pd.Series) -> tuple[str, str, str]:
    label = folded_text(r["members"])
    ck_label = folded_text(r["ck_members"]) if r["checkpoint_key"] else ""
    note = r["note"]
    if note:  # the note names the first member's keys: name them all
        if r["checkpoint_key"]:
            note = note.replace(r["checkpoint_key"], ck_label)
        note = note.replace(r["key"], label)
    return label, ck_label, note


def folded_text(keys: Sequence[str]) -> str:
    """Keys folded into as few lines as the notation allows, joined by ", "."""
    return ", ".join(line for line, _ in fold_keys([str(k) for k in keys]))


_STATUS_CLASS = {s: "ck-st-" + s for s in STATUSES}
_HEADER = (
    "<thead><tr><th>key</th><th>status</th><th>checkpoint</th><th>model</th>"
    "<th>note</th></tr></thead>"
)


def _cell(shape: str, dtype: str) -> str:
    if not shape and not dtype:
        return '<span class="ck-none">—</span>'
    return f"{html.escape(shape)} <span class='ck-dtype'>{html.escape(dtype)}</span>"


def _without(note: str, part: str) -> str:
    """``note`` without the clause ``part`` ("a; from x; b" -> "a; b")."""
    clauses = note.split("; ")
    kept = [c for c in clauses if c != part]
    return note if len(kept) == len(clauses) else "; ".join(kept)


def render_rows(rows: pd.DataFrame) -> str:
    """One page of rows as an HTML table; every value is escaped."""
    esc = html.escape
    parts = ['<table class="ck-table-grid">', _HEADER, "<tbody>"]
    for r in rows.itertuples(index=False):
        count = int(getattr(r, "count", 1))
        label = str(getattr(r, "label", r.key))
        badge = f' <span class="ck-count">×{count}</span>' if count > 1 else ""
        ck_key, note = r.checkpoint_key, r.note
        alias = ""
        if ck_key and ck_key != label and ck_key != r.key:
            alias = f'<div class="ck-alias">in file: {esc(ck_key)}</div>'
            # the note's "from <key in file>" says it again: once is enough
            note = _without(note, f"from {ck_key}")
        status = esc(r.status)
        cls = _STATUS_CLASS.get(r.status, "ck-st-other")
        parts.append(
            f'<tr><td class="ck-key">{esc(label)}{badge}{alias}</td>'
            f'<td><span class="ck-badge {cls}">{status}</span></td>'
            f'<td class="ck-sh">{_cell(r.ck_shape, r.ck_dtype)}</td>'
            f'<td class="ck-sh">{_cell(r.model_shape, r.model_dtype)}</td>'
            f'<td class="ck-note">{esc(note)}</td></tr>'
        )
    parts.append("</tbody></table>")
    return "".join(parts)
