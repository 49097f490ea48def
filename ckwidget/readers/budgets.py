"""Limits every reader keeps, so a hostile file cannot take unbounded time or memory."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Budgets:
    """Resource limits for opening one checkpoint, all counted in deterministic units
    (bytes, opcodes, entries, depth), so a file gets the same answer on a busy machine as
    on a quiet one. Defaults fit real checkpoints of 10 million tensors; a hostile stream
    costs no more than a real file of its size. ``max_cpu_seconds`` is only a
    far backstop against ckwidget's own bugs, and a result cut by it says so."""

    max_pickle_bytes: int = 2 << 30        # one pickle stream (data.pkl: ~110 B a tensor)
    max_ops: int = 2_000_000_000           # pickle opcodes executed (at most one a byte)
    max_mark_depth: int = 10_000           # nested MARKs (containers being built)
    max_stack: int = 5_000_000             # values on the pickle stack
    max_memo: int = 50_000_000             # memo entries (about 4 a tensor)
    max_string: int = 64 << 20             # one string or bytes value
    max_visits: int = 50_000_000           # nodes visited when interpreting the tree
    max_depth: int = 1_000                 # nesting of containers when interpreting
    max_entries: int = 20_000_000          # records in an archive
    max_small_record: int = 1 << 20        # version, byteorder and similar records
    max_ratio: float = 200.0               # compression ratio of a compressed record
    max_json: int = 100 << 20              # JSON headers (safetensors, index files)
    max_cpu_seconds: float = 600.0         # backstop only: CPU time of one parse
    max_files: int = 100_000               # files looked at in a folder


DEFAULT_BUDGETS = Budgets()
