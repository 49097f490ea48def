"""What torch's pickles mean: storages, tensor rebuild calls, modules.

The pickle machine hands each known call here instead of running it; the results are
TensorInfo values whose sources read the storage bytes later, memory-mapped.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import fields
from itertools import compress, repeat
from operator import itemgetter, mul, not_
from typing import Any

from ..checkpoint import DTYPE_SIZES, TensorInfo
from .pickle_vm import Call, Global, PickledSet

STORAGE_DTYPES: dict[str, str] = {
    "DoubleStorage": "float64", "FloatStorage": "float32", "HalfStorage": "float16",
    "LongStorage": "int64", "IntStorage": "int32", "ShortStorage": "int16",
    "CharStorage": "int8", "ByteStorage": "uint8", "BoolStorage": "bool",
    "BFloat16Storage": "bfloat16", "ComplexDoubleStorage": "complex128",
    "ComplexFloatStorage": "complex64", "QInt8Storage": "qint8", "QInt32Storage": "qint32",
    "QUInt8Storage": "quint8", "QUInt4x2Storage": "quint4x2", "QUInt2x4Storage": "quint2x4",
    "UntypedStorage": "uint8", "TypedStorage": "uint8",
}


class ModuleDict(dict):
    """The state dict of a pickled module (nn.Module or TorchScript object)."""


class StorageRef:
    """One storage record: its key in the archive, element dtype, device tag, size.

    ``itemsize`` and ``nbytes`` are worked out once here: every tensor on the storage
    reads them."""

    __slots__ = ("dtype", "itemsize", "key", "location", "nbytes", "numel")

    def __init__(self, key: str, dtype: str, location: str, numel: int) -> None:
        self.key = key
        self.dtype = dtype
        self.location = location
        self.numel = numel
        self.itemsize = DTYPE_SIZES.get(dtype, 1)
        self.nbytes = numel * self.itemsize

    def __repr__(self) -> str:
        return f"<storage {self.key} {self.dtype}[{self.numel}] on {self.location}>"


class StorageBytes:
    """Reads a storage's bytes; each file format provides one (zip record, legacy offset)."""

    def buffer(self, ref: StorageRef) -> Any:  # pragma: no cover - interface
        raise NotImplementedError

    little_endian: bool = True


class StorageTensorSource:
    """A tensor view (offset, size, stride) over a storage, read memory-mapped on demand."""

    __slots__ = ("dtype", "offset", "reader", "size", "storage", "stride")

    def __init__(self, reader: StorageBytes, storage: StorageRef, offset: int,
                 size: tuple[int, ...], stride: tuple[int, ...], dtype: str) -> None:
        self.reader = reader
        self.storage = storage
        self.offset = offset
        self.size = size
        self.stride = stride
        self.dtype = dtype

    def load(self) -> Any:
        import numpy as np
        import torch

        from ..errors import CorruptCheckpointError

        torch_dtype = getattr(torch, self.dtype)
        itemsize = DTYPE_SIZES.get(self.dtype, 1)
        raw = self.reader.buffer(self.storage)
        if len(raw) % itemsize:
            raise CorruptCheckpointError(
                f"Storage {self.storage.key} holds {len(raw)} bytes, not a whole number of "
                f"{self.dtype} values."
            )
        if len(raw) == 0:
            flat = torch.empty(0, dtype=torch_dtype)
        else:
            if not self.reader.little_endian and itemsize > 1:
                # complex numbers swap their real and imaginary halves separately
                unit = itemsize // 2 if self.dtype.startswith("complex") else itemsize
                swapped = np.frombuffer(raw, dtype=np.uint8).reshape(-1, unit)[:, ::-1]
                raw = np.ascontiguousarray(swapped).reshape(-1)
            flat = torch.frombuffer(raw, dtype=torch_dtype)
        return flat.as_strided(self.size, self.stride, self.offset)

    def raw(self) -> Any | None:
        """The view's elements as little-endian bytes, when they are one run of the
        storage in order; else None (then ``load``). A check that only counts values
        (non-finite ones) reads hundreds of small tensors: building a tensor for each
        costs more than reading it."""
        itemsize = DTYPE_SIZES.get(self.dtype)
        if itemsize is None or not self.reader.little_endian:
            return None
        count = 1
        for n, step in zip(reversed(self.size), reversed(self.stride)):
            if n != 1 and step != count:
                return None  # not laid out in order (a transpose, a slice with a step)
            count *= n
        raw = self.reader.buffer(self.storage)
        start = self.offset * itemsize
        end = start + count * itemsize
        if len(raw) % itemsize or end > len(raw) or self.offset < 0:
            return None  # ``load`` says what is wrong
        return raw[start:end]


_new = object.__new__
_consume = deque(maxlen=0).extend  # runs a map for its effects, in C
_INFO_FIELDS = ("shape", "dtype", "device", "nbytes", "layout", "source")
_COUNT = itemgetter(0)  # of a (count, extent) geometry, or a (dtype, itemsize) pair
_ITEMSIZE = itemgetter(1)  # of a (dtype, itemsize) pair


def _slot_setters() -> tuple[Callable[[Any, Any], None], ...] | None:
    """TensorInfo's slot setters, in field order, when filling a bare instance through
    them gives what its constructor gives; else None (then the constructor is used and
    the bulk form is not offered). TensorInfo is frozen: its generated __init__ sets
    each field through object.__setattr__, a call and a name lookup per field, which
    costs twice what the slot setters cost."""
    try:
        setters = tuple(vars(TensorInfo)[name].__set__ for name in _INFO_FIELDS)
        made = _new(TensorInfo)
        if (tuple(f.name for f in fields(TensorInfo)) != _INFO_FIELDS
                or hasattr(TensorInfo, "__post_init__") or hasattr(made, "__dict__")):
            return None
        probe = (2, 3), "float32", "cpu", 24, "strided", StorageBytes()
        for setter, value in zip(setters, probe):
            setter(made, value)
        want = TensorInfo(*probe)
        if made == want and all(getattr(made, f) is getattr(want, f) for f in _INFO_FIELDS):
            return setters
    except (AttributeError, KeyError, TypeError):
        pass
    return None


_SETTERS = _slot_setters()
if _SETTERS is not None:
    _SET_SHAPE, _SET_DTYPE, _SET_DEVICE, _SET_NBYTES, _SET_LAYOUT, _SET_SOURCE = _SETTERS


def _strided_info(shape: tuple[int, ...], dtype: str, device: str, nbytes: int,
                  source: Any) -> TensorInfo:
    """``TensorInfo(shape, dtype, device, nbytes, "strided", source)``, filled through
    the slot setters when they work (see ``_slot_setters``)."""
    if _SETTERS is None:
        return TensorInfo(shape, dtype, device, nbytes, "strided", source)
    info = _new(TensorInfo)
    _SET_SHAPE(info, shape)
    _SET_DTYPE(info, dtype)
    _SET_DEVICE(info, device)
    _SET_NBYTES(info, nbytes)
    _SET_LAYOUT(info, "strided")
    _SET_SOURCE(info, source)
    return info


def _ints(value: Any) -> tuple[int, ...]:
    if type(value) is not tuple or not all(type(v) is int for v in value):
        raise TypeError("expected a tuple of ints")
    return value


def _geometry(size: tuple[int, ...], stride: tuple[int, ...]) -> tuple[int, int]:
    """A view's element count and the elements it spans from its offset, as ``tensor``
    works them out; (-1, 0) when ``tensor`` would not take it as a plain view (sizes and
    strides of different lengths, or negative)."""
    if len(size) != len(stride):
        return -1, 0
    count = 1
    extent = 1
    for s, st in zip(size, stride):
        if s < 0 or st < 0:
            return -1, 0
        count *= s
        extent += (s - 1) * st
    return count, extent


def _numel(size: tuple[int, ...]) -> int:
    n = 1
    for s in size:
        n *= s
    return n


class TorchPickleContext:
    """State shared by one file's reducers: storages, problems, classes seen."""

    def __init__(self, reader: StorageBytes | None, *, legacy: bool = False) -> None:
        self.reader = reader
        self.legacy = legacy
        self.storages: dict[str, StorageRef] = {}
        self.problems: list[str] = []
        self.layouts: dict[str, int] = {}
        self.module_classes: dict[str, int] = {}
        self.numpy_dtype_codes: set[str] = set()
        self.torchscript = False
        # storage class -> (dtype, itemsize); Globals hash by identity: no flood
        self._dtypes: dict[Global, tuple[str, int]] = {}
        # pickle bytes of a size and stride -> (element count, extent past the offset);
        # bytes hash with a salt: no flood
        self._geometry: dict[bytes, tuple[int, int]] = {}

    # -- persistent ids -------------------------------------------------------------------
    def persistent_load(self, pid: Any) -> Any:
        if (self.legacy and type(pid) is tuple and len(pid) == 4 and pid[0] == "module"
                and type(pid[1]) is Global):
            # a whole module saved in the legacy format: torch's loader returns the class
            # (pid[1], named by a GLOBAL and judged as such), never calls anything here
            return pid[1]
        if type(pid) is not tuple or len(pid) < 5 or pid[0] != "storage":
            return Call(None, pid, "pid")
        _, storage_type, key, location, numel = pid if len(pid) == 5 else pid[:5]
        if type(numel) is not int or numel < 0 or type(key) is not str:
            self.problems.append(f"a storage reference is malformed: {pid!r}"[:200])
            return Call(None, pid, "pid")
        ref = self.storages.get(key)
        if ref is None:
            if type(location) is not str:
                location = str(location) if isinstance(location, str) else "cpu"
            kind = self._storage_dtype(storage_type)
            # StorageRef.__init__'s work, without a call: one of these per tensor
            ref = _new(StorageRef)
            ref.key = key
            ref.dtype, ref.itemsize = kind
            ref.location = location
            ref.numel = numel
            ref.nbytes = numel * kind[1]
            self.storages[key] = ref
        if self.legacy and len(pid) >= 6 and pid[5] is not None:
            self.problems.append(f"storage {key} is a view of another storage (legacy format)")
        return ref

    def bulk_form(self, persistent_load: Any, rebuild: Any) -> Callable[..., Any] | None:
        """``tensors_in_bulk``, offered to the pickle machine only when its hooks are this
        context's own ``persistent_load`` and ``tensor``, neither wrapped nor overridden:
        only then is the bulk form the same as calling them record by record."""
        cls = type(self)
        if (persistent_load == self.persistent_load and rebuild == self.tensor
                and cls.persistent_load is TorchPickleContext.persistent_load
                and cls.tensor is TorchPickleContext.tensor
                and cls.tensors_in_bulk is TorchPickleContext.tensors_in_bulk
                and _SETTERS is not None):
            return self.tensors_in_bulk
        return None

    def tensors_in_bulk(self, tag: Any, kinds: list[Any], location: Any, keys: list[str],
                        numels: list[int], offsets: list[int],
                        sizes: list[tuple[int, ...]], strides: list[tuple[int, ...]],
                        shapes: list[bytes], od: Any
                        ) -> tuple[list[Any], Callable[[], Any], list[Any]] | None:
        """A run of torch.save's tensor records at once: for each record, what
        ``persistent_load((tag, kind, key, location, numel))`` (``kind`` the record's own of
        ``kinds``, its storage class) and ``tensor(ref, offset, size, stride)`` give, as
        ``(refs, make_empty, values)``, with the same storages recorded; ``make_empty`` is
        the OrderedDict reducer (no arguments, no effects), called by the machine only for
        the empty values something reads. ``shapes`` names each record's size and stride
        (equal names, equal sizes and strides: the pickle bytes that hold them), so their
        geometry is worked out once. Only for the plain case (valid storage ids, views
        inside their storage): otherwise None and nothing changed, so the machine runs the
        records one by one and the problems are reported in their order. The usual run (new
        storages, one record each) is built in passes; any other goes record by record, as
        the machine would."""
        if (type(tag) is not str or tag != "storage" or type(location) is not str
                or type(od) is not Global or od.reducer is not _ordered_dict
                or not keys or min(numels) < 0 or min(offsets) < 0):
            return None
        made = self._new_storages_run(kinds, location, keys, numels, offsets, sizes,
                                      strides, shapes)
        if made is None:  # a storage named twice or known already, or an unusual view
            return self._records_one_by_one(kinds, location, keys, numels, offsets, sizes,
                                            strides, shapes)
        return made

    def _new_storages_run(self, kinds: list[Any], location: str, keys: list[str],
                          numels: list[int], offsets: list[int],
                          sizes: list[tuple[int, ...]], strides: list[tuple[int, ...]],
                          shapes: list[bytes]) -> tuple[list[Any], Callable[[], Any],
                                                        list[Any]] | None:
        """``tensors_in_bulk`` for the usual run: each record names a storage of its own, not
        seen before, and views it from inside; None, with nothing changed, for any other
        run. Dtype, itemsize and whether sources are built are worked out once per storage
        class (the same object: classes are told apart by identity, as ``persistent_load``
        tells them), once for the run when it has one class; the objects are made in C
        (``map``); storages and sources are filled by one loop of plain stores (cheaper than
        a slot setter per field), the frozen values a column at a time through their slot
        setters (which their own __setattr__ leaves as the only way); each storage is
        recorded by one ``setdefault`` probe (a cache miss in a big file's dict) before
        anything is filled, which also finds the keys that are not new."""
        by_id = dict(zip(map(id, kinds), kinds))
        reader = self.reader
        new = _new
        n = len(keys)
        sources: Any = repeat(None)
        if len(by_id) == 1:
            dtype, itemsize = self._storage_dtype(kinds[0])
            dtypes: Any = repeat(dtype)
            itemsizes: Any = repeat(itemsize)
            if reader is not None and dtype in DTYPE_SIZES:
                sources = list(map(new, repeat(StorageTensorSource, n)))
        else:  # a state dict that mixes dtypes
            info = {i: self._storage_dtype(kind) for i, kind in by_id.items()}
            per_record = list(map(info.__getitem__, map(id, kinds)))
            dtypes = list(map(_COUNT, per_record))
            itemsizes = list(map(_ITEMSIZE, per_record))
            if reader is not None:
                sourced = {d: d in DTYPE_SIZES for d in set(dtypes)}
                sources = [new(StorageTensorSource) if sourced[d] else None for d in dtypes]
        geos = list(map(self._geometry.get, shapes))
        if not all(geos):  # shapes not seen yet: as the loop below would meet them
            for i in compress(range(len(geos)), map(not_, geos)):
                geos[i] = self._view_geometry(shapes[i], sizes[i], strides[i])
        refs = list(map(new, repeat(StorageRef, n)))
        storages = self.storages
        if list(map(storages.setdefault, keys, refs)) != refs:
            for key, ref in zip(keys, refs):  # a key not new: take this run's back out
                if storages.get(key) is ref:
                    del storages[key]
            return None
        for (ref, source, key, numel, offset, size, stride, (count, extent), dtype,
             itemsize) in zip(refs, sources, keys, numels, offsets, sizes, strides, geos,
                              dtypes, itemsizes):
            if count <= 0 or offset + extent > numel:
                if count:  # negative sizes, or a view past its storage
                    for key in keys:
                        del storages[key]
                    return None
            ref.key = key
            ref.dtype = dtype
            ref.itemsize = itemsize
            ref.location = location
            ref.numel = numel
            ref.nbytes = numel * itemsize
            if source is not None:
                source.reader = reader
                source.storage = ref
                source.offset = offset
                source.size = size
                source.stride = stride
                source.dtype = dtype
        # the values, as ``tensor`` fills them: a column at a time, in C
        values = list(map(new, repeat(TensorInfo, n)))
        _consume(map(_SET_SHAPE, values, sizes))
        _consume(map(_SET_DTYPE, values, dtypes))
        _consume(map(_SET_DEVICE, values, repeat(location)))
        _consume(map(_SET_NBYTES, values, map(mul, map(_COUNT, geos), itemsizes)))
        _consume(map(_SET_LAYOUT, values, repeat("strided")))
        _consume(map(_SET_SOURCE, values, sources))
        return refs, _ordered_dict, values

    def _records_one_by_one(self, kinds: list[Any], location: str, keys: list[str],
                            numels: list[int], offsets: list[int],
                            sizes: list[tuple[int, ...]], strides: list[tuple[int, ...]],
                            shapes: list[bytes]) -> tuple[list[Any], Callable[[], Any],
                                                          list[Any]] | None:
        """``tensors_in_bulk`` record by record, for the runs ``_new_storages_run`` leaves:
        storages named twice or already known share their StorageRef, and the first
        record outside the plain case refuses the run (the storages it added go again)."""
        storages = self.storages
        get = storages.get
        reader = self.reader
        made: list[str] = []  # storages added here, removed again if the run is refused
        refs: list[Any] = []
        values: list[Any] = []
        new = _new
        for key, numel, offset, size, stride, shape, kind in zip(keys, numels, offsets,
                                                                sizes, strides, shapes, kinds):
            ref = get(key)
            if ref is None:
                kind_info = self._storage_dtype(kind)
                ref = new(StorageRef)  # with the class's own itemsize, as persistent_load
                ref.key = key
                ref.dtype, ref.itemsize = kind_info
                ref.location = location
                ref.numel = numel
                ref.nbytes = numel * kind_info[1]
                storages[key] = ref
                made.append(key)
            refs.append(ref)
            count, extent = self._view_geometry(shape, size, stride)
            if count < 0 or (count and offset + extent > ref.numel):
                break  # negative sizes, or a view past its storage: ``tensor`` knows
            dtype = ref.dtype
            source = None
            if reader is not None and dtype in DTYPE_SIZES:
                source = StorageTensorSource(reader, ref, offset, size, stride, dtype)
            values.append(_strided_info(size, dtype, ref.location, count * ref.itemsize,
                                        source))
        else:
            return refs, _ordered_dict, values
        for key in made:
            del storages[key]
        return None

    def _view_geometry(self, shape: bytes, size: tuple[int, ...],
                       stride: tuple[int, ...]) -> tuple[int, int]:
        """``_geometry(size, stride)``, remembered by the pickle bytes ``shape`` that hold
        them (up to 4,096 of them)."""
        geo = self._geometry.get(shape)
        if geo is None:
            geo = _geometry(size, stride)
            if len(self._geometry) < 4096:
                self._geometry[shape] = geo
        return geo

    def _storage_dtype(self, storage_type: Any) -> tuple[str, int]:
        """The element dtype a storage class names (FloatStorage, or torch.float32 in the
        untyped form) and its size, worked out once per class."""
        if type(storage_type) is not Global:
            return "uint8", 1
        known = self._dtypes.get(storage_type)
        if known is not None:
            return known
        dtype = STORAGE_DTYPES.get(storage_type.name) or _dtype_of(storage_type) or "uint8"
        kind = self._dtypes[storage_type] = (dtype, DTYPE_SIZES.get(dtype, 1))
        return kind

    # -- tensors --------------------------------------------------------------------------
    def tensor(self, storage: Any, offset: Any, size: Any, stride: Any, *_rest: Any,
               dtype: str | None = None) -> Any:
        """A strided tensor on a storage (``_rebuild_tensor_v2``'s arguments; ``dtype``
        when the call names one). Raises TypeError for arguments of another shape, so the
        machine keeps the call as a record."""
        if type(size) is not tuple:
            size = tuple(size) if type(size) is list else _ints(size)
        if type(stride) is not tuple:
            stride = tuple(stride) if type(stride) is list else _ints(stride)
        if type(storage) is not StorageRef or type(offset) is not int:
            raise TypeError("not a storage")
        if dtype:
            itemsize = DTYPE_SIZES.get(dtype, 1)
            storage_elems = storage.nbytes // itemsize
        else:
            dtype = storage.dtype
            itemsize = storage.itemsize
            storage_elems = storage.numel
        numel = 1
        extent = offset + 1
        for s, st in zip(size, stride):
            if type(s) is not int or type(st) is not int or s < 0 or st < 0:
                raise TypeError("sizes and strides are non-negative ints")
            numel *= s
            extent += (s - 1) * st
        source = None
        if offset < 0 or len(size) != len(stride):
            self.problems.append(f"a tensor on storage {storage.key} has an invalid view")
        elif numel and extent > storage_elems:
            self.problems.append(
                f"a tensor reads past the end of storage {storage.key} "
                f"({extent} > {storage_elems} elements)"
            )
        elif self.reader is not None and dtype in DTYPE_SIZES:
            # StorageTensorSource.__init__'s work, without a call: one per tensor
            source = _new(StorageTensorSource)
            source.reader = self.reader
            source.storage = storage
            source.offset = offset
            source.size = size
            source.stride = stride
            source.dtype = dtype
        return _strided_info(size, dtype, storage.location, numel * itemsize, source)

    def rebuild_v3(self, storage, offset, size, stride, _rg, _hooks, dtype, *_rest):
        name = dtype.name if isinstance(dtype, Global) else None
        return self.tensor(storage, offset, size, stride, dtype=name)

    def rebuild_qtensor(self, storage, offset, size, stride, *_rest):
        info = self.tensor(storage, offset, size, stride)
        self._count("quantized")
        return TensorInfo(info.shape, info.dtype, info.device, info.nbytes, "quantized")

    def rebuild_sparse(self, layout, data):
        parts = list(data) if isinstance(data, (tuple, list)) else []
        infos = [p for p in parts if isinstance(p, TensorInfo)]
        shape = next((p for p in reversed(parts) if type(p) is tuple), ())
        name = layout.name if isinstance(layout, Global) else str(layout)
        layout_name = name.removeprefix("torch.")
        self._count(layout_name)
        dtype = infos[-1].dtype if infos else "float32"
        device = infos[-1].device if infos else "cpu"
        return TensorInfo(tuple(shape), dtype, device, sum(i.nbytes for i in infos), layout_name)

    def rebuild_meta(self, dtype, size, stride, *_rest):
        name = dtype.name if isinstance(dtype, Global) else "float32"
        size = _ints(size)
        self._count("meta")
        return TensorInfo(size, name, "meta", _numel(size) * DTYPE_SIZES.get(name, 1), "meta")

    def rebuild_wrapper_subclass(self, cls, dtype, size, stride, offset, layout, device, *_r):
        name = dtype.name if isinstance(dtype, Global) else "float32"
        size = _ints(size)
        self._count("subclass")
        return TensorInfo(size, name, str(device), _numel(size) * DTYPE_SIZES.get(name, 1),
                          "subclass")

    def rebuild_nested(self, buffer, sizes, *_rest):
        self._count("nested")
        dtype = buffer.dtype if isinstance(buffer, TensorInfo) else "float32"
        nbytes = buffer.nbytes if isinstance(buffer, TensorInfo) else 0
        return TensorInfo((), dtype, "cpu", nbytes, "nested")

    def rebuild_from_numpy(self, data, dtype, device, *_rest):
        name = dtype.name if isinstance(dtype, Global) else "float32"
        self._count("numpy")
        return TensorInfo((), name, str(device), 0, "numpy")

    def rebuild_from_cpu(self, data, dtype, device, *_rest):
        if isinstance(data, TensorInfo):
            return TensorInfo(data.shape, data.dtype, str(device), data.nbytes, data.layout,
                              data.source)
        raise TypeError("not a tensor")

    def numpy_dtype(self, code: Any, *rest: Any) -> Any:
        """numpy.dtype('f8'): torch's weights-only loader also needs the dtype's class
        (numpy.dtypes.Float64DType) allowlisted, so remember which codes appear."""
        if type(code) is str and len(code) <= 8:
            self.numpy_dtype_codes.add(code)
        return Call(Global("numpy", "dtype"), (code, *rest))

    def numpy_scalar(self, dtype: Any, data: Any = None) -> Any:
        """A numpy scalar (a best score, a seed) as a plain number for the metadata."""
        if not (isinstance(dtype, Call) and type(dtype.args) is tuple and dtype.args
                and type(data) is bytes and len(data) <= 16):
            raise TypeError("not a numpy scalar")
        import re

        code = dtype.args[0]
        if type(code) is not str or not re.fullmatch(r"[<>|=]?[fiucb]\d{0,2}", code):
            raise TypeError("not a plain numeric dtype")
        import numpy as np

        np_dtype = np.dtype(code)
        if np_dtype.itemsize != len(data):
            raise TypeError("size mismatch")
        return np.frombuffer(data, dtype=np_dtype)[0].item()

    def _count(self, layout: str) -> None:
        self.layouts[layout] = self.layouts.get(layout, 0) + 1

    # -- modules --------------------------------------------------------------------------
    def build(self, call: Call, state: Any) -> Any:
        """BUILD of an unknown class: nn.Module and TorchScript objects become state dicts."""
        if type(state) is dict and "_parameters" in state and "_modules" in state:
            self.module_classes[call.name] = self.module_classes.get(call.name, 0) + 1
            return module_state(state)
        if call.name.startswith("__torch__.") and type(state) is dict:
            self.torchscript = True
            self.module_classes[call.name] = self.module_classes.get(call.name, 0) + 1
            return script_state(state)
        call.state = state
        return call

    def reducers(self) -> dict[str, Callable[..., Any]]:
        return {
            "torch._utils._rebuild_tensor_v2": self.tensor,
            "torch._utils._rebuild_tensor": self.tensor,
            "torch._utils._rebuild_tensor_v3": self.rebuild_v3,
            "torch._utils._rebuild_parameter": _first,
            "torch._utils._rebuild_parameter_with_state": _first,
            "torch._tensor._rebuild_from_type_v2": _from_type_v2,
            "torch._tensor._rebuild_from_type": _from_type_v2,
            "torch._utils._rebuild_qtensor": self.rebuild_qtensor,
            "torch._utils._rebuild_sparse_tensor": self.rebuild_sparse,
            "torch._utils._rebuild_meta_tensor_no_storage": self.rebuild_meta,
            "torch._utils._rebuild_wrapper_subclass": self.rebuild_wrapper_subclass,
            "torch._utils._rebuild_nested_tensor": self.rebuild_nested,
            "torch._utils._rebuild_device_tensor_from_numpy": self.rebuild_from_numpy,
            "torch._utils._rebuild_device_tensor_from_cpu_tensor": self.rebuild_from_cpu,
            "collections.OrderedDict": _ordered_dict,
            "torch.Size": _first_tuple,
            "torch.device": _device,
            "torch.serialization._get_layout": _first_str,
            "builtins.set": _set,
            "__builtin__.set": _set,
            "_codecs.encode": _encode,
            "numpy.dtype": self.numpy_dtype,
            "numpy.core.multiarray.scalar": self.numpy_scalar,
            "numpy._core.multiarray.scalar": self.numpy_scalar,
        }


def _first(data: Any, *_rest: Any) -> Any:
    if not isinstance(data, TensorInfo):
        raise TypeError("not a tensor")
    return data


def _from_type_v2(func: Any, _new_type: Any, args: Any, _state: Any = None) -> Any:
    if isinstance(func, Global) and func.reducer is not None and type(args) is tuple:
        return func.reducer(*args)
    raise TypeError("unknown rebuild function")


def _ordered_dict(*args: Any) -> Any:
    if not args:
        return {}
    raise TypeError("OrderedDict with arguments")


def _first_tuple(value: Any) -> Any:
    if type(value) is not tuple:
        raise TypeError("not a tuple")
    return value


def _first_str(value: Any) -> Any:
    if type(value) is not str:
        raise TypeError("not a string")
    return value


def _device(kind: Any, index: Any = None) -> str:
    if type(kind) is not str:
        raise TypeError("not a device")
    return kind if index is None or ":" in kind else f"{kind}:{index}"


def _set(items: Any = ()) -> PickledSet:
    if type(items) is not list:
        raise TypeError("not a list")
    return PickledSet(items, False)


def _encode(text: Any, encoding: str = "utf-8") -> bytes:
    if type(text) is not str or encoding not in ("latin1", "latin-1", "utf-8", "utf8"):
        raise TypeError("not a string")
    return text.encode(encoding)


def module_state(state: dict[str, Any]) -> ModuleDict:
    """An nn.Module's pickled __dict__ as its state dict (parameters, persistent buffers)."""
    out = ModuleDict()
    skip: set[str] = set()
    nonpersistent = state.get("_non_persistent_buffers_set")
    if isinstance(nonpersistent, PickledSet):
        skip = {v for v in nonpersistent.items if type(v) is str}
    for group in ("_parameters", "_buffers"):
        values = state.get(group)
        if isinstance(values, dict):
            for name, value in values.items():
                if isinstance(value, TensorInfo) and name not in skip:
                    out[str(name)] = value
    children = state.get("_modules")
    if isinstance(children, dict):
        for name, child in children.items():
            if isinstance(child, ModuleDict):
                for key, value in child.items():
                    out[f"{name}.{key}"] = value
    return out


def script_state(state: dict[str, Any]) -> ModuleDict:
    """A TorchScript object's attributes: tensors and submodules, as dotted keys."""
    out = ModuleDict()
    for name, value in state.items():
        if isinstance(value, TensorInfo):
            out[str(name)] = value
        elif isinstance(value, ModuleDict):
            for key, inner in value.items():
                out[f"{name}.{key}"] = inner
    return out


def _dtype_of(glob: Global) -> str | None:
    if glob.module == "torch" and glob.name in DTYPE_SIZES:
        return glob.name
    return None
