"""One HTTP/1.1 exchange over a plain socket: request head out, response
head in, then a framed body reader.

Why not http.client: uploads need the raw socket (sendfile and splice work on
its fd), and ``Expect: 100-continue`` needs a look at the socket between the
head and the body, which http.client cannot do. Each command makes one
request per connection (``Connection: close``), so there is no keep-alive
state to get wrong. Chunked response bodies reuse the server's strict
decoder (``zcopy.http.chunked``); response heads are parsed by httptools,
like the server's requests.
"""

from __future__ import annotations

import io
import select
import socket
from dataclasses import dataclass, field

import httptools

from zcopy.client.errors import ClientError, StatusError
from zcopy.client.url import Remote
from zcopy.http.request import add_field

MAX_HEAD = 64 * 1024
USER_AGENT = "zcopy"


@dataclass(slots=True)
class Response:
    status: int
    reason: str
    headers: dict[str, str] = field(default_factory=dict)  # names lower-cased

    def length(self) -> int | None:
        value = self.headers.get("content-length")
        if value is None or not value.isdigit():
            return None
        return int(value)


class Connection:
    """A connected socket plus the bytes received but not consumed yet."""

    def __init__(self, remote: Remote, timeout: float = 60.0) -> None:
        self.remote = remote
        self.timeout = timeout
        try:
            self.sock = socket.create_connection((remote.host, remote.port), timeout=timeout)
        except OSError as exc:
            raise ClientError(f"cannot connect to {remote.netloc}: {exc.strerror or exc}") from None
        self.buf = bytearray()

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def send_head(self, method: str, target: str, headers: dict[str, str] | None = None) -> None:
        lines = [f"{method} {target} HTTP/1.1", f"Host: {self.remote.netloc}",
                 f"User-Agent: {USER_AGENT}", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))

    def head_ready(self, wait: float) -> bool:
        """True when response bytes are waiting (used for 100-continue)."""
        if self.buf:
            return True
        return bool(select.select([self.sock], [], [], wait)[0])

    def read_head(self, *, skip_interim: bool = True) -> Response:
        """The next response head; 1xx heads are skipped unless asked for."""
        while True:
            end = self.buf.find(b"\r\n\r\n")
            while end < 0:
                if len(self.buf) > MAX_HEAD:
                    raise ClientError("response head too large")
                chunk = self._recv()
                if not chunk:
                    raise ClientError(f"{self.remote.netloc} closed the connection without a response")
                self.buf += chunk
                end = self.buf.find(b"\r\n\r\n")
            head = bytes(self.buf[:end + 4])
            del self.buf[:end + 4]
            response = _parse_head(head)
            if not (skip_interim and 100 <= response.status < 200):
                return response

    def body(self, response: Response, *, head_only: bool = False) -> "BodyReader":
        """A reader of exactly this response's body (RFC 9112 6.3 framing)."""
        if head_only or response.status in (204, 304) or 100 <= response.status < 200:
            return BodyReader(self, 0, chunked=False)
        if "chunked" in response.headers.get("transfer-encoding", "").lower():
            return BodyReader(self, None, chunked=True)
        return BodyReader(self, response.length(), chunked=False)

    def _recv(self) -> bytes:
        try:
            return self.sock.recv(1 << 16)
        except TimeoutError:
            raise ClientError(f"{self.remote.netloc}: no answer for {self.timeout:g} s") from None
        except ConnectionError as exc:
            raise ClientError(f"{self.remote.netloc}: {exc.strerror or exc}") from None


class _HeadFields:
    """httptools callbacks: the reason phrase and the header fields."""

    __slots__ = ("reason", "headers", "complete")

    def __init__(self) -> None:
        self.reason = b""
        self.headers: dict[str, str] = {}
        self.complete = False

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        add_field(self.headers, name, value)

    def on_headers_complete(self) -> None:
        self.complete = True


def _parse_head(head: bytes) -> Response:
    """A response head (blank line included), parsed by httptools (llhttp):
    the grammar is llhttp's, as it is for the server's requests."""
    fields = _HeadFields()
    parser = httptools.HttpResponseParser(fields)
    try:
        parser.feed_data(head)
    except httptools.HttpParserUpgrade:
        pass                                    # 101: the head is parsed; we never switch
    except httptools.HttpParserError as exc:
        first = head.split(b"\r\n", 1)[0].decode("latin-1")
        raise ClientError(f"not a valid HTTP/1.x response ({exc}): {first[:80]!r}") from None
    if not fields.complete or not parser.get_http_version().startswith("1."):
        first = head.split(b"\r\n", 1)[0].decode("latin-1")
        raise ClientError(f"not an HTTP/1.x response: {first[:80]!r}")
    return Response(parser.get_status_code(), fields.reason.decode("latin-1"), fields.headers)


class BodyReader(io.RawIOBase):
    """File-like view of a response body: ``read``/``readinto`` stop at its
    end, and an early EOF is an error, not a short file.

    ``length`` is None for chunked bodies and bodies that run to EOF.
    ``consumed`` counts body bytes handed out so far.
    """

    def __init__(self, conn: Connection, length: int | None, *, chunked: bool) -> None:
        super().__init__()
        self.conn = conn
        self.length = length
        self.consumed = 0
        self._decoder = None
        self._pending: list = []
        if chunked:
            from zcopy.http.chunked import ChunkedDecoder

            self._decoder = ChunkedDecoder()

    def readable(self) -> bool:
        return True

    @property
    def chunked(self) -> bool:
        return self._decoder is not None

    @property
    def remaining(self) -> int | None:
        return None if self.length is None else self.length - self.consumed

    def readinto(self, b) -> int:
        view = memoryview(b).cast("B")
        if self._decoder is not None:
            n = self._readinto_chunked(view)
        else:
            want = len(view) if self.length is None else min(len(view), self.length - self.consumed)
            n = self._raw_into(view[:want]) if want else 0
            if n == 0 and want and self.length is not None:
                raise ClientError(f"connection closed after {self.consumed} of {self.length} body bytes")
        self.consumed += n
        return n

    def _raw_into(self, view: memoryview) -> int:
        """Leftover head-read bytes first, then the socket."""
        buf = self.conn.buf
        if buf:
            n = min(len(buf), len(view))
            view[:n] = buf[:n]
            del buf[:n]
            return n
        try:
            return self.conn.sock.recv_into(view)
        except TimeoutError:
            raise ClientError(f"{self.conn.remote.netloc}: stalled for {self.conn.timeout:g} s") from None
        except ConnectionError as exc:
            raise ClientError(f"{self.conn.remote.netloc}: {exc.strerror or exc}") from None

    def _readinto_chunked(self, view: memoryview) -> int:
        from zcopy.http.errors import HttpError

        while not self._pending:
            if self._decoder.done:
                return 0
            raw = bytearray(1 << 16)
            n = self._raw_into(memoryview(raw))
            if n == 0:
                raise ClientError(f"connection closed inside a chunked body after {self.consumed} bytes")
            try:
                self._pending = [bytes(p) for p in self._decoder.feed(bytes(raw[:n])) if len(p)]
            except HttpError as exc:
                raise ClientError(f"bad chunked body: {exc}") from None
        piece = self._pending[0]
        n = min(len(piece), len(view))
        view[:n] = piece[:n]
        if n == len(piece):
            self._pending.pop(0)
        else:
            self._pending[0] = piece[n:]
        return n

    def drain(self, limit: int = 1 << 20) -> bytes:
        """The whole (small) body, for listings and error details."""
        out = bytearray()
        while len(out) <= limit:
            chunk = self.read(1 << 16)
            if not chunk:
                return bytes(out)
            out += chunk
        raise ClientError(f"response body larger than {limit} bytes")


def check(response: Response, target: str, body: BodyReader | None = None) -> None:
    """Raise StatusError for 4xx/5xx (with a short server detail when the
    body carries one); 3xx are left to the caller."""
    if response.status < 400:
        return
    detail = ""
    if body is not None and response.headers.get("content-type", "").startswith("text/plain"):
        try:
            lines = body.drain(4096).decode("utf-8", "replace").strip().splitlines()
        except ClientError:
            lines = []
        if lines and lines[0].startswith(f"{response.status} "):
            lines = lines[1:]  # zcopy's error bodies repeat the status line first
        detail = lines[0][:200] if lines else ""
    raise StatusError(response.status, response.reason, target, detail)
