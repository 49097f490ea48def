"""Files that are not checkpoints at all: empty files, Git LFS pointers, saved HTML pages.

Each becomes a Checkpoint with no tensors and one error Finding that says what the file
really is and what to do to get the real weights.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

from ..checkpoint import Checkpoint, Finding
from .budgets import Budgets
from .sniff import is_tf_data_shard

_LFS_OID = re.compile(rb"^oid sha256:([0-9a-fA-F]{64})\s*$", re.M)
_LFS_SIZE = re.compile(rb"^size (\d{1,20})\s*$", re.M)
_TITLE = re.compile(rb"<title[^>]*>(.*?)</title", re.I | re.S)
_UNSAFE_CHARS = re.compile(r"[\x00-\x1f\x7f<>]")


def read_broken(path: Path, head: bytes, budgets: Budgets, kind: str) -> Checkpoint:
    """Explain an empty file, an LFS pointer, an HTML page or unrecognised bytes."""
    size = path.stat().st_size
    if kind == "unknown" and is_tf_data_shard(path.name):
        from .foreign import read_foreign

        return read_foreign(path, head, budgets, "tf-data")
    if kind == "unknown" and head[8:10] in (b"{}", b'{"'):
        # A safetensors file cut inside its header: the length field points past the end.
        from .safetensors import read_safetensors

        return read_safetensors(path, head, budgets)
    if kind == "empty":
        return _one(path, "empty", size, Finding(
            "not-a-checkpoint", "error",
            f"{path.name} is empty (0 bytes): the download or copy did not finish, or the "
            f"file was created but never written. Download or copy it again.",
        ))
    if kind == "lfs-pointer":
        return _lfs(path, head, size)
    if kind == "html":
        return _html(path, head, size)
    inside = _zip_inside(path)
    if inside:
        return _one(path, "unknown", size, Finding(
            "not-a-checkpoint", "error",
            f"{path.name} holds a zip archive that starts at byte {inside:,}, after "
            f"{inside:,} bytes of something else (a prefix, a header, another file). torch "
            "reads only archives that start at byte 0 (it fails with 'legacy .tar format' "
            "or 'Invalid magic number'). If the prefix is not yours, the file was "
            "tampered with; otherwise cut it off and open the rest.",
            details={"zip_offset": inside},
        ))
    return _one(path, "unknown", size, Finding(
        "not-a-checkpoint", "error",
        f"{path.name} ({size:,} bytes) is not a checkpoint format ckwidget knows: "
        f"{_describe_bytes(head)}. Check that this is the weights file you meant "
        f"(torch.save, safetensors, .npz, or a Hugging Face folder) and that it downloaded "
        f"completely.",
        details={"first_bytes": head[:32].hex()},
    ))


def _zip_inside(path: Path, window: int = 1 << 16) -> int:
    """The offset of a zip local header within the first ``window`` bytes (0: none)."""
    with open(path, "rb") as fh:
        head = fh.read(window)
    return max(head.find(b"PK\x03\x04", 1), 0)


def _one(path: Path, fmt: str, size: int, finding: Finding, **metadata: object) -> Checkpoint:
    return Checkpoint(path, fmt, metadata=dict(metadata), findings=[finding], size=size)


def _lfs(path: Path, head: bytes, size: int) -> Checkpoint:
    oid = _LFS_OID.search(head)
    real = _LFS_SIZE.search(head)
    facts: dict[str, object] = {}
    if oid:
        facts["lfs_oid"] = oid.group(1).decode().lower()
    if real:
        facts["lfs_size"] = int(real.group(1))
    real_text = f"the real file is {int(real.group(1)):,} bytes" if real else "the real file"
    return _one(path, "lfs-pointer", size, Finding(
        "lfs-pointer", "error",
        f"{path.name} is a {size}-byte Git LFS pointer, not the weights: {real_text} "
        f"and was never downloaded. Run `git lfs install && git lfs pull` in the "
        f"repository (or `git lfs pull --include={path.name}`), or download the file "
        f"directly (for Hugging Face: huggingface_hub.hf_hub_download).",
        details=dict(facts),
    ), **facts)


def _html(path: Path, head: bytes, size: int) -> Checkpoint:
    match = _TITLE.search(head)
    title = clean_text(match.group(1).decode("utf-8", "replace")) if match else ""
    lowered = head.lower()
    hint = (
        "Use the direct download link (on Hugging Face, /resolve/ instead of /blob/ in "
        "the URL), or huggingface_hub.hf_hub_download / from_pretrained"
    )
    if b"drive.google" in lowered or b"google drive" in lowered:
        hint = (
            "Google Drive returned its warning or sign-in page: download with `gdown` "
            "(gdown --fuzzy URL) or confirm the download in a browser"
        )
    elif any(word in lowered for word in (b"sign in", b"log in", b"login", b"sign-in")):
        hint = (
            "The server asked for a login: download it while signed in (for Hugging Face "
            "gated models, `huggingface-cli login` then hf_hub_download), or pass a token"
        )
    titled = f" titled {title!r}" if title else ""
    return _one(path, "html", size, Finding(
        "html-page", "error",
        f"{path.name} is an HTML web page{titled} ({size:,} bytes), not weights: a "
        f"login, error or preview page was saved instead of the file. {hint}.",
        details={"title": title},
    ), html_title=title)


def clean_text(text: str, limit: int = 120) -> str:
    """File-supplied text made safe to show: entities decoded, markup characters and
    control characters removed, whitespace collapsed, length capped."""
    text = _UNSAFE_CHARS.sub(" ", html.unescape(text))
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe_bytes(head: bytes) -> str:
    sample = head[:64]
    if not sample:
        return "it has no readable bytes"
    printable = sum(32 <= b < 127 or b in (9, 10, 13) for b in sample)
    if printable == len(sample):
        text = clean_text(sample.decode("ascii", "replace"), 60)
        if sample.lstrip()[:1] in (b"{", b"["):
            return f"it is a JSON or text file beginning {text!r} (a config, not weights?)"
        return f"it is a text file beginning {text!r}"
    return f"its first bytes are {sample[:16].hex(' ')}"
