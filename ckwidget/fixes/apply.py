"""Atomic loading: validate everything first, stage the new values, then let torch load.

torch's ``load_state_dict`` copies matching tensors before it raises on a size mismatch,
so a failed load can leave a model half-overwritten. ckwidget never calls it with a
dict that would fail validation, and it keeps a journal so that anything that still
raises (a user hook, a custom ``_load_from_state_dict``, an interrupt) is rolled back
bit for bit.

Two paths, chosen per model:

- When every module loads with torch's stock code (no load hooks, no custom
  ``_load_from_state_dict``/``set_extra_state``/``load_state_dict``, plain tensors),
  torch's load of a validated dict can no longer fail part-way: the keys, shapes and
  dtypes it checks were checked first. The copy then runs in place with Ctrl-C
  deferred to its end, costing what plain torch costs (a snapshot would need a second
  copy of the model in freshly allocated memory, several times slower than the load).
- Otherwise (user code runs inside the load) a journal keeps the old values: each
  target's new value is staged in fresh memory and swapped in (``param.data =
  staged``), so the old storage *is* the snapshot and torch's copy becomes a copy onto
  itself; tensors sharing storage, and tensors the load should not touch, are
  snapshotted by clone. File pages of a checkpoint ckwidget opened itself are released
  once each tensor is staged, so peak memory stays near the model plus the checkpoint.

Both paths load with ``fastload.load_state_dict``: torch's own ``load_state_dict`` walk
with the same calls and result, but with each module's keys grouped per child in one
pass, so 100,000 keys in a flat ModuleList load in about a second instead of 20 minutes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..checkpoint import TensorInfo, describe_tensor
from ..errors import FixError
from .fastload import load_state_dict

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn


@dataclass
class LoadResult:
    """What a load did. ``missing`` model tensors keep their initial values."""

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    strict: bool = True
    assign: bool = False

    @property
    def kept_initial(self) -> list[str]:
        return self.missing

    @property
    def ok(self) -> bool:
        return not self.mismatched and (not self.strict or not (self.missing or self.unexpected))

    def summary(self) -> str:
        parts = [f"Loaded {len(self.loaded)} tensors"]
        if self.missing:
            parts.append(f"{len(self.missing)} model tensors kept their initial values")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} checkpoint tensors were not used")
        if self.mismatched:
            parts.append(f"{len(self.mismatched)} had the wrong shape")
        return "; ".join(parts) + "."

    def __repr__(self) -> str:
        return (
            f"<LoadResult loaded={len(self.loaded)} missing={len(self.missing)} "
            f"unexpected={len(self.unexpected)} mismatched={len(self.mismatched)}>"
        )


# -- validation -----------------------------------------------------------------------


def model_infos(model: nn.Module) -> dict[str, TensorInfo]:
    """TensorInfo of every tensor in the model's state dict (sources read the live tensor)."""
    import torch

    return {
        k: describe_tensor(v)
        for k, v in model.state_dict(keep_vars=True).items()
        if isinstance(v, torch.Tensor)
    }


def live_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state-dict tensors by key, as a plain dict (the same keys as
    :func:`model_infos`, without describing each: about a fifth of its memory)."""
    import torch

    return {
        k: v for k, v in model.state_dict(keep_vars=True).items() if isinstance(v, torch.Tensor)
    }


class LiveInfos(Mapping[str, TensorInfo]):
    """:func:`model_infos` described on demand: each look-up describes one live tensor.

    Plan.apply checks and transforms the tensors it read against this, so that the
    model's full infos need not be kept alive beside them."""

    def __init__(self, tensors: Mapping[str, torch.Tensor]) -> None:
        self.tensors = tensors

    def __getitem__(self, key: str) -> TensorInfo:
        return describe_tensor(self.tensors[key])

    def __contains__(self, key: object) -> bool:
        return key in self.tensors

    def __iter__(self) -> Iterator[str]:
        return iter(self.tensors)

    def __len__(self) -> int:
        return len(self.tensors)


def meta_model(model: Any) -> bool:
    """assign=True semantics apply when any model tensor lives on the meta device."""
    import torch

    return any(
        v.is_meta for v in model.state_dict(keep_vars=True).values()
        if isinstance(v, torch.Tensor)
    )


def _kind(dtype: str) -> str:
    if dtype.startswith("complex"):
        return "complex"
    return "real"


def _shape_ok(stored: tuple[int, ...], wanted: tuple[int, ...], lazy: bool) -> bool:
    if lazy or stored == wanted:
        return True
    # torch's backward compatibility: a 1-element 1-D tensor loads into a 0-D one.
    return wanted == () and stored == (1,)


def check_load(
    entries: Mapping[str, Any], model: Mapping[str, TensorInfo], strict: bool
) -> tuple[LoadResult, list[str]]:
    """Classify every key as torch would, without touching anything; list what would fail.

    ``entries`` values are TensorInfo or tensors; so are ``model``'s (the live tensors
    of :func:`live_tensors` are checked without describing each).
    """
    from torch.nn.parameter import is_lazy

    if isinstance(model, LiveInfos):
        model = model.tensors  # read the live tensors, not a description of each
    result = LoadResult(strict=strict)
    problems: list[str] = []
    for k, v in entries.items():
        if k not in model:
            result.unexpected.append(k)
            continue
        m = model[k]
        if not hasattr(v, "shape") or not hasattr(v, "dtype"):
            result.mismatched.append(k)
            problems.append(f"{k}: the checkpoint holds a {type(v).__name__}, not a tensor.")
            continue
        shape = tuple(v.shape)
        dtype = v.dtype if isinstance(v, TensorInfo) else str(v.dtype).removeprefix("torch.")
        if isinstance(m, TensorInfo):
            lazy, wanted = m.layout == "lazy", m.shape
        else:  # a live tensor: a lazy one has no shape yet
            lazy = bool(is_lazy(m))
            wanted = () if lazy else tuple(m.shape)
        if not _shape_ok(shape, wanted, lazy):
            result.mismatched.append(k)
            problems.append(
                f"{k}: the checkpoint has shape {list(shape)}, the model {list(wanted)}."
            )
        elif _kind(dtype) == "complex" and _kind(m_dtype := _dtype_of(m)) != "complex":
            result.mismatched.append(k)
            problems.append(f"{k}: a complex tensor cannot load into a {m_dtype} one.")
        else:
            result.loaded.append(k)
    result.missing = [k for k in model if k not in entries]
    # BatchNorm fills a missing num_batches_tracked itself (old checkpoints lack it).
    really_missing = [k for k in result.missing if not k.endswith("num_batches_tracked")]
    if strict and really_missing:
        problems.append(
            f"{len(really_missing)} model tensors have no value in the checkpoint "
            f"({_few(really_missing)}); add a drop-keys fix to load the rest and keep "
            "their initial values."
        )
    if strict and result.unexpected:
        problems.append(
            f"{len(result.unexpected)} checkpoint tensors have no place in the model "
            f"({_few(result.unexpected)}); drop them or fix their names."
        )
    return result, problems


def _dtype_of(m: Any) -> str:
    return m.dtype if isinstance(m, TensorInfo) else str(m.dtype).removeprefix("torch.")


def _few(keys: list[str], n: int = 3) -> str:
    return ", ".join(keys[:n]) + (f" and {len(keys) - n} more" if len(keys) > n else "")


# -- progress ------------------------------------------------------------------------


class Progress:
    """Calls ``callback(done, total)`` as counted work goes by: each time ``done`` has
    grown by another ``total // steps`` (about 1% by default), never on a timer, and
    once more with ``done == total`` at :meth:`finish`. ``done`` only grows and never
    passes ``total``. A callback that raises is not called again and the work goes on:
    it runs inside the load, which must not stop half-way for a progress display."""

    def __init__(self, callback: Callable[[int, int], Any], total: int, steps: int = 100):
        self.callback: Callable[[int, int], Any] | None = callback
        self.total = max(int(total), 0)
        self.done = 0
        self.step = max(1, self.total // max(1, steps))
        self.next = self.step
        self.told = -1

    def add(self, n: int = 1) -> None:
        self.done = min(self.done + n, self.total)
        if self.done >= self.next:
            self._tell()

    def part(self, units: int, span: int) -> Callable[[int], None]:
        """An ``add`` for a phase of ``units`` steps that stands for ``span`` of the total."""
        seen = [0, 0]  # units so far, the share of span told so far

        def add(n: int) -> None:
            seen[0] = min(seen[0] + n, units)
            share = span if units <= 0 else seen[0] * span // units
            if share > seen[1]:
                self.add(share - seen[1])
                seen[1] = share

        return add

    def finish(self) -> None:
        self.done = self.total
        if self.told != self.total:
            self._tell()

    def _tell(self) -> None:
        self.told = self.done
        self.next = self.done + self.step
        if self.callback is None:
            return
        try:
            self.callback(self.done, self.total)
        except Exception:
            self.callback = None


# -- the journal ---------------------------------------------------------------------


@dataclass
class _Slot:
    module: Any
    table: str  # "_parameters" | "_buffers"
    name: str
    obj: Any
    old_data: Any = None  # swapped-out storage (the snapshot), or None
    clone: Any = None  # clone snapshot, or None


def _use_count(t: torch.Tensor) -> int | None:
    import torch

    counter = getattr(torch._C, "_storage_Use_Count", None)
    if counter is None:
        return None
    try:
        return int(counter(t.untyped_storage()._cdata))
    except Exception:  # an exotic tensor: treat it as shared
        return None


def _slots(model: nn.Module) -> tuple[list[_Slot], dict[int, list[str]]]:
    """Every parameter and persistent-or-not buffer, once per object, with its state keys."""
    slots: list[_Slot] = []
    keys: dict[int, list[str]] = {}
    seen: set[int] = set()
    for prefix, module in model.named_modules(remove_duplicate=False):
        for table in ("_parameters", "_buffers"):
            for name, obj in getattr(module, table).items():
                if obj is None:
                    continue
                keys.setdefault(id(obj), []).append(f"{prefix}.{name}" if prefix else name)
                if id(obj) in seen:
                    continue
                seen.add(id(obj))
                slots.append(_Slot(module, table, name, obj))
    return slots, keys


class Journal:
    """Stage new values, remember old ones, and put everything back on failure."""

    def __init__(self) -> None:
        self.slots: list[_Slot] = []

    def restore(self) -> None:
        import torch

        with torch.no_grad():
            for slot in reversed(self.slots):
                table = getattr(slot.module, slot.table)
                table[slot.name] = slot.obj
                if slot.old_data is not None:
                    slot.obj.data = slot.old_data
                elif slot.clone is not None:
                    slot.obj.copy_(slot.clone)

    def release(self) -> None:
        self.slots.clear()


def _lazy(t: Any) -> bool:
    from torch.nn.parameter import is_lazy

    return bool(is_lazy(t))


def _stage_value(obj: torch.Tensor, value: torch.Tensor, fresh: bool) -> torch.Tensor:
    """``value`` in ``obj``'s dtype, device and strides, in memory nobody else holds."""
    import torch

    if (
        fresh
        and value.dtype == obj.dtype
        and value.device == obj.device
        and value.shape == obj.shape
        and value.stride() == obj.stride()
        and value.storage_offset() == 0
        and value.untyped_storage().nbytes() == obj.untyped_storage().nbytes()
        and not value.requires_grad
    ):
        return value
    staged = torch.empty_strided(obj.size(), obj.stride(), dtype=obj.dtype, device=obj.device)
    with torch.no_grad():
        staged.copy_(value.reshape(obj.shape) if value.shape != obj.shape else value)
    return staged


def stock_loading(model: nn.Module) -> bool:
    """Whether loading ``model`` runs only torch's own code (no hooks, no overrides)."""
    import torch
    from torch import nn
    from torch.nn.modules.batchnorm import _NormBase

    if type(model).load_state_dict is not nn.Module.load_state_dict:
        return False
    if torch.__future__.get_swap_module_params_on_conversion():
        return False
    stock = (nn.Module._load_from_state_dict, _NormBase._load_from_state_dict)
    plain = (torch.Tensor, nn.Parameter)
    for module in model.modules():
        cls = type(module)
        if cls._load_from_state_dict not in stock:
            return False
        if cls.set_extra_state is not nn.Module.set_extra_state:
            return False
        if module._load_state_dict_pre_hooks or module._load_state_dict_post_hooks:
            return False
        if "_load_from_state_dict" in vars(module):  # patched on the instance
            return False
        for table in (module._parameters, module._buffers):
            for t in table.values():
                if t is not None and (type(t) not in plain or t.layout != torch.strided):
                    return False
    return True


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Hold Ctrl-C until the block ends, so a load is never cut in half."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    try:
        previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    except (ValueError, OSError):  # pragma: no cover - signals unavailable here
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


def load_atomically(
    model: nn.Module,
    sd: dict[str, Any],
    *,
    strict: bool,
    assign: bool,
    fresh: set[int] | None = None,
    release_pages: bool = False,
    progress: Callable[[int], Any] | None = None,
) -> None:
    """Load a validated ``sd`` with torch, rolling the model back if anything raises.

    ``fresh`` holds ids of tensors made for this load (safe to adopt as storage);
    ``release_pages`` lets ckwidget drop file pages of tensors it has copied;
    ``progress`` is called with counts of keys loaded (see fastload.load_state_dict).
    """
    import torch

    if stock_loading(model):
        try:
            with deferred_interrupts():
                load_state_dict(model, sd, strict=strict, assign=assign, progress=progress)
        except Exception as exc:  # pragma: no cover - validation makes this unreachable
            raise FixError(
                "torch refused a load ckwidget had validated; the model may be partly "
                f"loaded: {type(exc).__name__}: {exc}"[:600]
            ) from exc
        return
    fresh = fresh or set()
    slots, keys_of = _slots(model)
    journal = Journal()
    pages = _PageReleaser() if release_pages else None
    # Storage groups: tensors sharing memory are snapshotted by clone, never swapped.
    owners: dict[int, int] = {}
    for slot in slots:
        if slot.obj.is_meta or _lazy(slot.obj) or slot.obj.layout != torch.strided:
            continue
        ptr = slot.obj.untyped_storage().data_ptr()
        owners[ptr] = owners.get(ptr, 0) + 1
    try:
        with torch.no_grad():
            for slot in slots:
                obj = slot.obj
                journal.slots.append(slot)
                if obj.is_meta or _lazy(obj):
                    continue  # nothing to keep; restoring the object is enough
                targets = [k for k in keys_of[id(obj)] if k in sd]
                swappable = (
                    not assign
                    and len(targets) == 1
                    and obj.layout == torch.strided
                    and owners.get(obj.untyped_storage().data_ptr(), 0) == 1
                    and _use_count(obj) in (1, 2)
                    and isinstance(sd[targets[0]], torch.Tensor)
                    and type(obj) in (torch.Tensor, torch.nn.Parameter, torch.nn.Buffer)
                )
                if swappable:
                    key = targets[0]
                    value = sd[key]
                    staged = _stage_value(obj, value, id(value) in fresh)
                    if pages is not None and staged is not value:
                        pages.release(value)
                    slot.old_data = obj.data
                    obj.data = staged
                    sd[key] = staged
                else:
                    slot.clone = obj.detach().clone()
            load_state_dict(model, sd, strict=strict, assign=assign, progress=progress)
    except BaseException as exc:
        journal.restore()
        if isinstance(exc, Exception):
            message = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
            raise FixError(
                f"Loading failed and the model was left exactly as it was: "
                f"{type(exc).__name__}: {message[:400] or 'no message'}"
            ) from exc
        raise
    finally:
        journal.release()


class _PageReleaser:
    """Drop the resident file pages of memory-mapped checkpoint tensors once copied.

    Only private mappings of files are touched, and only for a checkpoint this apply
    opened itself (nobody else holds its tensors, nobody wrote to them): their pages are
    re-read from the file if used again. Anonymous memory is never advised.
    """

    def __init__(self) -> None:
        self.maps: list[tuple[int, int]] | None = None
        self.madvise: Any = None
        if sys.platform.startswith("linux"):
            try:
                import ctypes

                libc = ctypes.CDLL(None, use_errno=True)
                self.madvise = libc.madvise
                self.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
                self.page = os.sysconf("SC_PAGE_SIZE")
            except (OSError, AttributeError, ValueError):
                self.madvise = None

    def _file_maps(self) -> list[tuple[int, int]]:
        if self.maps is None:
            self.maps = []
            with contextlib.suppress(OSError), open("/proc/self/maps") as fh:
                for line in fh:
                    parts = line.split()
                    # address perms offset dev inode path: a private mapping of a file
                    # (torch.load(mmap=True) maps copy-on-write, hence "rw-p")
                    if len(parts) >= 6 and parts[4] != "0" and parts[1][3] == "p":
                        lo, hi = (int(x, 16) for x in parts[0].split("-"))
                        self.maps.append((lo, hi))
        return self.maps

    def release(self, t: Any) -> None:
        if self.madvise is None or t.device.type != "cpu":
            return
        start = t.data_ptr()
        length = t.numel() * t.element_size()
        lo = -(-start // self.page) * self.page
        hi = ((start + length) // self.page) * self.page
        if hi - lo < self.page:
            return
        if not any(a <= lo and hi <= b for a, b in self._file_maps()):
            return
        self.madvise(lo, hi - lo, 4)  # MADV_DONTNEED


def iter_tensors(values: Iterable[Any]) -> Iterable[Any]:
    import torch

    return (v for v in values if isinstance(v, torch.Tensor))
