"""zcopy.sockio (Cython): ``SocketIO.recv``/``send`` behave as ``socket.socket``'s on a non-blocking
socket. Every case runs the same calls through the socket module and through SocketIO, on real
socketpairs and TCP connections over 127.0.0.1, and compares what comes back or what is raised."""

from __future__ import annotations

import contextlib
import errno
import os
import select
import shutil
import socket
import struct
import textwrap

import pytest
from serverutil import python_json

import zcopy
from zcopy import hotpath
from zcopy.transport import PlainTransport

pytestmark = pytest.mark.skipif(not hotpath.compiled("zcopy.sockio"),
                                reason="zcopy.sockio is not compiled (or runs from source: ZCOPY_PURE=1, changed)")

PACKAGE = os.path.dirname(zcopy.__file__)


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    listener = socket.create_server(("127.0.0.1", 0))
    with listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    server.setblocking(False)
    return server, client


def unix_pair() -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair()
    a.setblocking(False)
    return a, b


PAIRS = {"tcp": tcp_pair, "unix": unix_pair}


@contextlib.contextmanager
def both(make):
    """The socket module's (recv, send) and SocketIO's, each on its own fresh pair:
    [(name, ours, peer, recv, send), ...]; every socket is closed at the end."""
    from zcopy.sockio import SocketIO

    cases = []
    try:
        ours, peer = make()
        cases.append(("socket", ours, peer, ours.recv, ours.send))
        ours, peer = make()
        io = SocketIO(ours.fileno())
        cases.append(("sockio", ours, peer, io.recv, io.send))
        yield cases
    finally:
        for _, ours, peer, _, _ in cases:
            ours.close()
            peer.close()


def outcome(call, *args):
    try:
        return ("ok", call(*args))
    except OSError as exc:
        return (type(exc), exc.errno)


@pytest.mark.parametrize("kind", PAIRS)
def test_eof_gives_empty_bytes(kind):
    with both(PAIRS[kind]) as cases:
        for _, _, peer, recv, _ in cases:
            peer.sendall(b"last words")
            peer.shutdown(socket.SHUT_WR)
        got = {name: [recv(65536), recv(65536), recv(65536)] for name, _, _, recv, _ in cases}
        assert got["sockio"] == got["socket"] == [b"last words", b"", b""]


@pytest.mark.parametrize("kind", PAIRS)
def test_nothing_to_read_raises_blocking_io_error_eagain(kind):
    with both(PAIRS[kind]) as cases:
        got = {name: outcome(recv, 65536) for name, _, _, recv, _ in cases}
        assert got["sockio"] == got["socket"] == (BlockingIOError, errno.EAGAIN)
        # recv(0) answers b"" without asking the kernel, as the socket module does
        assert {name: recv(0) for name, _, _, recv, _ in cases} == {"socket": b"", "sockio": b""}
        for name, _, _, recv, _ in cases:
            with pytest.raises(ValueError, match="negative buffersize"):
                recv(-1)


def test_a_reset_peer_raises_connection_reset_error_on_recv():
    with both(tcp_pair) as cases:
        for _, _, peer, _, _ in cases:
            peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            peer.close()                                    # with linger 0: an RST, not a FIN
        got = {name: outcome(recv, 65536) for name, _, _, recv, _ in cases}
        assert got["sockio"] == got["socket"] == (ConnectionResetError, errno.ECONNRESET)


def test_send_after_the_peer_closed_raises_broken_pipe_error():
    with both(unix_pair) as cases:
        for _, _, peer, _, _ in cases:
            peer.close()
        got = {name: outcome(send, b"x") for name, _, _, _, send in cases}
        assert got["sockio"] == got["socket"] == (BrokenPipeError, errno.EPIPE)


def test_send_on_tcp_after_the_peer_reset_and_after_shutdown():
    with both(tcp_pair) as cases:
        for _, ours, _, _, _ in cases:
            ours.shutdown(socket.SHUT_WR)
        got = {name: outcome(send, b"x") for name, _, _, _, send in cases}
        assert got["sockio"] == got["socket"] == (BrokenPipeError, errno.EPIPE)
    with both(tcp_pair) as cases:
        for _, _, peer, _, _ in cases:
            peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            peer.close()
        got = {name: outcome(send, b"x") for name, _, _, _, send in cases}
        assert got["sockio"] == got["socket"] == (ConnectionResetError, errno.ECONNRESET)
        got = {name: outcome(send, b"x") for name, _, _, _, send in cases}   # the error was taken: now EPIPE
        assert got["sockio"] == got["socket"] == (BrokenPipeError, errno.EPIPE)


@pytest.mark.parametrize("kind", PAIRS)
def test_bytes_bytearray_and_memoryview_slices_are_sent_as_they_are(kind):
    data = os.urandom(5000)
    with both(PAIRS[kind]) as cases:
        for name, _, peer, _, send in cases:
            counts = [send(data[:10]), send(bytearray(data[10:100])), send(memoryview(data)[100:1000]),
                      send(memoryview(bytearray(data))[1000:5000]), send(b""), send(memoryview(data)[0:0])]
            assert counts == [10, 90, 900, 4000, 0, 0], name
            got = b""
            while len(got) < 5000:
                got += peer.recv(65536)
            assert got == data, name
        for name, _, _, _, send in cases:
            with pytest.raises(TypeError, match="bytes-like object is required, not 'str'"):
                send("text")
            with pytest.raises(BufferError):
                send(memoryview(data)[::2])                  # not contiguous: refused, as by socket.send
            with pytest.raises(TypeError):
                send(b"x", "flags")


def test_msg_more_is_taken_as_a_plain_int_and_the_bytes_arrive():
    more = int(socket.MSG_MORE)
    with both(tcp_pair) as cases:
        for name, _, peer, _, send in cases:
            assert send(b"HTTP/1.1 200 OK\r\n\r\n", more) == 19
            assert send(memoryview(b"body")[:4], 0) == 4
            got = b""
            while len(got) < 23:
                got += peer.recv(100)
            assert got == b"HTTP/1.1 200 OK\r\n\r\nbody", name


def test_a_large_send_takes_part_then_raises_blocking_io_error_and_recv_is_capped_at_64k():
    data = os.urandom(32 << 20)
    with both(tcp_pair) as cases:
        for name, ours, peer, recv, send in cases:
            view = memoryview(data)
            n = send(view)
            assert 0 < n < len(data), name                   # partial: the socket buffer took what it had
            assert outcome(send, view[n:]) == (BlockingIOError, errno.EAGAIN), name
            peer.setblocking(False)
            got = bytearray()
            while True:                                      # the rest drains as the peer reads
                try:
                    got += peer.recv(1 << 20)
                except BlockingIOError:
                    break
            assert bytes(got) == data[:len(got)] and len(got) <= n
            # the other way: a recv asking for more than 64 KiB gets at most 64 KiB (SocketIO's buffer)
            peer.setblocking(True)
            peer.sendall(b"y" * (256 << 10))
            chunk = recv(1 << 20)
            assert chunk and set(chunk) == {ord("y")}
            if name == "sockio":
                assert len(chunk) <= 65536


def test_a_forgotten_socket_io_raises_ebadf_as_a_closed_socket_does():
    from zcopy.sockio import SocketIO

    ours, peer = unix_pair()
    io = SocketIO(ours.fileno())
    io.forget()
    assert io.fd == -1
    ours.close()
    try:
        assert outcome(io.recv, 10) == outcome(ours.recv, 10) == (OSError, errno.EBADF)
        assert outcome(io.send, b"x") == outcome(ours.send, b"x") == (OSError, errno.EBADF)
    finally:
        peer.close()


def test_the_plain_transport_uses_socket_io_and_its_close_forgets_the_fd():
    ours, peer = unix_pair()
    transport = PlainTransport(ours)
    try:
        assert type(transport.recv.__self__).__name__ == "SocketIO" and transport.io.fd == ours.fileno()
        peer.sendall(b"ping")
        assert transport.recv(65536) == b"ping"
        assert transport.send(b"pong", int(socket.MSG_MORE)) == 4 and peer.recv(10) == b"pong"
    finally:
        transport.close()
        peer.close()
    assert transport.io.fd == -1
    assert outcome(transport.recv, 10) == (OSError, errno.EBADF)
    # a blocking socket keeps the socket's own methods (SocketIO holds the GIL through the syscall)
    a, b = socket.socketpair()
    with a, b:
        transport = PlainTransport(a)
        assert transport.io is None and transport.recv == a.recv and transport.send == a.send



# -- sendfile and cachestat: the engine's and the prefetch's calls in C ---------------------------

@contextlib.contextmanager
def sendfile_engines(budget: int):
    """The Python SendfileEngine and the compiled one (zcopy.sockio.Sendfile), each with
    ``budget``: [(name, engine)]."""
    from zcopy.engines import sendfile

    compiled = sendfile.SendfileEngine(budget=budget)
    assert type(compiled.stats).__name__ == "Sendfile"      # the compiled build takes it
    saved = sendfile._compiled
    sendfile._compiled = None
    try:
        python = sendfile.SendfileEngine(budget=budget)
    finally:
        sendfile._compiled = saved
    assert type(python.stats).__name__ == "EngineStats"
    yield [("python", python), ("sockio", compiled)]


def drain(sock: socket.socket) -> bytes:
    got = bytearray()
    while True:
        try:
            chunk = sock.recv(1 << 20)
        except BlockingIOError:
            return bytes(got)
        if not chunk:
            return bytes(got)
        got += chunk


def test_the_compiled_sendfile_moves_and_counts_what_the_python_engine_does(tmp_path):
    """send_once: all of a small range, part of a big one, then 0 on a full socket (nothing
    lost); step: MORE at the budget, BLOCKED on a full socket, DONE at the end; the same bytes,
    calls and counters from both."""
    from zcopy.engines import Progress

    data = os.urandom(6 << 20)
    path = tmp_path / "data"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    seen = {}
    try:
        with sendfile_engines(budget=16 << 10) as engines:
            for name, engine in engines:
                ours, peer = tcp_pair()
                with ours, peer:
                    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 << 10)
                    peer.setblocking(False)
                    got = bytearray()
                    assert engine.send_once(ours.fileno(), fd, 0, 100) == 100
                    offset, trace = 100, []
                    while (n := engine.send_once(ours.fileno(), fd, offset, (1 << 20) - offset)):
                        offset += n
                    trace.append(("full", offset > 100 and offset < 1 << 20))
                    got += drain(peer)
                    xfer = engine.start_send(fd, offset, len(data) - offset)
                    while True:
                        state = xfer.step(ours.fileno())
                        trace.append(state)
                        if state is Progress.DONE:
                            break
                        if state is Progress.BLOCKED:       # (MORE: step again at once, as the loop does)
                            got += drain(peer)
                            select.select([], [ours], [], 10)
                    xfer.close()
                    ours.shutdown(socket.SHUT_WR)
                    peer.setblocking(True)
                    while chunk := peer.recv(1 << 20):
                        got += chunk
                    assert bytes(got) == data, name
                    assert (xfer.offset, xfer.remaining) == (len(data), 0)
                    assert Progress.MORE in trace and Progress.BLOCKED in trace and trace[0] == ("full", True)
                    stats = engine.stats.snapshot()
                    assert stats["bytes_sent"] == len(data) and stats["bytes_received"] == 0
                    assert engine.stats.syscalls == stats["syscalls"] >= len(data) // (16 << 10)
                    seen[name] = stats
    finally:
        os.close(fd)
    assert seen["python"].keys() == seen["sockio"].keys()


def test_the_compiled_sendfile_raises_what_the_python_engine_raises(tmp_path):
    """Past the end of the file: FileShrank, from send_once and from a step (the file was
    truncated under the transfer); a closed socket: OSError EBADF, from both."""
    from zcopy.engines import FileShrank

    path = tmp_path / "data"
    path.write_bytes(b"x" * 10_000)
    fd = os.open(path, os.O_RDONLY)
    try:
        with sendfile_engines(budget=1 << 20) as engines:
            for name, engine in engines:
                ours, peer = unix_pair()
                with ours, peer:
                    with pytest.raises(FileShrank):
                        engine.send_once(ours.fileno(), fd, 10_000, 10)
                    xfer = engine.start_send(fd, 5_000, 10_000)     # 5,000 bytes promised too many
                    with pytest.raises(FileShrank):
                        xfer.step(ours.fileno())
                    assert xfer.remaining == 5_000, name            # what left before the end counts
                    assert engine.stats.bytes_sent == 5_000, name
                    closed = ours.fileno()
                    ours.close()
                    assert outcome(engine.send_once, closed, fd, 0, 10) == (OSError, errno.EBADF), name
    finally:
        os.close(fd)


def test_a_signal_that_cuts_a_sendfile_short_runs_its_handler_before_the_next_call(tmp_path):
    """A step on a blocking socket nobody reads: the kernel takes what fits, then sendfile(2)
    waits. A signal then returns the bytes sent so far (not EINTR); the Python engine's handler
    runs as os.sendfile returns and its exception leaves the step. The compiled step called
    sendfile again and waited there, the handler pending, until another signal came (a second
    Ctrl-C). The bytes that left before the signal count."""
    import signal
    import threading
    import time

    class Interrupted(Exception):
        pass

    def handler(signum, frame):
        raise Interrupted

    path = tmp_path / "data"
    with open(path, "wb") as f:
        f.truncate(8 << 20)
    fd = os.open(path, os.O_RDONLY)
    previous = signal.signal(signal.SIGUSR1, handler)
    try:
        with sendfile_engines(budget=8 << 20) as engines:
            for name, engine in engines:
                ours, peer = unix_pair()
                with ours, peer:
                    ours.setblocking(True)
                    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 << 10)
                    xfer = engine.start_send(fd, 0, 8 << 20)
                    done = threading.Event()
                    main = threading.main_thread().ident

                    def interrupt():
                        # once, to the waiting thread; again after 3 s in case the first was missed
                        for wait in (0.3, 3.0):
                            if done.wait(wait):
                                return
                            signal.pthread_kill(main, signal.SIGUSR1)

                    kicker = threading.Thread(target=interrupt, daemon=True)
                    started = time.monotonic()
                    kicker.start()
                    try:
                        with pytest.raises(Interrupted):
                            xfer.step(ours.fileno())
                    finally:
                        took = time.monotonic() - started
                        done.set()
                        kicker.join(10)
                    assert took < 2.5, (name, took)     # the first signal's handler, not a second one's
                    if name == "sockio":
                        assert 0 < xfer.offset == engine.stats.bytes_sent == (8 << 20) - xfer.remaining
    finally:
        signal.signal(signal.SIGUSR1, previous)
        os.close(fd)


def test_the_compiled_cachestat_answers_as_the_ctypes_one(tmp_path):
    """A page read a moment ago is cached; one dropped with POSIX_FADV_DONTNEED (a clean file on
    disk) is not; past the end nothing is; a closed fd raises EBADF: the same from both."""
    from zcopy.server import prefetch
    from zcopy.sockio import CacheStat

    compiled = CacheStat(prefetch._PAGE)
    try:
        ctypes_one = prefetch._CacheStat()
    except AttributeError:
        pytest.skip("this libc has no syscall() for ctypes")
    path = tmp_path / "data"
    path.write_bytes(os.urandom(1 << 20))
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.pread(fd, 4096, 8192)            # the third page back in
        for probe in (compiled, ctypes_one):
            try:
                answers = [probe.cached(fd, offset) for offset in (8192, 8192 + 4095, 512 << 10, 2 << 20)]
            except OSError as exc:
                if exc.errno == errno.ENOSYS:
                    pytest.skip("no cachestat(2) on this kernel (Linux 6.5+)")
                raise
            assert answers == [True, True, False, False], probe
        assert prefetch._cachestat.__class__ is CacheStat      # what the prefetch uses
    finally:
        os.close(fd)
    assert outcome(compiled.cached, fd, 0) == outcome(ctypes_one.cached, fd, 0) == (OSError, errno.EBADF)


REPORT = textwrap.dedent("""
    import json, socket
    from zcopy import hotpath, transport
    a, b = socket.socketpair()
    a.setblocking(False)
    t = transport.PlainTransport(a)
    try:
        import zcopy.sockio
        imported = zcopy.sockio.__file__
    except ImportError as exc:
        imported = "ImportError: " + str(exc)
    print(json.dumps({"compiled": hotpath.compiled("zcopy.sockio"), "summary": hotpath.summary(),
                      "recv": type(t.recv.__self__).__name__, "imported": imported}))
""")


def report(pythonpath: str, **env) -> dict:
    return python_json(REPORT, pythonpath, **env)


def test_the_compiled_poller_returns_what_the_epoll_object_returns():
    """``Poller(epfd, maxevents).poll(timeout)`` and ``select.epoll.poll(timeout, maxevents)`` on
    the same epoll set: the same (fd, events) pairs, at most maxevents of them, none when nothing
    is ready; both consume an edge-triggered event once."""
    from zcopy.sockio import Poller

    pairs = [socket.socketpair() for _ in range(5)]
    ep = select.epoll()
    try:
        for a, b in pairs:
            ep.register(a.fileno(), select.EPOLLIN | select.EPOLLOUT)
        poller = Poller(ep, 1023)
        want = sorted(ep.poll(0, 1023))
        assert len(want) == 5 and all(ev == select.EPOLLOUT for _, ev in want)
        assert sorted(poller.poll(0)) == want                   # level-triggered: again
        pairs[2][1].send(b"x")
        got = dict(poller.poll(0))
        assert got[pairs[2][0].fileno()] == select.EPOLLIN | select.EPOLLOUT
        assert dict(ep.poll(0, 1023)) == got
        assert len(Poller(ep, 2).poll(0)) == 2          # maxevents bounds the batch
        for a, _ in pairs:
            ep.modify(a.fileno(), select.EPOLLIN | select.EPOLLET)
        assert poller.poll(0) == [(pairs[2][0].fileno(), select.EPOLLIN)]
        assert poller.poll(0) == ep.poll(0, 1023) == []          # the edge was taken once
        with pytest.raises(ValueError):
            Poller(ep, 0)
    finally:
        ep.close()
        for a, b in pairs:
            a.close()
            b.close()


def test_events_waiting_says_whether_epoll_holds_an_event_and_takes_none():
    """``events_waiting(epfd)``: a poll(2) of the epoll fd, True while an event is ready (level- or
    edge-triggered), and asking takes no edge: epoll_wait still returns it once, after which it is
    False. A closed fd raises OSError (EBADF)."""
    from zcopy.sockio import events_waiting

    a, b = socket.socketpair()
    ep = select.epoll()
    with a, b:
        try:
            ep.register(a.fileno(), select.EPOLLIN | select.EPOLLET)
            assert events_waiting(ep.fileno()) is False
            b.send(b"x")
            assert events_waiting(ep.fileno()) is True
            assert events_waiting(ep.fileno()) is True         # asked twice: still there
            assert ep.poll(0) == [(a.fileno(), select.EPOLLIN)]
            assert events_waiting(ep.fileno()) is False        # the edge was taken by the poll
            ep.modify(a.fileno(), select.EPOLLIN)               # level-triggered: a byte unread
            assert events_waiting(ep.fileno()) is True
            a.recv(1)
            assert events_waiting(ep.fileno()) is False
        finally:
            fd = ep.fileno()
            ep.close()
    with pytest.raises(OSError) as err:
        events_waiting(fd)
    assert err.value.errno == errno.EBADF


def test_the_loop_asks_the_compiled_events_waiting():
    from zcopy import loop, sockio

    assert loop._events_waiting is sockio.events_waiting


def test_the_compiled_poller_waits_for_its_timeout_and_for_an_event():
    """A timeout in seconds, rounded up to a millisecond as the epoll object rounds it; an event
    from another thread ends the wait (the GIL is released while it waits); a closed fd raises
    OSError (EBADF)."""
    import threading
    import time

    from zcopy.sockio import Poller

    a, b = socket.socketpair()
    ep = select.epoll()
    ep.register(a.fileno(), select.EPOLLIN)
    poller = Poller(ep, 8)
    try:
        started = time.monotonic()
        assert poller.poll(0.0501) == []
        assert time.monotonic() - started >= 0.05
        started = time.monotonic()
        assert poller.poll(0.0001) == []                        # rounded up, not down to 0
        assert time.monotonic() - started >= 0.0009
        sender = threading.Timer(0.05, b.send, (b"x",))
        sender.start()
        started = time.monotonic()
        assert poller.poll(30) == [(a.fileno(), select.EPOLLIN)]
        assert time.monotonic() - started < 10
        sender.join()
    finally:
        ep.close()
        a.close()
        b.close()
    with pytest.raises(OSError) as exc:         # (the fd is the caller's: the epoll object says ValueError)
        poller.poll(0)
    assert exc.value.errno == errno.EBADF


def test_a_signal_during_the_compiled_poll_runs_its_handler():
    """A signal that interrupts a waiting poll: its handler runs at once; an exception it raises
    comes out of ``poll``; one that returns leaves an empty batch (the loop polls again with a
    new timeout), well before the timeout."""
    import signal
    import threading
    import time

    from zcopy.sockio import Poller

    class Interrupted(Exception):
        pass

    calls = []

    def quiet(signum, frame):
        calls.append(signum)

    def loud(signum, frame):
        raise Interrupted

    a, b = socket.socketpair()
    ep = select.epoll()
    ep.register(a.fileno(), select.EPOLLIN)
    poller = Poller(ep, 8)
    main = threading.main_thread().ident
    previous = signal.getsignal(signal.SIGUSR1)
    try:
        for handler in (quiet, loud):
            signal.signal(signal.SIGUSR1, handler)
            kicker = threading.Timer(0.1, signal.pthread_kill, (main, signal.SIGUSR1))
            kicker.start()
            started = time.monotonic()
            if handler is quiet:
                assert poller.poll(20) == []
                assert calls == [signal.SIGUSR1]
            else:
                with pytest.raises(Interrupted):
                    poller.poll(20)
            assert time.monotonic() - started < 10
            kicker.join()
    finally:
        signal.signal(signal.SIGUSR1, previous)
        ep.close()
        a.close()
        b.close()


def test_the_compiled_poller_takes_the_epoll_object_s_timeouts():
    """None and negative wait without limit, a negative fraction of a millisecond rounds up to 0,
    NaN is a ValueError and a timeout past INT_MAX milliseconds an OverflowError, as the epoll
    object has them; the Poller holds its epoll object (a new epoll cannot take over its fd)."""
    import threading

    from zcopy.sockio import Poller

    a, b = socket.socketpair()
    ep = select.epoll()
    ep.register(a.fileno(), select.EPOLLIN)
    try:
        poller = Poller(ep, 8)
        assert poller.poll(-0.0004) == ep.poll(-0.0004) == []     # ceil: 0 ms, no wait
        for endless in (None, -1, -5.5):
            sender = threading.Timer(0.05, b.send, (b"x",))
            sender.start()
            assert poller.poll(endless) == [(a.fileno(), select.EPOLLIN)]
            sender.join()
            a.recv(16)
        for bad, error in ((float("nan"), ValueError), (float("inf"), OverflowError), (3e6, OverflowError)):
            with pytest.raises(error):
                ep.poll(bad)
            with pytest.raises(error):
                poller.poll(bad)
    finally:
        ep.close()
        a.close()
        b.close()
    poll = Poller(select.epoll(), 8).poll       # the only reference to that epoll object
    other = select.epoll()
    with other:
        assert poll.__self__ is not None and poll(0) == []
        fds = {other.fileno()}
        assert len(fds) == 1 and poll(0) == []


BUSY_LOOP = textwrap.dedent("""
    import functools, socket, sys, threading, time, types
    from zcopy import loop

    class Busy(loop.ListenerLoop):
        def admit(self, sock, addr): sock.close()
        def connection_count(self): return 0
        def count_error(self, kind): pass
        def on_drain(self): pass
        def shutdown(self): pass

    listener = socket.create_server(("127.0.0.1", 0))
    worker = Busy(listener, 16)
    item = types.SimpleNamespace(state=1)
    item.run = functools.partial(worker.ready.append, item)     # C work, never done: always ready
    worker.ready.append(item)
    counted = [0]
    def spin():
        while counted[0] >= 0:
            counted[0] += 1
    threading.Thread(target=spin, daemon=True).start()
    threading.Timer(0.5, worker.stop).start()
    started = time.monotonic()
    code = worker.run(install_signals=False)
    print(code, round(time.monotonic() - started, 2), counted[0] > 1000)
""")


def test_a_compiled_loop_busy_with_c_work_still_lets_other_threads_run():
    """A loop whose ready queue never empties polls with timeout 0 every turn, and when all its
    work is C code (here ``ready.append``; in serve, a memory body sent through SocketIO) no
    bytecode boundary hands the GIL over: the poll itself must release it. Holding it across a
    zero-timeout poll (the first version of Poller) starved every other thread: ``stop()`` from a
    timer thread never ran and the loop never ended (in a child process here, so that the hang
    is a failure and not a hung suite)."""
    import subprocess
    import sys

    try:
        out = subprocess.run([sys.executable, "-c", BUSY_LOOP], capture_output=True, text=True, timeout=30,
                             cwd=os.path.dirname(PACKAGE))
    except subprocess.TimeoutExpired:
        pytest.fail("the loop never saw stop() from another thread: its poll kept the GIL")
    assert out.returncode == 0, out.stderr[-2000:]
    code, took, others_ran = out.stdout.split()
    assert code == "0" and float(took) < 10 and others_ran == "True"


def test_the_loop_polls_through_the_compiled_poller():
    from zcopy import loop
    from zcopy.sockio import Poller

    ep = select.epoll()
    with ep:
        poll = loop.poller(ep)
        assert isinstance(poll.__self__, Poller) and poll(0) == []


def test_wall_second_is_time_time_s_second_and_the_date_header_takes_it():
    import time

    from zcopy import sockio
    from zcopy.http import headers

    assert headers.wall_second is sockio.wall_second
    for _ in range(3):
        before = int(time.time())
        got = sockio.wall_second()
        after = int(time.time())
        # (time.time's float may round up to the next second in its last ~120 ns: the clock does not)
        assert before - 1 <= got <= after and type(got) is int
    line = headers.DateHeader().get()
    second = sockio.wall_second()
    assert line in (b"Date: " + headers.http_date(s).encode() + b"\r\n" for s in (second - 1, second))


def test_pure_or_a_changed_pyx_keeps_the_extension_out(tmp_path):
    """ZCOPY_PURE=1, or sockio.pyx edited since the build: the transport takes the socket's methods,
    and the extension cannot be imported (there is no .py to run instead)."""
    root = os.path.dirname(PACKAGE)
    got = report(root)
    assert got["compiled"] and got["recv"] == "SocketIO" and got["imported"].endswith(".so")
    got = report(root, ZCOPY_PURE="1")
    assert not got["compiled"] and got["recv"] == "socket"
    assert got["imported"].startswith("ImportError: zcopy.sockio has no .py") and "ZCOPY_PURE=1" in got["imported"]
    copy = tmp_path / "tree"
    shutil.copytree(PACKAGE, copy / "zcopy", ignore=shutil.ignore_patterns("__pycache__", "*.c"))
    pyx = copy / "zcopy" / "sockio.pyx"
    pyx.write_text(pyx.read_text() + "\n# changed after the build\n")
    got = report(str(copy))
    assert not got["compiled"] and got["recv"] == "socket" and got["imported"].startswith("ImportError")
    assert got["summary"] == "Python: zcopy.sockio changed since the build"
