"""Renamed families of repeated modules (``blocks.{i}.mlp`` saved as ``blocks.{i}.ffn``).

Why a pass of its own: a model of 100,000 tensors is mostly repeated layers, and a
rename inside a layer renames every copy. Comparing key templates (numbers replaced by
a slot) pairs a whole family at once, with C-level list comparisons of numbers and
shapes, instead of one signature per module. What does not pair as a family is left to
the per-module pass in ``align``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import compress
from operator import attrgetter

from ..checkpoint import TensorInfo
from ..formatting import fold_template
from ..keytemplates import SLOT, int_rows, templates_text
from .keys import CONV1D_NAMES, escape_replacement, projection_role, same_number

FAMILY = 3  # repeated modules that make a family (blocks.{0..2}.mlp)
_SHAPE = attrgetter("shape")

# module template -> leaf -> (the numbers of each key, the keys)
Groups = dict[str, dict[str, tuple[list[tuple[str, ...]], list[str]]]]


@dataclass
class Family:
    """One family renamed alike: checkpoint keys ``c_keys[i]`` are model keys ``m_keys[i]``."""

    c_module: str  # module template in the checkpoint, "blocks.\x00.ffn"
    m_module: str  # module template in the model, "blocks.\x00.mlp"
    leaves: list[str]
    rows: list[tuple[str, ...]]  # the members' numbers as written, in order
    c_keys: list[str]
    m_keys: list[str]
    by_order: bool = False  # another family fitted as well: the file's order chose

    def pattern(self) -> tuple[str, str]:
        return rename_pattern(self.c_module, self.m_module)

    def lines(self) -> list[str]:
        """"blocks.{0..23}.ffn -> blocks.{0..23}.mlp" (more lines if the numbers are not
        a full grid)."""
        ints = int_rows(self.rows)  # both sides share the members' numbers
        olds = [line for line, _ in fold_template(self.c_module, ints)]
        news = [line for line, _ in fold_template(self.m_module, ints)]
        return [f"{o} -> {n}" for o, n in zip(olds, news)]


def rename_pattern(c_module: str, m_module: str) -> tuple[str, str]:
    """A ``re.sub`` pattern and replacement that rename the keys of every module of one
    template to the other (every ``blocks.{i}.ffn.*`` to ``blocks.{i}.mlp.*``)."""
    rx = "^" + r"(\d+)".join(re.escape(p) for p in c_module.split(SLOT)) + r"\."
    pieces = [escape_replacement(p) for p in m_module.split(SLOT)]
    repl = pieces[0] + "".join(f"\\g<{i + 1}>" + p for i, p in enumerate(pieces[1:]))
    return rx, repl + "."


def find_families(c_keys: list[str], c_infos: dict[str, TensorInfo],
                  m_keys: list[str], m_infos: dict[str, TensorInfo]) -> list[Family]:
    """Families of unmatched checkpoint keys that are families of unmatched model keys
    under another module name: same leaves, same numbers in the same order, same shapes.

    A checkpoint module named as Hugging Face's Conv1D layers (``CONV1D_NAMES``) stores
    its matrices (in, out): renamed to a module of another name (an ``nn.Linear``), it
    pairs first by its shapes transposed. Compared as stored, GPT-2's ``mlp.c_fc``
    (in, 4·in) has the shape of a Linear ``fc2`` and ``mlp.c_proj`` that of ``fc1``: with
    no biases to tell them apart, they would pair crosswise and load the wrong weights.
    Attention projections pair by the role their names give (``k_proj`` is the model's
    ``key``, whatever the order the file holds them in), never across roles."""
    c_groups = _groups(c_keys)
    if not c_groups:
        return []
    m_groups = _groups(m_keys)
    found: list[Family] = []
    taken: set[str] = set()
    contested: set[str] = set()  # checkpoint families another one was chosen over
    for m_module, m_leaves in m_groups.items():
        role = projection_role(m_module)
        candidates = [c for c in c_groups if not _clash(projection_role(c), role)]
        if role is not None:  # a projection named as the model's own pairs first
            candidates.sort(key=lambda c: projection_role(c) != role)
        for as_conv1d in (True, False):
            family = None
            for c_module in candidates:
                c_leaves = c_groups[c_module]
                if c_module in taken or c_leaves.keys() != m_leaves.keys():
                    continue
                if as_conv1d and not (_conv1d(c_module) and not _conv1d(m_module)):
                    continue
                family = _pair(c_module, c_leaves, m_module, m_leaves, c_infos, m_infos,
                               transposed=as_conv1d)
                if family is not None:
                    found.append(family)
                    taken.add(c_module)
                    if projection_role(c_module) is None:
                        rivals = _others_fitting(family, candidates, taken, c_groups,
                                                 m_leaves, c_infos, m_infos, as_conv1d)
                        family.by_order = bool(rivals)
                        contested.update(rivals)
                    break
            if family is not None:
                break
    for family in found:  # a rival passed over is paired by the same guess
        family.by_order = ((family.by_order or family.c_module in contested)
                           and not same_number(family.c_module, family.m_module))
    return found


def _others_fitting(family: Family, candidates: list[str], taken: set[str],
                    c_groups: Groups,
                    m_leaves: dict[str, tuple[list[tuple[str, ...]], list[str]]],
                    c_infos: dict[str, TensorInfo], m_infos: dict[str, TensorInfo],
                    transposed: bool) -> list[str]:
    """The untaken checkpoint families, named otherwise, that would fit the model's family
    as well read the same way (then only the file's order chose between them)."""
    out = []
    for c_module in candidates:
        if c_module in taken or c_groups[c_module].keys() != m_leaves.keys():
            continue
        if _pair(c_module, c_groups[c_module], family.m_module, m_leaves, c_infos, m_infos,
                 transposed=transposed) is not None:
            out.append(c_module)
    return out


def _clash(a: str | None, b: str | None) -> bool:
    """Two projections whose names give them different roles (a key is not a query)."""
    return a is not None and b is not None and a != b


def _conv1d(module: str) -> bool:
    """Whether a module template names a Conv1D layer of Hugging Face's GPT-2 family."""
    return module.rpartition(".")[2] in CONV1D_NAMES


def _groups(keys: list[str]) -> Groups:
    """Keys of repeated modules by module template and leaf (numbers in the leaf itself,
    as in a ParameterList, do not make a module family)."""
    tmpls, ints = templates_text(keys)
    wanted = []  # templates of a repeated module's leaf, each split once
    for tmpl in dict.fromkeys(tmpls):
        module, dot, leaf = tmpl.rpartition(".")
        if dot and SLOT in module and SLOT not in leaf:
            wanted.append((tmpl, module, leaf))
    groups: Groups = {}
    if len(wanted) <= 16:  # a few templates: pick each one's keys with C-level passes
        for tmpl, module, leaf in wanted:
            mask = list(map(tmpl.__eq__, tmpls))
            groups.setdefault(module, {})[leaf] = (list(compress(ints, mask)),
                                                   list(compress(keys, mask)))
        return groups
    where = {tmpl: (module, leaf) for tmpl, module, leaf in wanted}
    for tmpl, nums, key in zip(tmpls, ints, keys):
        place = where.get(tmpl)
        if place is None:
            continue
        leaves = groups.setdefault(place[0], {})
        group = leaves.get(place[1])
        if group is None:
            leaves[place[1]] = ([nums], [key])
        else:
            group[0].append(nums)
            group[1].append(key)
    return groups


def _pair(c_module: str, c_leaves: dict[str, tuple[list[tuple[str, ...]], list[str]]],
          m_module: str, m_leaves: dict[str, tuple[list[tuple[str, ...]], list[str]]],
          c_infos: dict[str, TensorInfo], m_infos: dict[str, TensorInfo],
          transposed: bool = False) -> Family | None:
    """The family, when every member holds every leaf, numbered alike, with the model's
    shapes (the checkpoint's matrices read transposed when ``transposed``)."""
    leaves = list(m_leaves)
    rows = m_leaves[leaves[0]][0]
    if len(set(rows)) < FAMILY or len(set(rows)) != len(rows):
        return None
    c_all: list[str] = []
    m_all: list[str] = []
    for leaf in leaves:
        c_rows, c_keys = c_leaves[leaf]
        m_rows, m_keys = m_leaves[leaf]
        if c_rows != m_rows or c_rows != rows:
            return None  # every member must hold every leaf, numbered alike
        c_shapes = list(map(_SHAPE, map(c_infos.__getitem__, c_keys)))
        if transposed:
            c_shapes = [s[::-1] if len(s) == 2 else s for s in c_shapes]
        if c_shapes != list(map(_SHAPE, map(m_infos.__getitem__, m_keys))):
            return None
        c_all += c_keys
        m_all += m_keys
    return Family(c_module, m_module, leaves, rows, c_all, m_all)
