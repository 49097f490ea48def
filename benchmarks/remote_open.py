"""Open and diagnose checkpoints where they live: bytes, requests, round trips and time.

Serves, over loopback HTTP with Range support and ``--latency`` ms added to every request
(50 by default: a cross-region object store), and optionally through moto's S3 server:

- a ~``--zip-gb`` GB torch zip checkpoint (a few large tensors, so it is quick to write),
- a 4-shard ~``--hf-gb`` GB Hugging Face safetensors folder (index + config),

and prints for each: the bytes read to open it (and their share of its size), the number
of requests and of round trips (waves of parallel requests), the time to open it and the
time to a full diagnosis against a matching model built on the meta device, beside the
time to download the file(s) whole over the same server.

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
    delay before each answer; every request counted in ``server.requests``."""

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
    base URL and ``server.requests`` the requests it answered."""
    server = _Server(("127.0.0.1", 0), RangeHandler)
    server.root = Path(root)  # type: ignore[attr-defined]
    server.ranges = ranges  # type: ignore[attr-defined]
    server.latency = latency  # type: ignore[attr-defined]
    server.requests = []  # type: ignore[attr-defined]
    server.lock = threading.Lock()  # type: ignore[attr-defined]
    server.url = f"http://127.0.0.1:{server.server_address[1]}"  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def moto_s3(latency: float = 0.0) -> Iterator[dict]:
    """moto's S3 server on 127.0.0.1 (a fresh bucket store), as s3fs storage options."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield {"endpoint_url": f"http://{host}:{port}", "key": "testing",
               "secret": "testing"}
    finally:
        server.stop()


# -- the checkpoints ------------------------------------------------------------------------
def make_bucket(options: dict, bucket: str) -> None:
    import boto3

    boto3.client("s3", endpoint_url=options["endpoint_url"], region_name="us-east-1",
                 aws_access_key_id="testing",
                 aws_secret_access_key="testing").create_bucket(Bucket=bucket)


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
    import ckwidget as ck

    served = len(server.requests) if server is not None else 0
    start = time.perf_counter()
    ckpt = ck.open_checkpoint(url, storage_options=storage_options)
    opened = time.perf_counter() - start
    stats = ckpt.io_stats
    row = {"bytes": stats.bytes_read, "share": stats.bytes_read / size,
           "requests": stats.requests, "round_trips": stats.round_trips,
           "open_s": opened, "tensors": len(ckpt.tensors)}
    if server is not None:
        row["served"] = len(server.requests) - served
    start = time.perf_counter()
    report = ck.diagnose(ckpt, model)
    row["diagnose_s"] = opened + time.perf_counter() - start
    row["status"] = report.status
    row["plan"] = [f.kind for f in report.plan]
    row["after_bytes"] = stats.bytes_read
    row["after_requests"] = stats.requests
    row["after_round_trips"] = stats.round_trips
    row["read_spent"] = ckpt._read_spent  # by single-tensor reads (value sampling)
    # what the proposed sampler change adds: the same tensors and element counts as
    # diagnosis.sampling chooses, read as evenly spread blocks by ranges, in one wave
    from ckwidget.diagnosis.sampling import DEFAULT_BUDGET, choose

    entry = report.entry or ""
    members = ckpt.members(entry)
    keys = list(members)
    infos = [ckpt.tensors[members[k]] for k in keys]
    chosen = [keys[i] for i in choose([i.nbytes for i in infos])]
    share = DEFAULT_BUDGET // max(1, len(chosen))
    wanted = {members[k]: max(1, share // max(1, ckpt.tensors[members[k]].nbytes
                                               // max(1, ckpt.tensors[members[k]].numel)))
              for k in chosen}
    b0, r0, q0 = stats.bytes_read, stats.round_trips, stats.requests
    start = time.perf_counter()
    values = ckpt.read_samples(wanted)
    row["samples_s"] = time.perf_counter() - start
    row["samples"] = (len(values), sum(len(v) for v in values.values()),
                      stats.bytes_read - b0, stats.requests - q0, stats.round_trips - r0)
    ckpt.close()
    return row


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


def report(name: str, row: dict, size: int, download: float) -> None:
    print(f"{name}: {size / 1e9:.2f} GB, {row['tensors']} tensors")
    print(f"  open:      {row['bytes']:,} bytes read ({100 * row['share']:.4f}% of the size; "
          f"goal <= 0.1%), {row['requests']} requests in {row['round_trips']} round trips"
          + (f" ({row['served']} answered by the server)" if "served" in row else "")
          + f", {row['open_s']:.3f} s")
    print(f"  diagnosis: {row['diagnose_s']:.3f} s from the URL to the report (goal <= 0.5 s), "
          f"status {row['status']}, plan {row['plan'] or 'empty'}; {row['after_bytes']:,} "
          f"bytes, {row['after_requests']} requests, {row['after_round_trips']} round trips "
          f"in all ({row['read_spent']:,} bytes by single-tensor reads, within "
          "read_budget)")
    n, elements, nbytes, requests, trips = row["samples"]
    print(f"  sampling by ranges (read_samples, the proposed sampler): {elements:,} values "
          f"of {n} tensors in {row['samples_s']:.3f} s, {nbytes:,} bytes, {requests} "
          f"requests in {trips} round trips")
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
        latency = args.latency / 1000
        print(f"loopback HTTP with Range support, {args.latency:.0f} ms added per request")
        with serve(root, latency=latency) as server:
            base = server.url
            ck_warm = __import__("ckwidget").open_checkpoint(f"{base}/hf/config.json")
            ck_warm.close()  # imports, the HTTP session: not part of the figures
            row = measure(f"{base}/model.pt", zmodel, zsize, server=server)
            down = 0.0 if args.no_download else download_seconds([f"{base}/model.pt"])
            report("torch zip", row, zsize, down)
            row = measure(f"{base}/hf/", hmodel, hsize, server=server)
            down = 0.0 if args.no_download else download_seconds(
                [f"{base}/hf/{p.name}" for p in shards])
            report("HF folder, 4 shards", row, hsize, down)
        if args.s3:
            _s3(root, zmodel, hmodel, zsize, hsize, shards, args)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    from _host import reference_ms  # type: ignore[import-not-found]

    print(f"(host reference: {reference_ms():.0f} ms; about 18 ms on a quiet machine)")
    return 0


def _s3(root: Path, zmodel, hmodel, zsize: int, hsize: int, shards: list[Path],
        args: argparse.Namespace) -> None:
    import s3fs

    print("moto S3 (loopback, no added latency), through s3fs")
    with moto_s3() as options:
        fs = s3fs.S3FileSystem(**options)
        make_bucket(options, "bench")
        fs.put(str(root / "model.pt"), "bench/model.pt")
        fs.put(str(root / "hf") + "/", "bench/hf/", recursive=True)
        __import__("ckwidget").open_checkpoint("s3://bench/hf/config.json", options).close()
        row = measure("s3://bench/model.pt", zmodel, zsize, options)
        down = 0.0 if args.no_download else download_seconds(["s3://bench/model.pt"], options)
        report("torch zip (S3)", row, zsize, down)
        row = measure("s3://bench/hf", hmodel, hsize, options)
        down = 0.0 if args.no_download else download_seconds(
            [f"s3://bench/hf/{p.name}" for p in shards], options)
        report("HF folder (S3)", row, hsize, down)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    raise SystemExit(main())
