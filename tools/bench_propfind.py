#!/usr/bin/env python3
"""PROPFIND Depth 1 of a big folder: `zcopy serve` against nginx with dav_ext.

Makes a folder of N files (default 10,000; names `file-00000.txt`...), starts
zcopy (one worker, `--allow-write`, a state folder: class 2) and nginx (one
worker, `dav_ext_methods PROPFIND OPTIONS` from Debian's
libnginx-mod-http-dav-ext) on the same folder in the same run, each pinned
with `taskset` to the server CPU (`--server-cpu`, default the first allowed);
this process (the client) pins itself to the load CPU (`--load-cpu`, the next
allowed). For R rounds, each server in turn (the order rotates) answers K
PROPFIND Depth 1 requests per body and mode over one keep-alive connection;
the time of each, from the request's first byte to the Multi-Status's last,
is recorded. Modes: `repeat` asks again for an unchanged folder (zcopy
answers from its kept page, as a client polling a folder is answered);
`changed` first touches one member (utime: the folder changed, so zcopy
builds the Multi-Status anew, re-stat'ing only what its watch named);
`restat` touches the folder itself, after which zcopy stats every member
again and renders those whose stat moved (as after the watch lost events, and
every 10 s); `full` renames the folder to a name never asked before
(`big-N`, renamed back after the answer) and asks for that: a folder's first
PROPFIND, nothing kept from any earlier one (for nginx, the same folder under a
new name). Then, apart (so the client's own threads
do not slow the timed requests), `full` PROPFINDs are sent for
`--latency-seconds` while another connection GETs a hot 1 KiB file back to
back: its slowest and median latency say whether a PROPFIND build delays
other connections. It prints, per body, mode and
server, the median and best time, the Multi-Status size, the server's CPU
per request (its threads' run time from /proc/PID/task/TID/schedstat) and zcopy's ratio to nginx.

Bodies: `named` asks for six DAV: properties (resourcetype,
getcontentlength, getlastmodified, getetag, displayname, getcontenttype);
`rclone` is the body rclone 1.60 sends with `--webdav-vendor owncloud`
(five DAV: properties and `oc:checksums`, captured); `allprop` sends no body
(RFC 4918: allprop, what rclone sends by default). nginx's dav_ext answers a
fixed property set and has no dead properties; zcopy looks for dead
properties (extended attributes) for `rclone` and `allprop`, member by member
in folders that hold some (none here: docs/webdav.md).

    python tools/bench_propfind.py                       # 10,000 files, 5 rounds x 5 requests (about 2 min)
    python tools/bench_propfind.py --entries 1000 --rounds 1 --requests 3   # a smoke run
    python tools/bench_propfind.py --bodies named --modes restat,full --latency-seconds 0   # some cases only

Every process it starts is stopped and its folder removed on exit.
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

sys.path.insert(0, os.path.dirname(__file__))
from bench_serve import Peer, free_port, load_average  # noqa: E402

DAV_EXT = "/usr/lib/nginx/modules/ngx_http_dav_ext_module.so"

NGINX_CONF = """
load_module {module};
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location / {{
            dav_methods PUT DELETE MKCOL COPY MOVE;
            dav_ext_methods PROPFIND OPTIONS;
        }}
    }}
}}
"""

NAMED = (b'<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:"><D:prop><D:resourcetype/>'
         b'<D:getcontentlength/><D:getlastmodified/><D:getetag/><D:displayname/><D:getcontenttype/>'
         b'</D:prop></D:propfind>')
#: What rclone 1.60's webdav backend sends with `--webdav-vendor owncloud` (captured; its default vendor
#: sends no body: allprop). oc:checksums is not a DAV: property, so zcopy looks for dead properties.
RCLONE = (b'<?xml version="1.0"?>\n<d:propfind  xmlns:d="DAV:" xmlns:oc="http://owncloud.org/ns" '
          b'xmlns:nc="http://nextcloud.org/ns">\n <d:prop>\n  <d:displayname />\n  <d:getlastmodified />\n'
          b'  <d:getcontentlength />\n  <d:resourcetype />\n  <d:getcontenttype />\n  <oc:checksums />\n'
          b' </d:prop>\n</d:propfind>\n')
BODIES = {"named": NAMED, "rclone": RCLONE, "allprop": b""}
MODES = ("repeat", "changed", "restat", "full")


def _thread_files(pids: list[int], name: str):
    """(pid, tid, text) of /proc/PID/task/TID/``name`` for each live thread of ``pids``."""
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/{name}") as f:
                    yield pid, int(tid), f.read()
            except OSError:
                pass                    # the thread ended meanwhile


def cpu_seconds(pids: list[int]) -> float:
    """CPU time of the processes' live threads, from /proc/PID/task/TID/schedstat (nanoseconds: the
    10 ms ticks of /proc/PID/stat are too coarse for one request)."""
    total = 0
    for _, _, text in _thread_files(pids, "schedstat"):
        try:
            total += int(text.split()[0])
        except (ValueError, IndexError):
            pass
    return total / 1e9


def thread_ticks(pids: list[int]) -> dict:
    """(pid, tid) -> [user, system] clock ticks of each live thread (/proc/PID/task/TID/stat)."""
    out = {}
    for pid, tid, text in _thread_files(pids, "stat"):
        try:
            fields = text.rsplit(")", 1)[1].split()
            out[(pid, tid)] = [int(fields[11]), int(fields[12])]
        except (ValueError, IndexError):
            pass
    return out


def make_folder(tmp: str, entries: int) -> str:
    root = os.path.join(tmp, "root")
    big = os.path.join(root, "big")
    os.makedirs(big)
    for d in (tmp, root, big):
        os.chmod(d, 0o755)          # nginx's worker runs as nobody/www-data
    for i in range(entries):
        with open(os.path.join(big, f"file-{i:05d}.txt"), "wb") as f:
            f.write(b"x" * (i % 4096))
    with open(os.path.join(root, "hot.txt"), "wb") as f:
        f.write(b"h" * 1024)
    return root


class HotGets(threading.Thread):
    """GETs /hot.txt back to back on one keep-alive connection, recording each latency."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.latencies: list[float] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        req = f"GET /hot.txt HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n\r\n".encode()
        with socket.create_connection(("127.0.0.1", self.port)) as sock:
            while not self.stopping.is_set():
                t0 = time.perf_counter()
                sock.sendall(req)
                buf = b""
                while not (b"\r\n\r\n" in buf and len(buf) >= buf.index(b"\r\n\r\n") + 4 + 1024):
                    chunk = sock.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                self.latencies.append(time.perf_counter() - t0)


def propfind(sock: socket.socket, port: int, body: bytes, folder: str = "big") -> tuple[float, int]:
    """(seconds, body bytes) of one PROPFIND Depth 1 of /<folder>/ on a keep-alive socket."""
    head = (f"PROPFIND /{folder}/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nDepth: 1\r\n"
            f"Content-Type: application/xml\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    t0 = time.perf_counter()
    sock.sendall(head + body)
    buf = bytearray()
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(1 << 20)
        if not chunk:
            raise RuntimeError("connection closed before the head")
        buf += chunk
    head_end = buf.index(b"\r\n\r\n") + 4
    lines = bytes(buf[:head_end]).decode("latin-1").split("\r\n")
    if " 207 " not in lines[0] + " ":
        raise RuntimeError(f"not a 207: {lines[0]}")
    fields = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
    body_bytes = buf[head_end:]
    if "content-length" in fields:
        want = int(fields["content-length"])
        while len(body_bytes) < want:
            chunk = sock.recv(1 << 20)
            if not chunk:
                raise RuntimeError("connection closed mid-body")
            body_bytes += chunk
    else:                               # chunked (nginx dav_ext)
        while not body_bytes.endswith(b"0\r\n\r\n"):
            chunk = sock.recv(1 << 20)
            if not chunk:
                raise RuntimeError("connection closed mid-body")
            body_bytes += chunk
    return time.perf_counter() - t0, len(body_bytes)


def cpus(args) -> tuple[int | None, int | None]:
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        return None, None
    server = args.server_cpu if args.server_cpu is not None else allowed[0]
    load = args.load_cpu if args.load_cpu is not None else next(c for c in allowed if c != server)
    return server, load


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entries", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--requests", type=int, default=5, help="PROPFINDs per server, body and round")
    ap.add_argument("--latency-seconds", type=float, default=5.0)
    ap.add_argument("--server-cpu", type=int)
    ap.add_argument("--load-cpu", type=int)
    ap.add_argument("--servers", default="zcopy,nginx")
    ap.add_argument("--bodies", default=",".join(BODIES), help="comma-separated, of: " + ", ".join(BODIES))
    ap.add_argument("--modes", default=",".join(MODES), help="comma-separated, of: " + ", ".join(MODES))
    ap.add_argument("--threads", action="store_true", help="also print zcopy's user and system CPU per "
                    "request, its main (loop) thread apart from the others (10 ms ticks, summed over the case)")
    args = ap.parse_args()
    bodies = [b.strip() for b in args.bodies.split(",") if b.strip()]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not bodies or not modes or not set(bodies) <= set(BODIES) or not set(modes) <= set(MODES):
        ap.error(f"--bodies: some of {', '.join(BODIES)}; --modes: some of {', '.join(MODES)}")
    if args.entries < 1 or args.rounds < 1 or args.requests < 1:
        ap.error("--entries, --rounds and --requests must be positive")
    names = [n.strip() for n in args.servers.split(",") if n.strip()]
    if "nginx" in names and not (shutil.which("nginx") and os.path.exists(DAV_EXT)):
        print("bench_propfind: nginx or its dav_ext module is missing (Debian: apt-get install nginx-light "
              "libnginx-mod-http-dav-ext): zcopy alone", file=sys.stderr)
        names.remove("nginx")
    server_cpu, load_cpu = cpus(args)
    load_before = load_average()
    tmp = tempfile.mkdtemp(prefix="zcopy-bench-propfind-")
    try:
        root = make_folder(tmp, args.entries)
        pin = [] if server_cpu is None else ["taskset", "-c", str(server_cpu)]
        if load_cpu is not None:
            os.sched_setaffinity(0, {load_cpu})
        with contextlib.ExitStack() as stack:
            running = {}
            for name in names:
                port = free_port()
                if name == "zcopy":
                    state = os.path.join(tmp, "state")
                    argv = [sys.executable, "-m", "zcopy", "serve", root, "--port", str(port), "--workers", "1",
                            "--allow-write", "--state-dir", state]
                else:
                    conf = os.path.join(tmp, "nginx.conf")
                    with open(conf, "w") as f:
                        f.write(NGINX_CONF.format(module=DAV_EXT, tmp=tmp, root=root, port=port))
                    argv = ["nginx", "-c", conf, "-p", tmp]
                env_root = os.path.join(os.path.dirname(__file__), "..")
                running[name] = stack.enter_context(Peer(name, [*pin, *argv], port, cwd=env_root))
            socks = {name: stack.enter_context(socket.create_connection(("127.0.0.1", p.port)))
                     for name, p in running.items()}
            cases = [(b, m) for b in bodies for m in modes]
            times: dict = {(n, c): [] for n in running for c in cases}
            cpu: dict = {(n, c): [] for n in running for c in cases}
            sizes: dict = {}
            split: dict = {}        # (case, "main" or "other") -> [user, system] ticks (--threads)
            hot: dict = {n: [] for n in running}
            member = os.path.join(root, "big", "file-00000.txt")
            for name, p in running.items():            # warm: page cache, file caches, imports
                for body in BODIES.values():
                    propfind(socks[name], p.port, body)
            order = list(running)
            renamed = 0
            for r in range(args.rounds):
                for name in order[r % len(order):] + order[:r % len(order)]:
                    p = running[name]
                    for case in cases:
                        body = BODIES[case[0]]
                        for _ in range(args.requests):
                            folder = "big"
                            if case[1] == "changed":
                                os.utime(member)
                            elif case[1] == "restat":
                                os.utime(os.path.dirname(member))
                            elif case[1] == "full":     # a name never asked before: a first build
                                renamed += 1
                                folder = f"big-{renamed}"
                                os.rename(os.path.join(root, "big"), os.path.join(root, folder))
                            c0 = cpu_seconds(p.pids())
                            t0 = thread_ticks(p.pids()) if args.threads and name == "zcopy" else None
                            try:
                                t, size = propfind(socks[name], p.port, body, folder)
                            finally:
                                if folder != "big":
                                    os.rename(os.path.join(root, folder), os.path.join(root, "big"))
                            cpu[(name, case)].append(cpu_seconds(p.pids()) - c0)
                            if t0 is not None:
                                for key, (user, system) in thread_ticks(p.pids()).items():
                                    was = t0.get(key, [0, 0])
                                    part = split.setdefault((case, "main" if key[0] == key[1] else "other"), [0, 0])
                                    part[0] += user - was[0]
                                    part[1] += system - was[1]
                            times[(name, case)].append(t)
                            sizes[(name, case)] = size
            for name, p in running.items():
                if args.latency_seconds <= 0:
                    break
                probe = HotGets(p.port)
                probe.start()
                end = time.monotonic() + args.latency_seconds
                while time.monotonic() < end:
                    for body in map(BODIES.get, bodies):     # first builds (`full`), the dearest
                        renamed += 1
                        folder = f"big-{renamed}"
                        os.rename(os.path.join(root, "big"), os.path.join(root, folder))
                        try:
                            propfind(socks[name], p.port, body, folder)
                        finally:
                            os.rename(os.path.join(root, folder), os.path.join(root, "big"))
                probe.stopping.set()
                probe.join()
                hot[name] = probe.latencies
        print(f"PROPFIND Depth 1 of {args.entries} files; server CPU {server_cpu}, client CPU {load_cpu}; "
              f"{args.rounds} rounds x {args.requests} requests; load average before: {load_before}")
        if "zcopy" in running:             # which tree, compiled or not: as `python -m zcopy` above sees it
            which = subprocess.run([sys.executable, "-c", "import os, zcopy, zcopy.hotpath as h; "
                                    "print(os.path.dirname(os.path.dirname(zcopy.__file__)), h.summary())"],
                                   cwd=os.path.join(os.path.dirname(__file__), ".."), capture_output=True,
                                   text=True).stdout.strip()
            print(f"zcopy: {which}")
        print(f"{'body':8} {'mode':8} {'server':6} {'median s':>9} {'best s':>8} {'CPU s/req':>9} {'bytes':>9}")
        for case in cases:
            for name in running:
                ts = times[(name, case)]
                print(f"{case[0]:8} {case[1]:8} {name:6} {statistics.median(ts):9.4f} {min(ts):8.4f} "
                      f"{statistics.median(cpu[(name, case)]):9.4f} {sizes[(name, case)]:9d}")
            if "zcopy" in running and "nginx" in running:
                ratio = statistics.median(times[("zcopy", case)]) / statistics.median(times[("nginx", case)])
                print(f"{case[0]:8} {case[1]:8} zcopy/nginx median time: {ratio:.2f}x")
        tick = os.sysconf("SC_CLK_TCK")
        for case in cases:
            parts = [(part, split[(case, part)]) for part in ("main", "other") if (case, part) in split]
            if parts:
                n = args.rounds * args.requests
                print(f"{case[0]:8} {case[1]:8} zcopy threads per request: " + "; ".join(
                    f"{part} user {u / tick / n * 1000:.1f} ms, system {s_ / tick / n * 1000:.1f} ms"
                    for part, (u, s_) in parts))
        for name, lat in hot.items():
            if lat:
                lat.sort()
                print(f"hot 1 KiB GET while `full` PROPFINDs run, {name}: {len(lat)} requests, median "
                      f"{statistics.median(lat) * 1000:.2f} ms, p99 {lat[int(len(lat) * 0.99)] * 1000:.2f} ms, "
                      f"slowest {lat[-1] * 1000:.2f} ms")
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
