"""Ground truth for the peer corpus, computed in throwaway processes, never assumed.

A worker process (``python -c WORKER``) installs an audit hook before it touches any
sample. While a sample is being loaded the hook

- blocks process spawning (os.system, os.exec*, os.posix_spawn, os.fork, os.forkpty,
  subprocess.Popen), network access (connect, bind, sendto, getaddrinfo), ctypes,
  deleting or renaming files, and writing outside the corpus folder: each raises;
- records code-running events: every blocked call, ``exec`` and ``compile`` of source
  that is not a module being imported, files opened for writing, and imports of
  modules that run code or touch the system (os, subprocess, runpy, pty, socket, ...).

Modes (one worker each, the samples of a batch loaded one after another):

- ``truth``: ``pickle.load(file)``, ``pickle.loads(bytes)`` and
  ``torch.load(path, weights_only=False)`` on every sample: the real loaders;
- ``ckwidget``: ``ckwidget.open_checkpoint(path)`` and ``ckwidget.diagnose(path, model)``
  with the hook armed; findings, fixes and ``report.plan.to_code()`` come back;
- ``snippet``: runs Python source (the code ckwidget emits) with ``model`` defined.

A payload that kills the worker loses only its own sample: the parent restarts the
worker at the next sample (and one that hangs is killed after a timeout). Importing
torch costs about 2 s, so one worker serves a whole batch. Sentinel files are checked
by the parent after the batch (a process spawned without an audit event, such as
multiprocessing.util.spawnv_passfds, shows only there).
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

WORKER = r'''
import copyreg, io, json, os, pickle, sys, time, traceback, warnings
MODE, JOBS, ROOT = sys.argv[1], sys.argv[2], sys.argv[5]
START, FD = int(sys.argv[3]), int(sys.argv[4])
ROOT = os.path.realpath(ROOT)
out = os.fdopen(FD, "w", buffering=1)
warnings.simplefilter("ignore")

BLOCK = {
    "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
    "subprocess.Popen", "socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg",
    "socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr", "ctypes.dlopen",
    "ctypes.dlsym", "ctypes.call_function", "webbrowser.open", "os.kill", "os.killpg",
    "os.remove", "os.rmdir", "os.rename", "shutil.rmtree", "os.truncate", "os.startfile",
    "os.chmod", "os.chown", "os.link", "os.symlink", "pty.spawn",
}
DANGEROUS_IMPORTS = (
    "os", "posix", "nt", "subprocess", "_posixsubprocess", "pty", "runpy", "code",
    "codeop", "ctypes", "_ctypes", "socket", "_socket", "http", "urllib", "ftplib",
    "smtplib", "imaplib", "poplib", "telnetlib", "mailcap", "webbrowser", "idlelib",
    "pydoc", "doctest", "timeit", "cProfile", "profile", "pdb", "bdb", "trace",
    "multiprocessing", "asyncio", "shutil", "tempfile", "distutils", "lib2to3",
    "ensurepip", "venv", "marshal", "_osx_support", "_aix_support", "uuid", "logging",
    "numpy.testing", "numpy.f2py", "torch.hub", "torch.utils.collect_env",
    "torch.utils.bottleneck", "torch.jit.unsupported_tensor_ops",
    "torch.utils._config_module", "torch.utils.data.datapipes", "antigravity", "this",
)
IMPORT_MACHINERY = ("<frozen importlib._bootstrap>", "<frozen importlib._bootstrap_external>")
CODE_FACTORIES = ("dataclasses.py", os.path.join("collections", "__init__.py"), "typing.py")

class Blocked(RuntimeError):
    pass

state = {"armed": False, "events": [], "skip": None}

def short(args):
    try:
        return repr(args)[:160]
    except Exception:
        return "?"

def rec(kind, detail):
    if len(state["events"]) < 40:
        state["events"].append([kind, detail[:200]])

def in_machinery():
    f = sys._getframe(2)
    depth = 0
    while f is not None and depth < 60:
        name = f.f_code.co_filename
        if name in IMPORT_MACHINERY or name.endswith(CODE_FACTORIES):
            return True
        f = f.f_back
        depth += 1
    return False

def writing(mode, flags):
    if isinstance(mode, str):
        return any(c in mode for c in "wax+")
    if isinstance(flags, int):
        return bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND))
    return False

def hook(event, args):
    if not state["armed"]:
        return
    if event in BLOCK:
        rec("blocked", event + " " + short(args))
        raise Blocked("peer audit hook: " + event)
    if event == "exec":
        code = args[0]
        if code is state["skip"] or in_machinery():
            return
        name = getattr(code, "co_filename", "")
        if name and os.path.isfile(name):
            return
        rec("exec", str(name))
    elif event == "compile":
        name = args[1]
        if isinstance(name, bytes):
            name = name.decode("utf-8", "replace")
        if isinstance(name, str) and os.path.isfile(name) or in_machinery():
            return
        rec("compile", short(args[0])[:100] + " " + str(name))
    elif event == "open":
        path, mode, flags = (tuple(args) + (None, None))[:3]
        if writing(mode, flags):
            rec("write", str(path))
            if isinstance(path, (str, bytes, os.PathLike)):
                p = os.fsdecode(path)
                if not os.path.realpath(p).startswith(ROOT + os.sep):
                    raise Blocked("peer audit hook: write outside the corpus " + p)
    elif event == "import":
        name = args[0]
        if isinstance(name, str) and any(name == d or name.startswith(d + ".")
                                         for d in DANGEROUS_IMPORTS):
            rec("import", name)

sys.addaudithook(hook)

def emit(obj):
    out.write(json.dumps(obj) + "\n")
    out.flush()

def arm():
    state["events"] = []
    state["armed"] = True

def disarm():
    state["armed"] = False
    # an import that failed (no module named nt) ran nothing
    return [e for e in state["events"] if e[0] != "import" or e[1] in sys.modules]

saved_ext = (dict(copyreg._extension_registry), dict(copyreg._inverted_registry),
             dict(copyreg._extension_cache))

def reset_ext():
    for live, kept in zip((copyreg._extension_registry, copyreg._inverted_registry,
                           copyreg._extension_cache), saved_ext):
        live.clear()
        live.update(kept)

def describe(exc):
    return (type(exc).__name__ + ": " + str(exc))[:300]

import torch

class PeerNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(3, 4)

def run_truth(job):
    loaders = {}
    for ext in job.get("setup", {}).get("ext", []):
        copyreg.add_extension(ext[0], ext[1], ext[2])
    def one(label, fn):
        arm()
        error = None
        try:
            fn()
        except BaseException as exc:
            error = describe(exc)
        events = disarm()
        loaders[label] = {"events": events, "error": error}
    path = job["path"]
    def by_file():
        with open(path, "rb") as fh:
            pickle.load(fh)
    with open(path, "rb") as fh:
        data = fh.read()
    one("pickle.load", by_file)
    one("pickle.loads", lambda: pickle.loads(data))
    one("torch.load", lambda: torch.load(path, map_location="cpu", weights_only=False))
    reset_ext()
    torch.serialization.clear_safe_globals()
    return {"loaders": loaders}

def fix_list(fixes):
    return [{"kind": getattr(f, "kind", type(f).__name__),
             "names": list(getattr(f, "names", ()) or ())} for f in fixes]

def finding_list(findings):
    return [{"kind": f.kind, "severity": f.severity, "message": f.message[:400],
             "globals": [str(g) for g in f.details.get("globals", []) or []],
             "fixes": fix_list(f.fixes)} for f in findings]

def run_ckwidget(job):
    import ckwidget
    result = {}
    arm()
    try:
        ckpt = ckwidget.open_checkpoint(job["path"])
        result["open"] = {"format": ckpt.format, "tensors": len(ckpt.tensors),
                          "findings": finding_list(ckpt.findings)}
    except BaseException as exc:
        result["open"] = {"error": describe(exc)}
    try:
        report = ckwidget.diagnose(job["path"], PeerNet())
        result["diagnose"] = {"findings": finding_list(report.findings),
                              "plan": fix_list(report.plan.fixes)}
    except BaseException as exc:
        result["diagnose"] = {"error": describe(exc)}
        report = None
    result["events"] = disarm()
    if report is not None:
        try:
            result["code"] = report.plan.to_code()
        except BaseException as exc:
            result["code_error"] = describe(exc)
    return result

def run_snippet(job):
    code = compile(job["code"], "<ckwidget-plan>", "exec")
    namespace = {"__name__": "__peer_plan__", "model": PeerNet()}
    state["skip"] = code
    arm()
    error = None
    try:
        exec(code, namespace)
    except BaseException as exc:
        error = describe(exc)
    events = disarm()
    state["skip"] = None
    torch.serialization.clear_safe_globals()
    return {"events": events, "error": error}

if MODE == "ckwidget":
    import ckwidget, ckwidget.readers, ckwidget.diagnosis, ckwidget.fixes
    warm = os.path.join(ROOT, "warm")
    os.makedirs(warm, exist_ok=True)
    state_dict = PeerNet().state_dict()
    paths = [os.path.join(warm, n) for n in ("a.pt", "b.pt", "c.pkl", "d.pkl", "e.bin")]
    torch.save(state_dict, paths[0])
    torch.save(state_dict, paths[1], _use_new_zipfile_serialization=False)
    with open(paths[2], "wb") as fh:
        pickle.dump(dict(state_dict), fh, protocol=4)
    with open(paths[3], "wb") as fh:
        fh.write(b"cposix\nsystem\n(Vtrue\ntR.")
    with open(paths[4], "wb") as fh:
        fh.write(b"\x80\x02}q\x00(X")
    for p in paths:
        try:
            r = ckwidget.diagnose(p, PeerNet())
            r.plan.to_code()
        except Exception:
            pass
elif MODE == "snippet":
    import ckwidget, ckwidget.fixes.helpers, ckwidget.readers

with open(JOBS) as fh:
    jobs = json.load(fh)
run = {"truth": run_truth, "ckwidget": run_ckwidget, "snippet": run_snippet}[MODE]
for i in range(START, len(jobs)):
    emit({"i": i, "phase": "start"})
    started = time.perf_counter()
    try:
        result = run(jobs[i])
    except BaseException as exc:
        state["armed"] = False
        result = {"worker_error": describe(exc) + " " + traceback.format_exc()[-600:]}
    result["seconds"] = round(time.perf_counter() - started, 4)
    emit({"i": i, "phase": "done", "result": result})
emit({"phase": "end"})
'''


def _env(root: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", None)
    env.pop("TORCH_FORCE_WEIGHTS_ONLY_LOAD", None)
    tmp = root / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    env.update({"PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1",
                "CKWIDGET_TESTING": "1", "TMPDIR": str(tmp), "TORCH_HOME": str(root / "th"),
                "PYTHONWARNINGS": "ignore"})
    src = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_batch(mode: str, jobs: list[dict[str, Any]], root: Path, *,
              timeout: float = 60.0, first_timeout: float = 120.0) -> list[dict[str, Any]]:
    """Run ``jobs`` in one worker (restarted after a crash or a hang); one result each.

    A result has ``crashed`` or ``timed_out`` set when the worker died or hung on that
    job; otherwise what the mode returns (see WORKER)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any] | None] = [None] * len(jobs)
    fd, jobs_file = tempfile.mkstemp(prefix=f"peer-{mode}-", suffix=".json", dir=root)
    with os.fdopen(fd, "w") as fh:
        json.dump(jobs, fh)
    env = _env(root)
    cwd = root / "cwd"
    cwd.mkdir(exist_ok=True)
    log = root / f"worker-{mode}.log"
    start = 0
    try:
        while start < len(jobs):
            read, write = os.pipe()
            with open(log, "ab") as err:
                proc = subprocess.Popen(
                    [sys.executable, "-c", WORKER, mode, jobs_file, str(start), str(write),
                     str(root)],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                    pass_fds=(write,), cwd=cwd, env=env, start_new_session=True)
            os.close(write)
            start = _drain(proc, read, results, start, timeout, first_timeout)
    finally:
        os.unlink(jobs_file)
    return [r if r is not None else {"crashed": True, "events": [["crash", "no result"]]}
            for r in results]


def _drain(proc: subprocess.Popen, read: int, results: list, start: int, timeout: float,
           first_timeout: float) -> int:
    """Collect one worker's results; return where the next worker must start."""
    buf = b""
    current: int | None = None
    deadline = time.monotonic() + first_timeout
    with os.fdopen(read, "rb", buffering=0) as pipe:
        while True:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([pipe], [], [], max(left, 0))
            if not ready:
                _kill(proc)
                if current is None:  # the worker never started a job
                    raise RuntimeError(f"peer worker did not start (see {proc.args[1:2]})")
                results[current] = {"timed_out": True, "events": [["timeout", "killed"]]}
                return current + 1
            chunk = pipe.read(1 << 16)
            if not chunk:
                proc.wait(timeout=30)
                if current is None:
                    if start >= len(results):
                        return start
                    raise RuntimeError(f"peer worker exited ({proc.returncode}) before "
                                       f"job {start}")
                results[current] = {"crashed": True,
                                    "events": [["crash", f"exit status {proc.returncode}"]]}
                return current + 1
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                msg = json.loads(line)
                if msg["phase"] == "start":
                    current = msg["i"]
                    deadline = time.monotonic() + timeout
                elif msg["phase"] == "done":
                    results[msg["i"]] = msg["result"]
                    current = None
                    deadline = time.monotonic() + timeout
                else:  # end
                    proc.wait(timeout=30)
                    return len(results)


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, 9)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


# --------------------------------------------------------------------------- public helpers

# what counts as "ran something": every recorded event, a sentinel, a crash or a hang
def ran(result: dict[str, Any]) -> bool:
    return bool(result.get("events") or result.get("sentinel") or result.get("crashed")
                or result.get("timed_out"))


@dataclass
class Truth:
    executed: bool
    by: dict[str, list]  # loader -> events
    errors: dict[str, str | None]
    sentinel: bool
    raw: dict[str, Any]

    def summary(self) -> str:
        parts = [f"{k}: {v[0][0]} {v[0][1][:60]}" for k, v in self.by.items() if v]
        if self.sentinel:
            parts.append("sentinel created")
        if self.raw.get("crashed") or self.raw.get("timed_out"):
            parts.append("worker " + ("crashed" if self.raw.get("crashed") else "hung"))
        return "; ".join(parts) or "nothing ran"


def settle(seconds: float = 0.3) -> None:
    """Give processes spawned without an audit event time to create their sentinel."""
    time.sleep(seconds)


def ground_truth(samples: list, root: Path) -> dict[str, Truth]:
    """Load every sample with the real loaders in a worker; what ran, per sample."""
    jobs = [{"path": str(s.path), "setup": s.setup} for s in samples]
    results = run_batch("truth", jobs, root)
    settle()
    out = {}
    for s, r in zip(samples, results):
        loaders = r.get("loaders", {})
        by = {k: v["events"] for k, v in loaders.items()}
        if r.get("crashed") or r.get("timed_out"):
            by["worker"] = r["events"]
        sentinel = s.sentinel.exists()
        out[s.name] = Truth(any(by.values()) or sentinel, by,
                            {k: v["error"] for k, v in loaders.items()}, sentinel, r)
    return out


def ckwidget_verdicts(samples: list, root: Path) -> dict[str, dict[str, Any]]:
    """Open and diagnose every sample in a worker with the hook armed."""
    jobs = [{"path": str(s.path)} for s in samples]
    results = run_batch("ckwidget", jobs, root)
    settle()
    for s, r in zip(samples, results):
        r["sentinel"] = s.sentinel.exists()
    return {s.name: r for s, r in zip(samples, results)}


def run_snippets(items: list[tuple[str, str, Path | None]], root: Path
                 ) -> dict[str, dict[str, Any]]:
    """Run each (key, source, sentinel) in a worker with ``model = PeerNet()`` defined:
    what the source ran (events), and whether its sentinel appeared while it ran."""
    before = {key: bool(sentinel and sentinel.exists()) for key, _, sentinel in items}
    results = run_batch("snippet", [{"code": code} for _, code, _ in items], root)
    settle()
    out = {}
    for (key, _, sentinel), r in zip(items, results):
        r["sentinel"] = bool(sentinel and sentinel.exists() and not before[key])
        out[key] = r
    return out


def run_snippet(code: str, root: Path, sentinel: Path | None = None) -> dict[str, Any]:
    """One snippet in a fresh worker (see run_snippets)."""
    return run_snippets([("snippet", code, sentinel)], root)["snippet"]


def flagged(verdict: dict[str, Any]) -> bool:
    """ckwidget said malicious or unsafe-globals (in the checkpoint or the report)."""
    return bool({"malicious", "unsafe-globals"} & finding_kinds(verdict))


def finding_kinds(verdict: dict[str, Any]) -> set[str]:
    found = verdict.get("open", {}).get("findings", []) + verdict.get(
        "diagnose", {}).get("findings", [])
    return {f["kind"] for f in found}


def allow_globals_fixes(verdict: dict[str, Any]) -> list[list[str]]:
    """The names of every allow-globals fix ckwidget offered (plan and findings)."""
    fixes = list(verdict.get("diagnose", {}).get("plan", []))
    for part in ("open", "diagnose"):
        for f in verdict.get(part, {}).get("findings", []):
            fixes += f["fixes"]
    return [f["names"] for f in fixes if f["kind"] == "allow-globals"]


def said(verdict: dict[str, Any]) -> str:
    """What ckwidget said, in a few words (for assertion messages and the benchmark)."""
    if "error" in verdict.get("open", {}):
        return "open raised " + verdict["open"]["error"][:100]
    found = verdict.get("open", {}).get("findings", [])
    parts = []
    for f in found:
        if f["severity"] in ("error", "warning"):
            g = f" {f['globals'][:3]}" if f["globals"] else ""
            parts.append(f"{f['kind']}{g}")
    return ", ".join(parts) or "no warnings"
