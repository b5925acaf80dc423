#!/usr/bin/env python3
"""Syscalls and epoll wakeups per request (or per GiB) of each server under real load, by perf tracepoints.

    python tools/trace_serve.py /64k.bin 4 zcopy=--auto lighttpd     # wrk -c64 for 4 s on the 64 KiB file
    python tools/trace_serve.py large 0 zcopy=--auto lighttpd nginx  # three 1 GiB pulls each
    python tools/trace_serve.py /64k.bin 4 "z16=--auto;--small-reply-max;16KiB" zcopy=--auto

Where ``bench_serve.py --syscalls`` counts with ``strace -c`` from one client that waits for each
reply (strace slows every call, so the server never sees wrk's load), this counts the
``syscalls:sys_enter_*`` / ``sys_exit_*`` tracepoints with ``perf record`` while wrk (-c64, pinned
to CPU 1) or the large-file client of bench_serve.py drives the server (pinned to CPU 0): calls
per request, how many failed (EAGAIN), how many events each ``epoll_wait`` returned, the sizes
``sendfile`` moved (a mean above the engine's budget is the prefetch pool's sendfile to
/dev/null), and the server's user and system CPU per request or GiB from /proc. A variant is
``NAME=zcopy flags`` (';'-separated) or a peer's name; ``ZCOPY_TREE`` names another checkout's
zcopy. Needs perf (Debian: linux-perf) and the privileges to trace.
"""

from __future__ import annotations

import collections
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_serve as b  # noqa: E402

CALLS = ["recvfrom", "sendto", "sendfile64", "epoll_wait", "read", "writev", "setsockopt", "pread64"]
LARGE = 1 << 30


def main() -> int:
    if len(sys.argv) < 4:
        print(__doc__, file=sys.stderr)
        return 2
    path, duration, variants = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    if shutil.which("perf") is None:
        sys.exit("trace_serve: needs perf")
    tree = os.environ.get("ZCOPY_TREE", b.TREE)
    tmp = tempfile.mkdtemp(prefix="zcopy-trace-")
    try:
        root = b.make_root(tmp, LARGE)
        for variant in variants:
            name, _, zargs = variant.partition("=")
            port = b.free_port()
            if name in b.PEERS:
                argv, cwd = b.server_argv(name, tmp, root, port, []), root
            else:
                argv, cwd = b.server_argv("zcopy", tmp, root, port, zargs.split(";") if zargs else []), tree
                argv[argv.index("--state-dir") + 1] += "-" + name
            with b.Peer(name, ["taskset", "-c", "0", *argv], port, cwd=cwd) as peer:
                trace(peer, variant, path, duration, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def trace(peer: b.Peer, variant: str, path: str, duration: int, tmp: str) -> None:
    large = path == "large"
    if large:
        b.measure_large(peer, LARGE, 1)
        time.sleep(1.5)                     # the first pull's content digest, off the loop, is done
    else:
        b.wrk(peer.port, path, 1, 64, cpu=1)
    pids = peer.pids()
    out = os.path.join(tmp, "perf.data")
    events = [arg for call in CALLS for arg in ("-e", f"syscalls:sys_enter_{call}")]
    events += ["-e", "syscalls:sys_exit_epoll_wait", "-e", "syscalls:sys_exit_sendfile64", "-e",
               "syscalls:sys_exit_sendto"]
    rec = subprocess.Popen(["perf", "record", "-q", "-o", out, *events, "-p", ",".join(map(str, pids))],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.7)
        u0, s0 = b.cpu_times(pids)
        if large:
            rates = [b.measure_large(peer, LARGE, 1)[0] for _ in range(3)]
            done, unit, rate = 3, "GiB", " ".join(f"{r:.2f}" for r in rates) + " GB/s"
        else:
            rps, done = b.wrk(peer.port, path, duration, 64, cpu=1)
            unit, rate = "req", f"{rps:,.0f} req/s"
        u1, s1 = b.cpu_times(pids)
    finally:
        rec.send_signal(signal.SIGINT)
        rec.wait()
    text = subprocess.run(["perf", "script", "-i", out, "-F", "event,trace"], capture_output=True, text=True).stdout
    calls, failed, returned, moved = collections.Counter(), collections.Counter(), collections.Counter(), []
    for line in text.splitlines():
        m = re.match(r"\s*syscalls:sys_(enter|exit)_(\w+):\s*(.*)", line)
        if not m:
            continue
        kind, call, rest = m.groups()
        if kind == "enter":
            calls[call] += 1
            continue
        r = re.search(r"0x([0-9a-f]+)$", rest.strip())
        value = int(r.group(1), 16) if r else 0
        if value >= 1 << 63:                # a negative return: an error
            failed[call] += 1
        elif call == "epoll_wait":
            returned[value] += 1
        elif call == "sendfile64":
            moved.append(value)
    scale = 1e6 if not large else 1e3
    what = "us" if not large else "ms"
    print(f"== {variant}: {done} {unit}, {rate}; server CPU user {(u1 - u0) * scale / done:.1f} + sys "
          f"{(s1 - s0) * scale / done:.1f} {what}/{unit}")
    print("   " + "  ".join(f"{c} {calls[c] / done:.3f}" + (f" ({failed[c] / done:.3f} failed)" if failed[c] else "")
                           for c in CALLS if calls[c]))
    waits = sum(returned.values())
    if waits:
        print(f"   epoll_wait: {sum(k * n for k, n in returned.items()) / waits:.2f} events per call, "
              f"{returned[0] / waits:.0%} returned none, {sum(k * n for k, n in returned.items()) / done:.3f} events/{unit}")
    if moved:
        print(f"   sendfile: {len(moved) / done:.1f} per {unit} that moved bytes, mean {sum(moved) / len(moved) / 1024:.0f} KiB")


if __name__ == "__main__":
    sys.exit(main())
