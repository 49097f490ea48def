"""Classify the globals a pickle names: safe, needs allowlisting, missing, or malicious.

The allowlist mirrors torch's weights-only unpickler (``torch/_weights_only_unpickler.py``)
without importing torch; the denylist names callables that run code or touch the system.
Nothing named here is ever imported: importability is judged from ``sys.modules`` and
top-level module specs only.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from dataclasses import dataclass, field

from ..checkpoint import Finding

_TORCH_DTYPES = {
    "float64", "float32", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8",
    "bool", "complex128", "complex64", "complex32", "qint8", "qint32", "quint8", "quint4x2",
    "quint2x4", "bits16", "bits8", "bits1x8", "bits2x4", "bits4x2", "float8_e4m3fn",
    "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz", "float8_e8m0fnu",
    "float4_e2m1fn_x2", "uint16", "uint32", "uint64", "uint1", "uint2", "uint3", "uint4",
    "uint5", "uint6", "uint7", "int1", "int2", "int3", "int4", "int5", "int6", "int7",
    "half", "float", "double", "long", "int", "short", "cfloat", "cdouble",
}
_STORAGE_NAMES = {
    "DoubleStorage", "FloatStorage", "HalfStorage", "LongStorage", "IntStorage",
    "ShortStorage", "CharStorage", "ByteStorage", "BoolStorage", "BFloat16Storage",
    "ComplexDoubleStorage", "ComplexFloatStorage", "QInt8Storage", "QInt32Storage",
    "QUInt8Storage", "QUInt4x2Storage", "QUInt2x4Storage",
}
_TENSOR_TYPES = {
    "DoubleTensor", "FloatTensor", "HalfTensor", "LongTensor", "IntTensor", "ShortTensor",
    "CharTensor", "ByteTensor", "BoolTensor", "BFloat16Tensor",
}
SAFE_GLOBALS: frozenset[str] = frozenset(
    {
        "collections.OrderedDict", "collections.Counter", "torch.nn.parameter.Parameter",
        "torch.serialization._get_layout", "torch.Size", "torch.Tensor", "torch.device",
        "_codecs.encode", "builtins.bytearray", "builtins.set", "builtins.complex",
        "__builtin__.set", "__builtin__.bytearray", "__builtin__.complex",
        "torch.storage.UntypedStorage", "torch.storage.TypedStorage",
        "torch.per_tensor_affine", "torch.per_tensor_symmetric", "torch.per_channel_affine",
        "torch.per_channel_symmetric", "torch.per_channel_affine_float_qparams",
        "torch._utils._rebuild_parameter_with_state", "torch._utils._rebuild_wrapper_subclass",
        "torch._utils._rebuild_device_tensor_from_cpu_tensor", "torch._utils._rebuild_tensor",
        "torch._utils._rebuild_qtensor", "torch._utils._rebuild_device_tensor_from_numpy",
        "torch._utils._rebuild_sparse_tensor", "torch._utils._rebuild_tensor_v2",
        "torch._utils._rebuild_parameter", "torch._utils._rebuild_meta_tensor_no_storage",
        "torch._utils._rebuild_nested_tensor", "torch._utils._rebuild_tensor_v3",
        "torch._tensor._rebuild_from_type_v2", "torch.sparse_coo", "torch.sparse_csr",
        "torch.sparse_csc", "torch.sparse_bsr", "torch.sparse_bsc", "torch.strided",
    }
    | {f"torch.{d}" for d in _TORCH_DTYPES}
    | {f"torch.{s}" for s in _STORAGE_NAMES}
    | {f"torch.cuda.{s}" for s in _STORAGE_NAMES}
    | {f"torch.{t}" for t in _TENSOR_TYPES}
    | {f"torch.cuda.{t}" for t in _TENSOR_TYPES}
)

# Modules (and their submodules) whose every name can run code or touch the system.
_DANGEROUS_MODULES = (
    "os", "posix", "nt", "subprocess", "sys", "runpy", "pickle", "_pickle", "cPickle",
    "shutil", "socket", "importlib", "webbrowser", "code", "codeop", "pty", "commands",
    "ctypes", "marshal", "dill", "cloudpickle", "joblib", "pip", "asyncio", "multiprocessing",
    "threading", "_thread", "signal", "platform", "http", "urllib", "requests", "ftplib",
    "smtplib", "telnetlib", "tempfile", "glob", "io", "_io", "zipimport",
    "pydoc", "timeit", "bdb", "pdb", "trace", "profile", "cProfile", "site", "distutils",
    "setuptools", "venv", "ensurepip", "sqlite3", "operator", "types",
    "inspect", "gc", "weakref", "builtins_exec", "torch.hub", "torch.jit", "torch._C",
    "torch.serialization", "torch.package", "torch.ops", "torch.utils.cpp_extension",
    "numpy.testing", "numpy.f2py", "numpy.distutils", "nbformat", "IPython",
    # C twins and private helpers of the modules above: the same callables under
    # another name (_operator.methodcaller is operator.methodcaller)
    "_operator", "_posixsubprocess", "_winapi", "_ctypes", "_socket", "_signal", "_imp",
    "_frozen_importlib", "_frozen_importlib_external", "imp", "pkgutil", "_multiprocessing",
    "_posixshmem", "shelve", "dbm", "_sitebuiltins",
    # modules whose functions run commands, Python code, or write files and sockets
    # (seen in the pickle scanners' corpora): idlelib, doctest and pdb run code,
    # collect_env and uuid run commands, logging handlers and codecs.open write files
    "idlelib", "doctest", "mailcap", "imaplib", "_osx_support", "socketserver",
    "logging", "codecs", "uuid", "pathlib", "lib2to3", "cgi", "cgitb", "xmlrpc",
    "torch.utils.collect_env", "torch.utils.data.datapipes", "torch.utils.benchmark",
    "torch.distributed.rpc", "torch.distributed.elastic", "torch.fx", "torch._dynamo",
    "torch._inductor",
)
# A dangerous module reached as an attribute of a harmless one ("pathlib.os.system",
# STACK_GLOBAL's dotted names at protocol 4): any later component counts.
_DANGEROUS_PARTS = frozenset({
    "os", "posix", "nt", "subprocess", "sys", "builtins", "__builtins__", "__builtin__",
    "importlib", "runpy", "pty", "shutil", "socket", "ctypes", "pickle", "_pickle",
    "marshal", "system", "popen", "eval", "exec", "__import__", "__globals__",
    "__getattribute__", "__subclasses__", "__reduce__", "__reduce_ex__", "__code__",
})
_DANGEROUS_BUILTINS = {
    "eval", "exec", "compile", "open", "__import__", "getattr", "setattr", "delattr",
    "globals", "locals", "vars", "input", "breakpoint", "help", "memoryview", "print",
    "exit", "quit", "apply", "execfile", "file", "reload", "dir", "type", "super",
    "object", "classmethod", "staticmethod", "property",
}
_SAFE_FROM_DANGEROUS = {"torch.serialization._get_layout"}

# TorchScript's own data constructors: each returns its argument (torch/jit/_pickle.py).
# TorchScript archives name them in data.pkl, constants.pkl and traced_inputs.pkl.
TORCHSCRIPT_DATA_GLOBALS: frozenset[str] = frozenset(
    f"torch.jit._pickle.{name}" for name in (
        "build_intlist", "build_doublelist", "build_boollist", "build_tensorlist",
        "build_tensor_from_id", "restore_type_tag",
    )
)

# The only names beyond torch's own allowlist that allow-globals may ever name: pure data
# constructors, which build a value from their arguments and do nothing else. torch's
# weights-only unpickler *calls* every allowlisted name with arguments from the file, so a
# name belongs here only if no argument can make it run code, touch a file, the network
# or a process. Everything else a file names (denylisted or merely unknown) is read with
# ckwidget's own reader instead (extract-weights): unknown means unsafe.
VETTED_DATA_GLOBALS: frozenset[str] = frozenset({
    # numpy arrays, scalars and dtypes (numpy 1 and numpy 2 module names)
    "numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct",
    "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar",
    "numpy.ndarray", "numpy.dtype",
    # plain records and containers of the standard library
    "argparse.Namespace", "collections.OrderedDict", "collections.Counter",
    "collections.defaultdict", "collections.deque",
    "builtins.set", "builtins.frozenset", "builtins.complex", "builtins.bytearray",
    "builtins.slice", "builtins.range",
    "datetime.datetime", "datetime.date", "datetime.time", "datetime.timedelta",
    "datetime.timezone", "decimal.Decimal", "fractions.Fraction", "uuid.UUID",
    "pathlib.Path", "pathlib.PosixPath", "pathlib.WindowsPath", "pathlib.PurePath",
    "pathlib.PurePosixPath", "pathlib.PureWindowsPath",
    # Lightning's hyper-parameter dict (a dict subclass with attribute access)
    "lightning.fabric.utilities.data.AttributeDict",
    "lightning_fabric.utilities.data.AttributeDict",
    "pytorch_lightning.utilities.parsing.AttributeDict",
}) | TORCHSCRIPT_DATA_GLOBALS
_NUMPY_DTYPE_CLASS = re.compile(r"numpy\.dtypes\.[A-Z][A-Za-z0-9]*DType")


def is_vetted(full: str) -> bool:
    """May allow-globals name this? Only torch's own allowlist and the vetted pure data
    constructors above: never a callable that could run code with the file's arguments."""
    return (full in SAFE_GLOBALS or full in VETTED_DATA_GLOBALS
            or _NUMPY_DTYPE_CLASS.fullmatch(full) is not None)


def is_malicious(full: str) -> bool:
    if full in _SAFE_FROM_DANGEROUS or full in SAFE_GLOBALS or full in VETTED_DATA_GLOBALS:
        return False
    if full.startswith("<"):
        return True  # a callable computed while loading (see pickle_vm.COMPUTED)
    module, _, name = full.rpartition(".")
    if module in ("builtins", "__builtin__", "__builtins__"):
        return name in _DANGEROUS_BUILTINS or name.startswith("_")
    if module.startswith("copyreg._extension_registry"):
        return True  # extension codes hide the real name: never trust them
    if any(part in _DANGEROUS_PARTS for part in full.split(".")[1:]):
        return True
    root = module.split(".")[0]
    for danger in _DANGEROUS_MODULES:
        if module == danger or module.startswith(danger + ".") or root == danger:
            return True
    if module in ("torch", "torch.storage") and name in ("load", "_load", "from_file"):
        return True
    if name in ("system", "popen", "spawn", "exec", "eval", "__reduce__", "__import__"):
        return True
    return False


def is_importable(full: str) -> bool:
    """Would the real unpickler find this name? Judged without importing anything."""
    module, _, name = full.rpartition(".")
    loaded = sys.modules.get(module)
    if loaded is not None:
        return hasattr(loaded, name.split(".")[0])
    if module == "__main__":
        return False
    root = module.split(".")[0]
    try:
        return importlib.util.find_spec(root) is not None
    except (ImportError, ValueError):
        return False


@dataclass
class GlobalsVerdict:
    safe: list[str] = field(default_factory=list)
    unsafe: list[str] = field(default_factory=list)  # importable, not on torch's allowlist
    missing: list[str] = field(default_factory=list)  # classes the file needs that are absent
    malicious: list[str] = field(default_factory=list)

    @property
    def unvetted(self) -> list[str]:
        """Names torch would refuse that allow-globals may never name (not pure data)."""
        return [n for n in self.unsafe if not is_vetted(n)]


def classify_globals(names: dict[str, int] | list[str]) -> GlobalsVerdict:
    verdict = GlobalsVerdict()
    for full in sorted(names):
        if full in SAFE_GLOBALS:
            verdict.safe.append(full)
        elif is_malicious(full):
            verdict.malicious.append(full)
        elif is_vetted(full) or is_importable(full):
            verdict.unsafe.append(full)
        else:
            verdict.missing.append(full)
    return verdict


def torchscript_names_removed(verdict: GlobalsVerdict) -> GlobalsVerdict:
    """The verdict for a TorchScript archive's pickle, without the names TorchScript's own
    loader defines (``__torch__.*`` classes from the archived code) or uses as data
    constructors (``torch.jit._pickle.*``)."""
    def own(name: str) -> bool:
        return name.startswith("__torch__.") or name in TORCHSCRIPT_DATA_GLOBALS

    return GlobalsVerdict(
        safe=list(verdict.safe),
        unsafe=[n for n in verdict.unsafe if not own(n)],
        missing=[n for n in verdict.missing if not own(n)],
        malicious=list(verdict.malicious),
    )


# What the pickle machine records for what no name can say (see pickle_vm).
_SYNTHETIC = {
    "<computed while loading>.callable":
        "a callable computed while loading (the result of an earlier call, called)",
    "<frames ending inside an opcode>.stream":
        "frames that end inside an opcode (torch's file reading and pickle.loads run "
        "different opcodes: a crafted stream)",
}


def _listing(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(_SYNTHETIC.get(n, n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def globals_findings(verdict: GlobalsVerdict, calls: dict[str, int]) -> list[Finding]:
    """Findings ``malicious``, ``unsafe-globals`` and ``missing-class``."""
    findings: list[Finding] = []
    if verdict.malicious:
        called = [g for g in verdict.malicious if calls.get(g)]
        findings.append(Finding(
            "malicious", "error",
            f"The file names {_listing(verdict.malicious)}, which can run code on your "
            f"machine{' and calls it' if called else ''}. torch.load(weights_only=True) "
            "refuses it; torch.load(weights_only=False) would run it. Do not load this file "
            "with pickle; ckwidget can still read its tensors without running anything.",
            details={"globals": verdict.malicious, "called": called},
        ))
    if verdict.unsafe:
        unvetted = verdict.unvetted
        if not unvetted:
            advice = (
                " They are plain data constructors (numpy values, standard-library records): "
                "allowlisting exactly these names with torch.serialization.safe_globals is "
                "safe, or let ckwidget read the tensors without them.")
        else:
            called = [g for g in unvetted if calls.get(g)]
            advice = (
                f" {_listing(unvetted)} {'is' if len(unvetted) == 1 else 'are'} not a plain "
                "data constructor ckwidget has vetted"
                + (", and the file calls " + ("it" if len(called) == 1 else "them")
                   if called else "")
                + ": torch's weights-only loader calls every name you allowlist with "
                "arguments from the file, and pickle.load or weights_only=False would run "
                f"{'it' if len(unvetted) == 1 else 'them'}. Do not allowlist "
                f"{'it' if len(unvetted) == 1 else 'them'}; ckwidget reads the tensors "
                "without running anything.")
        findings.append(Finding(
            "unsafe-globals", "warning",
            f"torch.load(weights_only=True) refuses this file: it names "
            f"{_listing(verdict.unsafe)}, not on torch's allowlist." + advice,
            details={"globals": verdict.unsafe, "unvetted": unvetted},
        ))
    if verdict.missing:
        main = [g for g in verdict.missing if g.startswith("__main__.")]
        where = (
            " (classes defined in the saving script's __main__)" if main else ""
        )
        findings.append(Finding(
            "missing-class", "warning",
            f"The file needs classes that cannot be imported here{where}: "
            f"{_listing(verdict.missing)}. torch.load fails with \"Can't get attribute\" "
            "even with weights_only=False; ckwidget extracts the weights without them.",
            details={"globals": verdict.missing},
        ))
    return findings
