#!/usr/bin/env python3
"""Upload benchmark: `zcopy put` and `curl -T` into `zcopy serve` and nginx.

Uploads one file (default 1 GiB) over 127.0.0.1 with both clients to each
server, all running at once, in R interleaved rounds, and prints medians of
GB/s (end to end, process start to exit, 1 GB = 10^9 bytes) and CPU seconds
per GiB of the server's process tree (utime + stime from /proc/PID/stat,
read before and after each upload) and of the client.

Servers (one worker/process each, each with its own root folder):

- ``zcopy serve --allow-write --upload-engine splice`` and ``... recv``,
  each with ``--no-fsync`` and with the default fsync before rename;
- nginx (Debian, ``dav_methods PUT``, ``create_full_put_path``, body temp
  files in the same file system as the root so its final rename is a
  rename; nginx does not fsync).

The source file and every server root live in one temp folder on tmpfs
(``--dir``, default /dev/shm), so neither disk speed nor writeback is what
is measured. Each upload is checked (size, and sampled bytes against the
source) and the stored file removed before the next. Every process started is
stopped and the temp folder removed on exit, on success or failure.

    python tools/bench_upload.py --rounds 3 --size 1GiB

``--tree NAME=PATH`` runs the zcopy servers from the source tree PATH
(PYTHONPATH; the tree's own build, compiled or not) instead of the installed
zcopy, once per tree, so two trees are measured in the same interleaved rounds
(``--tree main=/work/main --tree new=/work/wt/x``); ``--fsync`` picks which of
the fsync modes run (default both). ``--pin`` runs every server on
``--server-cpu`` and the clients on ``--client-cpu`` (taskset), so a server's
worker and its executor threads share one CPU and the client does not compete
for it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from bench_serve import Peer, cpu_seconds, free_port  # noqa: E402
from zcopy.units import format_size, parse_size  # noqa: E402

GIB = 1 << 30

NGINX_CONF = """
{user}
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_max_body_size 0;
    client_body_temp_path {root}/.nginx-body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        dav_methods PUT;
        create_full_put_path on;
    }}
}}
"""


class Server(Peer):
    """bench_serve's Peer, but a server that never starts listening is
    stopped too (Peer.__exit__ does not run when __enter__ raises)."""

    def __enter__(self):
        try:
            return super().__enter__()
        except BaseException:
            if self.proc is not None:
                self.__exit__(None, None, None)
            raise


def fs_type(path: str) -> str:
    """The file system type /proc/mounts gives for ``path``'s mount."""
    best, kind = "", "?"
    path = os.path.realpath(path)
    with open("/proc/mounts") as f:
        for line in f:
            mnt, typ = line.split()[1:3]
            if (path == mnt or path.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
                best, kind = mnt, typ
    return kind


def make_source(path: str, size: int) -> None:
    """Incompressible bytes (a random 16 MiB block repeated): real pages, not holes."""
    block = os.urandom(16 << 20)
    with open(path, "wb") as f:
        left = size
        while left:
            left -= f.write(block[:min(left, len(block))])


def same_samples(a: str, b: str, size: int) -> bool:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        for off in (0, size // 2, max(size - (1 << 20), 0)):
            fa.seek(off)
            fb.seek(off)
            if fa.read(1 << 20) != fb.read(1 << 20):
                return False
    return True


#: argv prefixes that pin (set by --pin): the servers' and the clients'
PIN: dict[str, list[str]] = {"server": [], "client": []}


def client_argv(client: str, src: str, url: str) -> list[str]:
    if client == "zcopy put":
        return [*PIN["client"], sys.executable, "-m", "zcopy", "put", "-q", src, url]
    return [*PIN["client"], "curl", "-sS", "-f", "-o", os.devnull, "-T", src, url]


def upload(client: str, src: str, url: str, pids: list[int]) -> tuple[float, float, float]:
    """(seconds, server CPU s, client CPU s) of one upload."""
    c0 = cpu_seconds(pids)
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    out = subprocess.run(client_argv(client, src, url), capture_output=True, text=True, timeout=600)
    secs = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    c1 = cpu_seconds(pids)
    if out.returncode:
        raise RuntimeError(f"{client} -> {url} failed ({out.returncode}): {out.stderr.strip()[-300:]}")
    return secs, c1 - c0, (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--size", type=parse_size, default=GIB, help="upload size (default 1GiB)")
    ap.add_argument("--dir", default="/dev/shm", help="where the temp folder goes (tmpfs; default /dev/shm)")
    ap.add_argument("--skip", action="append", default=[], help="server to leave out (e.g. nginx, 'zcopy recv fsync')")
    ap.add_argument("--tree", action="append", default=[], metavar="NAME=PATH",
                    help="run the zcopy servers from the source tree PATH (PYTHONPATH), once per tree")
    ap.add_argument("--fsync", choices=("both", "no-fsync", "fsync"), default="both",
                    help="which fsync modes of zcopy to run (default both)")
    ap.add_argument("--pin", action="store_true", help="servers on --server-cpu, clients on --client-cpu")
    ap.add_argument("--server-cpu", type=int, default=1)
    ap.add_argument("--client-cpu", type=int, default=0)
    args = ap.parse_args()
    if args.pin:
        PIN["server"] = ["taskset", "-c", str(args.server_cpu)]
        PIN["client"] = ["taskset", "-c", str(args.client_cpu)]
    for tool in ("curl", "nginx"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed (apt-get install {'nginx-light' if tool == 'nginx' else tool})")
    # Turn SIGTERM into an exception so the cleanup below runs for it too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("terminated"))

    tmp = tempfile.mkdtemp(prefix="zcopy-bench-upload-", dir=args.dir)
    try:
        src = os.path.join(tmp, "source.bin")
        make_source(src, args.size)
        servers: dict[str, list[str]] = {}
        trees = dict(t.split("=", 1) for t in args.tree) or {"": None}
        fsyncs = ("no-fsync", "fsync") if args.fsync == "both" else (args.fsync,)
        for engine in ("splice", "recv"):
            for fsync in fsyncs:
                for tree, path in trees.items():
                    env = [] if path is None else ["env", f"PYTHONPATH={os.path.abspath(path)}"]
                    servers[f"zcopy{'@' + tree if tree else ''} {engine} {fsync}"] = [*PIN["server"], *env,
                        sys.executable, "-m", "zcopy", "serve", "{root}", "--port", "{port}", "--workers", "1",
                        "--allow-write", "--upload-engine", engine, *(["--no-fsync"] if fsync == "no-fsync" else [])]
        servers["nginx"] = [*PIN["server"], "nginx", "-c", os.path.join(tmp, "nginx.conf"), "-p", tmp]
        servers = {k: v for k, v in servers.items() if k not in args.skip}
        clients = ("zcopy put", "curl -T")
        roots, ports = {}, {}
        for i, name in enumerate(servers):
            roots[name], ports[name] = os.path.join(tmp, f"root{i}"), free_port()
            os.mkdir(roots[name])
        if "nginx" in servers:
            with open(os.path.join(tmp, "nginx.conf"), "w") as f:
                f.write(NGINX_CONF.format(tmp=tmp, root=roots["nginx"], port=ports["nginx"],
                                          user="user root;" if os.geteuid() == 0 else ""))
        print(f"{format_size(args.size)} source and server roots in {tmp} ({fs_type(tmp)}); "
              f"{args.rounds} interleaved rounds", file=sys.stderr)

        results = {(s, c): {"gbps": [], "server_cpu": [], "client_cpu": []} for s in servers for c in clients}
        with contextlib.ExitStack() as stack:
            running = {}
            for name, argv in servers.items():
                argv = [a.format(root=roots[name], port=ports[name]) for a in argv]
                running[name] = stack.enter_context(Server(name, argv, ports[name], cwd=tmp))
            first = next(iter(running))
            with open(os.path.join(tmp, "one.bin"), "wb") as f:
                f.write(b"x")
            fixed = {c: statistics.median(upload(c, os.path.join(tmp, "one.bin"),
                                                 f"http://127.0.0.1:{ports[first]}/one.bin", [])[0]
                                          for _ in range(3)) for c in clients}
            print("fixed cost of one 1-byte upload (process start to exit): "
                  + ", ".join(f"{c} {t * 1000:.0f} ms" for c, t in fixed.items()), file=sys.stderr)
            for r in range(args.rounds):
                for name, peer in running.items():
                    for client in clients:
                        target = os.path.join(roots[name], "up", "file.bin")
                        url = f"http://127.0.0.1:{ports[name]}/up/file.bin"
                        secs, scpu, ccpu = upload(client, src, url, peer.pids())
                        if os.path.getsize(target) != args.size or not same_samples(src, target, args.size):
                            raise RuntimeError(f"{client} -> {name}: the stored file differs from the source")
                        os.unlink(target)
                        res = results[(name, client)]
                        res["gbps"].append(args.size / secs / 1e9)
                        res["server_cpu"].append(scpu / (args.size / GIB))
                        res["client_cpu"].append(ccpu / (args.size / GIB))
                        print(f"round {r + 1}/{args.rounds} {client:9} -> {name:28} {res['gbps'][-1]:.2f} GB/s, "
                              f"server {res['server_cpu'][-1]:.3f} CPU s/GiB", file=sys.stderr)

        med = {k: {m: statistics.median(v) for m, v in res.items()} for k, res in results.items()}
        print(f"\nmedians of {args.rounds} interleaved rounds, {format_size(args.size)} over 127.0.0.1, "
              f"files on {fs_type(tmp)}; a 1-byte upload takes "
              + ", ".join(f"{t * 1000:.0f} ms with {c}" for c, t in fixed.items()) + "\n")
        print("| client | server | GB/s | x nginx | server CPU s/GiB | client CPU s/GiB |")
        print("|---|---|---|---|---|---|")
        for client in clients:
            base = med.get(("nginx", client))
            for name in servers:
                m = med[(name, client)]
                ratio = f"{m['gbps'] / base['gbps']:.2f}" if base else "-"
                print(f"| {client} | {name} | {m['gbps']:.2f} | {ratio} | {m['server_cpu']:.3f} | "
                      f"{m['client_cpu']:.3f} |")
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
