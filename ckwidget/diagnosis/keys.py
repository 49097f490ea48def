"""Key arithmetic of alignment: which module a key belongs to, its leaf name.

Templates (layer numbers taken out) live in :mod:`ckwidget.keytemplates`, the folded
display of many keys in :mod:`ckwidget.formatting`.
"""

from __future__ import annotations

# Hugging Face's Conv1D layers (GPT-2 and its kin): their weights are stored (in, out),
# the transpose of nn.Linear's (out, in)
CONV1D_NAMES = frozenset({"c_attn", "q_attn", "c_proj", "c_fc"})


def module_of(key: str) -> str:
    """"h.0.attn.weight" -> "h.0.attn"; a top-level key belongs to the root module ""."""
    return key.rpartition(".")[0]


def leaf_of(key: str) -> str:
    return key.rpartition(".")[2]


def escape_replacement(text: str) -> str:
    """``text`` as a literal inside a ``re.sub`` replacement string."""
    return text.replace("\\", "\\\\")
