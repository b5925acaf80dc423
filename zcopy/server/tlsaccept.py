"""HTTPS in a worker: from an accepted socket to a ``Connection`` over a ``TlsTransport``.

A TLS connection starts as a ``Handshake`` in the worker's ``conns`` (so the loop dispatches its
events and the tick enforces its deadline, as for any connection) and is replaced there by a
``Connection`` once the handshake is done; the connection never knows it was TLS:

1. Peek the first byte (``MSG_PEEK``). A TLS record starts with 0x16 (handshake). Anything else is
   plain HTTP sent to the HTTPS port: a ``PlainAnswer`` reads that request's head and answers 400
   ("this port speaks HTTPS"), then closes, instead of leaving the client waiting for a TLS reply.
2. ``SSLContext.wrap_socket`` on the real socket (an ``SSLSocket``, never memory BIOs: kTLS needs
   OpenSSL to own the fd), non-blocking, ``do_handshake`` on every event until it stops asking
   for reads or writes. A client that never finishes it is closed at the deadline (the request
   head timeout, ``--header-timeout``), counted ``timed_out``; one that sends junk is
   ``failed``. Neither blocks the loop, so half-open handshakes cost an fd and a few KiB each and
   delay no one (tests/test_tls_serve.py: 300 of them).
3. Ask the socket whether OpenSSL put the TX keys in the kernel (``zcopy.tls.ktls_state``:
   ``getsockopt(SOL_TLS, TLS_TX)``). The ``TlsTransport`` takes the answer: kTLS TX means
   ``zero_copy`` (sendfile/splice through the kernel's encryption), otherwise every byte goes
   through OpenSSL in this process.

``--tls-redirect PORT``: a plain listener whose every request gets ``308 Permanent Redirect`` to
``https://HOST[:PORT]/target``. HOST is the request's own Host header with its port dropped, and
only when it is a plain DNS name or IP literal (anything else is 400): the redirect never sends a
client to a host it did not itself ask for, and the target is appended after the authority, so a
``//evil`` path stays a path. Served by the same workers (an extra fd in their loop).
"""

from __future__ import annotations

import re
import select
import socket
import ssl

from zcopy import http
from zcopy.loop import ACCEPT_BACKOFF
from zcopy.server.connection import FIRST_REQUEST_GRACE, Connection
from zcopy.tls import ktls_state
from zcopy.tlstransport import TlsStats, TlsTransport

_WANT = (ssl.SSLWantReadError, ssl.SSLWantWriteError)
TLS_HANDSHAKE_RECORD = b"\x16"
#: After answering a plain client, read (and drop) its leftovers this long before closing, so
#: the kernel does not reset the connection over unread bytes before the answer is read.
PLAIN_LINGER = 2.0
_CLOSED = 4          # the value of zcopy.server.connection.CLOSED (the loop skips closed objects)
_HOSTNAME = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252}))(?::[0-9]{1,5})?")


class TlsSettings:
    """What ``serve --tls-cert/--tls-key`` decided, made in the supervisor before any fork (the
    context is inherited by the workers; a SIGHUP that changes the files makes a new one and new
    workers)."""

    def __init__(self, cert: str, key: str, context: ssl.SSLContext, stamp: bytes, *,
                 ktls: bool = True, redirect: socket.socket | None = None, redirect_port: int | None = None,
                 ulp: bool = False) -> None:
        self.ulp = ulp                # the kernel attached the TLS ULP to a test socket at start
        self.cert = cert
        self.key = key
        self.context = context
        self.stamp = stamp            # sha256 of the cert and key files' bytes: what SIGHUP compares
        self.ktls = ktls
        self.redirect = redirect      # the bound --tls-redirect listener, or None
        self.redirect_port = redirect_port


class TlsServing:
    """A worker's TLS side: admits sockets into handshakes, serves the redirect port, counts."""

    def __init__(self, worker, settings: TlsSettings) -> None:
        self.worker = worker
        self.settings = settings
        self.context = settings.context
        self.stats = TlsStats()
        self.redirect = settings.redirect
        self.redirect_resume_at = 0.0     # the redirect listener is out of epoll until then (EMFILE)

    def start(self) -> None:
        if self.redirect is not None:
            self.redirect.setblocking(False)
            self.worker.add_fd(self.redirect.fileno(), lambda events: self._accept_redirects())

    def admit(self, sock: socket.socket, addr) -> None:
        self.worker.track(Handshake(self, sock, addr))

    def tick(self) -> None:
        """From the worker's tick: take the redirect listener back after an EMFILE pause."""
        if self.redirect_resume_at and self.worker.now >= self.redirect_resume_at and self.redirect is not None:
            self.redirect_resume_at = 0.0
            self.worker.ep.register(self.redirect.fileno(), select.EPOLLIN)

    def drain(self) -> None:
        if self.redirect_resume_at and self.redirect is not None:
            self.worker.ep.register(self.redirect.fileno(), select.EPOLLIN)   # (unregistered just below)
            self.redirect_resume_at = 0.0
        if self.redirect is not None:
            self.worker.ep.unregister(self.redirect.fileno())
            self.worker.handlers.pop(self.redirect.fileno(), None)
            self.redirect.close()
            self.redirect = None

    def snapshot(self) -> dict:
        return self.stats.snapshot(self.worker.engines)

    def _accept_redirects(self) -> None:
        worker = self.worker
        for _ in range(16):
            if self.redirect is None or self.redirect_resume_at:
                return
            try:
                sock, addr = self.redirect.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                # EMFILE and friends: the listener stays readable (level-triggered), so it leaves
                # epoll for a moment instead of spinning, as the main listener does.
                worker.count_error("accept_redirect")
                worker.ep.unregister(self.redirect.fileno())
                self.redirect_resume_at = worker.now + ACCEPT_BACKOFF
                return
            if worker.connection_count() >= worker.max_connections:
                sock.close()              # full: shed the redirect (its listener must not spin)
                worker.count_error("redirect_shed")
                continue
            sock.setblocking(False)
            worker.stats.accepted += 1
            answer = PlainAnswer(worker, sock, addr, self._redirect_answer)
            worker.conns[answer.fd] = answer
            worker.ep.register(answer.fd, worker.CONN_EVENTS)
            answer.run()

    def _redirect_answer(self, req: http.Request) -> bytes:
        date = self.worker.date.get()
        location = https_location(req, self.worker.config.port)
        if location is None:
            return http.error_response(400, date, reason="a redirect to https needs a valid Host header",
                                       close=True)
        body = f"Moved to {location}\n".encode("ascii")
        head = http.response_head(308, date, b"Content-Type: text/plain; charset=utf-8\r\n", len(body),
                                  extra=b"Location: " + location.encode("ascii") + b"\r\n", close=True)
        return head if req.method == "HEAD" else head + body


def https_location(req: http.Request, port: int) -> str | None:
    """``https://HOST[:port]TARGET`` for a plain request, or None when its Host is not a plain
    name or IP literal (no redirect is built from it)."""
    host = req.headers.get("host", "")
    if not _HOSTNAME.fullmatch(host):
        return None
    name = host[:host.index("]") + 1] if host.startswith("[") else host.partition(":")[0]
    if not name:
        return None
    target = req.target.decode("latin-1")
    if not target.startswith("/"):
        if target.lower().startswith("http://"):          # absolute-form: keep its path only
            slash = target.find("/", 7)
            target = target[slash:] if slash >= 0 else "/"
        else:
            return None                                   # "*" (OPTIONS) or authority-form
    if any(c in target for c in "\r\n\0 "):
        return None
    return f"https://{name}{'' if port == 443 else f':{port}'}{target}"


class Handshake:
    """A TLS connection until its handshake is done (then a Connection takes its fd in ``conns``)."""

    __slots__ = ("tls", "worker", "sock", "addr", "fd", "deadline", "state", "ssl")
    request = None            # what the stats' in-flight table asks of anything in conns
    upload = None
    reply = None

    def __init__(self, tls: TlsServing, sock: socket.socket, addr) -> None:
        self.tls = tls
        self.worker = tls.worker
        self.sock = sock
        self.addr = addr
        self.fd = sock.fileno()
        self.deadline = self.worker.now + self.worker.config.header_timeout
        self.state = 0
        self.ssl: ssl.SSLSocket | None = None

    def on_event(self, events: int) -> None:
        self.run()

    def run(self) -> None:
        stats = self.tls.stats
        try:
            if self.ssl is None:
                first = self.sock.recv(1, socket.MSG_PEEK)
                if not first:
                    self.close()
                    return
                if first != TLS_HANDSHAKE_RECORD:
                    stats.plain_http += 1
                    self._answer_plain()
                    return
                self.ssl = self.tls.context.wrap_socket(self.sock, server_side=True, do_handshake_on_connect=False)
            self.ssl.do_handshake()
        except _WANT:
            return
        except BlockingIOError:
            return
        except (ssl.SSLError, OSError):
            stats.failed += 1
            self.worker.stats.error("tls_handshake")
            self.close()
            return
        self._established()

    def _answer_plain(self) -> None:
        """Plain HTTP on the HTTPS port: a PlainAnswer takes this fd (already in epoll)."""
        port = self.worker.config.port

        def refuse(req: http.Request) -> bytes:
            where = https_location(req, port)
            reason = "this port speaks HTTPS" + (f": use {where}" if where else "")
            return http.error_response(400, self.worker.date.get(), reason=reason, close=True)

        answer = PlainAnswer(self.worker, self.sock, self.addr, refuse, deadline=self.deadline)
        self.state = _CLOSED
        self.worker.conns[self.fd] = answer
        answer.run()

    def _established(self) -> None:
        tls, sock = self.tls, self.ssl
        stats = tls.stats
        if tls.settings.ktls:
            state = ktls_state(sock)
            ktls, why = state.tx, state.reason or "kTLS: TX verified in the kernel (getsockopt SOL_TLS/TLS_TX)"
            if not ktls and not tls.settings.ulp:
                why = "the kernel has no tls module (TCP_ULP 'tls' refused at start; this socket has none)"
        else:
            ktls, why = False, "kTLS turned off (--tls-ktls off)"
        stats.handshakes += 1
        version = sock.version() or "?"
        stats.protocols[version] = stats.protocols.get(version, 0) + 1
        if ktls:
            stats.ktls_conns += 1
        else:
            stats.user_conns += 1
        stats.reason = why if ktls else f"user-space TLS: {why}"
        conn = Connection(self.worker, sock, self.addr, TlsTransport(sock, stats, ktls))
        self.state = _CLOSED
        self.worker.conns[self.fd] = conn
        if self.worker.draining_since is not None:
            conn.drain()
        conn.run()

    def on_timeout(self) -> None:
        self.tls.stats.timed_out += 1
        self.worker.stats.error("tls_handshake_timeout")
        self.close()

    def drain(self) -> None:
        """No request has started here: the client gets ``FIRST_REQUEST_GRACE`` to finish the
        handshake and send one (the Connection then made drains too), as a plain connection
        just accepted does."""
        self.deadline = min(self.deadline, self.worker.now + FIRST_REQUEST_GRACE)

    def close(self) -> None:
        if self.state == _CLOSED:
            return
        self.state = _CLOSED
        self.worker.forget(self)
        (self.ssl or self.sock).close()


class PlainAnswer:
    """A plain-HTTP client that gets one answer, whatever it asked: the redirect port's 308, or
    the HTTPS port's 400. Reads one head (the server's own head reader and parser), sends the
    answer, shuts the write side and drops what else arrives until the client closes."""

    __slots__ = ("worker", "sock", "addr", "fd", "deadline", "state", "heads", "out", "answer")
    request = None
    upload = None
    reply = None
    READING, WRITING, LINGERING = 0, 2, 3

    def __init__(self, worker, sock: socket.socket, addr, answer, deadline: float | None = None) -> None:
        self.worker = worker
        self.sock = sock
        self.addr = addr
        self.fd = sock.fileno()
        self.deadline = deadline if deadline is not None else worker.now + worker.config.header_timeout
        self.state = self.READING
        self.heads = http.HeadReader(worker.config.max_head, worker.config.max_target)
        self.out = b""
        self.answer = answer

    def on_event(self, events: int) -> None:
        self.run()

    def run(self) -> None:
        try:
            if self.state == self.READING:
                self._read()
            if self.state == self.WRITING:
                self._write()
            if self.state == self.LINGERING:
                self._linger()
        except OSError:
            self.close()

    def _read(self) -> None:
        date = self.worker.date.get
        while True:
            try:
                data = self.sock.recv(16384)
            except BlockingIOError:
                return
            if not data:
                self.close()
                return
            self.heads.buf += data
            try:
                head = self.heads.take()
                if head is None:
                    continue
                req = http.parse_head(head, max_head=self.worker.config.max_head,
                                      max_target=self.worker.config.max_target)
                self.out = self.answer(req)
            except http.HttpError as exc:
                self.out = http.error_response(exc.status, date(), reason=exc.reason, close=True)
            self.state = self.WRITING
            return

    def _write(self) -> None:
        while self.out:
            try:
                n = self.sock.send(self.out)
            except BlockingIOError:
                return
            self.out = self.out[n:]
        self.sock.shutdown(socket.SHUT_WR)
        self.state = self.LINGERING
        self.deadline = self.worker.now + PLAIN_LINGER

    def _linger(self) -> None:
        while True:
            try:
                if not self.sock.recv(65536):
                    break
            except BlockingIOError:
                return
        self.close()

    def on_timeout(self) -> None:
        self.close()

    def drain(self) -> None:
        if self.state == self.READING and not self.heads.buf:     # (Handshake.drain)
            self.deadline = min(self.deadline, self.worker.now + FIRST_REQUEST_GRACE)

    def close(self) -> None:
        if self.state == _CLOSED:
            return
        self.state = _CLOSED
        self.worker.forget(self)
        self.sock.close()
