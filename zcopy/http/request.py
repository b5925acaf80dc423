"""HTTP heads: framing (``split_head``, ``HeadReader``) and parsing
(``parse_head`` for requests, ``parse_response_head`` for the client).

Framing and parsing are separate on purpose. The connection keeps reading
into one buffer; ``split_head`` only answers "is a whole head there yet, and
how long is it?" with a byte search, so a slow client costs one ``find`` per
``recv`` and never a parse. ``parse_head`` then runs httptools (llhttp, the
parser inside Node.js) over exactly that head: the grammar - request line,
field syntax, whitespace before a colon, Content-Length versus
Transfer-Encoding - is llhttp's, never ours. What we add is HTTP *semantics*
llhttp leaves to the server: which versions and methods we serve, Host rules,
percent-decoding of the path, and what each refusal is called (400, 414, 431,
501, 505).

Every parse error closes the connection (``HttpError.close``): once the
grammar is broken we cannot know where the next request starts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import FrozenInstanceError
from types import MappingProxyType
from urllib.parse import unquote_to_bytes

import httptools

from zcopy.http.errors import HttpError

MAX_HEAD = 16384
MAX_TARGET = 8192
#: Room on the request line besides the target: "PROPPATCH " + " HTTP/1.1\r\n".
_LINE_SLACK = 32

#: Methods we recognise. A recognised method the resource does not support
#: gets 405 with Allow (the server decides); anything else gets 501. The set is
#: RFC 9110's methods, PATCH, and the WebDAV verbs uploads may grow into.
KNOWN_METHODS = frozenset({
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
    "MKCOL", "MOVE", "COPY", "PROPFIND", "PROPPATCH", "LOCK", "UNLOCK",
})

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_PERCENT = re.compile(rb"%(?![0-9A-Fa-f]{2})")
#: RFC 9112 3.2 / RFC 3986 3.2.2: Host = uri-host [ ":" port ], where uri-host is
#: an IP-literal in brackets or a reg-name (unreserved, pct-encoded, sub-delims).
_HOST = re.compile(r"(?:\[[0-9A-Za-z:.\-_~!$&'()*+,;=%]+\]|[0-9A-Za-z.\-_~!$&'()*+,;=%]*)(?::[0-9]*)?")


class Request:
    """One parsed request head. Header names are lower-case; repeated fields
    are joined with ", " (RFC 9110 5.3), so every lookup is one dict get.
    Frozen: ``HeadCache`` shares one Request among every identical head.
    Compared and hashed by identity: the same Request is the same head bytes,
    which lets the responder memoize answers per Request.
    (A plain class, not a frozen dataclass: compiled, ``request.pxd`` makes it a C
    struct with read-only fields, and the connection reads them as struct loads.)"""

    __slots__ = ("method", "target", "path", "query", "version", "headers", "keep_alive", "content_length",
                 "chunked", "expect_continue", "plain")

    method: str
    target: bytes                 # as sent, for the access log
    path: str                     # percent-decoded once, utf-8, no query
    query: str                    # raw (still percent-encoded), without "?"
    version: tuple[int, int]
    headers: Mapping[str, str]    # read-only: a memoized Request is shared by every identical head
    keep_alive: bool
    content_length: int | None
    chunked: bool
    expect_continue: bool
    #: No preconditions and no Range: the answer depends on the resource alone,
    #: so the responder can skip evaluating them (most requests).
    plain: bool

    def __init__(self, method: str, target: bytes, path: str, query: str, version: tuple[int, int],
                 headers: Mapping[str, str], keep_alive: bool, content_length: int | None, chunked: bool,
                 expect_continue: bool, plain: bool = True) -> None:
        self.method = method
        self.target = target
        self.path = path
        self.query = query
        self.version = version
        self.headers = headers
        self.keep_alive = keep_alive
        self.content_length = content_length
        self.chunked = chunked
        self.expect_continue = expect_continue
        self.plain = plain

    def __setattr__(self, name: str, value) -> None:
        # Each field once, in __init__ (as plain Python; compiled, __init__ stores into the struct
        # and this sees only assignments from outside, to fields that are always set).
        if hasattr(self, name):
            raise FrozenInstanceError(f"cannot assign to field {name!r}")
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def __repr__(self) -> str:
        return (f"Request(method={self.method!r}, target={self.target!r}, version={self.version!r}, "
                f"keep_alive={self.keep_alive!r}, content_length={self.content_length!r}, "
                f"chunked={self.chunked!r}, plain={self.plain!r})")


def split_head(buf: bytes | bytearray, max_head: int = MAX_HEAD, max_target: int = MAX_TARGET) -> int | None:
    """Length of the complete head at the start of ``buf`` (blank line
    included), or None when more bytes are needed.

    Empty lines before a request are skipped and counted in the length (RFC
    9112 2.2: some clients send a stray CRLF after a body). A head that ends
    with bare LFs is framed too, so ``parse_head`` can refuse it with a 400
    instead of the connection waiting forever for a CRLF that never comes.
    The limits are checked only when the head is incomplete or too long, so
    the common case is a single ``find``.
    """
    start = 0
    n = len(buf)
    while start < n and buf[start] in b"\r\n":
        start += 1
    end = buf.find(b"\n\r\n", start)
    if end >= 0:
        end += 3
        bare = buf.find(b"\n\n", start, end)
        if bare >= 0:
            end = bare + 2
    else:
        bare = buf.find(b"\n\n", start)
        end = bare + 2 if bare >= 0 else -1
    if end >= 0:
        if end > max_head:
            raise HttpError(431, "request header section too large", close=True)
        return end
    if buf.find(b"\n", start, start + max_target + _LINE_SLACK) < 0 and n - start > max_target + _LINE_SLACK:
        raise HttpError(414, "request target too long", close=True)
    if n > max_head:
        raise HttpError(431, "request header section too large", close=True)
    return None


class HeadReader:
    """Received bytes in, complete heads out: the one head reader of the
    server (request heads, ``zcopy.http.protocol``) and the client (response
    heads, ``zcopy.client.connection``), with the same framing and limits.

    ``buf`` holds what was received and not taken yet: the rest of a head,
    whatever followed it (a body, a pipelined request). ``take`` raises
    HttpError 414/431 for a head over the limits."""

    __slots__ = ("buf", "max_head", "max_target")

    def __init__(self, max_head: int = MAX_HEAD, max_target: int = MAX_TARGET) -> None:
        self.buf = bytearray()
        self.max_head = max_head
        self.max_target = max_target

    def take(self) -> bytes | None:
        """The next complete head (blank line included), taken out of ``buf``;
        None while it is incomplete."""
        buf = self.buf
        n = split_head(buf, self.max_head, self.max_target)
        if n is None:
            return None
        if n == len(buf):
            head = bytes(buf)
            buf.clear()
        else:
            head = bytes(buf[:n])
            del buf[:n]
        return head


def add_field(headers: dict[str, str], name: bytes, value: bytes) -> str:
    """Add one field as httptools hands it over (``on_header``) to ``headers``:
    the name lower-cased, trailing whitespace stripped (llhttp strips the
    leading OWS only), a repeated field joined with ", " (RFC 9110 5.3).
    Returns the lower-cased name. Used for requests here and for the client's
    responses."""
    key = name.decode("latin-1").lower()
    text = value.decode("latin-1")
    if value[-1:] in b" \t":
        text = text.rstrip(" \t")
    if key in headers:
        headers[key] = headers[key] + ", " + text
    else:
        headers[key] = text
    return key


class _Collector:
    """httptools callbacks: keep the target (a request's) or the reason
    phrase (a response's), and the header fields."""

    __slots__ = ("url", "reason", "headers", "hosts", "complete")

    def __init__(self) -> None:
        self.url = b""
        self.reason = b""
        self.headers: dict[str, str] = {}
        self.hosts = 0
        self.complete = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        if add_field(self.headers, name, value) == "host":
            self.hosts += 1

    def on_headers_complete(self) -> None:
        self.complete = True


def parse_head(head: bytes, *, max_head: int = MAX_HEAD, max_target: int = MAX_TARGET) -> Request:
    """Parse one complete head (as framed by ``split_head``) with httptools.

    Raises ``HttpError`` (always with ``close=True``): 400 malformed, 414 target
    too long, 431 head too large, 501 unknown method, 505 unsupported version.
    """
    if len(head) > max_head:
        raise HttpError(431, "request header section too large", close=True)
    got = _Collector()
    parser = httptools.HttpRequestParser(got)
    try:
        parser.feed_data(head)
    except httptools.HttpParserUpgrade:
        pass  # Upgrade / CONNECT: the head is parsed; we never switch protocols
    except httptools.HttpParserInvalidMethodError:
        raise _method_error(head) from None
    except httptools.HttpParserError as exc:
        if not got.complete:
            raise _grammar_error(head, str(exc), max_target) from None
        # The head parsed but its framing is unusable (llhttp refuses a
        # Transfer-Encoding whose last coding is not chunked): RFC 9112 6.3.
        raise HttpError(400, f"bad request: {exc}", close=True) from None
    if not got.complete:
        raise HttpError(400, "incomplete request head", close=True)

    version = _version(parser.get_http_version(), head)
    method = parser.get_method().decode("ascii")
    target = got.url
    if len(target) > max_target:
        raise HttpError(414, "request target too long", close=True)
    if method not in KNOWN_METHODS:
        raise HttpError(501, f"method {method} is not implemented", close=True)
    headers = got.headers
    if got.hosts > 1 or (got.hosts == 0 and version == (1, 1)):
        raise HttpError(400, "HTTP/1.1 needs exactly one Host header", close=True)
    if got.hosts and not _HOST.fullmatch(headers["host"]):
        # RFC 9112 3.2: a MUST. A Host with a space or a slash is no host, and
        # whatever reads it later (a log parser, a proxy behind) may read it differently.
        raise HttpError(400, "invalid Host header", close=True)
    path, query = _split_target(target)

    connection = headers.get("connection")
    if connection is None:
        keep_alive = version == (1, 1)
    else:
        tokens = _tokens(connection.lower())
        keep_alive = "close" not in tokens and (version == (1, 1) or "keep-alive" in tokens)
    chunked = False
    te = headers.get("transfer-encoding")
    if te is not None:
        if _tokens(te.lower()) != ["chunked"]:
            raise HttpError(501, f"transfer coding {te!r} is not implemented", close=True)
        chunked = True
        if version == (1, 0):
            # RFC 9112 6.1: a server MUST close the connection after answering
            # an HTTP/1.0 request with Transfer-Encoding (a 1.0 hop in between
            # may have framed the body differently), so the reply says close.
            keep_alive = False
    cl = headers.get("content-length")
    return Request(
        method, target, path, query, version, MappingProxyType(headers), keep_alive,
        int(cl) if cl is not None else None,   # llhttp has validated the digits
        chunked,
        # RFC 9110 10.1.1: an HTTP/1.0 request's 100-continue is ignored (no
        # 1xx may be sent to a 1.0 client; it would take it for the answer).
        version == (1, 1) and "expect" in headers and headers["expect"].lower() == "100-continue",
        _PLAIN_BREAKERS.isdisjoint(headers),
    )


def parse_response_head(head: bytes) -> tuple[int, str, dict[str, str]]:
    """(status, reason, fields) of one complete response head, as framed by
    ``HeadReader``: the client's counterpart of ``parse_head``, with
    httptools' grammar too. Raises HttpError(502) for anything that is not
    an HTTP/1.x response head."""
    got = _Collector()
    parser = httptools.HttpResponseParser(got)
    first = head.split(b"\r\n", 1)[0].decode("latin-1")[:80]
    try:
        parser.feed_data(head)
    except httptools.HttpParserUpgrade:
        pass                                    # 101: the head is parsed; we never switch
    except httptools.HttpParserError as exc:
        raise HttpError(502, f"not a valid HTTP/1.x response ({exc}): {first!r}") from None
    if not got.complete or not parser.get_http_version().startswith("1."):
        raise HttpError(502, f"not an HTTP/1.x response: {first!r}")
    return parser.get_status_code(), got.reason.decode("latin-1"), got.headers


#: Header fields that make a request more than "give me the resource".
_PLAIN_BREAKERS = frozenset({"if-match", "if-none-match", "if-modified-since", "if-unmodified-since",
                             "range", "if-range"})
#: Heads up to this size are memoized by ``HeadCache`` (wrk's are ~40 bytes,
#: a browser's ~500-900).
MEMO_HEAD_MAX = 2048


class HeadCache:
    """``parse_head``, memoized by the head's bytes.

    Parsing is a pure function of the bytes, and keep-alive clients send the
    same head over and over (a browser refetching assets, a health check, a
    benchmark): from the second time on, a request costs one dict lookup
    instead of a parse. The ``Request`` objects are therefore shared between
    requests and connections: nothing may change one after parsing.

    Bounded: at most ``size`` heads of at most ``MEMO_HEAD_MAX`` bytes. When
    full it starts over, so a client sending ever-different heads pays the
    plain parse each time and never costs more memory. Refused heads raise
    ``HttpError`` every time and are never kept.
    """

    __slots__ = ("max_head", "max_target", "size", "known")

    def __init__(self, *, max_head: int = MAX_HEAD, max_target: int = MAX_TARGET, size: int = 256) -> None:
        self.max_head = max_head
        self.max_target = max_target
        self.size = size
        #: head bytes -> Request, for readers that want a hit without a call
        #: (``known.get(head)``); only ``parse`` writes it. A head in it was one
        #: complete head: framing it again would find its end at its last byte.
        self.known: dict[bytes, Request] = {}

    def parse(self, head: bytes) -> Request:
        req = self.known.get(head)
        if req is None:
            req = parse_head(head, max_head=self.max_head, max_target=self.max_target)
            if len(head) <= MEMO_HEAD_MAX:
                if len(self.known) >= self.size:
                    self.known.clear()
                self.known[head] = req
        return req

    def __len__(self) -> int:
        return len(self.known)


def _tokens(value: str) -> list[str]:
    """A comma-separated list field's members, stripped, empty ones dropped."""
    if "," not in value:
        value = value.strip()
        return [value] if value else []
    return [t for t in (p.strip() for p in value.split(",")) if t]


def _version(text: str, head: bytes) -> tuple[int, int]:
    """HTTP/1.0 and HTTP/1.1 only. llhttp also parses RTSP/ICE request lines
    and the HTTP/0.9 and HTTP/2.0 labels; none of them is ours to serve."""
    if text == "1.1":
        version = (1, 1)
    elif text == "1.0":
        version = (1, 0)
    else:
        raise HttpError(505, f"HTTP version {text} is not supported", close=True)
    start = 0
    while head[start] in b"\r\n":   # empty lines before the request line
        start += 1
    line_end = head.find(b"\r\n", start)
    if head[line_end - 8:line_end - 3] != b"HTTP/":
        raise HttpError(505, "only HTTP is served here", close=True)
    return version


def _split_target(target: bytes) -> tuple[str, str]:
    """(decoded path, raw query) from an origin-form or absolute-form target."""
    if target[:1] == b"/":
        raw, query = target, b""
        q = target.find(b"?")
        if q >= 0:
            raw, query = target[:q], target[q + 1:]
        if b"#" in target:                   # a fragment is never sent, but if it is
            raw, query = raw.partition(b"#")[0], query.partition(b"#")[0]
    elif target[:7].lower() in (b"http://", b"https:/"):
        try:
            url = httptools.parse_url(target)
        except httptools.HttpParserInvalidURLError:
            raise HttpError(400, "malformed request target", close=True) from None
        raw, query = url.path or b"/", url.query or b""
    else:
        # asterisk-form (OPTIONS *) and authority-form (CONNECT host:port):
        # no path to serve; the method check downstream answers them.
        return target.decode("latin-1"), ""
    if b"%" in raw:
        if _BAD_PERCENT.search(raw):
            raise HttpError(400, "bad percent-encoding in path", close=True)
        raw = unquote_to_bytes(raw)
        if b"\x00" in raw:
            raise HttpError(400, "NUL in path", close=True)
    # Linux names are bytes. Bytes that are not UTF-8 (a Latin-1 name on disk)
    # become lone surrogates, which os functions turn back into the same bytes,
    # so such a file can be fetched exactly as its listing links it.
    return raw.decode("utf-8", "surrogateescape"), query.decode("latin-1")


def _method_error(head: bytes) -> HttpError:
    """llhttp only knows its own method table: a well-formed token it does
    not know is a method we do not implement (501); anything else is 400."""
    method = head.lstrip(b"\r\n").split(b" ", 1)[0]
    if _TOKEN.fullmatch(method):
        return HttpError(501, f"method {method.decode('ascii')} is not implemented", close=True)
    return HttpError(400, "malformed request line", close=True)


def _grammar_error(head: bytes, detail: str, max_target: int) -> HttpError:
    if detail == "Invalid HTTP version":
        return HttpError(505, "HTTP version not supported", close=True)
    line = head.lstrip(b"\r\n").split(b"\n", 1)[0]
    if len(line) > max_target + _LINE_SLACK:
        return HttpError(414, "request target too long", close=True)
    return HttpError(400, f"malformed request: {detail}", close=True)
