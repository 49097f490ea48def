"""The base of the fix kinds: small immutable values that repair a checkpoint for one model.

Each fix knows three things: a sentence saying what it does (``describe``), the plain
torch lines that do it (``code``), and a pure ``transform`` of a state dict. The same
``transform`` runs on :class:`~ckwidget.checkpoint.TensorInfo` values (a preview that
reads no bytes) and on real tensors (an apply), so the preview cannot drift from what
the apply does. Key-mapping fixes (prefixes, renames) come first in a plan; per-key
fixes name keys in the model's namespace.

Load-time fixes (select-entry, map-location, allow-globals, extract-weights) change how
the checkpoint is read, not the dict: their ``transform`` is the identity and the
:class:`~ckwidget.fixes.plan.Plan` reads them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from ...checkpoint import TensorInfo

if TYPE_CHECKING:  # pragma: no cover
    import torch

V = TypeVar("V")

FLOATING_DTYPES = frozenset(
    {"float64", "float32", "float16", "bfloat16", "float8_e4m3fn", "float8_e5m2",
     "float8_e4m3fnuz", "float8_e5m2fnuz", "float8_e8m0fnu"}
)


@dataclass(frozen=True)
class CodeContext:
    """Variable names the generated snippet uses; fixes write their lines against these."""

    sd: str = "sd"
    model: str = "model"
    ckpt: str = "ckpt"
    path: str = "PATH"


def _is_info(value: Any) -> bool:
    return isinstance(value, TensorInfo)


def _short(keys: tuple[str, ...], limit: int = 3) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


class _MappedSource:
    """A TensorSource whose bytes are another source's, transformed on read."""

    __slots__ = ("fn", "inner")

    def __init__(self, inner: Any, fn: Callable[[Any], Any]) -> None:
        self.inner = inner
        self.fn = fn

    def load(self) -> torch.Tensor:
        return self.fn(self.inner.load())


def _mapped(info: TensorInfo, fn: Callable[[Any], Any], shape: tuple[int, ...] | None = None,
            dtype: str | None = None, nbytes: int | None = None) -> TensorInfo:
    """``info`` with a new shape/dtype/size, its bytes read through ``fn``.

    Built directly (``dataclasses.replace`` costs several times more, and previews run
    this for every key of 100,000-key checkpoints).
    """
    source = _MappedSource(info.source, fn) if info.source is not None else None
    return TensorInfo(info.shape if shape is None else shape,
                      info.dtype if dtype is None else dtype, info.device,
                      info.nbytes if nbytes is None else nbytes, info.layout, source)


@dataclass(frozen=True)
class Fix:
    """Base of every fix kind. Subclasses are frozen dataclasses, hashable and comparable."""

    kind: ClassVar[str] = ""
    # Where the kind runs in a plan, lowest first: 0 which container, 0.5 how the file is
    # read, 1 key maps, 1.5 joins and splits, 2 drops, 3 transposes and reshapes,
    # 4 resizes, 5 casts, 6 anything else. Plans sort by it (stable within a rank).
    rank: ClassVar[float] = 6
    load_time: ClassVar[bool] = False  # changes how the file is read, not the dict
    # What the fix does to the values it makes, as the table's ``source`` column says it
    # ("transposed", "merged"...); empty for fixes that only move or drop values.
    effect: ClassVar[str] = ""
    # The planner merges the fixes of a kind that ``merges`` into one (``merged``).
    merges: ClassVar[bool] = False
    # ``transform`` reads and changes only the entries named in ``keys``: a preview may
    # simulate just those.
    keyed: ClassVar[bool] = False
    # Leaves checkpoint values out of the model (``ckwidget check --strict`` refuses it).
    leaves_values_out: ClassVar[bool] = False

    @classmethod
    def merged(cls, fixes: list[Fix]) -> list[Fix]:
        """The fewest fixes of this kind doing what ``fixes`` do (kinds that merge)."""
        return fixes
    maps_keys: ClassVar[bool] = False  # renames keys (runs before per-key fixes)

    def describe(self) -> str:  # pragma: no cover - every kind overrides
        raise NotImplementedError

    def code(self, ctx: CodeContext = CodeContext()) -> list[str]:
        """Plain torch lines doing this fix on ``ctx.sd`` (load-time fixes: see Plan)."""
        return []

    def transform(self, entries: dict[str, V], model: Mapping[str, TensorInfo]) -> dict[str, V]:
        """The state dict after this fix; identity for load-time fixes."""
        return dict(entries)

    def problems(
        self, entries: Mapping[str, Any], model: Mapping[str, TensorInfo]
    ) -> list[str]:
        """Why this fix no longer applies to ``entries`` (the dict it would receive)."""
        return []

    def __str__(self) -> str:
        return self.describe()


def _absent(keys: tuple[str, ...], entries: Mapping[str, Any], what: str) -> list[str]:
    gone = tuple(k for k in keys if k not in entries)
    if not gone:
        return []
    return [f"{what}: the checkpoint has no key {_short(gone)} (after the earlier fixes)."]


class MergesByKeys:
    """For per-key fix kinds whose only field is ``keys``: the planner merges them into
    one fix over the union of their keys, and a preview may simulate just those keys."""

    merges: ClassVar[bool] = True
    keyed: ClassVar[bool] = True

    @classmethod
    def merged(cls, fixes: list[Fix]) -> list[Fix]:
        keys = dict.fromkeys(k for f in fixes for k in f.keys)  # type: ignore[attr-defined]
        return [cls(tuple(keys))]  # type: ignore[call-arg]
