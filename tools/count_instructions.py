#!/usr/bin/env python3
"""Instructions per keep-alive request in a `zcopy serve` worker, counted by callgrind: a noise-free A/B.

    python tools/count_instructions.py                              # this tree, 1 KiB
    python tools/count_instructions.py --tree /work/main --tree /tmp/old --rounds 3
    python tools/count_instructions.py --size 1KiB --size 64KiB --top 25
    python tools/count_instructions.py --connections 16             # several requests per epoll_wait
    python tools/count_instructions.py --tree . -- --auto --prefetch off   # serve flags after --
    python tools/count_instructions.py --tree . --tree .@pure        # compiled against plain Python

Rates and CPU times on a shared two-core machine vary by 10-15% from round
to round; the user-space instructions a worker executes per request vary by
well under 1%. For each tree (run with PYTHONPATH set to it) the tool starts
`python -m zcopy serve ROOT --workers 1 --port P --worker-timeout 3600` plus
the serve flags (default `--auto`) under `valgrind --tool=callgrind
--trace-children=yes` (the supervisor forks the worker; callgrind follows
the fork, and with --trace-children the worker gets its own vgdb pipe, which
`callgrind_control` needs: it is only ever given the worker's pid). It warms
the worker with `--warmup` keep-alive GETs of each file, then for each file
counts `--windows` windows (`callgrind_control --zero`, `--requests` GETs on
`--connections` keep-alive connections, each GET waiting for its reply,
`--dump`) and reports the median window's instructions per request, all the
worker's threads included. A window in which something lumpy ran (the first
after the warm-up often holds millions of instructions of clean-up) falls
out of the median; all windows are printed.

Only user space is counted (valgrind sees no kernel instruction): that is
where zcopy is behind its peers, its kernel side being already the lowest.
Also printed: the split by shared object (the interpreter, libc with its
syscall wrappers, ...), the calls per request of libc's syscall wrappers
(epoll_wait, recv, send, sendfile...: the syscalls per request), the cyclic
GC's share (inclusive Ir of gc_collect_main) and with `--top K` the K
functions with the most own instructions per request.

Why a median of equal windows and not the difference of a short and a long
one: the first window after a pause carries a one-off lump of 4-10 million
instructions (type lookups, tuple frees), which a difference would subtract
from the per-request figure (it said 27,900 where the steady windows say
33,400).

ZCOPY_STATS=off (the once-a-second snapshot publishing, not the per-request
counters) unless `--stats`. With `--auto` the kernel probe runs once, outside
valgrind, before the first server (`zcopy probe --quick --save`, the first
tree's, into a private XDG_CACHE_HOME), so every tree serves with the same
profile and no probe runs under valgrind; each server has its own
XDG_STATE_HOME. Known differences from a run outside valgrind: valgrind 3.19
answers openat2(2) and cachestat(2) with ENOSYS, so root.py takes its
segment-walk fallback for opens (not per request for a cached file) and
prefetch.py its preadv2(RWF_NOWAIT) residency check.

Every process the tool starts is stopped on exit; it prints the commands.
Needs valgrind (Debian: `apt-get install valgrind`).
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, HERE)
from zcopy.units import parse_size  # noqa: E402

PYTHON = os.path.realpath(sys.executable)
STARTUP_TIMEOUT = 180.0      # seconds for a server under valgrind to answer its first request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Connection:
    """One keep-alive connection of the client."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=120)
        self.buf = b""

    def send(self, path: str) -> None:
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())

    def reply(self) -> int:
        """Read one whole reply; its status."""
        while b"\r\n\r\n" not in self.buf:
            self._more()
        end = self.buf.index(b"\r\n\r\n") + 4
        head = self.buf[:end]
        status = int(head.split(b" ", 2)[1])
        m = re.search(rb"\r\ncontent-length:\s*(\d+)", head, re.I)
        if not m:
            raise RuntimeError(f"no Content-Length in {head!r}")
        total = end + int(m.group(1))
        while len(self.buf) < total:
            self._more()
        self.buf = self.buf[total:]
        return status

    def _more(self) -> None:
        data = self.sock.recv(1 << 20)
        if not data:
            raise RuntimeError("server closed the connection")
        self.buf += data


class Client:
    """``connections`` keep-alive connections: each sends one GET, then each reads its reply,
    round after round (with one connection, every GET waits for the previous reply; with
    more, the worker finds several requests per epoll_wait, as under wrk's 64 connections)."""

    def __init__(self, port: int, connections: int = 1) -> None:
        self.conns = []
        try:
            for _ in range(connections):
                self.conns.append(Connection(port))
        except BaseException:
            self.close()
            raise

    def many(self, path: str, n: int) -> int:
        """At least ``n`` GETs of ``path`` (whole rounds); how many were sent."""
        rounds = -(-n // len(self.conns))
        for _ in range(rounds):
            for c in self.conns:
                c.send(path)
            for c in self.conns:
                status = c.reply()
                if status != 200:
                    raise RuntimeError(f"GET {path}: {status}")
        return rounds * len(self.conns)

    def close(self) -> None:
        for c in self.conns:
            c.sock.close()


#: libc's syscall wrappers whose calls per request the summary shows.
SYSCALLS = ("epoll_wait", "recv", "recvfrom", "send", "sendto", "sendmsg", "sendfile", "sendfile64", "splice",
            "read", "write", "readv", "writev", "pread64", "preadv2", "openat", "fstat", "newfstatat",
            "statx", "setsockopt", "close", "clock_gettime")
#: The cyclic garbage collector's entry: its inclusive cost is counted apart (``Dump.gc``).
GC_ENTRY = "gc_collect_main"


class Dump:
    """What one callgrind dump of the worker (all its threads) holds: ``total`` Ir, ``gc``
    (inclusive Ir of the cyclic GC's collections), own Ir per (object, function) and per object."""

    def __init__(self) -> None:
        self.total = 0
        self.gc = 0
        self.by_fn: collections.Counter = collections.Counter()
        self.by_ob: collections.Counter = collections.Counter()
        #: calls made, by callee (``calls=`` lines): the syscall wrappers say how many syscalls
        self.calls: collections.Counter = collections.Counter()

    def add(self, path: str) -> None:
        """Add one file, written with --compress-strings=no --compress-pos=no (names spelled out)."""
        npos = 1
        summary = totals = None
        ob = fn = cfn = "?"
        call = False           # the cost line after calls= is that call's inclusive cost
        with open(path, errors="replace") as f:
            for line in f:
                if line[:1].isdigit() or line[:1] in "+-*":
                    parts = line.split()
                    if len(parts) <= npos:
                        continue
                    ir = int(parts[npos])
                    if call:
                        call = False
                        if cfn == GC_ENTRY and fn != GC_ENTRY:
                            self.gc += ir
                        continue
                    self.by_fn[(ob, fn)] += ir
                    self.by_ob[ob] += ir
                    continue
                call = False
                if line.startswith("fn="):
                    fn = line[3:].strip()
                elif line.startswith("cfn="):
                    cfn = line[4:].strip()
                elif line.startswith("ob="):
                    ob = line[3:].strip()
                elif line.startswith("calls="):
                    call = True
                    self.calls[cfn] += int(line[6:].split()[0])
                elif line.startswith("positions:"):
                    npos = len(line.split()) - 1
                elif line.startswith("summary:"):
                    summary = int(line.split()[1])
                elif line.startswith("totals:"):
                    totals = int(line.split()[1])
        self.total += totals if totals is not None else summary or 0


#: ``--tree PATH@pure``: that tree with ZCOPY_PURE=1 (its hot path as plain Python, docs/hotpath.md).
PURE = "@pure"
#: ``--keep DIR``: where every window's dump is copied (None: nowhere).
KEEP = None


class Server:
    """`zcopy serve` of one tree under callgrind; the worker is the supervisor's one child."""

    def __init__(self, tree: str, root: str, env: dict, serve_args: list[str], outdir: str) -> None:
        self.tree = tree
        self.port = free_port()
        self.outdir = outdir
        self.keep = KEEP
        # a fresh state folder per server: a tree must not meet another tree's state files
        env = dict(env, PYTHONPATH=tree.removesuffix(PURE), PYTHONHASHSEED="0",
                   XDG_STATE_HOME=os.path.join(outdir, "state"))
        if tree.endswith(PURE):     # the same tree, its compiled modules run from their .py (zcopy.hotpath)
            env["ZCOPY_PURE"] = "1"
        self.argv = ["valgrind", "--tool=callgrind", "--trace-children=yes", "--separate-threads=yes",
                     "--dump-instr=no", "--compress-strings=no", "--compress-pos=no",
                     f"--callgrind-out-file={outdir}/cg.%p",
                     PYTHON, "-m", "zcopy", "serve", root, "--port", str(self.port), "--workers", "1",
                     "--worker-timeout", "3600", *serve_args]
        self.log = open(os.path.join(outdir, "serve.log"), "wb")
        self.proc = subprocess.Popen(self.argv, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True, cwd=outdir)
        self.worker = self._wait_worker()

    def _wait_worker(self) -> int:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        pid = self.proc.pid
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.log.flush()
                with open(self.log.name, errors="replace") as f:
                    tail = "".join(f.readlines()[-30:])
                raise RuntimeError(f"server exited {self.proc.returncode}; the end of its output:\n{tail}")
            try:
                with open(f"/proc/{pid}/task/{pid}/children") as f:
                    children = [int(c) for c in f.read().split()]
            except OSError:
                children = []
            if len(children) == 1 and self._answers():
                # the worker's vgdb pipe: callgrind_control finds the process through it
                if any(name.startswith(f"vgdb-pipe-from-vgdb-to-{children[0]}-")
                       for name in os.listdir(tempfile.gettempdir())):
                    return children[0]
            time.sleep(0.5)
        raise RuntimeError(f"no worker answered within {STARTUP_TIMEOUT:.0f} s: see {self.log.name}")

    def _answers(self) -> bool:
        try:
            c = Client(self.port)
        except OSError:
            return False
        try:
            c.conns[0].send("/")
            c.conns[0].reply()
            return True
        except (OSError, RuntimeError):
            return False
        finally:
            c.close()

    def control(self, *args: str) -> None:
        assert self.worker > 0     # never a bare callgrind_control: it would reach every callgrind process
        subprocess.run(["callgrind_control", *args, str(self.worker)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)

    def window(self, client: Client | None, path: str, n: float) -> tuple[int, float, Dump]:
        """(GETs sent, seconds, what the worker ran) while ``client`` GETs ``path`` at least ``n``
        times (no client: while ``n`` seconds pass)."""
        before = set(os.listdir(self.outdir))
        t0 = time.monotonic()
        self.control("--zero")
        if client is None:
            time.sleep(n)
            n = 0
        else:
            n = client.many(path, n)
        self.control("--dump")
        seconds = time.monotonic() - t0
        # one file per thread (--separate-threads=yes): cg.PID.DUMP-THREAD
        new = [name for name in set(os.listdir(self.outdir)) - before if name.startswith(f"cg.{self.worker}.")]
        if not new:
            raise RuntimeError(f"no dump of {self.worker} appeared")
        dump = Dump()
        for name in new:
            dump.add(os.path.join(self.outdir, name))
            if self.keep:       # (--keep: for callgrind_annotate --inclusive=yes / --tree=calling)
                shutil.copy(os.path.join(self.outdir, name), self.keep)
            os.unlink(os.path.join(self.outdir, name))
        return n, seconds, dump

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


def measure(tree: str, root: str, env: dict, serve_args: list[str], files: dict[str, int],
            requests: int, windows: int, warmup: int, connections: int, outdir: str) -> dict:
    server = Server(tree, root, env, serve_args, outdir)
    print(f"  PYTHONPATH={tree} PYTHONHASHSEED=0 {' '.join(server.argv)}")
    try:
        client = Client(server.port, connections)
        try:
            for path in files:
                for _ in range(3):          # the digest is computed off the loop: let it land
                    client.many(path, warmup // 3)
                    time.sleep(0.5)
            # What the worker runs with no request (its once-a-second tick, epoll timeouts), per
            # second: the windows below last as long as valgrind takes, which varies with the load.
            out = {}
            for path, size in files.items():
                rows = []
                for _ in range(windows):
                    m, _, d = server.window(client, path, requests)
                    rows.append((d.total / m, d.gc / m, m, d))
                rows.sort(key=lambda row: row[0])
                per, gc, m, d = rows[len(rows) // 2]        # the median window
                out[size] = {"per_request": per, "windows": [row[0] for row in rows], "gc": gc,
                             "n": m, "fn": d.by_fn, "ob": d.by_ob, "calls": d.calls}
            return out
        finally:
            client.close()
    finally:
        server.stop()


def short_ob(ob: str) -> str:
    return os.path.basename(ob) if ob != "?" else ob


def main() -> int:
    # SIGTERM unwinds like Ctrl-C: every server started is stopped, the temporary folder removed
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(1))
    argv = sys.argv[1:]
    serve_args = ["--auto"]
    if "--" in argv:
        i = argv.index("--")
        argv, serve_args = argv[:i], argv[i + 1:]
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tree", action="append", help="a source tree (repeat for an A/B; default: this one)")
    ap.add_argument("--size", action="append", type=parse_size, help="file size (repeatable; default 1KiB)")
    ap.add_argument("--requests", type=int, default=2000, help="GETs per counting window")
    ap.add_argument("--windows", type=int, default=5, help="counting windows per file (the median is shown)")
    ap.add_argument("--warmup", type=int, default=6000,
                    help="GETs per file before counting (enough for every bytecode to settle: "
                         "3.11 retries a failed specialization after up to 4096 runs)")
    ap.add_argument("--connections", type=int, default=1,
                    help="keep-alive connections, one GET outstanding on each (default 1)")
    ap.add_argument("--stats", action="store_true",
                    help="keep the once-a-second stats publishing on (default: ZCOPY_STATS=off)")
    ap.add_argument("--rounds", type=int, default=1, help="servers started per tree (interleaved)")
    ap.add_argument("--top", type=int, default=0, help="print the K functions with the most own Ir/request")
    ap.add_argument("--keep", metavar="DIR", help="copy every window's callgrind dump into DIR (for "
                    "callgrind_annotate --inclusive=yes or --tree=calling)")
    args = ap.parse_args(argv)
    global KEEP
    KEEP = args.keep
    if KEEP:
        os.makedirs(KEEP, exist_ok=True)
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("needs valgrind and callgrind_control (Debian: apt-get install valgrind)", file=sys.stderr)
        return 2
    trees = [os.path.abspath(t.removesuffix(PURE)) + (PURE if t.endswith(PURE) else "") for t in (args.tree or [HERE])]
    for tree in trees:      # (else PYTHONPATH would silently fall back to the installed zcopy)
        if not os.path.isfile(os.path.join(tree.removesuffix(PURE), "zcopy", "__init__.py")):
            ap.error(f"{tree} holds no zcopy/ source tree")
    sizes = args.size or [1024]
    if args.requests < 1 or args.windows < 1:
        ap.error("--requests and --windows must be at least 1")
    results: dict[str, list[dict]] = {t: [] for t in trees}
    with tempfile.TemporaryDirectory(prefix="zcopy-instr-") as tmp:
        root = os.path.join(tmp, "root")
        os.mkdir(root)
        files = {}
        for size in sizes:
            name = f"/f{size}.bin"
            with open(root + name, "wb") as f:
                f.write(os.urandom(size))
            files[name] = size
        env = dict(os.environ, XDG_CACHE_HOME=os.path.join(tmp, "cache"), XDG_CONFIG_HOME=os.path.join(tmp, "config"))
        if not args.stats:
            env["ZCOPY_STATS"] = "off"
        if "--auto" in serve_args:
            probe = [PYTHON, "-m", "zcopy", "probe", "--quick", "--save", "--path", root]
            print(f"probe (outside valgrind, shared by every tree): PYTHONPATH={trees[0].removesuffix(PURE)} {' '.join(probe)}")
            subprocess.run(probe, env=dict(env, PYTHONPATH=trees[0].removesuffix(PURE)), check=True, stdout=subprocess.DEVNULL)
        print(f"load average before: {os.getloadavg()[0]:.2f}")
        for rnd in range(args.rounds):
            order = trees if rnd % 2 == 0 else trees[::-1]
            for tree in order:
                outdir = tempfile.mkdtemp(prefix="run-", dir=tmp)
                t0 = time.monotonic()
                res = measure(tree, root, env, serve_args, files, args.requests, args.windows, args.warmup,
                              args.connections, outdir)
                results[tree].append(res)
                figures = ", ".join(f"{size} B {r['per_request']:,.0f} (windows "
                                    f"{', '.join(f'{w:,.0f}' for w in r['windows'])}; GC {r['gc']:,.0f})"
                                    for size, r in res.items())
                print(f"round {rnd + 1} {tree}: {figures} Ir/request ({time.monotonic() - t0:.0f} s)")
        print(f"load average after: {os.getloadavg()[0]:.2f}\n")
    base = trees[0]
    for size in sizes:
        print(f"{size} B keep-alive GET, instructions per request in the worker "
              f"(median of {args.windows} windows of {args.requests} GETs, {args.connections} connection(s), "
              f"{args.rounds} round(s)):")
        med0 = statistics.median(r[size]["per_request"] for r in results[base])
        for tree in trees:
            values = [r[size]["per_request"] for r in results[tree]]
            med = statistics.median(values)
            spread = f"; rounds {', '.join(f'{v:,.0f}' for v in values)}" if len(values) > 1 else ""
            gc = statistics.median(r[size]["gc"] for r in results[tree])
            print(f"  {med:10,.0f}  {med / med0:5.3f}x  {tree}  (of which the cyclic GC {gc:,.0f}{spread})")
        for tree in trees:
            last = results[tree][-1][size]
            obs = sorted(last["ob"].items(), key=lambda kv: -kv[1])
            per = last["n"]
            split = ", ".join(f"{short_ob(ob)} {v / per:,.0f}" for ob, v in obs[:6] if v / per >= 50)
            print(f"  by object, {tree}: {split}")
            calls = ", ".join(f"{name} {last['calls'][name] / per:.2f}" for name in SYSCALLS
                              if last["calls"][name] / per >= 0.005)
            print(f"  syscalls per request (calls of libc's wrappers), {tree}: {calls}")
        if args.top:
            for tree in trees:
                last = results[tree][-1][size]
                print(f"\n  top {args.top} functions by own Ir/request, {tree}:")
                for (ob, fn), v in last["fn"].most_common(args.top):
                    print(f"    {v / last['n']:9,.0f}  {fn}  [{short_ob(ob)}]")
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
