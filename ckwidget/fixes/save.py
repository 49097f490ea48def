"""Write a plan's repaired state dict to a new file, atomically, never over the source."""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import FixError

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

    from .plan import Plan

FORMATS = ("safetensors", "torch")
TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")


def save_format(path: str | os.PathLike[str], format: str | None = None) -> str:
    """The format to write ``path`` in: ``format`` when given, else by the suffix
    (``.pt``/``.pth``/``.bin``/``.ckpt``: torch; anything else: safetensors). A format
    that contradicts the suffix is refused: ``repaired.pt`` holding safetensors bytes
    would make ``torch.load`` fail later, far from the cause."""
    suffix = Path(path).suffix.lower()
    by_suffix = "torch" if suffix in TORCH_SUFFIXES else "safetensors"
    if format is None:
        return by_suffix
    if format not in FORMATS:
        raise FixError(f"Cannot save as {format!r}; choose 'safetensors' or 'torch'.")
    if (suffix == ".safetensors" and format != "safetensors") or (
            suffix in TORCH_SUFFIXES and format != "torch"):
        raise FixError(
            f"{Path(path).name!r} names a {by_suffix} file but the format asked for is "
            f"{format!r}; give a {'.safetensors' if format == 'safetensors' else '.pt'} "
            "name or leave the format out.")
    return format


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def _unshared(sd: dict[str, Any]) -> dict[str, Any]:
    """Contiguous tensors, each owning its memory (safetensors refuses shared storage)."""
    import torch

    seen: set[int] = set()
    out = {}
    for k, v in sd.items():
        ptr = v.untyped_storage().data_ptr()
        whole = v.storage_offset() == 0 and v.nbytes == v.untyped_storage().nbytes()
        if ptr in seen or not v.is_contiguous() or not whole:
            v = v.detach().clone(memory_format=torch.contiguous_format)
        else:
            v = v.detach()
        if v.device.type != "cpu":
            v = v.cpu()
        seen.add(v.untyped_storage().data_ptr())
        out[k] = v
    return out


def save_plan(
    plan: Plan,
    path: str | os.PathLike[str],
    format: str | None = None,
    model: nn.Module | None = None,
) -> Path:
    """The checkpoint after the plan's transforms, in model key names, written atomically.

    ``model`` is needed only for resize-copy (it supplies the values kept outside the
    overlap); the file is written to a temporary name in the target folder and renamed.
    """
    format = save_format(path, format)
    target = Path(path).expanduser()
    source = plan.path
    if source is not None and (_same_file(target, source) or (
        source.is_dir() and _inside(target, source)
    )):
        raise FixError(
            f"Refusing to write {str(target)!r}: it is the source checkpoint; choose a new path."
        )
    if target.is_dir():
        raise FixError(f"{str(target)!r} is a folder; give a file name to save to.")
    if not target.parent.exists():
        raise FixError(f"The folder {str(target.parent)!r} does not exist.")
    ckpt, _ = plan.open()
    from .apply import model_infos

    infos = model_infos(model) if model is not None else {}
    if any(f.kind == "resize-copy" for f in plan.fixes) and model is None:
        raise FixError("This plan resizes tensors into the model's: pass model= to save it.")
    sd = plan._run(plan.read(ckpt), infos)
    tmp, mode = _new_temp_file(target)
    try:
        if format == "safetensors":
            from safetensors.torch import save_file

            save_file(_unshared(sd), tmp, metadata={"format": "pt", "written_by": "ckwidget"})
        else:
            import torch

            torch.save(sd, tmp)
        os.chmod(tmp, mode)  # safetensors 0.8 writes 0600 files whatever the umask
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return target


def _new_temp_file(target: Path) -> tuple[str, int]:
    """An empty file beside ``target`` to write before the atomic rename, and the mode
    the result should have: that of the file it replaces, else what a new file gets
    under the umask (read off the temporary file, made as open() makes files). Writers
    that make private files (mkstemp, safetensors 0.8) would otherwise leave a shared
    folder's checkpoint readable by its owner alone."""
    for _ in range(100):
        tmp = target.parent / f".{target.name}.{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # umask applies
        except FileExistsError:
            continue
        try:
            mode = stat.S_IMODE(os.fstat(fd).st_mode)
        finally:
            os.close(fd)
        try:
            mode = stat.S_IMODE(target.stat().st_mode)
        except OSError:
            pass  # a new file
        return str(tmp), mode
    raise FixError(f"Could not create a temporary file in {str(target.parent)!r}.")
