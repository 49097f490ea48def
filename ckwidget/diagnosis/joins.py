"""Tensors stored as several where the model holds one, or one where it holds several.

Three layouts practitioners meet, each found before renames are searched (a rename pairs
one key with one key, and here that would load a part as the whole):

- **weight norm**: a magnitude and a direction (``weight_g``/``weight_v``, or
  ``parametrizations.weight.original0/1``) for a model without weight norm: folded into
  the weight (fix ``fold-weight-norm``);
- **fused projections**: separate query, key and value projections (``q_proj``/``k_proj``/
  ``v_proj``, ``query``/``key``/``value``...) for a model that holds them in one tensor
  (``nn.MultiheadAttention``'s ``in_proj_weight``, a ``qkv`` layer): concatenated (fix
  ``fuse-keys``);
- the other way round, a fused tensor for a model with separate projections: split by
  the model's sizes (fix ``split-keys``), and a plain weight for a model with weight norm:
  split into magnitude and direction (fix ``unfold-weight-norm``).

Names are checked in the namespace the key steps (prefixes) leave, and shapes must add
up exactly; nothing is guessed from shapes alone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..checkpoint import TensorInfo

# query, key, value names of separate projections (one module each)
QKV_NAMES = (("q_proj", "k_proj", "v_proj"), ("query", "key", "value"), ("q", "k", "v"),
             ("to_q", "to_k", "to_v"), ("wq", "wk", "wv"), ("q_lin", "k_lin", "v_lin"))
# modules that hold the three in one tensor (<scope>.<name>.weight)
FUSED_MODULES = ("qkv", "qkv_proj", "Wqkv", "in_proj")
# nn.MultiheadAttention keeps its fused tensors on itself: <scope>.in_proj_weight
MHA_LEAVES = {"in_proj_weight": "weight", "in_proj_bias": "bias"}
_FIRST = {names[0]: names for names in QKV_NAMES}


@dataclass
class Joins:
    """What ``find_joins`` found, named as the key steps leave the checkpoint's keys."""

    folds: list[tuple[str, str, str]] = field(default_factory=list)  # (g, v, model key)
    fused: list[tuple[tuple[str, ...], str]] = field(default_factory=list)  # (parts, model key)
    split: list[tuple[str, tuple[tuple[str, int], ...]]] = field(default_factory=list)
    # split: (checkpoint key, ((model key, rows), ...))
    unfolds: list[tuple[str, str, str, tuple[int, ...]]] = field(default_factory=list)
    # unfolds: (checkpoint weight, model g, model v, g's shape)

    def __bool__(self) -> bool:
        return bool(self.folds or self.fused or self.split or self.unfolds)

    def checkpoint_names(self) -> set[str]:
        return ({k for g, v, _ in self.folds for k in (g, v)}
                | {k for parts, _ in self.fused for k in parts}
                | {source for source, _ in self.split} | {w for w, _, _, _ in self.unfolds})

    def model_keys(self) -> set[str]:
        return ({mk for _, _, mk in self.folds} | {mk for _, mk in self.fused}
                | {mk for _, parts in self.split for mk, _ in parts}
                | {k for _, g, v, _ in self.unfolds for k in (g, v)})


def _rows_add_up(whole: tuple[int, ...], parts: list[tuple[int, ...]]) -> bool:
    """Whether ``parts`` stacked along the first dimension make ``whole``."""
    if not whole or any(not p or p[1:] != whole[1:] for p in parts):
        return False
    return sum(p[0] for p in parts) == whole[0]


def _fused_source(mk: str) -> tuple[str, str] | None:
    """(scope, leaf of the parts) when model key ``mk`` names a fused projection."""
    mod, _, leaf = mk.rpartition(".")
    if leaf in MHA_LEAVES:
        return mod, MHA_LEAVES[leaf]
    scope, _, name = mod.rpartition(".")
    if leaf in ("weight", "bias") and name in FUSED_MODULES:
        return scope, leaf
    return None


_NEW_G = re.compile(r"(.*?)parametrizations\.([^.]+)\.original0")


def _unfold_names(mk: str) -> tuple[str, str] | None:
    """(plain weight, direction) for model key ``mk`` when it names a weight-norm
    magnitude (``weight_g``, or ``parametrizations.weight.original0``)."""
    if mk.endswith("_g"):
        return mk[:-2], mk[:-2] + "_v"
    m = _NEW_G.fullmatch(mk)
    if m is not None:
        return m[1] + m[2], f"{m[1]}parametrizations.{m[2]}.original1"
    return None


def find_joins(unmatched_c: list[str], c_infos: dict[str, TensorInfo],
               unmatched_m: list[str], m_infos: dict[str, TensorInfo]) -> Joins:
    """Folds, fusions and splits between the unmatched keys of each side."""
    from ..rules import norm_dims

    joins = Joins()
    c_set = set(unmatched_c)
    m_set = set(unmatched_m)
    for mk in unmatched_m:
        mod, _, leaf = mk.rpartition(".")
        pre = mod + "." if mod else ""
        want = m_infos[mk].shape
        for g, v in ((f"{pre}{leaf}_g", f"{pre}{leaf}_v"),
                     (f"{pre}parametrizations.{leaf}.original0",
                      f"{pre}parametrizations.{leaf}.original1")):
            if (g in c_set and v in c_set and c_infos[v].shape == want
                    and norm_dims(c_infos[g].shape, c_infos[v].shape) is not None):
                joins.folds.append((g, v, mk))
                break
        else:
            unfold = _unfold_names(mk)
            if unfold is not None:
                w, v = unfold
                if (w in c_set and v in m_set and c_infos[w].shape == m_infos[v].shape
                        and norm_dims(want, m_infos[v].shape) is not None):
                    joins.unfolds.append((w, mk, v, tuple(want)))
                continue
            fused = _fused_source(mk)
            if fused is not None:
                scope, part_leaf = fused
                at = scope + "." if scope else ""
                for names in QKV_NAMES:
                    parts = tuple(f"{at}{n}.{part_leaf}" for n in names)
                    if all(p in c_set for p in parts) and _rows_add_up(
                            want, [c_infos[p].shape for p in parts]):
                        joins.fused.append((parts, mk))
                        break
                continue
            names = _FIRST.get(mod.rpartition(".")[2])
            if names is None:
                continue
            scope = mod.rpartition(".")[0]
            at = scope + "." if scope else ""
            targets = [f"{at}{n}.{leaf}" for n in names]
            if not all(t in m_set for t in targets):
                continue
            sources = [f"{at}{name}.{leaf}" for name in FUSED_MODULES]
            sources += [f"{at}{k}" for k, v in MHA_LEAVES.items() if v == leaf]
            for source in sources:
                if source in c_set and _rows_add_up(
                        c_infos[source].shape, [m_infos[t].shape for t in targets]):
                    joins.split.append(
                        (source, tuple((t, m_infos[t].shape[0]) for t in targets)))
                    break
    return joins
