"""Where every tensor's value comes from after a plan, judged by tracing the plan itself.

A plan is right when the model's final weights are what a careful engineer would load by
hand, so this module answers, for each model tensor: does it receive a value from the
checkpoint (as is, cast, transposed, reshaped, resized, merged, folded...), or keep its
initial value? And for each checkpoint tensor of the entry: is it used, is it training
bookkeeping (``num_batches_tracked``, step counters), or are learned values left out?

It runs the plan's own ``transform`` code over the entry's metadata with each tensor's
source replaced by a tag naming its key, so the answer cannot drift from what
``apply`` does: a value's tags are the checkpoint tensors it was computed from.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..checkpoint import TensorInfo

INITIAL = "initial value"
AS_IS = "checkpoint"
USED, BOOKKEEPING, UNUSED = "used", "bookkeeping", "unused"

# Buffers that count steps rather than hold learned values: leaving them out loses no
# training (BatchNorm's num_batches_tracked, swa_utils' n_averaged, optimizer steps).
BOOKKEEPING_LEAVES = frozenset({
    "num_batches_tracked", "n_averaged", "step", "_step_count", "global_step", "steps",
    "initial_step", "masked_bias",
})


def _bookkeeping(key: str, info: TensorInfo) -> bool:
    """Step counters, and the causal-mask buffers old GPT-2 files keep (``attn.bias`` of
    shape (1, 1, n, n), ``attn.masked_bias``): constants, not learned values."""
    leaf = key.rpartition(".")[2]
    if leaf in BOOKKEEPING_LEAVES:
        return True
    shape = info.shape
    return (leaf == "bias" and len(shape) == 4 and shape[:2] == (1, 1)
            and shape[2] == shape[3] and key.endswith("attn.bias"))


@dataclass
class Provenance:
    """``model``: model key -> "checkpoint", "checkpoint, transposed"... or "initial
    value"; ``checkpoint``: entry key -> "used", "bookkeeping" or "unused"."""

    model: dict[str, str] = field(default_factory=dict)
    checkpoint: dict[str, str] = field(default_factory=dict)

    @property
    def kept_initial(self) -> list[str]:
        return [k for k, w in self.model.items() if w == INITIAL]

    @property
    def unused_learned(self) -> list[str]:
        return [k for k, w in self.checkpoint.items() if w == UNUSED]

    @property
    def partial(self) -> bool:
        """A model tensor keeps its initial value while learned checkpoint values go
        unused: the plan loads, and the model is still not the checkpoint's."""
        return bool(self.kept_initial) and bool(self.unused_learned)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for word in self.model.values():
            out[word] = out.get(word, 0) + 1
        return out


class _Origin:
    """A stand-in source: the checkpoint key a value starts from."""

    __slots__ = ("key",)

    def __init__(self, key: str) -> None:
        self.key = key

    def load(self) -> Any:  # pragma: no cover - never read: metadata only
        raise RuntimeError("a provenance tag holds no bytes")


def _sources_in(source: Any, limit: int = 64) -> Iterable[Any]:
    """Every source object a (possibly derived) source is computed from, itself first."""
    stack, seen = [source], 0
    while stack and seen < limit * 16:
        src = stack.pop()
        if src is None:
            continue
        seen += 1
        yield src
        if type(src) is _Origin:
            continue
        names = getattr(type(src), "__slots__", ()) or tuple(getattr(src, "__dict__", ()))
        for name in names:
            value = getattr(src, name, None)
            if isinstance(value, (list, tuple)):
                stack.extend(v for v in value if hasattr(v, "load"))
            elif hasattr(value, "load"):
                stack.append(value)


def _origins(info: TensorInfo) -> set[str]:
    return {s.key for s in _sources_in(info.source) if type(s) is _Origin}


def trace(entries: Mapping[str, TensorInfo], plan: Any, model_infos: Mapping[str, TensorInfo],
          renames: tuple = (), tied: Mapping[str, str] | None = None,
          lazy: Iterable[str] = ()) -> Provenance:
    """Run ``plan``'s transforms over ``entries`` (the selected container, as saved) and
    say where each model tensor's value comes from and what becomes of each entry."""
    from ..loadhooks import rename_like_hooks

    tagged: dict[str, TensorInfo] = {
        k: TensorInfo(i.shape, i.dtype, i.device, i.nbytes, i.layout, _Origin(k))
        for k, i in entries.items()}
    words: dict[int, tuple[str, ...]] = {}  # id(value) -> what the plan did to it
    alive: list[dict[str, TensorInfo]] = [tagged]  # keeps ids unique while tracing
    state = tagged
    for fix in plan.fixes:
        if fix.load_time:
            continue
        before = state
        state = fix.transform(state, model_infos)
        alive.append(state)
        effect = getattr(fix, "effect", "")
        if not effect:
            continue  # key maps and drops move or remove values, they make none
        known = {id(v) for v in before.values()}
        by_source = {id(v.source): words.get(id(v), ()) for v in before.values()}
        for value in state.values():
            if id(value) in known:
                continue
            inherited: list[str] = []
            for src in _sources_in(value.source):
                for w in by_source.get(id(src), ()):
                    if w not in inherited:
                        inherited.append(w)
            words[id(value)] = (*inherited, effect) if effect not in inherited else tuple(
                inherited)
    if renames:
        state = rename_like_hooks(state, renames)
    lazy = set(lazy)
    out = Provenance()
    used: set[str] = set()
    for key, info in model_infos.items():
        got = state.get(key)
        if got is None and tied and key in tied:
            got = state.get(tied[key])  # a tied tensor shares its partner's value
        if got is None or (got.shape != info.shape and key not in lazy):
            out.model[key] = INITIAL
            continue
        done = list(words.get(id(got), ()))
        if got.dtype != info.dtype and "cast" not in done:
            done.append("cast")  # load_state_dict's copy_ converts it
        out.model[key] = ", ".join([AS_IS, *done])
        used |= _origins(got)
    for key, info in entries.items():
        if key in used:
            out.checkpoint[key] = USED
        elif _bookkeeping(key, info):
            out.checkpoint[key] = BOOKKEEPING
        else:
            out.checkpoint[key] = UNUSED
    return out


def trace_plan(ckpt: Any, plan: Any, side: Any) -> Provenance:
    """``trace`` for a plan, a checkpoint and a ``ModelSide``."""
    lazy = [k for k, i in side.infos.items() if i.layout == "lazy"]
    renames = side.load_hooks.renames if getattr(side, "load_hooks", None) else ()
    return trace(plan.entry_infos(ckpt), plan, side.infos, renames, side.tied, lazy)
