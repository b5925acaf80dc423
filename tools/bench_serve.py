#!/usr/bin/env python3
"""Compare `zcopy serve` with nginx and `python -m http.server` on one folder.

Starts all three on 127.0.0.1 (one worker each; nginx from Debian with
sendfile on, open_file_cache and access_log off), then for R interleaved
rounds drives each with wrk (1 KiB and 64 KiB files, 64 keep-alive
connections) and a large-file client that splices the body into /dev/null,
and prints requests/s, GB/s, server CPU per request and ratios to nginx
(medians over the rounds). Every process it starts is stopped on exit.

    python tools/bench_serve.py --rounds 5 --duration 5 --large 1GiB
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from zcopy.units import format_size, parse_size  # noqa: E402

NGINX_CONF = """
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_requests 1000000;
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

LARGE_CLIENT = r"""
import os, socket, sys, time
port, path = int(sys.argv[1]), sys.argv[2]
s = socket.create_connection(("127.0.0.1", port))
s.sendall(f"GET {path} HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n".encode())
head = b""
while b"\r\n\r\n" not in head:
    head += s.recv(1)
length = int(next(l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")))
r, w = os.pipe()
import fcntl; fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, 1 << 20)   # the client must not be the bottleneck
null = os.open("/dev/null", os.O_WRONLY)
t0 = time.perf_counter(); left = length
while left:
    n = os.splice(s.fileno(), w, min(left, 1 << 20))
    if n == 0: raise SystemExit("short body")
    left -= n
    while n: n -= os.splice(r, null, n)
print(time.perf_counter() - t0)
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
    for p in list(pids):
        with contextlib.suppress(OSError):
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/children") as f:
                    pids += [int(c) for c in f.read().split()]
    return pids


def cpu_times(pids: list[int]) -> tuple[float, float]:
    """(user, system) CPU seconds of these processes so far (/proc/PID/stat utime, stime)."""
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


def run_wrk(port: int, path: str, duration: float, conns: int) -> float:
    out = subprocess.run(["wrk", "-t2", f"-c{conns}", f"-d{duration:g}s", f"http://127.0.0.1:{port}{path}"],
                         capture_output=True, text=True, timeout=duration + 60).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not m:
        raise RuntimeError(f"wrk failed on port {port}: {out[-500:]}")
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)", out)
    if errors:
        print(f"  wrk reported: {errors.group(0)}", file=sys.stderr)
    return float(m.group(1)) if m else 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--large", type=parse_size, default=parse_size("1GiB"))
    ap.add_argument("--zcopy-args", default="--auto", help="extra flags for zcopy serve")
    ap.add_argument("--skip", action="append", default=[], help="peer to leave out (nginx, http.server)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    for tool in ("wrk", "nginx"):
        if shutil.which(tool) is None and tool not in args.skip:
            sys.exit(f"{tool} is not installed (apt-get install {'nginx-light' if tool == 'nginx' else tool})")

    tmp = tempfile.mkdtemp(prefix="zcopy-bench-")
    os.chmod(tmp, 0o755)         # nginx's workers run as www-data
    try:
        root = os.path.join(tmp, "www")
        os.mkdir(root)
        for name, size in (("1k.bin", 1024), ("64k.bin", 65536)):
            with open(os.path.join(root, name), "wb") as f:
                f.write(os.urandom(size))
        os.chmod(root, 0o755)
        with open(os.path.join(root, "large.bin"), "wb") as f:
            f.truncate(args.large)           # sparse: page cache holds zeros, the disk is not the subject
        ports = {"nginx": free_port(), "zcopy": free_port(), "http.server": free_port()}
        with open(os.path.join(tmp, "nginx.conf"), "w") as f:
            f.write(NGINX_CONF.format(tmp=tmp, root=root, port=ports["nginx"]))
        peers = {
            "nginx": ["nginx", "-c", os.path.join(tmp, "nginx.conf"), "-p", tmp],
            "zcopy": [sys.executable, "-m", "zcopy", "serve", root, "--port", str(ports["zcopy"]), "--workers", "1",
                      *args.zcopy_args.split()],
            "http.server": [sys.executable, "-m", "http.server", "-b", "127.0.0.1", str(ports["http.server"])],
        }
        peers = {k: v for k, v in peers.items() if k not in args.skip}
        results: dict = {name: {"1k_rps": [], "64k_rps": [], "1k_cpu_us": [], "1k_user_us": [], "1k_sys_us": [],
                                "large_gbps": [], "large_cpu_s_per_gb": []}
                         for name in peers}
        with contextlib.ExitStack() as stack:
            running = {name: stack.enter_context(Peer(name, argv, ports[name], cwd=root))
                       for name, argv in peers.items()}
            for name in running:   # warm up caches
                run_wrk(ports[name], "/1k.bin", 1, 8)
            for r in range(args.rounds):
                for name, peer in running.items():
                    pids = peer.pids()
                    (u0, s0) = cpu_times(pids)
                    rps = run_wrk(ports[name], "/1k.bin", args.duration, args.connections)
                    (u1, s1) = cpu_times(pids)
                    per_request = 1e6 / max(rps * args.duration, 1)
                    results[name]["1k_rps"].append(rps)
                    results[name]["1k_user_us"].append((u1 - u0) * per_request)
                    results[name]["1k_sys_us"].append((s1 - s0) * per_request)
                    results[name]["1k_cpu_us"].append((u1 - u0 + s1 - s0) * per_request)
                    results[name]["64k_rps"].append(run_wrk(ports[name], "/64k.bin", args.duration, args.connections))
                    if name == "http.server" and r > 0:
                        continue   # one large transfer through http.server is enough to know it is slow
                    c0 = cpu_seconds(pids)
                    secs = float(subprocess.run([sys.executable, "-c", LARGE_CLIENT, str(ports[name]), "/large.bin"],
                                                capture_output=True, text=True, check=True, timeout=600).stdout)
                    c1 = cpu_seconds(pids)
                    results[name]["large_gbps"].append(args.large / secs / 1e9)
                    results[name]["large_cpu_s_per_gb"].append((c1 - c0) / (args.large / 1e9))
                    print(f"round {r + 1}/{args.rounds} {name}: 1k {rps:,.0f} req/s, large "
                          f"{results[name]['large_gbps'][-1]:.2f} GB/s", file=sys.stderr)
        med = {name: {k: statistics.median(v) if v else None for k, v in res.items()} for name, res in results.items()}
        if args.json:
            print(json.dumps({"rounds": args.rounds, "duration": args.duration, "large": args.large,
                              "medians": med, "raw": results}, indent=2))
            return 0
        base = med.get("nginx")
        print(f"\nmedians of {args.rounds} interleaved rounds, wrk -t2 -c{args.connections} -d{args.duration:g}s, "
              f"large file {format_size(args.large)}; zcopy and http.server on {sys.executable} "
              f"(Python {platform.python_version()})\n")
        print("| server | 1 KiB req/s | x nginx | 64 KiB req/s | x nginx | CPU us/req (1 KiB) | user + sys us/req "
              "| x nginx's CPU | large GB/s | x nginx | CPU s/GB |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for name, m in med.items():
            def ratio(key):
                return f"{m[key] / base[key]:.2f}" if base and m[key] and base[key] else "-"
            print(f"| {name} | {m['1k_rps']:,.0f} | {ratio('1k_rps')} | {m['64k_rps']:,.0f} | {ratio('64k_rps')} | "
                  f"{m['1k_cpu_us']:.1f} | {m['1k_user_us']:.1f} + {m['1k_sys_us']:.1f} | {ratio('1k_cpu_us')} | "
                  f"{m['large_gbps']:.2f} | {ratio('large_gbps')} | "
                  f"{m['large_cpu_s_per_gb']:.3f} |")
        if "nginx" in results:
            # The same statistic paired by round: each round's runs are seconds apart, so a
            # neighbour's load that drifts over minutes moves both sides of a ratio together.
            print()
            for name, res in results.items():
                if name != "nginx":
                    pairs = sorted(z / n for z, n in zip(res["1k_rps"], results["nginx"]["1k_rps"]) if n)
                    print(f"{name}: 1 KiB req/s / nginx's in the same round: median {statistics.median(pairs):.2f}, "
                          f"range {pairs[0]:.2f}-{pairs[-1]:.2f}")
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
