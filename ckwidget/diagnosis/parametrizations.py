"""The two namings of torch's weight norm and spectral norm: the same tensors, other names.

``torch.nn.utils.weight_norm`` / ``spectral_norm`` (old) store ``weight_g``/``weight_v`` and
``weight_orig``/``weight_u``/``weight_v``; ``torch.nn.utils.parametrizations.weight_norm``
/ ``spectral_norm`` (new) store ``parametrizations.weight.original0/1`` and
``parametrizations.weight.original``/``.0._u``/``.0._v``. A file of one naming for a
model of the other is a rename, all of a module's names at once or none (``weight_v``
alone means one thing under weight norm and another under spectral norm). Old weight-norm
names for a new model need no rename: the model's own load hook does it
(``ckwidget.loadhooks``), and so they never reach this search.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..checkpoint import TensorInfo

# family -> (old template, new template) per tensor; {n} is the parametrized tensor's name
FAMILIES: dict[str, tuple[tuple[str, str], ...]] = {
    "weight_norm": (("{n}_g", "parametrizations.{n}.original0"),
                    ("{n}_v", "parametrizations.{n}.original1")),
    "spectral_norm": (("{n}_orig", "parametrizations.{n}.original"),
                      ("{n}_u", "parametrizations.{n}.0._u"),
                      ("{n}_v", "parametrizations.{n}.0._v")),
}
_ENDINGS = ("_g", "_v", "_orig", "_u")


def _regex(template: str) -> str:
    """A template as a regular expression whose one group is {n}, at a name's start or
    after a dot, to the end of the key."""
    head, _, tail = template.partition("{n}")
    return r"(?<![^.])" + re.escape(head) + r"([^.]+)" + re.escape(tail) + "$"


@dataclass(frozen=True)
class Renamed:
    """A checkpoint key renamed to a model key, from one naming to the other."""

    checkpoint: str
    model: str
    family: str  # "weight_norm" | "spectral_norm"
    to_old: bool  # new names in the file, old ones in the model


def _matches() -> list[tuple[str, bool, re.Pattern[str], tuple[tuple[str, str], ...]]]:
    out = []
    for family, pairs in FAMILIES.items():
        for to_old in (True, False):
            if family == "weight_norm" and not to_old:
                continue  # the model's load hook renames these (loadhooks.py)
            target = pairs[0][0] if to_old else pairs[0][1]
            out.append((family, to_old, re.compile(r"(.*?)" + _regex(target)[9:]), pairs))
    return out


_MATCHES = _matches()


def find_renames(unmatched_c: list[str], c_infos: dict[str, TensorInfo],
                 unmatched_m: list[str], m_infos: dict[str, TensorInfo]) -> list[Renamed]:
    """Every module whose parametrized tensor is stored under the other naming: all its
    tensors present on both sides, with equal shapes."""
    c_set = set(unmatched_c)
    m_set = set(unmatched_m)
    out: list[Renamed] = []
    for mk in unmatched_m:
        if "parametrizations." not in mk and not mk.endswith(_ENDINGS):
            continue
        for family, to_old, rx, pairs in _MATCHES:
            m = rx.fullmatch(mk)
            if m is None:
                continue
            pre, n = m.group(1), m.group(2)
            names = [(pre + new.format(n=n), pre + old.format(n=n)) if to_old
                     else (pre + old.format(n=n), pre + new.format(n=n)) for old, new in pairs]
            if all(c in c_set and t in m_set and c_infos[c].shape == m_infos[t].shape
                   for c, t in names):
                out += [Renamed(c, t, family, to_old) for c, t in names]
                c_set.difference_update(c for c, _ in names)
                m_set.difference_update(t for _, t in names)
                break
    return out


def rename_patterns(renamed: list[Renamed]) -> list[tuple[str, str]]:
    """``re.sub`` patterns doing these renames for every module of the model at once
    (the rename step checks that they touch no other key, or lists the pairs instead)."""
    out: list[tuple[str, str]] = []
    for family, pairs in FAMILIES.items():
        for to_old in (True, False):
            if not any(r.family == family and r.to_old == to_old for r in renamed):
                continue
            for old, new in pairs:
                source, target = (new, old) if to_old else (old, new)
                out.append((_regex(source), target.replace("{n}", r"\1")))
    return out


def describe(renamed: list[Renamed]) -> str:
    """A sentence naming the two APIs behind these renames."""
    lines = []
    for family in FAMILIES:
        for to_old in (True, False):
            if any(r.family == family and r.to_old == to_old for r in renamed):
                new = f"torch.nn.utils.parametrizations.{family}"
                old = f"the older torch.nn.utils.{family}"
                saved, uses = (new, old) if to_old else (old, new)
                lines.append(f"The file was saved with {saved} and the model uses {uses}: "
                             "the same tensors under other names.")
    return " ".join(lines)
