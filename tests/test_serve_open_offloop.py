"""Opening a file that is not cached yet happens off the event loop.

The walk, the openat of the file and of its precompressed siblings run on the
worker's executor (zcopy.server.files, ``OpenFileCache.resolve``). To see it
with a real server, strace delays the openat of one name (``-P NAME -e
inject=openat:delay_enter=...``: the kernel call really waits, in whichever
thread makes it) and the tests check which thread made it and that the loop
answers a cached file meanwhile.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import threading
import time

import pytest

from serverutil import Server, connect, get, read_response

pytestmark = pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace")

DELAY_US = 2_000_000        # how long strace holds the chosen openat


def _wait(cond, timeout: float = 15.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def _traced(pid: int) -> bool:
    with open(f"/proc/{pid}/status") as f:
        return any(line.startswith("TracerPid:") and line.split()[1] != "0" for line in f)


_OPENAT = {"x86_64": 257, "aarch64": 56}.get(os.uname().machine, 257)


def _stopped_threads(pid: int) -> list[int]:
    """The worker's threads the tracer holds in an openat (the delayed one; any
    thread stops briefly at each of its syscalls while strace is attached)."""
    out = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
            with open(f"/proc/{pid}/task/{tid}/syscall") as f:
                call = f.read().split()
        except OSError:
            continue
        if state in ("t", "T") and call and call[0] == str(_OPENAT):
            out.append(int(tid))
    return out


class _Delay:
    """strace attached to ``pid``, holding every openat of ``name`` for DELAY_US."""

    def __init__(self, pid: int, name: str) -> None:
        self.pid = pid
        self.proc = subprocess.Popen(
            ["strace", "-f", "-qq", "-P", name, "-e", "trace=openat",
             "-e", f"inject=openat:delay_enter={DELAY_US}", "-p", str(pid)],
            stderr=subprocess.PIPE, text=True)
        _wait(lambda: _traced(pid), what="strace to attach")
        self.lines: list[str] = []

    def stop(self) -> list[str]:
        self.proc.terminate()
        _, err = self.proc.communicate(timeout=20)
        self.lines = [line for line in err.splitlines() if "openat(" in line]
        return self.lines


def _tid(line: str, pid: int) -> int:
    m = re.match(r"\[pid\s+(\d+)\]", line)
    return int(m.group(1)) if m else pid       # strace omits [pid N] for the process's main thread


def _fds_to(pid: int, path: str) -> int:
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith(path):
                n += 1
        except OSError:
            pass
    return n


def test_an_uncached_file_is_opened_off_the_loop_once_for_concurrent_requests(tmp_path):
    hot = os.urandom(1024)
    slow = os.urandom(50_000)
    (tmp_path / "hot.bin").write_bytes(hot)
    (tmp_path / "slow.bin").write_bytes(slow)
    with Server(tmp_path, "--workers", "1") as srv:
        worker = srv.worker_pids()[0]
        assert get(srv.port, "/hot.bin")[2] == hot          # cached (and watched) from now on
        delay = _Delay(worker, "slow.bin")
        try:
            results: list = []

            def fetch() -> None:
                status, _, body = get(srv.port, "/slow.bin")
                results.append((status, body))
            clients = [threading.Thread(target=fetch) for _ in range(4)]
            for c in clients:
                c.start()
            # The open is held in some thread of the worker...
            _wait(lambda: _stopped_threads(worker), what="the open to be held")
            # ... and the loop answers a cached file on another connection meanwhile.
            with connect(srv.port) as s:
                s.sendall(b"GET /hot.bin HTTP/1.1\r\nHost: t\r\n\r\n")
                status, _, body, _ = read_response(s)
            assert (status, body) == (200, hot)
            assert results == []                            # the slow ones still wait
            for c in clients:
                c.join(timeout=30)
        finally:
            lines = delay.stop()
        assert results == [(200, slow)] * 4
    # One open for the four requests, made by a thread that is not the loop.
    assert len(lines) == 1, lines
    assert _tid(lines[0], worker) != worker, lines


def test_a_folder_index_is_opened_off_the_loop(tmp_path):
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "index.html").write_text("<h1>home</h1>")
    (tmp_path / "hot.txt").write_text("hot")
    with Server(tmp_path, "--workers", "1") as srv:
        worker = srv.worker_pids()[0]
        assert get(srv.port, "/hot.txt")[2] == b"hot"
        delay = _Delay(worker, "index.html")
        try:
            results: list = []
            client = threading.Thread(target=lambda: results.append(get(srv.port, "/site/")))
            client.start()
            _wait(lambda: _stopped_threads(worker), what="the index's open to be held")
            assert get(srv.port, "/hot.txt")[2] == b"hot"
            assert results == []
            client.join(timeout=30)
        finally:
            lines = delay.stop()
        assert results[0][0] == 200 and results[0][2] == b"<h1>home</h1>"
    assert lines and all(_tid(line, worker) != worker for line in lines), lines


def test_a_client_gone_while_its_open_is_held_leaks_no_fd(tmp_path):
    (tmp_path / "gone.bin").write_bytes(b"x" * 10_000)
    with Server(tmp_path, "--workers", "1") as srv:
        worker = srv.worker_pids()[0]
        path = str(tmp_path / "gone.bin")
        delay = _Delay(worker, "gone.bin")
        try:
            s = socket.create_connection(("127.0.0.1", srv.port))
            s.sendall(b"GET /gone.bin HTTP/1.1\r\nHost: t\r\n\r\n")
            _wait(lambda: _stopped_threads(worker), what="the open to be held")
            s.close()                                   # the client leaves before the open ends
            _wait(lambda: not _stopped_threads(worker), what="the open to end")
        finally:
            delay.stop()
        # The file's fd is the cache's at most (one), and goes when the file does.
        _wait(lambda: _fds_to(worker, path) <= 1, what="at most the cache's fd")
        assert get(srv.port, "/gone.bin")[0] == 200     # the server carries on, from that entry
        os.unlink(path)
        _wait(lambda: _fds_to(worker, path) == 0, what="the fd to close once the file is gone")
        assert get(srv.port, "/gone.bin")[0] == 404


def test_fifos_are_refused_and_never_hold_the_loop(tmp_path):
    """A FIFO (opening one for reading waits for a writer) is not a file to serve:
    403, never an open; a FIFO named index.html leaves its folder listed (without it:
    listings show files and folders only)."""
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "dir").mkdir()
    os.mkfifo(tmp_path / "dir" / "index.html")
    (tmp_path / "hot.txt").write_text("hot")
    with Server(tmp_path, "--workers", "1") as srv:
        assert get(srv.port, "/pipe")[0] == 403
        status, _, body = get(srv.port, "/dir/")
        assert status == 200 and b'id="total-line"' in body     # the listing, not the FIFO
        assert get(srv.port, "/hot.txt")[2] == b"hot"
