"""``TorchPickleContext.tensors_in_bulk`` against the record-by-record loop it replaced.

``reference_tensors_in_bulk`` below is that loop, kept as it was. Both run on random
columns (storages named twice or known from an earlier run, zero and negative sizes,
views past their storage, negative numels and offsets, dtypes without a known size, no
reader, 0-d tensors, storage classes that are not Globals) and on real torch.save files,
and everything they give and leave behind is compared: the same StorageRef objects
where a key repeats or is known, the same storages in the same order, TensorInfo values
with the same fields in the same order, sources with the same slots and the very size
and stride tuples passed in, and None with the storages untouched for a refused run.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from ckwidget.checkpoint import DTYPE_SIZES, TensorInfo
from ckwidget.readers import open_checkpoint, pickle_vm
from ckwidget.readers.pickle_vm import Global
from ckwidget.readers.torch_objects import (
    StorageBytes,
    StorageRef,
    StorageTensorSource,
    TorchPickleContext,
    _geometry,
    _new,
    _ordered_dict,
)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

READER = StorageBytes()  # sources are compared by their slots; no bytes are read


def reference_tensors_in_bulk(self: TorchPickleContext, tag: Any, kinds: list[Any],
                              location: Any,
                              keys: list[str], numels: list[int], offsets: list[int],
                              sizes: list[tuple[int, ...]], strides: list[tuple[int, ...]],
                              shapes: list[bytes], od: Any
                              ) -> tuple[list[Any], Callable[[], Any], list[Any]] | None:
    """``tensors_in_bulk`` as it was before the run was built in passes (one loop), with
    each record's own storage class (runs mix dtypes)."""
    if (type(tag) is not str or tag != "storage" or type(location) is not str
            or type(od) is not Global or od.reducer is not _ordered_dict
            or not keys or min(numels) < 0 or min(offsets) < 0):
        return None
    storages = self.storages
    get = storages.get
    geometry = self._geometry
    reader = self.reader
    made: list[str] = []  # storages added here, removed again if the run is refused
    refs: list[Any] = []
    values: list[Any] = []
    new = _new
    for key, numel, offset, size, stride, shape, kind in zip(keys, numels, offsets, sizes,
                                                            strides, shapes, kinds):
        ref = get(key)
        if ref is None:
            kind_info = self._dtypes.get(kind) if type(kind) is Global else None
            if kind_info is None:
                kind_info = self._storage_dtype(kind)
            ref = new(StorageRef)
            ref.key = key
            ref.dtype, ref.itemsize = kind_info
            ref.location = location
            ref.numel = numel
            ref.nbytes = numel * kind_info[1]
            storages[key] = ref
            made.append(key)
        refs.append(ref)
        geo = geometry.get(shape)
        if geo is None:
            geo = _geometry(size, stride)
            if len(geometry) < 4096:
                geometry[shape] = geo
        count, extent = geo
        if count < 0 or (count and offset + extent > ref.numel):
            break  # negative sizes, or a view past its storage: ``tensor`` knows
        dtype = ref.dtype
        source = None
        if reader is not None and dtype in DTYPE_SIZES:
            source = new(StorageTensorSource)
            source.reader = reader
            source.storage = ref
            source.offset = offset
            source.size = size
            source.stride = stride
            source.dtype = dtype
        values.append(TensorInfo(size, dtype, ref.location, count * ref.itemsize, "strided",
                                 source))
    else:
        return refs, _ordered_dict, values
    for key in made:
        del storages[key]
    return None


# ----------------------------------------------------------------------------- pictures

_REF_SLOTS = ("key", "dtype", "itemsize", "location", "numel", "nbytes")
_SOURCE_SLOTS = ("reader", "storage", "offset", "size", "stride", "dtype")


class Picture:
    """Numbers the objects met, in the order met, so that two worlds (the same calls made
    on two contexts) compare equal only when they hold equal values with the same
    sharing: a StorageRef reached again reads as its number."""

    def __init__(self, passed: dict[int, str]) -> None:
        self.numbers: dict[int, int] = {}
        self.keep: list[Any] = []
        self.passed = passed  # id of an object the caller passed in -> its name

    def obj(self, value: Any) -> Any:
        """An object passed in reads as its name (``source.size is`` the size given), any
        other as its type, number and fields (its number alone when met again)."""
        if id(value) in self.passed:
            return ("passed", self.passed[id(value)])
        if value is None or type(value) in (str, int):
            return (type(value).__name__, value)
        if value is READER:
            return ("reader",)
        if type(value) is tuple:  # a value (bulk runs share one per size or stride form)
            return ("tuple", value)
        number = self.numbers.get(id(value))
        if number is not None:
            return ("seen", number)
        self.numbers[id(value)] = len(self.numbers)
        self.keep.append(value)
        if type(value) is StorageRef:
            return ("ref", [(s, self.obj(getattr(value, s))) for s in _REF_SLOTS])
        if type(value) is StorageTensorSource:
            return ("source", [(s, self.obj(getattr(value, s))) for s in _SOURCE_SLOTS])
        if type(value) is TensorInfo:
            return ("info", [(k, self.obj(v)) for k, v in _fields_of(value)])
        return ("other", type(value).__name__, repr(value))


def world(ctx: TorchPickleContext, made: Any, passed: dict[int, str]) -> dict[str, Any]:
    """Everything a call gave and left: its result and the context's storages (keys in
    order, and the objects), its problems and its caches."""
    pic = Picture(passed)
    out: dict[str, Any] = {
        "storages": [(key, pic.obj(ref)) for key, ref in ctx.storages.items()],
        "problems": list(ctx.problems),
    }
    if made is None:
        out["made"] = None
    else:
        refs, make_empty, values = made
        out["made"] = (
            [pic.obj(r) for r in refs], make_empty is _ordered_dict,
            [pic.obj(v) for v in values], type(refs) is list, type(values) is list,
        )
    return out


def _fields_of(info: TensorInfo) -> list[tuple[str, Any]]:
    return [(f.name, getattr(info, f.name)) for f in dataclasses.fields(info)]


def check_info(info: TensorInfo) -> None:
    """What a TensorInfo filled through its slot setters must still be: equal to one made
    by its own __init__, holding the very same values, with no instance dict."""
    made = TensorInfo(info.shape, info.dtype, info.device, info.nbytes, info.layout,
                      info.source)
    assert made == info
    assert all(a is b for (_, a), (_, b) in zip(_fields_of(made), _fields_of(info)))
    assert not hasattr(info, "__dict__")


# ------------------------------------------------------------------------ random columns

def _kinds() -> list[Any]:
    return [Global("torch", "FloatStorage"), Global("torch", "HalfStorage"),
            Global("torch", "BoolStorage"), Global("torch", "float16"),
            Global("torch", "NoSuchStorage"), Global("torch", "ComplexDoubleStorage"),
            "FloatStorage", None, ("torch", "FloatStorage")]


def _od(ok: bool = True) -> Global:
    od = Global("collections", "OrderedDict")
    od.reducer = _ordered_dict if ok else None
    return od


class RandomRuns:
    """Columns as pickle_runs hands them over, mostly plain, with every oddity the loop
    handles: the same key twice, keys of earlier runs, sizes of zero, views past their
    storage, negative values, 0-d tensors, sizes and strides of different lengths."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.next_key = 0
        self.used: list[str] = []
        self.kinds = _kinds()
        self.shapes: dict[tuple[Any, Any], tuple[tuple[int, ...], tuple[int, ...], bytes]] = {}

    def _key(self, known: float) -> str:
        rng = self.rng
        if self.used and rng.random() < known:
            return str(rng.choice(self.used))  # known from an earlier run (an equal str)
        self.next_key += 1
        key = str(self.next_key)
        self.used.append(key)
        return key

    def _geometry(self) -> tuple[tuple[int, ...], tuple[int, ...], bytes]:
        """A size and stride, shared objects for equal ones (as the machine's tuple
        readers give), and their pickle-bytes name."""
        rng = self.rng
        rank = rng.choice([0, 1, 1, 2, 2, 3])
        size = tuple(rng.choice([0, 1, 2, 3, 4]) if rng.random() < 0.15 else rng.randint(1, 4)
                     for _ in range(rank))
        stride = tuple(rng.randint(0, 5) for _ in range(rank))
        odd = rng.random()
        if odd < 0.01:
            size = (*size, -1) if size else (-2,)
            stride = (*stride, 1)
        elif odd < 0.02:
            stride = (*stride, 1)  # one more stride than sizes
        elif odd < 0.03 and stride:
            stride = (*stride[:-1], -1)
        name = (size, stride)
        got = self.shapes.get(name)
        if got is None:
            got = self.shapes[name] = (tuple(size), tuple(stride), repr(name).encode())
        return got

    def run(self) -> dict[str, Any]:
        rng = self.rng
        n = rng.choice([1, 2, 3, 7, 40, 132])
        keys: list[str] = []
        numels: list[int] = []
        offsets: list[int] = []
        sizes: list[tuple[int, ...]] = []
        strides: list[tuple[int, ...]] = []
        shapes: list[bytes] = []
        # plain runs: nothing odd at all; shared: plain views, storages named twice or
        # known; odd: anything
        mode = rng.choice(["plain", "plain", "shared", "odd", "odd"])
        plain = mode != "odd"
        for _ in range(n):
            if keys and mode != "plain" and rng.random() < 0.05:
                key = rng.choice(keys)  # the same storage again in this run
            else:
                key = self._fresh() if mode == "plain" else self._key(
                    0.04 if mode == "odd" else 0.01)
            size, stride, shape = self._geometry() if not plain else self._plain()
            count, extent = _geometry(size, stride)
            need = max(extent, 1) if count > 0 else 0
            offset = rng.choice([0, 0, 0, 1, 3])
            numel = offset + need + rng.choice([0, 0, 0, 1, 5])
            if mode == "shared":
                numel = offset + 20  # room for a later record's view of it
            if not plain:
                odd = rng.random()
                if odd < 0.02:
                    numel = max(0, numel - rng.randint(1, 3))  # maybe past its storage
                elif odd < 0.03:
                    offset = -1
                elif odd < 0.04:
                    numel = -1
                elif odd < 0.05:
                    offset += 10**30  # far past any storage
            keys.append(key)
            numels.append(numel)
            offsets.append(offset)
            sizes.append(size)
            strides.append(stride)
            shapes.append(shape)
        tag: Any = "storage"
        location: Any = rng.choice(["cpu", "cpu", "cuda:0"])
        od = _od()
        if not plain:
            odd = rng.random()
            if odd < 0.02:
                tag = "module"
            elif odd < 0.03:
                tag = b"storage"
            elif odd < 0.04:
                location = None
            elif odd < 0.05:
                od = _od(ok=False)
        kinds = [rng.choice(self.kinds)] * n  # one storage class, or one per record
        if rng.random() < 0.3:
            kinds = [rng.choice(self.kinds[:3]) if rng.random() < 0.9
                     else rng.choice(self.kinds) for _ in range(n)]
        return {"tag": tag, "kinds": kinds, "location": location,
                "keys": keys, "numels": numels, "offsets": offsets, "sizes": sizes,
                "strides": strides, "shapes": shapes, "od": od}

    def _fresh(self) -> str:
        self.next_key += 1
        key = str(self.next_key)
        self.used.append(key)
        return key

    def _plain(self) -> tuple[tuple[int, ...], tuple[int, ...], bytes]:
        rng = self.rng
        size = rng.choice([(2, 2), (2,), (4,), (3, 5), (), (0, 3)])
        stride = {(2, 2): (2, 1), (2,): (1,), (4,): (1,), (3, 5): (5, 1), (): (),
                  (0, 3): (3, 1)}[size]
        name = (size, stride)
        got = self.shapes.get(name)
        if got is None:
            got = self.shapes[name] = (size, stride, repr(name).encode())
        return got


def _passed(call: dict[str, Any]) -> dict[int, str]:
    """The objects a call passes in, by name: the results must hold these very ones."""
    named: dict[int, str] = {}
    for column in ("sizes", "strides"):
        for i, value in enumerate(call[column]):
            named.setdefault(id(value), f"{column}[{i}]")
    named[id(call["location"])] = "location"
    return named


def same_calls(calls: Iterator[dict[str, Any]], reader: Any,
               seed_dtypes: dict[Any, tuple[str, int]] | None = None) -> dict[str, int]:
    """Each call on two contexts, the reference on one and the method on the other; the
    worlds after each call compare equal. Returns how the runs went."""
    old, new = TorchPickleContext(reader), TorchPickleContext(reader)
    for ctx in (old, new):
        ctx._dtypes.update(seed_dtypes or {})
    seen = {"made": 0, "refused": 0, "fast": 0}
    fast = new._new_storages_run

    def counted(*args: Any) -> Any:
        made = fast(*args)
        seen["fast"] += made is not None
        return made

    new._new_storages_run = counted  # type: ignore[method-assign]
    for call in calls:
        before = list(new.storages.items())
        want = reference_tensors_in_bulk(old, **call)
        got = new.tensors_in_bulk(**call)
        passed = _passed(call)
        assert world(new, got, passed) == world(old, want, passed)
        if got is None:
            seen["refused"] += 1
            after = list(new.storages.items())
            assert len(after) == len(before)
            assert all(a[0] is b[0] and a[1] is b[1] for a, b in zip(after, before))
        else:
            seen["made"] += 1
            for info in got[2]:
                check_info(info)
        # caches: what the loop learned, and perhaps more (the new path works out a
        # refused run's shapes and the run's dtype before it looks further)
        assert old._geometry.items() <= new._geometry.items()
        assert old._dtypes.items() <= new._dtypes.items()
    return seen


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("reader", [READER, None], ids=["reader", "no-reader"])
def test_random_columns_give_what_the_loop_gives(seed: int, reader: Any) -> None:
    rng = random.Random(seed)
    runs = RandomRuns(rng)
    seen = same_calls((runs.run() for _ in range(60)), reader)
    assert seen["made"] > 20 and seen["refused"] > 0
    assert seen["fast"] > 10  # the usual runs take the new path
    assert seen["made"] > seen["fast"]  # and some made runs share storages


def test_dtypes_without_a_known_size_get_no_source() -> None:
    """A storage class whose dtype has no known size (here seeded into the context's
    cache): no sources, as the loop would; the same for every other case."""
    rng = random.Random(7)
    runs = RandomRuns(rng)
    weird = {kind: ("float3", 3) for kind in runs.kinds if type(kind) is Global}
    calls = list(runs.run() for _ in range(40))
    seen = same_calls(iter(calls), READER, weird)
    assert seen["made"] > 10


def _plain_call(keys: list[str], numels: list[int] | None = None,
                offsets: list[int] | None = None, size: tuple[int, ...] = (2, 2),
                stride: tuple[int, ...] = (2, 1), **kw: Any) -> dict[str, Any]:
    n = len(keys)
    kind = kw.pop("kind", Global("torch", "FloatStorage"))
    call = {"tag": "storage", "kinds": [kind] * n, "location": "cpu",
            "keys": keys, "numels": numels or [4] * n, "offsets": offsets or [0] * n,
            "sizes": [size] * n, "strides": [stride] * n,
            "shapes": [repr((size, stride)).encode()] * n, "od": _od()}
    call.update(kw)
    return call


@pytest.mark.parametrize("case", [
    "plain", "twice", "known", "past", "zero", "negative-size", "empty-past", "scalar",
    "not-global", "offset-past", "known-then-past", "twice-then-past", "mixed-kinds",
    "mixed-not-global", "mixed-known",
])
def test_each_odd_case_alone(case: str) -> None:
    """One run of each kind after a plain one, on both implementations."""
    kind = Global("torch", "FloatStorage")
    half = Global("torch", "HalfStorage")
    first = _plain_call(["a", "b", "c"], kind=kind)
    calls = {
        "plain": _plain_call(["d", "e"], kind=kind),
        "twice": _plain_call(["d", "e", "d"], kind=kind),
        "known": _plain_call(["d", "b", "e"], kind=kind),
        "past": _plain_call(["d", "e"], numels=[4, 3], kind=kind),
        "zero": _plain_call(["d", "e"], numels=[0, 0], offsets=[9, 9], size=(0, 2),
                            kind=kind),
        "negative-size": _plain_call(["d", "e"], size=(-1, 2), kind=kind),
        "empty-past": _plain_call(["d"], numels=[0], kind=kind),
        "scalar": _plain_call(["d", "e"], numels=[1, 1], size=(), stride=(), kind=kind),
        "not-global": _plain_call(["d", "e"], kind="FloatStorage"),
        "offset-past": _plain_call(["d", "e"], offsets=[0, 1], kind=kind),
        # a known storage's own numel decides, not the record's
        "known-then-past": _plain_call(["d", "a"], numels=[4, 1], offsets=[0, 0], kind=kind),
        "twice-then-past": _plain_call(["d", "d"], numels=[4, 1], kind=kind),
        # a run that mixes storage classes, record by record (a state dict's dtypes)
        "mixed-kinds": _plain_call(["d", "e", "f", "g"], numels=[4, 4, 4, 4],
                                   kinds=[kind, half, kind, Global("torch", "LongStorage")]),
        "mixed-not-global": _plain_call(["d", "e"], kinds=[kind, "FloatStorage"]),
        "mixed-known": _plain_call(["d", "a", "e"], kinds=[half, kind, half]),
    }
    seen = same_calls(iter([first, calls[case]]), READER)
    assert seen["fast"] >= 1


def test_a_refused_run_changes_no_storage() -> None:
    """A run refused after its first records were fine leaves the storages as they were:
    the same objects, in the same order."""
    ctx = TorchPickleContext(READER)
    assert ctx.tensors_in_bulk(**_plain_call(["a", "b"])) is not None
    before = list(ctx.storages.items())
    assert ctx.tensors_in_bulk(**_plain_call(["c", "d", "e"], numels=[4, 4, 2])) is None
    assert ctx.tensors_in_bulk(**_plain_call(["c", "a", "e"], numels=[4, 4, 2])) is None
    after = list(ctx.storages.items())
    assert [k for k, _ in after] == [k for k, _ in before]
    assert all(a[1] is b[1] for a, b in zip(after, before))
    made = ctx.tensors_in_bulk(**_plain_call(["c", "a"]))
    assert made is not None and made[0][1] is ctx.storages["a"]
    assert list(ctx.storages) == ["a", "b", "c"]


# --------------------------------------------------------------------------- real files

class _Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.body = nn.Sequential(*(nn.Linear(4, 4) for _ in range(70)))
        self.head = nn.Linear(4, 10, bias=False)
        self.head.weight = self.embed.weight  # one storage, two keys


def _files() -> dict[str, Callable[[], Any]]:
    def wide() -> Any:
        torch.manual_seed(0)
        return {f"layers.{i}.{p}": torch.randn(2, 2) if p == "weight" else torch.randn(2)
                for i in range(400) for p in ("weight", "bias")}

    def dtypes() -> Any:
        kinds = [torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.bool,
                 torch.uint8, torch.int8, torch.float64, torch.complex64, torch.int32]
        return {f"t{i}": torch.zeros(3, i % 4 + 1, dtype=kinds[i % len(kinds)])
                for i in range(300)}

    def views() -> Any:
        base = torch.arange(60.0)
        out = {}
        for i in range(150):
            out[f"own{i}"] = torch.ones(3)
            if i % 3 == 0:
                out[f"view{i}"] = base[i % 50:i % 50 + 5]  # one storage, many offsets
            if i % 7 == 0:
                out[f"t{i}"] = torch.ones(4, 5).t()  # strides (1, 5)
        return out

    def odd_sizes() -> Any:
        out: dict[str, Any] = {}
        for i in range(200):
            out[f"s{i}"] = [torch.tensor(float(i)), torch.empty(0), torch.empty(3, 0),
                            torch.ones(1, 1, 2)][i % 4]
        return out

    def training() -> Any:
        torch.manual_seed(0)
        net = _Tied()
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        for p in net.parameters():
            p.grad = torch.ones_like(p)
        opt.step()
        return {"model": net.state_dict(), "optimizer": opt.state_dict(), "epoch": 3}

    def tied() -> Any:
        return _Tied().state_dict()

    return {"wide": wide, "dtypes": dtypes, "views": views, "odd_sizes": odd_sizes,
            "training": training, "tied": tied}


def checkpoint_picture(path: Path) -> dict[str, Any]:
    ck = open_checkpoint(path)
    pic = Picture({})
    reader_types = set()
    tensors = []
    for key, info in ck.tensors.items():
        tensors.append((key, type(info).__name__, [
            (k, _in_file(pic, v, reader_types)) for k, v in _fields_of(info)]))
        source = info.source
        if type(source) is StorageTensorSource:
            assert source.size is info.shape
    metadata = {k: v for k, v in ck.metadata.items() if k != "open_seconds"}
    return {"tensors": tensors, "candidates": ck.candidates, "metadata": metadata,
            "findings": [repr(f) for f in ck.findings], "readers": sorted(reader_types)}


def _in_file(pic: Picture, value: Any, reader_types: set[str]) -> Any:
    if type(value) is StorageTensorSource:
        reader_types.add(type(value.reader).__name__)
        number = pic.numbers.get(id(value))
        if number is not None:
            return ("seen", number)
        pic.numbers[id(value)] = len(pic.numbers)
        pic.keep.append(value)
        return ("source", [(s, type(getattr(value, s)).__name__ if s == "reader"
                            else pic.obj(getattr(value, s))) for s in _SOURCE_SLOTS])
    return pic.obj(value)


@pytest.mark.parametrize("name", sorted(_files()))
def test_real_files_open_the_same(name: str, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A torch.save file opens to the same checkpoint with bulk runs (the new method),
    without them (records one by one), and with the reference as the bulk method. (The
    legacy format has no bulk runs: its storage records are 6-tuples.)"""
    path = tmp_path / f"{name}.pt"
    torch.save(_files()[name](), path)
    runs = {"bulk": 0, "fast": 0}
    bulk, fast = TorchPickleContext.tensors_in_bulk, TorchPickleContext._new_storages_run

    def counted_fast(self: TorchPickleContext, *args: Any) -> Any:
        made = fast(self, *args)
        runs["fast"] += made is not None
        return made

    def counted_bulk(self: TorchPickleContext, *args: Any) -> Any:
        runs["bulk"] += 1
        return bulk(self, *args)

    monkeypatch.setattr(TorchPickleContext, "_new_storages_run", counted_fast)
    monkeypatch.setattr(TorchPickleContext, "tensors_in_bulk", counted_bulk)
    new = checkpoint_picture(path)
    assert runs["bulk"] > 0 and runs["fast"] > 0
    monkeypatch.setattr(pickle_vm, "BULK_RECORDS", False)
    one_by_one = checkpoint_picture(path)
    monkeypatch.setattr(pickle_vm, "BULK_RECORDS", True)
    monkeypatch.setattr(TorchPickleContext, "tensors_in_bulk", reference_tensors_in_bulk)
    reference = checkpoint_picture(path)
    assert new == one_by_one
    assert new == reference
    assert len(new["tensors"]) > 100
