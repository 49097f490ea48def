"""Key arithmetic of alignment: which module a key belongs to, its leaf name.

Templates (layer numbers taken out) live in :mod:`ckwidget.keytemplates`, the folded
display of many keys in :mod:`ckwidget.formatting`.
"""

from __future__ import annotations

import re

# Hugging Face's Conv1D layers (GPT-2 and its kin): their weights are stored (in, out),
# the transpose of nn.Linear's (out, in)
CONV1D_NAMES = frozenset({"c_attn", "q_attn", "c_proj", "c_fc"})

# Attention projections by the names libraries give them: two equally shaped square
# projections renamed (k_proj, q_proj -> query, key) pair by these, never crosswise
_PROJECTIONS = {
    "query": ("q", "wq", "q_proj", "query", "q_lin", "to_q", "query_proj", "q_linear"),
    "key": ("k", "wk", "k_proj", "key", "k_lin", "to_k", "key_proj", "k_linear"),
    "value": ("v", "wv", "v_proj", "value", "v_lin", "to_v", "value_proj", "v_linear"),
    "attention output": ("wo", "o_proj", "out_proj", "o_lin", "out_lin", "o_linear"),
}
PROJECTION_ROLES = {name: role for role, names in _PROJECTIONS.items() for name in names}


def projection_role(module: str) -> str | None:
    """"query", "key", "value" or "attention output" when the last component of a
    module's name says so (``layers.3.attn.k_proj`` -> "key"), else None."""
    return PROJECTION_ROLES.get(module.rpartition(".")[2].lower())


def module_of(key: str) -> str:
    """"h.0.attn.weight" -> "h.0.attn"; a top-level key belongs to the root module ""."""
    return key.rpartition(".")[0]


def leaf_of(key: str) -> str:
    return key.rpartition(".")[2]


def escape_replacement(text: str) -> str:
    """``text`` as a literal inside a ``re.sub`` replacement string."""
    return text.replace("\\", "\\\\")


_TRAILING_NUMBER = re.compile(r"[A-Za-z_](\d+)$")


def same_number(a: str, b: str) -> bool:
    """Whether the last components of two module names end in the same number after a
    name (``norm1`` and ``ln1``, ``ln_2`` and ``norm2``): evidence that a pairing made by
    order is the intended one. Never evidence against one (``layer1`` may be ``stage0``)."""
    x = _TRAILING_NUMBER.search(a.rpartition(".")[2])
    y = _TRAILING_NUMBER.search(b.rpartition(".")[2])
    return x is not None and y is not None and int(x.group(1)) == int(y.group(1))
