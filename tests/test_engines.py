"""Every engine, driven by a real epoll loop against a deliberately slow peer.

Send engines copy files of awkward sizes (0, 1, a page minus one, a page, a
pipe plus one, 3 MiB + 7), whole and as ranges, into a non-blocking Unix
socket with a small send buffer, while a reader thread drains it slowly; the
received bytes must hash the same as the file range. Receive engines write
what a slow writer sends at an offset, leaving the rest of the file alone.
"""

from __future__ import annotations

import hashlib
import os
import re
import select
import socket
import threading
import time
from collections import Counter

import pytest

from zcopy.engines import RECV_ENGINES, SEND_ENGINES, FileShrank, PeerClosed, Progress, create
from zcopy.pipes import PipePool
from tests.conftest import needs_tool
from tests.stracing import START, call_name, strace_lines

SIZES = [0, 1, 4095, 4096, 65537, (3 << 20) + 7]
SNDBUF = 32 << 10


def ranges(size: int) -> list[tuple[int, int]]:
    """The whole file and an interior range (unaligned at both ends)."""
    offset = size // 3
    return [(0, size), (offset, size - offset - size // 7)]


@pytest.fixture
def make_file(tmp_path):
    def make(size: int, name: str = "data") -> tuple[int, bytes]:
        data = os.urandom(size)
        path = tmp_path / name
        path.write_bytes(data)
        fd = os.open(path, os.O_RDWR)
        opened.append(fd)
        return fd, data

    opened: list[int] = []
    yield make
    for fd in opened:
        os.close(fd)


class SlowReader(threading.Thread):
    """Reads the far end in small gulps with pauses; hashes what arrives."""

    def __init__(self, sock: socket.socket, start_reading: threading.Event | None = None) -> None:
        super().__init__(daemon=True)
        self.sock = sock
        self.digest = hashlib.sha256()
        self.received = 0
        self.go = start_reading

    def run(self) -> None:
        if self.go is not None:
            self.go.wait(10)
        gulps = 0
        while chunk := self.sock.recv(8192):
            self.digest.update(chunk)
            self.received += len(chunk)
            gulps += 1
            if gulps % 32 == 0:
                time.sleep(0.001)


@pytest.fixture
def sock_pair():
    """(sender, receiver): sender non-blocking with a small send buffer so
    EAGAIN happens often."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SNDBUF)
    a.setblocking(False)
    b.settimeout(20)
    yield a, b
    a.close()
    b.close()


def drive(xfer, sock_fd: int, event: int, on_blocked=None) -> Counter:
    """A minimal event loop: step; on BLOCKED wait for ``event`` with epoll."""
    states: Counter = Counter()
    ep = select.epoll()
    try:
        ep.register(sock_fd, event)
        while True:
            state = xfer.step(sock_fd)
            states[state] += 1
            if state is Progress.DONE:
                return states
            if state is Progress.BLOCKED:
                if on_blocked:
                    on_blocked(xfer)
                assert ep.poll(10), "socket never became ready"
    finally:
        ep.close()


@pytest.fixture
def engine_named():
    made = []

    def make(name: str, **kw):
        engine = create(name, **kw)
        made.append(engine)
        return engine

    yield make
    for engine in made:
        engine.close()


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", SEND_ENGINES)
def test_send_whole_and_ranges(fd_guard, name, size, make_file, engine_named):
    fd, data = make_file(size)
    engine = engine_named(name, budget=256 << 10)
    for offset, count in ranges(size):
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SNDBUF)
        a.setblocking(False)
        b.settimeout(20)
        with a, b:
            reader = SlowReader(b)
            reader.start()
            xfer = engine.start_send(fd, offset, count)
            try:
                drive(xfer, a.fileno(), select.EPOLLOUT)
            finally:
                xfer.close()
            assert xfer.remaining == 0
            a.shutdown(socket.SHUT_WR)
            reader.join(20)
            assert reader.received == count
            assert reader.digest.hexdigest() == hashlib.sha256(data[offset:offset + count]).hexdigest()
    assert engine.stats.bytes_sent == sum(c for _, c in ranges(size))
    assert (engine.stats.syscalls > 0) == (size > 0)


@pytest.mark.parametrize("name", SEND_ENGINES)
def test_budget_returns_more_then_finishes(fd_guard, name, make_file, engine_named):
    """With a socket that never blocks (big buffer, data fits), a small budget
    still hands control back: MORE, not one long step."""
    fd, data = make_file(200_000)
    engine = engine_named(name, budget=16 << 10)
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with a, b:
        a.setblocking(False)
        reader = SlowReader(b)
        reader.start()
        xfer = engine.start_send(fd, 0, len(data))
        try:
            states = drive(xfer, a.fileno(), select.EPOLLOUT)
        finally:
            xfer.close()
        a.shutdown(socket.SHUT_WR)
        reader.join(20)
    assert states[Progress.MORE] >= 1
    assert reader.digest.hexdigest() == hashlib.sha256(data).hexdigest()


def test_splice_flushes_bytes_left_in_the_pipe_after_eagain(fd_guard, make_file, sock_pair):
    """The classic splice bug: EAGAIN on pipe->socket with bytes still in the
    pipe. They must go out first, in order, on the next writable event."""
    pool = PipePool(256 << 10)
    engine = create("splice", pipe_pool=pool)
    fd, data = make_file((3 << 20) + 7)
    a, b = sock_pair
    reader = SlowReader(b)
    reader.start()
    parked = []
    xfer = engine.start_send(fd, 0, len(data))
    try:
        drive(xfer, a.fileno(), select.EPOLLOUT, on_blocked=lambda x: parked.append(x.pipe.pending))
    finally:
        xfer.close()
    a.shutdown(socket.SHUT_WR)
    reader.join(20)
    assert any(p > 0 for p in parked), "never saw EAGAIN with bytes parked in the pipe"
    assert reader.digest.hexdigest() == hashlib.sha256(data).hexdigest()
    assert pool.idle == 1 and pool.discarded == 0  # empty pipe went back to the pool
    pool.close()


def test_splice_aborted_transfer_does_not_pool_a_dirty_pipe(fd_guard, make_file, sock_pair):
    pool = PipePool(256 << 10)
    engine = create("splice", pipe_pool=pool)
    fd, data = make_file(1 << 20)
    a, _ = sock_pair
    xfer = engine.start_send(fd, 0, len(data))
    assert xfer.step(a.fileno()) is Progress.BLOCKED  # nobody reads: socket buffer fills
    assert xfer.pipe.pending > 0
    xfer.close()
    xfer.close()  # idempotent
    assert pool.idle == 0 and pool.discarded == 1
    pool.close()


@pytest.mark.parametrize("name", SEND_ENGINES)
def test_truncated_mid_transfer_raises_file_shrank(fd_guard, name, make_file, sock_pair, engine_named):
    fd, data = make_file((3 << 20) + 7)
    engine = engine_named(name, budget=1 << 20)
    a, b = sock_pair
    go = threading.Event()
    reader = SlowReader(b, start_reading=go)
    reader.start()
    xfer = engine.start_send(fd, 0, len(data))
    try:
        while (state := xfer.step(a.fileno())) is not Progress.BLOCKED:
            assert state is Progress.MORE
        assert 0 < xfer.remaining < len(data)
        os.ftruncate(fd, 4096)  # shorter than what was already taken from the file
        go.set()
        with pytest.raises(FileShrank):
            drive(xfer, a.fileno(), select.EPOLLOUT)
    finally:
        xfer.close()
        a.shutdown(socket.SHUT_WR)
        reader.join(20)
    assert reader.received < len(data)


@pytest.mark.parametrize("name", SEND_ENGINES)
def test_file_shorter_than_count_raises_file_shrank(fd_guard, name, make_file, sock_pair, engine_named):
    fd, data = make_file(10_000)
    engine = engine_named(name)
    a, b = sock_pair
    reader = SlowReader(b)
    reader.start()
    xfer = engine.start_send(fd, 5000, 6000)
    try:
        with pytest.raises(FileShrank):
            drive(xfer, a.fileno(), select.EPOLLOUT)
    finally:
        xfer.close()
        a.shutdown(socket.SHUT_WR)
        reader.join(20)
    assert reader.received <= 5000


@pytest.mark.parametrize("name", SEND_ENGINES)
def test_peer_reset_propagates_oserror(fd_guard, name, make_file, engine_named):
    fd, data = make_file(1 << 20)
    engine = engine_named(name)
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with a:
        a.setblocking(False)
        b.close()
        xfer = engine.start_send(fd, 0, len(data))
        try:
            with pytest.raises((BrokenPipeError, ConnectionResetError)):
                xfer.step(a.fileno())
        finally:
            xfer.close()


class SlowWriter(threading.Thread):
    """Writes ``data`` in small pieces with pauses, then closes (or stops early)."""

    def __init__(self, sock: socket.socket, data: bytes, stop_after: int | None = None) -> None:
        super().__init__(daemon=True)
        self.sock, self.data, self.stop_after = sock, data, stop_after

    def run(self) -> None:
        view = memoryview(self.data)[: self.stop_after]
        for i, start in enumerate(range(0, len(view), 16384)):
            self.sock.sendall(view[start:start + 16384])
            if i % 16 == 0:
                time.sleep(0.001)
        self.sock.shutdown(socket.SHUT_WR)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", RECV_ENGINES)
def test_receive_writes_exactly_at_offset(fd_guard, name, size, tmp_path, engine_named):
    engine = engine_named(name, budget=256 << 10)
    for offset, count in ranges(size):
        payload = os.urandom(count)
        filler = b"\xaa" * (size + 100)
        path = tmp_path / f"upload-{offset}"
        path.write_bytes(filler)
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        fd = os.open(path, os.O_RDWR)
        try:
            a.setblocking(False)
            writer = SlowWriter(b, payload)
            writer.start()
            xfer = engine.start_recv(fd, offset, count)
            try:
                drive(xfer, a.fileno(), select.EPOLLIN)
            finally:
                xfer.close()
            writer.join(20)
        finally:
            os.close(fd)
            a.close()
            b.close()
        got = path.read_bytes()
        assert got[offset:offset + count] == payload
        assert got[:offset] == filler[:offset] and got[offset + count:] == filler[offset + count:]
    assert engine.stats.bytes_received == sum(c for _, c in ranges(size))


@pytest.mark.parametrize("name", RECV_ENGINES)
def test_receive_early_eof_raises_peer_closed(fd_guard, name, tmp_path, engine_named):
    engine = engine_named(name)
    payload = os.urandom(100_000)
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    fd = os.open(tmp_path / "upload", os.O_RDWR | os.O_CREAT)
    try:
        a.setblocking(False)
        writer = SlowWriter(b, payload, stop_after=40_000)
        writer.start()
        xfer = engine.start_recv(fd, 0, len(payload))
        try:
            with pytest.raises(PeerClosed):
                drive(xfer, a.fileno(), select.EPOLLIN)
        finally:
            xfer.close()
        writer.join(20)
        assert os.pread(fd, 100_000, 0) == payload[:40_000]
    finally:
        os.close(fd)
        a.close()
        b.close()


def test_registry_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown engine"):
        create("carrier_pigeon")
    with pytest.raises(ValueError):
        create("sendfile", budget=0)


def test_engines_declare_zero_copy_honestly(engine_named):
    assert {n: engine_named(n).zero_copy for n in ("sendfile", "splice", "mmap_send", "read_send",
                                                   "recv_pwrite")} == {
        "sendfile": True, "splice": True, "mmap_send": False, "read_send": False, "recv_pwrite": False}


# -- what the kernel sees (strace) ----------------------------------------------------

ENGINE_SCRIPT = """\
import os, socket, threading
from zcopy.engines import create
from zcopy.measure import engine_copier
"""


@needs_tool("strace")
def test_sendfile_asks_for_at_most_the_per_call_cap(tmp_path):
    """A 3 GiB (sparse) file with a 4 GiB budget: each sendfile(2) asks for
    0x7ffff000 bytes at most (the man page's cap), never the whole file."""
    from zcopy.engines.sendfile import MAX_CHUNK

    script = ENGINE_SCRIPT + f"""\
from zcopy.engines import Progress
with open("sparse", "wb") as f:
    f.truncate(3 << 30)
fd = os.open("sparse", os.O_RDONLY)
a, b = socket.socketpair()
a.setblocking(False)
xfer = create("sendfile", budget=4 << 30).start_send(fd, 0, 3 << 30)
{START}
assert xfer.step(a.fileno()) is Progress.BLOCKED
"""
    calls = [line for line in strace_lines(tmp_path, script, "sendfile") if call_name(line) == "sendfile"]
    counts = [int(re.search(r", (\d+)\) += ", line).group(1)) for line in calls]
    assert counts and counts[0] == MAX_CHUNK == 0x7FFFF000, calls
    assert all(c <= MAX_CHUNK for c in counts), calls


@needs_tool("strace")
def test_mmap_send_unmaps_each_window_after_dontneed(tmp_path):
    """10 MiB + 5 through 4 MiB windows: three mappings of the file, each
    followed by madvise(MADV_DONTNEED) and munmap of exactly that mapping
    before the next is made, so at most one window is ever mapped."""
    size = (10 << 20) + 5
    script = ENGINE_SCRIPT + f"""\
with open("data", "wb") as f:
    f.write(os.urandom({size}))
fd = os.open("data", os.O_RDONLY)
a, b = socket.socketpair()
got = []
reader = threading.Thread(target=lambda: got.append(sum(iter(lambda: len(b.recv(1 << 20)), 0))))
reader.start()
engine = create("mmap_send")
{START}
engine_copier(engine)(a, fd, {size})
a.shutdown(socket.SHUT_WR)
reader.join()
assert got == [{size}], got
"""
    lines = strace_lines(tmp_path, script, "mmap,madvise,munmap")
    windows = []  # (address, length) of each mapping of the file, in order
    events = []
    for line in lines:
        if m := re.match(r"mmap\(NULL, (\d+), PROT_READ, MAP_SHARED, (\d+), (0x[0-9a-f]+|0)\)\s+= (0x[0-9a-f]+)", line):
            windows.append((m.group(4), int(m.group(1))))
            events.append(("map", m.group(4)))
        elif m := re.match(r"madvise\((0x[0-9a-f]+), (\d+), MADV_DONTNEED\)\s+= 0", line):
            events.append(("dontneed", m.group(1)))
        elif m := re.match(r"munmap\((0x[0-9a-f]+), (\d+)\)\s+= 0", line):
            events.append(("unmap", m.group(1)))
    assert [length for _, length in windows] == [4 << 20, 4 << 20, (2 << 20) + 5], lines
    ours = {addr for addr, _ in windows}
    sequence = [(kind, addr) for kind, addr in events if addr in ours]
    expected = []
    for addr, _ in windows:
        expected += [("map", addr), ("dontneed", addr), ("unmap", addr)]
    # Addresses may be reused by the next window; the order per window is what matters.
    assert sequence == expected, sequence


@pytest.mark.parametrize("name", RECV_ENGINES)
def test_receive_refuses_an_append_only_file(fd_guard, name, tmp_path, engine_named):
    """On Linux pwrite(2) on an O_APPEND fd appends, whatever the offset: the
    receive engines refuse it up front instead of writing at the wrong place."""
    path = tmp_path / "log"
    path.write_bytes(b"x" * 100)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        assert os.pwrite(fd, b"y", 0) == 1 and path.read_bytes() == b"x" * 100 + b"y"  # the trap itself
        with pytest.raises(ValueError, match="O_APPEND"):
            engine_named(name).start_recv(fd, 10, 5)
    finally:
        os.close(fd)


def test_sendfile_send_once_moves_what_the_socket_takes(fd_guard, make_file, sock_pair, engine_named):
    """One call: all of a small range; part of a big one once the socket
    buffer is full, then 0 (full, nothing lost); FileShrank past the end."""
    a, b = sock_pair
    engine = engine_named("sendfile")
    fd, data = make_file(4 << 20)
    assert engine.send_once(a.fileno(), fd, 0, 100) == 100
    assert b.recv(100, socket.MSG_WAITALL) == data[:100]
    offset = 100
    while (n := engine.send_once(a.fileno(), fd, offset, len(data) - offset)):
        assert 0 < n < len(data) - offset      # the small send buffer takes part of it
        offset += n
    assert offset < len(data)                  # 0: full, not the end of the file
    reader = SlowReader(b)
    reader.start()
    xfer = engine.start_send(fd, offset, len(data) - offset)
    drive(xfer, a.fileno(), select.EPOLLOUT)
    a.shutdown(socket.SHUT_WR)
    reader.join(10)
    assert reader.received == len(data) - 100
    assert reader.digest.digest() == hashlib.sha256(data[100:]).digest()
    assert engine.stats.bytes_sent == len(data)
    with pytest.raises(FileShrank):
        engine.send_once(a.fileno(), fd, len(data), 10)


def test_only_stateless_engines_offer_send_once(engine_named):
    assert {n: engine_named(n).send_once is not None for n in SEND_ENGINES} == {
        "sendfile": True, "splice": False, "mmap_send": False, "read_send": False}
