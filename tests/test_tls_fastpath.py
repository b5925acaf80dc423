"""The keep-alive HTTPS hot path (zcopy/tlstransport.py): a small watched file leaves from its
held bytes (no read of the file, one write per reply), and requests that arrive in several TLS
records at once (a head split over records, pipelined requests in one record or in one record
each, a burst larger than one read) are all answered, in order: the transport must not leave a
record in the kernel behind an edge-triggered wakeup that already came."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import threading
import time

import pytest

from conftest import needs_tool
from serverutil import Server, connect, read_response
from zcopy.tlstransport import _ReadAhead

pytestmark = needs_tool("openssl")


@pytest.fixture(scope="module", params=["read-ahead", "no-read-ahead"])
def server(tmp_path_factory, request):
    """OpenSSL reading ahead (user-space TLS, the usual way), and not (kTLS connections, or a Python
    whose ``_ssl`` layout the transport does not know): ``ZCOPY_TLS_READ_AHEAD=off``."""
    root = tmp_path_factory.mktemp("www")
    (root / "a").write_bytes(b"a" * 1000)
    (root / "b").write_bytes(b"b" * 2000)
    (root / "big.bin").write_bytes(b"B" * 300_000)      # above --small-reply-max: read from the file
    env = {"ZCOPY_TLS_READ_AHEAD": "on" if request.param == "read-ahead" else "off"}
    with Server(root, "--small-reply-max", "16KiB", tls=True, env=env) as s:
        s.read_ahead = request.param == "read-ahead" and _ReadAhead.functions() is not None
        yield s


class Tracer:
    """strace attached to a running worker; lines collected as they come."""

    def __init__(self, pid: int, calls: str) -> None:
        self.proc = subprocess.Popen(["strace", "-f", "-e", f"trace={calls}", "-p", str(pid)],
                                     stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.attached = threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        assert self.attached.wait(10), "strace did not attach"

    def _read(self) -> None:
        for line in self.proc.stderr:
            if "attached" in line:
                self.attached.set()
            self.lines.append(line.rstrip("\n"))

    def calls(self, name: str) -> list[str]:
        return [line for line in self.lines if re.sub(r"^\[pid\s+\d+\]\s+", "", line).startswith(name + "(")]

    def wait_for(self, name: str, count: int, timeout: float = 10.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while len(self.calls(name)) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.calls(name)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self.reader.join(10)


def _get(s, path: str) -> bytes:
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    status, _, body, _ = read_response(s)
    assert status == 200
    return body


def _until_strong_etag(s, path: str) -> None:
    """Ask until the reply carries the content-digest ETag: the file's entry is rebuilt once the
    digest is known (zcopy/server/digests.py), and that rebuild reads the held bytes again."""
    deadline = time.monotonic() + 10
    while True:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        status, headers, _, _ = read_response(s)
        assert status == 200
        if headers["etag"].startswith('"z1-'):
            return
        assert time.monotonic() < deadline, headers
        time.sleep(0.02)


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace")
def test_a_small_file_over_tls_leaves_from_the_held_bytes_in_one_write(server):
    worker = server.worker_pids()[0]
    with connect(server.port) as s:
        _until_strong_etag(s, "/a")     # the entry is final and its bytes are held
        tracer = Tracer(worker, "read,write,pread64,preadv,preadv2,sendfile,ioctl")
        try:
            bodies = [_get(s, "/a") for _ in range(5)]
            writes = tracer.wait_for("write", 5)
        finally:
            tracer.stop()
        assert bodies == [b"a" * 1000] * 5
        assert len(writes) == 5, tracer.lines           # one TLS record, one write per reply
        if server.read_ahead:                           # (this Python: the worker's too)
            # OpenSSL reads ahead: one read per request (not header, then record), and no FIONREAD
            assert len(tracer.calls("read")) == 5, tracer.lines
            assert not tracer.calls("ioctl"), tracer.lines
        else:                                           # header, then record; one FIONREAD
            assert len(tracer.calls("read")) == 10, tracer.lines
            assert len(tracer.calls("ioctl")) == 5, tracer.lines
        for name in ("pread64", "preadv", "preadv2", "sendfile"):
            assert not tracer.calls(name), tracer.lines  # nothing read from the file
        # A larger file is still read from the file (the copy path), and its bytes are right.
        assert _get(s, "/big.bin") == b"B" * 300_000


def _records(client, pieces: list[bytes]) -> bytes:
    """The ciphertext of ``pieces``, one TLS record each (a TlsClient over memory BIOs)."""
    for piece in pieces:
        client.obj.write(piece)
    return client.outgoing.read()


def _bodies(client, n: int) -> list[bytes]:
    return [read_response(client)[2] for _ in range(n)]


def test_a_head_split_over_two_records_in_one_segment_is_answered(server):
    with connect(server.port) as s:
        s.raw.sendall(_records(s, [b"GET /a HTTP/1.1\r\nHo", b"st: t\r\n\r\n"]))
        assert _bodies(s, 1) == [b"a" * 1000]
        # ... and the connection goes on (nothing was left in the kernel or in OpenSSL)
        assert _get(s, "/b") == b"b" * 2000


@pytest.mark.parametrize("per_record", [False, True], ids=["one-record", "record-each"])
def test_pipelined_requests_over_tls_are_all_answered_in_order(server, per_record):
    names = [b"a", b"b", b"big.bin"] * 3
    reqs = [b"GET /%s HTTP/1.1\r\nHost: t\r\n\r\n" % name for name in names]
    with connect(server.port) as s:
        s.raw.sendall(_records(s, reqs if per_record else [b"".join(reqs)]))
        want = {b"a": b"a" * 1000, b"b": b"b" * 2000, b"big.bin": b"B" * 300_000}
        assert _bodies(s, len(names)) == [want[name] for name in names]
        assert _get(s, "/a") == b"a" * 1000


def test_a_pipelined_burst_larger_than_one_read_is_all_answered(server):
    """Over 64 KiB of requests, one TLS record each, written before any reply is read: more than
    the connection takes in one read, so it must come back for the rest without a new edge."""
    n = 1500
    reqs = [b"GET /%s HTTP/1.1\r\nHost: t\r\n\r\n" % (b"a" if i % 3 else b"b") for i in range(n)]
    with connect(server.port) as s:
        data = _records(s, reqs)
        assert len(data) > 65536
        writer = threading.Thread(target=s.raw.sendall, args=(data,))
        writer.start()
        try:
            bodies = _bodies(s, n)
        finally:
            writer.join(30)
    assert bodies == [b"a" * 1000 if i % 3 else b"b" * 2000 for i in range(n)]


def test_records_that_fill_the_read_ahead_buffer_are_all_answered(server):
    """Five 12 KB requests, one TLS record each, arriving as one segment (one edge). OpenSSL reading
    ahead fills its 16.7 KiB buffer with the first record and part of the second, then reads exactly
    the rest of the second: it holds nothing more, yet the kernel still holds three records. The
    transport must ask the kernel before it says "drained", or they wait for an edge that never comes."""
    pad = b"x" * 12000
    reqs = [b"GET /a HTTP/1.1\r\nHost: t\r\nX-Pad: %s\r\n\r\n" % pad for _ in range(5)]
    with connect(server.port) as s:
        data = _records(s, reqs)
        assert 5 * 12000 < len(data) < 65000            # one loopback segment
        s.raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
        s.raw.sendall(data)
        s.raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)
        assert _bodies(s, 5) == [b"a" * 1000] * 5
        assert _get(s, "/b") == b"b" * 2000


def test_the_rest_of_a_held_record_and_records_after_it_in_one_segment_are_all_answered(server):
    """A record's first half arrives behind the request before it: OpenSSL holds it, the socket is
    then empty. Its second half arrives with two more records, in one segment (one edge). OpenSSL
    reads exactly the rest of the record (no more, reading ahead or not): the two records after it
    are in the kernel, behind the edge already taken, and must not be left there."""
    def record(name: bytes) -> bytes:
        return _records(s, [b"GET /%s HTTP/1.1\r\nHost: t\r\n\r\n" % name])

    with connect(server.port) as s:
        r1, r2, r3, r4 = record(b"a"), record(b"b"), record(b"a"), record(b"b")
        half = len(r2) // 2
        s.raw.sendall(r1 + r2[:half])
        assert _bodies(s, 1) == [b"a" * 1000]         # the half record is held by now
        s.raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
        s.raw.sendall(r2[half:] + r3 + r4)
        s.raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)
        assert _bodies(s, 3) == [b"b" * 2000, b"a" * 1000, b"b" * 2000]


def test_a_client_that_closes_without_close_notify_ends_quietly(server):
    with connect(server.port) as s:
        assert _get(s, "/a") == b"a" * 1000
        s.raw.close()                               # a TCP FIN, no close_notify (a "ragged EOF")
    with connect(server.port) as s:                 # the worker serves on
        assert _get(s, "/b") == b"b" * 2000
    assert server.proc.poll() is None
    assert os.path.exists(f"/proc/{server.worker_pids()[0]}")
