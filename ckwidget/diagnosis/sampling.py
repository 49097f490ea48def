"""Bounded reads of tensor values for checks that need numbers (non-finite counts).

Why bounded: a checkpoint can hold 100,000 tensors or 100 GB; diagnosis must cost the
same for both. So the check reads at most ``MAX_LARGEST`` of the largest tensors plus
``MAX_SPREAD`` spread evenly over the rest, each through ``ckpt.read`` (which maps one
tensor, never the whole file) and each as an evenly strided sample of at most its
share of ``budget`` bytes (``ckwidget.stats.sample_tensor``). The bounds are counted
(tensors, bytes), never timed, so a busy machine gets the same answer as a quiet one;
``Sample`` says what was examined.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from heapq import nlargest
from itertools import compress, islice, repeat
from operator import attrgetter, eq, floordiv, gt, is_not

from ..checkpoint import Checkpoint, TensorInfo

FLOATS = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2}  # name -> item size
DEFAULT_BUDGET = 4 << 20  # bytes of values examined in total
MAX_LARGEST = 192         # the largest tensors are always examined
MAX_SPREAD = 192          # plus this many spread evenly over the others
_DTYPE, _NBYTES = attrgetter("dtype"), attrgetter("nbytes")
_SOURCE, _LAYOUT = attrgetter("source"), attrgetter("layout")


@dataclass
class Sample:
    """Non-finite counts per key (entry-relative) over the elements examined."""

    nonfinite: dict[str, tuple[int, int]] = field(default_factory=dict)  # key -> (nan, inf)
    examined: int = 0          # elements examined
    total: int = 0             # elements in the tensors considered
    tensors: int = 0           # tensors examined
    candidates: int = 0        # tensors that could have been examined
    bytes_read: int = 0        # bytes of values examined (at most the budget)
    error: str | None = None   # why sampling stopped, in one sentence


def choose(sizes: list[int], largest: int = MAX_LARGEST, spread: int = MAX_SPREAD) -> list[int]:
    """Indexes of the ``largest`` biggest of ``sizes``, then ``spread`` more evenly spaced
    over the rest, in order (O(n log largest), no Python call per tensor)."""
    n = len(sizes)
    if n <= largest + spread:
        return list(range(n))
    # heapq.nlargest(largest, range(n), key=sizes.__getitem__) without a call per index:
    # those above the ``largest``-th size, then the first of those equal to it
    biggest = nlargest(largest, sizes)
    cut = biggest[-1]
    # none is above the cut when the biggest all equal it (many alike tensors): no pass
    top = [] if biggest[0] == cut else list(compress(range(n), map(gt, sizes, repeat(cut))))
    top += islice(compress(range(n), map(eq, sizes, repeat(cut))), largest - len(top))
    top.sort()
    # the other indexes, evenly spaced: the r-th of them is r plus the top ones before it
    step = (n - len(top)) / spread
    spread_out = []
    passed = 0
    for j in range(spread):
        r = int(j * step)
        while passed < len(top) and top[passed] <= r + passed:
            passed += 1
        spread_out.append(r + passed)
    return sorted(top + spread_out)


def sample_values(ckpt: Checkpoint, entry: str, budget: int = DEFAULT_BUDGET,
                  infos: Mapping[str, TensorInfo] | None = None,
                  members: Mapping[str, str] | Callable[[], Mapping[str, str]] | None = None
                  ) -> Sample:
    """Non-finite counts over a bounded sample of the entry's floating tensors.

    ``members`` maps entry keys to full keys (``ckpt.members(entry)``) when the caller
    has it already, or is a function giving it (called only if a tensor is read).
    """
    import numpy as np

    from ..stats import sample_tensor

    infos = ckpt.entry(entry) if infos is None else infos
    # readable, dense, non-empty floating tensors, chosen column by column (C-level
    # passes: 100,000 tensors take milliseconds)
    values = list(infos.values())
    sources = list(map(_SOURCE, values))
    unread = sources.count(None)
    if unread == len(sources):  # in-memory descriptions: nothing to read
        return Sample()
    dtypes = list(map(_DTYPE, values))
    all_sizes = list(map(_NBYTES, values))
    kinds = set(dtypes)
    if (not unread and FLOATS.keys() >= kinds and 0 not in all_sizes
            and set(map(_LAYOUT, values)) == {"strided"}):
        keys, sizes, usable = list(infos), all_sizes, None  # all of them (the common case)
    else:
        usable = list(map(all, zip(map(FLOATS.__contains__, dtypes), all_sizes,
                                   map(is_not, sources, repeat(None)),
                                   map(eq, map(_LAYOUT, values), repeat("strided")))))
        keys = list(compress(infos, usable))
        sizes = list(compress(all_sizes, usable))
    # dense floating tensors: elements are bytes over the item size (a whole number of
    # items each, so one division does for tensors of one dtype)
    if usable is None and len(kinds) == 1:
        total = sum(sizes) // FLOATS[dtypes[0]]
    else:
        itemsizes = map(FLOATS.__getitem__,
                        dtypes if usable is None else compress(dtypes, usable))
        total = sum(map(floordiv, sizes, itemsizes))
    out = Sample(total=total, candidates=len(keys))
    if not keys:
        return out
    chosen = [keys[i] for i in choose(sizes)]
    if ckpt.keys_are_full(entry):
        members = {}  # the top level of a plain state dict: entry keys are full keys
    elif callable(members):
        members = members()
    members = ckpt.members(entry) if members is None else members
    share = budget // len(chosen)
    found: dict[str, tuple[int, int]] = {}
    whole = _WholeReads()  # small tensors read whole, as bytes: counted together below
    # a remote checkpoint (issue 22) reads the sampled ranges of every chosen tensor in
    # one wave of requests, as evenly spread blocks of elements, not strided elements
    read_samples = getattr(ckpt, "read_samples", None)
    sampled: dict[str, object] = {}
    if read_samples is not None:
        try:
            sampled = read_samples({members.get(k, k): max(1, share // max(
                1, infos[k].nbytes // max(1, infos[k].numel))) for k in chosen})
        except Exception as exc:  # a value check must never break diagnosis
            out.error = f"values could not be read ({type(exc).__name__}: {str(exc)[:200]})"
            chosen = []
    for k in chosen:
        info = infos[k]
        size = max(1, info.nbytes // max(1, info.numel))
        cap = max(1, share // size)
        try:
            raw = None if read_samples is not None else whole.take(k, info, cap)
            if raw is None:
                values = (sampled[members.get(k, k)] if read_samples is not None
                          else sample_tensor(ckpt.read(members.get(k, k)), cap))
        except Exception as exc:  # a value check must never break diagnosis
            out.error = f"values could not be read ({type(exc).__name__}: {str(exc)[:200]})"
            break
        if raw is None:
            nan = int(np.isnan(values).sum())
            inf = int(np.isinf(values).sum())
            if nan or inf:
                found[k] = (nan, inf)
            count = int(values.size)
        else:
            count = info.numel
        out.examined += count
        out.bytes_read += count * size
        out.tensors += 1
    found.update(whole.nonfinite())
    out.nonfinite = {k: found[k] for k in chosen if k in found}  # in the file's order
    return out


_LITTLE = {"float64": "<f8", "float32": "<f4", "float16": "<f2"}


class _WholeReads:
    """Tensors small enough to be examined whole, kept as their raw bytes per dtype and
    counted in one numpy pass each: at 100,000 keys most sampled tensors are tiny, and a
    torch tensor, a float64 copy and two reductions for each would cost more than the
    reads."""

    def __init__(self) -> None:
        self.chunks: dict[str, tuple[list[str], list[object]]] = {}

    def take(self, key: str, info: TensorInfo, cap: int) -> object | None:
        """The tensor's bytes, kept for ``nonfinite``; None when it must be sampled (too
        big, or its source has no plain bytes to give)."""
        raw_of = getattr(info.source, "raw", None)
        if raw_of is None or info.numel > cap or info.dtype not in FLOATS:
            return None
        raw = raw_of()
        if raw is None or len(raw) != info.nbytes:
            return None
        keys, chunks = self.chunks.setdefault(info.dtype, ([], []))
        keys.append(key)
        chunks.append(raw)
        return raw

    def nonfinite(self) -> dict[str, tuple[int, int]]:
        """(NaN, inf) counts of the kept tensors that hold any."""
        import numpy as np

        out: dict[str, tuple[int, int]] = {}
        for dtype, (keys, chunks) in self.chunks.items():
            raw = np.concatenate(chunks)
            if dtype == "bfloat16":  # bfloat16 is float32's top half
                values = (raw.view("<u2").astype("<u4") << 16).view("<f4")
            else:
                values = raw.view(_LITTLE[dtype])
            starts = np.cumsum([0, *map(len, chunks[:-1])]) // FLOATS[dtype]
            nans = np.add.reduceat(np.isnan(values), starts)  # every chunk holds values
            infs = np.add.reduceat(np.isinf(values), starts)
            for i in np.flatnonzero(nans + infs).tolist():
                out[keys[i]] = (int(nans[i]), int(infs[i]))
        return out
