#!/usr/bin/env python3
"""Cold-cache benchmark: does one slow disk read stall the event loop?

For each server (nginx with one worker and no aio, zcopy with one worker and
--prefetch on, the same with --prefetch off), in interleaved rounds:

1. idle: wrk --latency on a hot 1 KiB file (p99);
2. cold: drop the page cache (root: sync; echo 1 > /proc/sys/vm/drop_caches),
   re-warm the 1 KiB file, then four rate-limited clients pull four cold
   256 MiB files while wrk measures the hot file's p99 again;
   Then the controls: the same pulls again with the files now in the page
   cache ("warm load"), so what is left of the p99 rise is CPU contention,
   not disk; and the cache dropped again with the same files read from the
   disk at the same rate by other processes while the server serves only the
   hot file ("disk only"): what cold reads cost the machine outside the
   server (interrupts, page allocation);
3. throughput: drop the cache again and pull one cold 256 MiB file at full
   speed (GB/s).

Medians over the rounds, with ratios (cold p99 / idle p99, zcopy / nginx).
Files live in --dir, which must be on a disk filesystem (not tmpfs), since
the disk is the subject. Every process started is stopped on exit.

``--pin`` runs the servers on one CPU (``--server-cpu``) and wrk and the
pulling clients on another (``--load-cpu``), with taskset, so the load's
own CPU does not queue the server behind it. ``--servers`` picks which run
(nginx, on, off); ``--tree NAME=PATH`` adds zcopy with prefetch on from
another source tree (an old commit: ``git worktree`` or ``git archive``), so
two versions are compared in the same interleaved rounds. The load average
(``/proc/loadavg``) is printed at start and end: a shared machine's other
work shows in every number.

    sudo python tools/bench_cold.py --rounds 5 --duration 3
    sudo python tools/bench_cold.py --pin --servers on --tree old=/tmp/old-zcopy
    python tools/bench_cold.py methods      # how to read a window into the cache, compared
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from bench_serve import NGINX_CONF, Peer, free_port  # noqa: E402
from probes.filesystem import IN_MEMORY, fs_type  # noqa: E402
from zcopy.units import parse_size  # noqa: E402

MiB = 1 << 20

#: One client: GET a file, read it at most RATE bytes/s, print seconds taken.
CLIENT = r"""
import socket, sys, time
port, path, rate = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
s = socket.create_connection(("127.0.0.1", port))
s.sendall(f"GET {path} HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n".encode())
buf = bytearray(256 * 1024); view = memoryview(buf)
head = b""
while b"\r\n\r\n" not in head:
    head += s.recv(1)
length = int(next(l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")))
t0 = time.perf_counter(); got = 0
while got < length:
    n = s.recv_into(view, min(len(buf), length - got))
    if not n: raise SystemExit("short body")
    got += n
    if rate:
        ahead = got / rate - (time.perf_counter() - t0)
        if ahead > 0: time.sleep(ahead)
print(time.perf_counter() - t0)
"""

#: The disk-only control: read a file at most RATE bytes/s straight from the
#: disk into nothing, in this process (no server involved).
READER = r"""
import os, sys, time
path, rate = sys.argv[1], float(sys.argv[2])
fd = os.open(path, os.O_RDONLY); null = os.open("/dev/null", os.O_WRONLY)
t0 = time.perf_counter(); got = 0
while True:
    n = os.sendfile(null, fd, got, 1 << 20)
    if not n: break
    got += n
    ahead = got / rate - (time.perf_counter() - t0)
    if ahead > 0: time.sleep(ahead)
"""

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def drop_caches() -> None:
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("1\n")


#: argv prefixes that pin (set by --pin): the servers' and the load's
PIN = {"server": [], "load": []}


def wrk_p99(port: int, duration: float, conns: int) -> float:
    """p99 latency in ms of GET /1k.bin under wrk --latency."""
    out = subprocess.run([*PIN["load"], "wrk", "-t1", f"-c{conns}", f"-d{duration:g}s", "--latency",
                          f"http://127.0.0.1:{port}/1k.bin"], capture_output=True, text=True,
                         timeout=duration + 60).stdout
    m = re.search(r"^\s*99%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    if not m:
        raise RuntimeError(f"wrk gave no p99: {out[-400:]}")
    if "Non-2xx" in out or "Socket errors" in out:
        print("  wrk: " + "; ".join(l.strip() for l in out.splitlines() if "errors" in l or "Non-2xx" in l),
              file=sys.stderr)
    return float(m.group(1)) * _UNITS[m.group(2)]


def pull(port: int, path: str, rate: float) -> subprocess.Popen:
    return subprocess.Popen([*PIN["load"], sys.executable, "-c", CLIENT, str(port), path, str(rate)],
                            stdout=subprocess.PIPE, text=True)


def warm(port: int) -> None:
    subprocess.run(["wrk", "-t1", "-c1", "-d0.3s", f"http://127.0.0.1:{port}/1k.bin"],
                   capture_output=True, timeout=30)


def make_files(root: str, count: int, size: int) -> None:
    block = bytearray(os.urandom(MiB))
    for i in range(count):
        with open(os.path.join(root, f"cold{i}.bin"), "wb") as f:
            for j in range(size // MiB):
                block[:16] = f"{i:08d}{j:08d}".encode()   # no two blocks alike
                f.write(block)
    with open(os.path.join(root, "1k.bin"), "wb") as f:
        f.write(os.urandom(1024))


class Throttle:
    """A blkio (cgroup v1) group that caps how fast its processes read the disk
    holding ``path``: a slow disk made for real, so a cold read that blocks the
    event loop shows in the hot file's latency. The group is removed on exit."""

    BASE = "/sys/fs/cgroup/blkio"

    def __init__(self, path: str, bps: int) -> None:
        dev = os.stat(path).st_dev
        majmin = f"{os.major(dev)}:{os.minor(dev)}"
        sysdev = f"/sys/dev/block/{majmin}"
        if os.path.exists(os.path.join(sysdev, "partition")):   # throttle the whole disk
            with open(os.path.join(sysdev, "..", "dev")) as f:
                majmin = f.read().strip()
        self.majmin, self.bps = majmin, bps
        self.group = os.path.join(self.BASE, f"zcopy-bench-{os.getpid()}")

    def __enter__(self) -> "Throttle":
        if not os.path.exists(os.path.join(self.BASE, "blkio.throttle.read_bps_device")):
            sys.exit("bench_cold: --throttle needs the cgroup v1 blkio controller at " + self.BASE)
        os.mkdir(self.group)
        with open(os.path.join(self.group, "blkio.throttle.read_bps_device"), "w") as f:
            f.write(f"{self.majmin} {self.bps}")
        return self

    def add(self, pids: list[int]) -> None:
        for pid in pids:
            with open(os.path.join(self.group, "cgroup.procs"), "w") as f:
                f.write(str(pid))

    def __exit__(self, *exc) -> None:
        with open(os.path.join(self.group, "cgroup.procs")) as f:
            left = f.read().split()
        for pid in left:   # servers are stopped by now; move any straggler back
            with contextlib.suppress(OSError), open(os.path.join(self.BASE, "cgroup.procs"), "w") as f:
                f.write(pid)
        os.rmdir(self.group)


def loaded_p99(port: int, args) -> tuple[float, float]:
    """The hot file's p99 while the pulling clients run, and the slowest pull's seconds."""
    clients = [pull(port, f"/cold{i}.bin", args.rate) for i in range(args.clients)]
    try:
        p99 = wrk_p99(port, args.duration, args.connections)
        secs = [float(c.communicate(timeout=600)[0]) for c in clients]
    finally:
        for c in clients:
            if c.poll() is None:
                c.kill()
                c.wait()
    return p99, max(secs)


def disk_only_p99(port: int, root: str, args) -> float:
    """The hot file's p99 while other processes read the cold files from the
    disk at the pulls' rate, the server serving nothing but the hot file: what
    cold reads cost the machine (interrupts, page allocation) outside zcopy."""
    readers = [subprocess.Popen([*PIN["load"], sys.executable, "-c", READER, os.path.join(root, f"cold{i}.bin"),
                                 str(args.rate)]) for i in range(args.clients)]
    try:
        return wrk_p99(port, args.duration, args.connections)
    finally:
        for r in readers:
            r.kill()
            r.wait()


def thread_counters(pids: list[int]) -> dict:
    """Per kind of thread of the server's processes ("main": each process's
    main thread, the event loop; "other": pool threads): CPU seconds (user,
    system), context switches (voluntary, involuntary) and bytes the threads
    themselves read from the disk (``/proc/PID/task/TID/{stat,status,io}``)."""
    tck = os.sysconf("SC_CLK_TCK")
    out = {"main": [0.0] * 5, "other": [0.0] * 5}
    for pid in pids:
        with contextlib.suppress(OSError):
            for tid in os.listdir(f"/proc/{pid}/task"):
                base = f"/proc/{pid}/task/{tid}"
                with contextlib.suppress(OSError, ValueError, StopIteration):
                    with open(f"{base}/stat") as f:
                        st = f.read().rsplit(")", 1)[1].split()
                    with open(f"{base}/status") as f:
                        sw = {k: int(v) for k, v in (line.split(":") for line in f if "ctxt_switches" in line)}
                    with open(f"{base}/io") as f:
                        rb = next(int(line.split()[1]) for line in f if line.startswith("read_bytes"))
                    c = out["main" if tid == str(pid) else "other"]
                    for i, v in enumerate((int(st[11]) / tck, int(st[12]) / tck, sw["voluntary_ctxt_switches"],
                                           sw["nonvoluntary_ctxt_switches"], rb)):
                        c[i] += v
    return out


def counted(pids: list[int], fn, *args):
    """``fn(*args)`` and what the server's threads did meanwhile (thread_counters' difference)."""
    before = thread_counters(pids)
    result = fn(*args)
    after = thread_counters(pids)
    return result, {k: [a - b for a, b in zip(after[k], before[k])] for k in after}


def _threads_line(phase: str, d: dict) -> str:
    return (f"    {phase}: " + "; ".join(
        f"{k} threads {v[0]:.2f}+{v[1]:.2f} s CPU, {v[2]:.0f}/{v[3]:.0f} switches vol/invol, "
        f"{v[4] / MiB:.1f} MiB read" for k, v in d.items()))


def one_round(name: str, port: int, args, res: dict, server_pids=list) -> None:
    drop_caches()
    warm(port)
    res["idle_p99"].append(wrk_p99(port, args.duration, args.connections))
    pids = server_pids()        # now: a server's workers may start after its listener answers
    drop_caches()
    warm(port)
    (p99, secs), cold_threads = counted(pids, loaded_p99, port, args)
    res["cold_p99"].append(p99)
    res["pull_s"].append(secs)
    # The control: the same pulls again, the files now in the page cache. What
    # the load costs the hot file when no read can block: CPU contention alone.
    (warm_p99, _), warm_threads = counted(pids, loaded_p99, port, args)
    res["warm_p99"].append(warm_p99)
    drop_caches()
    warm(port)
    res["disk_p99"].append(disk_only_p99(port, args.root, args))
    drop_caches()
    fast = pull(port, "/cold0.bin", 0)
    res["cold_gbps"].append(args.size / float(fast.communicate(timeout=600)[0]) / 1e9)
    print(f"  {name}: idle p99 {res['idle_p99'][-1]:.2f} ms, cold p99 {res['cold_p99'][-1]:.2f} ms, "
          f"warm-load p99 {res['warm_p99'][-1]:.2f} ms, disk-only p99 {res['disk_p99'][-1]:.2f} ms, "
          f"4 pulls {res['pull_s'][-1]:.1f} s, cold pull {res['cold_gbps'][-1]:.2f} GB/s", file=sys.stderr)
    if args.threads and pids:
        print(_threads_line("cold", cold_threads), file=sys.stderr)
        print(_threads_line("warm", warm_threads), file=sys.stderr)


def bench(args) -> int:
    if os.geteuid() != 0:
        sys.exit("bench_cold: needs root to drop the page cache")
    for tool in ("wrk", "nginx"):
        if shutil.which(tool) is None:
            sys.exit(f"bench_cold: {tool} is not installed (apt-get install {tool})")
    fs, _ = fs_type(args.dir)
    if fs in IN_MEMORY:
        sys.exit(f"bench_cold: --dir {args.dir} is on {fs}: nothing there is ever cold")
    if args.pin:
        PIN["server"] = ["taskset", "-c", str(args.server_cpu)]
        PIN["load"] = ["taskset", "-c", str(args.load_cpu)]
    load_at_start = loadavg()
    tmp = tempfile.mkdtemp(prefix="zcopy-cold-", dir=args.dir)
    os.chmod(tmp, 0o755)           # nginx's workers run as www-data
    try:
        root = os.path.join(tmp, "www")
        os.mkdir(root)
        os.chmod(root, 0o755)
        print(f"writing {args.clients} x {args.size // MiB} MiB to {root} ({fs})", file=sys.stderr)
        make_files(root, args.clients, args.size)
        names = {"nginx": "nginx", "on": "zcopy prefetch on", "off": "zcopy prefetch off"}
        chosen = [names[n] for n in args.servers.split(",")]
        ports = {n: free_port() for n in chosen}
        trees = dict(t.split("=", 1) for t in args.tree)
        for tree in trees:
            ports[f"zcopy@{tree} prefetch on"] = free_port()
        if "nginx" in ports:
            with open(os.path.join(tmp, "nginx.conf"), "w") as f:
                f.write(NGINX_CONF.format(tmp=tmp, root=root, port=ports["nginx"]))

        def zcopy(name, mode, tree=None):
            cmd = [*PIN["server"], sys.executable, "-m", "zcopy", "serve", root, "--port", str(ports[name]),
                   "--workers", "1", "--prefetch", mode, *args.zcopy_args.split()]
            return cmd if tree is None else ["env", f"PYTHONPATH={trees[tree]}", *cmd]
        make = {"nginx": lambda: [*PIN["server"], "nginx", "-c", os.path.join(tmp, "nginx.conf"), "-p", tmp],
                "zcopy prefetch on": lambda: zcopy("zcopy prefetch on", "on"),
                "zcopy prefetch off": lambda: zcopy("zcopy prefetch off", "off")}
        argv = {n: make[n]() for n in chosen}
        for tree in trees:
            argv[f"zcopy@{tree} prefetch on"] = zcopy(f"zcopy@{tree} prefetch on", "on", tree)
        args.root = root
        results = {n: {"idle_p99": [], "cold_p99": [], "warm_p99": [], "disk_p99": [], "pull_s": [], "cold_gbps": []}
                   for n in argv}
        with contextlib.ExitStack() as stack:
            throttle = stack.enter_context(Throttle(root, args.throttle)) if args.throttle else None
            peers = {}
            for name, cmd in argv.items():
                peer = peers[name] = stack.enter_context(Peer(name, cmd, ports[name], cwd=root))
                if throttle is not None:
                    throttle.add(peer.pids())
            for r in range(args.rounds):
                print(f"round {r + 1}/{args.rounds}", file=sys.stderr)
                for name in argv:
                    one_round(name, ports[name], args, results[name], peers[name].pids)
        report(args, results)
        print(f"\nload average at start: {load_at_start}; at end: {loadavg()}")
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def report(args, results: dict) -> None:
    med = {n: {k: statistics.median(v) for k, v in r.items()} for n, r in results.items()}
    ngx = med["nginx"]["cold_p99"] if "nginx" in med else math.nan
    throttled = f"; server disk reads capped at {args.throttle / 1e6:g} MB/s (blkio)" if args.throttle else ""
    pinned = f"; servers pinned to CPU {args.server_cpu}, load to CPU {args.load_cpu}" if args.pin else ""
    print(f"\nmedians of {args.rounds} interleaved rounds{pinned}; hot file: wrk -t1 -c{args.connections} "
          f"-d{args.duration:g}s --latency /1k.bin; cold load: {args.clients} clients x {args.size // MiB} MiB "
          f"at {args.rate / MiB:.0f} MiB/s each, page cache dropped first{throttled}\n")
    print("| server | idle p99 ms | cold p99 ms | cold / idle | cold p99 / nginx's | warm-load p99 ms | "
          "warm-load / idle | cold / warm-load | disk-only p99 ms | disk-only / idle | 4 cold pulls s | "
          "1 cold pull GB/s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for n, m in med.items():
        print(f"| {n} | {m['idle_p99']:.2f} | {m['cold_p99']:.2f} | {m['cold_p99'] / m['idle_p99']:.2f} | "
              f"{m['cold_p99'] / ngx:.2f} | {m['warm_p99']:.2f} | {m['warm_p99'] / m['idle_p99']:.2f} | "
              f"{m['cold_p99'] / m['warm_p99']:.2f} | {m['disk_p99']:.2f} | {m['disk_p99'] / m['idle_p99']:.2f} | "
              f"{m['pull_s']:.1f} | {m['cold_gbps']:.2f} |")


def methods(args) -> int:
    """Time each way of reading a window into the page cache (cold file, 4 MiB windows)."""
    import hashlib
    import mmap

    from zcopy.server.prefetch import WINDOW, resident, sendfile_to

    fd0, path = tempfile.mkstemp(prefix="zcopy-methods-", dir=args.dir)
    null = os.open("/dev/null", os.O_WRONLY)
    buf = bytearray(WINDOW)
    try:
        size = args.size
        block = os.urandom(MiB)
        for _ in range(size // MiB):
            os.write(fd0, block)
        os.fsync(fd0)

        def pread(fd, off, n):
            view = memoryview(buf)[:n]
            while view:
                k = os.preadv(fd, [view], off)
                off += k
                view = view[k:]

        def mmap_touch(fd, off, n):
            m = mmap.mmap(fd, n, prot=mmap.PROT_READ, offset=off)
            m.madvise(mmap.MADV_WILLNEED)
            hashlib.blake2b(memoryview(m)).digest()   # touches every page with the GIL released
            m.madvise(mmap.MADV_DONTNEED)
            m.close()

        ways = {"sendfile -> /dev/null (zcopy's choice)": lambda fd, off, n: sendfile_to(null, fd, off, n),
                "fadvise WILLNEED + sendfile -> /dev/null": lambda fd, off, n: (
                    os.posix_fadvise(fd, off, n, os.POSIX_FADV_WILLNEED), sendfile_to(null, fd, off, n)),
                "preadv into a buffer": pread,
                "mmap + MADV_WILLNEED + touch + MADV_DONTNEED (seed)": mmap_touch,
                "fadvise WILLNEED alone (returns before the read)": lambda fd, off, n: os.posix_fadvise(
                    fd, off, n, os.POSIX_FADV_WILLNEED)}
        res: dict = {k: [] for k in ways}
        for _ in range(args.rounds):
            for name, way in ways.items():
                os.posix_fadvise(fd0, 0, 0, os.POSIX_FADV_DONTNEED)
                t, c = time.perf_counter(), time.thread_time()
                missing = 0     # windows whose last page was not in when the call returned
                for off in range(0, size, WINDOW):
                    stop = min(off + WINDOW, size)
                    way(fd0, off, stop - off)
                    missing += not resident(fd0, stop - 1, stop)
                wall, cpu = time.perf_counter() - t, time.thread_time() - c
                res[name].append((wall, cpu, missing))
        print(f"\n{size // MiB} MiB cold file in {WINDOW // MiB} MiB windows, medians of {args.rounds}\n")
        print("| method | wall ms | CPU ms | windows not resident on return |")
        print("|---|---|---|---|")
        for name, v in res.items():
            print(f"| {name} | {statistics.median(x[0] for x in v) * 1e3:.1f} | "
                  f"{statistics.median(x[1] for x in v) * 1e3:.1f} | {statistics.median(x[2] for x in v):.0f} "
                  f"of {-(-size // WINDOW)} |")
        return 0
    finally:
        os.close(null)
        os.close(fd0)
        os.unlink(path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", nargs="?", choices=["serve", "methods"], default="serve")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=float, default=3.0, help="seconds per wrk run")
    ap.add_argument("--connections", type=int, default=8, help="wrk connections on the hot file")
    ap.add_argument("--clients", type=int, default=4, help="cold clients")
    ap.add_argument("--size", type=parse_size, default=parse_size("256MiB"), help="bytes per cold file")
    ap.add_argument("--rate", type=parse_size, default=None,
                    help="bytes/s per cold client (default: size / (duration + 1))")
    ap.add_argument("--dir", default="/var/tmp", help="a folder on the disk to test (not tmpfs)")
    ap.add_argument("--zcopy-args", default="", help="extra flags for zcopy serve")
    ap.add_argument("--servers", default="nginx,on,off", help="which to run: nginx, on, off (comma list)")
    ap.add_argument("--tree", action="append", default=[], metavar="NAME=PATH",
                    help="also run zcopy (prefetch on) from the source tree PATH (PYTHONPATH)")
    ap.add_argument("--threads", action="store_true",
                    help="also print what the server's threads did under the cold and the warm load "
                         "(main thread vs the others: CPU, context switches, bytes read from the disk)")
    ap.add_argument("--pin", action="store_true", help="pin servers and load to separate CPUs (taskset)")
    ap.add_argument("--server-cpu", type=int, default=0)
    ap.add_argument("--load-cpu", type=int, default=1)
    ap.add_argument("--throttle", type=parse_size, default=None, metavar="BYTES/S",
                    help="cap the servers' disk reads (blkio cgroup), e.g. 50MB: a slow disk for real")
    args = ap.parse_args()
    if args.rate is None:
        args.rate = args.size / (args.duration + 1)
    if args.mode == "methods":
        if args.size == parse_size("256MiB"):
            args.size = 64 * MiB
        return methods(args)
    return bench(args)


if __name__ == "__main__":
    sys.exit(main())
