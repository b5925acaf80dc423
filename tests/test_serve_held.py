"""Small watched files held in memory (zcopy/server/held.py): one send of head
+ body, dropped with their entry by the file watch, capped in bytes; on real
files, the real inotify and a real server."""

from __future__ import annotations

import os
import socket

import pytest

from serverutil import Server, connect, read_response
from zcopy.server.files import OpenFileCache
from zcopy.server.held import HeldBodies
from zcopy.server.watch import FileWatch


@pytest.fixture
def cache(tmp_path):
    c = OpenFileCache(str(tmp_path), watch=FileWatch(), held=HeldBodies(max_size=4096, cap=6000))
    yield c
    c.close()


def test_a_small_watched_file_is_held_until_its_change_arrives(tmp_path, cache):
    (tmp_path / "a.txt").write_bytes(b"a" * 3000)
    entry = cache.lookup("/a.txt")
    assert cache.held.body(entry) == b"a" * 3000 and cache.held.used == 3000
    (tmp_path / "a.txt").write_bytes(b"b" * 3000)        # same size: only the event tells
    cache.apply_changes()
    assert entry.retired and entry.data is None and cache.held.used == 0
    fresh = cache.lookup("/a.txt")
    assert cache.held.body(fresh) == b"b" * 3000


def test_too_big_over_the_cap_or_unwatched_is_not_held(tmp_path, cache):
    (tmp_path / "big").write_bytes(b"x" * 5000)
    (tmp_path / "one").write_bytes(b"1" * 4000)
    (tmp_path / "two").write_bytes(b"2" * 4000)
    assert cache.held.body(cache.lookup("/big")) is None          # above max_size
    assert cache.held.body(cache.lookup("/one")) is not None
    assert cache.held.body(cache.lookup("/two")) is None          # 8000 would pass the cap
    assert cache.held.used == 4000
    os.link(tmp_path / "two", tmp_path / "two-link")              # a hard link: stat per request, never held
    unwatched = OpenFileCache(str(tmp_path), watch=None, held=HeldBodies(max_size=4096))
    try:
        assert unwatched.held.body(unwatched.lookup("/two")) is None
    finally:
        unwatched.close()


def test_the_entry_that_leaves_the_cache_gives_its_bytes_back(tmp_path, cache):
    (tmp_path / "a").write_bytes(b"a" * 100)
    entry = cache.lookup("/a")
    cache.held.body(entry)
    cache.invalidate()
    assert cache.held.used == 0 and entry.data is None


def _strace_sends(pid: int, port: int, path: str, n: int) -> str:
    import subprocess
    import time

    tracer = subprocess.Popen(["strace", "-f", "-e", "trace=sendto,sendfile,sendmsg,writev", "-p", str(pid)],
                              stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)             # strace attached (its own message comes first)
        with connect(port) as s:
            for _ in range(n):
                s.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
                status, _, body, _ = read_response(s)
                assert status == 200
    finally:
        time.sleep(0.3)
        tracer.terminate()
        _, err = tracer.communicate(timeout=10)
    return err


@pytest.mark.skipif(not os.path.exists("/usr/bin/strace"), reason="needs strace")
def test_serve_sends_a_small_file_in_one_send_and_the_new_bytes_after_a_change(tmp_path):
    (tmp_path / "small.txt").write_bytes(b"s" * 1024)
    (tmp_path / "large.bin").write_bytes(b"L" * 100_000)
    with Server(tmp_path, "--small-reply-max", "16KiB") as srv:
        worker = srv.worker_pids()[0]
        with connect(srv.port) as s:        # warm: the entry exists and is held
            for path in ("/small.txt", "/large.bin"):
                s.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
                assert read_response(s)[0] == 200
        err = _strace_sends(worker, srv.port, "/small.txt", 3)
        assert "sendfile" not in err and err.count("sendto(") >= 3, err
        err = _strace_sends(worker, srv.port, "/large.bin", 2)
        assert err.count("sendfile(") >= 2, err
        # Same size, new bytes: the watch drops the held copy before the next request is read.
        (tmp_path / "small.txt").write_bytes(b"t" * 1024)
        with connect(srv.port) as s:
            s.sendall(b"GET /small.txt HTTP/1.1\r\nHost: t\r\n\r\n")
            status, headers, body, _ = read_response(s)
        assert status == 200 and body == b"t" * 1024


def test_serve_small_reply_max_zero_sends_every_body_from_the_file(tmp_path):
    (tmp_path / "small.txt").write_bytes(b"s" * 1024)
    with Server(tmp_path, "--small-reply-max", "0") as srv:
        assert "head + sendfile" in srv.panel().get("small replies", "")
        with connect(srv.port) as s:
            s.sendall(b"GET /small.txt HTTP/1.1\r\nHost: t\r\n\r\n")
            assert read_response(s)[2] == b"s" * 1024


def _read_n(s: socket.socket, n: int) -> list[bytes]:
    bodies = []
    for _ in range(n):
        status, _, body, _ = read_response(s)
        assert status == 200
        bodies.append(body)
    return bodies


@pytest.mark.skipif(not os.path.exists("/usr/bin/strace"), reason="needs strace")
def test_pipelined_requests_are_answered_in_one_send(tmp_path):
    import subprocess
    import time

    (tmp_path / "a").write_bytes(b"a" * 1000)
    (tmp_path / "b").write_bytes(b"b" * 2000)
    with Server(tmp_path) as srv:
        worker = srv.worker_pids()[0]
        with connect(srv.port) as s:
            s.sendall(b"GET /a HTTP/1.1\r\nHost: t\r\n\r\nGET /b HTTP/1.1\r\nHost: t\r\n\r\n")
            _read_n(s, 2)                   # warm: both held
            tracer = subprocess.Popen(["strace", "-f", "-e", "trace=sendto,sendfile,sendmsg,writev",
                                       "-p", str(worker)], stderr=subprocess.PIPE, text=True)
            try:
                time.sleep(0.5)
                burst = b"".join(b"GET /%s HTTP/1.1\r\nHost: t\r\n\r\n" % name for name in [b"a", b"b"] * 4)
                s.sendall(burst)
                bodies = _read_n(s, 8)
            finally:
                time.sleep(0.3)
                tracer.terminate()
                _, err = tracer.communicate(timeout=10)
    assert bodies == [b"a" * 1000, b"b" * 2000] * 4        # in order
    sends = [line for line in err.splitlines() if line.lstrip("[pid 0123456789]").startswith("send")]
    assert len(sends) == 1, err


def test_pipelined_requests_then_half_close_get_every_reply(tmp_path):
    (tmp_path / "a").write_bytes(b"a" * 1000)
    with Server(tmp_path) as srv:
        with connect(srv.port) as s:
            s.sendall(b"GET /a HTTP/1.1\r\nHost: t\r\n\r\n" * 40)
            s.shutdown(socket.SHUT_WR)
            assert _bodies(s, 40) == [b"a" * 1000] * 40
            assert s.recv(1) == b""


def _bodies(s: socket.socket, n: int) -> list[bytes]:
    """``n`` replies' bodies, read as a stream (no MSG_PEEK: every byte is taken
    as it comes, so the server's window never waits on this reader)."""
    buf, bodies = b"", []
    while len(bodies) < n:
        chunk = s.recv(1 << 20)
        assert chunk, f"closed after {len(bodies)} replies"
        buf += chunk
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                break
            length = int(buf[:end].split(b"Content-Length: ")[1].split(b"\r\n")[0])
            if len(buf) < end + 4 + length:
                break
            assert buf.startswith(b"HTTP/1.1 200 ")
            bodies.append(buf[end + 4:end + 4 + length])
            buf = buf[end + 4 + length:]
    return bodies


def test_pipelined_replies_to_a_client_that_reads_late_all_arrive_in_order(tmp_path):
    """Thousands of pipelined requests written before any reply is read: the
    gathered replies fill the socket, wait owed (the server reads no further
    request meanwhile), and all arrive, in order, once the client reads."""
    import threading

    (tmp_path / "a").write_bytes(b"a" * 4000)
    (tmp_path / "b").write_bytes(b"b" * 100)
    n = 3000
    burst = b"".join(b"GET /%s HTTP/1.1\r\nHost: t\r\n\r\n" % (b"a" if i % 3 else b"b") for i in range(n))
    with Server(tmp_path) as srv:
        with connect(srv.port) as s:
            writer = threading.Thread(target=s.sendall, args=(burst,))
            writer.start()
            writer.join(2)                  # the replies pile up unread meanwhile
            bodies = _bodies(s, n)
            writer.join()
    assert bodies == [b"a" * 4000 if i % 3 else b"b" * 100 for i in range(n)]


def test_pipelined_replies_around_work_off_the_loop_keep_their_order(tmp_path):
    """A gathered reply, then a request answered off the loop (a folder listing: a
    Pending), then more: every reply arrives, in order, the first not held back."""
    (tmp_path / "a").write_bytes(b"a" * 500)
    folder = tmp_path / "d"
    folder.mkdir()
    for i in range(50):
        (folder / f"f{i}").write_bytes(b"x")
    with Server(tmp_path) as srv:
        with connect(srv.port) as s:
            s.sendall(b"GET /a HTTP/1.1\r\nHost: t\r\n\r\n"
                      b"HEAD /a HTTP/1.1\r\nHost: t\r\n\r\n"
                      b"GET /d/ HTTP/1.1\r\nHost: t\r\nAccept: application/json\r\n\r\n"
                      b"GET /a HTTP/1.1\r\nHost: t\r\n\r\n"
                      b"GET /missing HTTP/1.1\r\nHost: t\r\n\r\n"
                      b"GET /a HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            first = read_response(s)
            head = read_response(s, head_only=True)
            listing = read_response(s)
            rest = [read_response(s) for _ in range(3)]
            assert s.recv(1) == b""
    assert first[0] == 200 and first[2] == b"a" * 500
    assert head[0] == 200 and head[1]["content-length"] == "500" and head[2] == b""
    assert listing[0] == 200 and b"f49" in listing[2]
    assert [(r[0], r[2]) for r in rest] == [(200, b"a" * 500), (404, rest[1][2]), (200, b"a" * 500)]
