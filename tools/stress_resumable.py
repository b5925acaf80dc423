#!/usr/bin/env python3
"""Random cuts of resumable (tus) uploads into `zcopy serve` (docs/uploads.md).

N uploads (default 20) of SIZE (default 256 MiB) each, every one cut K times (default 5) at random
points before it completes. A cut is, in turn, the client dropping its connection mid-PATCH and a
SIGKILL of every server process (the node's process group) followed by a restart on the same port and
folders. After each cut the uploader asks HEAD for the offset and sends from there, as a tus client
does. Every stored file must equal the source byte for byte (SHA-256). At the end one more upload is
abandoned and the run waits for the expiry sweep: the partials folder and the uploads table must be
empty.

    python tools/stress_resumable.py                 # the issue's run: 20 x 256 MiB, 5 cuts each
    python tools/stress_resumable.py --quick         # CI size: 4 x 16 MiB, 3 cuts each

Everything runs in a temp folder (``--dir``, default /var/tmp: a real disk, so fsync means
something); every process started is stopped and the folder removed on exit.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import os
import random
import select
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from bench_serve import free_port, wait_port  # noqa: E402

from zcopy.units import format_size, parse_size  # noqa: E402

TUS = "Tus-Resumable: 1.0.0\r\n"


class Node:
    """`zcopy serve` in its own process group: SIGKILL takes it whole."""

    def __init__(self, argv: list[str], port: int) -> None:
        self.argv, self.port, self.proc = argv, port, None

    def start(self) -> None:
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        wait_port(self.port, 30)

    def kill(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)
            # Until every process of the group is gone: a dying worker's SO_REUSEPORT listener would
            # otherwise still take (and reset) connections meant for the restarted node.
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    os.killpg(self.proc.pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.02)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
            self.proc = None


def exchange(port: int, head: str, *, timeout: float = 60) -> tuple[int, dict]:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(head.encode() + b"\r\n")
        return read_head(s)


def read_head(s: socket.socket) -> tuple[int, dict]:
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("closed before a response")
        buf += chunk
    lines = buf.split(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers


def offset_of(port: int, loc: str) -> int:
    status, h = exchange(port, f"HEAD {loc} HTTP/1.1\r\nHost: s\r\n{TUS}Connection: close\r\n")
    if status != 200:
        raise RuntimeError(f"HEAD {loc}: {status}")
    return int(h["upload-offset"])


def stable_offset(port: int, loc: str) -> int:
    """The server's offset once a cut has been recorded (two answers 0.2 s apart agree)."""
    last = offset_of(port, loc)
    while True:
        time.sleep(0.2)
        now = offset_of(port, loc)
        if now == last:
            return now
        last = now


def send_range(s: socket.socket, fd: int, start: int, end: int) -> None:
    """sendfile(2) of [start, end) to a socket that has a timeout (non-blocking underneath)."""
    at = start
    while at < end:
        try:
            at += os.sendfile(s.fileno(), fd, at, min(end - at, 8 << 20))
        except BlockingIOError:
            if not select.select([], [s], [], 120)[1]:
                raise TimeoutError("the server took nothing for 120 s") from None


def patch(port: int, loc: str, fd: int, offset: int, size: int, stop_at: int | None) -> int | None:
    """PATCH from ``offset`` to the end; ``stop_at``: drop the connection after that many bytes.
    The final status, or None when cut."""
    with socket.create_connection(("127.0.0.1", port), timeout=120) as s:
        s.sendall((f"PATCH {loc} HTTP/1.1\r\nHost: s\r\n{TUS}Upload-Offset: {offset}\r\n"
                   f"Content-Type: application/offset+octet-stream\r\nContent-Length: {size - offset}\r\n\r\n").encode())
        end = size if stop_at is None else min(size, offset + stop_at)
        send_range(s, fd, offset, end)
        if stop_at is not None:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")   # RST
            return None
        return read_head(s)[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--uploads", type=int, default=20)
    ap.add_argument("--size", type=parse_size, default=256 << 20)
    ap.add_argument("--cuts", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="4 uploads of 16 MiB, 3 cuts each")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--dir", default="/var/tmp")
    ap.add_argument("--seed", type=int, default=None)
    args = ap.parse_args()
    if args.quick:
        args.uploads, args.size, args.cuts = 4, 16 << 20, 3
    seed = args.seed if args.seed is not None else random.randrange(1 << 32)
    rng = random.Random(seed)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("terminated"))
    tmp = tempfile.mkdtemp(prefix="zcopy-stress-resumable-", dir=args.dir)
    node = None
    try:
        root, state = os.path.join(tmp, "root"), os.path.join(tmp, "state")
        os.mkdir(root)
        src = os.path.join(tmp, "source.bin")
        with open(src, "wb") as f:
            left = args.size
            while left:
                left -= f.write(os.urandom(min(left, 16 << 20)))
        with open(src, "rb") as f:
            want = hashlib.file_digest(f, "sha256").hexdigest()
        port = free_port()
        expiry = 6
        node = Node([sys.executable, "-m", "zcopy", "serve", root, "--port", str(port), "--workers",
                     str(args.workers), "--allow-write", "--state-dir", state, "--upload-expiry", str(expiry)], port)
        node.start()
        fd = os.open(src, os.O_RDONLY)
        t0 = time.monotonic()
        kills = drops = refused = 0
        sent = 0
        for i in range(args.uploads):
            name = f"u{i}.bin"
            status, h = exchange(port, f"POST / HTTP/1.1\r\nHost: s\r\n{TUS}Upload-Length: {args.size}\r\n"
                                       f"Upload-Metadata: filename {base64.b64encode(name.encode()).decode()}\r\n"
                                       "Content-Length: 0\r\n")
            assert status == 201, status
            loc = h["location"]
            offset = 0
            cut = 0
            while cut < args.cuts:
                # a random point in what is left (at least one byte before the end)
                stop = rng.randrange(1, max(2, args.size - offset))
                try:
                    if cut % 2 == 0:
                        patch(port, loc, fd, offset, args.size, stop)
                        drops += 1
                    else:
                        # SIGKILL every server process while a PATCH is under way
                        with socket.create_connection(("127.0.0.1", port), timeout=120) as s:
                            s.sendall((f"PATCH {loc} HTTP/1.1\r\nHost: s\r\n{TUS}Upload-Offset: {offset}\r\n"
                                       "Content-Type: application/offset+octet-stream\r\n"
                                       f"Content-Length: {args.size - offset}\r\n\r\n").encode())
                            send_range(s, fd, offset, offset + stop)
                            node.kill()
                        node.start()
                        kills += 1
                    sent += stop
                    cut += 1
                except (BrokenPipeError, ConnectionResetError):
                    refused += 1        # the server refused this PATCH (a 409: the offset moved): ask again
                offset = stable_offset(port, loc)
            status = patch(port, loc, fd, offset, args.size, None)
            sent += args.size - offset
            assert status == 204, status
            with open(os.path.join(root, name), "rb") as f:
                got = hashlib.file_digest(f, "sha256").hexdigest()
            if got != want:
                raise SystemExit(f"upload {i}: stored file differs from the source (seed {seed})")
            os.unlink(os.path.join(root, name))
            print(f"upload {i + 1}/{args.uploads}: byte-identical after {args.cuts} cuts", file=sys.stderr)
        secs = time.monotonic() - t0
        os.close(fd)
        # an abandoned upload is swept after the expiry
        status, h = exchange(port, f"POST / HTTP/1.1\r\nHost: s\r\n{TUS}Upload-Length: 10\r\n"
                                   f"Upload-Metadata: filename {base64.b64encode(b'gone').decode()}\r\n"
                                   "Content-Length: 0\r\n")
        assert status == 201
        folder = os.path.join(root, ".zcopy", "uploads")
        deadline = time.monotonic() + expiry * 4 + 10
        while time.monotonic() < deadline:
            db = sqlite3.connect(f"file:{state}/state.db?mode=ro", uri=True)
            left_rows = db.execute("SELECT count(*) FROM uploads").fetchone()[0]
            db.close()
            if not os.listdir(folder) and not left_rows:
                break
            time.sleep(0.5)
        else:
            raise SystemExit(f"after the expiry: {os.listdir(folder)} in the partials folder, {left_rows} rows")
        print(f"ok: {args.uploads} uploads of {format_size(args.size)}, {args.cuts} cuts each "
              f"({drops} dropped connections, {kills} SIGKILLs of every server process, {refused} PATCHes refused "
              f"with 409 and retried), all byte-identical; "
              f"{format_size(sent)} sent for {format_size(args.uploads * args.size)} stored; "
              f"nothing left after the expiry sweep; {secs:.1f} s; seed {seed}")
        return 0
    finally:
        if node is not None:
            node.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
