"""Align checkpoint keys with the model's keys: prefixes, renames, transposes, shapes.

Everything here is linear or n log n in the number of keys: prefixes come from vote
counts over each key's leading components, renames from grouping unmatched keys per
module under a shape signature, square transposes from their own family (naming
pattern, then module type).
The result names key-mapping steps (``KeyStep``) that the plan turns into fixes.
"""

from __future__ import annotations

import re
from collections import Counter, deque
from collections.abc import Callable, Container
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import chain, compress, filterfalse, repeat
from operator import attrgetter, eq, is_, ne, not_
from typing import Any

from ..checkpoint import TensorInfo
from ..formatting import group_keys, shape_text
from ..keytemplates import SLOT, join_lines, template_only, templates_text
from ..loadhooks import renamed_names
from ..rules import renamer, squeezed
from .families import FAMILY, Family, find_families, rename_pattern
from .joins import Joins, PeftModule, find_joins
from .keys import (
    CONV1D_NAMES,
    PROJECTION_ROLES,
    escape_replacement,
    leaf_of,
    module_of,
    same_number,
)
from .model_side import ModelSide
from .parametrizations import Renamed, find_renames, rename_patterns

MAX_PREFIX_DEPTH = 4
MAX_ROUNDS = 3
SWAP_DEPTH = 2  # leading components replaced by another prefix
SAMPLE = 2000  # keys each side that propose prefixes
# Old parameter names that newer modules call differently (LayerNorm gamma/beta, TF).
LEAF_ALIASES = {"gamma": "weight", "beta": "bias", "kernel": "weight", "w": "weight",
                "b": "bias", "g": "weight", "scale": "weight", "offset": "bias"}
HEAD_NAMES = {"fc", "head", "heads", "classifier", "cls", "logits", "out", "output",
              "fc_out", "last_linear", "final", "score", "pred", "predictions", "linear_head",
              "classification_head", "cls_head"}
# position embeddings and relative position tables: sized by the image or sequence length
POSITION_HINTS = ("pos_embed", "position_embedding", "pos_emb", "positional_embedding",
                  "relative_position_bias_table", "position_ids", "wpe")
VOCAB_HINTS = ("embed", "wte", "word", "tok", "lm_head", "vocab", "shared", "decoder")
# What a module is for, by its own name: a token embedding and the output head often have
# the same shape (GPT-2's wte and lm_head), and only their names tell them apart.
OUTPUT_NAMES = HEAD_NAMES | {"lm_head", "embed_out", "unembed", "output_layer",
                             "output_projection", "decoder"}
# Tensors one layout of a module has and another lacks, with no learned values (GPT-2's
# old masked_bias, BatchNorm's counter, BERT's position_ids): searching for a module's
# counterpart, they neither need a partner nor stop the rest from pairing.
OPTIONAL_LEAVES = frozenset({"num_batches_tracked", "masked_bias", "position_ids"})
# Hugging Face's Conv1D layers (GPT-2, OpenAI GPT): weights stored as (in, out)


@dataclass(frozen=True)
class KeyStep:
    """One key-mapping step, mirrored by a fix of the same kind in the plan."""

    kind: str  # "strip-prefix" | "add-prefix" | "rename-keys"
    prefix: str = ""
    mapping: tuple[tuple[str, str], ...] = ()
    patterns: tuple[tuple[str, str], ...] = ()
    origin: str = "prefix"  # "prefix" (leading components) or "rename" (modules, leaves)
    swap: tuple[str, str] | None = None  # a rename that replaces one literal prefix

    def fix(self) -> Any:
        """The plan's fix doing this step (StripPrefix, AddPrefix or RenameKeys)."""
        from ..fixes.kinds import AddPrefix, RenameKeys, StripPrefix

        if self.kind == "strip-prefix":
            return StripPrefix(self.prefix)
        if self.kind == "add-prefix":
            return AddPrefix(self.prefix)
        return RenameKeys(mapping=self.mapping, patterns=self.patterns)

    def mapper(self):
        if self.swap is not None:
            old, new = self.swap
            n = len(old)
            return lambda k: new + k[n:] if k.startswith(old) else k
        if self.kind == "strip-prefix":
            p, n = self.prefix, len(self.prefix)
            return lambda k: k[n:] if k.startswith(p) else k
        if self.kind == "add-prefix":
            p = self.prefix
            return lambda k: p + k
        return renamer(self.mapping, self.patterns)

    def map_all(self, names: list[str]) -> list[str]:
        """``[self.mapper()(n) for n in names]``, without a call per name for prefixes."""
        if self.swap is not None:
            old, new = self.swap
            n = len(old)
            return (_swap_joined(names, old, new)
                    or [new + k[n:] if k.startswith(old) else k for k in names])
        if self.kind == "strip-prefix":
            p, n = self.prefix, len(self.prefix)
            return _swap_joined(names, p, "") or [k[n:] if k.startswith(p) else k for k in names]
        if self.kind == "add-prefix":
            p = self.prefix
            return [p + k for k in names]
        return list(map(self.mapper(), names))

    def describe(self) -> str:
        if self.kind == "strip-prefix":
            return f"strip the prefix {self.prefix!r}"
        if self.kind == "add-prefix":
            return f"add the prefix {self.prefix!r}"
        n = len(self.mapping) + len(self.patterns)
        return f"rename keys ({n} rule{'s' if n != 1 else ''})"


def _swap_joined(names: list[str], old: str, new: str) -> list[str] | None:
    """Every name with its leading ``old`` replaced by ``new``, as string operations on
    all names joined by newlines (C speed); None unless every name starts with ``old``
    and none holds a newline (then the caller maps them one by one)."""
    if not names or not old or "\n" in old or "\n" in new:
        return None
    text = join_lines(names)
    if text is None or not text.startswith(old) or text.count("\n" + old) != len(names) - 1:
        return None
    return (new + text[len(old):].replace("\n" + old, "\n" + new)).split("\n")


@dataclass
class Alignment:
    """How each model key is served by the checkpoint entry, and why not when it is not."""

    ckpt: dict[str, TensorInfo]
    model: ModelSide
    steps: list[KeyStep] = field(default_factory=list)
    step_keys: list[list[str]] = field(default_factory=list)   # ckpt keys each step renames
    families: list[Family] = field(default_factory=list)  # repeated modules renamed alike
    rename_pairs: list[tuple[str, str]] = field(default_factory=list)  # the other renames
    rename_lines: list[str] = field(default_factory=list)  # the pairs, repeated layers grouped
    pairs: dict[str, str] = field(default_factory=dict)        # model key -> ckpt key
    status: dict[str, str] = field(default_factory=dict)       # model key -> row status
    notes: dict[str, str] = field(default_factory=dict)        # model key -> short note
    reasons: dict[str, str] = field(default_factory=dict)      # mismatched key -> reason kind
    missing: list[str] = field(default_factory=list)           # model keys, model order
    unexpected: list[str] = field(default_factory=list)        # ckpt keys, file order
    unexpected_mapped: dict[str, str] = field(default_factory=dict)  # ckpt key -> mapped name
    transposed: list[str] = field(default_factory=list)        # model keys
    square_transposed: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)        # model keys
    dtype_differs: list[str] = field(default_factory=list)     # model keys
    tied_served: dict[str, str] = field(default_factory=dict)  # missing key -> loaded partner
    # model key -> the name the file gives it, which the model's own load hook renames
    # (weight_norm's weight_g -> parametrizations.weight.original0): no fix needed
    hook_renamed: dict[str, str] = field(default_factory=dict)
    # tensors stored under weight or spectral norm's other naming (parametrizations.py)
    parametrized: list[Renamed] = field(default_factory=list)
    # tensors stored as several where the model holds one, or the other way round (see
    # joins.py), named as the key steps leave the checkpoint's keys:
    folds: list[tuple[str, str, str]] = field(default_factory=list)  # (g, v, model key)
    fused: list[tuple[tuple[str, ...], str]] = field(default_factory=list)  # (parts, model key)
    split: list[tuple[str, tuple[tuple[str, int], ...]]] = field(default_factory=list)
    unfolds: list[tuple[str, str, str, tuple[int, ...]]] = field(default_factory=list)
    lora: list[PeftModule] = field(default_factory=list)  # a PEFT model's modules (merge-lora)
    masks: list[tuple[str, str, str]] = field(default_factory=list)  # (orig, mask, model key)
    # model key -> what those joins give it (shape, dtype, device), for the table
    joined: dict[str, TensorInfo] = field(default_factory=dict)
    collisions: bool = False  # two checkpoint keys land on one name
    # renames the search of the leftovers found (module or key pairs, file -> model, in
    # the namespace the prefix steps leave): by roles, shapes up to transposes, order
    searched: list[tuple[str, str]] = field(default_factory=list)
    # module renames that only the modules' order decided (file -> model): among modules
    # alike (same leaves, shapes up to a transpose) of several namings, names that say no
    # shared role; the finding names them as a doubt
    by_order: list[str] = field(default_factory=list)  # "old -> new" lines
    # square 2-D weights in a checkpoint that stores others transposed, with nothing to
    # tell their own orientation: kept out of the plan, never loaded silently
    orientation_unknown: list[str] = field(default_factory=list)  # model keys

    @property
    def renamed(self) -> dict[str, str]:
        """Model key -> checkpoint key, where the names differ (prefix or rename)."""
        return {mk: ck for mk, ck in self.pairs.items() if mk != ck}

    @property
    def loadable_count(self) -> int:
        """``len(self.loadable)`` without building the list."""
        counts = Counter(self.status.values())
        return counts["match"] + counts["dtype-differs"] + counts["renamed"]

    @property
    def loadable(self) -> list[str]:
        """Model keys that receive a value of the right shape once the keys are mapped."""
        return [k for k, s in self.status.items() if s in ("match", "dtype-differs", "renamed")]


# -- prefixes ---------------------------------------------------------------------------
def leading_parts(key: str, depth: int = MAX_PREFIX_DEPTH) -> list[tuple[str, str]]:
    """(prefix with its dot, rest) for the first few leading components of key."""
    out = []
    pos = key.find(".")
    while pos >= 0 and len(out) < depth:
        out.append((key[:pos + 1], key[pos + 1:]))
        pos = key.find(".", pos + 1)
    return out


def spread(keys: list[str], n: int = SAMPLE) -> list[str]:
    """At most n keys evenly spread over ``keys``: proposals come from a sample, and
    every proposal is then scored on all keys."""
    if len(keys) <= n:
        return keys
    step = len(keys) / n
    return [keys[int(i * step)] for i in range(n)]


def _propose(unmatched_c: list[str], unmatched_m: list[str],
             in_c: Callable[[str], bool] | None = None,
             in_m: Callable[[str], bool] | None = None) -> list[KeyStep]:
    """Prefix steps worth scoring, from a sample of the unmatched keys. ``in_c`` and
    ``in_m`` test membership of the unmatched sides when the caller can answer from sets
    it has already (two sets of 100,000 names cost more than the whole sample)."""
    in_c = in_c or set(unmatched_c).__contains__
    in_m = in_m or set(unmatched_m).__contains__
    sample_c, sample_m = spread(unmatched_c), spread(unmatched_m)
    strip: Counter[str] = Counter()
    for k in sample_c:
        for p, rest in leading_parts(k):
            if in_m(rest):
                strip[p] += 1
    add: Counter[str] = Counter()
    for k in sample_m:
        for p, rest in leading_parts(k):
            if in_c(rest):
                add[p] += 1
    proposals: list[tuple[int, KeyStep]] = []
    proposals += [(n, KeyStep("strip-prefix", p)) for p, n in strip.most_common(2)]
    proposals += [(n, KeyStep("add-prefix", p)) for p, n in add.most_common(2)]
    best = max((n for n, _ in proposals), default=0)
    if best * 2 < min(len(sample_c), len(sample_m)):
        proposals += _propose_swaps(sample_c, sample_m, in_m)
    proposals.sort(key=lambda t: -t[0])
    # A prefix worth scoring on every key explains a fair share of the sample; a
    # handful of keys is a module rename, which the per-module pass finds.
    floor = max(1, min(len(sample_c), len(sample_m)) // 50)
    return [s for n, s in proposals if n >= floor]


def _heads(keys: list[str], depth: int) -> Counter[str]:
    """How often each leading prefix of ``depth`` components (with its dot) occurs."""
    counts: Counter[str] = Counter()
    for k in keys:
        parts = k.split(".", depth)
        if len(parts) > depth:
            counts[".".join(parts[:depth]) + "."] += 1
    return counts


def _propose_swaps(sample_c: list[str], sample_m: list[str], in_m: Callable[[str], bool]
                   ) -> list[tuple[int, KeyStep]]:
    """Replace one leading prefix by another: the commonest heads of each side, paired,
    each pair scored on the sample. A prefix that two heads of the other side fit equally
    well (``0.alpha.`` and ``0.beta.`` both hold what ``0.first.`` holds) is no swap: which
    is which would be a guess, left to the per-module pass, which names its doubt."""
    out: list[tuple[int, KeyStep]] = []
    for depth in range(1, SWAP_DEPTH + 1):
        heads_c = [p for p, _ in _heads(sample_c, depth).most_common(3)]
        heads_m = [q for q, _ in _heads(sample_m, depth).most_common(3)]
        scores: dict[tuple[str, str], int] = {}
        for p in heads_c:
            with_p = [k[len(p):] for k in sample_c if k.startswith(p)]
            for q in heads_m:
                if p == q or _clash(_role(p[:-1]), _role(q[:-1])):
                    continue
                n = sum(1 for rest in with_p if in_m(q + rest))
                if n:
                    scores[(p, q)] = n
        for (p, q), n in scores.items():
            named = _role(p[:-1]) is not None and _role(p[:-1]) == _role(q[:-1])
            rivals = [m for (p2, q2), m in scores.items()
                      if (p2 == p) != (q2 == q) and m == n]
            if rivals and not named:
                continue
            out.append((n, KeyStep("rename-keys", patterns=(
                (f"^{re.escape(p)}", escape_replacement(q)),), swap=(p, q))))
    return out


def _count_set(names: list[str], model: dict[str, TensorInfo]) -> tuple[int, set[str]]:
    """The model keys ``names`` serve, and the set of names (reused, not rebuilt)."""
    unique = set(names)
    # two checkpoint keys landing on one name is a collision, not a gain
    return len(unique & model.keys()) - (len(names) - len(unique)), unique


def _guarded_add(step: KeyStep, names: list[str], model: dict[str, TensorInfo]) -> KeyStep | None:
    """An add-prefix that spares the keys that already match, if a first component
    tells them apart; as a rename pattern with a negative lookahead."""
    keep = {n.split(".", 1)[0] for n in names if n in model}
    need = {n.split(".", 1)[0] for n in names if n not in model and step.prefix + n in model}
    if not keep or keep & need:
        return None
    alts = "|".join(re.escape(c) for c in sorted(keep))
    return KeyStep("rename-keys", patterns=((rf"^(?!(?:{alts})(?:\.|$))",
                                             escape_replacement(step.prefix)),))


_SHAPE = attrgetter("shape")
_META = attrgetter("shape", "dtype")


def _fits(shape: tuple[int, ...], want: tuple[int, ...]) -> bool:
    return shape == want or (len(shape) == 2 and shape == want[::-1])


def _changed(names: list[str], mapped: list[str]) -> list[int]:
    """Indices where a step changed the name (in C: no Python loop per key)."""
    return list(compress(range(len(names)), map(ne, names, mapped)))


def _shapes_agree(changed: list[int], mapped: list[str], infos: list[TensorInfo],
                  model: dict[str, TensorInfo]) -> bool:
    """Whether the keys a step newly lands on model names mostly have the model's shapes
    (checked on a spread of at most SAMPLE): a different name with a different shape
    is a stray key, not a renamed one (``aux.weight`` is not the model's ``extra.weight``).
    ``changed`` holds the indices the step renamed."""
    landed = list(compress(changed, map(model.__contains__, map(mapped.__getitem__, changed))))
    sample = spread(landed)
    fit = sum(1 for i in sample if _fits(infos[i].shape, model[mapped[i]].shape))
    return fit > 0 and fit * 2 >= len(sample)


def _prefix_rounds(
    names: list[str], model: dict[str, TensorInfo], infos: list[TensorInfo],
    counted: tuple[int, set[str]] | None = None,
) -> tuple[list[str], list[KeyStep], list[list[int]], set[str], list[str], int]:
    """(names after the prefix steps, the steps, indices each step renamed, and the
    final names' set, unmatched checkpoint names (for the rename pass) and score).
    ``infos[i]`` describes the checkpoint tensor named ``names[i]``;
    ``counted`` is ``_count_set(names, model)`` when the caller has it."""
    steps: list[KeyStep] = []
    affected: list[list[int]] = []
    score, name_set = _count_set(names, model) if counted is None else counted
    unmatched_c: list[str] = []
    for _ in range(MAX_ROUNDS):
        if score == len(model):
            break
        if score == 0 and len(name_set) == len(names):  # no name matches (a prefix on all)
            unmatched_c, unmatched_m = list(names), list(model)
        else:
            unmatched_c = list(filterfalse(model.__contains__, names))
            unmatched_m = list(filterfalse(name_set.__contains__, model))
        if not unmatched_c or not unmatched_m:
            break
        scored: list[tuple[int, int, KeyStep, list[str], set[str]]] = []
        def in_c(key: str, names: set[str] = name_set) -> bool:
            return key in names and key not in model

        def in_m(key: str, names: set[str] = name_set) -> bool:
            return key in model and key not in names

        for step in _propose(unmatched_c, unmatched_m, in_c, in_m)[:4]:
            if scored and scored[0][0] == len(model):
                break
            variants = [step]
            if step.kind == "add-prefix":
                guarded = _guarded_add(step, names, model)
                if guarded is not None:
                    variants.append(guarded)
            for variant in variants:
                mapped = variant.map_all(names)
                s, mapped_set = _count_set(mapped, model)
                if s > score:
                    scored.append((s, -len(scored), variant, mapped, mapped_set))
                    scored.sort(key=lambda t: (-t[0], -t[1]))
        best = changed = None
        for cand in scored:
            changed = _changed(names, cand[3])
            if _shapes_agree(changed, cand[3], infos, model):
                best = cand
                break
        if best is None or changed is None:
            break
        score, _, step, mapped, name_set = best
        affected.append(changed)
        names = mapped
        steps.append(step)
        unmatched_c = []  # stale: recomputed below
    if score == len(model):
        return names, steps, affected, name_set, [], score  # every model key is served
    if steps and not unmatched_c:
        unmatched_c = list(filterfalse(model.__contains__, names))
    return names, steps, affected, name_set, unmatched_c, score


# -- renames ----------------------------------------------------------------------------
def _role(module: str) -> str | None:
    """What a module is for, by the last component of its name: "token" (embedding),
    "position", "segment", "head" (output), an attention projection ("query", "key",
    "value", "attention output"), or None when the name does not say."""
    return _role_word(module.rpartition(".")[2])


module_role = _role


@lru_cache(maxsize=4096)
def _role_word(name: str) -> str | None:
    name = name.lower()
    if name in OUTPUT_NAMES:
        return "head"
    if name in PROJECTION_ROLES:
        return PROJECTION_ROLES[name]
    if "type" in name or "segment" in name:
        return "segment"
    if (name == "wpe" or "position" in name or "_pos" in name
            or (name.startswith("pos") and not name.startswith("pose"))):
        return "position"
    if "emb" in name or name in ("wte", "shared") or "tok" in name or "word" in name:
        return "token"
    return None


def _clash(a: str | None, b: str | None) -> bool:
    """Two modules whose names give them different roles (an embedding, an output head)
    are not one module renamed, whatever their shapes."""
    return a is not None and b is not None and a != b


def _by_module(keys: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    get = out.get
    for k in keys:
        mod = k.rpartition(".")[0]
        group = get(mod)
        if group is None:
            out[mod] = [k]
        else:
            group.append(k)
    return out


def _signature(keys: list[str], infos: dict[str, TensorInfo]) -> tuple:
    """The sorted (leaf, shape) pairs of one module's keys (one or two keys: no sort)."""
    if len(keys) == 1:
        k = keys[0]
        return ((k.rpartition(".")[2], infos[k].shape),)
    if len(keys) == 2:
        a, b = keys
        x = (a.rpartition(".")[2], infos[a].shape)
        y = (b.rpartition(".")[2], infos[b].shape)
        return (x, y) if x <= y else (y, x)
    return tuple(sorted([(k.rpartition(".")[2], infos[k].shape) for k in keys]))


def _find_renames(cmods: dict[str, list[str]], c_infos: dict[str, TensorInfo],
                  unmatched_m: list[str], m_infos: dict[str, TensorInfo]
                  ) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(module pairs, key pairs): modules whose unmatched keys have the same leaves and
    shapes, paired in order; then leaves renamed inside one module (gamma -> weight).
    ``cmods`` is the unmatched checkpoint keys by module."""
    mmods = _by_module(unmatched_m)
    sig_c: dict[tuple, deque[str]] = {}
    for mod, keys in cmods.items():
        if mod:
            sig_c.setdefault(_signature(keys, c_infos), deque()).append(mod)
    module_pairs: list[tuple[str, str]] = []
    used_c: set[str] = set()
    used_m: set[str] = set()
    for mod, keys in mmods.items():
        if not mod:
            continue
        queue = sig_c.get(_signature(keys, m_infos))
        if queue:
            cmod = _take(queue, _role(mod))
            if cmod is None:
                continue
            module_pairs.append((cmod, mod))
            used_c.add(cmod)
            used_m.add(mod)
    key_pairs: list[tuple[str, str]] = []
    for mod, mkeys in mmods.items():
        if mod in used_m or mod not in cmods or mod in used_c:
            continue
        ckeys = list(cmods[mod])
        pre = mod + "." if mod else ""
        for mk in mkeys:
            leaf = leaf_of(mk)
            shape = m_infos[mk].shape
            pick = next((ck for ck in ckeys if LEAF_ALIASES.get(leaf_of(ck)) == leaf
                         and c_infos[ck].shape == shape), None)
            if pick is None:
                same = [ck for ck in ckeys if c_infos[ck].shape == shape]
                pick = same[0] if len(same) == 1 else None
            if pick is not None and pick != pre + leaf:
                key_pairs.append((pick, mk))
                ckeys.remove(pick)
    return module_pairs, key_pairs


@lru_cache(maxsize=4096)
def _canon(shape: tuple[int, ...]) -> tuple[int, ...]:
    """A shape up to size-1 dimensions and, for a matrix, its orientation: the shapes a
    transpose or a reshape can turn into one another share it."""
    dims = squeezed(shape)
    return tuple(sorted(dims)) if len(dims) == 2 else dims


def _realizable(stored: tuple[int, ...], want: tuple[int, ...]) -> bool:
    """Whether one fix gives ``stored`` the shape ``want``: none, a transpose, a reshape."""
    return (stored == want or (len(stored) == 2 and stored == want[::-1])
            or squeezed(stored) == squeezed(want))


@dataclass
class _Unit:
    """The leftover tensors of one module (or one top-level tensor)."""

    name: str
    root: bool  # a top-level tensor: ``name`` is its key
    keys: list[str]
    raw: tuple = ()  # (leaf, shape) of each key, in order: repeated layers share it
    role: str | None = None

    def leaves(self) -> dict[str, str]:
        """Aliased leaf (gamma is weight) -> key; a top-level tensor's leaf is ""."""
        if self.root:
            return {"": self.keys[0]}
        n = len(self.name) + 1
        return {LEAF_ALIASES.get(k[n:], k[n:]): k for k in self.keys}


def _canonical(raw: tuple[tuple[str, tuple[int, ...]], ...]) -> tuple:
    """A module's (leaf, shape) pairs as a signature: leaves aliased (gamma is weight),
    optional ones left out, shapes up to transposes and size-1 dimensions; () when two
    leaves alias to one (not one module's layout)."""
    aliases = [LEAF_ALIASES.get(leaf, leaf) for leaf, _ in raw]
    if len(set(aliases)) != len(aliases):
        return ()
    return tuple(sorted((alias, _canon(shape)) for (leaf, shape), alias in zip(raw, aliases)
                        if leaf not in OPTIONAL_LEAVES))


def _units(groups: dict[str, list[str]], infos: dict[str, TensorInfo]
           ) -> dict[tuple, list[_Unit]]:
    """Units by signature (``_canonical``), from keys grouped by module (``_by_module``),
    in the order they come. Repeated layers share their raw (leaf, shape) pairs, so each
    distinct module layout is judged once."""
    out: dict[tuple, list[_Unit]] = {}
    seen: dict[tuple, tuple] = {}
    for mod, ks in groups.items():
        if not mod:  # top-level tensors: a unit each
            for k in ks:
                shape = infos[k].shape
                out.setdefault((("", _canon(shape)),), []).append(
                    _Unit(k, True, [k], (("", shape),)))
            continue
        n = len(mod) + 1
        raw = tuple([(k[n:], infos[k].shape) for k in ks])
        sig = seen.get(raw)
        if sig is None:
            sig = seen[raw] = _canonical(raw)
        if sig:
            group = out.get(sig)
            if group is None:
                out[sig] = [_Unit(mod, False, ks, raw)]
            else:
                group.append(_Unit(mod, False, ks, raw))
    return out


def _owner_role(model: ModelSide, unit: _Unit) -> str | None:
    """A model unit's role: its name's, else its module type's (an nn.Embedding holds a
    token embedding)."""
    role = _role(unit.name)
    if role is None and not unit.root and model.module is not None:
        try:
            owner = model.module.get_submodule(unit.name)
        except (AttributeError, TypeError):
            return None
        if "Embedding" in type(owner).__name__:
            return "token"
    return role


def _search_leftovers(left_c: list[str], c_infos: dict[str, TensorInfo],
                      left_m: list[str], model: ModelSide,
                      cmods: dict[str, list[str]]
                      ) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(module pairs, key pairs) among the keys every other search left unpaired, before
    the plan would leave model tensors at their initial values while checkpoint tensors go
    unused. A checkpoint module and a model module pair when their tensors have the same
    roles (weight, bias, running statistics; gamma is weight) and shapes up to a transpose
    or size-1 dimensions, tensors only one layout has (``OPTIONAL_LEAVES``) aside; among
    modules alike, names that give a role (token embedding, output head) pair first, then
    the rest by module order, and only when both sides hold as many (else which is which
    is a guess). Linear in the number of leftovers; the plan's transposes and reshapes
    follow from the shapes once the keys are renamed."""
    m_infos = model.infos
    if sum(map(len, cmods.values())) == len(left_c):  # nothing paired yet: reuse the groups
        c_groups = cmods
    else:
        left = set(left_c)
        c_groups = {mod: kept for mod, ks in cmods.items()
                    if (kept := [k for k in ks if k in left])}
    c_units, m_units = _units(c_groups, c_infos), _units(_by_module(left_m), m_infos)
    module_pairs: list[tuple[str, str]] = []
    key_pairs: list[tuple[str, str]] = []
    for sig, ms in m_units.items():
        cs = c_units.get(sig)
        if not cs:
            continue
        roles = False
        for u in cs:
            u.role = _role(u.name)
            roles = roles or u.role is not None
        matched: list[tuple[_Unit, _Unit]] = []
        if roles:  # else no model role can pair first or clash: none is needed
            for u in ms:
                u.role = _owner_role(model, u)
            for role in {u.role for u in ms} - {None}:
                cr = [u for u in cs if u.role == role]
                mr = [u for u in ms if u.role == role]
                if len(cr) == len(mr):
                    matched += zip(cr, mr)
            done = {id(u) for pair in matched for u in pair}
            cs = [u for u in cs if id(u) not in done]
            ms = [u for u in ms if id(u) not in done]
        if len(cs) == len(ms):
            matched += [(c, m) for c, m in zip(cs, ms) if not _clash(c.role, m.role)]
        # repeated layers share their layouts: each pair of layouts is judged once, as
        # True (the same leaves in the same order, shapes that fit: a module renamed as a
        # whole), False (a shape that cannot fit) or None (pair the tensors one by one)
        verdicts: dict[tuple, bool | None] = {}
        for cu, mu in matched:
            layouts = (cu.raw, mu.raw)
            if layouts in verdicts:
                verdict = verdicts[layouts]
            else:
                verdict = verdicts[layouts] = _layouts_fit(cu, mu)
            if verdict is False:
                continue
            if verdict and not cu.root and len(cmods.get(cu.name, ())) == len(cu.keys):
                module_pairs.append((cu.name, mu.name))
                continue
            pairs = _unit_pairs(cu, mu, c_infos, m_infos)
            if pairs is None:
                continue
            if _whole(cu, mu, pairs, cmods, m_infos):
                module_pairs.append((cu.name, mu.name))
            else:
                key_pairs += pairs
    return module_pairs, key_pairs


def _layouts_fit(cu: _Unit, mu: _Unit) -> bool | None:
    """True when the units hold the same leaves in the same order with shapes one fix
    makes the model's, False when a shape cannot fit, None when the leaves differ."""
    if cu.root or mu.root or [leaf for leaf, _ in cu.raw] != [leaf for leaf, _ in mu.raw]:
        return None
    return all(cs == ms or _realizable(cs, ms) for (_, cs), (_, ms) in zip(cu.raw, mu.raw))


def _whole(cu: _Unit, mu: _Unit, pairs: list[tuple[str, str]], cmods: dict[str, list[str]],
           m_infos: dict[str, TensorInfo]) -> bool:
    """Whether the pair renames as a module (every key of the checkpoint's module keeps
    its leaf, none lands on another model key): a pattern for repeated layers."""
    if cu.root or mu.root or len(cmods.get(cu.name, ())) != len(cu.keys):
        return False
    n, m = len(cu.name), len(mu.name)
    if any(k[n:] != v[m:] for k, v in pairs):
        return False
    paired = {k for k, _ in pairs}
    return not any(mu.name + k[n:] in m_infos for k in cu.keys if k not in paired)


def _unit_pairs(cu: _Unit, mu: _Unit, c_infos: dict[str, TensorInfo],
                m_infos: dict[str, TensorInfo]) -> list[tuple[str, str]] | None:
    """(checkpoint key, model key) for each tensor the two units share, or None when a
    shape cannot become the model's by one transpose or reshape."""
    out = []
    c_leaves = cu.leaves()
    for alias, mk in mu.leaves().items():
        ck = c_leaves.get(alias)
        if ck is None:
            continue  # an optional tensor the checkpoint's layout lacks
        cs, ms = c_infos[ck].shape, m_infos[mk].shape
        if cs != ms and not _realizable(cs, ms):
            return None
        out.append((ck, mk))
    return out or None


def _take(queue: deque[str], role: str | None, look: int = 8) -> str | None:
    """The first module of ``queue`` (same signature, file order) for a model module of
    this role: one of the same role if one of the next few is, else the first unless the
    roles clash (a token embedding is not the output head, whatever the order)."""
    first = queue[0]
    if _role(first) == role:
        return queue.popleft()
    for i in range(1, min(look, len(queue))):
        if _role(queue[i]) == role:
            found = queue[i]
            del queue[i]
            return found
    return None if _clash(_role(first), role) else queue.popleft()


def _rename_step(families: list[Family], module_pairs: list[tuple[str, str]],
                 key_pairs: list[tuple[str, str]], c_by_module: dict[str, list[str]],
                 names: list[str], parametrized: list[Renamed] | None = None
                 ) -> tuple[KeyStep, list[str]]:
    """A RenameKeys step (patterns for repeated layers and for weight and spectral norm's
    namings, exact pairs for the rest), and the names after it; a pattern that would touch
    other keys falls back to pairs."""
    intended: dict[str, str] = {r.checkpoint: r.model for r in parametrized or ()}
    for family in families:
        intended.update(zip(family.c_keys, family.m_keys))
    for cmod, mmod in module_pairs:
        for k in c_by_module[cmod]:
            intended[k] = mmod + k[len(cmod):]
    for ck, mk in key_pairs:
        intended[ck] = mk
    groups: dict[tuple[str, str], list[tuple[str, str]]] = {}
    c_tmpls, c_ints = templates_text([c for c, _ in module_pairs])
    m_tmpls, m_ints = templates_text([m for _, m in module_pairs])
    for pair, ct, ci, mt, mi in zip(module_pairs, c_tmpls, c_ints, m_tmpls, m_ints):
        key = (ct, mt) if ci and ci == mi else pair
        group = groups.get(key)
        if group is None:
            groups[key] = [pair]
        else:
            group.append(pair)
    patterns: list[tuple[str, str]] = [family.pattern() for family in families]
    if parametrized:
        patterns += rename_patterns(parametrized)
    exact: list[tuple[str, str]] = []
    patterned: set[str] = set()
    for (ct, mt), members in groups.items():
        if len(members) >= FAMILY and SLOT in ct:
            patterns.append(rename_pattern(ct, mt))
            patterned.update(cm for cm, _ in members)
    for cmod, _ in module_pairs:
        if cmod not in patterned:
            exact.extend((k, intended[k]) for k in c_by_module[cmod])
    exact.extend(key_pairs)
    step = KeyStep("rename-keys", mapping=tuple(exact), patterns=tuple(patterns), origin="rename")
    mapped = list(map(intended.get, names, names))
    if patterns:
        # The patterns must leave every other key alone and rename a spread of the
        # intended ones exactly (checking all of them would double the cost).
        fn = step.mapper()
        strays = _any_match([rx for rx, _ in patterns],
                            list(filterfalse(intended.__contains__, names)))
        wrong = any(fn(n) != intended[n] for n in spread(list(intended)))
        if strays or wrong:
            step = KeyStep("rename-keys", mapping=tuple(intended.items()), origin="rename")
    return step, mapped


def _order_only(pairs: list[tuple[str, str]], cmods: dict[str, list[str]],
                c_infos: dict[str, TensorInfo]) -> list[tuple[str, str]]:
    """The module pairs among ``pairs`` that only the modules' order decided: checkpoint
    modules alike (the same leaves, shapes up to a transpose) under more than one naming
    (so layer numbers cannot say which is which), whose names give the model's module no
    shared role (``k_proj`` and ``key`` share one)."""
    groups: dict[tuple, list[tuple[str, str]]] = {}
    for c, m in pairs:
        keys = cmods.get(c)
        if keys:
            sig = tuple(sorted((leaf_of(k), _canon(c_infos[k].shape)) for k in keys))
            groups.setdefault(sig, []).append((c, m))
    out: list[tuple[str, str]] = []
    for members in groups.values():
        if len({template_only(c) for c, _ in members}) < 2:
            continue
        out += [(c, m) for c, m in members
                if (_role(c) is None or _role(c) != _role(m)) and not same_number(c, m)]
    return out


def rename_lines(pairs: list[tuple[str, str]]) -> list[str]:
    """"old -> new" lines, repeated layers grouped on both sides when they line up."""
    if not pairs:
        return []
    olds = group_keys([o for o, _ in pairs])
    news = group_keys([n for _, n in pairs])
    if len(olds) == len(news):
        return [f"{o} -> {n}" for o, n in zip(olds, news)]
    return [f"{o} -> {n}" for o, n in pairs]


def _any_match(patterns: list[str], keys: list[str]) -> bool:
    """Whether any of the ``^``-anchored ``patterns`` matches any key: one multiline
    search over the joined keys, not a search per key."""
    text = join_lines(keys)
    if text is None:  # a key holds a newline itself
        return any(re.search(rx, k) for k in keys for rx in patterns)
    return any(re.search(rx, text, re.MULTILINE) for rx in patterns)


# -- shapes -----------------------------------------------------------------------------
class HeadModules:
    """Modules that look like the output head: named like one (its last component, in
    any case), or the last with a matrix weight. Module names come from the model's
    module list when there is one, else from the keys. A membership test: shape
    mismatches ask about a few modules, and naming the heads among 50,000 modules
    first costs more than all of those questions."""

    def __init__(self, side: ModelSide) -> None:
        self._side = side
        self._names: set[str] | None = None
        self._last: str | None = None  # the module of the last matrix weight
        model = side.infos
        for key in reversed(model):
            if leaf_of(key) == "weight" and len(model[key].shape) >= 2:
                self._last = module_of(key)
                break

    def __contains__(self, mod: object) -> bool:
        if mod == self._last:
            return True
        if type(mod) is not str or mod.rpartition(".")[2].lower() not in HEAD_NAMES:
            return False
        if self._names is None:
            side = self._side
            self._names = (set(side.module_names) if side.module_names
                           else {k.rpartition(".")[0] for k in side.infos})
        return mod in self._names


def _loads_into(stored: TensorInfo, model: TensorInfo) -> bool:
    """Whether torch copies a tensor of ``stored``'s shape into ``model``'s: the same
    shape, a lazy module's parameter (it takes any), or torch's own allowance of a
    one-element 1-d tensor for a 0-d one."""
    return (stored.shape == model.shape or model.layout == "lazy"
            or (model.shape == () and stored.shape == (1,)))


def mismatch_reason(key: str, cs: tuple[int, ...], ms: tuple[int, ...],
                    heads: Container[str], tied_vocab: bool = False) -> str:
    """Why shapes differ: zero-size | reshape | positions | head | vocab | kernel |
    config."""
    if 0 in cs and 0 not in ms:
        return "zero-size"
    if squeezed(cs) == squeezed(ms):  # the same values: only size-1 dimensions differ
        return "reshape"
    if (len(cs) == len(ms) and sum(a != b for a, b in zip(cs, ms)) == 1
            and any(h in key.lower() for h in POSITION_HINTS)):
        return "positions"
    lowered = key.lower()
    mod = module_of(key)
    if len(cs) == len(ms) and cs[1:] == ms[1:] and cs[:1] != ms[:1]:
        if len(cs) == 2 and (tied_vocab or any(h in lowered for h in VOCAB_HINTS)):
            return "vocab"
        if mod in heads:
            return "head"
        if len(cs) <= 2 and any(h in lowered for h in VOCAB_HINTS):
            return "vocab"
    if len(cs) == len(ms) and len(cs) >= 3 and cs[:2] == ms[:2]:
        return "kernel"
    if mod in heads and len(cs) == len(ms):
        return "head"
    return "config"


def align(ckpt: dict[str, TensorInfo], model: ModelSide) -> Alignment:
    """Match an entry's keys to the model's; classify every key of either side."""
    m_infos = model.infos
    result = Alignment(ckpt, model)
    joins: Joins | None = None  # found with the renames, settled once keys are classified
    originals = list(ckpt)
    names = originals
    counted = _count_set(names, m_infos)
    # the set of ``names`` and its score (see _count_set), while they are known
    name_set: set[str] | None = counted[1]
    score = counted[0]
    if score < len(m_infos):
        infos = list(ckpt.values())  # shapes are read only for a sample
        names, result.steps, affected, name_set, unmatched_c, score = _prefix_rounds(
            names, m_infos, infos, counted)
        result.step_keys = [[originals[i] for i in idx] for idx in affected]
        if model.load_hooks.renames and unmatched_c:
            names, name_set, unmatched_c, score = _hook_renames(result, names, unmatched_c)
        tied = model.tied
        unmatched_m = list(filterfalse(name_set.__contains__, m_infos)) if unmatched_c else []
        waiting: list[str] = []  # tied keys whose partner is served
        if tied:  # a tied key whose partner is served is not waiting for a rename
            waiting = [m for m in unmatched_m if m in tied and tied[m] in name_set]
            unmatched_m = [m for m in unmatched_m if not (m in tied and tied[m] in name_set)]
        if unmatched_c and unmatched_m:
            cur_infos: dict[str, TensorInfo]
            if names is originals:  # unrenamed: the entry itself answers for its keys
                cur_infos = ckpt
            else:
                cur_infos = {n: ckpt[o] for n, o in zip(names, originals) if n not in m_infos}
            # known layouts and namings first: the searches below see the rest
            joins = find_joins(unmatched_c, cur_infos, unmatched_m, m_infos)
            if joins:  # neither side is a rename
                unmatched_c, unmatched_m = _without(unmatched_c, unmatched_m,
                                                    joins.checkpoint_names(), joins.model_keys())
            parametrized = find_renames(unmatched_c, cur_infos, unmatched_m, m_infos)
            if parametrized:
                unmatched_c, unmatched_m = _without(
                    unmatched_c, unmatched_m, {r.checkpoint for r in parametrized},
                    {r.model for r in parametrized})
                result.parametrized = parametrized
            families = find_families(unmatched_c, cur_infos, unmatched_m, m_infos)
            if families:  # the rest are paired module by module
                in_c = set(chain.from_iterable(f.c_keys for f in families))
                in_m = set(chain.from_iterable(f.m_keys for f in families))
                unmatched_c = list(filterfalse(in_c.__contains__, unmatched_c))
                unmatched_m = list(filterfalse(in_m.__contains__, unmatched_m))
            cmods = _by_module(unmatched_c)
            module_pairs, key_pairs = (_find_renames(cmods, cur_infos, unmatched_m, m_infos)
                                       if unmatched_c and unmatched_m else ([], []))
            # Before anything is left at its initial value: search what is still unpaired
            # by roles, shapes up to transposes, module order (only the leftovers).
            left_c, left_m = _leftovers(unmatched_c, unmatched_m, cmods, module_pairs,
                                        key_pairs)
            if left_c and left_m:
                more_mods, more_keys = _search_leftovers(left_c, cur_infos, left_m, model,
                                                         cmods)
                module_pairs += more_mods
                key_pairs += more_keys
                result.searched = more_mods + more_keys
            if waiting and left_c:
                def served_by(mk: str) -> TensorInfo | None:
                    try:
                        return ckpt[originals[names.index(mk)]]
                    except ValueError:
                        return None

                paired = {c for c, _ in module_pairs}
                taken = {c for c, _ in key_pairs}
                left = [c for c in left_c if c not in taken and module_of(c) not in paired]
                key_pairs += _tied_copies(waiting, left, cur_infos, served_by, model)
            if families or module_pairs or key_pairs or parametrized:
                step, mapped = _rename_step(families, module_pairs, key_pairs, cmods, names,
                                            parametrized)
                result.families = families
                result.rename_pairs = [(r.checkpoint, r.model) for r in parametrized]
                result.rename_pairs += module_pairs + key_pairs
                result.rename_lines = [line for f in families for line in f.lines()]
                result.rename_lines += rename_lines(result.rename_pairs)
                result.by_order = [line for f in families if f.by_order for line in f.lines()]
                result.by_order += rename_lines(_order_only(module_pairs, cmods, cur_infos))
                result.step_keys.append(list(compress(originals, map(ne, names, mapped))))
                names = mapped
                name_set = None
                result.steps.append(step)
    # names[i] is where ckpt key originals[i] lands in the model's namespace.
    landing: dict[str, str]
    # no collisions (a dict's own keys are distinct): comprehensions are faster
    distinct = len(name_set if name_set is not None else set(names)) == len(names)
    if distinct:
        # distinct names that serve every model key and are as many: all are model keys
        every = (name_set is not None and score == len(m_infos)
                 and len(names) == len(m_infos))
        if every and names == list(m_infos):
            # the file keeps the model's order: each key lands on the model key at its
            # own place (no dict of where each lands, no lookup per key)
            _classify(result, None, originals)
            _unflag_hook_renames(result)
            return result
        known = [] if every else list(map(m_infos.__contains__, names))
        if every or all(known):
            landing = dict(zip(names, originals))
        else:
            landing = dict(compress(zip(names, originals), known))
            lost = list(map(not_, known))
            result.unexpected = list(compress(originals, lost))
            result.unexpected_mapped = dict(zip(result.unexpected, compress(names, lost)))
    else:
        result.collisions = True
        landing = {}
        for orig, name in zip(originals, names):
            if name in m_infos and name not in landing:
                landing[name] = orig
            else:
                result.unexpected.append(orig)
                result.unexpected_mapped[orig] = name
    _classify(result, landing)
    _unflag_hook_renames(result)
    if joins:
        _settle_joins(result, joins)
    return result


def _tied_copies(waiting: list[str], left_c: list[str], c_infos: dict[str, TensorInfo],
                 served_by: Callable[[str], TensorInfo | None],
                 model: ModelSide) -> list[tuple[str, str]]:
    """(checkpoint key, model key) for model keys tied to a served partner (``head``
    shares ``tok_emb``'s weight) and a leftover checkpoint key of the same role that
    shares storage with the tensor serving that partner (GPT-2 saves lm_head and wte as
    one tensor): the file ties them as the model does, so the head loads from its own
    name. ``served_by(model key)`` is the checkpoint tensor serving it."""
    out: list[tuple[str, str]] = []
    taken: set[str] = set()
    m_infos = model.infos
    for mk in waiting:
        role = _role(module_of(mk))
        if role is None:
            continue
        serving = served_by(model.tied[mk])
        if serving is None:
            continue
        for ck in left_c:
            if (ck not in taken and _role(module_of(ck)) == role
                    and c_infos[ck].shape == m_infos[mk].shape
                    and _same_storage(c_infos[ck], serving)):
                out.append((ck, mk))
                taken.add(ck)
                break
    return out


def _same_storage(a: TensorInfo, b: TensorInfo) -> bool:
    """Whether two stored tensors are one: the same view of the same storage (a torch
    file's storage record, or the same tensor in memory)."""
    sa, sb = a.source, b.source
    if sa is None or sb is None:
        return False
    if sa is sb:
        return True
    ta, tb = getattr(sa, "tensor", None), getattr(sb, "tensor", None)
    if ta is not None and tb is not None:
        try:
            return (ta.data_ptr() == tb.data_ptr() and ta.shape == tb.shape
                    and ta.stride() == tb.stride() and ta.dtype == tb.dtype)
        except (AttributeError, RuntimeError):
            return False
    ra, rb = getattr(sa, "storage", None), getattr(sb, "storage", None)
    if ra is None or rb is None:
        return False
    return (getattr(ra, "key", None) == getattr(rb, "key", None)
            and getattr(sa, "offset", None) == getattr(sb, "offset", None)
            and getattr(sa, "size", None) == getattr(sb, "size", None)
            and getattr(sa, "stride", None) == getattr(sb, "stride", None))


def _leftovers(unmatched_c: list[str], unmatched_m: list[str], cmods: dict[str, list[str]],
               module_pairs: list[tuple[str, str]], key_pairs: list[tuple[str, str]]
               ) -> tuple[list[str], list[str]]:
    """Both sides' keys that the renames found so far leave unpaired."""
    if not module_pairs and not key_pairs:
        return unmatched_c, unmatched_m
    done_c = {k for cmod, _ in module_pairs for k in cmods[cmod]}
    done_c.update(c for c, _ in key_pairs)
    done_m = {m for _, m in key_pairs}
    m_mods = {mmod for _, mmod in module_pairs}
    return ([c for c in unmatched_c if c not in done_c],
            [m for m in unmatched_m if m not in done_m and m.rpartition(".")[0] not in m_mods])


def _without(unmatched_c: list[str], unmatched_m: list[str], found_c: set[str],
             found_m: set[str]) -> tuple[list[str], list[str]]:
    """Both sides' unmatched keys, less those a search has explained."""
    return ([c for c in unmatched_c if c not in found_c],
            [m for m in unmatched_m if m not in found_m])


def _made(like: TensorInfo, shape: tuple[int, ...]) -> TensorInfo:
    """A tensor a fix makes from stored ones: their dtype and device, this shape."""
    count = 1
    for n in shape:
        count *= n
    size = like.nbytes // max(1, like.numel)
    return TensorInfo(tuple(shape), like.dtype, like.device, count * size, like.layout)


def _settle_joins(result: Alignment, joins: Joins) -> None:
    """Neither side of a fold, fusion or split stays missing or unexpected; each model key
    it serves reads "renamed" (a fix gives it its value), with a note saying how."""
    file_key = {mapped: k for k, mapped in result.unexpected_mapped.items()}
    status, missing = result.status, set(result.missing)

    def ready(names: list[str], served: list[str]) -> bool:
        return all(n in file_key for n in names) and all(m in missing for m in served)

    result.folds = [f for f in joins.folds if ready([f[0], f[1]], [f[2]])]
    result.fused = [f for f in joins.fused if ready(list(f[0]), [f[1]])]
    result.split = [f for f in joins.split if ready([f[0]], [t for t, _ in f[1]])]
    result.unfolds = [f for f in joins.unfolds if ready([f[0]], [f[1], f[2]])]
    result.lora = [m for m in joins.lora if ready(m.checkpoint_names(), m.model_keys())]
    result.masks = [f for f in joins.masks if ready([f[0], f[1]], [f[2]])]
    notes: dict[str, str] = {}
    stored = {mapped: result.ckpt[k] for mapped, k in file_key.items()}
    given = result.joined
    for w, g, v, g_shape in result.unfolds:
        notes[g] = f"magnitude of {file_key[w]} (weight norm)"
        notes[v] = f"direction: {file_key[w]} (weight norm)"
        given[g] = _made(stored[w], g_shape)
        given[v] = stored[w]
    for g, v, mk in result.folds:
        notes[mk] = f"folded from {file_key[g]} and {file_key[v]} (weight norm)"
        given[mk] = stored[v]
    for parts, mk in result.fused:
        notes[mk] = "concatenated from " + ", ".join(file_key[p] for p in parts)
        first = stored[parts[0]]
        rows = sum(stored[p].shape[0] for p in parts)
        given[mk] = _made(first, (rows, *first.shape[1:]))
    for source, targets in result.split:
        start = 0
        whole = stored[source]
        for mk, rows in targets:
            notes[mk] = f"rows {start}:{start + rows} of {file_key[source]}"
            given[mk] = _made(whole, (rows, *whole.shape[1:]))
            start += rows
    for module in result.lora:
        notes.update(module.notes(file_key))
        given.update(module.given(stored))
    for orig, mask, mk in result.masks:
        notes[mk] = f"folded from {file_key[orig]} * {file_key[mask]} (pruned)"
        given[mk] = stored[orig]
    settled = Joins(result.folds, result.fused, result.split, result.unfolds, result.lora,
                    result.masks)
    gone = {file_key[k] for k in settled.checkpoint_names()}
    result.unexpected = [k for k in result.unexpected if k not in gone]
    for k in gone:
        del result.unexpected_mapped[k]
    result.missing = [k for k in result.missing if k not in notes]
    for mk, note in notes.items():
        status[mk] = "renamed"
        result.notes[mk] = note


def _hook_renames(result: Alignment, names: list[str], unmatched_c: list[str]
                  ) -> tuple[list[str], set[str], list[str], int]:
    """Names after the model's own load hooks (which run inside ``load_state_dict``, after
    every fix): the names, their set, the unmatched ones and the score."""
    m_infos = result.model.infos
    moved = renamed_names(unmatched_c, result.model.load_hooks.renames)
    moved = {old: new for old, new in moved.items() if new in m_infos}
    if moved:
        result.hook_renamed = {new: old for old, new in moved.items()}
        names = [moved.get(n, n) for n in names]
        unmatched_c = [n for n in unmatched_c if n not in moved]
    score, name_set = _count_set(names, m_infos)
    return names, name_set, unmatched_c, score


def _unflag_hook_renames(result: Alignment) -> None:
    """A key only the model's load hook renames loads as is: not "renamed" (no fix)."""
    status, pairs = result.status, result.pairs
    for mk, before in result.hook_renamed.items():
        if status.get(mk) == "renamed" and pairs.get(mk) == before:
            status[mk] = "dtype-differs" if mk in result.dtype_differs else "match"
            result.notes[mk] = _join(f"the model's weight_norm load hook reads {before}",
                                     result.notes.get(mk))


def _classify(result: Alignment, landing: dict[str, str] | None,
              in_order: list[str] | None = None) -> None:
    """Status, note and reason of every model key. The common rows (same shape, same
    dtype) are found with C-level passes over columns; only the others take the
    per-key path. ``landing`` maps model keys to the checkpoint keys that land on them;
    None when ``in_order`` lists those checkpoint keys in model order, one for each."""
    ckpt, model = result.ckpt, result.model
    m_infos = model.infos
    tied = model.tied
    tied_rev: dict[str, list[str]] = {}
    for k, v in tied.items():
        tied_rev.setdefault(v, []).append(k)
    # notes say what is wrong; the table adds "from <checkpoint key>" to renamed rows
    notes = result.notes
    mkeys = list(m_infos)
    cks = in_order if landing is None else list(map(landing.get, mkeys))
    renamed_mask = list(map(ne, cks, mkeys))  # a missing key (None) counts as renamed
    # every key starts as the commoner of "match" and "renamed"; the others are set below
    mostly_renamed = sum(renamed_mask) * 2 > len(mkeys)
    status = result.status = dict.fromkeys(mkeys, "renamed" if mostly_renamed else "match")
    if mostly_renamed:
        status.update(zip(compress(mkeys, map(not_, renamed_mask)), repeat("match")))
    else:
        status.update(zip(compress(mkeys, renamed_mask), repeat("renamed")))
    if landing is not None and len(landing) < len(mkeys):  # some model keys are not served
        for i in compress(range(len(mkeys)), map(is_, cks, repeat(None))):
            mk = mkeys[i]
            partners = [tied[mk]] if mk in tied else tied_rev.get(mk, [])
            served = next((p for p in partners if p in landing), None)
            result.missing.append(mk)
            status[mk] = "missing"
            if served is not None:
                result.tied_served[mk] = served
                notes[mk] = f"tied to {served}: receives its value"
            else:
                notes[mk] = "not in the checkpoint: keeps its initial value"
        served_idx = [i for i, c in enumerate(cks) if c is not None]
        s_mkeys = [mkeys[i] for i in served_idx]
        s_cks = [cks[i] for i in served_idx]
        minfos = list(map(m_infos.__getitem__, s_mkeys))
    else:
        s_mkeys, s_cks = mkeys, cks
        minfos = list(m_infos.values())
    result.pairs = dict(zip(s_mkeys, s_cks))
    cinfos = list(map(ckpt.__getitem__, s_cks))
    # shapes and dtypes compared in one pass; the few keys that differ are sorted below
    odd = list(compress(range(len(s_mkeys)), map(ne, map(_META, cinfos), map(_META, minfos))))
    differ_idx = [i for i in odd if not _loads_into(cinfos[i], minfos[i])]
    differ = set(differ_idx)
    for i in odd:
        if i in differ:
            continue
        mk = s_mkeys[i]
        if minfos[i].layout == "lazy":
            notes[mk] = "lazy: the model takes the checkpoint's shape when it loads"
        if cinfos[i].dtype == minfos[i].dtype:  # a shape torch accepts as it is
            continue
        result.dtype_differs.append(mk)
        status[mk] = "renamed" if s_cks[i] != mk else "dtype-differs"
        notes[mk] = f"stored as {cinfos[i].dtype}, model uses {minfos[i].dtype}"
    heads: HeadModules | None = None  # made on the first shape mismatch
    # (stored shape, model shape) -> the note of a transpose, or "" when it is not one:
    # repeated layers share their shapes, so each pair is judged once
    shape_pairs = [(cinfos[i].shape, minfos[i].shape) for i in differ_idx]
    verdicts = {(cs, ms): (f"stored as {shape_text(cs)}, model expects {shape_text(ms)}"
                           if len(cs) == 2 and cs == ms[::-1] else "")
                for cs, ms in dict.fromkeys(shape_pairs)}
    t_notes = list(map(verdicts.__getitem__, shape_pairs))
    t_keys = list(map(s_mkeys.__getitem__, compress(differ_idx, t_notes)))
    t_notes = list(filter(None, t_notes))
    for i in compress(differ_idx, map(not_, map(verdicts.__getitem__, shape_pairs))):
        mk = s_mkeys[i]
        cs, ms = cinfos[i].shape, minfos[i].shape
        if heads is None:
            heads = HeadModules(model)
        reason = mismatch_reason(mk, cs, ms, heads, tied_vocab=mk in tied or mk in tied_rev)
        result.mismatched.append(mk)
        result.reasons[mk] = reason
        status[mk] = "shape-mismatch"
        notes[mk] = (f"{REASON_NOTES[reason]}: {shape_text(cs)} in the file, "
                     f"{shape_text(ms)} in the model")
    transposed = result.transposed
    transposed.extend(t_keys)
    status.update(zip(t_keys, repeat("transposed")))
    notes.update(zip(t_keys, t_notes))
    # served 2-D keys of the model's shape: the votes for square transposes
    same_2d: list[str] = []
    if transposed:
        mshapes = list(map(_SHAPE, minfos))
        two_d = compress(range(len(mshapes)), map(eq, map(len, mshapes), repeat(2)))
        same_2d = list(map(s_mkeys.__getitem__, sorted(set(two_d) - differ)))
    # Square weights cannot show a transpose by shape: follow their own family.
    square: list[str] = []
    if result.transposed:
        flat2d: list[str] = []
        for mk in same_2d:
            cs = m_infos[mk].shape
            if cs[0] == cs[1] and cs[0] > 1:
                square.append(mk)
            else:
                flat2d.append(mk)
        if square:  # only they need the families' votes
            square, unknown = _square_transposed(model, result.pairs, flat2d,
                                                 result.transposed, square)
            result.orientation_unknown = unknown
            for mk in unknown:
                notes[mk] = _join("square: nothing tells whether it is stored transposed "
                                  "like other weights of the file; left out of the plan",
                                  notes.get(mk))
    for mk in square:
        result.transposed.append(mk)
        result.square_transposed.append(mk)
        result.status[mk] = "transposed"
        result.notes[mk] = _join("square; transposed like its siblings", result.notes.get(mk))
    if result.square_transposed:
        order = {k: i for i, k in enumerate(m_infos)}
        result.transposed.sort(key=order.__getitem__)
    if result.transposed:
        gone = set(result.transposed)
        result.dtype_differs = [k for k in result.dtype_differs if k not in gone]
    # Same-module siblings of a head or vocabulary mismatch share its reason.
    by_mod = {module_of(k): r for k, r in result.reasons.items() if r in ("head", "vocab")}
    for k in result.mismatched:
        if result.reasons[k] == "config" and module_of(k) in by_mod:
            result.reasons[k] = by_mod[module_of(k)]
            result.notes[k] = result.notes[k].replace(REASON_NOTES["config"],
                                                      REASON_NOTES[result.reasons[k]])


REASON_NOTES = {
    "zero-size": "empty in the file (a ZeRO-3 partition?)",
    "reshape": "same values, other size-1 dimensions",
    "positions": "positions for another image size or sequence length",
    "head": "output head changed",
    "vocab": "vocabulary resized",
    "kernel": "kernel size differs",
    "config": "different configuration",
}


NEVER_TRANSPOSED = ("Embedding", "Norm")  # module types never stored transposed
NEVER_HINTS = ("embed", "wte", "wpe", "norm", "ln_", "layernorm")  # the same, by name


def _file_family(key: str) -> tuple[str, str]:
    """A checkpoint tensor's layer family: its module's own name and its leaf (every
    ``c_proj.weight`` of GPT-2, attention's and the MLP's alike); a numbered module
    (``features.3``) stands for its container's."""
    mod, _, leaf = key.rpartition(".")
    name = mod.rpartition(".")[2]
    if not name or name.isdigit():
        name = template_only(mod)
    return name, leaf


def _square_transposed(model: ModelSide, pairs: dict[str, str], flat2d: list[str],
                       transposed: list[str], square: list[str]
                       ) -> tuple[list[str], list[str]]:
    """(square weights stored transposed, square weights whose orientation nothing tells),
    in a checkpoint that stores some other weights transposed.

    A square weight's shape cannot show a transpose, so it follows evidence, first found
    first: its layer family in the file (``_file_family``: GPT-2's square attn.c_proj
    goes with the MLP's c_proj, which its shape shows transposed); its naming pattern in
    the model; the file's Conv1D layers (c_attn, c_fc, c_proj: stored (in, out)) when the
    model's module is known to be another type; and, to load it as it is, most weights of
    its module type loading as they are. With none of these, its orientation is unknown:
    the caller keeps it out of the plan rather than load it silently transposed or not.
    Embeddings and norms are never transposed: a square ``nn.Embedding(32, 32)`` next to
    transposed Conv1D-style weights keeps its layout.
    """
    owners = dict(zip(model.module_names, map(type, model.module_objects)))
    by_family: dict[tuple[str, str], list[int]] = {}
    by_name: dict[str, list[int]] = {}
    by_type: dict[tuple[type, str], list[int]] = {}
    conv1d = [0, 0]
    for vote, keys in ((0, flat2d), (1, transposed)):
        for k in keys:
            family = _file_family(pairs.get(k, k))
            by_family.setdefault(family, [0, 0])[vote] += 1
            if family[0] in CONV1D_NAMES:
                conv1d[vote] += 1
            by_name.setdefault(template_only(k), [0, 0])[vote] += 1
            owner = owners.get(module_of(k))
            if owner is not None:
                by_type.setdefault((owner, leaf_of(k)), [0, 0])[vote] += 1
    out: list[str] = []
    unknown: list[str] = []
    for k in square:
        owner = owners.get(module_of(k))
        if owner is not None:
            if any(word in owner.__name__ for word in NEVER_TRANSPOSED):
                continue
        elif any(hint in k.lower() for hint in NEVER_HINTS):
            continue
        family = _file_family(pairs.get(k, k))
        verdict = _verdict(by_family.get(family))
        if verdict is None:
            verdict = _verdict(by_name.get(template_only(k)))
        if (verdict is None and family[0] in CONV1D_NAMES and owner is not None
                and owner.__name__ != "Conv1D"):
            verdict = _verdict(conv1d)
        if verdict is not None:
            if verdict:
                out.append(k)
            continue
        if owner is None or _verdict(by_type.get((owner, leaf_of(k)))) is not False:
            unknown.append(k)
    return out, unknown


def _verdict(votes: list[int] | None) -> bool | None:
    """[as is, transposed] votes -> True (transposed), False (as is), None (no majority)."""
    if not votes or votes[0] == votes[1]:
        return None
    return votes[1] > votes[0]


def _join(a: str, b: str | None) -> str:
    return f"{a}; {b}" if b else a
