#!/usr/bin/env python3
"""Does anything block the event loop? Hot 1 KiB GETs under loads that once did.

One worker serves a tree on a real disk (--dir, not tmpfs). A probe GETs a hot
1 KiB file over one keep-alive connection, back to back, and records each
request's latency while one of two loads runs:

* uploads: CLIENTS clients PUT SIZE-byte files (fsync on, the default) in a
  loop, while another client lists a folder of ENTRIES entries in a loop
  (issue 13's bar: the slowest hot GET stays under 250 ms);
* pipelined: CLIENTS clients each send PIPELINED requests for the listing of a
  folder of BIG entries and never read a byte (the same bar; and the worker's
  memory must not grow by a private copy of the page per connection).

Reported per load: the hot GET's slowest, p99 and median latency, how many it
made, and the worker's anonymous memory (RssAnon) growth.

    python tools/bench_offloop.py                       # full sizes (issue 13)
    python tools/bench_offloop.py --size 16MiB --entries 5000 --big 20000 --seconds 3

tests/test_serve_offloop.py runs the same loads at CI sizes.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from zcopy.units import parse_size  # noqa: E402

MiB = 1 << 20
HOT = "/hot/1k.bin"


def make_tree(root: str, entries: int, big: int) -> None:
    """hot/1k.bin, list/ with ``entries`` files, big/ with ``big`` files, up/."""
    for d in ("hot", "list", "big", "up"):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    with open(os.path.join(root, "hot", "1k.bin"), "wb") as f:
        f.write(os.urandom(1024))
    for folder, n in (("list", entries), ("big", big)):
        dfd = os.open(os.path.join(root, folder), os.O_RDONLY | os.O_DIRECTORY)
        try:
            for i in range(n):
                os.close(os.open(f"file-{i:06d}.txt", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=dfd))
        finally:
            os.close(dfd)


def _recv_reply(sock: socket.socket, buf: bytearray) -> None:
    """Read one response with a Content-Length body (what zcopy sends here)."""
    while True:
        end = buf.find(b"\r\n\r\n")
        if end >= 0:
            length = 0
            for line in bytes(buf[:end]).decode("latin-1").lower().split("\r\n")[1:]:
                if line.startswith("content-length:"):
                    length = int(line[15:])
            need = end + 4 + length
            while len(buf) < need:
                chunk = sock.recv(1 << 20)
                if not chunk:
                    raise ConnectionError("closed mid-reply")
                buf += chunk
            del buf[:need]
            return
        chunk = sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("closed before a reply")
        buf += chunk


class HotProbe(threading.Thread):
    """GET the hot file back to back on one keep-alive connection; latencies in s."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.latencies: list[float] = []
        self.halt = threading.Event()
        self.started = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        req = f"GET {HOT} HTTP/1.1\r\nHost: b\r\n\r\n".encode()
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=60) as s:
                buf = bytearray()
                s.sendall(req)
                _recv_reply(s, buf)         # the file's first request opens it: not timed
                self.started.set()
                while not self.halt.is_set():
                    t = time.perf_counter()
                    s.sendall(req)
                    _recv_reply(s, buf)
                    self.latencies.append(time.perf_counter() - t)
        except BaseException as exc:  # noqa: BLE001 (reported by stop())
            self.error = exc

    def start(self) -> None:
        super().start()
        self.started.wait(60)

    def stop(self) -> list[float]:
        self.halt.set()
        self.join(120)
        if self.error is not None:
            raise self.error
        return self.latencies


def _loop(*args: str) -> subprocess.Popen:
    """A load client in its own process (``_loop`` mode of this script), so the
    probe's timing is not the load's GIL or scheduling in one process."""
    return subprocess.Popen([sys.executable, os.path.abspath(__file__), "_loop", *map(str, args)],
                            stdout=subprocess.DEVNULL)


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        p.wait(60)


def put(port: int, path: str, body: bytes) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=120) as s:
        s.sendall(f"PUT {path} HTTP/1.1\r\nHost: b\r\nContent-Length: {len(body)}\r\n"
                  f"Connection: close\r\n\r\n".encode())
        s.sendall(body)
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = s.recv(4096)
            if not chunk:
                break
            head += chunk
        return int(head.split()[1])


def get(port: int, path: str) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=120) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: b\r\n\r\n".encode())
        _recv_reply(s, bytearray())


def rss_anon(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    return 0


def uploads_load(port: int, *, clients: int, size: int, seconds: float, folder: str = "/list/",
                 listers: int = 1) -> list[float]:
    """Hot GET latencies while ``clients`` upload ``size`` bytes in a loop and
    ``listers`` clients list ``folder`` in a loop."""
    probe = HotProbe(port)
    probe.start()
    procs = [_loop("put", port, f"/up/u{i}.bin", size) for i in range(clients)]
    procs += [_loop("get", port, folder) for _ in range(listers)]
    try:
        time.sleep(seconds)
    finally:
        _stop(procs)
    return probe.stop()


def pipelined_load(port: int, *, clients: int, pipelined: int, seconds: float, pid: int | None = None):
    """Hot GET latencies while ``clients`` each pipeline ``pipelined`` requests
    for /big/ and never read; and the worker's RssAnon growth meanwhile."""
    before = rss_anon(pid) if pid else 0
    probe = HotProbe(port)
    probe.start()
    socks = []
    try:
        req = b"GET /big/ HTTP/1.1\r\nHost: b\r\n\r\n" * pipelined
        for _ in range(clients):
            s = socket.create_connection(("127.0.0.1", port), timeout=60)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)    # a slow reader: it never reads
            s.sendall(req)
            socks.append(s)
        time.sleep(seconds)
        grown = (rss_anon(pid) - before) if pid else 0
        lat = probe.stop()
    finally:
        for s in socks:
            s.close()
    return lat, grown


def summary(lat: list[float]) -> str:
    lat = sorted(lat)
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    return (f"slowest {lat[-1] * 1e3:.1f} ms, p99 {p99 * 1e3:.2f} ms, median {statistics.median(lat) * 1e3:.2f} ms, "
            f"{len(lat)} GETs")


def worker_pid(supervisor: int, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), open(f"/proc/{supervisor}/task/{supervisor}/children") as f:
            kids = f.read().split()
            if kids:
                return int(kids[0])
        time.sleep(0.05)
    raise RuntimeError("no worker")


def loop_main(argv: list[str]) -> int:
    """``_loop put PORT PATH SIZE`` or ``_loop get PORT PATH``: until terminated."""
    kind, port, path = argv[0], int(argv[1]), argv[2]
    if kind == "put":
        body = os.urandom(int(argv[3]))
        while True:
            put(port, path, body)
    while True:
        get(port, path)


def main() -> int:
    if sys.argv[1:2] == ["_loop"]:
        return loop_main(sys.argv[2:])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default="/var/tmp", help="a folder on a real disk (not tmpfs)")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--size", type=parse_size, default=parse_size("64MiB"), help="bytes per upload")
    ap.add_argument("--entries", type=int, default=20000, help="entries of the folder listed in a loop")
    ap.add_argument("--big", type=int, default=50000, help="entries of the folder listed pipelined")
    ap.add_argument("--pipelined", type=int, default=8, help="requests each pipelining client sends")
    ap.add_argument("--seconds", type=float, default=10.0, help="seconds per load")
    ap.add_argument("--zcopy-args", default="", help="extra flags for zcopy serve")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="zcopy-offloop-", dir=args.dir)
    proc = None
    try:
        make_tree(tmp, args.entries, args.big)
        port_sock = socket.socket()
        port_sock.bind(("127.0.0.1", 0))
        port = port_sock.getsockname()[1]
        port_sock.close()
        proc = subprocess.Popen([sys.executable, "-m", "zcopy", "serve", tmp, "--port", str(port), "--workers", "1",
                                 "--allow-write", *args.zcopy_args.split()],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        pid = worker_pid(proc.pid)
        deadline = time.monotonic() + 20
        while True:
            try:
                get(port, HOT)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        idle = HotProbe(port)
        idle.start()
        time.sleep(min(args.seconds, 3))
        print(f"idle: {summary(idle.stop())}")
        lat = uploads_load(port, clients=args.clients, size=args.size, seconds=args.seconds)
        print(f"{args.clients} x {args.size // MiB} MiB uploads (fsync) + {args.entries}-entry listing in a loop: "
              f"{summary(lat)}")
        lat, grown = pipelined_load(port, clients=args.clients, pipelined=args.pipelined, seconds=args.seconds, pid=pid)
        print(f"{args.clients} clients x {args.pipelined} pipelined {args.big}-entry listings, never read: "
              f"{summary(lat)}; worker RssAnon grew {grown / MiB:.1f} MiB")
        return 0
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
