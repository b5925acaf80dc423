"""Decoding of chunked request bodies (RFC 9112 7.1), incrementally.

Why not httptools: llhttp decodes chunks well, but once the final chunk is
read it goes straight on to parse what follows as the next request, and
httptools does not report where the body ended. A pipelined request after an
upload would be lost. This small state machine is strict where llhttp is:
CRLF only (a bare LF is an error), hex sizes of at most 16 digits, bounded
size lines and trailer section, so a client cannot make it buffer without
limit.

``feed`` returns slices of the input: ``memoryview``s when the input is
``bytes`` (zero-copy), ``bytes`` copies otherwise, because a view into a
caller's reusable ``bytearray`` would forbid resizing it and could change
under the reader's feet.
"""

from __future__ import annotations

import re

from zcopy.http.errors import HttpError

MAX_LINE = 4096          # a chunk-size line with its extensions
MAX_TRAILERS = 16384     # the whole trailer section

_SIZE_LINE = re.compile(
    rb"([0-9A-Fa-f]{1,16})"
    rb"(?:[ \t]*;[ \t]*[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
    rb"(?:[ \t]*=[ \t]*(?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+|\"(?:[^\"\\\x00-\x08\x0a-\x1f\x7f]|\\[^\x00-\x08\x0a-\x1f\x7f])*\"))?)*"
    rb"[ \t]*\r")
_TRAILER_LINE = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[^\x00-\x08\x0a-\x1f\x7f]*\r")

_SIZE, _DATA, _DATA_END, _TRAILER, _DONE = range(5)


class ChunkedDecoder:
    """Feed raw body bytes; get body bytes back; ``done`` after the last chunk.

    Bytes received after the end of the body (a pipelined next request) are
    kept in ``trailing`` for the connection to parse.
    """

    def __init__(self) -> None:
        self.done = False
        self.trailing = b""
        self._state = _SIZE
        self._line = bytearray()      # partial size or trailer line
        self._left = 0                # bytes of chunk data still to come
        self._end_seen = 0            # bytes of the CRLF after chunk data seen
        self._trailer_bytes = 0

    def feed(self, data) -> list:
        """Decode ``data``; returns the body bytes it held. Raises HttpError(400)."""
        out: list = []
        if isinstance(data, memoryview):
            data = bytes(data)
        view = memoryview(data) if isinstance(data, bytes) else None
        pos, n = 0, len(data)
        while pos < n:
            state = self._state
            if state == _DATA:
                take = min(self._left, n - pos)
                out.append(view[pos:pos + take] if view is not None else bytes(data[pos:pos + take]))
                pos += take
                self._left -= take
                if self._left == 0:
                    self._state = _DATA_END
            elif state == _DATA_END:
                expected = b"\r\n"[self._end_seen]
                if data[pos] != expected:
                    raise HttpError(400, "chunk data not followed by CRLF", close=True)
                pos += 1
                self._end_seen += 1
                if self._end_seen == 2:
                    self._end_seen = 0
                    self._state = _SIZE
            elif state == _DONE:
                self.trailing += bytes(data[pos:])
                break
            else:
                line, pos = self._take_line(data, pos, n)
                if line is None:
                    break
                if state == _SIZE:
                    self._size_line(line)
                else:
                    self._trailer_line(line)
        return out

    def _take_line(self, data, pos: int, n: int):
        """(line up to and including the CR before LF, new pos), or (None, n)."""
        nl = data.find(b"\n", pos)
        limit = MAX_LINE if self._state == _SIZE else MAX_TRAILERS - self._trailer_bytes
        if nl < 0:
            self._line += data[pos:]
            if len(self._line) > limit:
                raise HttpError(400, "chunk line too long", close=True)
            return None, n
        self._line += data[pos:nl]
        line = bytes(self._line)
        self._line.clear()
        if len(line) > limit:
            raise HttpError(400, "chunk line too long", close=True)
        return line, nl + 1

    def _size_line(self, line: bytes) -> None:
        m = _SIZE_LINE.fullmatch(line)
        if m is None:
            raise HttpError(400, "malformed chunk size line", close=True)
        size = int(m.group(1), 16)
        if size:
            self._left = size
            self._state = _DATA
        else:
            self._state = _TRAILER

    def _trailer_line(self, line: bytes) -> None:
        self._trailer_bytes += len(line) + 1
        if line == b"\r":
            self._state = _DONE
            self.done = True
        elif _TRAILER_LINE.fullmatch(line) is None:
            raise HttpError(400, "malformed trailer field", close=True)
