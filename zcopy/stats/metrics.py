"""``--metrics HOST:PORT``: Prometheus text and health checks on a separate listener.

Served by a small process of its own, forked by the supervisor (which binds
the socket at start, so a taken port is a startup error, and restarts the
process if it dies). Its loop is non-blocking (``selectors``): a scraper that
connects and sends nothing, or sends half a request, or never reads its
answer, holds one socket until ``CLIENT_TIMEOUT`` and never delays anyone
else. Requests are parsed by httptools; every answer closes its connection.

- ``/metrics`` (and ``/``): the aggregated snapshot of the server's workers,
  read from their published files (``zcopy.stats``), in the text format 0.0.4.
- ``/healthz``: 200 while the server serves (some worker's heartbeat is
  recent), else 503.
- ``/readyz``: 200 while serving; 503 from the first SIGTERM on (the
  lame-duck ``--drain-delay`` and the drain), so a balancer stops sending
  new requests before the listeners close.
"""

from __future__ import annotations

import os
import selectors
import socket
import time

from zcopy.loop import ACCEPT_BACKOFF
from zcopy.stats.location import Target, group_dir
from zcopy.stats.prometheus import render
from zcopy.stats.read import read_all

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: A client must have sent its request and taken its answer within this.
CLIENT_TIMEOUT = 5.0
MAX_CLIENTS = 64
MAX_REQUEST = 8192


def parse_hostport(text: str) -> tuple[str, int]:
    """``127.0.0.1:9100`` / ``[::1]:9100`` / ``:9100`` -> (host, port); ValueError otherwise."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def bind(host: str, port: int) -> socket.socket:
    """The listening socket (raises OSError), bound before any fork."""
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
        s.listen(64)
    except OSError:
        s.close()
        raise
    s.setblocking(False)
    return s


class _Client:
    __slots__ = ("sock", "parser", "url", "method", "complete", "out", "deadline", "size")

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        import httptools

        self.sock = sock
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.method = b""
        self.complete = False
        self.out = b""
        self.deadline = deadline
        self.size = 0

    # httptools callbacks. Only the first request counts (every answer closes):
    # one feed may hold pipelined ones, whose URLs would extend ours.
    def on_url(self, url: bytes) -> None:
        if not self.complete:
            self.url += url

    def on_message_complete(self) -> None:
        if not self.complete:
            self.complete = True
            self.method = self.parser.get_method()


class MetricsLoop:
    def __init__(self, listener: socket.socket, kind: str, group_pid: int, health) -> None:
        self.listener = listener
        self.target = Target(kind, group_pid, group_dir(kind, group_pid))
        self.group_pid = group_pid
        self.health = health
        self.sel = selectors.DefaultSelector()
        self.clients: dict[int, _Client] = {}
        self.resume_at: float | None = None       # the listener is out of the selector until then

    def run(self) -> int:
        self.listener.setblocking(False)
        self.sel.register(self.listener, selectors.EVENT_READ)
        while os.getppid() == self.group_pid:     # the supervisor is gone: so are we
            for key, events in self.sel.select(timeout=1.0 if self.resume_at is None else ACCEPT_BACKOFF):
                if key.fileobj is self.listener:
                    self._accept()
                else:
                    self._on_event(key.data, events)
            now = time.monotonic()
            if self.resume_at is not None and now >= self.resume_at:
                self.resume_at = None
                self.sel.register(self.listener, selectors.EVENT_READ)
            for client in [c for c in self.clients.values() if c.deadline <= now]:
                self._close(client)
        return 0

    def _accept(self) -> None:
        for _ in range(16):
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                # EMFILE and friends: the listener stays readable, so stop polling
                # it for a moment instead of spinning (as the workers do).
                self.sel.unregister(self.listener)
                self.resume_at = time.monotonic() + ACCEPT_BACKOFF
                return
            if len(self.clients) >= MAX_CLIENTS:   # make room: the oldest holder goes
                self._close(min(self.clients.values(), key=lambda c: c.deadline))
            sock.setblocking(False)
            client = _Client(sock, time.monotonic() + CLIENT_TIMEOUT)
            self.clients[sock.fileno()] = client
            self.sel.register(sock, selectors.EVENT_READ, client)

    def _on_event(self, client: _Client, events: int) -> None:
        if client.out:
            self._send(client)
            return
        try:
            data = client.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(client)
            return
        if not data:
            self._close(client)
            return
        client.size += len(data)
        import httptools

        try:
            client.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            client.on_message_complete()       # the head is read; we never switch protocols
        except httptools.HttpParserError:
            self._answer(client, 400, b"bad request\n")
            return
        if client.complete:
            self._respond(client)
        elif client.size > MAX_REQUEST:
            self._answer(client, 431, b"request too large\n")

    def _respond(self, client: _Client) -> None:
        if client.method not in (b"GET", b"HEAD"):
            self._answer(client, 405, b"GET or HEAD\n", [("Allow", "GET, HEAD")])
            return
        path = client.url.split(b"?", 1)[0]
        if path in (b"/metrics", b"/"):
            snap = read_all(self.target)
            if snap is None:
                self._answer(client, 503, b"no worker has published yet\n")
            else:
                self._answer(client, 200, render(snap).encode(), content_type=CONTENT_TYPE)
        elif path == b"/healthz":
            live, _ = self.health()
            self._answer(client, 200 if live else 503, b"ok\n" if live else b"no worker is making progress\n")
        elif path == b"/readyz":
            live, ready = self.health()
            self._answer(client, 200 if ready else 503,
                         b"ready\n" if ready else b"draining\n" if live else b"not serving\n")
        else:
            self._answer(client, 404, b"not found\n")

    def _answer(self, client: _Client, status: int, body: bytes, headers=(),
                content_type: str = "text/plain; charset=utf-8") -> None:
        from http import HTTPStatus

        lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}", f"Content-Type: {content_type}",
                 f"Content-Length: {len(body)}", "Connection: close", *(f"{k}: {v}" for k, v in headers)]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode()
        client.out = head if client.method == b"HEAD" else head + body
        self.sel.modify(client.sock, selectors.EVENT_WRITE, client)
        self._send(client)

    def _send(self, client: _Client) -> None:
        try:
            n = client.sock.send(client.out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(client)
            return
        client.out = client.out[n:]
        if not client.out:
            self._close(client)

    def _close(self, client: _Client) -> None:
        if self.clients.pop(client.sock.fileno(), None) is not None:
            self.sel.unregister(client.sock)
        client.sock.close()


def serve_metrics(listener: socket.socket, kind: str, group_pid: int, health) -> int:
    """The metrics process's body: serve until the supervisor is gone (or a
    signal ends us). ``health() -> (live, ready)``."""
    return MetricsLoop(listener, kind, group_pid, health).run()
