"""The transport seam (zcopy/transport.py): a transport that cannot take
sendfile/splice (as TLS without kTLS cannot) gets every byte through its
``send`` and ``recv``, and the replies and uploads are the same.

The transport here is a real one over a real TCP socket; it only declares
``zero_copy = False`` and counts what passes through it. The worker, its
responder, files and engines are the production ones.
"""

from __future__ import annotations

import os
import socket
import time

from zcopy.transport import PlainTransport


class CopyingTransport(PlainTransport):
    """TCP that must see every byte (so the engines may not use its fd)."""

    __slots__ = ("sent", "received")
    zero_copy = False

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(sock)
        self.sent = self.received = 0
        self.send = self._send
        self.recv = self._recv

    def _send(self, data, flags: int = 0) -> int:
        n = self.sock.send(data, flags)
        self.sent += n
        return n

    def _recv(self, size: int) -> bytes:
        data = self.sock.recv(size)
        self.received += len(data)
        return data


def serve_one(worker, conn, client, until) -> bytes:
    """Run the worker's part for ``conn`` and read what the client gets
    until ``until(received)`` holds (or 10 s pass)."""
    received = bytearray()
    client.setblocking(False)
    deadline = time.monotonic() + 10
    while not until(received) and time.monotonic() < deadline:
        for fd, ev in worker.ep.poll(0.01):
            if fd == conn.fd:
                conn.on_event(ev)
        worker.executor.run_callbacks()     # work done off the loop (an upload's start, its commit)
        worker.opener.run_callbacks()       # ... and the opens of files not cached yet
        worker.body_writer.run_callbacks()  # ... and the writes of a body into its file
        batch, worker.ready[:] = worker.ready[:], []
        for c in batch:
            c.run()
        try:
            while chunk := client.recv(1 << 20):
                received += chunk
        except BlockingIOError:
            pass
    return bytes(received)


def test_a_copying_transport_carries_replies_and_uploads(tmp_path):
    from zcopy.server.config import ServeConfig
    from zcopy.server.connection import Connection
    from zcopy.server.worker import Worker

    data = os.urandom(3 << 20)                       # several engine budgets
    (tmp_path / "big.bin").write_bytes(data)
    listener = socket.create_server(("127.0.0.1", 0))
    worker = Worker(ServeConfig(root=str(tmp_path), prefetch=False, allow_write=True, token="t",
                                engine="sendfile", upload_engine="splice"), listener)
    client = socket.create_connection(listener.getsockname())
    server_side, addr = listener.accept()
    server_side.setblocking(False)
    transport = CopyingTransport(server_side)
    conn = Connection(worker, server_side, addr, transport)
    worker.conns[conn.fd] = conn
    worker.ep.register(conn.fd, worker.CONN_EVENTS)
    try:
        body = os.urandom(1 << 20)
        client.sendall(b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n"
                       b"GET /big.bin HTTP/1.1\r\nHost: t\r\nRange: bytes=100-199\r\n\r\n"
                       b"PUT /up.bin HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer t\r\n"
                       b"Content-Length: %d\r\n\r\n" % len(body) + body)
        got = serve_one(worker, conn, client, lambda r: r.count(b"HTTP/1.1 ") == 3 and r.endswith(b"\r\n\r\n"))
        first, rest = got.split(b"\r\n\r\n", 1)
        assert first.startswith(b"HTTP/1.1 200 ") and rest[:len(data)] == data
        second, rest = rest[len(data):].split(b"\r\n\r\n", 1)
        assert second.startswith(b"HTTP/1.1 206 ") and rest[:100] == data[100:200]
        assert rest[100:].startswith(b"HTTP/1.1 201 ")
        assert (tmp_path / "up.bin").read_bytes() == body
        # Every byte went through the transport; none through sendfile or splice.
        assert transport.sent >= len(data) + 100 and transport.received >= len(body)
        assert worker.engines["read_send"].stats.bytes_sent == len(data) + 100
        assert worker.engine.stats.bytes_sent == 0
        assert worker.upload_engine.stats.bytes_received == 0
    finally:
        conn.close()
        client.close()
        worker.shutdown()
        worker.finish(None)


def test_a_body_longer_than_a_step_leaves_corked_and_the_socket_is_uncorked_after_it(tmp_path):
    """A range sent in several engine calls is corked (TCP_CORK) while it leaves, so no call's
    short last segment goes out alone; the cork ends with the range (the socket's option, read
    each turn), and a body that leaves in one call is never corked."""
    from zcopy.server.config import ServeConfig
    from zcopy.server.connection import Connection
    from zcopy.server.worker import Worker

    data = os.urandom(5 << 20)                       # two and a half steps of the 2 MiB budget
    (tmp_path / "big.bin").write_bytes(data)
    (tmp_path / "small.bin").write_bytes(b"s" * 1000)
    listener = socket.create_server(("127.0.0.1", 0))
    worker = Worker(ServeConfig(root=str(tmp_path), prefetch=False, engine="sendfile"), listener)
    client = socket.create_connection(listener.getsockname())
    server_side, addr = listener.accept()
    server_side.setblocking(False)
    conn = Connection(worker, server_side, addr)
    worker.conns[conn.fd] = conn
    worker.ep.register(conn.fd, worker.CONN_EVENTS)

    def corked() -> int:
        return server_side.getsockopt(socket.IPPROTO_TCP, socket.TCP_CORK)

    def serve(request: bytes, done) -> tuple[bytes, set]:
        """Send ``request``, run the worker a turn at a time reading 64 KiB a turn (the body
        takes many turns), and note the socket's cork at each turn."""
        client.sendall(request)
        client.setblocking(False)
        received, seen = bytearray(), set()
        deadline = time.monotonic() + 20
        while not done(received) and time.monotonic() < deadline:
            for fd, ev in worker.ep.poll(0.01):
                if fd == conn.fd:
                    conn.on_event(ev)
            worker.opener.run_callbacks()
            batch, worker.ready[:] = worker.ready[:], []
            for c in batch:
                c.run()
            seen.add(corked())
            try:
                received += client.recv(65536)
            except BlockingIOError:
                pass
        return bytes(received), seen

    try:
        got, seen = serve(b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n",
                          lambda r: b"\r\n\r\n" in r and len(r.split(b"\r\n\r\n", 1)[1]) >= len(data))
        head, body = got.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 200 ") and body == data
        assert 1 in seen                             # corked while the body left
        assert corked() == 0                         # and not after it
        got, seen = serve(b"GET /small.bin HTTP/1.1\r\nHost: t\r\n\r\n", lambda r: r.endswith(b"s" * 1000))
        assert got.startswith(b"HTTP/1.1 200 ") and seen == {0}
    finally:
        conn.close()
        client.close()
        worker.shutdown()
        worker.finish(None)
