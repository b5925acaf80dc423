#!/usr/bin/env python3
"""Resumable (tus PATCH) against plain PUT into the same `zcopy serve`: throughput and server CPU per GiB.

One server per upload engine (splice, recv), one worker each, pinned with ``taskset`` to CPU 0
(``--server-cpu``); the client runs in this process pinned to CPU 1 (``--load-cpu``) and sends the
same file both ways with sendfile(2): ``PUT /put.bin`` (Content-Length), and ``POST`` + one ``PATCH``
(tus 1.0.0, the creation round trip included in the time). R interleaved rounds; medians of GB/s
(1 GB = 10^9 bytes, first byte of the request to the final response) and of the server's CPU seconds
per GiB (utime + stime of its process tree from /proc, before and after). The ratio PATCH/PUT is
the point: the issue's bar is within 10 %. Roots on tmpfs (``--dir``, default /dev/shm) so the disk
is not what is measured; ``--fsync`` keeps the servers' default fsync (off by default here: tmpfs).

    python tools/bench_resumable.py --rounds 5 --size 1GiB
"""

from __future__ import annotations

import argparse
import base64
import os
import select
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from bench_serve import Peer, cpu_seconds, free_port  # noqa: E402

from zcopy.units import format_size, parse_size  # noqa: E402

GIB = 1 << 30


def read_head(s: socket.socket) -> tuple[int, dict]:
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("closed before a response")
        buf += chunk
    lines = buf.split(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
    return int(lines[0].split()[1]), {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}


def send(port: int, head: str, fd: int | None = None, size: int = 0) -> tuple[int, dict]:
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(head.encode() + b"\r\n")
        at = 0
        while fd is not None and at < size:
            try:
                at += os.sendfile(s.fileno(), fd, at, size - at)
            except BlockingIOError:
                select.select([], [s], [])
        return read_head(s)


def put(port: int, fd: int, size: int) -> None:
    status, _ = send(port, f"PUT /put.bin HTTP/1.1\r\nHost: b\r\nContent-Length: {size}\r\n", fd, size)
    assert status in (201, 204), status


def tus(port: int, fd: int, size: int) -> None:
    name = base64.b64encode(b"tus.bin").decode()
    status, h = send(port, f"POST / HTTP/1.1\r\nHost: b\r\nTus-Resumable: 1.0.0\r\nUpload-Length: {size}\r\n"
                           f"Upload-Metadata: filename {name}\r\nContent-Length: 0\r\n")
    assert status == 201, status
    status, _ = send(port, f"PATCH {h['location']} HTTP/1.1\r\nHost: b\r\nTus-Resumable: 1.0.0\r\n"
                           "Upload-Offset: 0\r\nContent-Type: application/offset+octet-stream\r\n"
                           f"Content-Length: {size}\r\n", fd, size)
    assert status == 204, status


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--size", type=parse_size, default=GIB)
    ap.add_argument("--dir", default="/dev/shm")
    ap.add_argument("--server-cpu", type=int, default=0)
    ap.add_argument("--load-cpu", type=int, default=1)
    ap.add_argument("--fsync", action="store_true", help="keep the servers' fsync before the rename")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("terminated"))
    os.sched_setaffinity(0, {args.load_cpu})
    tmp = tempfile.mkdtemp(prefix="zcopy-bench-resumable-", dir=args.dir)
    peers = {}
    try:
        src = os.path.join(tmp, "source.bin")
        block = os.urandom(16 << 20)
        with open(src, "wb") as f:
            left = args.size
            while left:
                left -= f.write(block[:min(left, len(block))])
        fd = os.open(src, os.O_RDONLY)
        for engine in ("splice", "recv"):
            root, port = os.path.join(tmp, f"root-{engine}"), free_port()
            os.mkdir(root)
            argv = ["taskset", "-c", str(args.server_cpu), sys.executable, "-m", "zcopy", "serve", root, "--port",
                    str(port), "--workers", "1", "--allow-write", "--upload-engine", engine,
                    "--state-dir", os.path.join(tmp, f"state-{engine}"), *([] if args.fsync else ["--no-fsync"])]
            peers[engine] = (Peer(f"zcopy {engine}", argv, port).__enter__(), root)
        results = {(e, m): {"gbps": [], "cpu": []} for e in peers for m in ("PUT", "PATCH")}
        for _ in range(args.rounds):
            for engine, (peer, root) in peers.items():
                for method, fn, name in (("PUT", put, "put.bin"), ("PATCH", tus, "tus.bin")):
                    c0 = cpu_seconds(peer.pids())
                    t0 = time.perf_counter()
                    fn(peer.port, fd, args.size)
                    secs = time.perf_counter() - t0
                    c1 = cpu_seconds(peer.pids())
                    if os.path.getsize(os.path.join(root, name)) != args.size:
                        raise SystemExit(f"{engine} {method}: wrong size stored")
                    os.unlink(os.path.join(root, name))
                    results[(engine, method)]["gbps"].append(args.size / secs / 1e9)
                    results[(engine, method)]["cpu"].append((c1 - c0) / (args.size / GIB))
        os.close(fd)
        print(f"{format_size(args.size)} in {args.dir}, {args.rounds} interleaved rounds, server on CPU "
              f"{args.server_cpu}, client on CPU {args.load_cpu}, fsync {'on' if args.fsync else 'off'}; medians")
        print(f"{'engine':8} {'method':6} {'GB/s':>6} {'server CPU s/GiB':>17}")
        for engine in peers:
            med = {m: (statistics.median(results[(engine, m)]["gbps"]), statistics.median(results[(engine, m)]["cpu"]))
                   for m in ("PUT", "PATCH")}
            for m, (g, c) in med.items():
                cpus = results[(engine, m)]["cpu"]
                print(f"{engine:8} {m:6} {g:6.2f} {c:17.3f}   (CPU s/GiB per round: "
                      f"{' '.join(f'{x:.2f}' for x in cpus)})")
            low = {m: min(results[(engine, m)]["cpu"]) for m in ("PUT", "PATCH")}
            print(f"{engine:8} ratio  PATCH/PUT: throughput {med['PATCH'][0] / med['PUT'][0]:.2f}, "
                  f"server CPU {med['PATCH'][1] / med['PUT'][1]:.2f} (medians; lowest rounds "
                  f"{low['PATCH'] / low['PUT']:.2f})")
        return 0
    finally:
        for peer, _ in peers.values():
            peer.__exit__(None, None, None)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
