"""Limits every reader keeps, so a hostile file cannot take unbounded time or memory."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Budgets:
    """Resource limits for opening one checkpoint. Defaults fit real checkpoints
    of 100,000+ tensors while keeping a hostile file within seconds and a few
    hundred MB."""

    max_pickle_bytes: int = 512 << 20      # one pickle stream (data.pkl)
    max_ops: int = 50_000_000              # pickle opcodes executed
    max_mark_depth: int = 10_000           # nested MARKs (containers being built)
    max_stack: int = 5_000_000             # values on the pickle stack
    max_memo: int = 10_000_000             # memo entries
    max_string: int = 64 << 20             # one string or bytes value
    max_visits: int = 5_000_000            # nodes visited when interpreting the tree
    max_depth: int = 1_000                 # nesting of containers when interpreting
    max_entries: int = 2_000_000           # records in an archive
    max_small_record: int = 1 << 20        # version, byteorder and similar records
    max_ratio: float = 200.0               # compression ratio of a compressed record
    max_json: int = 100 << 20              # JSON headers (safetensors, index files)
    max_seconds: float = 20.0              # wall time for one parse
    max_files: int = 100_000               # files looked at in a folder


DEFAULT_BUDGETS = Budgets()
