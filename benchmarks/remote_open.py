"""Open and diagnose checkpoints where they live: bytes, requests, round trips and time.

Serves, over loopback HTTP with Range support and ``--latency`` ms added to every request
(50 by default: a cross-region object store), and optionally through moto's S3 server with
the same latency added:

- a ~``--zip-gb`` GB torch zip checkpoint (a few large tensors, so it is quick to write),
- a 4-shard ~``--hf-gb`` GB Hugging Face safetensors folder (index + config),

and prints for each: the bytes read to open it (and their share of its size), the number
of requests and of round trips (waves of parallel requests), the time to open it, and the
time to a full diagnosis from the URL, ``ck.diagnose(url, model)`` as it runs by default
(open, compare, and the value checks, whose sampled non-finite counts read byte ranges of
the tensors) against a matching model built on the meta device, with its bytes, requests
and round trips, beside the time to download the file(s) whole over the same server. A
small zip and folder are diagnosed first (imports and first calls, paid once a process).

    python benchmarks/remote_open.py [--zip-gb 3] [--hf-gb 2] [--latency 50] [--s3]
                                     [--dir DIR] [--keep]

The goals (issue 22): bytes read at most 0.1% of the size; at most 4 round trips for the
torch zip and 3 for the folder (shards in parallel); a full diagnosis within 0.5 s.

``serve(root, ranges=True, latency=0.0)`` is also the test suite's HTTP server
(tests/test_remote.py): Python's http.server does not answer Range requests.
"""

from __future__ import annotations

import argparse
import contextlib
import email.utils
import html
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


# -- a small HTTP server: files, folder listings, Range requests, ETags, latency ------------
class RangeHandler(BaseHTTPRequestHandler):
    """GET and HEAD of the files under ``server.root``: single ranges (``bytes=a-b``,
    ``bytes=a-``, ``bytes=-n``) answered 206 when ``server.ranges``, else the whole file
    with 200 (as a server without Range support does); folders as an HTML index of links;
    ETag and Last-Modified from the file's size and time; ``server.latency`` seconds of
    delay before each answer; every request counted in ``server.requests``, and the most
    answered at once in ``server.most_in_flight``."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:  # quiet
        pass

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _serve(self, body: bool) -> None:
        server = self.server
        with server.lock:  # type: ignore[attr-defined]
            server.requests.append((self.command, self.path,  # type: ignore[attr-defined]
                                    self.headers.get("Range")))
            server.in_flight += 1  # type: ignore[attr-defined]
            server.most_in_flight = max(server.most_in_flight,  # type: ignore[attr-defined]
                                        server.in_flight)  # type: ignore[attr-defined]
        try:
            self._answer(body)
        finally:
            with server.lock:  # type: ignore[attr-defined]
                server.in_flight -= 1  # type: ignore[attr-defined]

    def _answer(self, body: bool) -> None:
        server = self.server
        if server.latency:  # type: ignore[attr-defined]
            time.sleep(server.latency)  # type: ignore[attr-defined]
        rel = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path).lstrip("/")
        root = server.root  # type: ignore[attr-defined]
        path = (root / rel).resolve()
        if root.resolve() not in (path, *path.parents) or not path.exists():
            self._send(404, b"not found", "text/plain", body)
            return
        if path.is_dir():
            if not self.path.endswith("/"):
                self.send_response(301)
                self.send_header("Location", self.path + "/")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            links = "".join(
                f'<a href="{html.escape(urllib.parse.quote(p.name))}{"/" if p.is_dir() else ""}">'
                f"{html.escape(p.name)}</a>\n" for p in sorted(path.iterdir()))
            self._send(200, f"<html><body>{links}</body></html>".encode(), "text/html", body)
            return
        st = path.stat()
        size = st.st_size
        headers = {
            "ETag": f'"{st.st_mtime_ns:x}-{size:x}"',
            "Last-Modified": email.utils.formatdate(st.st_mtime, usegmt=True),
        }
        if server.ranges:  # type: ignore[attr-defined]
            headers["Accept-Ranges"] = "bytes"
        wanted = self.headers.get("Range") if server.ranges else None  # type: ignore[attr-defined]
        start, end, status = 0, size, 200
        if wanted and wanted.startswith("bytes=") and "," not in wanted:
            first, _, last = wanted[6:].partition("-")
            if first:
                start = int(first)
                end = min(size, int(last) + 1) if last else size
            else:
                start = max(0, size - int(last))
            if start >= size or end <= start:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start))
        self.end_headers()
        if not body:
            return
        with open(path, "rb") as fh:
            fh.seek(start)
            left = end - start
            try:
                while left:
                    chunk = fh.read(min(left, 1 << 20))
                    if not chunk:
                        break
                    self.wfile.write(chunk)
                    left -= len(chunk)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client had what it wanted (a range from a server without ranges)

    def _send(self, status: int, data: bytes, ctype: str, body: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # parallel requests open many connections at once


@contextlib.contextmanager
def serve(root: Path, ranges: bool = True, latency: float = 0.0
          ) -> Iterator[ThreadingHTTPServer]:
    """An HTTP server on 127.0.0.1 for the files under ``root``; ``server.url`` is its
    base URL, ``server.requests`` the requests it answered and ``server.most_in_flight``
    the most it answered at once."""
    server = _Server(("127.0.0.1", 0), RangeHandler)
    server.root = Path(root)  # type: ignore[attr-defined]
    server.ranges = ranges  # type: ignore[attr-defined]
    server.latency = latency  # type: ignore[attr-defined]
    server.requests = []  # type: ignore[attr-defined]
    server.in_flight = server.most_in_flight = 0  # type: ignore[attr-defined]
    server.lock = threading.Lock()  # type: ignore[attr-defined]
    server.url = f"http://127.0.0.1:{server.server_address[1]}"  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


class _Window:
    """A stored object's bytes, read only where sliced: what moto's range GET slices."""

    def __init__(self, key: object) -> None:
        self.key = key

    def __len__(self) -> int:
        return self.key.size  # type: ignore[attr-defined]

    def __getitem__(self, at: slice) -> bytes:
        start, stop, _ = at.indices(len(self))
        with self.key.lock:  # type: ignore[attr-defined]
            buffer = self.key._value_buffer  # type: ignore[attr-defined]
            buffer.seek(start)
            return buffer.read(max(0, stop - start))


_ranged = threading.local()


@contextlib.contextmanager
def _windowed_range_gets() -> Iterator[None]:
    """moto copies a whole object out of its store for every range GET, then slices it
    (seconds per request for a GB object, which no object store spends): while a
    request with a Range header is answered, its object's value is a ``_Window``."""
    from moto.s3.models import FakeKey

    whole = FakeKey.value

    def value(self: object) -> object:
        if getattr(_ranged, "on", False):
            return _Window(self)
        return whole.fget(self)  # type: ignore[union-attr]

    FakeKey.value = property(value, whole.fset)  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        FakeKey.value = whole  # type: ignore[method-assign]


@contextlib.contextmanager
def moto_s3(latency: float = 0.0, windowed: bool = False) -> Iterator[dict]:
    """moto's S3 server on 127.0.0.1 (a fresh bucket store), as s3fs storage options;
    ``latency`` seconds of delay before each answer (as ``serve``'s); ``windowed``:
    range GETs read only their range of the stored object (``_windowed_range_gets``)."""
    import logging

    from moto.server import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    app = DomainDispatcherApplication(create_backend_app)

    def delayed(environ: dict, start_response: object) -> object:
        if latency:
            time.sleep(latency)
        _ranged.on = windowed and environ.get("REQUEST_METHOD") == "GET" and bool(
            environ.get("HTTP_RANGE"))
        try:
            return app(environ, start_response)
        finally:
            _ranged.on = False

    server = make_server("127.0.0.1", 0, delayed, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    with _windowed_range_gets() if windowed else contextlib.nullcontext():
        thread.start()
        host, port = server.server_address[:2]
        try:
            yield {"endpoint_url": f"http://{host}:{port}", "key": "testing",
                   "secret": "testing"}
        finally:
            server.shutdown()
            thread.join()


# -- the checkpoints ------------------------------------------------------------------------
def _s3_client(options: dict):
    import boto3

    return boto3.client("s3", endpoint_url=options["endpoint_url"], region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def make_bucket(options: dict, bucket: str) -> None:
    _s3_client(options).create_bucket(Bucket=bucket)


def upload(options: dict, local: Path, bucket: str, key: str) -> None:
    """``local`` (a file, or a folder's files) to ``bucket/key`` by single PUTs: moto's
    multipart uploads of large files fail (a part's buffer closed before the upload
    completes)."""
    client = _s3_client(options)
    files = [local] if local.is_file() else sorted(p for p in local.iterdir() if p.is_file())
    for path in files:
        name = key if local.is_file() else f"{key.rstrip('/')}/{path.name}"
        with open(path, "rb") as fh:
            client.put_object(Bucket=bucket, Key=name, Body=fh)


def build_zip(path: Path, gb: float) -> dict:
    """A torch.save checkpoint of about ``gb`` GB: 6 large zero tensors and a few small
    ones (zeros are written fast), as a training script saves it (nested state dict)."""
    import torch

    n = 6
    cols = 4096
    rows = max(1, int(gb * 1e9 / n / cols / 4))
    sd = {f"layers.{i}.weight": torch.zeros(rows, cols) for i in range(n)}
    sd.update({f"layers.{i}.bias": torch.zeros(rows) for i in range(n)})
    torch.save({"state_dict": sd, "epoch": 3}, path)
    return {"rows": rows, "cols": cols, "n": n}


def build_hf(folder: Path, gb: float, shards: int = 4) -> dict:
    """A Hugging Face folder: ``shards`` safetensors shards of about ``gb`` GB in all,
    their index and a config.json."""
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    per_shard = 8
    cols = 4096
    rows = max(1, int(gb * 1e9 / shards / per_shard / cols / 4))
    weight_map = {}
    total = 0
    for s in range(shards):
        name = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        part = {}
        for j in range(per_shard):
            i = s * per_shard + j
            part[f"layers.{i}.weight"] = torch.zeros(rows, cols)
            part[f"layers.{i}.bias"] = torch.zeros(rows)
        for k, v in part.items():
            weight_map[k] = name
            total += v.numel() * 4
        save_file(part, str(folder / name), metadata={"format": "pt"})
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": total}, "weight_map": weight_map}))
    (folder / "config.json").write_text(json.dumps({"model_type": "bench", "n_layer": 32}))
    return {"rows": rows, "cols": cols, "n": shards * per_shard}


def model_for(n: int, rows: int, cols: int, nested: bool = False):
    """A model with the checkpoint's keys and shapes, on the meta device (no memory)."""
    import torch
    from torch import nn

    with torch.device("meta"):
        layers = nn.ModuleList(nn.Linear(cols, rows) for _ in range(n))
    model = nn.Module()
    model.layers = layers
    return model


# -- measuring ---------------------------------------------------------------------------------
def measure(url: str, model, size: int, storage_options: dict | None = None,
            server=None) -> dict:
    """Open ``url`` (bytes, requests, round trips, time), then, from the URL again, a full
    diagnosis as ``ck.diagnose(url, model)`` makes it by default: open, compare, and the
    value checks (sampled non-finite counts), which read byte ranges of the tensors."""
    import ckwidget as ck

    def served() -> int:
        return len(server.requests) if server is not None else 0

    forget(url, storage_options)
    before = served()
    start = time.perf_counter()
    ckpt = ck.open_checkpoint(url, storage_options=storage_options)
    opened = time.perf_counter() - start
    stats = ckpt.io_stats
    row = {"bytes": stats.bytes_read, "share": stats.bytes_read / size,
           "requests": stats.requests, "round_trips": stats.round_trips,
           "open_s": opened, "tensors": len(ckpt.tensors), "served": served() - before}
    ckpt.close()
    forget(url, storage_options)
    before = served()
    start = time.perf_counter()
    report = ck.diagnose(url, model, storage_options=storage_options)
    row["diagnose_s"] = time.perf_counter() - start
    ckpt = report.checkpoint
    stats = ckpt.io_stats
    row["status"] = report.status
    row["plan"] = [f.kind for f in report.plan]
    row["after_bytes"] = stats.bytes_read
    row["after_requests"] = stats.requests
    row["after_round_trips"] = stats.round_trips
    row["after_served"] = served() - before
    row["read_spent"] = ckpt._read_spent  # by single-tensor reads, within read_budget
    ckpt.close()
    return row


def forget(url: str, storage_options: dict | None) -> None:
    """Empty fsspec's listing cache, so that every open lists the folder again (s3fs keeps
    listings in its cached filesystem instance)."""
    import fsspec

    fsspec.core.url_to_fs(url, **(storage_options or {}))[0].invalidate_cache()


def warm_up(urls: list[str], models: list, storage_options: dict | None = None) -> float:
    """Diagnose small checkpoints first (imports, first calls, the HTTP session): a
    process pays these once, not per checkpoint. Returns the seconds they took."""
    import ckwidget as ck

    start = time.perf_counter()
    for url, model in zip(urls, models):
        ck.diagnose(url, model, storage_options=storage_options).checkpoint.close()
    return time.perf_counter() - start


def download_seconds(urls: list[str], storage_options: dict | None = None) -> float:
    """Time to download the files whole (in parallel), as ``fsspec.get`` would."""
    from concurrent.futures import ThreadPoolExecutor

    import fsspec

    def one(url: str) -> int:
        fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
        streaming = url.startswith("http")
        with fs.open(path, "rb", block_size=0 if streaming else 8 << 20) as fh:
            n = 0
            while chunk := fh.read(8 << 20):
                n += len(chunk)
        return n

    start = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, urls))
    return time.perf_counter() - start


def report(name: str, row: dict, size: int, download: float | None) -> None:
    served = lambda n: f" ({n} answered by the server)" if n else ""  # noqa: E731
    print(f"{name}: {size / 1e9:.2f} GB, {row['tensors']} tensors")
    print(f"  open:      {row['bytes']:,} bytes read ({100 * row['share']:.4f}% of the size; "
          f"goal <= 0.1%), {row['requests']} requests in {row['round_trips']} round trips"
          f"{served(row['served'])}, {row['open_s']:.3f} s")
    print(f"  diagnosis: {row['diagnose_s']:.3f} s from the URL to the report (goal <= 0.5 s; "
          f"ck.diagnose(url, model), value sampling included), status {row['status']}, "
          f"plan {row['plan'] or 'empty'}")
    print(f"             {row['after_bytes']:,} bytes, {row['after_requests']} requests in "
          f"{row['after_round_trips']} round trips in all{served(row['after_served'])}; "
          f"after the open: {row['after_bytes'] - row['bytes']:,} bytes, "
          f"{row['after_requests'] - row['requests']} requests in "
          f"{row['after_round_trips'] - row['round_trips']} round trips "
          f"({row['read_spent']:,} bytes by single-tensor reads)")
    if download is not None:
        print(f"  download:  {download:.2f} s to download it whole over the same server")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--zip-gb", type=float, default=3.0)
    parser.add_argument("--hf-gb", type=float, default=2.0)
    parser.add_argument("--latency", type=float, default=50.0, help="ms added per request")
    parser.add_argument("--s3", action="store_true", help="also through moto's S3 server")
    parser.add_argument("--no-download", action="store_true",
                        help="skip the whole-file download timings")
    parser.add_argument("--dir", default=None, help="where to write the checkpoints")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)

    root = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="ckwidget-remote-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    need = (args.zip_gb + args.hf_gb) * 1e9 * 1.1
    free = shutil.disk_usage(root).free
    if need > free:
        print(f"Only {free / 1e9:.1f} GB free at {root}: use smaller --zip-gb / --hf-gb.")
        return 2
    try:
        t = time.perf_counter()
        zmeta = build_zip(root / "model.pt", args.zip_gb)
        hmeta = build_hf(root / "hf", args.hf_gb)
        print(f"(built the checkpoints in {time.perf_counter() - t:.1f} s under {root})")
        zsize = (root / "model.pt").stat().st_size
        shards = sorted((root / "hf").glob("*.safetensors"))
        hsize = sum(p.stat().st_size for p in (root / "hf").iterdir())
        zmodel = model_for(zmeta["n"], zmeta["rows"], zmeta["cols"])
        hmodel = model_for(hmeta["n"], hmeta["rows"], hmeta["cols"])
        warm = build_warm(root / "warm")
        latency = args.latency / 1000
        print(f"loopback HTTP with Range support, {args.latency:.0f} ms added per request")
        with serve(root, latency=latency) as server:
            base = server.url
            took = warm_up([f"{base}/warm/small.pt", f"{base}/warm/hf/"], [warm, warm])
            print(f"(warmed up by diagnosing a small zip and folder first: {took:.2f} s)")
            row = measure(f"{base}/model.pt", zmodel, zsize, server=server)
            down = None if args.no_download else download_seconds([f"{base}/model.pt"])
            report("torch zip", row, zsize, down)
            row = measure(f"{base}/hf/", hmodel, hsize, server=server)
            down = None if args.no_download else download_seconds(
                [f"{base}/hf/{p.name}" for p in shards])
            report("HF folder, 4 shards", row, hsize, down)
        if args.s3:
            _s3(root, zmodel, hmodel, warm, zsize, hsize, shards, args)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    from _host import reference_ms  # type: ignore[import-not-found]

    print(f"(host reference: {reference_ms():.0f} ms; about 18 ms on a quiet machine)")
    return 0


def build_warm(folder: Path):
    """A small torch zip and a small HF folder (for ``warm_up``); returns their model."""
    import torch
    from safetensors.torch import save_file
    from torch import nn

    (folder / "hf").mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = nn.Linear(8, 4)
    torch.save({"state_dict": model.state_dict(), "epoch": 1}, folder / "small.pt")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              str(folder / "hf" / "model.safetensors"))
    (folder / "hf" / "config.json").write_text("{}")
    return model


def _s3(root: Path, zmodel, hmodel, warm, zsize: int, hsize: int, shards: list[Path],
        args: argparse.Namespace) -> None:
    print(f"moto S3 on loopback through s3fs, {args.latency:.0f} ms added per request (range "
          "GETs read only their range of moto's store)")
    with moto_s3(latency=args.latency / 1000, windowed=True) as options:
        make_bucket(options, "bench")
        upload(options, root / "model.pt", "bench", "model.pt")
        upload(options, root / "hf", "bench", "hf")
        upload(options, root / "warm" / "small.pt", "bench", "warm/small.pt")
        upload(options, root / "warm" / "hf", "bench", "warm/hf")
        took = warm_up(["s3://bench/warm/small.pt", "s3://bench/warm/hf"], [warm, warm],
                       options)
        print(f"(warmed up by diagnosing a small zip and folder first: {took:.2f} s)")
        row = measure("s3://bench/model.pt", zmodel, zsize, options)
        down = None if args.no_download else download_seconds(["s3://bench/model.pt"],
                                                              options)
        report("torch zip (S3)", row, zsize, down)
        row = measure("s3://bench/hf", hmodel, hsize, options)
        down = None if args.no_download else download_seconds(
            [f"s3://bench/hf/{p.name}" for p in shards], options)
        report("HF folder (S3)", row, hsize, down)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    raise SystemExit(main())
