"""Opening a file that is not cached yet happens off the event loop.

The walk, the openat of the file and of its precompressed siblings run on the
worker's executor (zcopy.server.files, ``OpenFileCache.resolve``). To see it
with a real server, strace delays the openat of one name (``-P NAME -e
inject=openat:delay_enter=...``: the kernel call really waits, in whichever
thread makes it) and the tests check which thread made it and that the loop
answers a cached file meanwhile.
"""

from __future__ import annotations

import json
import os
import resource
import re
import shutil
import socket
import subprocess
import threading

import pytest

from serverutil import Server, connect, get, read_response, wait_for

pytestmark = pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace")

DELAY_US = 2_000_000        # how long strace holds the chosen openat


def _traced(pid: int) -> bool:
    """Every thread of ``pid`` traced (strace attaches them one by one: a thread not yet
    attached makes its syscalls unheld; the process's own status speaks for its first only)."""
    def one(tid: str) -> bool:
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                return any(line.startswith("TracerPid:") and line.split()[1] != "0" for line in f)
        except OSError:         # the thread ended meanwhile
            return True
    return all(one(tid) for tid in os.listdir(f"/proc/{pid}/task"))


_OPENAT = {"x86_64": 257, "aarch64": 56}.get(os.uname().machine, 257)
_CLOSE = {"x86_64": 3, "aarch64": 57}.get(os.uname().machine, 3)
_FSTATAT = {"x86_64": 262, "aarch64": 79}.get(os.uname().machine, 262)


def _stopped_threads(pid: int, call_nr: int = _OPENAT) -> list[int]:
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
        if state in ("t", "T") and call and call[0] == str(call_nr):
            out.append(int(tid))
    return out



def _while_held(srv, worker: int, request, what: str = "the open to be held", call_nr: int = _OPENAT):
    """``request()`` on a thread while strace holds the worker's open (or ``call_nr``): the loop
    must answer the hot file meanwhile and the request must still be waiting; returns what
    ``request`` returned."""
    results: list = []
    client = threading.Thread(target=lambda: results.append(request()))
    client.start()
    wait_for(lambda: _stopped_threads(worker, call_nr), what=what)
    assert get(srv.port, "/hot.txt")[2] == b"hot"       # the loop answers meanwhile
    assert results == []
    client.join(timeout=30)
    return results[0]


class _Delay:
    """strace attached to ``pid``, holding every ``call`` (openat; close) of ``name`` for DELAY_US."""

    def __init__(self, pid: int, name: str, call: str = "openat") -> None:
        self.pid = pid
        self.call = call
        self.proc = subprocess.Popen(
            ["strace", "-f", "-qq", "-P", name, "-e", f"trace={call}",
             "-e", f"inject={call}:delay_enter={DELAY_US}", "-p", str(pid)],
            stderr=subprocess.PIPE, text=True)
        wait_for(lambda: _traced(pid), what="strace to attach")
        self.lines: list[str] = []

    def stop(self) -> list[str]:
        self.proc.terminate()
        _, err = self.proc.communicate(timeout=20)
        self.lines = [line for line in err.splitlines() if f"{self.call}(" in line]
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
            wait_for(lambda: _stopped_threads(worker), what="the open to be held")
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
            results = [_while_held(srv, worker, lambda: get(srv.port, "/site/"), "the index's open to be held")]
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
            wait_for(lambda: _stopped_threads(worker), what="the open to be held")
            s.close()                                   # the client leaves before the open ends
            wait_for(lambda: not _stopped_threads(worker), what="the open to end")
        finally:
            delay.stop()
        # The file's fd is the cache's at most (one), and goes when the file does.
        wait_for(lambda: _fds_to(worker, path) <= 1, what="at most the cache's fd")
        assert get(srv.port, "/gone.bin")[0] == 200     # the server carries on, from that entry
        os.unlink(path)
        wait_for(lambda: _fds_to(worker, path) == 0, what="the fd to close once the file is gone")
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


# A content digest finishes on the executor whenever the hash is done, and the
# file's entry is then rebuilt on the loop with the new ETag. With the worker
# out of fds at that moment, the rebuild's dup raised out of the executor's
# callback and ended the worker (every connection on it closed without a
# reply); and a dup that succeeded took the one fd left for the next accept,
# which then waited for good. strace holds the digest's close of its own dup
# (``close`` of the file: once its folder is watched, only the digest job
# closes one while the entry lives) while the test takes the worker's spare
# fds away.


def _digest_closing(pid: int) -> list[int]:
    """Threads held in the close of the digest's dup: not the loop (the main thread)."""
    return [tid for tid in _stopped_threads(pid, _CLOSE) if tid != pid]


def _lowest_free_fd(pid: int) -> int:
    used = {int(fd) for fd in os.listdir(f"/proc/{pid}/fd")}
    return min(n for n in range(len(used) + 1) if n not in used)


def test_a_digest_finishing_out_of_fds_while_its_file_is_sent_keeps_the_worker(tmp_path):
    """The rebuild must dup the fds a transfer uses; out of fds it drops the entry instead."""
    data = os.urandom(16 << 20)     # more than the socket buffers hold: the transfer waits for the reader
    (tmp_path / "big.bin").write_bytes(data)
    (tmp_path / "w.txt").write_text("w")
    with Server(tmp_path, "--workers", "1") as srv:
        worker = srv.worker_pids()[0]
        assert get(srv.port, "/w.txt")[2] == b"w"      # the folder is watched: big.bin is opened once
        delay = _Delay(worker, str(tmp_path / "big.bin"), call="close")    # (fd calls: the whole path)
        try:
            with connect(srv.port) as s:
                s.sendall(b"GET /big.bin HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                wait_for(lambda: _digest_closing(worker), what="the digest's close to be held")
                soft, hard = resource.prlimit(worker, resource.RLIMIT_NOFILE)
                resource.prlimit(worker, resource.RLIMIT_NOFILE, (_lowest_free_fd(worker), hard))  # none to spare
                try:
                    wait_for(lambda: not _digest_closing(worker), what="the close to go on")
                    status, headers, body, _ = read_response(s)     # the loop ran the rebuild meanwhile
                    assert (status, len(body), body == data) == (200, len(data), True)
                    assert srv.worker_pids() == [worker]            # the same worker, alive
                finally:
                    resource.prlimit(worker, resource.RLIMIT_NOFILE, (soft, hard))
        finally:
            delay.stop()
        status, headers, body = get(srv.port, "/big.bin")
        assert status == 200 and body == data and headers["etag"].startswith('"z1-')
        assert srv.worker_pids() == [worker]


def _fds_of(pid: int, path: str) -> list[int]:
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == path:
                out.append(int(fd))
        except OSError:
            pass
    return sorted(out)


def test_a_digest_finishing_takes_no_fd(tmp_path):
    """No transfer uses the entry: the rebuilt entry takes its fd over. (A dup
    took the lowest free fd, at whatever moment the hash ended: the one a
    test had left for the next client's accept, which then waited for good.)"""
    data = os.urandom(64 << 10)
    path = str(tmp_path / "f.bin")
    (tmp_path / "f.bin").write_bytes(data)
    (tmp_path / "w.txt").write_text("w")
    with Server(tmp_path, "--workers", "1") as srv:
        worker = srv.worker_pids()[0]
        assert get(srv.port, "/w.txt")[2] == b"w"      # the folder is watched: f.bin is opened once
        delay = _Delay(worker, path, call="close")
        try:
            status, headers, body = get(srv.port, "/f.bin")
            assert (status, body) == (200, data) and not headers["etag"].startswith('"z1-')
            wait_for(lambda: _digest_closing(worker), what="the digest's close to be held")
            entry_fd, dup = _fds_of(worker, path)      # the entry's, opened first; the digest's
            wait_for(lambda: not _digest_closing(worker), what="the close to go on")

            def content_etag() -> bool:
                status, headers, body = get(srv.port, "/f.bin")
                assert (status, body) == (200, data)
                return headers["etag"].startswith('"z1-')
            wait_for(content_etag, what="the rebuilt entry's content ETag")
        finally:
            delay.stop()
        assert _fds_of(worker, path) == [entry_fd]
        assert srv.worker_pids() == [worker]


def test_minting_a_share_link_for_an_uncached_file_leaves_the_loop_free(tmp_path):
    """POST /.zcopy/share needs the entry of the file it names (a file link, or a
    folder's): for one not cached it is walked and opened off the loop, as a GET's."""
    (tmp_path / "slow.bin").write_bytes(b"s" * 5000)
    (tmp_path / "hot.txt").write_text("hot")
    with Server(tmp_path, "--workers", "1", "--allow-write") as srv:
        worker = srv.worker_pids()[0]
        assert get(srv.port, "/hot.txt")[2] == b"hot"
        delay = _Delay(worker, "slow.bin")
        try:
            results = [_while_held(srv, worker, lambda: get(srv.port, "/.zcopy/share?path=/slow.bin", method="POST"))]
        finally:
            lines = delay.stop()
        status, _, body = results[0]
        assert status == 201, body
        link = json.loads(body)["url"]
        assert link.startswith("/slow.bin?") and get(srv.port, link)[2] == b"s" * 5000
    assert lines and all(_tid(line, worker) != worker for line in lines), lines


def test_a_changed_precompressed_sibling_is_opened_again_off_the_loop(tmp_path):
    """A file with another hard link is not watched (a write through the other name
    raises no event here): each request stats it, and its .gz sibling when that is
    what it would send. A sibling that changed makes the file be walked and opened
    again, off the loop."""
    d = tmp_path / "d"          # a folder of its own: no watched file in it, so no watch on it
    d.mkdir()
    (d / "page.txt").write_text("plain " * 100)
    os.link(d / "page.txt", tmp_path / "other-name.txt")        # nlink 2: not watched
    (d / "page.txt.gz").write_bytes(b"old gz")
    (tmp_path / "hot.txt").write_text("hot")
    gz = {"Accept-Encoding": "gzip"}
    with Server(tmp_path, "--workers", "1") as srv:
        worker = srv.worker_pids()[0]
        assert get(srv.port, "/hot.txt")[2] == b"hot"
        delay = _Delay(worker, "page.txt.gz")
        try:
            assert get(srv.port, "/d/page.txt", gz)[2] == b"old gz"    # (its open held too: cached after)
            (d / "new.gz").write_bytes(b"new gz")
            os.rename(d / "new.gz", d / "page.txt.gz")
            results = [_while_held(srv, worker, lambda: get(srv.port, "/d/page.txt", gz), "the sibling's open to be held")]
        finally:
            lines = delay.stop()
        assert results[0][0] == 200 and results[0][2] == b"new gz"
    assert len(lines) >= 2 and all(_tid(line, worker) != worker for line in lines), lines


def test_an_if_header_etag_of_an_uncached_file_is_looked_up_off_the_loop(tmp_path):
    """A write whose If header compares ETags (WebDAV, RFC 4918 10.4) needs the
    entries of the URLs it names: found off the loop when not cached."""
    (tmp_path / "doc.txt").write_text("v1")
    (tmp_path / "hot.txt").write_text("hot")
    with Server(tmp_path, "--workers", "1", "--allow-write", "--no-fsync") as srv:
        worker = srv.worker_pids()[0]
        assert get(srv.port, "/hot.txt")[2] == b"hot"
        delay = _Delay(worker, "doc.txt")
        try:
            def put() -> int:
                with connect(srv.port) as s:
                    s.sendall(b'PUT /doc.txt HTTP/1.1\r\nHost: t\r\nIf: (["not-its-etag"])\r\n'
                              b"Content-Length: 2\r\nConnection: close\r\n\r\nv2")
                    return read_response(s)[0]
            results = [_while_held(srv, worker, put)]
        finally:
            lines = delay.stop()
        assert results == [412]
        etag = get(srv.port, "/doc.txt")[1]["etag"]
        with connect(srv.port) as s:                             # its own ETag: the condition holds
            s.sendall(b"PUT /doc.txt HTTP/1.1\r\nHost: t\r\nIf: ([" + etag.encode() + b"])\r\n"
                      b"Content-Length: 2\r\nConnection: close\r\n\r\nv2")
            assert read_response(s)[0] == 204
        assert (tmp_path / "doc.txt").read_text() == "v2"
    assert lines and all(_tid(line, worker) != worker for line in lines), lines


def test_a_resumable_uploads_if_check_at_its_end_runs_off_the_loop(tmp_path):
    """The If header of the append that completes a resumable upload is checked again before its
    body is read and at the commit (zcopy.server.uploads, ``Dav.check_off_loop``), long after the
    request's own lookups: the ETag its condition names is looked up off the loop (here the
    target does not exist yet: the fstatat of its name is held), the loop answering meanwhile."""
    import base64

    from resumableutil import exchange

    root = tmp_path / "root"
    (root / "in").mkdir(parents=True)
    (root / "hot.txt").write_text("hot")
    tus = "Tus-Resumable: 1.0.0\r\n"
    with Server(root, "--workers", "1", "--allow-write", "--state-dir", str(tmp_path / "state")) as srv:
        worker = srv.worker_pids()[0]
        assert get(srv.port, "/hot.txt")[2] == b"hot"
        (status, headers, _), = exchange(
            srv.port, f"POST /in/ HTTP/1.1\r\nHost: t\r\n{tus}Upload-Length: 4\r\n"
                      f"Upload-Metadata: filename {base64.b64encode(b'up.txt').decode()}\r\nContent-Length: 0\r\n")
        assert status == 201
        location = headers["location"]
        delay = _Delay(worker, "up.txt", "newfstatat")
        try:
            # (Not ["nope"]): holds while the target's ETag is not "nope", which needs its lookup
            status = _while_held(srv, worker, lambda: exchange(
                srv.port, f"PATCH {location} HTTP/1.1\r\nHost: t\r\n{tus}Upload-Offset: 0\r\n"
                          f"Content-Type: application/offset+octet-stream\r\nContent-Length: 4\r\n"
                          f'If: (Not ["nope"])\r\n', b"abcd")[-1][0],
                "the target's fstatat to be held", _FSTATAT)
        finally:
            lines = delay.stop()
        assert status == 204
        assert (root / "in" / "up.txt").read_bytes() == b"abcd"
    assert lines and all(_tid(line, worker) != worker for line in lines), lines
