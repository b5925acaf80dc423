#!/usr/bin/env python3
"""Where a serve worker's Python time goes per request: cProfile over keep-alive GETs.

    python tools/profile_serve.py --requests 20000 --size 1KiB
    python tools/profile_serve.py --requests 20000 --depth 16     # 16 pipelined requests per write
    ZCOPY_TREE=/path/to/other/checkout python tools/profile_serve.py   # profile another tree

Runs the real worker (``zcopy.server.worker.Worker``, this tree's) in a forked
child under cProfile, drives it over loopback with ``--connections`` keep-alive
connections from this process (each writes ``--depth`` requests, then reads
their replies), stops it with SIGTERM and prints the functions by own time,
with calls per request. Under cProfile every call costs several times its
real price: read the calls per request and the ranking, not the times.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import selectors
import signal
import socket
import sys
import tempfile
import time

#: the source tree profiled: this tool's own, or ZCOPY_TREE (to profile another checkout)
TREE = os.path.abspath(os.environ.get("ZCOPY_TREE") or os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, TREE)
from zcopy.units import parse_size  # noqa: E402


def serve(root: str, listener: socket.socket, out: str, small_reply_max: int) -> None:
    os.environ["ZCOPY_STATS"] = "off"
    from zcopy.server.config import ServeConfig
    from zcopy.server.worker import Worker

    config = ServeConfig(root=root)
    if hasattr(config, "small_reply_max"):      # (a tree from before held bodies has no such setting)
        config.small_reply_max = small_reply_max
    worker = Worker(config, listener)
    prof = cProfile.Profile()
    prof.enable()
    try:
        worker.run()
    finally:
        prof.disable()
        prof.dump_stats(out)


def drive(port: int, requests: int, connections: int, depth: int, reply_len: int) -> float:
    req = b"GET /f HTTP/1.1\r\nHost: t\r\n\r\n" * depth
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(connections)]
    sel = selectors.DefaultSelector()
    left = {}
    for s in socks:
        s.sendall(req)
        left[s] = reply_len * depth
        sel.register(s, selectors.EVENT_READ)
    done = connections * depth
    t0 = time.perf_counter()
    while done < requests:
        for key, _ in sel.select():
            s = key.fileobj
            data = s.recv(1 << 20)
            if not data:
                raise RuntimeError("server closed")
            left[s] -= len(data)
            if left[s] == 0:
                s.sendall(req)
                left[s] = reply_len * depth
                done += depth
    elapsed = time.perf_counter() - t0
    for s in socks:
        s.close()
    return elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--size", type=parse_size, default=1024)
    ap.add_argument("--connections", type=int, default=1)
    ap.add_argument("--depth", type=int, default=1, help="requests written at once per connection")
    ap.add_argument("--small-reply-max", type=parse_size, default=16 << 10)
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="zcopy-profile-") as tmp:
        root = os.path.join(tmp, "root")
        os.mkdir(root)
        with open(os.path.join(root, "f"), "wb") as f:
            f.write(b"x" * args.size)
        out = os.path.join(tmp, "prof")
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        port = listener.getsockname()[1]
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                serve(root, listener, out, args.small_reply_max)
                code = 0
            finally:
                os._exit(code)
        listener.close()
        try:
            with socket.create_connection(("127.0.0.1", port)) as s:
                # Warm up, and learn the reply's length: the first replies carry the node's ETag,
                # later ones the content digest's, once it is computed off the loop.
                for _ in range(3):
                    time.sleep(0.3)
                    s.sendall(b"GET /f HTTP/1.1\r\nHost: t\r\n\r\n")
                    data = b""
                    while b"\r\n\r\n" not in data or len(data) < data.index(b"\r\n\r\n") + 4 + args.size:
                        data += s.recv(65536)
                reply_len = len(data)
            elapsed = drive(port, args.requests, args.connections, args.depth, reply_len)
        finally:
            os.kill(pid, signal.SIGTERM)
            os.waitpid(pid, 0)
        stats = pstats.Stats(out)
        n = args.requests
        print(f"{n} GETs of {args.size} B, {args.connections} connection(s), {args.depth} per write: "
              f"{n / elapsed:,.0f} req/s under cProfile")
        total_calls = sum(v[1] for v in stats.stats.values())
        print(f"function calls per request (all, incl. start and stop): {total_calls / n:.2f}\n")
        rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:args.top]
        print(f"{'calls/req':>10} {'own us/req':>11}  function")
        for (file, line, name), (cc, nc, tt, ct, callers) in rows:
            where = os.path.relpath(file, TREE) if file.startswith(TREE) else file
            print(f"{nc / n:10.2f} {tt / n * 1e6:11.2f}  {name} ({where}:{line})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
