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
  split into magnitude and direction (fix ``unfold-weight-norm``);
- **a PEFT LoRA model's full state dict** (``get_peft_model(...).state_dict()``) for the
  plain base model: each adapted layer's ``base_layer.weight``, ``lora_A`` and ``lora_B``
  (``lora_embedding_A/B`` for embeddings) become the merged weight, the base layer's
  bias moves to the plain name, and ``modules_to_save``'s trained copies replace their
  frozen originals (fix ``merge-lora``, as ``merge_and_unload()``);
- **a pruned model saved without** ``prune.remove``: ``weight_orig`` and ``weight_mask``
  for a model without pruning (fix ``fold-prune-mask``: ``weight_orig * weight_mask``).

Names are checked in the namespace the key steps (prefixes) leave, and shapes must add
up exactly; nothing is guessed from shapes alone.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
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


# PEFT's LoRA tensors: lora_A/lora_B are modules (<module>.lora_A.<adapter>.weight in the
# model's state dict, <module>.lora_A.weight in a saved adapter), the embedding's are
# parameters (<module>.lora_embedding_A.<adapter>)
_LORA_MODULE = re.compile(r"(.+)\.lora_([AB])\.(?:([^.]+)\.)?(weight|bias)")
_LORA_EMBEDDING = re.compile(r"(.+)\.lora_embedding_([AB])(?:\.([^.]+))?")
_SAVED_COPY = re.compile(r"(.+?)\.modules_to_save\.([^.]+)\.(.+)")
_SAVED_ORIGINAL = re.compile(r"(.+?)\.original_module\.(.+)")


@dataclass(frozen=True)
class PeftModule:
    """One module of a PEFT model's full state dict, as the plain model holds it: a LoRA
    layer (``lora``: base weight, lora_A, lora_B, model weight, form, rank) with its base
    layer's other tensors (``moves``), or a ``modules_to_save`` copy (``moves``) and its
    frozen original (``drops``). ``form``: "linear", "transposed" (embeddings), "conv",
    or "square" (2-D and square: Linear or Conv1D, which the check decides)."""

    module: str
    lora: tuple[str, str, str, str, str, int] | None = None
    moves: tuple[tuple[str, str], ...] = ()  # (checkpoint name, model key), values as is
    bias: tuple[str, str, str] | None = None  # (base bias, lora_B bias, model key)
    drops: tuple[str, ...] = ()

    def checkpoint_names(self) -> list[str]:
        out = list(self.lora[:3]) if self.lora else []
        out += [c for c, _ in self.moves]
        if self.bias:
            out += self.bias[:2]
        return out + list(self.drops)

    def model_keys(self) -> list[str]:
        out = [self.lora[3]] if self.lora else []
        out += [m for _, m in self.moves]
        return out + ([self.bias[2]] if self.bias else [])

    def notes(self, file_key: Mapping[str, str]) -> dict[str, str]:
        """Model key -> the table's note, naming the file's keys (``file_key``: name as
        the key steps leave it -> key in the file)."""
        out = {}
        if self.lora:
            base, a, b = (file_key.get(k, k) for k in self.lora[:3])
            out[self.lora[3]] = f"merged from {base} + {b} @ {a} (LoRA)"
        for c, m in self.moves:
            what = "modules_to_save copy" if ".modules_to_save." in c else "LoRA base layer"
            out[m] = f"from {file_key.get(c, c)} ({what})"
        if self.bias:
            base, extra = (file_key.get(k, k) for k in self.bias[:2])
            out[self.bias[2]] = f"merged from {base} + {extra} (LoRA bias)"
        return out

    def given(self, stored: Mapping[str, TensorInfo]) -> dict[str, TensorInfo]:
        """Model key -> what the merge gives it (shape, dtype, device), for the table."""
        out = {self.lora[3]: stored[self.lora[0]]} if self.lora else {}
        out.update({m: stored[c] for c, m in self.moves})
        if self.bias:
            out[self.bias[2]] = stored[self.bias[0]]
        return out


@dataclass
class Joins:
    """What ``find_joins`` found, named as the key steps leave the checkpoint's keys."""

    folds: list[tuple[str, str, str]] = field(default_factory=list)  # (g, v, model key)
    fused: list[tuple[tuple[str, ...], str]] = field(default_factory=list)  # (parts, model key)
    split: list[tuple[str, tuple[tuple[str, int], ...]]] = field(default_factory=list)
    # split: (checkpoint key, ((model key, rows), ...))
    unfolds: list[tuple[str, str, str, tuple[int, ...]]] = field(default_factory=list)
    # unfolds: (checkpoint weight, model g, model v, g's shape)
    lora: list[PeftModule] = field(default_factory=list)  # a PEFT model's modules
    masks: list[tuple[str, str, str]] = field(default_factory=list)  # (orig, mask, model key)

    def __bool__(self) -> bool:
        return bool(self.folds or self.fused or self.split or self.unfolds or self.lora
                    or self.masks)

    def checkpoint_names(self) -> set[str]:
        return ({k for g, v, _ in self.folds for k in (g, v)}
                | {k for parts, _ in self.fused for k in parts}
                | {source for source, _ in self.split} | {w for w, _, _, _ in self.unfolds}
                | {k for m in self.lora for k in m.checkpoint_names()}
                | {k for o, m, _ in self.masks for k in (o, m)})

    def model_keys(self) -> set[str]:
        return ({mk for _, _, mk in self.folds} | {mk for _, mk in self.fused}
                | {mk for _, parts in self.split for mk, _ in parts}
                | {k for _, g, v, _ in self.unfolds for k in (g, v)}
                | {k for m in self.lora for k in m.model_keys()}
                | {mk for _, _, mk in self.masks})


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
    text = "\n".join(unmatched_c) + "\n"  # one C-speed search for each layout below
    if "base_layer." in text or ".modules_to_save." in text:
        joins.lora = find_peft_modules(unmatched_c, c_infos, unmatched_m, m_infos)
    if "_mask\n" in text:  # torch.nn.utils.prune, saved without prune.remove
        for mask in unmatched_c:
            if mask.endswith("_mask"):
                mk, orig = mask[:-5], mask[:-5] + "_orig"
                if (orig in c_set and mk in m_set and c_infos[orig].shape
                        == c_infos[mask].shape == m_infos[mk].shape):
                    joins.masks.append((orig, mask, mk))
    claimed = {k for m in joins.lora for k in m.model_keys()}
    claimed.update(mk for _, _, mk in joins.masks)
    for mk in [m for m in unmatched_m if m not in claimed] if claimed else unmatched_m:
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


def _lora_form(w: tuple[int, ...], a: tuple[int, ...], b: tuple[int, ...],
               embedding: bool) -> str | None:
    """How B @ A updates a weight of shape ``w`` (see PeftModule), or None: no update."""
    if embedding:  # lora_embedding_A (r, vocab), lora_embedding_B (dim, r)
        ok = len(w) == len(a) == len(b) == 2 and a[0] == b[1] and (a[1], b[0]) == w
        return "transposed" if ok else None
    if len(w) == 4:
        ok = (len(a) == len(b) == 4 and a[0] == b[1] and b[0] == w[0] and a[1] == w[1]
              and a[2:] == w[2:] and b[2:] == (1, 1))
        return "conv" if ok else None
    if not (len(w) == len(a) == len(b) == 2 and a[0] == b[1]):
        return None
    made = (b[0], a[1])
    if made == w:
        return "square" if w[0] == w[1] else "linear"
    return "transposed" if made == w[::-1] else None


def find_peft_modules(unmatched_c: list[str], c_infos: dict[str, TensorInfo],
                      unmatched_m: list[str], m_infos: dict[str, TensorInfo]
                      ) -> list[PeftModule]:
    """The modules of a PEFT model's full state dict, for a model without adapters: LoRA
    layers whose base weight, lora_A and lora_B are all stored (one adapter: with several,
    which one is active is not in the file), and ``modules_to_save`` copies. An adapter
    file alone (no ``base_layer``) is not one: that is the wrong file, not a join.

    When every key is a PEFT one, no prefix step explains ``base_model.model.`` (no key
    fits the model once it is stripped), so the modules' own names are matched to the
    model's with the leading components that make the most of them fit."""
    c_set, m_set = set(unmatched_c), set(unmatched_m)
    # module -> {(embedding?, "A"/"B", leaf): [(adapter, key)]}
    factors: dict[str, dict[tuple[bool, str, str], list[tuple[str, str]]]] = {}
    others: set[str] = set()  # modules with adapter tensors of another kind (DoRA's...)
    base_layers: dict[str, list[str]] = {}  # module -> its base layer's tensors
    copies: dict[str, dict[str, list[tuple[str, str]]]] = {}  # module -> adapter -> tensors
    originals: dict[str, list[str]] = {}  # module -> modules_to_save's frozen original
    for k in unmatched_c:
        if ".base_layer." in k:
            mod, _, rest = k.rpartition(".base_layer.")
            base_layers.setdefault(mod, []).append(rest)
        elif ".modules_to_save." in k:
            m = _SAVED_COPY.fullmatch(k)
            if m is not None:
                copies.setdefault(m[1], {}).setdefault(m[2], []).append((k, m[3]))
            continue
        elif ".original_module." in k:
            m = _SAVED_ORIGINAL.fullmatch(k)
            if m is not None:
                originals.setdefault(m[1], []).append(k)
            continue
        if "lora_" not in k:
            continue
        m = _LORA_MODULE.fullmatch(k)
        if m is not None:
            factors.setdefault(m[1], {}).setdefault((False, m[2], m[4]), []).append(
                (m[3] or "", k))
            continue
        m = _LORA_EMBEDDING.fullmatch(k)
        if m is not None:
            factors.setdefault(m[1], {}).setdefault((True, m[2], "weight"), []).append(
                (m[3] or "", k))
        elif ".lora_" in k:
            others.add(k.rpartition(".lora_")[0])
    saved = {mod: next(iter(by.values())) for mod, by in copies.items() if len(by) == 1}
    strip = _module_prefix([*factors, *saved], lambda mod, plain: (
        f"{plain}.weight" in m_set if mod in factors
        else all(f"{plain}.{rest}" in m_set for _, rest in saved[mod])))
    if strip is None:
        return []
    n = len(strip)
    out: list[PeftModule] = []
    for mod, parts in factors.items():
        if mod in others or len({ad for found in parts.values() for ad, _ in found}) != 1:
            continue  # DoRA and the like; or several adapters, of which one is active
        plain = mod[n:] if mod.startswith(strip) else mod
        base, target = f"{mod}.base_layer.weight", f"{plain}.weight"
        if base not in c_set or target not in m_set or c_infos[base].shape != (
                want := m_infos[target].shape):
            continue
        embedding = (True, "A", "weight") in parts
        a_found = parts.get((embedding, "A", "weight"))
        b_found = parts.get((embedding, "B", "weight"))
        extra = parts.get((False, "B", "bias"))
        if not a_found or not b_found or len(parts) != 2 + bool(extra):
            continue
        a, b = a_found[0][1], b_found[0][1]
        form = _lora_form(want, c_infos[a].shape, c_infos[b].shape, embedding)
        if form is None:
            continue
        moves = [(f"{mod}.base_layer.{rest}", f"{plain}.{rest}")
                 for rest in base_layers.get(mod, ()) if rest != "weight"]
        if not all(m in m_set and c_infos[c].shape == m_infos[m].shape for c, m in moves):
            continue
        bias = None
        if extra:  # peft's lora_bias: lora_B's bias is added to the base bias
            pair = (f"{mod}.base_layer.bias", f"{plain}.bias")
            if pair not in moves or c_infos[extra[0][1]].shape != m_infos[pair[1]].shape:
                continue
            moves.remove(pair)
            bias = (pair[0], extra[0][1], pair[1])
        out.append(PeftModule(plain, (base, a, b, target, form, c_infos[a].shape[0]),
                              tuple(moves), bias))
    for mod, tensors in saved.items():  # the trained copy replaces the frozen original
        plain = mod[n:] if mod.startswith(strip) else mod
        moves = [(c, f"{plain}.{rest}") for c, rest in tensors]
        if all(m in m_set and c_infos[c].shape == m_infos[m].shape for c, m in moves):
            out.append(PeftModule(plain, moves=tuple(moves),
                                  drops=tuple(originals.get(mod, ()))))
    return out


def _module_prefix(modules: list[str], fits) -> str | None:
    """The leading components (``""`` first, then up to three, as ``base_model.model.``)
    whose removal makes the most ``modules`` fit the model; None when none does."""
    votes: dict[str, int] = {}
    for mod in modules:
        cuts = ["", *[mod[:i + 1] for i, ch in enumerate(mod) if ch == "."][:3]]
        for cut in cuts:
            if fits(mod, mod[len(cut):]):
                votes[cut] = votes.get(cut, 0) + 1
                break
    if not votes:
        return None
    return max(votes, key=lambda cut: (votes[cut], cut == ""))
