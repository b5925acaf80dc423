#!/usr/bin/env python3
"""A/B: the 1 KiB request rate of zcopy source trees against nginx, in one run.

    git worktree add /tmp/zcopy-base HEAD~1
    python tools/bench_ab.py --rounds 8 . /tmp/zcopy-base

For choosing between two designs: each tree's `zcopy serve` (one worker,
`--auto`) runs from that tree (`python -m zcopy` with the tree as working
directory, so its own `zcopy/` is imported), next to one nginx configured as
in bench_serve.py. As there, every server is pinned to one CPU and wrk
(`-t1 -c64`) to another. Every round drives each server in turn (interleaved)
on a 1 KiB file, the case where zcopy's own code, not the kernel, decides the
rate. Prints medians: req/s, the ratio to nginx in the same run, and user +
system CPU per request of the serving process tree. Every process it starts
is stopped on exit.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import statistics
import sys
import tempfile

from bench_serve import NGINX_CONF, Peer, cpu_times, cpus, free_port, wrk


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("trees", nargs="+", help="zcopy source checkouts (folders holding zcopy/)")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--duration", type=int, default=3, help="seconds per wrk run")
    ap.add_argument("--zcopy-args", default="--auto", help="flags for every zcopy serve")
    ap.add_argument("--server-cpu", type=int, help="CPU the servers are pinned to (default: the first allowed)")
    ap.add_argument("--load-cpu", type=int, help="CPU wrk is pinned to (default: the next allowed)")
    args = ap.parse_args()
    server_cpu, load_cpu = cpus(args)
    trees = [os.path.abspath(t) for t in args.trees]
    for tree in trees:
        if not os.path.isfile(os.path.join(tree, "zcopy", "__main__.py")):
            ap.error(f"{tree} holds no zcopy/ package")
    if shutil.which("wrk") is None or shutil.which("nginx") is None:
        sys.exit("needs wrk and nginx (apt-get install wrk nginx-light)")

    tmp = tempfile.mkdtemp(prefix="zcopy-ab-")
    os.chmod(tmp, 0o755)                 # nginx's workers run as www-data
    try:
        root = os.path.join(tmp, "www")
        os.mkdir(root)
        with open(os.path.join(root, "1k.bin"), "wb") as f:
            f.write(os.urandom(1024))
        os.chmod(root, 0o755)
        ports = {"nginx": free_port()}
        with open(os.path.join(tmp, "nginx.conf"), "w") as f:
            f.write(NGINX_CONF.format(tmp=tmp, root=root, port=ports["nginx"]))
        pin = ["taskset", "-c", str(server_cpu)]
        peers = {"nginx": ([*pin, "nginx", "-c", os.path.join(tmp, "nginx.conf"), "-p", tmp], tmp)}
        for tree in trees:
            name = tree if tree not in peers else f"{tree} ({len(peers)})"
            ports[name] = free_port()
            # A private state folder where the tree has one (older trees, from before --state-dir, have none).
            with open(os.path.join(tree, "zcopy", "cmd", "serve.py")) as f:
                state = ["--state-dir", os.path.join(tmp, f"state-{len(peers)}")] if "--state-dir" in f.read() else []
            peers[name] = ([*pin, sys.executable, "-m", "zcopy", "serve", root, "--port", str(ports[name]),
                            "--workers", "1", *state, *args.zcopy_args.split()], tree)
        results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in peers}
        with contextlib.ExitStack() as stack:
            running = {name: stack.enter_context(Peer(name, argv, ports[name], cwd=cwd))
                       for name, (argv, cwd) in peers.items()}
            for name in running:                   # warm up
                wrk(ports[name], "/1k.bin", 1, 8, threads=1, cpu=load_cpu)
            for r in range(args.rounds):
                for name, peer in running.items():
                    pids = peer.pids()
                    u0, s0 = cpu_times(pids)
                    rps, done = wrk(ports[name], "/1k.bin", args.duration, 64, threads=1, cpu=load_cpu)
                    u1, s1 = cpu_times(pids)
                    per_request = 1e6 / max(done, 1)
                    results[name].append((rps, (u1 - u0) * per_request, (s1 - s0) * per_request))
                print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
        base = statistics.median(rps for rps, _, _ in results["nginx"])
        print(f"\nmedians of {args.rounds} interleaved rounds, servers on CPU {server_cpu}, wrk -t1 -c64 "
              f"-d{args.duration:g}s on CPU {load_cpu}, 1 KiB file; "
              f"zcopy on {sys.executable} (Python {platform.python_version()})\n")
        print("| server | req/s | x nginx | user + sys us/req |")
        print("|---|---|---|---|")
        for name, runs in results.items():
            rps = statistics.median(x[0] for x in runs)
            user = statistics.median(x[1] for x in runs)
            system = statistics.median(x[2] for x in runs)
            print(f"| {name} | {rps:,.0f} | {rps / base:.2f} | {user:.2f} + {system:.2f} |")
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
