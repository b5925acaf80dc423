"""Cold-cache serving end to end: a real worker loop (forked, so the test
can hand its prefetch pool a slow fetch function and read its counters at
exit), real sockets, files made cold with posix_fadvise(DONTNEED); and the
real `zcopy serve` process for the thread and mapping leak checks."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import threading
import time

import pytest

from serverutil import Server, connect, get, read_response, sockets_of
from test_prefetch_pool import SlowFetch, evict, make_cold, wait_for

from zcopy.server.config import ServeConfig

MiB = 1 << 20


@contextlib.contextmanager
def forked_worker(root, *, slow: float = 0.0, pool_args: dict | None = None, **cfg):
    """Run one zcopy worker loop in a child process on 127.0.0.1; yields
    (port, result) where result() stops the worker and returns what it
    reported at exit: the prefetch snapshot and its live prefetch threads."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    port = listener.getsockname()[1]
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:                                     # the child: never returns
        code = 1
        try:
            os.close(r)
            os.environ["ZCOPY_STATS"] = "off"
            from zcopy.server.prefetch import Prefetcher
            from zcopy.server.worker import Worker

            worker = Worker(ServeConfig(root=str(root), **cfg), listener)
            # No content digests here: hashing reads a whole file on an executor thread the first time it
            # is asked for, which makes its cold windows resident behind the prefetcher's back (seen: the
            # far part of a multipart reply found hot, one park instead of two, under load).
            worker.cache.digests = None
            if slow or pool_args:
                worker.prefetch.close()
                fetch = SlowFetch(slow) if slow else None
                worker.prefetch = Prefetcher(step=worker.config.budget, fetch=fetch, **(pool_args or {}))
            code = worker.run()
            report = {"prefetch": worker.prefetch.snapshot() if worker.prefetch else None,
                      "errors": dict(worker.stats.errors),
                      "threads": [t.name for t in threading.enumerate()],
                      "efd_closed": worker.prefetch is None or worker.prefetch.fileno() == -1}
            os.write(w, json.dumps(report).encode())
        finally:
            os._exit(code)
    os.close(w)
    listener.close()
    done = {}

    def result() -> dict:   # result.pid: the worker's pid
        if not done:
            os.kill(pid, signal.SIGTERM)
            data = b""
            while chunk := os.read(r, 65536):
                data += chunk
            _, status = os.waitpid(pid, 0)
            done.update(json.loads(data), exit=os.waitstatus_to_exitcode(status))
        return done

    result.pid = pid
    try:
        yield port, result
    finally:
        if not done:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(r)


def arrived(sock: socket.socket) -> bytes:
    """What has arrived on ``sock`` so far, left unread. Without waiting: on a
    socket with a timeout, recv (even with MSG_DONTWAIT) first polls for data."""
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        return sock.recv(1 << 20, socket.MSG_PEEK)
    except BlockingIOError:
        return b""
    finally:
        sock.settimeout(timeout)


def test_a_cold_file_is_parked_then_served_with_correct_bytes(tmp_path):
    data = make_cold(tmp_path / "cold.bin", 18 * MiB + 123)
    with forked_worker(tmp_path) as (port, result):
        status, _, body = get(port, "/cold.bin")
        assert status == 200 and body == data
        with open(tmp_path / "cold.bin", "rb") as f:
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        status, _, body = get(port, "/cold.bin", {"Range": "bytes=9000000-"})
        assert status == 206 and body == data[9000000:]
        report = result()
    assert report["exit"] == 0
    snap = report["prefetch"]
    assert snap["parks"] >= 2                      # each cold request waited for its first window
    # The first window of each (5 windows, then 3) was read by the pool; the windows after one the
    # pool read are read by it too, unless the kernel's readahead of that read has brought them in.
    assert snap["windows_prefetched"] >= 2
    assert snap["parked_seconds"] > 0
    assert snap["pool_size"] == 0 and report["efd_closed"]
    assert "zcopy-prefetch" not in report["threads"]


@pytest.mark.parametrize("engine", ["splice", "mmap_send", "read_send"])
def test_every_engine_waits_for_cold_windows(tmp_path, engine):
    data = make_cold(tmp_path / "cold.bin", 9 * MiB + 1)
    with forked_worker(tmp_path, engine=engine) as (port, result):
        status, _, body = get(port, "/cold.bin")
        assert status == 200 and body == data
        report = result()
    assert report["prefetch"]["parks"] >= 1 and report["prefetch"]["windows_prefetched"] >= 1


def test_a_hot_request_is_answered_while_a_cold_window_is_being_read(tmp_path):
    data = make_cold(tmp_path / "cold.bin", 8 * MiB)
    (tmp_path / "hot.txt").write_bytes(b"h" * 1024)
    with forked_worker(tmp_path, slow=1.0) as (port, result):
        assert get(port, "/hot.txt")[2] == b"h" * 1024            # warm: now in cache and file cache
        cold = connect(port)
        cold.sendall(b"GET /cold.bin HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        time.sleep(0.2)                                           # the cold window is being read (1 s)
        t0 = time.monotonic()
        for _ in range(5):
            status, _, body = get(port, "/hot.txt")
            assert status == 200 and body == b"h" * 1024
        hot_done = time.monotonic()
        # The cold transfer has not delivered its body yet: the hot answers
        # came while its window was still being read, not after it.
        head, _, body_bytes = arrived(cold).partition(b"\r\n\r\n")
        assert not body_bytes, "cold body bytes arrived before its window was read"
        status, _, body, _ = read_response(cold)
        cold_done = time.monotonic()
        cold.close()
        assert status == 200 and body == data
        assert hot_done < cold_done
        report = result()
    assert report["prefetch"]["parks"] >= 1 and report["prefetch"]["parked_seconds"] >= 0.5
    assert hot_done - t0 < report["prefetch"]["parked_seconds"]


def test_concurrent_cold_clients_grow_the_pool(tmp_path):
    blobs = {f"c{i}.bin": make_cold(tmp_path / f"c{i}.bin", 4 * MiB) for i in range(4)}
    with forked_worker(tmp_path, slow=0.5, pool_args={"max_threads": 4}) as (port, result):
        socks = []
        for name in blobs:
            s = connect(port)
            s.sendall(f"GET /{name} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
            socks.append((name, s))
        for name, s in socks:
            with s:
                status, _, body, _ = read_response(s)
                assert status == 200 and body == blobs[name]
        report = result()
    assert report["prefetch"]["pool_peak"] >= 2      # the four cold reads did not queue behind one thread
    assert report["prefetch"]["pool_size"] == 0


def _worker_view(pid: int, path: str) -> tuple[int, int]:
    """(threads, mappings of ``path``) of a live process."""
    threads = len(os.listdir(f"/proc/{pid}/task"))
    with open(f"/proc/{pid}/maps") as f:
        maps = sum(1 for line in f if line.rstrip().endswith(path))
    return threads, maps


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["sendfile", "mmap"])
def test_no_thread_or_mapping_leaks_after_many_cold_transfers(tmp_path, engine):
    path = str(tmp_path / "f.bin")
    data = make_cold(path, 6 * MiB)
    digest = hashlib.sha256(data).digest()
    fd = os.open(path, os.O_RDONLY)
    try:
        with Server(tmp_path, "--prefetch", "on", "--engine", engine) as s:
            assert b"prefetch" in s.stderr
            (pid,) = s.worker_pids()
            base_threads, _ = _worker_view(pid, path)
            most = 0
            for i in range(30):
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                start = (i * 1234567) % (5 * MiB)
                status, _, body = get(s.port, "/f.bin", {"Range": f"bytes={start}-"})
                assert status == 206 and body == data[start:]
                # every window unmapped once sent (the last one a moment after
                # its bytes reach us: the worker unmaps right after the send)
                assert wait_for(lambda: _worker_view(pid, path)[1] == 0)
                most = max(most, _worker_view(pid, path)[0])
            assert hashlib.sha256(get(s.port, "/f.bin")[2]).digest() == digest
            threads, maps = _worker_view(pid, path)
            assert maps == 0
            assert most <= base_threads + 8           # bounded by the pool's maximum
            assert s.stop() == 0
    finally:
        os.close(fd)


def test_one_resident_range_does_not_vouch_for_the_rest_of_the_file(tmp_path):
    # A small file (one window) whose first page is hot and the rest cold: a
    # resident range at its start must not let a later range skip the check.
    data = make_cold(tmp_path / "small.bin", 4 * MiB)
    with open(tmp_path / "small.bin", "rb") as f:
        os.pread(f.fileno(), 100, 0)
        evict(f.fileno(), 4096, 4 * MiB)      # drop the kernel's readahead, once it has landed
    with forked_worker(tmp_path) as (port, result):
        status, _, body = get(port, "/small.bin", {"Range": "bytes=0-99"})
        assert status == 206 and body == data[:100]
        status, _, body = get(port, "/small.bin", {"Range": "bytes=3000000-3000099"})
        assert status == 206 and body == data[3000000:3000100]
        report = result()
    assert report["prefetch"]["parks"] == 1 and report["prefetch"]["windows_prefetched"] == 1


def test_multipart_parts_of_a_cold_file_each_wait_for_their_window(tmp_path):
    # Far apart: beyond what the kernel reads ahead of the first window (a
    # disk's read_ahead_kb may be 8 MiB: 9 MB was sometimes read already).
    far = 30_000_000
    data = make_cold(tmp_path / "cold.bin", 32 * MiB)
    with forked_worker(tmp_path) as (port, result):
        status, headers, body = get(port, "/cold.bin", {"Range": f"bytes=0-99,{far}-{far + 99}"})
        assert status == 206 and headers["content-type"].startswith("multipart/byteranges")
        assert data[:100] in body and data[far:far + 100] in body
        report = result()
    assert report["prefetch"]["parks"] == 2, report     # two cold windows, far apart: one park each


def _fds_to(pid: int, target: str) -> int:
    n = 0
    for name in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            n += os.readlink(f"/proc/{pid}/fd/{name}") == target
    return n


def test_a_parked_client_that_disconnects_is_cleaned_up(tmp_path):
    path = str(tmp_path / "cold.bin")
    data = make_cold(path, 8 * MiB)
    with forked_worker(tmp_path, slow=0.5) as (port, result):
        pid = result.pid
        listening = len(sockets_of(pid))
        cold = connect(port)
        cold.sendall(b"GET /cold.bin HTTP/1.1\r\nHost: t\r\n\r\n")
        assert cold.recv(4096).startswith(b"HTTP/1.1 200")    # head sent, body parked
        assert len(sockets_of(pid)) == listening + 1
        cold.close()                                          # gone while its window is read
        # Once the window arrives the send fails and the connection is closed:
        # no socket, and no job's dup of the file left (the file cache keeps one fd).
        assert wait_for(lambda: len(sockets_of(pid)) == listening and _fds_to(pid, path) <= 1)
        status, _, body = get(port, "/cold.bin")              # and the worker serves on
        assert status == 200 and body == data
        report = result()
    assert report["exit"] == 0 and report["prefetch"]["pool_size"] == 0
    assert "zcopy-prefetch" not in report["threads"]
    assert report["errors"].get("client_reset", 0) + report["errors"].get("EPIPE", 0) >= 1


def test_a_file_truncated_while_parked_ends_that_transfer_only(tmp_path):
    path = tmp_path / "cold.bin"
    make_cold(path, 8 * MiB)
    with forked_worker(tmp_path, slow=0.5) as (port, result):
        cold = connect(port)
        cold.sendall(b"GET /cold.bin HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        got = b""
        while b"\r\n\r\n" not in got:                          # head sent, body parked (0.5 s)
            got += cold.recv(65536)
        os.truncate(path, MiB)
        while chunk := cold.recv(1 << 20):
            got += chunk
        cold.close()
        head, _, body = got.partition(b"\r\n\r\n")
        assert b"Content-Length: 8388608" in head and len(body) < 8 * MiB   # cut, not padded
        status, _, body = get(port, "/cold.bin")               # the new size, served whole
        assert status == 200 and len(body) == MiB
        report = result()
    assert report["errors"].get("file_changed") == 1
