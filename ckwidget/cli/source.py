"""The checkpoint a command names: its path or URL, --storage-option, opening it,
--verify (with a progress line), and the one sentence for a file nothing can describe."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, TextIO

from ..formatting import size_text
from .exit_codes import BAD_FILE, UsageError
from .format import clean


def existing(path: str) -> Path | str:
    """The checkpoint path (a URL stays a string: it is read where it lives)."""
    from ..readers import is_url

    if is_url(path):
        return path
    p = Path(path).expanduser()
    if not p.exists():
        raise UsageError(f"There is no file or folder at {path!r}.")
    return p


def storage_options(args: argparse.Namespace) -> dict[str, Any] | None:
    """``--storage-option KEY=VALUE`` (repeatable): fsspec options for a URL; a VALUE
    that reads as JSON (true, 3, {"region_name": "x"}) is taken as such."""
    options: dict[str, Any] = {}
    for item in getattr(args, "storage_option", None) or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--storage-option takes KEY=VALUE, not {item!r}.")
        try:
            options[key.strip()] = json.loads(value)
        except ValueError:
            options[key.strip()] = value
    return options or None


def open_path(args: argparse.Namespace, path: Path | str) -> Any:
    """The Checkpoint at ``path``, verified first with --verify."""
    from ..readers import open_checkpoint

    ckpt = open_checkpoint(path, storage_options(args))
    if args.verify:
        verify(ckpt)
    return ckpt


def code_path(args: argparse.Namespace) -> str | None:
    """The path the generated code names: the plan's own for a URL (its checkpoint knows
    how to read it), else the path as typed."""
    from ..readers import is_url

    return None if is_url(args.path) else args.path


def unreadable(args: argparse.Namespace, path: Path | str, exc: Exception) -> int:
    """Nothing at all could be described: one sentence, exit 3 (a JSON document with --json)."""
    if getattr(args, "json", False):
        print(json.dumps({"path": str(path), "state": "broken", "error": str(exc)}, indent=2))
    print(f"ckwidget: {clean(exc)}", file=sys.stderr)
    return BAD_FILE


def verify(ckpt: Any) -> None:
    """``--verify``: read every byte (CRCs of a zip archive, safetensors ranges) and add
    what does not match to the file's findings; a progress line when stderr is a terminal."""
    from ..checkpoint import sort_findings
    from ..readers.verify import unreported

    progress = Progress(sys.stderr, ckpt.path.name) if is_tty(sys.stderr) else None
    try:
        found = ckpt.verify(progress)
    finally:
        if progress is not None:
            progress.close()
    ckpt.findings = sort_findings([*ckpt.findings, *unreported(found, ckpt.findings)])


def is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class Progress:
    """One stderr line, rewritten whenever the whole percentage changes."""

    def __init__(self, stream: TextIO, name: str) -> None:
        self.stream = stream
        self.name = clean(name)
        self.shown = -1

    def __call__(self, done: int, total: int) -> None:
        percent = 100 * done // total if total else 100
        if percent != self.shown:
            self.shown = percent
            self.stream.write(f"\rckwidget: verifying {self.name}: {percent:3d}% of "
                              f"{size_text(total)}")
            self.stream.flush()

    def close(self) -> None:
        if self.shown >= 0:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
