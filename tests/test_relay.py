"""zcopy relay, in-process: a RelayWorker runs its real epoll loop in a
thread, on real 127.0.0.1 sockets, between real clients and a real threaded
upstream. In-process so the tests can read ``stats_snapshot()`` and count
the fds and pipes the worker holds."""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import random
import resource
import socket
import struct
import threading
import time

import pytest

from zcopy.relay import RelayConfig, RelayWorker

ENGINES = ["splice", "copy"]
RST = struct.pack("ii", 1, 0)


# -- helpers (also used by test_relay_cli.py) -----------------------------------

class Upstream:
    """A TCP server on 127.0.0.1 running ``handler(conn)`` in a thread per connection."""

    def __init__(self, handler, backlog: int = 1024, host: str = "127.0.0.1") -> None:
        self.handler = handler
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.create_server((host, 0), family=family, backlog=backlog)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.threads: list[threading.Thread] = []
        self.errors: list[BaseException] = []
        self._accepter = threading.Thread(target=self._accept, daemon=True)
        self._accepter.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self.threads.append(t)
            t.start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            self.handler(conn)
        except OSError:
            pass
        except BaseException as exc:  # assertion in a handler: report it in the test
            self.errors.append(exc)
        finally:
            conn.close()

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._accepter.join(5)
        for t in self.threads:
            t.join(5)
        for c in self.conns:
            c.close()
        assert not self.errors, self.errors


def echo(conn: socket.socket) -> None:
    """Echo until EOF, then pass the half-close back."""
    while data := conn.recv(1 << 16):
        conn.sendall(data)
    conn.shutdown(socket.SHUT_WR)


def recv_all(sock: socket.socket, timeout: float = 20.0) -> bytes:
    sock.settimeout(timeout)
    out = bytearray()
    while data := sock.recv(1 << 20):
        out += data
    return bytes(out)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fd_kinds(pid: int | str = "self") -> dict[str, int]:
    """How many sockets, pipes and other fds a process holds."""
    kinds = {"socket": 0, "pipe": 0, "other": 0}
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        kind = target.split(":", 1)[0]
        kinds[kind if kind in kinds else "other"] += 1
    return kinds


@contextlib.contextmanager
def relay(upstream_port: int, **options):
    """A RelayWorker on 127.0.0.1:<free port> in a thread; yields (worker, port)."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=1024)
    options.setdefault("log", os.devnull)
    cfg = RelayConfig(upstream=("127.0.0.1", upstream_port), upstream_name=f"127.0.0.1:{upstream_port}",
                      port=listener.getsockname()[1], **options)
    worker = RelayWorker(cfg, listener)
    thread = threading.Thread(target=worker.run, kwargs={"install_signals": False}, daemon=True)
    thread.start()
    worker.test_thread = thread
    try:
        yield worker, cfg.port
    finally:
        worker.stop()
        thread.join(10)
        assert not thread.is_alive(), "relay worker did not stop"


def wait_for(predicate, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    return predicate()


@pytest.fixture
def echo_upstream():
    up = Upstream(echo)
    yield up
    up.close()


# -- byte-exact both ways ---------------------------------------------------------

SIZES = [0, 1, 1000, 65535, 65536, 65537, 1 << 20, (1 << 20) + 7, 3_000_001]


@pytest.mark.parametrize("engine", ENGINES)
def test_random_payloads_both_ways_at_once_are_byte_exact(engine):
    """Each connection sends one payload up while the upstream sends an
    unrelated one down; all connections run at once."""
    rng = random.Random(7)
    payloads = {size: (rng.randbytes(size), rng.randbytes(rng.choice(SIZES))) for size in SIZES}

    def swap(conn):
        head = conn.recv(8, socket.MSG_WAITALL)
        size = int.from_bytes(head, "big")
        up, down = payloads[size]
        sender = threading.Thread(target=lambda: (conn.sendall(down), conn.shutdown(socket.SHUT_WR)))
        sender.start()
        got = recv_all(conn)
        sender.join()
        assert got == up, f"upstream got {len(got)} bytes, not the {size} sent"

    up = Upstream(swap)
    try:
        with relay(up.port, engine=engine, pipe_size=256 * 1024) as (worker, port):
            results = {}

            def client(size):
                with socket.create_connection(("127.0.0.1", port)) as c:
                    up_data, _ = payloads[size]
                    sender = threading.Thread(target=lambda: (c.sendall(size.to_bytes(8, "big") + up_data),
                                                              c.shutdown(socket.SHUT_WR)))
                    sender.start()
                    results[size] = recv_all(c)
                    sender.join()

            threads = [threading.Thread(target=client, args=(s,)) for s in SIZES]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            for size in SIZES:
                assert results[size] == payloads[size][1], f"download for {size} differs"
            snap = wait_for(lambda: (s := worker.stats_snapshot())["connections"]["closed"] == len(SIZES) and s)
        assert snap["ended"] == {"closed": len(SIZES)}
        assert snap["bytes"]["client_to_upstream"] == sum(8 + s for s in SIZES)
        assert snap["bytes"]["upstream_to_client"] == sum(len(d) for _, d in payloads.values())
        eng = snap["engines"][engine]
        assert eng["bytes_sent"] == eng["bytes_received"] == sum(snap["bytes"].values())
    finally:
        up.close()


# -- half-close ------------------------------------------------------------------

@pytest.mark.parametrize("engine", ENGINES)
def test_client_half_close_reaches_upstream_and_replies_still_flow(engine):
    reply = os.urandom(2_000_000)

    def digest_then_reply(conn):
        got = recv_all(conn)        # returns only when the client's FIN arrives
        conn.sendall(hashlib.sha256(got).digest() + reply)
        conn.shutdown(socket.SHUT_WR)

    up = Upstream(digest_then_reply)
    try:
        with relay(up.port, engine=engine) as (worker, port):
            data = os.urandom(1_500_000)
            with socket.create_connection(("127.0.0.1", port)) as c:
                c.sendall(data)
                c.shutdown(socket.SHUT_WR)
                got = recv_all(c)
            assert got == hashlib.sha256(data).digest() + reply
            snap = wait_for(lambda: (s := worker.stats_snapshot())["connections"]["closed"] and s)
            assert snap["ended"] == {"closed": 1}
            rec = snap["recent"][0]
            assert (rec["up"], rec["down"], rec["end"]) == (len(data), 32 + len(reply), "closed")
    finally:
        up.close()


@pytest.mark.parametrize("engine", ENGINES)
def test_upstream_half_close_reaches_client_and_uploads_still_flow(engine):
    greeting = os.urandom(300_000)

    def greet_then_listen(conn):
        conn.sendall(greeting)
        conn.shutdown(socket.SHUT_WR)
        got = recv_all(conn)
        # The write side is shut: the answer can only be checked here.
        assert got == hashlib.sha256(greeting).digest() * 1000

    up = Upstream(greet_then_listen)
    try:
        with relay(up.port, engine=engine) as (worker, port):
            with socket.create_connection(("127.0.0.1", port)) as c:
                got = recv_all(c)           # the upstream's FIN arrived as EOF
                assert got == greeting
                c.sendall(hashlib.sha256(got).digest() * 1000)   # still accepted after the half-close
                c.shutdown(socket.SHUT_WR)
                assert c.recv(1) == b""
            snap = wait_for(lambda: (s := worker.stats_snapshot())["connections"]["closed"] and s)
            assert snap["ended"] == {"closed": 1}
    finally:
        up.close()


# -- resets ------------------------------------------------------------------------

def _abort(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RST)
    sock.close()


def _is_closed_by_peer(sock: socket.socket, timeout: float = 5.0) -> bool:
    sock.settimeout(timeout)
    try:
        while sock.recv(1 << 16):
            pass
        return True                    # EOF
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("who", ["client", "upstream"])
def test_reset_on_one_side_closes_the_other_and_leaks_nothing(engine, who):
    """Abort one side mid-transfer (SO_LINGER 0: a real RST), many times; the
    other side is closed, and the worker holds no more sockets or pipes than
    before (pipes only in the pool's idle list)."""
    ready = threading.Semaphore(0)

    def keep(conn):
        ready.release()
        if who == "client":
            assert _is_closed_by_peer(conn), "upstream was not closed after the client reset"
        else:
            conn.sendall(os.urandom(100_000))
            time.sleep(0.05)
            _abort(conn)

    up = Upstream(keep)
    try:
        with relay(up.port, engine=engine) as (worker, port):
            def one_round():
                c = socket.create_connection(("127.0.0.1", port))
                c.sendall(os.urandom(200_000))
                assert ready.acquire(timeout=5)
                if who == "client":
                    _abort(c)
                else:
                    assert _is_closed_by_peer(c), "client was not closed after the upstream reset"
                    c.close()

            def settle():
                assert wait_for(lambda: worker.sessions == 0)
                for t in up.threads:
                    t.join(5)
                return fd_kinds(), _idle(worker)

            one_round()          # warm the pipe pool
            before, idle_before = settle()
            for _ in range(20):
                one_round()
            after, idle_after = settle()
            snap = worker.stats_snapshot()
        assert after["socket"] == before["socket"], (before, after)
        assert after["pipe"] - before["pipe"] == 2 * (idle_after - idle_before), (before, after)
        assert snap["ended"].get(f"{who}_reset", 0) >= 20, snap["ended"]
        assert snap["connections"]["active"] == 0
    finally:
        up.close()


def _idle(worker) -> int:
    return worker.pipe_pool.idle if worker.pipe_pool is not None else 0


# -- many connections ----------------------------------------------------------------

def test_500_concurrent_connections(echo_upstream):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 500 * 8 + 256
    if hard < need:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {need}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, need), hard))
    try:
        with relay(echo_upstream.port) as (worker, port):
            clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(500)]
            try:
                assert wait_for(lambda: worker.stats_snapshot()["connections"]["active"] == 500)
                for i, c in enumerate(clients):
                    c.sendall(b"hello %d\n" % i)
                for i, c in enumerate(clients):
                    c.shutdown(socket.SHUT_WR)
                for i, c in enumerate(clients):
                    assert recv_all(c) == b"hello %d\n" % i
            finally:
                for c in clients:
                    c.close()
            snap = wait_for(lambda: (s := worker.stats_snapshot())["connections"]["closed"] == 500 and s)
        assert snap["connections"]["accepted"] == 500
        assert snap["ended"] == {"closed": 500}
        assert not snap["errors"]
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_max_connections_turns_the_excess_away_cleanly_and_counts(echo_upstream):
    with relay(echo_upstream.port, max_connections=2) as (worker, port):
        a = socket.create_connection(("127.0.0.1", port))
        b = socket.create_connection(("127.0.0.1", port))
        try:
            for s in (a, b):
                s.sendall(b"in")
                s.settimeout(5)
                assert s.recv(2) == b"in"
            with socket.create_connection(("127.0.0.1", port)) as c:
                c.sendall(b"third")                   # unread: must not turn the close into a RST
                c.settimeout(5)
                assert c.recv(5) == b""               # FIN at once, not a wait in the backlog
            snap = wait_for(lambda: (s := worker.stats_snapshot())["connections"]["closed"] and s)
            assert snap["errors"] == {"max_connections": 1} and snap["connections"]["active"] == 2
            assert snap["recent"][-1]["end"] == "max_connections"
            a.close()
            assert wait_for(lambda: worker.sessions == 1)
            with socket.create_connection(("127.0.0.1", port)) as d:   # room again
                d.sendall(b"fourth")
                d.settimeout(5)
                assert d.recv(6) == b"fourth"
        finally:
            for s in (a, b):
                s.close()


# -- upstream failures and timeouts ---------------------------------------------------

@pytest.mark.parametrize("engine", ENGINES)
def test_refused_upstream_closes_client_cleanly_and_counts(engine):
    with relay(free_port(), engine=engine) as (worker, port):
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", port)) as c:
                c.sendall(b"GET / HTTP/1.0\r\n\r\n")     # unread by anyone: must not turn into a RST
                c.settimeout(5)
                assert c.recv(100) == b""               # FIN, not ECONNRESET
        snap = wait_for(lambda: (s := worker.stats_snapshot())["connections"]["closed"] == 3 and s)
    assert snap["errors"] == {"upstream_refused": 3}
    assert snap["recent"][-1]["end"] == "upstream_refused"


def test_next_address_of_the_upstream_is_tried_when_one_refuses(echo_upstream):
    """A name with several addresses (localhost: ::1 and 127.0.0.1): a refused
    one is not the end, the connection goes on to the next."""
    more = [(socket.AF_INET, ("127.0.0.1", echo_upstream.port))]
    with relay(free_port(), more_upstreams=more) as (worker, port):
        with socket.create_connection(("127.0.0.1", port)) as c:
            c.sendall(b"through the second address")
            c.shutdown(socket.SHUT_WR)
            assert recv_all(c) == b"through the second address"
        snap = wait_for(lambda: (s := worker.stats_snapshot())["connections"]["closed"] and s)
    assert snap["ended"] == {"closed": 1}


def test_upstream_that_never_answers_times_out():
    """A listener whose accept queue is full drops SYNs: connect hangs."""
    full = socket.socket()
    full.bind(("127.0.0.1", 0))
    full.listen(0)
    queued = [socket.create_connection(full.getsockname(), timeout=2)]   # fills the queue
    extra = socket.socket()
    extra.setblocking(False)
    extra.connect_ex(full.getsockname())          # its SYN is dropped too: belt and braces
    queued.append(extra)
    try:
        with relay(full.getsockname()[1], connect_timeout=0.5) as (worker, port):
            with socket.create_connection(("127.0.0.1", port)) as c:
                c.settimeout(5)
                started = time.monotonic()
                assert c.recv(1) == b""
                assert time.monotonic() - started < 3
            snap = wait_for(lambda: (s := worker.stats_snapshot())["connections"]["closed"] and s)
        assert snap["errors"] == {"upstream_timeout": 1}
    finally:
        for s in queued:
            s.close()
        full.close()


def test_idle_connection_is_closed(echo_upstream):
    with relay(echo_upstream.port, idle_timeout=0.5) as (worker, port):
        with socket.create_connection(("127.0.0.1", port)) as c:
            c.sendall(b"x")
            c.settimeout(5)
            assert c.recv(1) == b"x"
            assert c.recv(1) == b""
        snap = wait_for(lambda: (s := worker.stats_snapshot())["connections"]["closed"] and s)
    assert snap["ended"] == {"idle_timeout": 1}


# -- rate limits -----------------------------------------------------------------------

def _measure(port: int, connections: int, sink: "Sink", seconds: float = 2.0) -> float:
    """Bytes/s reaching the upstream over ``seconds``, after a 0.3 s settling
    time (so the bucket's initial burst is not counted)."""
    stop = threading.Event()
    chunk = b"\0" * 65536

    def blast():
        with socket.create_connection(("127.0.0.1", port)) as c:
            c.settimeout(0.2)
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    c.send(chunk)

    threads = [threading.Thread(target=blast) for _ in range(connections)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.3)
        start_bytes, start = sink.total, time.monotonic()
        time.sleep(seconds)
        return (sink.total - start_bytes) / (time.monotonic() - start)
    finally:
        stop.set()
        for t in threads:
            t.join(5)


class Sink:
    def __init__(self) -> None:
        self.total = 0
        self.lock = threading.Lock()

    def __call__(self, conn) -> None:
        while data := conn.recv(1 << 16):
            with self.lock:
                self.total += len(data)


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
def test_conn_rate_is_honoured_within_ten_percent(engine):
    sink = Sink()
    up = Upstream(sink)
    try:
        with relay(up.port, engine=engine, conn_rate=3_000_000, drain_timeout=0.5) as (worker, port):
            rate = _measure(port, 1, sink)
            parked = worker.stats_snapshot()["rate_limit_waits"]
        assert 0.9 * 3_000_000 <= rate <= 1.1 * 3_000_000, f"{rate:.0f} B/s"
        assert parked > 0          # the direction waited on a timer, it did not spin
    finally:
        up.close()


@pytest.mark.slow
def test_total_rate_is_shared_by_connections_within_ten_percent():
    sink = Sink()
    up = Upstream(sink)
    try:
        with relay(up.port, rate=4_000_000, drain_timeout=0.5) as (worker, port):
            rate = _measure(port, 3, sink)
        assert 0.9 * 4_000_000 <= rate <= 1.1 * 4_000_000, f"{rate:.0f} B/s"
    finally:
        up.close()


class Duplex:
    """Upstream handler and client helper: send zeros until stopped while
    counting what arrives, each in its own thread."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.received = {"upstream": 0, "client": 0}

    def run(self, sock: socket.socket, who: str) -> None:
        sock.settimeout(0.2)

        def send():
            with contextlib.suppress(ConnectionError):   # the other end went first at the end
                while not self.stop.is_set():
                    with contextlib.suppress(TimeoutError):
                        sock.send(b"\0" * 65536)

        sender = threading.Thread(target=send)
        sender.start()
        try:
            with contextlib.suppress(ConnectionError):
                while not self.stop.is_set():
                    with contextlib.suppress(TimeoutError):
                        self.received[who] += len(sock.recv(1 << 16))
        finally:
            sender.join(5)


@pytest.mark.slow
def test_conn_rate_is_shared_fairly_by_both_directions():
    """Both directions busy on one rate-limited connection: together within
    10% of the limit, and neither takes the other's share (the upload ran
    first on every wakeup and left the download nothing). The session decides
    the order, not the engine: splice only."""
    duplex = Duplex()
    up = Upstream(lambda conn: duplex.run(conn, "upstream"))
    try:
        with relay(up.port, conn_rate=2_000_000, drain_timeout=0.5) as (worker, port):
            with socket.create_connection(("127.0.0.1", port)) as c:
                client = threading.Thread(target=duplex.run, args=(c, "client"))
                client.start()
                try:
                    time.sleep(0.3)
                    start, t0 = dict(duplex.received), time.monotonic()
                    time.sleep(1.5)
                    got = {k: (v - start[k]) / (time.monotonic() - t0) for k, v in duplex.received.items()}
                finally:
                    duplex.stop.set()
                    client.join(5)
        assert 0.9 * 2_000_000 <= sum(got.values()) <= 1.1 * 2_000_000, got
        assert min(got.values()) >= 0.4 * 1_000_000, got   # each direction near half the limit
    finally:
        duplex.stop.set()
        up.close()


@pytest.mark.parametrize("engine", ENGINES)
def test_small_request_behind_a_rate_limited_bulk_download_answers_within_a_second(engine):
    """While one connection downloads at the whole --rate, a new connection's
    request and reply each need the same bucket: they wait their turn (one
    refill interval) instead of until the bulk transfer ends (issue 15.14:
    8.4 s observed)."""
    bulk_size = 8_000_000        # 8 s at the limit below

    def serve(conn):
        word = conn.recv(16)
        if word == b"BULK":
            with contextlib.suppress(ConnectionError):
                conn.sendall(b"\0" * bulk_size)
        else:
            conn.sendall(b"small reply")
        conn.shutdown(socket.SHUT_WR)
        recv_all(conn)

    up = Upstream(serve)
    try:
        with relay(up.port, engine=engine, rate=1_000_000, drain_timeout=0.5) as (worker, port):
            with socket.create_connection(("127.0.0.1", port)) as bulk:
                bulk.sendall(b"BULK")
                got = 0
                while got < 300_000:            # the bulk download is flowing at the limit
                    got += len(bulk.recv(1 << 16))
                done = threading.Event()
                reader = threading.Thread(target=_read_until, args=(bulk, done))
                reader.start()
                try:
                    with socket.create_connection(("127.0.0.1", port)) as small:
                        start = time.monotonic()
                        small.sendall(b"SMALL")
                        small.shutdown(socket.SHUT_WR)
                        with contextlib.suppress(TimeoutError):
                            reply = recv_all(small, timeout=3)
                        waited = time.monotonic() - start
                finally:
                    done.set()
                    reader.join(5)
                assert waited < 1.0, f"the small request waited {waited:.2f} s behind the bulk download"
                assert reply == b"small reply"
                bulk.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RST)
    finally:
        up.close()


class Waiter:
    """A direction waiting on buckets: records when the line wakes it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.woken: list[float] = []

    def wake(self, when: float) -> None:
        self.woken.append(when)


def test_bucket_line_serves_waiters_in_turn():
    """The bucket alone, on its own clock: a direction that keeps asking
    cannot take a refill while another waits, only the first in line has a
    wake time, and each grant hands the next its time."""
    from zcopy.relay.bucket import QUANTUM, Limiter, TokenBucket

    rate = 1_000_000
    bucket = TokenBucket(rate, now=0.0)
    bulk, newcomer = Waiter("bulk"), Waiter("newcomer")
    bulk_l, new_l = Limiter([bucket]), Limiter([bucket])
    want = 1 << 20
    assert bulk_l.grant(want, 0.0, bulk) == int(bucket.burst)      # alone: the whole burst
    bulk_l.consume(int(bucket.burst))
    assert bulk_l.grant(want, 0.0, bulk) == 0                      # empty: first in line
    first_turn = bulk_l.ready_at(0.0, want, bulk)
    assert first_turn == pytest.approx(QUANTUM / rate)
    assert new_l.grant(want, 0.001, newcomer) == 0                 # behind bulk
    assert new_l.ready_at(0.001, want, newcomer) == math.inf       # no timer of its own
    got = bulk_l.grant(want, first_turn, bulk)                     # bulk's turn
    assert got >= QUANTUM - 1
    bulk_l.consume(got)
    # the grant handed the newcomer its time: one more quantum of refill
    assert newcomer.woken == [pytest.approx(first_turn + QUANTUM / rate)]
    assert bulk_l.grant(want, first_turn, bulk) == 0               # bulk asks again: behind the newcomer
    assert bulk_l.ready_at(first_turn, want, bulk) == math.inf
    later = newcomer.woken[0]
    assert bulk_l.grant(want, later, bulk) == 0                    # tokens are there, but it is not bulk's turn
    got = new_l.grant(want, later, newcomer)
    assert got >= QUANTUM - 1                                      # the newcomer's share
    assert bulk.woken == [pytest.approx(later + QUANTUM / rate, abs=0.001)]
    new_l.forget(newcomer, later)                                  # closed: out of every line
    assert list(bucket.line) == [bulk]


def _read_until(sock: socket.socket, done: threading.Event) -> None:
    """Read and drop what arrives on ``sock`` until ``done`` is set."""
    sock.settimeout(0.1)
    while not done.is_set():
        with contextlib.suppress(TimeoutError):
            if not sock.recv(1 << 16):
                return


def test_rate_limited_relay_does_not_busy_wait():
    """While a direction is parked the worker sleeps in epoll: its thread
    uses a small fraction of one CPU."""
    sink = Sink()
    up = Upstream(sink)
    try:
        with relay(up.port, conn_rate=200_000, drain_timeout=0.5) as (worker, port):
            with socket.create_connection(("127.0.0.1", port)) as c:
                c.settimeout(0.1)
                cpu_before = _thread_cpu(worker)
                deadline = time.monotonic() + 1.0
                while time.monotonic() < deadline:
                    with contextlib.suppress(TimeoutError):
                        c.send(b"\0" * 65536)
                cpu = _thread_cpu(worker) - cpu_before
        assert cpu < 0.3, f"relay loop used {cpu:.2f} s of CPU in 1 s while rate limited"
    finally:
        up.close()


def _thread_cpu(worker) -> float:
    """CPU seconds of the thread running ``worker`` (from /proc)."""
    tid = worker.test_thread.native_id
    with open(f"/proc/self/task/{tid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- stopping ----------------------------------------------------------------------------

def test_stop_and_a_new_client_in_one_poll_batch_drains_cleanly(echo_upstream):
    """The wakeup (SIGTERM) and the listener are ready in the same epoll
    batch: the drain closes the listener, and the listener's event behind it
    must not be acted on (accept on a closed fd killed the worker)."""
    listener = socket.create_server(("127.0.0.1", 0))
    cfg = RelayConfig(upstream=("127.0.0.1", echo_upstream.port), log=os.devnull)
    worker = RelayWorker(cfg, listener)
    worker.stop()                                                   # wakeup pipe ready first...
    with socket.create_connection(listener.getsockname()) as client:  # ...then the listener
        assert worker.run(install_signals=False) == 0
        client.settimeout(5)
        with contextlib.suppress(ConnectionResetError):
            assert client.recv(1) == b""                            # never accepted: the kernel resets it
    assert worker.stats_snapshot()["connections"]["accepted"] == 0
