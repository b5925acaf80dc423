#!/usr/bin/env python3
"""HTTPS serving speed per core: `zcopy serve --tls-cert` against nginx, same certificate, cipher
and record size.

Pinned as tools/bench_serve.py is: each server has one worker on `--server-cpu` (the first CPU
of this process's mask), the load (wrk, and the large-file client) runs on `--load-cpu` (the next
one). Both servers get the same P-256 certificate made for the run (`openssl req -x509`), TLS 1.3
only, and the same suite: nginx is told `ssl_conf_command Ciphersuites` with the one zcopy
negotiates (checked with a handshake to each before measuring, and printed). Records: zcopy
writes file bodies in 256 KiB `SSL_write`s, which OpenSSL cuts into full 16 KiB records;
nginx's `ssl_buffer_size 16k` does the same. nginx has `sendfile on` and
`ssl_conf_command Options KTLS`, so where the kernel has the tls module both sides may use kTLS
(zcopy asks each socket; the table says which path each took when it can tell). For R rounds,
servers in rotating order: a 1 KiB keep-alive wrk run (`wrk https://...`, -c connections) and
one pull of a large file (default 1 GiB, sparse: the page cache, not the disk, is measured)
by a pinned Python client that decrypts into one reused buffer. Medians: req/s and GB/s, server
CPU (user + sys, /proc of the server's processes) per request and per GB, and zcopy's ratio to
nginx.

    python tools/bench_tls.py --rounds 5 --duration 5
    python tools/bench_tls.py --quick                       # a smoke run
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import re
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from bench_serve import Peer, cpu_seconds, cpu_times, free_port, load_average, make_root  # noqa: E402
from zcopy.units import format_size, parse_size  # noqa: E402

NGINX_TLS_CONF = """
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
        listen 127.0.0.1:{port} ssl reuseport;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.3;
        ssl_conf_command Ciphersuites {suite};
        ssl_conf_command Options KTLS;
        ssl_buffer_size 16k;
        ssl_session_cache off;
        ssl_session_tickets off;
        root {root};
    }}
}}
"""

LARGE_CLIENT = r"""
import socket, ssl, sys, time
port, path = int(sys.argv[1]), sys.argv[2]
ctx = ssl.create_default_context(cafile=sys.argv[3])
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="localhost")
s.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
buf = bytearray(1 << 20); view = memoryview(buf); have = b""
while b"\r\n\r\n" not in have:
    n = s.recv_into(view); have += bytes(view[:n])
head, _, rest = have.partition(b"\r\n\r\n")
length = int(next(l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")))
t0 = time.perf_counter(); left = length - len(rest)
while left:
    n = s.recv_into(view[:min(left, len(buf))])
    if n == 0: raise SystemExit("short body")
    left -= n
print(time.perf_counter() - t0, s.cipher()[0])
"""


def make_cert(tmp: str) -> tuple[str, str]:
    cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"], check=True, capture_output=True)
    os.chmod(key, 0o644)        # nginx's master reads it as root; the folder is private to this run
    return cert, key


def negotiated(port: int, cafile: str) -> str:
    ctx = ssl.create_default_context(cafile=cafile)
    with ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10), server_hostname="localhost") as s:
        return f"{s.version()} {s.cipher()[0]}"


def wrk_https(port: int, path: str, duration: float, conns: int, cpu: int) -> tuple[float, int]:
    argv = ["taskset", "-c", str(cpu), "wrk", "-t1", f"-c{conns}", f"-d{duration:g}s",
            f"https://127.0.0.1:{port}{path}"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    done = re.search(r"(\d+) requests in", out)
    if not m or not done:
        raise RuntimeError(f"wrk failed on port {port}: {out[-500:]}")
    if errors := re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)", out):
        print(f"  wrk on port {port}{path} reported: {errors.group(0)}", file=sys.stderr)
    return float(m.group(1)), int(done.group(1))


def measure_small(peer: Peer, args, cpu: int) -> tuple[float, float]:
    """(req/s, server CPU us per request)."""
    pids = peer.pids()
    u0, s0 = cpu_times(pids)
    rps, done = wrk_https(peer.port, "/1k.bin", args.duration, args.connections, cpu)
    u1, s1 = cpu_times(pids)
    return rps, (u1 - u0 + s1 - s0) * 1e6 / max(done, 1)


def measure_large(peer: Peer, args, cpu: int, cafile: str) -> tuple[float, float, str]:
    """(GB/s, server CPU s per GB, cipher) of one large pull."""
    pids = peer.pids()
    c0 = cpu_seconds(pids)
    out = subprocess.run(["taskset", "-c", str(cpu), sys.executable, "-c", LARGE_CLIENT, str(peer.port),
                          "/large.bin", cafile], capture_output=True, text=True, check=True, timeout=900).stdout
    c1 = cpu_seconds(pids)
    secs, cipher = out.split()
    return args.large / float(secs) / 1e9, (c1 - c0) / (args.large / 1e9), cipher


def tls_paths(zcopy_pid: int) -> str:
    """What zcopy's own stats say about the path (kTLS or user space) of its bytes."""
    from zcopy.stats import discover, read_all

    for target in discover():
        if target.pid == zcopy_pid:
            snap = read_all(target) or {}
            tls = snap.get("tls") or {}
            return (f"zcopy: {tls.get('ktls_connections', 0)} kTLS / {tls.get('user_connections', 0)} user-space TLS "
                    f"connections; {format_size(tls.get('ktls_bytes_sent', 0))} sent through kTLS, "
                    f"{format_size(tls.get('user_bytes_sent', 0))} encrypted in user space "
                    f"({tls.get('path_reason', '')})")
    return "zcopy: no stats found"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=float, default=5, help="seconds per wrk run")
    ap.add_argument("--warmup", type=float, default=2)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--large", type=parse_size, default=parse_size("1GiB"))
    ap.add_argument("--zcopy-args", default="", help="extra flags for zcopy serve")
    ap.add_argument("--server-cpu", type=int)
    ap.add_argument("--load-cpu", type=int)
    ap.add_argument("--quick", action="store_true", help="1 round of 1 s, 128 MiB large file")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.duration, args.warmup, args.large = 1, 1, 1, min(args.large, 128 << 20)
    for tool in ("wrk", "nginx", "openssl", "taskset"):
        if shutil.which(tool) is None:
            sys.exit(f"bench_tls: needs {tool} (Debian: apt-get install wrk nginx-light openssl util-linux)")
    mask = sorted(os.sched_getaffinity(0))
    server_cpu = mask[0] if args.server_cpu is None else args.server_cpu
    load_cpu = next(c for c in mask if c != server_cpu) if args.load_cpu is None else args.load_cpu
    load_before = load_average()
    tmp = tempfile.mkdtemp(prefix="zcopy-bench-tls-")
    os.chmod(tmp, 0o755)
    try:
        root = make_root(tmp, args.large)
        cert, key = make_cert(tmp)
        pin = ["taskset", "-c", str(server_cpu)]
        results = {"zcopy": {"rps": [], "us": [], "gbps": [], "sgb": []},
                   "nginx": {"rps": [], "us": [], "gbps": [], "sgb": []}}
        ciphers: dict[str, str] = {}
        with contextlib.ExitStack() as stack:
            zport = free_port()
            zcopy = stack.enter_context(Peer("zcopy", [*pin, sys.executable, "-m", "zcopy", "serve", root, "--port",
                                                       str(zport), "--workers", "1", "--max-connections", "16384",
                                                       "--state-dir", os.path.join(tmp, "state"),
                                                       "--tls-cert", cert, "--tls-key", key,
                                                       *args.zcopy_args.split()], zport, cwd=root))
            zsuite = negotiated(zport, cert)
            nport = free_port()
            conf = os.path.join(tmp, "nginx.conf")
            with open(conf, "w") as f:
                f.write(NGINX_TLS_CONF.format(tmp=tmp, root=root, port=nport, cert=cert, key=key,
                                              suite=zsuite.split()[1]))
            nginx = stack.enter_context(Peer("nginx", [*pin, "nginx", "-c", conf, "-p", tmp], nport, cwd=root))
            nsuite = negotiated(nport, cert)
            print(f"negotiated: zcopy {zsuite}, nginx {nsuite}", file=sys.stderr)
            running = {"zcopy": zcopy, "nginx": nginx}
            for peer in running.values():
                wrk_https(peer.port, "/1k.bin", args.warmup, args.connections, load_cpu)
                measure_large(peer, args, load_cpu, cert)
            names = list(running)
            for r in range(args.rounds):
                for name in names[r % 2:] + names[:r % 2]:
                    res = results[name]
                    rps, us = measure_small(running[name], args, load_cpu)
                    gbps, sgb, cipher = measure_large(running[name], args, load_cpu, cert)
                    ciphers[name] = cipher
                    for k, v in (("rps", rps), ("us", us), ("gbps", gbps), ("sgb", sgb)):
                        res[k].append(v)
                    print(f"round {r + 1}/{args.rounds} {name}: 1 KiB {rps:,.0f} req/s ({us:.1f} us CPU/req), "
                          f"large {gbps:.2f} GB/s ({sgb:.2f} CPU s/GB)", file=sys.stderr)
            paths = tls_paths(zcopy.proc.pid)
        med = {n: {k: statistics.median(v) for k, v in res.items()} for n, res in results.items()}
        z, n = med["zcopy"], med["nginx"]
        print(f"\nmedians of {args.rounds} interleaved rounds; servers pinned to CPU {server_cpu}, load to CPU "
              f"{load_cpu}; wrk -t1 -c{args.connections} -d{args.duration:g}s https; large file "
              f"{format_size(args.large)}; {zsuite} for zcopy, {nsuite} for nginx (large pulls: zcopy "
              f"{ciphers.get('zcopy')}, nginx {ciphers.get('nginx')}); 16 KiB records; {ssl.OPENSSL_VERSION}; "
              f"Python {platform.python_version()}; load average before: {load_before}, after: {load_average()}\n")
        print("| server | 1 KiB req/s | CPU us/req | 1 GiB GB/s | CPU s/GB |")
        print("|---|---|---|---|---|")
        for name, m in med.items():
            print(f"| {name} | {m['rps']:,.0f} | {m['us']:.1f} | {m['gbps']:.2f} | {m['sgb']:.2f} |")
        print(f"| zcopy / nginx | {z['rps'] / n['rps']:.2f} | {z['us'] / n['us']:.2f} | {z['gbps'] / n['gbps']:.2f} "
              f"| {z['sgb'] / n['sgb']:.2f} |")
        # Paired by round: the two runs of a round are seconds apart, so load from other processes
        # that drifts over minutes moves both sides of each ratio together.
        for key, label in (("rps", "1 KiB req/s"), ("gbps", "1 GiB GB/s"), ("us", "CPU us/req"), ("sgb", "CPU s/GB")):
            pairs = sorted(a / b for a, b in zip(results["zcopy"][key], results["nginx"][key]) if b)
            print(f"zcopy / nginx {label} in the same round: median {statistics.median(pairs):.2f}, "
                  f"range {pairs[0]:.2f}-{pairs[-1]:.2f}")
        print(f"\n{paths}")
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
