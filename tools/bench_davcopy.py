#!/usr/bin/env python3
"""WebDAV COPY of a big file: does any byte go through user space?

Makes a SIZE-byte file (default 1 GiB) in a fresh folder (`--dir`, default
/var/tmp: a real disk), starts `zcopy serve --allow-write` (one worker), waits
for its worker, and for R rounds sends `COPY /big.bin` with `Destination:
/copy-N.bin`, while `strace -f -e trace=copy_file_range,read,write,pread64,
pwrite64,sendfile,splice` follows the worker. Per round it prints the wall
time, the worker's user and system CPU for the COPY (/proc/PID/stat, before
and after; 10 ms ticks), the bytes moved by copy_file_range and the largest
single read/write the worker made (the bar: user CPU under 0.05 s, every byte
by copy_file_range). Each copy is checked (size, sampled bytes) and removed.

    python tools/bench_davcopy.py                       # 1 GiB, 3 rounds
    python tools/bench_davcopy.py --size 64MiB --rounds 1

Needs strace (Debian: apt-get install strace). Every process it starts and
every file it makes are removed on exit.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_serve import cpu_times, free_port, proc_tree, wait_port  # noqa: E402
from zcopy.units import format_size, parse_size  # noqa: E402

TOKEN = "bench-davcopy"


def make_file(path: str, size: int) -> None:
    block = os.urandom(1 << 20)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, len(block))
            f.write(block[:n])
            left -= n


def same_samples(a: str, b: str, size: int) -> bool:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        if os.fstat(fb.fileno()).st_size != size:
            return False
        for at in (0, size // 3, size // 2, max(0, size - 4096)):
            if os.pread(fa.fileno(), 4096, at) != os.pread(fb.fileno(), 4096, at):
                return False
    return True


def copy(port: int, dest: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        conn.request("COPY", "/big.bin", headers={"Destination": f"http://127.0.0.1:{port}{dest}",
                                                  "Authorization": f"Bearer {TOKEN}"})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def traced_bytes(log: str) -> tuple[int, int]:
    """(bytes moved by copy_file_range, the largest read/write/pread/pwrite/sendfile/splice result)."""
    moved = largest = 0
    for line in open(log, errors="replace"):
        # a whole call, or the end of one another thread's call interrupted in the log ("resumed")
        m = re.search(r"<\.\.\. (\w+) resumed>.*=\s+(\d+)", line) or re.search(r"(\w+)\(.*\)\s+=\s+(\d+)", line)
        if not m:
            continue
        name, n = m.group(1), int(m.group(2))
        if name == "copy_file_range":
            moved += n
        else:
            largest = max(largest, n)
    return moved, largest


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=parse_size, default=parse_size("1GiB"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", default="/var/tmp", help="where the files go (a real disk, not tmpfs)")
    args = ap.parse_args()
    if args.rounds < 1 or args.size < 1:
        ap.error("--rounds and --size must be positive")
    if shutil.which("strace") is None:
        sys.exit("bench_davcopy: needs strace (Debian: apt-get install strace)")
    tmp = tempfile.mkdtemp(prefix="zcopy-bench-davcopy-", dir=args.dir)
    server = None
    try:
        root = os.path.join(tmp, "root")
        os.mkdir(root)
        src = os.path.join(root, "big.bin")
        make_file(src, args.size)
        port = free_port()
        server = subprocess.Popen([sys.executable, "-m", "zcopy", "serve", root, "--port", str(port), "--workers", "1",
                                   "--allow-write", "--token", TOKEN],
                                  cwd=os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        wait_port(port)
        deadline = time.monotonic() + 10
        while len(proc_tree(server.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        workers = proc_tree(server.pid)[1:]
        if len(workers) != 1:
            raise RuntimeError(f"expected one worker, found {workers}")
        worker = workers[0]
        print(f"COPY of {format_size(args.size)} in {args.dir}, worker {worker}")
        print(f"{'round':>5} {'status':>6} {'wall s':>7} {'user s':>7} {'sys s':>7} {'by copy_file_range':>19} "
              f"{'largest read/write':>18}")
        for r in range(args.rounds):
            log = os.path.join(tmp, f"strace-{r}.log")
            trace = subprocess.Popen(["strace", "-f", "-qq", "-p", str(worker), "-o", log, "-e",
                                      "trace=copy_file_range,read,write,pread64,pwrite64,sendfile,splice"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.0)                 # strace attached to every thread
            user0, sys0 = cpu_times([worker])
            t0 = time.perf_counter()
            status = copy(port, f"/copy-{r}.bin")
            wall = time.perf_counter() - t0
            user1, sys1 = cpu_times([worker])
            trace.terminate()
            trace.wait(10)
            moved, largest = traced_bytes(log)
            dest = os.path.join(root, f"copy-{r}.bin")
            ok = status in (201, 204) and same_samples(src, dest, args.size)
            print(f"{r + 1:>5} {status:>6} {wall:7.2f} {user1 - user0:7.2f} {sys1 - sys0:7.2f} {moved:>19} "
                  f"{largest:>18}{'' if ok else '  COPY WRONG'}")
            with contextlib.suppress(FileNotFoundError):
                os.unlink(dest)
        return 0
    finally:
        if server is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, 15)
            server.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
