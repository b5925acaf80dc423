#!/usr/bin/env python3
"""Per-core serving speed: `zcopy serve` against nginx, lighttpd and h2o.

Every server runs with one worker, pinned with `taskset` to one CPU (the
first of this process's affinity mask, `--server-cpu`); the load generator
(`wrk -t1`, and the large-file client) is pinned to another (`--load-cpu`).
So the server under test has one core to itself and the client's own cost
is not taken from it. Each server is warmed first (and left to finish what
the warm-up started: zcopy hashes the large file once), then for R rounds every
server in turn (the order rotates each round) gets a 1 KiB and a 64 KiB wrk
run (keep-alive) and one pull of a large file (spliced into /dev/null). The
tool prints medians: req/s, GB/s, server CPU per request (user + sys:
/proc/PID/stat of the server's processes, master included), the ratio of
each figure to the best server's, and zcopy's ratio to each peer and to the
best peer. Then the same-round ratios to each peer: their median, range, and a
95% confidence interval of that median (distribution-free: two order statistics,
binomial), which says whether zcopy is above 1, below 1, or not distinguishable
from 1 at this many rounds; a bar is shown met only when its interval lies above 1. It also prints who bounded each rate: every server's busy share of a run (1.00: its core
was saturated) and the load generator's CPU per request and busy share. At 64 KiB wrk saturates
its core first (it reads each reply 8 KiB at a time); `--client discard` loads the server with
tools/discard_client.c instead, which drops reply bodies with recv(MSG_TRUNC). For the large pulls it
prints where the server's CPU went: CPU time per GB (exact: each process's CPU clock), its user and
system parts (10 ms ticks, /proc/PID/stat) and the timer interrupts its pinned CPU took per GB (with BBR over loopback most are TCP pacing timers, and they decide the rate: see
docs/benchmarks.md, "1 GiB: TCP pacing decides").

    python tools/bench_serve.py --rounds 5 --duration 5
    python tools/bench_serve.py --quick                   # a smoke run, ~30 s
    python tools/bench_serve.py --client discard          # 1 KiB/64 KiB load from tools/discard_client.c, not wrk
    python tools/bench_serve.py --syscalls 20000          # strace -c: calls per 1 KiB request
    python tools/bench_serve.py --idle 10000              # resident memory per idle keep-alive connection
    python tools/bench_serve.py --beside 300              # 64 KiB GET latency while the large file is pulled
    python tools/bench_serve.py --workers 2               # 2 workers each, unpinned, wrk -t2 on the same CPUs

Peers are configured alike: one worker, sendfile on (h2o 2.2 has no
sendfile setting: it reads files into its buffers), no access log (zcopy
neither), keep-alive (60 s idle), 16384 connections, the same files. A peer that is not installed is
skipped with a message saying how to install it (Debian: `apt-get install
nginx-light lighttpd h2o wrk`); zcopy and wrk are needed.

`--syscalls N` runs no wrk: it attaches `strace -c -f` to each server's
processes, sends N keep-alive GETs of the 1 KiB file over `--syscall-connections`
connections (each waiting for its reply before the next), and prints the
calls per request by syscall. `--idle N` opens N keep-alive connections to
each server in turn, one request each, and prints the growth of the
server's resident memory per connection (all its processes, and the worker
that holds the connections on its own). Every process it starts is
stopped on exit.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ctypes
import json
import math
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

#: the source tree this tool belongs to: its zcopy is the one benchmarked
TREE = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, TREE)
from zcopy.units import format_size, parse_size  # noqa: E402

NGINX_CONF = """
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 16384; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
    open_file_cache max=1000 inactive=60s;
    open_file_cache_valid 60s;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port} reuseport;
        root {root};
    }}
}}
"""

# No mod_accesslog: no access log. max-worker 0: the one process serves.
LIGHTTPD_CONF = """
server.document-root = "{root}"
server.bind = "127.0.0.1"
server.port = {port}
server.max-worker = 0
server.network-backend = "linux-sendfile"
server.max-keep-alive-requests = 65535
server.max-keep-alive-idle = 60
server.max-fds = 20000
server.max-connections = 16384
server.errorlog = "{tmp}/lighttpd-error.log"
mimetype.assign = ("" => "application/octet-stream")
"""

# No access-log directive: no access log. As root h2o needs a user to drop to.
H2O_CONF = """
num-threads: 1
max-connections: 16384
http1-request-timeout: 60
{user}error-log: {tmp}/h2o-error.log
listen:
  host: 127.0.0.1
  port: {port}
hosts:
  default:
    paths:
      /:
        file.dir: {root}
"""

#: Every server's connection limit (the configs above say it too), above --idle's 10,000.
MAX_CONNECTIONS = 16384

#: name -> (executable, Debian package)
PEERS = {"nginx": ("nginx", "nginx-light"), "lighttpd": ("lighttpd", "lighttpd"), "h2o": ("h2o", "h2o")}

LARGE_CLIENT = r"""
import os, socket, sys, time
port, path = int(sys.argv[1]), sys.argv[2]
s = socket.create_connection(("127.0.0.1", port))
s.sendall(f"GET {path} HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n".encode())
head = b""
while b"\r\n\r\n" not in head:
    head += s.recv(1)
length = int(next(l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")))
left = length - len(head.split(b"\r\n\r\n", 1)[1])
import resource
t0, c0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
if sys.argv[3] == "discard":       # recv(MSG_TRUNC): TCP drops the bytes without copying them (tcp(7))
    buf = bytearray(16 << 20)
    while left:
        n = s.recv_into(buf, min(left, len(buf)), socket.MSG_TRUNC)
        if n == 0: raise SystemExit("short body")
        left -= n
else:                              # splice into a pipe and on to /dev/null
    r, w = os.pipe()
    import fcntl; fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, 1 << 20)   # the client must not be the bottleneck
    null = os.open("/dev/null", os.O_WRONLY)
    while left:
        n = os.splice(s.fileno(), w, min(left, 1 << 20))
        if n == 0: raise SystemExit("short body")
        left -= n
        while n: n -= os.splice(r, null, n)
c1 = resource.getrusage(resource.RUSAGE_SELF)
print(time.perf_counter() - t0, (c1.ru_utime - c0.ru_utime) + (c1.ru_stime - c0.ru_stime))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def proc_tree(pid: int) -> list[int]:
    pids = [pid]
    for p in pids:           # grows while it is walked: children, then theirs
        with contextlib.suppress(OSError):
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/children") as f:
                    pids += [int(c) for c in f.read().split() if int(c) not in pids]
    return pids


def cpu_times(pids: list[int]) -> tuple[float, float]:
    """(user, system) CPU seconds of these processes so far (/proc/PID/stat utime, stime; all threads)."""
    user = system = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            user += int(fields[11])
            system += int(fields[12])
    tick = os.sysconf("SC_CLK_TCK")
    return user / tick, system / tick


def cpu_seconds(pids: list[int]) -> float:
    return sum(cpu_times(pids))


_libc = ctypes.CDLL(None, use_errno=True)


def cpu_ns(pids: list[int]) -> int:
    """CPU nanoseconds these processes have run so far, every thread's, exited ones included: each
    process's CPU clock (clock_getcpuclockid(3), then clock_gettime). Exact where /proc/PID/stat
    counts 10 ms ticks: nginx sends 64 MiB in under 10 ms of CPU, which stat may report as 0.
    (Summing the live threads' schedstat would lose a thread that exits between two readings.)
    It does not split user from system time; ``cpu_times`` does, coarsely."""
    total = 0
    clock = ctypes.c_int()
    for pid in pids:
        if _libc.clock_getcpuclockid(pid, ctypes.byref(clock)) == 0:     # (an errno, not -1: ESRCH)
            with contextlib.suppress(OSError):                           # (gone since)
                total += time.clock_gettime_ns(clock.value)
    return total


class Peer:
    def __init__(self, name: str, argv: list[str], port: int, cwd: str | None = None):
        self.name, self.argv, self.port, self.cwd = name, argv, port, cwd
        self.proc = None

    def __enter__(self):
        self.proc = subprocess.Popen(self.argv, cwd=self.cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        try:
            wait_port(self.port)
        except BaseException:
            self.__exit__(None, None, None)   # never leave a peer running that did not come up
            raise
        time.sleep(0.3)
        return self

    def pids(self) -> list[int]:
        return proc_tree(self.proc.pid)

    def __exit__(self, *exc):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def wrk(port: int, path: str, duration: int, conns: int, threads: int = 1,
        cpu: int | None = None, depth: int = 1) -> tuple[float, int]:
    """(requests/s, requests completed) of one wrk run; pinned to ``cpu`` if given; ``depth``
    above 1: each connection writes that many requests at once (tools/pipeline.lua)."""
    argv = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{duration:g}s", f"http://127.0.0.1:{port}{path}"]
    if depth > 1:
        argv[-1:-1] = ["-s", os.path.join(TREE, "tools", "pipeline.lua")]
        argv += ["--", str(depth)]
    if cpu is not None:
        argv = ["taskset", "-c", str(cpu), *argv]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    done = re.search(r"(\d+) requests in", out)
    if not m or not done:
        raise RuntimeError(f"wrk failed on port {port}: {out[-500:]}")
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)", out)
    if errors:
        print(f"  wrk on port {port}{path} reported: {errors.group(0)}", file=sys.stderr)
    return float(m.group(1)), int(done.group(1))


_DISCARD_BIN: list[str] = []


def discard_client(port: int, path: str, duration: int, conns: int, cpu: int | None = None) -> tuple[float, int]:
    """(requests/s, requests completed) of one run of tools/discard_client.c (built once with cc into a
    temporary folder): keep-alive GETs whose bodies it drops with recv(MSG_TRUNC), so that its own cost
    per reply does not grow with the reply (wrk reads 64 KiB in nine 8 KiB reads)."""
    if not _DISCARD_BIN:
        folder = tempfile.mkdtemp(prefix="zcopy-discard-")
        atexit.register(shutil.rmtree, folder, True)     # the built client goes with this process
        out = os.path.join(folder, "discard_client")
        subprocess.run(["cc", "-O2", "-o", out, os.path.join(TREE, "tools", "discard_client.c")], check=True)
        _DISCARD_BIN.append(out)
    argv = [_DISCARD_BIN[0], str(port), path, str(conns), str(duration)]
    if cpu is not None:
        argv = ["taskset", "-c", str(cpu), *argv]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60, check=True).stdout
    m = re.match(r"requests (\d+) seconds ([\d.]+) errors (\d+)", out)
    if not m:
        raise RuntimeError(f"discard_client failed on port {port}: {out[-500:]}")
    if int(m.group(3)):
        print(f"  discard_client on port {port}{path}: {m.group(3)} replies were not a 200 with a "
              "Content-Length (reconnected)", file=sys.stderr)
    return int(m.group(1)) / float(m.group(2)), int(m.group(1))


def large_mode(args) -> str:
    return "discard" if args.client == "discard" else "splice"


def run_load(port: int, path: str, duration: int, args, cpu: int | None = None, depth: int = 1) -> tuple[float, int]:
    """One run of the load generator ``--client`` names."""
    if args.client == "discard" and depth == 1 and args.workers == 1:
        return discard_client(port, path, duration, args.connections, cpu)
    return wrk(port, path, duration, args.connections, threads=args.workers, cpu=cpu, depth=depth)


# --- the servers ----------------------------------------------------------

def server_argv(name: str, tmp: str, root: str, port: int, zcopy_args: list[str], workers: int = 1) -> list[str]:
    """The command line (config files written into ``tmp``) of one server with ``workers`` workers
    (nginx worker processes, lighttpd forked workers, h2o threads)."""
    if name == "zcopy":
        # Its own state folder: the default one is shared with every other zcopy of this user (another
        # checkout may have migrated it to a schema this tree does not know).
        return [sys.executable, "-m", "zcopy", "serve", root, "--port", str(port), "--workers", str(workers),
                "--max-connections", str(MAX_CONNECTIONS), "--state-dir", os.path.join(tmp, "zcopy-state"),
                *zcopy_args]
    conf = os.path.join(tmp, f"{name}.conf")
    if name == "nginx":
        text, argv = NGINX_CONF, ["nginx", "-c", conf, "-p", tmp]
    elif name == "lighttpd":
        text, argv = LIGHTTPD_CONF, ["lighttpd", "-D", "-f", conf]
    elif name == "h2o":
        text, argv = H2O_CONF, ["h2o", "-c", conf]
    else:
        raise ValueError(name)
    user = "user: nobody\n" if os.geteuid() == 0 else ""
    text = text.format(tmp=tmp, root=root, port=port, user=user)
    if workers > 1:
        text = (text.replace("worker_processes 1;", f"worker_processes {workers};")
                .replace("server.max-worker = 0", f"server.max-worker = {workers}")
                .replace("num-threads: 1", f"num-threads: {workers}"))
    with open(conf, "w") as f:
        f.write(text)
    return argv


def available(names: list[str]) -> list[str]:
    """The servers of ``names`` that can run here; a message on stderr for each that cannot."""
    ok = []
    for name in names:
        exe, package = PEERS.get(name, (None, None))
        if exe and shutil.which(exe) is None:
            print(f"skipping {name}: not installed (Debian: apt-get install {package})", file=sys.stderr)
        else:
            ok.append(name)
    return ok


def make_root(tmp: str, large: int) -> str:
    root = os.path.join(tmp, "www")
    os.mkdir(root)
    for name, size in (("1k.bin", 1024), ("64k.bin", 65536)):
        with open(os.path.join(root, name), "wb") as f:
            f.write(os.urandom(size))
    with open(os.path.join(root, "large.bin"), "wb") as f:
        f.truncate(large)           # sparse: the page cache holds zeros, the disk is not the subject
    for path in (tmp, root):
        os.chmod(path, 0o755)       # nginx's workers run as www-data, h2o as nobody
    return root


def cpus(args) -> tuple[int | None, int | None]:
    """(server CPU, load CPU); both None with --workers above 1 (nothing is pinned)."""
    if getattr(args, "workers", 1) > 1:
        return None, None
    mask = sorted(os.sched_getaffinity(0))
    server = mask[0] if args.server_cpu is None else args.server_cpu
    load = next((c for c in mask if c != server), None) if args.load_cpu is None else args.load_cpu
    if load is None or load == server:
        sys.exit("bench_serve: needs two CPUs (one for the server, one for the load); this process may use "
                 f"{mask}")
    return server, load


# --- throughput -----------------------------------------------------------

KEYS = ("1k_rps", "1k_user_us", "1k_sys_us", "1k_load_us", "1k_busy", "64k_rps", "64k_user_us", "64k_sys_us",
        "64k_load_us", "64k_busy", "large_gbps", "large_cpu_s_per_gb", "large_busy", "large_load_busy",
        "large_user_s", "large_sys_s", "large_cpu_s", "large_timers")


def measure_wrk(peer: Peer, path: str, args, load_cpu: int | None,
                depth: int = 1) -> tuple[float, float, float, float, float]:
    """(req/s, user us/request, sys us/request, the load generator's us/request, the server's busy
    share of the run) of one wrk run (pinned to ``load_cpu`` if given). The last two say which side
    bounded the rate: a server short of 1.0 busy waited for the client."""
    pids = peer.pids()
    u0, s0 = cpu_times(pids)
    c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    rps, done = run_load(peer.port, path, args.duration, args, cpu=load_cpu, depth=depth)
    wall = time.monotonic() - t0
    c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    u1, s1 = cpu_times(pids)
    per = 1e6 / max(done, 1)
    load = (c1.ru_utime - c0.ru_utime) + (c1.ru_stime - c0.ru_stime)
    # wrk's run time is the duration; the process also starts and connects: the busy share is of the duration.
    return rps, (u1 - u0) * per, (s1 - s0) * per, load * per, ((u1 - u0) + (s1 - s0)) / min(wall, args.duration)


def timer_interrupts(cpu: int | None) -> int:
    """Local timer interrupts (the LOC line of /proc/interrupts) CPU ``cpu`` has taken so far; 0 when
    unpinned. Every hrtimer that expires on that CPU is one: with the BBR congestion control and no
    fq qdisc (loopback) TCP paces in software, and each pacing timer that fires is one."""
    if cpu is None:
        return 0
    with open("/proc/interrupts") as f:
        for line in f:
            fields = line.split()
            if fields and fields[0] == "LOC:":
                return int(fields[1 + cpu])
    return 0


def measure_large(peer: Peer, size: int, load_cpu: int | None, mode: str = "splice",
                  server_cpu: int | None = None) -> tuple[float, float, float, float, float, float, float, int]:
    """(GB/s, server CPU s/GB, the server's busy share of the pull, the client's, the server's user,
    system and exact CPU seconds, timer interrupts on ``server_cpu``) of one large-file pull, the client pinned
    to ``load_cpu`` if given (its share: its CPU time while the body came, over that time).
    ``mode``: how the client drops the body, "splice" (to /dev/null through a pipe) or "discard"
    (recv with MSG_TRUNC: cheaper, so that the client is further from bounding the rate)."""
    pids = peer.pids()
    u0, s0 = cpu_times(pids)
    n0 = cpu_ns(pids)
    t0 = timer_interrupts(server_cpu)
    pin = [] if load_cpu is None else ["taskset", "-c", str(load_cpu)]
    out = subprocess.run([*pin, sys.executable, "-c", LARGE_CLIENT, str(peer.port), "/large.bin", mode],
                         capture_output=True, text=True, check=True, timeout=600).stdout
    u1, s1 = cpu_times(pids)
    c = (cpu_ns(pids) - n0) / 1e9
    timers = timer_interrupts(server_cpu) - t0
    secs, client = map(float, out.split())
    return size / secs / 1e9, c / (size / 1e9), c / secs, client / secs, u1 - u0, s1 - s0, c, timers


def settle(peer: Peer, quiet: float = 0.02, timeout: float = 120) -> None:
    """Wait until ``peer`` is idle: less than ``quiet`` CPU seconds in half a second. zcopy hashes a
    file on its first GET (its content ETag, off the loop but on the same pinned CPU): 1 GiB takes
    most of a second of CPU, which the first round's pulls, of every server, would otherwise share."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = sum(cpu_times(peer.pids()))
        time.sleep(0.5)
        if sum(cpu_times(peer.pids())) - before < quiet:
            return


def throughput(running: dict[str, Peer], args, load_cpu: int | None,
               server_cpu: int | None = None) -> dict[str, dict[str, list[float]]]:
    results = {name: {k: [] for k in KEYS} for name in running}
    small = [size for size in ("1k", "64k") if size in args.sizes]
    for peer in running.values():                              # warm every server
        for size in small:
            run_load(peer.port, f"/{size}.bin", args.warmup, args, cpu=load_cpu)
        if "large" in args.sizes:
            measure_large(peer, args.large, load_cpu, large_mode(args))
    for peer in running.values():
        settle(peer)
    names = list(running)
    for r in range(args.rounds):
        order = names[r % len(names):] + names[:r % len(names)]   # no server always runs first
        for name in order:
            peer, res = running[name], results[name]
            for size in small:
                rps, user, system, load, busy = measure_wrk(peer, f"/{size}.bin", args, load_cpu)
                res[f"{size}_rps"].append(rps)
                res[f"{size}_user_us"].append(user)
                res[f"{size}_sys_us"].append(system)
                res[f"{size}_load_us"].append(load)
                res[f"{size}_busy"].append(busy)
            for _ in range(args.pulls if "large" in args.sizes else 0):
                gbps, cpu_gb, busy, client_busy, user, system, cpu, timers = measure_large(
                    peer, args.large, load_cpu, large_mode(args), server_cpu)
                res["large_gbps"].append(gbps)
                res["large_cpu_s_per_gb"].append(cpu_gb)
                res["large_busy"].append(busy)
                res["large_load_busy"].append(client_busy)
                res["large_user_s"].append(user)
                res["large_sys_s"].append(system)
                res["large_cpu_s"].append(cpu)
                res["large_timers"].append(timers)
            done = [f"1 KiB {res['1k_rps'][-1]:,.0f} req/s" if "1k" in args.sizes else "",
                    f"64 KiB {res['64k_rps'][-1]:,.0f} req/s" if "64k" in args.sizes else "",
                    f"large {res['large_gbps'][-1]:.2f} GB/s" if "large" in args.sizes else ""]
            print(f"round {r + 1}/{args.rounds} {name}: " + ", ".join(d for d in done if d), file=sys.stderr)
    return results


def pipelined(running: dict[str, Peer], args, load_cpu: int | None) -> None:
    """1 KiB GETs, ``args.pipeline`` written at once per connection: req/s and CPU per request."""
    results = {name: [] for name in running}
    for peer in running.values():
        wrk(peer.port, "/1k.bin", args.warmup, args.connections, cpu=load_cpu, depth=args.pipeline)
    names = list(running)
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            results[name].append(measure_wrk(running[name], "/1k.bin", args, load_cpu, depth=args.pipeline))
    med = {n: [statistics.median(x[i] for x in res) for i in range(3)] for n, res in results.items()}
    best = max(m[0] for m in med.values())
    print(f"\n1 KiB GETs pipelined {args.pipeline} deep (tools/pipeline.lua), wrk -t1 -c{args.connections} "
          f"-d{args.duration:g}s, medians of {args.rounds} interleaved rounds; load average before: "
          f"{args.load_before}, after: {load_average()}\n")
    print("| server | req/s | x best | CPU us/req (user + sys) |")
    print("|---|---|---|---|")
    for name, (rps, user, system) in med.items():
        print(f"| {name} | {rps:,.0f} | {rps / best:.2f} | {user + system:.1f} ({user:.1f} + {system:.1f}) |")


def report_throughput(results: dict, args, server_cpu: int | None, load_cpu: int | None) -> None:
    # A size not run (--sizes) has no figures: 0 here, shown as "-".
    med = {name: {k: statistics.median(v) if v else 0.0 for k, v in res.items()} for name, res in results.items()}
    for m in med.values():
        for size in ("1k", "64k"):
            m[f"{size}_cpu_us"] = m[f"{size}_user_us"] + m[f"{size}_sys_us"]
    # higher is better for rates, lower for CPU
    best = {k: (max if k.endswith(("rps", "gbps")) else min)(m[k] for m in med.values())
            for k in ("1k_rps", "1k_cpu_us", "64k_rps", "64k_cpu_us", "large_gbps", "large_cpu_s_per_gb")}

    def x(m, k):
        return f"{m[k] / best[k]:.2f}" if best[k] else "-"

    placement = (f"server pinned to CPU {server_cpu}, load to CPU {load_cpu}" if server_cpu is not None else
                 f"{args.workers} workers per server, NOT pinned: servers, wrk and the large-file client share "
                 "all CPUs")
    client = (f"tools/discard_client.c -c{args.connections}" if args.client == "discard" and args.workers == 1
              else f"wrk -t{args.workers} -c{args.connections}")
    print(f"\nmedians of {args.rounds} interleaved rounds; {placement}; {client} "
          f"-d{args.duration:g}s; large file {format_size(args.large)}, {args.pulls} pull(s) per round; "
          f"zcopy on {sys.executable} (Python {platform.python_version()}), hot path {args.hot_path}; "
          f"load average before: {args.load_before}, "
          f"after: {load_average()}\n")
    print("| server | 1 KiB req/s | x best | CPU us/req (user + sys) | x best | 64 KiB req/s | x best "
          "| CPU us/req (user + sys) | x best | large GB/s | x best | CPU s/GB | x best |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, m in med.items():
        print(f"| {name} | {m['1k_rps']:,.0f} | {x(m, '1k_rps')} "
              f"| {m['1k_cpu_us']:.1f} ({m['1k_user_us']:.1f} + {m['1k_sys_us']:.1f}) | {x(m, '1k_cpu_us')} "
              f"| {m['64k_rps']:,.0f} | {x(m, '64k_rps')} "
              f"| {m['64k_cpu_us']:.1f} ({m['64k_user_us']:.1f} + {m['64k_sys_us']:.1f}) | {x(m, '64k_cpu_us')} "
              f"| {m['large_gbps']:.2f} | {x(m, 'large_gbps')} "
              f"| {m['large_cpu_s_per_gb']:.3f} | {x(m, 'large_cpu_s_per_gb')} |")
    print("\nWho bounded the rate: the server's busy share of each run (1.00: its core was saturated), and the "
          "load generator's CPU per request (user + sys, from its rusage) and busy share\n")
    print("| server | 1 KiB server busy | 1 KiB load us/req | load busy | 64 KiB server busy | 64 KiB load us/req "
          "| load busy | large: server busy | client busy |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, m in med.items():
        print(f"| {name} | {m['1k_busy']:.2f} | {m['1k_load_us']:.1f} | {m['1k_load_us'] * m['1k_rps'] / 1e6:.2f} "
              f"| {m['64k_busy']:.2f} | {m['64k_load_us']:.1f} | {m['64k_load_us'] * m['64k_rps'] / 1e6:.2f} "
              f"| {m['large_busy']:.2f} | {m['large_load_busy']:.2f} |")
    if "large" in args.sizes:
        # User and system time come in 10 ms ticks: one pull's user time is mostly 0 or 1 tick, so the
        # sums over all pulls are divided by all the bytes, not a median taken. Their total is the
        # exact CPU time (the processes' CPU clocks), which a quick run's few ticks can miss altogether.
        gb = args.large / 1e9
        print("\nWhere the large pulls' server CPU went (sums over every pull, per GB): CPU time (exact), its "
              "user and system parts (10 ms ticks), and timer interrupts on the server's CPU (median per GB; "
              "with BBR over loopback most are TCP pacing timers, docs/benchmarks.md)\n")
        print("| server | CPU ms/GB | user ms/GB | sys ms/GB | timer interrupts/GB |")
        print("|---|---|---|---|---|")
        for name, res in results.items():
            n = len(res["large_user_s"]) or 1
            print(f"| {name} | {sum(res['large_cpu_s']) * 1e3 / n / gb:.1f} "
                  f"| {sum(res['large_user_s']) * 1e3 / n / gb:.1f} "
                  f"| {sum(res['large_sys_s']) * 1e3 / n / gb:.0f} "
                  f"| {statistics.median(res['large_timers']) / gb if res['large_timers'] else 0:,.0f} |")
    if "zcopy" not in med or len(med) < 2:
        return
    z = med["zcopy"]
    peers = [n for n in med if n != "zcopy"]
    cols = ("1k_rps", "1k_cpu_us", "64k_rps", "64k_cpu_us", "large_gbps", "large_cpu_s_per_gb")
    print("\nzcopy / peer (rates: above 1 is faster; CPU: below 1 is cheaper)\n")
    print("| against | 1 KiB req/s | 1 KiB CPU/req | 64 KiB req/s | 64 KiB CPU/req | large GB/s | large CPU/GB |")
    print("|---|---|---|---|---|---|---|")
    for name in peers:
        print(f"| {name} | " + " | ".join(f"{z[k] / med[name][k]:.2f}" if med[name][k] else "-" for k in cols) + " |")
    best_peer = {k: (max if k.endswith(("rps", "gbps")) else min)(med[n][k] for n in peers) for k in cols}
    print("| best peer | " + " | ".join(f"{z[k] / best_peer[k]:.2f}" if best_peer[k] else "-" for k in cols) + " |")
    # Paired by round: the runs of one round are seconds apart, so a neighbour's load that
    # drifts over minutes moves both sides of each ratio together.
    print()
    for key, what in (("1k_rps", "1 KiB req/s"), ("64k_rps", "64 KiB req/s"), ("large_gbps", "large GB/s")):
        for name in peers:
            pairs = sorted(a / b for a, b in zip(results["zcopy"][key], results[name][key]) if b)
            if pairs:
                print(f"zcopy {what} / {name}'s in the same round: median {statistics.median(pairs):.2f}, "
                      f"range {pairs[0]:.2f}-{pairs[-1]:.2f}, {verdict(pairs)}")


def median_interval(values: list[float], confidence: float = 0.95) -> tuple[float, float] | None:
    """A distribution-free confidence interval for the median of ``values`` (sorted): the k-th
    smallest and k-th largest, with k the largest for which a median outside them has probability
    at most 1 - confidence (each value is above the median with probability 1/2: binomial). None
    when there are too few values for that confidence (fewer than 6 at 95%)."""
    n = len(values)
    tail = (1 - confidence) / 2
    below, k = 0.0, 0
    while True:                             # P(Binomial(n, 1/2) <= k)
        below += math.comb(n, k) / 2 ** n
        if below > tail:
            break
        k += 1
    if k == 0:
        return None
    return values[k - 1], values[n - k]


def verdict(pairs: list[float]) -> str:
    """What the same-round ratios (sorted) say about the bar of 1.0, at 95% confidence."""
    interval = median_interval(pairs)
    if interval is None:
        return "too few rounds for a 95% interval"
    low, high = interval
    side = ("above 1" if low > 1 else "below 1" if high < 1 else "not distinguishable from 1")
    return f"95% interval of the median {low:.3f}-{high:.3f}: {side}"


# --- syscalls per request -------------------------------------------------

def http_get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()


def read_reply(sock: socket.socket, buf: bytearray) -> None:
    """Read one whole keep-alive reply (head + Content-Length body) off ``sock``; what
    follows it stays in ``buf``."""
    while (end := buf.find(b"\r\n\r\n")) < 0:
        buf += _recv(sock)
    m = re.search(rb"(?im)^content-length:\s*(\d+)", bytes(buf[:end]))
    if not m or not buf.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"unexpected reply: {bytes(buf[:200])!r}")
    total = end + 4 + int(m.group(1))
    while len(buf) < total:
        buf += _recv(sock)
    del buf[:total]


def _recv(sock: socket.socket) -> bytes:
    data = sock.recv(1 << 20)
    if not data:
        raise RuntimeError("the server closed the connection")
    return data


def traced(pid: int) -> bool:
    """True once every thread of ``pid`` has a tracer."""
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                if re.search(r"^TracerPid:\s+0$", f.read(), re.M):
                    return False
    except OSError:
        return True          # gone: nothing left to wait for
    return True


def parse_strace_summary(text: str) -> dict[str, tuple[int, int]]:
    """{syscall: (calls, errors)} from `strace -c` output (the total row left out)."""
    calls = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) in (5, 6) and re.fullmatch(r"[\d.]+", parts[0]) and parts[3].isdigit() \
                and parts[-1] != "total":
            calls[parts[-1]] = (int(parts[3]), int(parts[4]) if len(parts) == 6 else 0)
    return calls


def count_syscalls(peer: Peer, path: str, requests: int, conns: int, out: str,
                   depth: int = 1) -> dict[str, tuple[int, int]]:
    """The server's syscalls (all its processes and threads) while ``requests`` keep-alive
    GETs of ``path`` are answered over ``conns`` connections opened (and used once) before,
    ``depth`` written at once on each."""
    socks = [socket.create_connection(("127.0.0.1", peer.port)) for _ in range(conns)]
    bufs = [bytearray() for _ in socks]
    request = http_get(path)
    try:
        for s, buf in zip(socks, bufs):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.sendall(request)
            read_reply(s, buf)
        pids = peer.pids()
        argv = ["strace", "-c", "-f", "-o", out]
        for pid in pids:
            argv += ["-p", str(pid)]
        tracer = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 30
            while not all(traced(pid) for pid in pids):
                if tracer.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"strace could not attach to {peer.name} ({pids})")
                time.sleep(0.01)
            done = 0
            burst = request * depth
            while done < requests:
                batch = socks[:max(1, (requests - done) // depth)]
                for s in batch:
                    s.sendall(burst)
                for s, buf in zip(batch, bufs):
                    for _ in range(depth):
                        read_reply(s, buf)
                done += len(batch) * depth
        finally:
            tracer.send_signal(signal.SIGINT)     # detach and write the summary
            tracer.wait(30)
        with open(out) as f:
            return parse_strace_summary(f.read())
    finally:
        for s in socks:
            s.close()


def syscalls(running: dict[str, Peer], args, tmp: str) -> None:
    if shutil.which("strace") is None:
        sys.exit("bench_serve: --syscalls needs strace (Debian: apt-get install strace)")
    table, failed = {}, {}
    for name, peer in running.items():
        calls = count_syscalls(peer, args.syscall_file, args.syscalls, args.syscall_connections,
                               os.path.join(tmp, f"strace-{name}.txt"), args.pipeline)
        table[name] = {call: n / args.syscalls for call, (n, _) in calls.items()}
        failed[name] = {call: e / args.syscalls for call, (_, e) in calls.items() if e}
        print(f"{name}: {sum(table[name].values()):.2f} syscalls per request", file=sys.stderr)
    if args.json:
        print(json.dumps({"requests": args.syscalls, "connections": args.syscall_connections,
                          "per_request": table, "failed_per_request": failed}, indent=2))
        return

    def cell(name, call):
        n, e = table[name].get(call, 0), failed[name].get(call, 0)
        return f"{n:.2f} ({e:.2f} failed)" if e >= 0.005 else f"{n:.2f}"

    names = list(table)
    rows = sorted({c for t in table.values() for c in t}, key=lambda c: -sum(t.get(c, 0) for t in table.values()))
    print(f"\nsyscalls per request: strace -c -f on each server's processes, {args.syscalls} keep-alive GETs of "
          f"{args.syscall_file} over {args.syscall_connections} connection(s), {args.pipeline} written at once on each, "
          "then their replies read; "
          "calls below 0.005 per request are left out; failed: returned an error (EAGAIN...)\n")
    print("| syscall | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for call in rows:
        if max(t.get(call, 0) for t in table.values()) >= 0.005:
            print(f"| {call} | " + " | ".join(cell(n, call) for n in names) + " |")
    print("| **total** | " + " | ".join(f"**{sum(table[n].values()):.2f}**" for n in names) + " |")


# --- idle keep-alive connections -------------------------------------------

def rss_kib(pids: list[int]) -> int:
    """Resident memory of these processes (VmRSS, KiB)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as f:
            m = re.search(r"^VmRSS:\s+(\d+) kB", f.read(), re.M)
            total += int(m.group(1)) if m else 0
    return total


def idle(running: dict[str, Peer], args) -> None:
    """Each server in turn holds ``args.idle`` keep-alive connections that have each been answered
    once; its resident memory before and while it holds them, per connection: of all its processes,
    and of the one that holds the connections (the worker: the process whose RSS grew most)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = args.idle + 64
    if hard != resource.RLIM_INFINITY and hard < need:
        sys.exit(f"bench_serve: --idle {args.idle} needs {need} fds; the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, need), hard))
    request = http_get("/1k.bin")
    table = {}
    for name, peer in running.items():
        pids = peer.pids()
        before = {pid: rss_kib([pid]) for pid in pids}
        socks: list[socket.socket] = []
        try:
            while len(socks) < args.idle:
                batch = [socket.create_connection(("127.0.0.1", peer.port))
                         for _ in range(min(100, args.idle - len(socks)))]   # within every listen backlog
                socks += batch
                for s in batch:
                    s.sendall(request)
                for s in batch:
                    read_reply(s, bytearray())
            held = {pid: rss_kib([pid]) for pid in pids}
            for s in (socks[0], socks[-1]):         # the first and the last are still served
                s.sendall(request)
                read_reply(s, bytearray())
        finally:
            for s in socks:
                s.close()
        worker = max(pids, key=lambda pid: held[pid] - before[pid])
        b, h = sum(before.values()), sum(held.values())
        table[name] = {"before": b, "held": h, "per_connection": (h - b) / args.idle,
                       "worker_before": before[worker], "worker_held": held[worker],
                       "worker_per_connection": (held[worker] - before[worker]) / args.idle,
                       "processes": len(pids)}
        print(f"{name}: {table[name]['per_connection']:.2f} KiB per idle connection "
              f"(worker {table[name]['worker_per_connection']:.2f})", file=sys.stderr)
    if args.json:
        print(json.dumps({"connections": args.idle, "rss_kib": table}, indent=2))
        return
    best = min(t["worker_per_connection"] for t in table.values())
    print(f"\nresident memory (VmRSS) before and while holding {args.idle:,} keep-alive connections, each "
          f"answered once (a 1 KiB GET) and then idle; load average {args.load_before} before, "
          f"{load_average()} after\n")
    print("| server | processes | all: RSS before MiB | all: holding MiB | worker: RSS before MiB | "
          "worker: holding MiB | worker KiB per connection | x best |")
    print("|---|---|---|---|---|---|---|---|")
    for name, t in table.items():
        ratio = f"{t['worker_per_connection'] / best:.2f}" if best > 0 else "-"
        print(f"| {name} | {t['processes']} | {t['before'] / 1024:.1f} | {t['held'] / 1024:.1f} | "
              f"{t['worker_before'] / 1024:.1f} | {t['worker_held'] / 1024:.1f} | "
              f"{t['worker_per_connection']:.2f} | {ratio} |")


def get_latencies(port: int, path: str, count: int, gap: float = 0.002) -> list[float]:
    """Microseconds from sending each of ``count`` GETs of ``path`` to having its whole reply, one
    at a time on one keep-alive connection, ``gap`` seconds apart."""
    out, buf, request = [], bytearray(), http_get(path)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        for _ in range(count):
            t = time.perf_counter()
            s.sendall(request)
            read_reply(s, buf)
            out.append((time.perf_counter() - t) * 1e6)
            time.sleep(gap)
    return out


def beside(running: dict[str, Peer], args, load_cpu: int | None) -> None:
    """How long a 64 KiB GET waits while the same worker sends the large file: ``args.beside`` GETs
    on one keep-alive connection per server and round, while the large file is pulled over and
    over on another (both clients on the load CPU). The large body leaves a step a loop turn; this
    is what a bigger step costs the others (docs/benchmarks.md, "Corked")."""
    if load_cpu is not None:
        os.sched_setaffinity(0, {load_cpu})         # this thread: the GETs' client
    results = {name: [] for name in running}
    for peer in running.values():
        measure_large(peer, args.large, load_cpu, large_mode(args))
        settle(peer)
    names = list(running)
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            peer, stop = running[name], threading.Event()

            def pull(peer=peer, stop=stop):
                while not stop.is_set():
                    measure_large(peer, args.large, load_cpu, large_mode(args))

            puller = threading.Thread(target=pull)
            puller.start()
            try:
                time.sleep(0.3)                     # the pull under way
                results[name] += get_latencies(peer.port, "/64k.bin", args.beside)
            finally:
                stop.set()
                puller.join()
    print(f"\n64 KiB GETs beside large-file pulls: {args.beside} GETs per server and round, one at a time on one "
          f"keep-alive connection, while {format_size(args.large)} is pulled over and over on another; "
          f"{args.rounds} interleaved rounds; clients pinned to CPU {load_cpu}; zcopy {args.zcopy_args}\n")
    print("| server | p50 us | p90 us | p99 us | max us |\n|---|---|---|---|---|")
    for name, lat in results.items():
        q = statistics.quantiles(lat, n=100, method="inclusive")
        print(f"| {name} | {q[49]:,.0f} | {q[89]:,.0f} | {q[98]:,.0f} | {max(lat):,.0f} |")


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    ap.add_argument("--warmup", type=int, default=2, help="seconds of wrk per server and file before round 1")
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--client", choices=("wrk", "discard"), default="wrk",
                    help="the load generator of the 1 KiB and 64 KiB runs: wrk, or tools/discard_client.c, which "
                         "drops reply bodies with recv(MSG_TRUNC) (at 64 KiB wrk saturates its core first: "
                         "see the busy shares it prints); one worker only. With discard the large pull's client "
                         "drops the body with recv(MSG_TRUNC) too, instead of splicing it to /dev/null")
    ap.add_argument("--large", type=parse_size, default=parse_size("1GiB"))
    ap.add_argument("--sizes", default="1k,64k,large",
                    help="which of 1k, 64k, large to measure (comma-separated; e.g. --sizes large --pulls 5 "
                         "for the large pull alone, with more pulls per round)")
    ap.add_argument("--pulls", type=int, default=1, help="large-file pulls per server and round (one pull "
                    "varies by 2-4x from round to round here: the medians need several)")
    ap.add_argument("--servers", default="zcopy,nginx,lighttpd,h2o",
                    help="comma-separated, from zcopy, nginx, lighttpd, h2o")
    ap.add_argument("--zcopy-args", default="--auto", help="extra flags for zcopy serve")
    ap.add_argument("--server-cpu", type=int, help="CPU the servers are pinned to (default: the first allowed)")
    ap.add_argument("--load-cpu", type=int, help="CPU wrk and the large-file client are pinned to "
                    "(default: the next allowed)")
    ap.add_argument("--workers", type=int, default=1, help="workers per server; above 1 nothing is pinned and "
                    "wrk runs that many threads on the same CPUs (issue 14's two-worker comparison)")
    ap.add_argument("--quick", action="store_true", help="a smoke run: 1 round of 1 s, 64 MiB large file")
    ap.add_argument("--syscalls", type=int, metavar="N", help="count syscalls per request over N 1 KiB "
                    "requests under strace instead of measuring speed")
    ap.add_argument("--syscall-connections", type=int, default=1)
    ap.add_argument("--syscall-file", default="/1k.bin", choices=["/1k.bin", "/64k.bin"],
                    help="the file --syscalls asks for (default: /1k.bin)")
    ap.add_argument("--pipeline", type=int, default=1, metavar="DEPTH",
                    help="1 KiB GETs only, DEPTH requests written at once per connection (with --syscalls: "
                         "the strace count too)")
    ap.add_argument("--idle", type=int, metavar="N", help="measure resident memory per idle keep-alive "
                    f"connection with N of them open (at most {MAX_CONNECTIONS - 100}) instead of speed")
    ap.add_argument("--beside", type=int, metavar="N", help="latency of N 64 KiB GETs per server and round "
                    "while the large file is pulled on another connection, instead of speed")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    names = [n.strip() for n in args.servers.split(",") if n.strip()]
    if unknown := [n for n in names if n != "zcopy" and n not in PEERS]:
        ap.error(f"unknown server {unknown[0]!r} (choose from zcopy, {', '.join(PEERS)})")
    if args.quick:
        args.rounds, args.duration, args.warmup, args.large = 1, 1, 1, min(args.large, 64 << 20)
    if args.rounds < 1 or args.duration <= 0 or args.connections < 1 or args.syscall_connections < 1 \
            or args.workers < 1 or args.pulls < 1 \
            or (args.syscalls is not None and args.syscalls < 1) \
            or (args.beside is not None and args.beside < 2) \
            or (args.idle is not None and not 0 < args.idle <= MAX_CONNECTIONS - 100):
        ap.error("--rounds, --duration, --connections, --workers, --pulls, --syscalls, --syscall-connections, --beside and --idle must be "
                 f"positive (--idle at most {MAX_CONNECTIONS - 100})")
    if args.syscalls is not None and args.idle is not None:
        ap.error("--syscalls and --idle are separate runs")
    args.sizes = {x.strip() for x in args.sizes.split(",") if x.strip()}
    if not args.sizes or not args.sizes <= {"1k", "64k", "large"}:
        ap.error("--sizes takes one or more of 1k, 64k, large, comma-separated")
    if shutil.which("wrk") is None and args.syscalls is None and args.idle is None and args.beside is None:
        sys.exit("bench_serve: needs wrk (Debian: apt-get install wrk)")
    server_cpu, load_cpu = cpus(args)
    names = available(names)
    args.load_before = load_average()
    # What zcopy serve will run: its per-request modules compiled or as plain Python (docs/hotpath.md).
    args.hot_path = subprocess.run([sys.executable, "-c", "import zcopy.hotpath as h; print(h.summary())"], cwd=TREE,
                                   capture_output=True, text=True).stdout.strip() or "unknown"

    tmp = tempfile.mkdtemp(prefix="zcopy-bench-")
    try:
        root = make_root(tmp, args.large)
        with contextlib.ExitStack() as stack:
            running = {}
            for name in names:
                port = free_port()
                pin = [] if server_cpu is None else ["taskset", "-c", str(server_cpu)]
                argv = [*pin, *server_argv(name, tmp, root, port, args.zcopy_args.split(), args.workers)]
                # zcopy from this tree (its working directory comes first on sys.path), not whichever
                # zcopy is installed; the peers from the served root.
                cwd = TREE if name == "zcopy" else root
                running[name] = stack.enter_context(Peer(name, argv, port, cwd=cwd))
            if args.syscalls is not None:
                syscalls(running, args, tmp)
                return 0
            if args.idle is not None:
                idle(running, args)
                return 0
            if args.beside is not None:
                beside(running, args, load_cpu)
                return 0
            if args.pipeline > 1:
                pipelined(running, args, load_cpu)
                return 0
            results = throughput(running, args, load_cpu, server_cpu)
        if args.json:
            print(json.dumps({"rounds": args.rounds, "duration": args.duration, "large": args.large,
                              "server_cpu": server_cpu, "load_cpu": load_cpu, "load_before": args.load_before,
                              "raw": results}, indent=2))
        else:
            report_throughput(results, args, server_cpu, load_cpu)
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
