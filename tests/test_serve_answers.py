"""The responder's answer memo (a repeated plain GET/HEAD of a watched file
gets the Reply built for the first one) and the hot path around it: real
files, the real kernel's inotify, a real server where a client matters."""

from __future__ import annotations

import gzip
import os
import socket
import time

import pytest

from serverutil import Server, connect, get, read_response
from zcopy import http
from zcopy.server.files import RESOLVE_TTL, OpenFileCache
from zcopy.server.responder import Responder
from zcopy.server.stats import WorkerStats
from zcopy.server.watch import FileWatch

HEAD = b"GET /f.txt HTTP/1.1\r\nHost: t\r\n\r\n"


@pytest.fixture
def cache(tmp_path):
    c = OpenFileCache(str(tmp_path), watch=FileWatch())
    yield c
    c.close()


class Clock:
    """A wall clock the test moves (DateHeader takes any callable)."""

    def __init__(self) -> None:
        self.t = 1_800_000_000.0

    def __call__(self) -> float:
        return self.t


#: One Request per distinct head, as a worker has them.
HEADS = http.HeadCache()


def ask(responder, head: bytes = HEAD, closing: bool = False):
    return responder.respond(HEADS.parse(head), closing)


@pytest.fixture
def responder(cache):
    return Responder(cache, http.DateHeader(Clock()))


def test_the_same_head_gets_the_same_reply(tmp_path, responder):
    (tmp_path / "f.txt").write_text("x" * 100)
    first = ask(responder)
    assert first.status == 200 and b"Content-Length: 100\r\n" in first.head
    assert ask(responder) is first
    assert ask(responder, b"HEAD /f.txt HTTP/1.1\r\nHost: t\r\n\r\n").body == []


def test_a_changed_file_is_answered_anew_once_its_event_is_applied(tmp_path, responder, cache):
    (tmp_path / "f.txt").write_text("x" * 100)
    first = ask(responder)
    (tmp_path / "f.txt").write_text("y" * 7)
    cache.apply_changes()                 # what the worker does before reading a request
    again = ask(responder)
    assert again is not first and b"Content-Length: 7\r\n" in again.head
    fd, start, stop = again.body[0]
    assert os.pread(fd, 100, 0) == b"y" * 7 and (start, stop) == (0, 7)


def test_a_new_second_gets_a_new_date_line(tmp_path, responder):
    (tmp_path / "f.txt").write_text("x")
    clock = Clock()
    responder.date = http.DateHeader(clock)
    first = ask(responder)
    clock.t += 1
    again = ask(responder)
    now = responder.date.get()
    assert now in again.head and now not in first.head


def test_a_draining_server_says_close_even_for_a_memoized_head(tmp_path, responder):
    (tmp_path / "f.txt").write_text("x")
    assert b"Connection: close" not in ask(responder).head
    assert b"Connection: close\r\n" in ask(responder, closing=True).head
    assert b"Connection: close" not in ask(responder).head


def test_an_unwatched_file_is_still_stat_ed_per_request(tmp_path):
    cache = OpenFileCache(str(tmp_path), watch=None)
    try:
        responder = Responder(cache, http.DateHeader(Clock()))
        (tmp_path / "f.txt").write_text("x" * 100)
        ask(responder)
        (tmp_path / "f.txt").write_text("y" * 7)      # no event source: the stat must see it
        assert b"Content-Length: 7\r\n" in ask(responder).head
    finally:
        cache.close()


def test_a_changed_sibling_is_seen_without_its_event(tmp_path, responder):
    """A file with precompressed siblings keeps its per-request sibling check
    (it is never memoized): a .gz rewritten is served fresh at once."""
    (tmp_path / "f.txt").write_text("x" * 1000)
    (tmp_path / "f.txt.gz").write_bytes(gzip.compress(b"x" * 1000))
    head = b"GET /f.txt HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip\r\n\r\n"
    assert b"Content-Encoding: gzip" in ask(responder, head).head
    (tmp_path / "f.txt.gz").write_bytes(b"a different gzip body")   # events not applied
    again = ask(responder, head)
    assert b"Content-Encoding: gzip" in again.head and b"Content-Length: 21\r\n" in again.head


def test_a_folder_swapped_above_the_watch_is_caught_by_the_periodic_resolution(tmp_path):
    """No event reaches a watch on a/b when its grandparent a is renamed: the
    once-per-RESOLVE_TTL resolution catches it, memo or not."""
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "f.txt").write_text("old")
    with Server(tmp_path, "--workers", "1") as server:
        for _ in range(3):
            assert get(server.port, "/a/b/f.txt")[2] == b"old"
        os.rename(tmp_path / "a", tmp_path / "a.old")
        time.sleep(RESOLVE_TTL + 0.2)
        assert get(server.port, "/a/b/f.txt")[0] == 404


def test_keep_alive_repeats_and_a_change_between_them(tmp_path):
    """One connection asks for the same file over and over while it changes:
    each answer carries the length of the file as it was when asked."""
    path = tmp_path / "f.txt"
    with Server(tmp_path, "--workers", "1") as server:
        c = connect(server.port)
        try:
            for n in (10, 10, 10, 3, 3, 5000, 5000, 0, 0, 10):
                path.write_bytes(b"z" * n)
                c.sendall(HEAD)
                status, headers, body, _ = read_response(c)
                assert status == 200 and body == b"z" * n and headers["content-length"] == str(n)
        finally:
            c.close()


def test_a_big_listing_reaches_a_slow_reader_whole(tmp_path):
    """A listing is one bytes item far larger than the socket buffer: sent in
    pieces as the client drains it, none lost or repeated."""
    for i in range(3000):
        (tmp_path / f"file-{i:05d}-with-a-longish-name.txt").write_bytes(b"")
    with Server(tmp_path, "--workers", "1") as server:
        expected = get(server.port, "/")[2]
        assert len(expected) > 256 * 1024
        c = socket.socket()
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        c.connect(("127.0.0.1", server.port))
        c.settimeout(10)
        try:
            c.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            time.sleep(0.3)                       # the server fills the small window and waits
            status, _, body, _ = read_response(c)
        finally:
            c.close()
        assert status == 200 and body == expected


def test_latency_buckets_and_counts_add_up():
    stats = WorkerStats()
    for _ in range(3):
        stats.reply("GET", 200, 0.0, 0.0)     # answered in the turn that read it
    stats.reply("GET", 206, 0.0, 0.003)       # head at once, body over a few ms
    stats.reply("GET", 200, 0.0, None)        # cut: its head left, it never completed
    stats.reply(None, 400)                    # no request behind it (a malformed head)
    snap = stats.snapshot({})
    assert snap["requests"] == stats.requests == 6
    assert snap["status"]["2xx"] == 5 and snap["status"]["4xx"] == 1 and snap["methods"] == {"GET": 5}
    ttfb, ttlb = snap["latency"]["ttfb"], snap["latency"]["ttlb"]
    assert ttfb[0] == 5 and sum(ttfb) == 5
    assert ttlb[0] == 3 and ttlb[3] == 1 and sum(ttlb) == 4     # 3 ms: the (2, 5] ms bucket
    assert snap["latency"]["ttlb_sum"] == 0.003


@pytest.mark.parametrize("flags", [(), ("--prefetch", "off")])
def test_pipelined_hot_files_to_a_client_that_reads_late(tmp_path, flags):
    """Hundreds of pipelined requests for hot files while the client reads
    nothing: the socket fills up, so replies that start at once come up short
    in the head, in the body or at once (EAGAIN) and the state machine carries
    on from there. Every response arrives whole and in order, and the access
    log counts each with its full size."""
    sizes = {"small": 1000, "mid": 50_000, "big": (1 << 20) + 5}    # big: more than one step's budget
    contents = {name: os.urandom(n) for name, n in sizes.items()}
    for name, data in contents.items():
        (tmp_path / name).write_bytes(data)
    order = [name for _ in range(60) for name in ("small", "mid", "small", "big", "small", "mid")]
    log = tmp_path.parent / f"{tmp_path.name}-access.log"
    with Server(tmp_path, "--workers", "1", "--access-log", str(log), *flags) as server:
        for name in sizes:                      # make them hot (found resident once)
            assert get(server.port, "/" + name)[2] == contents[name]
        c = socket.socket()
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        c.connect(("127.0.0.1", server.port))
        c.settimeout(20)
        try:
            c.sendall(b"".join(b"GET /%s HTTP/1.1\r\nHost: t\r\n\r\n" % n.encode() for n in order))
            time.sleep(0.5)                     # the server fills what the window allows, then waits
            for name in order:
                status, headers, body, _ = read_response(c)
                assert status == 200 and body == contents[name], name
        finally:
            c.close()
        assert server.stop() == 0
    lines = log.read_text().splitlines()[len(sizes):]
    log.unlink()
    assert [line.split('"')[2].split() for line in lines] == [["200", str(sizes[n])] for n in order]


def test_replies_sent_at_once_into_a_nearly_full_socket_arrive_whole(tmp_path):
    """A worker's connection over a real TCP socket with tiny buffers, fed
    pipelined requests for a hot 1000-byte file while the client reads late:
    sends come up short at every point of a reply (head, body, nothing at
    all) and each time the state machine carries on from the right byte."""
    from zcopy.server.config import ServeConfig
    from zcopy.server.connection import Connection
    from zcopy.server.worker import Worker

    data = os.urandom(1000)
    (tmp_path / "f.txt").write_bytes(data)
    listener = socket.create_server(("127.0.0.1", 0))
    worker = Worker(ServeConfig(root=str(tmp_path), prefetch=False), listener)
    client = socket.create_connection(listener.getsockname())
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    server_side, addr = listener.accept()
    server_side.setblocking(False)
    server_side.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    conn = Connection(worker, server_side, addr)
    worker.conns[conn.fd] = conn
    worker.ep.register(conn.fd, worker.CONN_EVENTS)
    try:
        received = bytearray()
        client.setblocking(False)
        for round_ in range(40):
            client.sendall(HEAD * 5)
            run_until_waiting(worker, conn)
            if round_ % 3 == 2:                       # read late, and only sometimes
                try:
                    while chunk := client.recv(1500):
                        received += chunk
                except BlockingIOError:
                    pass
        deadline = time.monotonic() + 10
        def all_arrived() -> bool:      # 200 heads, and the last one's body whole (it may trail its head)
            return (received.count(b"HTTP/1.1 200 OK\r\n") >= 200
                    and len(received) - received.rfind(b"\r\n\r\n") - 4 >= len(data))

        while not all_arrived() and time.monotonic() < deadline:
            run_until_waiting(worker, conn, 0.01)
            try:
                while chunk := client.recv(65536):
                    received += chunk
            except BlockingIOError:
                pass
        replies = bytes(received).split(b"HTTP/1.1 200 OK\r\n")[1:]
        assert len(replies) == 200
        for reply in replies:
            head, body = reply.split(b"\r\n\r\n", 1)
            assert head.endswith(b"\r\nContent-Length: 1000") and body == data
        assert worker.stats.requests == 200
    finally:
        conn.close()
        client.close()
        worker.shutdown()
        worker.finish(None)


def run_until_waiting(worker, conn, timeout: float = 0.0) -> None:
    """The worker loop's part for one connection: its events and its turns
    in ``ready``, until it waits for the socket."""
    while True:
        events = worker.ep.poll(timeout)
        timeout = 0.0
        for fd, ev in events:
            if fd == conn.fd:
                conn.on_event(ev)
        ran = worker.opener.run_callbacks()        # an uncached file is opened off the loop
        batch, worker.ready[:] = worker.ready[:], []
        for c in batch:
            c.run()
        if conn.pending is not None:                # waiting for that: not for the socket
            timeout = 0.01
            continue
        if not events and not batch and not ran:
            return


def test_a_reload_takes_effect_at_the_next_request_despite_the_memo(tmp_path, cache):
    """The memo's key holds the rules generation: within one Date second, a revoked user (or a
    changed rule) is refused at the next request, not served the memoized answer."""
    import base64

    from zcopy.accounts import passwords, users
    from zcopy.server.access import Access

    pw = passwords.make("pw", time_cost=1, memory_kib=passwords.MIN_MEMORY_KIB)
    access = Access(accounts=users.parse(f"alice {pw} /:r\n"))
    responder = Responder(cache, http.DateHeader(Clock()), access=access)
    (tmp_path / "f.txt").write_text("x")
    head = b"GET /f.txt HTTP/1.1\r\nHost: t\r\nAuthorization: Basic " + base64.b64encode(b"alice:pw") + b"\r\n\r\n"
    first = ask(responder, head)
    assert first.status == 200 and ask(responder, head) is first        # memoized
    access.load(users.parse(f"alice {pw} /other:r\n"))                   # a changed rule
    assert ask(responder, head).status == 403
    access.load(users.parse(""))                                          # alice revoked
    assert ask(responder, head).status == 401


def test_another_workers_write_is_seen_at_the_next_request_despite_the_memo(tmp_path):
    """The memo's key holds the workers' write stamp: within one Date second, after another
    worker's write the entries re-validate (``OpenFileCache.sync``) before one is trusted, even
    with this worker's watch event for the change not applied yet (a moved ancestor raises none);
    this worker's own writes, or none, leave the memo as it is."""
    from zcopy.server.shared import Generation, SharedState

    shared = SharedState(2)
    mine, other = Generation(shared, 0), Generation(shared, 1)
    cache = OpenFileCache(str(tmp_path), watch=FileWatch(), generation=mine)
    try:
        responder = Responder(cache, http.DateHeader(Clock()))
        (tmp_path / "f.txt").write_text("x" * 100)
        first = ask(responder)
        assert b"Content-Length: 100\r\n" in first.head
        (tmp_path / "f.txt").write_text("y" * 7)        # its event is not applied
        other.bump()                                     # another worker wrote
        again = ask(responder)
        assert again is not first and b"Content-Length: 7\r\n" in again.head
        mine.bump()                                      # this worker's write: a new memo, same answer
        assert ask(responder).head == again.head
    finally:
        cache.close()
