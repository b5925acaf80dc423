"""How often one request walks back into a module it had already left.

    python tools/walk_count.py [--json]

Starts a real ``zcopy serve --workers 1 --allow-write`` (this tree, a temporary root and state
folder, loopback) as a child whose Python frames are followed with ``sys.setprofile``; the
worker inherits it through the fork (its event-loop thread; executor threads are not followed:
their work is counted where its result comes back to the loop). It sends, one at a time, each
on a new connection, a GET of a small file, a GET of a folder listing, a PUT, a DELETE, a MOVE
and a PROPFIND with Depth 1 (the reads twice: "cold", the first, then "hot", the same again at
once, answered from the caches), and prints per request:

* **the walk**: the sequence of modules the loop thread is in while it handles the request,
  where "the module it is in" is that of the innermost frame whose code lives in
  ``zcopy/server/`` or ``zcopy/http/`` (frames of other code, the standard library,
  ``zcopy/loop.py``, the engines, are transparent: they leave it where it was; so the loop's
  own turn counts as ``zcopy.server.worker``, the module that runs it); runs of the same
  module are one step. The loop's per-turn work (the heartbeat in ``shared``, the file
  watch's events) is in the walk: it is what the loop does between the request's steps.
* **modules**: how many different modules the walk enters.
* **returns**: how many steps of the walk enter a module that the walk had already been in
  and left, i.e. ``sum(1 for i, m in enumerate(walk) if m in walk[:i])``. ``A B A C A`` has 2.
  A call into a helper module and back counts: that is the bounce the issue measured.
* **returns (server)**: the same with ``zcopy/http/`` transparent too (the sans-I/O HTTP
  functions are leaves every module calls; what is left is the server's own layering).
* **most**: the module the server walk returns to most often, and how often.
* **calls back up**: how many calls go into a module that is already on the loop thread's
  stack below the caller (``A -> B -> A``: B calls back into its caller's module). A call into
  a helper and its return do not count; the event loop dispatching a callback does not count
  either (it starts a new walk from code that is not followed). This is the layering measure:
  zero means every walk goes down and only returns come back.

A request's window runs from just before its bytes are sent to 0.3 s after its reply is read
(the worker's turn, its access-log line, a write's follow-up are in; the worker's timer, should
it fire in the window, is dropped: steps under a followed function that the loop called and that
is in ``_TIMERS`` are not the request's). Each "hot" request follows an unmarked one like it,
so that it is answered as a busy server answers it (the first answer after an off-loop lookup
is not memoized). Not a benchmark: the tracing makes the
server slow; the counts, not times, are the result.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

TREE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: Run in the child: a profile function writing "pid root module" each time the loop thread's
#: current module changes, then ``zcopy serve``.
BOOT = r'''
import os, sys
TRACE = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND)
TREE = sys.argv[2]
WATCH = (os.path.join(TREE, "zcopy", "server") + os.sep, os.path.join(TREE, "zcopy", "http") + os.sep)
names = {}
def module_of(code):
    name = names.get(code.co_filename, 0)
    if name == 0:
        f = code.co_filename
        name = None
        if f.startswith(WATCH):
            name = os.path.relpath(f, TREE)[:-3].replace(os.sep, ".")
        names[f] = name
    return name
# per frame: (current module, the followed function called last from code not followed, followed)
stack = [(None, None, False)]
last = [None]
def prof(frame, event, arg):
    if event == "call":
        cur, root, followed = stack[-1]
        mod = module_of(frame.f_code)
        if mod is not None:
            if not followed:
                root = mod + ":" + frame.f_code.co_name
            elif mod != cur and any(entry[0] == mod for entry in stack):
                # a call back up: into a module already on the stack below (a callback)
                os.write(TRACE, f"{os.getpid()} {root} UP:{mod}:{frame.f_code.co_name}\n".encode())
            cur = mod
        stack.append((cur, root, mod is not None))
    elif event == "return":
        if len(stack) > 1:
            stack.pop()
    else:
        return
    cur, root, _ = stack[-1]
    if cur is not None and cur != last[0]:
        os.write(TRACE, f"{os.getpid()} {root} {cur}\n".encode())
    last[0] = cur
sys.setprofile(prof)
from zcopy.cli import main
sys.exit(main(sys.argv[3:]))
'''

#: Followed functions, called from code not followed (the loop), that are the worker's own
#: once-a-second housekeeping, not a request's work (a timer may fire inside a window).
_TIMERS = ("zcopy.server.worker:tick", "zcopy.server.worker:stats_snapshot")   # (the second: its stats publisher)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _exchange(port: int, data: bytes) -> int:
    """Send one request (each says ``Connection: close``), read until the server closes, return the status."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(data)
        reply = b"".join(iter(lambda: s.recv(65536), b""))
    return int(reply.split(b" ", 2)[1])


def _requests() -> list[tuple[str, bytes]]:
    body = b"x" * 100
    propfind = b'<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:allprop/></D:propfind>'
    get = b"GET /small.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    listing = b"GET /dir/ HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    pf = (b"PROPFIND /dir/ HTTP/1.1\r\nHost: t\r\nConnection: close\r\nDepth: 1\r\n"
          b"Content-Type: application/xml\r\nContent-Length: " + str(len(propfind)).encode() + b"\r\n\r\n" + propfind)
    return [
        ("GET small file, cold", get), (None, get), ("GET small file, hot", get),
        ("GET folder listing, cold", listing), (None, listing), ("GET folder listing, hot", listing),
        ("PUT", b"PUT /new.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 100\r\n\r\n" + body),
        ("DELETE", b"DELETE /new.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"),
        ("MOVE", b"MOVE /m1.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\nDestination: http://t/m2.txt\r\n\r\n"),
        ("PROPFIND Depth 1, cold", pf), (None, pf), ("PROPFIND Depth 1, hot", pf),
    ]


def _count(walk: list[str]) -> int:
    return sum(1 for i, m in enumerate(walk) if m in walk[:i])


def _collapse(steps: list[str]) -> list[str]:
    out: list[str] = []
    for m in steps:
        if not out or out[-1] != m:
            out.append(m)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print the walks as JSON too")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="zcopy-walk-")
    proc = None
    try:
        root = os.path.join(work, "root")
        os.makedirs(os.path.join(root, "dir"))
        with open(os.path.join(root, "small.txt"), "wb") as f:
            f.write(b"s" * 1024)
        for i in range(20):
            with open(os.path.join(root, "dir", f"f{i}.txt"), "w") as f:
                f.write("x" * i)
        with open(os.path.join(root, "m1.txt"), "w") as f:
            f.write("move me")
        trace = os.path.join(work, "trace")
        open(trace, "w").close()
        port = _free_port()
        env = dict(os.environ, PYTHONPATH=TREE)
        proc = subprocess.Popen([sys.executable, "-c", BOOT, trace, TREE, "serve", root, "--bind", "127.0.0.1",
                                 "--port", str(port), "--workers", "1", "--allow-write",
                                 "--state-dir", os.path.join(work, "state")],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=work)
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit("zcopy serve did not start: " + proc.stderr.read().decode()[-2000:])
                time.sleep(0.2)
        time.sleep(1.0)
        fd = os.open(trace, os.O_WRONLY | os.O_APPEND)
        results = []
        for name, data in _requests():
            if name is None:            # a warm-up, not counted
                _exchange(port, data)
                time.sleep(0.1)
                continue
            os.write(fd, f"MARK {name}\n".encode())
            status = _exchange(port, data)
            time.sleep(0.3)
            os.write(fd, b"END\n")
            results.append((name, status))
        os.close(fd)
        windows: dict[str, list[tuple[str, str]]] = {}
        ups: dict[str, list[tuple[str, str]]] = {}
        current = None
        order = []
        with open(trace) as f:
            for line in f:
                parts = line.split()
                if parts[0] == "MARK":
                    current = line[5:].strip()
                    order.append(current)
                    windows[current] = []
                    continue
                if parts[0] == "END":
                    current = None
                    continue
                if current is None or int(parts[0]) == proc.pid:     # (the supervisor)
                    continue
                if parts[2].startswith("UP:"):
                    ups.setdefault(order[-1], []).append((parts[1], parts[2][3:]))
                    continue
                windows[order[-1]].append((parts[1], parts[2]))
        print("| request | status | steps | modules | returns | returns (server) | most (server) | calls back up |")
        print("|---|---|---|---|---|---|---|---|")
        out = {}
        for (key, status) in results:
            steps = [m for root, m in windows.get(key, []) if not root.startswith(_TIMERS)]
            walk = _collapse(steps)
            server = _collapse([m for m in walk if m.startswith("zcopy.server.")])
            up = [m for root, m in ups.get(key, []) if not root.startswith(_TIMERS)]
            out[key] = {"status": status, "walk": walk, "server_walk": server, "calls_back_up": up,
                        "roots": _collapse([r for r, m in windows.get(key, [])])}
            again = [m for i, m in enumerate(server) if m in server[:i]]
            most = f"{max(set(again), key=again.count).rsplit('.', 1)[-1]} {max(again.count(m) for m in again)}" \
                if again else "-"
            print(f"| {key} | {status} | {len(walk)} | {len(set(walk))} | {_count(walk)} | {_count(server)} | {most} "
                  f"| {len(up)} |")
        if args.json:
            print(json.dumps(out, indent=1))
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
