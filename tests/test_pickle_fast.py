"""The pickle machine's tensor-record fast path against its own opcode loop.

``run_pickle`` runs each tensor record torch.save writes as one step (a layout pattern and
one struct read) instead of ~30 opcodes. These tests run every file of a broad corpus of
real torch.save output, hostile pickles and damaged streams both ways (fast path on, and
off) and compare everything the machine produced, field by field: the object tree with its
sharing (memo entries reached twice are the same object both ways), every memo entry the
stream stored, tensors with their sources, storages, problems, call and global counts,
errors and their positions.
"""

from __future__ import annotations

import collections
import pickle
import pickletools
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from _hostile_files import (
    billion_laughs,
    deep_lists,
    deep_marks,
    hash_bomb,
    payloads,
    small_state,
)
from _pickle_paths import (
    READER,
    context_facts,
    describe,
    memo_probe,
    mixed_dtypes_state,
    pickle_of,
    resnet_state,
    result_facts,
    run_both,
    saved_bytes,
    unframed,
)
from torch import nn

from ckwidget.readers import open_checkpoint, pickle_vm
from ckwidget.readers.budgets import DEFAULT_BUDGETS, Budgets
from ckwidget.readers.pickle_vm import (
    run_pickle,
)
from ckwidget.readers.torch_common import interpret
from ckwidget.readers.torch_objects import (
    StorageTensorSource,
    TorchPickleContext,
)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


# ----------------------------------------------------------------------------- describe


def assert_same(data: bytes, **kw: Any) -> int:
    """Both ways give the same facts; returns how many records the fast path ran."""
    slow, fast, extra = run_both(data, **kw)
    for key in slow:
        assert fast[key] == slow[key], key
    return extra


# ----------------------------------------------------------------------------- corpus


def _views() -> dict[str, Any]:
    base = torch.arange(120, dtype=torch.float32)
    grid = base.view(10, 12)
    return {
        "base": base, "slice": base[10:20], "strided": base[::3], "grid": grid,
        "transposed": grid.t(), "column": grid[:, 5], "corner": grid[2:5, 3:9],
        "expanded": torch.zeros(3).expand(4, 3), "empty": torch.zeros(0, 5),
        "narrow": base.narrow(0, 100, 20),
    }


def _dtypes() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    out = {}
    for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16,
                  torch.complex64, torch.complex128, torch.int8, torch.uint8, torch.int16,
                  torch.int32, torch.int64, torch.bool):
        t = torch.randn(3, 4, generator=g) * 10
        name = str(dtype).removeprefix("torch.")
        out[name] = t > 0 if dtype is torch.bool else t.to(dtype)
        out[f"{name}.row"] = out[name][1]  # a view: its record runs the fast path
        out[f"{name}.own"] = out[name][2].clone()
    return out


def _shapes() -> dict[str, torch.Tensor]:
    return {
        "scalar": torch.tensor(3.5), "int_scalar": torch.tensor(7), "one": torch.ones(1),
        "four_d": torch.zeros(2, 3, 4, 5), "five_d": torch.zeros(2, 1, 3, 1, 2),
        "eight_d": torch.zeros(1, 2, 1, 2, 1, 2, 1, 2), "big": torch.zeros(70_000),
        "wide": torch.zeros(3, 300), "tall": torch.zeros(70_000, 1)[::7],
        "long_dim": torch.zeros(2, 66_000)[:, 1:],
    }


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 2)
        self.register_buffer("mask", torch.ones(2, dtype=torch.bool))


def _training() -> dict[str, Any]:
    torch.manual_seed(0)
    net = _Net()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    out = net.fc(net.bn(net.conv(torch.randn(2, 3, 5, 5))).mean((2, 3)))
    out.sum().backward()
    opt.step()
    return {"model": net.state_dict(), "optimizer": opt.state_dict(), "epoch": 3,
            "params": {"w": nn.Parameter(torch.randn(2, 2))},
            "frozen": nn.Parameter(torch.randn(2), requires_grad=False),
            "tied": [net.fc.weight, net.fc.weight], "meta": {"lr": 0.1, "tags": ("a", "b")}}


def _many(n: int) -> dict[str, torch.Tensor]:
    """Views with storage offsets, 0-d and int64 tensors and a 66,000-element one, record
    by record: benchmarks/open_shapes.py's "views" shape (one builder for both)."""
    return BENCH_SHAPES["views"][0](n)


CORPUS: dict[str, Callable[[], Any]] = {
    "dtypes": _dtypes,
    "views": _views,
    "shapes": _shapes,
    "training": _training,
    "module": lambda: _Net(),
    "state_dict": lambda: _Net().state_dict(),
    "shared": lambda: {"a": (t := torch.arange(6.0)), "b": t, "c": t.view(2, 3), "d": t[1:]},
    "grad": lambda: {"p": nn.Parameter(torch.ones(3)), "g": torch.ones(2, requires_grad=True)},
    "many_300": lambda: _many(300),
    "resnet": lambda: resnet_state(40),
    "mixed_dtypes": lambda: mixed_dtypes_state(300),
    "many_70000": lambda: _many(70_000),
}


@pytest.fixture(scope="module")
def corpus() -> dict[str, bytes]:
    """data.pkl of each corpus object, saved at the default protocol and at 3, 4 and 5."""
    out = {}
    for name, make in CORPUS.items():
        torch.manual_seed(0)
        obj = make()
        out[name] = pickle_of(saved_bytes(obj))
        if name != "many_70000":
            for protocol in (3, 4, 5):
                out[f"{name}-p{protocol}"] = pickle_of(saved_bytes(obj, pickle_protocol=protocol))
    return out


def test_the_fast_path_is_on_by_default_and_runs_records(corpus: dict[str, bytes]) -> None:
    assert pickle_vm.FAST_RECORDS
    # every record but the first of each storage class (which names its classes inline)
    assert assert_same(corpus["many_300"]) == 298


@pytest.mark.parametrize("name", [*CORPUS, *(f"{n}-p{p}" for n in CORPUS if n != "many_70000"
                                              for p in (3, 4, 5))])
def test_real_files_give_the_same_everything(corpus: dict[str, bytes], name: str) -> None:
    data = corpus[name]
    extra = assert_same(data)
    if name != "module":
        assert extra > 0, "the fast path never ran"  # protocols 4 and 5 too (MEMOIZE)
    # every memo entry, and the plain machine (no reducers: Call records) too
    probe = memo_probe(data)
    assert_same(probe)
    assert_same(probe, torch_meaning=False)


def _bench_shapes() -> dict[str, tuple[Callable[[int], Any], int]]:
    """benchmarks/open_shapes.py's corpus: name -> (builder, pickle protocol)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "open_shapes.py"
    spec = importlib.util.spec_from_file_location("_open_shapes", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SHAPES


BENCH_SHAPES = _bench_shapes()


@pytest.mark.parametrize("name", BENCH_SHAPES)
def test_the_benchmark_shapes_give_the_same_everything(name: str) -> None:
    """Every shape the open benchmark times (uniform blocks, transformer layers, ResNet
    blocks with 0-d num_batches_tracked, mixed dtypes, offset views, shared storages), at
    each protocol 2 to 5, at 2,000 tensors: the fast path gives what the loop gives."""
    build, protocol = BENCH_SHAPES[name]
    data = pickle_of(saved_bytes(build(2_000), pickle_protocol=protocol))
    assert data[:2] == bytes([0x80, protocol])
    assert assert_same(data) > 1_000, "the fast path ran few records"


def test_long_memo_indexes_and_four_byte_ints_are_covered(corpus: dict[str, bytes]) -> None:
    data = corpus["many_70000"]
    ops = {op.name for op, _a, _p in pickletools.genops(data)}
    assert {"LONG_BINPUT", "BINPUT", "BININT", "BININT2", "BININT1", "BINGET"} <= ops
    shapes = corpus["shapes"]
    assert b"J" in shapes and "LONG_BINGET" in {
        op.name for op, _a, _p in pickletools.genops(memo_probe(shapes))}


def test_long_binget_of_the_rebuild_function_starts_a_record() -> None:
    """A file whose rebuild function sits at memo index 300 reads it with LONG_BINGET."""
    filler = {f"k{i}": f"v{i}" for i in range(200)}
    data = pickle_of(saved_bytes({"filler": filler, "w": torch.ones(2, 2), "b": torch.ones(3)}))
    assert b"j" in data
    assert assert_same(data) > 0
    assert_same(memo_probe(data))


def test_open_checkpoint_is_the_same_both_ways(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    files = []
    for i, (name, make) in enumerate(CORPUS.items()):
        if name == "many_70000":
            continue
        torch.manual_seed(0)
        obj = make()
        path = tmp_path / f"{i}-{name}.pt"
        torch.save(obj, path)
        legacy = tmp_path / f"{i}-{name}-legacy.pt"
        torch.save(obj, legacy, _use_new_zipfile_serialization=False)
        files += [path, legacy]
    for path in files:
        pictures = []
        for fast in (False, True):
            monkeypatch.setattr(pickle_vm, "FAST_RECORDS", fast)
            ckpt = open_checkpoint(path)
            metadata = {k: v for k, v in ckpt.metadata.items() if k != "open_seconds"}
            tensors = {k: (v.shape, v.dtype, v.device, v.nbytes, v.layout,
                           describe(v.source)[1:] if isinstance(v.source, StorageTensorSource)
                           else type(v.source).__name__) for k, v in ckpt.tensors.items()}
            findings = [(f.kind, f.severity, f.message, f.keys) for f in ckpt.findings]
            pictures.append((ckpt.format, tensors, ckpt.candidates, metadata, findings))
        assert pictures[0] == pictures[1], path.name


def test_interpret_flattens_the_same(corpus: dict[str, bytes],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("training", "many_300", "views", "module"):
        got = []
        for fast in (False, True):
            monkeypatch.setattr(pickle_vm, "FAST_RECORDS", fast)
            tp = interpret(corpus[name], READER, DEFAULT_BUDGETS)
            got.append((describe(tp.flat.tensors), tp.flat.members, tp.flat.candidates,
                        tp.metadata, [(f.kind, f.message) for f in tp.findings]))
        assert got[0] == got[1], name


def test_hostile_pickles_give_the_same_everything(tmp_path: Path) -> None:
    records = pickle_of(saved_bytes(small_state()))
    for payload in payloads(tmp_path):
        assert_same(payload.data)
        assert_same(payload.data, torch_meaning=False)
        if payload.body is not None and payload.data[:1] == b"\x80" and payload.data[1] <= 3:
            # the payload ahead of real tensor records, as an attacker would ship it
            mixed = records[:2] + payload.body + b"0" + records[2:]
            assert_same(mixed)
    for data in (deep_marks(20_000), deep_lists(300), billion_laughs(), hash_bomb()):
        assert_same(data)


def test_memo_traps_inside_records_go_through_the_opcodes() -> None:
    """Records whose BINGETs read entries the record itself stores, or entries never
    stored, or that overwrite entries other records read: the same either way."""
    data = pickle_of(saved_bytes({"a": torch.ones(2), "b": torch.zeros(3), "c": torch.ones(1)}))
    assert data[:2] == b"\x80\x02"
    variants = []
    # location read from the index the storage key has just been stored at
    variants.append(data.replace(b"h\x06K\x03tq\x10", b"h\x0fK\x03tq\x10"))
    # OrderedDict read from the storage-id tuple's index
    variants.append(data.replace(b"\x89h\n)Rq\x13", b"\x89h\x10)Rq\x13"))
    # an entry never stored
    variants.append(data.replace(b"((h\x03h\x04X\x01\x00\x00\x001",
                                 b"((h\x03h\x7fX\x01\x00\x00\x001"))
    # a record that overwrites the 'storage' string's entry, read by the next record
    variants.append(data.replace(b"X\x01\x00\x00\x001q\x0f", b"X\x01\x00\x00\x001q\x03"))
    # two PUTs of one record to the same index
    variants.append(data.replace(b"tq\x10Q", b"tq\x0fQ"))
    # the storage key stored over the location's entry, which the record then reads
    variants.append(data.replace(b"X\x01\x00\x00\x001q\x0fh\x06", b"X\x01\x00\x00\x001q\x06h\x06"))
    # the storage-id tuple, then the size, stored over the OrderedDict's entry
    variants.append(data.replace(b"tq\x10Q", b"tq\nQ"))
    variants.append(data.replace(b"K\x03\x85q\x11", b"K\x03\x85q\n"))
    # the next dict key (after a record the fast path ran) stored over the rebuild
    # function's entry, then read as it
    key_c = b"X\x01\x00\x00\x00cq\x16"
    variants.append(data.replace(key_c + b"h\x02", key_c[:-1] + b"\x02h\x02"))
    # the next dict key not UTF-8, cut short, stored with LONG_BINPUT, or not stored
    variants.append(data.replace(key_c, b"X\x01\x00\x00\x00\xffq\x16"))
    variants.append(data.replace(key_c, b"X\x09\x00\x00\x00cq\x16"))
    variants.append(data.replace(key_c, key_c[:-2] + b"r\x16\x00\x00\x00"))
    variants.append(data.replace(key_c + b"h\x02", key_c[:-2] + b"r\x02\x00\x00\x00h\x02"))
    variants.append(data.replace(key_c, key_c[:-2]))
    # the storage key shared through the memo (BINGET), as for views
    variants.append(data.replace(b"X\x01\x00\x00\x001q\x0f", b"h\x05"))
    changed = [v for v in variants if v != data]
    assert len(changed) == len(variants), "a trap did not apply; the corpus bytes moved"
    for v in changed:
        assert_same(v)
        assert_same(memo_probe(v) if _parses(v) else v)


def test_memo_traps_with_memoize_go_through_the_opcodes() -> None:
    """Protocol 4 records store with MEMOIZE (at len(memo)): reads of what the record
    itself memoizes, a hole in the memo that makes later MEMOIZEs overwrite, entries
    overwritten by BINPUT, the rebuild function read from the key's own MEMOIZE."""
    data = unframed(pickle_of(saved_bytes({"a": torch.ones(2), "b": torch.zeros(3),
                                      "c": torch.ones(1)}, pickle_protocol=4)))
    assert data[:2] == b"\x80\x04" and b"\x95" not in data
    assert assert_same(data) == 2  # the first names its classes inline
    record_b = b"h\x05h\x08\x8c\x011\x94h\nK\x03t\x94QK\x00K\x03\x85\x94K\x01\x85\x94\x89h\x10"
    variants = [
        # location read from the index the storage key has just been memoized at (21)
        data.replace(record_b, record_b.replace(b"\x94h\n", b"\x94h\x15")),
        # OrderedDict read from the storage-id tuple's index (22)
        data.replace(record_b, record_b.replace(b"\x89h\x10", b"\x89h\x16")),
        # an entry never stored
        data.replace(record_b, record_b.replace(b"h\x05h\x08", b"h\x05h\x7f")),
        # a hole: an entry at 24 before record b, so its MEMOIZEs land on it from there
        data.replace(b"\x8c\x01b", b"Nr\x18\x00\x00\x000\x8c\x01b"),
        # the location's entry overwritten (BINPUT) before record c
        data.replace(b"\x8c\x01c", b"Nq\n0\x8c\x01c"),
        # the rebuild function read from the index the next key was just memoized at
        data.replace(b"\x8c\x01c\x94h\x04", b"\x8c\x01c\x94h\x1c"),
        # the next key as BINUNICODE, or memoized with BINPUT, or not memoized
        data.replace(b"\x8c\x01c\x94", b"X\x01\x00\x00\x00c\x94"),
        data.replace(b"\x8c\x01c\x94", b"\x8c\x01cq\x1c"),
        data.replace(b"\x8c\x01c\x94", b"\x8c\x01c"),
        # a record's PUTs mixing MEMOIZE and BINPUT
        data.replace(record_b, record_b.replace(b"t\x94Q", b"tq\x16Q")),
    ]
    assert all(v != data for v in variants), "a trap did not apply; the corpus bytes moved"
    for v in variants:
        assert_same(v)
        assert_same(memo_probe(v) if _parses(v) else v)
    # the memo budget at every count around the records' MEMOIZEs: the same error at the
    # same byte
    for max_memo in range(16, 40):
        assert_same(data, budgets=Budgets(max_memo=max_memo))
    long_keys = pickle_of(saved_bytes({"k" * 300: torch.ones(2), "x" * 256: torch.ones(3),
                                  "y": torch.tensor(1.0)}, pickle_protocol=5))
    assert assert_same(long_keys) == 2


def test_records_the_patterns_never_fit_are_left_to_the_loop(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Records of over 64 dimensions (no layout fits them): after a streak of misses the
    general pattern is tried less and less often, and records that fit still run."""

    class Counting:
        def __init__(self) -> None:
            self.calls = 0

        def match(self, data: bytes, at: int) -> Any:
            self.calls += 1
            return pickle_vm._record_pattern().match(data, at)

    state = {f"deep.{i}": torch.zeros([1] * 65) for i in range(600)}
    state.update({f"flat.{i}": torch.ones(2) for i in range(300)})
    data = pickle_of(saved_bytes(state))
    for bulk in (False, True):
        counting = Counting()
        monkeypatch.setattr(pickle_vm, "_RECORD", counting)
        monkeypatch.setattr(pickle_vm, "BULK_RECORDS", bulk)
        extra = assert_same(data)
        assert 200 < extra <= 300  # the flat records (less the few the loop ran)
        assert counting.calls < 2 * 30 + 600 // 16  # not one per deep record


def _parses(data: bytes) -> bool:
    try:
        list(pickletools.genops(data))
    except Exception:
        return False
    return data.endswith(b".")


class Boom(RuntimeError):
    pass


@pytest.mark.parametrize("error", [ValueError, KeyError, Boom, RecursionError])
@pytest.mark.parametrize("hook", ["persistent", "ordered_dict", "rebuild"])
@pytest.mark.parametrize("scalars", [False, True])
def test_a_failing_hook_leaves_the_same_state(hook: str, error: type[Exception],
                                              scalars: bool) -> None:
    """A hook that raises inside a record: the machine reports the same error at the same
    byte with the same partial tree as the opcodes would (or lets the same exception
    out). Scalars (0-d tensors: no PUT for their empty size) take the general step."""
    make = (lambda i: torch.tensor(float(i))) if scalars else (lambda i: torch.ones(i + 1))
    data = pickle_of(saved_bytes({f"t{i}": make(i) for i in range(6)}))
    for fail_at in (1, 3, 6):
        outcomes = []
        for fast in (False, True):
            ctx = TorchPickleContext(READER)
            reducers = ctx.reducers()

            def failing(real: Callable[..., Any], fail_at: int = fail_at) -> Callable[..., Any]:
                count = [0]

                def hook(*args: Any) -> Any:
                    count[0] += 1
                    if count[0] == fail_at:
                        raise error("hook failed")
                    return real(*args)
                return hook

            persistent = ctx.persistent_load
            if hook == "persistent":
                persistent = failing(persistent)
            elif hook == "ordered_dict":
                reducers["collections.OrderedDict"] = failing(reducers["collections.OrderedDict"])
            else:
                name = "torch._utils._rebuild_tensor_v2"
                reducers[name] = failing(reducers[name])
            try:
                res = run_pickle(data, fast=fast, persistent_load=persistent,
                                 reducers=reducers, builders={"*": ctx.build})
                outcomes.append(("result", result_facts(res), context_facts(ctx)))
            except Exception as exc:
                outcomes.append(("raised", type(exc), str(exc), context_facts(ctx)))
        assert outcomes[0] == outcomes[1], (hook, error, fail_at)


@pytest.mark.parametrize("extra_marks", range(0, 5))
def test_mark_depth_budget_at_the_edge(extra_marks: int) -> None:
    data = pickle_of(saved_bytes({"a": torch.ones(2), "b": torch.ones(2, 2), "c": torch.ones(3)}))
    depth = 50
    wrapped = data[:2] + b"(" * depth + data[2:]
    assert_same(wrapped, budgets=Budgets(max_mark_depth=depth + extra_marks))


@pytest.mark.parametrize("budgets", [Budgets(max_string=3), Budgets(max_string=8),
                                     Budgets(max_ops=5_000), Budgets(max_memo=50),
                                     Budgets(max_pickle_bytes=4_000)])
def test_other_budgets(corpus: dict[str, bytes], budgets: Budgets) -> None:
    slow, fast, _ = run_both(corpus["many_300"], budgets=budgets)
    if budgets.max_ops < DEFAULT_BUDGETS.max_ops or budgets.max_memo < DEFAULT_BUDGETS.max_memo:
        # checked between chunks of opcodes: both stop, though not at the same record
        assert slow["budget_exceeded"] and fast["budget_exceeded"]
        assert slow["error"] == fast["error"]
    else:
        assert slow == fast


def test_opcode_counts_stay_an_upper_bound(corpus: dict[str, bytes]) -> None:
    for name in ("many_300", "shapes", "training", "views"):
        data = corpus[name]
        actual = sum(1 for _ in pickletools.genops(data))
        fast = run_pickle(data, fast=True)
        assert fast.complete
        assert actual <= fast.ops <= actual + 2 * 4096 + 64


def test_every_truncation_point(corpus: dict[str, bytes]) -> None:
    data = pickle_of(saved_bytes(_fuzz_state()))
    for cut in range(len(data) + 1):
        assert_same(data[:cut])
    assert_same(data[:-1], torch_meaning=False)


def _fuzz_state() -> dict[str, Any]:
    g = torch.Generator().manual_seed(5)
    base = torch.randn(10, generator=g)
    return {"w": torch.randn(3, 2, generator=g), "b": torch.randn(3, generator=g),
            "s": torch.tensor(2), "v": base[2:7], "v2": base[::2], "h": base.half(),
            "p": nn.Parameter(torch.randn(2)), "n": torch.zeros(2, 1, 2, 1, 2)}


def test_random_byte_flips(corpus: dict[str, bytes]) -> None:
    data = pickle_of(saved_bytes(_fuzz_state()))
    rng = random.Random(20240611)
    interesting = b"hjqrKMJXtQR()\x85\x86\x87\x88\x89"
    for i in range(4000):
        damaged = bytearray(data)
        for _ in range(1 + i % 3):
            at = rng.randrange(len(damaged))
            if i % 2:
                damaged[at] = rng.randrange(256)
            else:  # another opcode of the record's alphabet, or an off-by-one index
                damaged[at] = rng.choice([*interesting, (damaged[at] + 1) % 256])
        assert_same(bytes(damaged))


def test_flips_keep_the_machine_plain(corpus: dict[str, bytes]) -> None:
    """The machine without torch's meanings (as scanners run it) agrees too."""
    data = pickle_of(saved_bytes(_fuzz_state()))
    rng = random.Random(7)
    for _ in range(1000):
        damaged = bytearray(data)
        damaged[rng.randrange(len(damaged))] = rng.randrange(256)
        assert_same(bytes(damaged), torch_meaning=False)


def test_records_built_by_hand() -> None:
    """Forms torch.save does not write but the record pattern accepts: MARK...TUPLE
    sizes, BININT2/BININT values, a negative BININT offset, NEWTRUE, no PUTs at all, and a
    rebuild function that is not a Global."""
    head = b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\nq\x00X\x07\x00\x00\x00storageq\x01" \
           b"ctorch\nFloatStorage\nq\x02X\x03\x00\x00\x00cpuq\x03" \
           b"ccollections\nOrderedDict\nq\x040"

    def record(key: bytes, numel: bytes, offset: bytes, size: bytes, stride: bytes,
               rg: bytes = b"\x89", puts: bool = True) -> bytes:
        def put(i: int) -> bytes:
            return b"r" + i.to_bytes(4, "little") if puts else b""
        return (b"h\x00((h\x01h\x02X" + len(key).to_bytes(4, "little") + key + put(100)
                + b"h\x03" + numel + b"t" + put(101) + b"Q" + offset + size + put(102)
                + stride + put(103) + rg + b"h\x04)R" + put(104) + b"t" + put(105) + b"R"
                + put(106))

    records = [
        record(b"0", b"K\x06", b"K\x00", b"K\x02K\x03\x86", b"K\x03K\x01\x86"),
        record(b"1", b"M\x00\x01", b"M\x01\x00", b"(K\x02K\x02K\x02K\x02t",
               b"(K\x08K\x04K\x02K\x01t"),
        record(b"2", b"J\x00\x00\x01\x00", b"J\xff\xff\xff\xff", b"K\x02\x85", b"K\x01\x85"),
        record(b"3", b"K\x01", b"K\x00", b")", b")", rg=b"\x88"),
        record(b"4", b"K\x04", b"K\x00", b"K\x04\x85", b"K\x01\x85", puts=False),
        record(b"5", b"K\x04", b"K\x00", b"(t", b"(t"),
        record(b"6", b"K\x04", b"K\x02", b"K\x02\x85", b"K\x01\x85"),  # past the end
        record(b"123456789", b"K\x04", b"K\x00", b"K\x04\x85", b"K\x01\x85"),
        record(b"1234567890", b"K\x04", b"K\x00", b"K\x04\x85", b"K\x01\x85"),
        record("é".encode(), b"K\x04", b"K\x00", b"K\x04\x85", b"K\x01\x85"),
    ]
    data = head + b"(" + b"".join(records) + b"l."
    extra = assert_same(data)
    assert extra > 0
    assert_same(memo_probe(data))
    # the rebuild function stored as something else at the same index
    assert_same(head.replace(b"q\x00X", b"0N\x85q\x00X", 1) + b"(" + records[0] + b"l.")
    # without reducers (plain machine), and with no persistent_load
    assert_same(data, torch_meaning=False)


def test_the_fast_path_never_sees_a_module_it_would_import() -> None:
    """Nothing is imported: a record naming a module that does not exist reads the same."""
    data = pickle_of(saved_bytes({"w": torch.ones(2), "b": torch.ones(2)})).replace(
        b"ctorch\nFloatStorage\n", b"cnot_a_module\nFloatStorage\n")
    slow, fast, extra = run_both(data)
    assert slow == fast and extra > 0
    assert "not_a_module.FloatStorage" in dict(fast["globals"])


def test_equal_counts_of_calls_and_globals(corpus: dict[str, bytes]) -> None:
    slow, fast, _ = run_both(corpus["many_70000"])
    assert collections.Counter(dict(fast["calls"])) == collections.Counter(dict(slow["calls"]))
    assert dict(fast["calls"])["torch._utils._rebuild_tensor_v2"] == 70_000


def test_pickle_module_dumps_are_untouched() -> None:
    for protocol in range(6):
        value = {"a": [1, 2, (3, 4)], "b": {"c": "d"}, "e": 2**70}
        assert_same(pickle.dumps(value, protocol=protocol), torch_meaning=False)
