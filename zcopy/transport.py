"""What a connection sends and receives through: a transport, not a raw fd.

The server's connection (``zcopy.server.connection``) and the engines it
drives talk to a ``Transport``: ``recv``/``send`` for bytes the process
holds (heads, small bodies, what a decoder must see), ``fd`` for the
engines when ``zero_copy`` says the kernel may move file bytes straight
between the file and the connection (sendfile, splice).

``PlainTransport`` is TCP as it is, and costs nothing: its ``recv`` and
``send`` are ``zcopy.sockio``'s (the same semantics as the socket's on a
non-blocking socket, ~3,000 fewer instructions a request, docs/hotpath.md:
no argument parsing by format, the GIL kept across the syscall, one static
receive buffer) when
that extension is built and current (``zcopy.hotpath.compiled``), the
socket's own bound methods otherwise; ``fd`` is the socket's.

A TLS transport fits the same shape. With kernel TLS (kTLS) the kernel
encrypts what sendfile/splice write, so it sets ``zero_copy = True`` and
``fd`` to the socket; that needs an ``ssl.SSLSocket`` wrapped on the real
socket fd (OpenSSL installs the keys there); an ``SSLObject`` with memory
BIOs can never use it. Without kTLS it sets ``zero_copy = False``: then the
connection sends file bytes with the copy engine (read_send, given the
transport instead of an fd, so it calls ``send``) and receives bodies with
``recv``; no engine ever sees its fd. Its ``send``/``recv`` must raise
``BlockingIOError`` where an SSLSocket raises SSLWantRead/WriteError.
Nothing in ``zcopy.http`` or the responder knows which transport carries a
request.
"""

from __future__ import annotations

import socket

from zcopy import hotpath

_TCP, _NODELAY, _CORK = socket.IPPROTO_TCP, socket.TCP_NODELAY, socket.TCP_CORK

SocketIO = getattr(hotpath.extension("zcopy.sockio"), "SocketIO", None)


class PlainTransport:
    """A connected TCP socket (non-blocking).

    ``send(data, flags)`` takes ``socket.MSG_MORE`` as "more follows at once"
    (the kernel corks the segment); ``flush`` pushes out what was corked.
    Both raise ``BlockingIOError`` when the socket is full, as ``recv`` does
    when it is empty; ``recv`` returns b"" at the peer's EOF."""

    __slots__ = ("sock", "fd", "recv", "send", "io")
    #: sendfile/splice may write to ``fd``.
    zero_copy = True
    #: The bytes are encrypted (TLS): the session cookie then says ``Secure`` (zcopy.server.session).
    secure = False

    #: After a closing reply, wait for the client's EOF even when nothing is left to read (TLS:
    #: its close_notify is still to come). Plain TCP closes at once when drained.
    linger_for_peer = False

    @property
    def recv_zero_copy(self) -> bool:
        """splice may read request bodies from ``fd`` (a TLS transport: never; the bytes on the
        wire are ciphertext, or OpenSSL may hold some already)."""
        return self.zero_copy

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        if SocketIO is not None and sock.gettimeout() == 0.0:     # (it holds the GIL: never on a blocking socket)
            self.io = io = SocketIO(self.fd)
            self.recv = io.recv
            self.send = io.send
        else:
            self.io = None
            self.recv = sock.recv
            self.send = sock.send

    def flush(self) -> None:
        """Send what ``MSG_MORE`` or ``cork`` held back (setting TCP_NODELAY again flushes
        pending output even while TCP_CORK is set, tcp(7))."""
        self.sock.setsockopt(_TCP, _NODELAY, 1)

    def cork(self) -> None:
        """Hold back partial segments until ``uncork`` (TCP_CORK): a body sent in several
        calls then leaves in full segments instead of one short one at the end of each call."""
        self.sock.setsockopt(_TCP, _CORK, 1)

    def uncork(self) -> None:
        """End ``cork``: what it held leaves now."""
        self.sock.setsockopt(_TCP, _CORK, 0)

    def shutdown_write(self) -> None:
        self.sock.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        if self.io is not None:
            self.io.forget()        # a late recv/send: EBADF, as on the closed socket, not a reused fd
        self.sock.close()
