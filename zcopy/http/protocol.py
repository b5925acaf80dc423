"""The HTTP/1.1 server protocol of one connection, without I/O (in the style of h11).

``ServerProtocol`` is told what happened on the connection - bytes received,
the peer's EOF, body bytes moved by an engine, a reply finished, a deadline
passed - and says what to do next: here is a request head, a body follows
with this framing, send ``100 Continue``, keep the connection alive, linger
and close. Keep-alive, pipelining, HTTP/1.0, Expect, chunked and fixed-length
bodies and every framing error are decided here, and nowhere else; the
driver (``zcopy.server.connection``) only moves bytes between the socket, the
engines and this object. ``tests/test_http_protocol.py`` walks every
transition below with no socket.

States (``state``) and what moves between them::

    IDLE ──bytes──► HEAD ──complete head──► BODY ──body complete──► REPLY
      ▲                 │                     │                       │
      │                 └──no body────────────┼──────────────────────►│
      │                                       └─reply before the body─┤
      └──────────────reply finished, keep-alive (HEAD if bytes wait)──┤
                                                                      ▼
      CLOSED ◄──peer's EOF, linger over── LINGER ◄──reply finished, must close

- IDLE: nothing of a request yet (the driver's deadline: idle timeout).
- HEAD: part of a head, or whole pipelined heads, are buffered (header timeout).
- BODY: the request's body is being received (``body_left``: bytes still to
  come of a fixed-length body, ``-1`` for chunked; ``decoder`` for chunked).
- REPLY: the request is read; its reply is being built (possibly deferred,
  ``Pending``) or sent. No further request is read meanwhile.
- LINGER: the last reply is out; what the client still sends is discarded
  until it closes (so the kernel does not reset the connection under our
  last reply).
- CLOSED: nothing more on this connection.

The framing itself is the shared head reader's (``HeadReader``, also used
by the client) and httptools' (``parse_head``, memoized by ``HeadCache``);
chunked bodies are decoded by ``ChunkedDecoder``.
"""

from __future__ import annotations

from zcopy.http.chunked import ChunkedDecoder
from zcopy.http.errors import HttpError
from zcopy.http.request import HeadCache, HeadReader, Request

IDLE, HEAD, BODY, REPLY, LINGER, CLOSED = "IDLE", "HEAD", "BODY", "REPLY", "LINGER", "CLOSED"
#: What ``reply_finished`` says: read the next request, or linger and close.
KEEP_ALIVE, CLOSE = "keep-alive", "close"
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
#: How long a closing connection keeps reading (and discarding) what the client
#: still sends, so the kernel does not answer it with a RST that destroys our
#: last response in flight (nginx's lingering_close).
LINGER_SECONDS = 2.0


class ServerProtocol:
    """One connection's HTTP/1.1 state; see the module docstring.

    ``buf`` holds received bytes not yet taken: the rest of a head, pipelined
    requests, body bytes that arrived with their head. ``request`` is the
    request being answered (None between requests)."""

    __slots__ = ("heads", "known", "reader", "buf", "state", "request", "keep_alive", "body_left", "decoder",
                 "continue_due")

    def __init__(self, heads: HeadCache) -> None:
        self.heads = heads
        self.known = heads.known      # head bytes -> Request: the hot path's one dict lookup
        self.reader = HeadReader(heads.max_head, heads.max_target)
        self.buf = self.reader.buf    # the reader's buffer: what was received and not taken
        self.state = IDLE
        self.request: Request | None = None
        self.keep_alive = True
        self.body_left = 0
        self.decoder: ChunkedDecoder | None = None
        self.continue_due = False

    # -- heads ------------------------------------------------------------------

    def receive(self, data: bytes) -> Request | None:
        """Bytes arrived while a head is awaited (IDLE or HEAD): the request
        whose head is now complete, or None for more bytes. Raises HttpError
        (the connection must answer it and close) for a head it refuses."""
        if not self.buf:
            req = self.known.get(data)
            if req is not None:         # the usual case: exactly one known head arrived
                if req.chunked or req.content_length:
                    return self._begin(req)
                self.request = req
                self.keep_alive = req.keep_alive
                self.state = REPLY
                return req
        self.buf += data
        return self.next_request()

    def next_request(self) -> Request | None:
        """The next complete request from ``buf`` (pipelining), or None."""
        buf = self.buf
        if not buf:
            self.state = IDLE
            return None
        try:
            head = self.reader.take()
            if head is None:
                self.state = HEAD
                return None
            req = self.known.get(head) or self.heads.parse(head)
        except HttpError:
            self._refused()
            raise
        return self._begin(req)

    def _begin(self, req: Request) -> Request:
        self.request = req
        self.keep_alive = req.keep_alive
        if req.chunked:
            if req.version == (1, 0):
                # RFC 9112 6.1: Transfer-Encoding in an HTTP/1.0 request (a 1.0
                # hop may have framed it otherwise): close after the reply.
                # (``parse_head`` says so too, for the reply's Connection field.)
                self.keep_alive = False
            self.state = BODY
            self.body_left = -1
            self.decoder = ChunkedDecoder()
        elif req.content_length:
            self.state = BODY
            self.body_left = req.content_length
        else:
            self.state = REPLY
            return req
        # RFC 9110 10.1.1: 100 Continue only when the client waits for it
        # (``expect_continue`` is never set for HTTP/1.0) and none of the body came yet.
        self.continue_due = req.expect_continue and not self.buf
        return req

    def _refused(self) -> None:
        """A head that cannot be parsed: answer it and close (where the next
        request would start is unknowable)."""
        self.request = None
        self.keep_alive = False
        self.buf.clear()
        self.state = REPLY

    # -- bodies -----------------------------------------------------------------

    def accept_body(self) -> bytes | None:
        """The responder takes this request's body: the ``100 Continue`` to
        send first, if the client waits for one (None otherwise)."""
        if self.continue_due:
            self.continue_due = False
            return CONTINUE
        return None

    def body_from_buffer(self) -> list:
        """Body bytes (decoded) that arrived with the head or since, taken out
        of ``buf``; what lies beyond the body stays there (a pipelined request)."""
        if not self.buf:
            return []
        data = bytes(self.buf)
        self.buf.clear()
        return self.body_received(data)

    def body_received(self, data: bytes) -> list:
        """Raw body bytes in; the body bytes they hold out (pieces, for a
        chunked body memoryviews into ``data``). Bytes past the body's end go
        to ``buf``. Raises HttpError(400) for a bad chunk."""
        if self.state != BODY:
            raise RuntimeError(f"body bytes in state {self.state}")
        decoder = self.decoder
        if decoder is None:
            take = min(len(data), self.body_left)
            self.body_left -= take
            if take < len(data):
                self.buf += data[take:]
            if self.body_left == 0:
                self.state = REPLY
            return [memoryview(data)[:take]] if take else []
        try:
            pieces = decoder.feed(data)
        except HttpError:
            self.keep_alive = False
            raise
        if decoder.done:
            self.buf += decoder.trailing
            self.decoder = None
            self.body_left = 0
            self.state = REPLY
        return pieces

    def body_consumed(self, n: int) -> None:
        """An engine moved ``n`` bytes of a fixed-length body from the socket
        to where it goes, past ``buf``."""
        if self.state != BODY or self.decoder is not None or n > self.body_left:
            raise RuntimeError(f"{n} body bytes consumed in state {self.state}, {self.body_left} left")
        self.body_left -= n
        if self.body_left == 0:
            self.state = REPLY

    def body_failed(self) -> None:
        """The body could not be taken (too large, the disk full, a bad
        chunk): whatever the client still sends cannot be framed, so the
        connection closes after the refusal."""
        self.keep_alive = False

    # -- replies and the end ----------------------------------------------------

    def reply_finished(self, close: bool = False) -> str:
        """The reply to ``request`` has left. KEEP_ALIVE: read the next
        request (HEAD when bytes of it wait in ``buf``); CLOSE: linger, then
        close. ``close``: the reply said ``Connection: close``."""
        self.request = None
        if close or not self.keep_alive or self.state is not REPLY:
            # (still BODY: the reply went out before the body was read - a
            # refusal, a read method with a body - so the rest cannot be framed)
            self.state = LINGER
            self.decoder = None
            self.continue_due = False
            self.buf.clear()
            return CLOSE
        self.state = HEAD if self.buf else IDLE
        return KEEP_ALIVE

    def eof_received(self) -> None:
        """The peer closed its side. Between requests that is the end; inside a
        head or a body, the request is cut (the driver says how it counts)."""
        if self.state == REPLY:
            self.keep_alive = False       # answer what was asked, then close
        else:
            self.state = CLOSED

    def timed_out(self) -> tuple[int, str] | None:
        """The driver's deadline passed: the status and reason to send before
        closing, or None to close silently."""
        state = self.state
        self.state = CLOSED
        if state == HEAD:
            return 408, "request head too slow"
        if state == BODY:
            return 408, "upload body too slow"
        return None

    def close(self) -> None:
        self.state = CLOSED
        self.request = None
        self.decoder = None
