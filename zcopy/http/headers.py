"""Response heads, built from prebuilt pieces.

Per-file facts (Content-Type, Last-Modified, ETag, Accept-Ranges, encoding)
change only when the file does, so ``static_headers`` renders them once into
a bytes block that the open-file cache keeps (whitenoise's lesson). Per
request, ``response_head`` only joins: a status line from a table, the Date
line (rebuilt at most once a second by ``DateHeader``), the static block and
a Content-Length. Error and redirect responses are rare and small; they are
built on demand, with everything taken from a request escaped so a crafted
path can neither break the head nor the body.
"""

from __future__ import annotations

import email.utils
import mimetypes
import operator
import os
import re
import time
from http import HTTPStatus
from itertools import repeat
from urllib.parse import quote

from zcopy import hotpath

SERVER = b"Server: zcopy\r\n"

_STATUS_LINES = {int(s): f"HTTP/1.1 {int(s)} {s.phrase}\r\n".encode("ascii") for s in HTTPStatus}
#: Codes the stdlib does not name: the resumable-upload protocols' (tus 1.0 checksum extension;
#: draft-ietf-httpbis-resumable-upload).
_STATUS_LINES[104] = b"HTTP/1.1 104 Upload Resumption Supported\r\n"
_STATUS_LINES[460] = b"HTTP/1.1 460 Checksum Mismatch\r\n"
#: Statuses that never carry a body (RFC 9110 6.4.1).
_NO_BODY = frozenset({100, 101, 102, 103, 204, 304})


def status_line(status: int) -> bytes:
    """``HTTP/1.1 <code> <phrase>\\r\\n``; we answer 1.1 even to 1.0 clients
    (RFC 9110 6.2: a server sends its own highest minor version)."""
    line = _STATUS_LINES.get(status)
    return line if line is not None else b"HTTP/1.1 %d Unknown\r\n" % status


def http_date(ts: float) -> str:
    """IMF-fixdate, the one format servers send (RFC 9110 5.6.7)."""
    return email.utils.formatdate(ts, usegmt=True)


def _python_wall_second() -> int:
    return int(time.time())


#: The wall clock's second: ``zcopy.sockio.wall_second`` (the same, without a float) when the hot
#: path runs compiled, else ``int(time.time())``.
wall_second = getattr(hotpath.extension("zcopy.sockio"), "wall_second", None) or _python_wall_second
#: The same clock as the object whose ``second()`` the compiled ``DateHeader`` calls in C (no int object).
_WALL = getattr(hotpath.extension("zcopy.sockio"), "WALL", None)


class DateHeader:
    """``b"Date: ...\\r\\n"`` for now, rebuilt at most once per second.

    Every response needs it; formatting a date costs microseconds, comparing
    two ints costs nanoseconds. ``clock`` (a ``time.time``) is injectable for
    tests; without one the second comes from ``wall_second``.
    """

    __slots__ = ("_clock", "_wall", "_second", "_line")

    def __init__(self, clock=None) -> None:
        self._clock = clock
        self._wall = _WALL if clock is None else None
        self._second = -1
        self._line = b""

    def get(self) -> bytes:
        wall = self._wall
        if wall is not None:
            second = wall.second()
        else:
            clock = self._clock
            second = wall_second() if clock is None else int(clock())
        if second != self._second:
            self._second = second
            self._line = b"Date: " + http_date(second).encode("ascii") + b"\r\n"
        return self._line


def make_etag(st: os.stat_result) -> str:
    """This node's strong ETag for a file: inode, size, mtime and ctime in
    nanoseconds. Any rewrite or replacement changes it (a client-set mtime too:
    that moves the ctime), and computing it reads no content. It is shown only
    until the file's content digest is known, and only for a file that has
    been quiet for a while (zcopy.server.digests: a same-tick rewrite cannot
    follow); the digest ETag is the same on every node (docs/http.md)."""
    return f'"{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}-{st.st_ctime_ns:x}"'


#: What ``make_etag`` is made of, as a tuple (a Depth 1 PROPFIND keeps it as a member's memo key)...
ETAG_FIELDS = operator.attrgetter("st_ino", "st_size", "st_mtime_ns", "st_ctime_ns")
#: ... and the ETag (ASCII bytes) from that tuple.
ETAG_FORMAT = b'"%x-%x-%x-%x"'
etag_of_fields = ETAG_FORMAT.__mod__


def etags_of_fields(fields) -> list[bytes]:
    """``etag_of_fields`` of each tuple, in one C-level pass (a Depth 1 PROPFIND's members):
    ``operator.mod`` over ``repeat()`` is a C function's vectorcall, where the bound ``__mod__`` is a
    method-wrapper that builds an argument tuple a call."""
    return list(map(operator.mod, repeat(ETAG_FORMAT), fields))


def make_etags(stats) -> list[bytes]:
    """``make_etag`` of each stat (ASCII bytes), in one C-level pass."""
    return etags_of_fields(map(ETAG_FIELDS, stats))


# -- content types -------------------------------------------------------------

#: Python's built-in table only (no /etc/mime.types): the same answer on every
#: machine. Overrides follow current web practice (RFC 9239 for JavaScript).
_MIME = mimetypes.MimeTypes()
_OVERRIDES = {
    ".js": "text/javascript", ".mjs": "text/javascript", ".json": "application/json",
    ".map": "application/json", ".webmanifest": "application/manifest+json",
    ".md": "text/markdown", ".wasm": "application/wasm", ".webp": "image/webp",
    ".avif": "image/avif", ".woff": "font/woff", ".woff2": "font/woff2", ".ttf": "font/ttf",
    ".otf": "font/otf", ".xml": "application/xml", ".yaml": "application/yaml",
    ".yml": "application/yaml", ".toml": "application/toml", ".zst": "application/zstd",
    ".gz": "application/gzip", ".tgz": "application/gzip", ".br": "application/x-brotli",
    ".xz": "application/x-xz", ".bz2": "application/x-bzip2", ".log": "text/plain",
    ".mkv": "video/x-matroska", ".opus": "audio/opus", ".flac": "audio/flac",
}
_ENCODING_TYPES = {"gzip": "application/gzip", "br": "application/x-brotli",
                   "bzip2": "application/x-bzip2", "xz": "application/x-xz",
                   "compress": "application/x-compress"}


def content_type(path: str) -> str:
    """Content-Type for a file name, with ``charset=utf-8`` for text.

    A compressed file asked for by its own name (``x.tar.gz``) is served as
    what it is (application/gzip), never as ``application/x-tar``: a
    precompressed sibling of another file is labelled by the server with the
    original's type plus Content-Encoding instead.
    """
    name = os.path.basename(path).lower()
    ext = os.path.splitext(name)[1]
    ctype = _OVERRIDES.get(ext)
    if ctype is None:
        ctype, encoding = _MIME.guess_type(name, strict=False)
        if encoding is not None:
            ctype = _ENCODING_TYPES.get(encoding, "application/octet-stream")
        elif ctype is None:
            return "application/octet-stream"
    if ctype.startswith("text/") or ctype.endswith(("json", "xml", "javascript")):
        return ctype + "; charset=utf-8"
    return ctype


#: Types a browser would run as a document on our origin (script, forms, the visitor's session).
_ACTIVE = ("text/html", "application/xhtml+xml", "image/svg+xml", "text/xml", "application/xml")


def guard_headers(content_type: str) -> bytes:
    """Lines every user file is served with, so uploaded content cannot attack the UI on the same
    origin: ``nosniff`` always, and a ``sandbox`` CSP (no script, an opaque origin) for documents
    (HTML, XHTML, SVG, XML). Built once per file, with ``static_headers``."""
    block = b"X-Content-Type-Options: nosniff\r\n"
    if content_type.split(";", 1)[0].strip().lower() in _ACTIVE or content_type.endswith("+xml"):
        block += b"Content-Security-Policy: sandbox\r\n"
    return block


def static_headers(content_type: str, last_modified: int, etag: str, encoding: str | None = None,
                   vary: bool = False) -> bytes:
    """The per-file header block, each line ending in CRLF."""
    block = (f"Content-Type: {content_type}\r\n"
             f"Last-Modified: {http_date(last_modified)}\r\n"
             f"ETag: {etag}\r\n"
             "Accept-Ranges: bytes\r\n")
    if encoding is not None:
        block += f"Content-Encoding: {encoding}\r\n"
    if vary:
        block += "Vary: Accept-Encoding\r\n"
    return block.encode("latin-1")


# -- heads -----------------------------------------------------------------------

_CLOSE = b"Connection: close\r\n"
_KEEP = b"Connection: keep-alive\r\n"


def response_head(status: int, date: bytes, static: bytes, content_length: int | None, *,
                  extra: bytes = b"", close: bool = False, version: tuple = (1, 1)) -> bytes:
    """Status line, Date, Server, the static block, ``extra`` (pre-formatted
    lines), Content-Length (omitted when None), Connection, blank line.

    ``Connection: keep-alive`` is only said to an HTTP/1.0 client we keep:
    1.0 closes by default, 1.1 persists by default.
    """
    line = _STATUS_LINES.get(status) or status_line(status)
    length = b"" if content_length is None else b"Content-Length: %d\r\n" % content_length
    conn = _CLOSE if close else (_KEEP if version == (1, 0) else b"")
    return b"".join((line, date, SERVER, static, extra, length, conn, b"\r\n"))


_UNSAFE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _field(text: str) -> str:
    """A header value that cannot end the line or the head early."""
    return _UNSAFE.sub("", str(text))


def error_response(status: int, date: bytes, *, reason: str = "", headers=(), close: bool = False,
                   head_only: bool = False, version: tuple = (1, 1)) -> bytes:
    """A complete small response: head plus a text/plain body saying what
    went wrong. No body for 304/204/1xx; for HEAD the Content-Length of the
    body a GET would get, but no body."""
    extra = "".join(f"{_field(n)}: {_field(v)}\r\n" for n, v in headers).encode("latin-1", "replace")
    if status in _NO_BODY:
        return response_head(status, date, b"", None, extra=extra, close=close, version=version)
    phrase = status_line(status)[13:-2].decode("ascii")
    text = f"{status} {phrase}\n"
    if reason:
        text += _UNSAFE.sub("?", reason.replace("\n", " ")) + "\n"
    body = text.encode("utf-8", "backslashreplace")
    static = b"Content-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\n"
    head = response_head(status, date, static, len(body), extra=extra, close=close, version=version)
    return head if head_only else head + body


_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_URI_SAFE = "/:?#[]@!$&'()*+,;=-._~%"


def redirect_response(location: str, date: bytes, *, close: bool = False, head_only: bool = False,
                      version: tuple = (1, 1)) -> bytes:
    """301 to ``location``, a URI reference (usually the path plus "/").

    Characters a URI may not contain (space, quotes, non-ASCII, controls...)
    are percent-encoded; existing ``%XX`` escapes are kept, so an already
    quoted location passes unchanged and a raw one becomes valid.
    """
    uri = quote(_BAD_PERCENT.sub("%25", location), safe=_URI_SAFE, errors="surrogateescape")
    body = f"Moved to {uri}\n".encode("ascii")
    extra = b"Location: " + uri.encode("ascii") + b"\r\n"
    static = b"Content-Type: text/plain; charset=utf-8\r\n"
    head = response_head(301, date, static, len(body), extra=extra, close=close, version=version)
    return head if head_only else head + body
