"""Key-mapping fixes stay linear at 100,000 keys, and their fast paths equal re.sub."""

from __future__ import annotations

import re

import pytest

from ckwidget.checkpoint import TensorInfo
from ckwidget.fixes import RenameKeys, Transpose
from ckwidget.rules import renamer

KEYS = [
    "blocks.0.ffn.weight", "blocks.12.ffn.bias", "blocks.3.attn.weight", "h.0.mlp.c_fc.weight",
    "h.10.mlp.c_fc.bias", "module.h.1.x", "hh.1.x", "h", "h.", "blocks..ffn.w", "blocks.ffn.1",
    "blocks.1.ffn", "blocks.1.ffn.", "blocks.1x.ffn.w", "blocks.٣.ffn.w", "a.b.c", "",
    "module.module.fc.weight", "fc.weight",
]
PATTERNS = [
    (r"^blocks\.(\d+)\.ffn\.", r"blocks.\g<1>.mlp."),
    (r"^h\.", "transformer.h."),
    (r"^module\.", ""),
    (r"^h\.(\d+)\.mlp\.c_fc\.", r"layers.\1.fc1."),
    (r"^(?!(?:fc|h)(?:\.|$))", "model."),
    (r"^blocks\.(\d+)", r"b\1"),
    (r"\.weight$", ".w"),
    (r"^h\.|^module\.", "x."),
    (r"^a.b", "z"),
    (r"^h\\\.", "q"),
]


@pytest.mark.parametrize("pattern,replacement", PATTERNS)
def test_renamer_equals_re_sub(pattern, replacement):
    fn = renamer((), ((pattern, replacement),))
    assert [fn(k) for k in KEYS] == [re.sub(pattern, replacement, k) for k in KEYS]


def test_renamer_exact_pairs_first_then_patterns_in_order():
    fn = renamer((("h.0.x", "kept"),), tuple(PATTERNS[:3]))
    for k in [*KEYS, "h.0.x"]:
        expected = "kept" if k == "h.0.x" else k
        if k != "h.0.x":
            for p, r in PATTERNS[:3]:
                expected = re.sub(p, r, expected)
        assert fn(k) == expected


def test_rename_problems_are_linear_in_the_mapping():
    n = 20_000
    fix = RenameKeys(mapping=tuple((f"a.{i}.w", f"b.{i}.w") for i in range(n)))
    entries = {f"a.{i}.w": None for i in range(n)}
    assert fix.problems(entries, {}) == []  # rebuilt its dict per key before: minutes


def test_transpose_preview_builds_infos_directly():
    infos = {f"l.{i}.weight": TensorInfo((3, 5), "float32", "cpu", 60) for i in range(50_000)}
    out = Transpose(tuple(infos)).transform(infos, {})
    assert out["l.7.weight"] == TensorInfo((5, 3), "float32", "cpu", 60)
