#!/usr/bin/env python3
"""Compare `zcopy relay` with socat and haproxy (TCP mode, option splice-auto),
with iperf3 direct as the ceiling.

Starts one iperf3 server and the three relays in front of it, all on
127.0.0.1 and each with one process/thread doing the relaying, then for R
interleaved rounds runs `iperf3 -c` for D seconds against each target and
prints Gbps (iperf3's receiver figure) and the relay's CPU seconds per GB
moved (utime + stime of the relay's whole process tree, reaped children
included), as medians over the rounds, with ratios to haproxy and socat.
Every process it starts is stopped on exit.

    python tools/bench_relay.py --rounds 3 --duration 3 [--streams 1] [--reverse]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HAPROXY_CONF = """
global
    nbthread 1
    maxconn 4096
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    option splice-auto
listen relay
    bind 127.0.0.1:{port}
    server up 127.0.0.1:{upstream}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}")
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def tree_cpu(pid: int) -> float:
    """CPU seconds of ``pid``, its live descendants and its reaped children."""
    tick = os.sysconf("SC_CLK_TCK")
    stats = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            with contextlib.suppress(OSError):
                with open(f"/proc/{name}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                stats[int(name)] = (int(fields[1]), [int(x) for x in fields[11:15]])
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        if p in stats:
            utime, stime, cutime, cstime = stats[p][1]
            total += utime + stime + (cutime + cstime if p == pid else 0)
            todo += [c for c, (ppid, _) in stats.items() if ppid == p]
    return total / tick


def iperf(port: int, seconds: float, streams: int, reverse: bool) -> tuple[float, int]:
    cmd = ["iperf3", "-c", "127.0.0.1", "-p", str(port), "-t", str(seconds), "-P", str(streams), "-J"]
    if reverse:
        cmd.append("-R")
    out = subprocess.run(cmd, capture_output=True, timeout=seconds + 30, check=True).stdout
    end = json.loads(out)["end"]["sum_received"]
    return end["bits_per_second"] / 1e9, int(end["bytes"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=3.0, help="seconds per iperf3 run")
    ap.add_argument("--streams", type=int, default=1, help="iperf3 -P")
    ap.add_argument("--reverse", action="store_true", help="iperf3 -R (server sends)")
    ap.add_argument("--engine", default="splice", help="zcopy relay --engine")
    args = ap.parse_args()

    procs: list[subprocess.Popen] = []
    tmp = tempfile.mkdtemp(prefix="bench-relay-")

    def start(cmd: list[str], port: int) -> subprocess.Popen:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        procs.append(proc)
        wait_port(port, proc)
        return proc

    try:
        upstream = free_port()
        start(["iperf3", "-s", "-B", "127.0.0.1", "-p", str(upstream)], upstream)
        targets: dict[str, tuple[int, subprocess.Popen | None]] = {"iperf3 direct": (upstream, None)}
        port = free_port()
        targets["zcopy relay"] = (port, start(
            [sys.executable, "-m", "zcopy", "relay", "--listen", f"127.0.0.1:{port}",
             "--upstream", f"127.0.0.1:{upstream}", "--engine", args.engine, "--workers", "1",
             "--log", os.devnull], port))
        port = free_port()
        targets["socat"] = (port, start(
            ["socat", f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork", f"TCP:127.0.0.1:{upstream}"], port))
        port = free_port()
        conf = os.path.join(tmp, "haproxy.cfg")
        with open(conf, "w") as f:
            f.write(HAPROXY_CONF.format(port=port, upstream=upstream))
        targets["haproxy"] = (port, start(["haproxy", "-db", "-f", conf], port))

        results: dict[str, list[tuple[float, float]]] = {name: [] for name in targets}
        for r in range(args.rounds):
            for name, (port, proc) in targets.items():
                cpu0 = tree_cpu(proc.pid) if proc else 0.0
                gbps, nbytes = iperf(port, args.duration, args.streams, args.reverse)
                cpu = (tree_cpu(proc.pid) - cpu0) if proc else 0.0
                results[name].append((gbps, cpu / (nbytes / 1e9) if proc else 0.0))
                print(f"round {r + 1} {name:14s} {gbps:7.2f} Gbps  {results[name][-1][1]:.3f} CPU s/GB",
                      file=sys.stderr)

        med = {n: (statistics.median(g for g, _ in v), statistics.median(c for _, c in v))
               for n, v in results.items()}
        print(f"\niperf3 -t {args.duration:g} -P {args.streams}{' -R' if args.reverse else ''}, "
              f"{args.rounds} interleaved rounds, medians; relay engine {args.engine}")
        print("| target | Gbps | relay CPU s/GB | vs haproxy | vs socat |")
        print("|---|---|---|---|---|")
        for name, (gbps, cpu) in med.items():
            vs_h = gbps / med["haproxy"][0]
            vs_s = gbps / med["socat"][0]
            cpu_txt = f"{cpu:.3f}" if targets[name][1] else "(no relay)"
            print(f"| {name} | {gbps:.2f} | {cpu_txt} | {vs_h:.2f}x | {vs_s:.2f}x |")
        return 0
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(tmp, "haproxy.cfg"))
            os.rmdir(tmp)


if __name__ == "__main__":
    sys.exit(main())
