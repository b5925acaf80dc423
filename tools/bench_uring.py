#!/usr/bin/env python3
"""Does io_uring batching beat epoll + one syscall each, in Python? (issue 14)

A focused experiment, not zcopy's server: three tiny servers answer every
keep-alive GET with the same held 1 KiB reply (head + body in one buffer, as
zcopy.server.held does), differing only in how they talk to the kernel:

- ``epoll``: zcopy's loop shape. Edge-triggered ``epoll_wait``, then per
  ready connection ``recv`` and one ``send`` of the reply: one syscall per
  operation, plus the wait.
- ``uring``: one io_uring. Per request a ``recv`` completion comes back; the
  reply's ``send`` (its success completion skipped) and the next ``recv`` are
  queued as SQEs, and a whole loop turn's SQEs go in with the turn's single
  ``io_uring_enter`` (``io_uring_submit_and_wait``), which also waits for the
  next completions.
- ``uring-multishot``: the same, but each connection has one multishot
  ``recv`` armed once, drawing from provided buffers (the buffer goes back with
  a PROVIDE_BUFFERS SQE in the same batch): no re-arm per request.

The io_uring modes need the ``liburing`` package (PyPI, abi3 wheel), in the
interpreter given by ``--python`` (default: this one). It is not a zcopy
dependency: install it in a separate venv for this experiment
(``python -m venv /tmp/uring-venv && /tmp/uring-venv/bin/pip install liburing``).

The driver pins every server to ``--server-cpu`` (default 0) and ``wrk -t1
-c64`` to ``--load-cpu`` (default 1), warms each, then runs rounds in a
rotating order and prints medians of req/s and of the server's CPU per request
(utime + stime from /proc/PID/stat, all its threads, over the wrk run),
plus the server's own count of requests per loop turn. ``--syscalls S``
instead runs wrk for S seconds under ``strace -c -f`` on each server and prints
syscalls per request; ``--perf S`` profiles each server with ``perf record``
over a wrk run and prints where its CPU went (kernel, user, the syscall and
epoll path, io_uring's own code). Results and conclusion: docs/benchmarks.md,
"io_uring against epoll + one syscall each".

    python tools/bench_uring.py --python /tmp/uring-venv/bin/python --rounds 5 --duration 5
    python tools/bench_uring.py --python /tmp/uring-venv/bin/python --syscalls 3
    python tools/bench_uring.py --python /tmp/uring-venv/bin/python --perf 3
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import re
import select
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

BODY = b"x" * 1024
HEAD = (b"HTTP/1.1 200 OK\r\nServer: zcopy\r\nDate: Wed, 02 Dec 2026 12:00:00 GMT\r\n"
        b"Content-Type: application/octet-stream\r\nContent-Length: 1024\r\n"
        b"Last-Modified: Wed, 02 Dec 2026 11:00:00 GMT\r\nETag: \"5f3a-400-0123456789abcdef\"\r\n"
        b"Accept-Ranges: bytes\r\nKeep-Alive: timeout=60\r\n\r\n")
REPLY = HEAD + BODY                  # one held buffer: head + body leave in one send
END = b"\r\n\r\n"
RECV_SIZE = 65536
MODES = ("epoll", "uring", "uring-multishot")


# --- the servers (run as `bench_uring.py serve --mode M --port P`) -----------

class Counters:
    def __init__(self):
        self.requests = self.turns = 0
        self.stop = False

    def on_term(self, *_):
        self.stop = True

    def report(self, mode: str, extra: str = "") -> None:
        print(json.dumps({"mode": mode, "requests": self.requests, "turns": self.turns,
                          "requests_per_turn": self.requests / self.turns if self.turns else 0,
                          "note": extra}), file=sys.stderr, flush=True)


def replies(pending: dict, fd: int, data) -> bytes | None:
    """The replies owed for what a read brought (whole requests only; a partial
    one is kept for the next read). The same code for every mode."""
    if fd in pending:
        data = pending.pop(fd) + bytes(data)
    n = data.count(END)
    if data[-4:] != END:
        pending[fd] = bytes(data[data.rfind(END) + 4:] if n else data)
    if not n:
        return None
    return REPLY if n == 1 else REPLY * n


def listen(port: int) -> socket.socket:
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", port))
    ls.listen(1024)
    return ls


def serve_epoll(port: int, c: Counters) -> str:
    """zcopy's loop shape: edge-triggered epoll, recv, send per ready connection."""
    ls = listen(port)
    ls.setblocking(False)
    ep = select.epoll()
    lfd = ls.fileno()
    ep.register(lfd, select.EPOLLIN)
    conns: dict[int, socket.socket] = {}
    pending: dict[int, bytes] = {}
    mask = select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLET
    poll = ep.poll
    while not c.stop:
        try:
            events = poll(1.0, 1023)
        except InterruptedError:
            continue
        c.turns += 1
        for fd, ev in events:
            if fd == lfd:
                while True:
                    try:
                        s, _ = ls.accept()
                    except BlockingIOError:
                        break
                    s.setblocking(False)
                    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    conns[s.fileno()] = s
                    ep.register(s.fileno(), mask)
                continue
            s = conns.get(fd)
            if s is None:
                continue
            try:
                data = s.recv(RECV_SIZE)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                ep.unregister(fd)
                del conns[fd]
                pending.pop(fd, None)
                s.close()
                continue
            out = replies(pending, fd, data)
            if out is not None:
                c.requests += out is REPLY or len(out) // len(REPLY)
                try:
                    s.send(out)          # 1 KiB into an empty socket buffer: all of it leaves
                except OSError:
                    pass
    return ""


def make_ring(L, entries: int):
    """A ring with SINGLE_ISSUER | DEFER_TASKRUN (completions run only when this
    thread enters), else COOP_TASKRUN, else plain; returns (ring, what it got)."""
    for flags, name in ((L.IORING_SETUP_SINGLE_ISSUER | L.IORING_SETUP_DEFER_TASKRUN,
                         "SINGLE_ISSUER|DEFER_TASKRUN"),
                        (L.IORING_SETUP_COOP_TASKRUN, "COOP_TASKRUN"), (0, "no setup flags")):
        ring = L.Ring()
        try:
            L.io_uring_queue_init(entries, ring, flags)
            return ring, name
        except OSError:
            continue
    raise RuntimeError("io_uring_queue_init failed")


ACCEPT = 0                  # user_data of the multishot accept (fd 0 is never a connection)
SEND = 1 << 32              # user_data of a send: fd | SEND (only failures come back)
PROVIDE = 1 << 33           # user_data of a PROVIDE_BUFFERS (only failures come back)


def serve_uring(port: int, c: Counters, multishot: bool) -> str:
    import liburing as L

    ls = listen(port)
    lfd = ls.fileno()
    ring, setup = make_ring(L, 4096)
    get_sqe, prep_send, prep_recv = L.io_uring_get_sqe, L.io_uring_prep_send, L.io_uring_prep_recv
    prep_multi, provide, set_group = (L.io_uring_prep_recv_multishot, L.io_uring_prep_provide_buffers,
                                      L.io_uring_sqe_set_buf_group)
    SKIP, SELECT, F_MORE = L.IOSQE_CQE_SKIP_SUCCESS, L.IOSQE_BUFFER_SELECT, L.IORING_CQE_F_MORE
    SHIFT = L.IORING_CQE_BUFFER_SHIFT
    socks: dict[int, socket.socket] = {}
    bufs: dict[int, bytearray] = {}          # single-shot: each connection's receive buffer
    pending: dict[int, bytes] = {}
    pool = [bytearray(4096) for _ in range(1024)] if multishot else []   # multishot: buffer group 0

    def arm_accept():
        sqe = get_sqe(ring)
        L.io_uring_prep_multishot_accept(sqe, lfd)
        sqe.user_data = ACCEPT

    def arm_recv(fd):
        sqe = get_sqe(ring)
        if multishot:
            prep_multi(sqe, fd, None, 0)
            sqe.flags = SELECT
            set_group(sqe, 0)
        else:
            prep_recv(sqe, fd, bufs[fd], 0)
        sqe.user_data = fd

    def close(fd):
        s = socks.pop(fd, None)
        if s is not None:
            s.close()
        bufs.pop(fd, None)
        pending.pop(fd, None)

    for bid, b in enumerate(pool):
        sqe = get_sqe(ring)
        provide(sqe, b, 1, 0, bid)
        sqe.flags = SKIP
        sqe.user_data = PROVIDE
        if bid % 512 == 511:
            L.io_uring_submit(ring)
    arm_accept()
    cqe = L.Cqe()
    submit_and_wait, iter_init, iter_next, advance = (L.io_uring_submit_and_wait, L.io_uring_cqe_iter_init,
                                                      L.io_uring_cqe_iter_next, L.io_uring_cq_advance)
    failures: dict[str, int] = {}
    while not c.stop:
        try:
            submit_and_wait(ring, 1)
        except InterruptedError:
            continue
        except OSError as exc:
            if exc.errno == errno.EINTR:
                continue
            raise
        c.turns += 1
        it = iter_init(ring)
        seen = 0
        while iter_next(it, cqe):
            e = cqe[0]
            seen += 1
            ud = e.user_data
            try:
                res = e.res                     # (the wrapper raises OSError for a negative res)
            except OSError as exc:
                res = -exc.errno
            if ud >= SEND:                      # a failed send or provide
                key = ("provide " if ud & PROVIDE else "send ") + errno.errorcode.get(-res, str(res))
                failures[key] = failures.get(key, 0) + 1
                if not ud & PROVIDE and res != -errno.EBADF:   # EBADF: closed in the same turn, maybe reused
                    close(ud & 0xFFFFFFFF)
                continue
            if ud == ACCEPT:
                if res >= 0:
                    s = socket.socket(fileno=res)
                    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    socks[res] = s
                    if not multishot:
                        bufs[res] = bytearray(RECV_SIZE)
                    arm_recv(res)
                if not e.flags & F_MORE:
                    arm_accept()
                continue
            fd = ud
            if fd not in socks:
                continue
            flags = e.flags
            if res <= 0:
                if multishot and res == -errno.ENOBUFS:
                    if not flags & F_MORE:
                        arm_recv(fd)
                    continue
                close(fd)                       # EOF or error: the recv is finished
                continue
            if multishot:
                bid = flags >> SHIFT
                b = pool[bid]
                out = replies(pending, fd, b[:res])
                sqe = get_sqe(ring)             # the buffer goes back, in this turn's batch
                provide(sqe, b, 1, 0, bid)
                sqe.flags = SKIP
                sqe.user_data = PROVIDE
                if not flags & F_MORE:
                    arm_recv(fd)
            else:
                out = replies(pending, fd, bufs[fd][:res])
                arm_recv(fd)
            if out is not None:
                c.requests += out is REPLY or len(out) // len(REPLY)
                sqe = get_sqe(ring)
                prep_send(sqe, fd, out, 0)      # `out` stays alive: REPLY, or short-lived only when pipelined
                sqe.flags = SKIP
                sqe.user_data = fd | SEND
        advance(ring, seen)
    return f"setup {setup}; failed completions {failures or 'none'}"


def serve(mode: str, port: int) -> int:
    c = Counters()
    signal.signal(signal.SIGTERM, c.on_term)
    signal.signal(signal.SIGINT, c.on_term)
    note = serve_epoll(port, c) if mode == "epoll" else serve_uring(port, c, mode == "uring-multishot")
    c.report(mode, note)
    return 0


# --- the driver -----------------------------------------------------------

TOOLS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, TOOLS)


def has_liburing(python: str) -> bool:
    return subprocess.run([python, "-c", "import liburing"], capture_output=True, check=False).returncode == 0


def check_reply(port: int) -> None:
    """One request on a fresh connection, two on one write: each reply must be REPLY."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        req = b"GET /1k.bin HTTP/1.1\r\nHost: x\r\n\r\n"
        s.sendall(req)
        s.sendall(req * 2)
        got = b""
        while len(got) < 3 * len(REPLY):
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
    if got != REPLY * 3:
        raise RuntimeError(f"port {port} answered {len(got)} bytes, not three replies")


#: kernel symbols of the syscall path itself and of epoll (what io_uring could remove) ...
SYSCALL_PATH = re.compile(r"syscall|entry_SYSCALL|fdget|__fget|__x64_sys_|__sys_|ep_poll|do_epoll|ep_send_events"
                          r"|ep_item_poll|sock_poll")
#: ... and of io_uring (what it adds)
URING_PATH = re.compile(r"^io_|io_uring|^__io_|xa_load|llist_reverse_order|task_work|tctx_")


def profile(procs, args, tmp: str, load_before: str) -> int:
    """perf record each server over a wrk run; share of its samples by where they fell."""
    from bench_serve import wrk

    rows = {}
    for m, (p, port, _) in procs.items():
        data = os.path.join(tmp, f"perf-{m}.data")
        rec = subprocess.Popen(["perf", "record", "-q", "-o", data, "-p", str(p.pid), "--", "sleep",
                                str(args.perf + 0.5)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.2)
        _, done = wrk(port, "/1k.bin", args.perf, args.connections, cpu=args.load_cpu)
        rec.wait(60)
        out = subprocess.run(["perf", "report", "-i", data, "--no-children", "--sort", "sym", "--stdio"],
                             capture_output=True, text=True, check=False).stdout
        share = {"kernel": 0.0, "user": 0.0, "syscall": 0.0, "uring": 0.0}
        for line in out.splitlines():
            f = line.split()
            if len(f) < 3 or not f[0].endswith("%") or f[1] not in ("[k]", "[.]"):
                continue
            pct, sym = float(f[0][:-1]), f[2]
            share["kernel" if f[1] == "[k]" else "user"] += pct
            if f[1] == "[k]" and SYSCALL_PATH.search(sym):
                share["syscall"] += pct
            if f[1] == "[k]" and URING_PATH.search(sym):
                share["uring"] += pct
        rows[m] = share
        print(f"{m}: {done} requests profiled", file=sys.stderr)
    print(f"\nwhere each server's CPU went (perf record of the server during wrk -t1 -c{args.connections} "
          f"-d{args.perf:g}s, % of its samples; load average {load_before} before)\n")
    print("| server | kernel % | user % | syscall entry, fd lookup, epoll % | io_uring's own code % |")
    print("|---|---|---|---|---|")
    for m, r in rows.items():
        print(f"| {m} | {r['kernel']:.1f} | {r['user']:.1f} | {r['syscall']:.1f} | {r['uring']:.1f} |")
    return 0


def main() -> int:
    from bench_serve import (
        cpu_times,
        free_port,
        load_average,
        parse_strace_summary,
        traced,
        wait_port,
        wrk,
    )

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd")
    sp = sub.add_parser("serve")
    sp.add_argument("--mode", choices=MODES, required=True)
    sp.add_argument("--port", type=int, required=True)
    ap.add_argument("--python", default=sys.executable, help="interpreter of the servers (needs liburing "
                    "for the io_uring modes)")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=float, default=5)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--server-cpu", type=int, default=0)
    ap.add_argument("--load-cpu", type=int, default=1)
    ap.add_argument("--syscalls", type=float, metavar="SECONDS",
                    help="count syscalls per request under strace -c -f over a wrk run of SECONDS instead")
    ap.add_argument("--perf", type=float, metavar="SECONDS",
                    help="profile each server with perf record over a wrk run of SECONDS instead, and print "
                         "where its CPU went (kernel, user; syscall entry and epoll; io_uring's own code)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.cmd == "serve":
        return serve(args.mode, args.port)

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if bad := [m for m in modes if m not in MODES]:
        ap.error(f"unknown mode {bad[0]!r}")
    if any(m != "epoll" for m in modes) and not has_liburing(args.python):
        print(f"bench_uring: {args.python} cannot import liburing: the io_uring modes are skipped "
              "(python -m venv /tmp/uring-venv && /tmp/uring-venv/bin/pip install liburing; "
              "then --python /tmp/uring-venv/bin/python)", file=sys.stderr)
        modes = [m for m in modes if m == "epoll"]
    load_before = load_average()
    tmp = tempfile.mkdtemp(prefix="bench-uring-")
    procs: dict[str, tuple[subprocess.Popen, int, str]] = {}
    try:
        for m in modes:
            port = free_port()
            log = os.path.join(tmp, f"{m}.log")
            argv = ["taskset", "-c", str(args.server_cpu), args.python, os.path.abspath(__file__),
                    "serve", "--mode", m, "--port", str(port)]
            with open(log, "w") as f:
                p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=f, start_new_session=True)
            procs[m] = (p, port, log)
            wait_port(port)
            check_reply(port)
        if args.perf is not None:
            return profile(procs, args, tmp, load_before)
        if args.syscalls is not None:
            table = {}
            for m, (p, port, _) in procs.items():
                out = os.path.join(tmp, f"strace-{m}.txt")
                tracer = subprocess.Popen(["strace", "-c", "-f", "-o", out, "-p", str(p.pid)],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                deadline = time.monotonic() + 30
                while not traced(p.pid):
                    if tracer.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"strace could not attach to {m}")
                    time.sleep(0.01)
                try:
                    _, done = wrk(port, "/1k.bin", args.syscalls, args.connections, cpu=args.load_cpu)
                finally:
                    tracer.send_signal(signal.SIGINT)
                    tracer.wait(30)
                with open(out) as f:
                    calls = parse_strace_summary(f.read())
                table[m] = {k: (n / done, e / done) for k, (n, e) in calls.items()}
                print(f"{m}: {sum(n for n, _ in table[m].values()):.3f} syscalls per request "
                      f"({done} requests)", file=sys.stderr)
            rows = sorted({k for t in table.values() for k in t}, key=lambda k: -max(t.get(k, (0, 0))[0]
                                                                                     for t in table.values()))
            print(f"\nsyscalls per request (strace -c -f, wrk -t1 -c{args.connections} -d{args.syscalls:g}s, "
                  f"load average {load_before} before)\n")
            print("| syscall | " + " | ".join(table) + " |")
            print("|---|" + "---|" * len(table))
            for k in rows:
                if max(t.get(k, (0, 0))[0] for t in table.values()) >= 0.001:
                    print(f"| {k} | " + " | ".join(f"{t.get(k, (0, 0))[0]:.3f}" for t in table.values()) + " |")
            print("| **total** | " + " | ".join(f"**{sum(n for n, _ in t.values()):.3f}**"
                                                for t in table.values()) + " |")
            return 0
        for m, (p, port, _) in procs.items():           # warm-up
            wrk(port, "/1k.bin", 1, args.connections, cpu=args.load_cpu)
        res: dict[str, dict[str, list[float]]] = {m: {"rps": [], "user": [], "sys": []} for m in procs}
        names = list(procs)
        for r in range(args.rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            for m in order:
                p, port, _ = procs[m]
                u0, s0 = cpu_times([p.pid])
                rps, done = wrk(port, "/1k.bin", args.duration, args.connections, cpu=args.load_cpu)
                u1, s1 = cpu_times([p.pid])
                res[m]["rps"].append(rps)
                res[m]["user"].append((u1 - u0) / done * 1e6)
                res[m]["sys"].append((s1 - s0) / done * 1e6)
                print(f"round {r + 1} {m}: {rps:,.0f} req/s, {(u1 - u0 + s1 - s0) / done * 1e6:.2f} us/req",
                      file=sys.stderr)
        load_after = load_average()
        stats = {}
        for m, (p, port, log) in procs.items():
            p.send_signal(signal.SIGTERM)
            p.wait(10)
            with contextlib.suppress(Exception), open(log) as f:
                stats[m] = json.loads(f.read().strip().splitlines()[-1])
        if args.json:
            print(json.dumps({"load_before": load_before, "load_after": load_after, "raw": res,
                              "server": stats}, indent=2))
            return 0
        for d in res.values():
            d["cpu"] = [u + s for u, s in zip(d["user"], d["sys"])]
        med = {m: {k: statistics.median(v) for k, v in d.items()} for m, d in res.items()}
        base = med.get("epoll")
        print(f"\n1 KiB keep-alive GETs, server on CPU {args.server_cpu}, wrk -t1 -c{args.connections} "
              f"-d{args.duration:g}s on CPU {args.load_cpu}; medians of {args.rounds} interleaved rounds; "
              f"load average {load_before} before, {load_after} after\n")
        print("| server | req/s | CPU us/req, median (median user + median sys) | x epoll CPU/req (medians) | "
              "x epoll CPU/req, same round: median (range) | requests per loop turn | per round us/req |")
        print("|---|---|---|---|---|---|---|")
        for m, d in med.items():
            cpu = d["cpu"]
            ratio = paired = "-"
            if base:
                ratio = f"{cpu / base['cpu']:.2f}"
                pairs = [x / e for x, e in zip(res[m]["cpu"], res["epoll"]["cpu"])]
                paired = f"{statistics.median(pairs):.2f} ({min(pairs):.2f}-{max(pairs):.2f})"
            rounds = ", ".join(f"{x:.1f}" for x in res[m]["cpu"])
            per_turn = stats.get(m, {}).get("requests_per_turn", 0)
            print(f"| {m} | {d['rps']:,.0f} | {cpu:.2f} ({d['user']:.2f} + {d['sys']:.2f}) | {ratio} | {paired} | "
                  f"{per_turn:.1f} | {rounds} |")
        for m, s in stats.items():
            if s.get("note"):
                print(f"\n{m}: {s['note']}")
        return 0
    finally:
        for m, (p, _, _) in procs.items():
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
