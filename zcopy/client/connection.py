"""One HTTP/1.1 exchange over a plain socket: request head out, response
head in, then a framed body reader.

Why not http.client: uploads need the raw socket (sendfile and splice work on
its fd), and ``Expect: 100-continue`` needs a look at the socket between the
head and the body, which http.client cannot do. Each command makes one
request per connection (``Connection: close``), so there is no keep-alive
state to get wrong. Chunked response bodies reuse the server's strict
decoder (``zcopy.http.chunked``); response heads are framed by the server's
head reader (``zcopy.http.HeadReader``, same limits) and parsed by httptools
(``parse_response_head``), like the server's requests.
"""

from __future__ import annotations

import io
import select
import socket
import time
from dataclasses import dataclass, field

from zcopy.client.errors import ClientError, StatusError
from zcopy.client.url import Remote
from zcopy.http.errors import HttpError
from zcopy.http.request import HeadReader, parse_response_head

#: Interim (1xx) responses taken before the final one: a server sending more
#: is broken or hostile, and would otherwise hold the client forever.
MAX_INTERIM = 16
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
        #: https: an ssl.SSLSocket (verified); the pumps then copy instead of splicing
        self.tls = remote.scheme == "https"
        if self.tls:
            from zcopy.client.tls import wrap

            self.sock = wrap(self.sock, remote.host, remote.netloc)
        #: The head reader the server uses too (same framing, same limits);
        #: ``buf`` is its buffer: bytes received and not consumed yet.
        self.heads = HeadReader()
        self.buf = self.heads.buf

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
        if self.buf or (self.tls and self.sock.pending()):
            return True
        return bool(select.select([self.sock], [], [], wait)[0])

    def read_head(self, *, skip_interim: bool = True) -> Response:
        """The next response head; 1xx heads are skipped unless asked for.

        Bounded, whatever the server does: ``timeout`` seconds for the whole
        wait (interim heads included; a server trickling a head byte by byte
        gets no more), at most MAX_INTERIM interim heads (an endless stream of
        ``100 Continue`` is refused), and the head reader's size limits."""
        deadline = time.monotonic() + self.timeout
        interim = 0
        while True:
            head = self._take_head(deadline)
            try:
                status, reason, headers = parse_response_head(head)
            except HttpError as exc:
                raise ClientError(exc.reason) from None
            if not (skip_interim and 100 <= status < 200):
                return Response(status, reason, headers)
            interim += 1
            if interim >= MAX_INTERIM:
                raise ClientError(f"{self.remote.netloc} sent {interim} interim (1xx) responses and no answer")

    def _take_head(self, deadline: float) -> bytes:
        while True:
            try:
                head = self.heads.take()
            except HttpError:
                raise ClientError(f"{self.remote.netloc}: response head too large") from None
            if head is not None:
                return head
            left = deadline - time.monotonic()
            late = f"{self.remote.netloc}: no complete response head within {self.timeout:g} s"
            if left <= 0:
                raise ClientError(late)
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(1 << 16)
            except TimeoutError:
                raise ClientError(late) from None
            except ConnectionError as exc:
                raise ClientError(f"{self.remote.netloc}: {exc.strerror or exc}") from None
            finally:
                self.sock.settimeout(self.timeout)
            if not chunk:
                raise ClientError(f"{self.remote.netloc} closed the connection without a response")
            self.buf += chunk

    def body(self, response: Response, *, head_only: bool = False) -> "BodyReader":
        """A reader of exactly this response's body (RFC 9112 6.3 framing)."""
        if head_only or response.status in (204, 304) or 100 <= response.status < 200:
            return BodyReader(self, 0, chunked=False)
        if "chunked" in response.headers.get("transfer-encoding", "").lower():
            return BodyReader(self, None, chunked=True)
        return BodyReader(self, response.length(), chunked=False)

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
