"""Byte ranges (RFC 9110 14): Range, If-Range and multipart/byteranges.

``parse_range`` turns a Range header into half-open ``(start, stop)`` pairs
that the server hands, one by one, to the zero-copy engine. The decisions:

* Anything we do not understand - another unit, bad syntax, a last-pos
  before its first-pos - means "ignore the header and send 200", which RFC
  9110 14.2 allows and which is always a correct answer.
* More than ``MAX_RANGES`` range-specs are ignored the same way (200). Many
  tiny ranges cost one part header and one engine call each: a 60-byte
  request could otherwise make the server do thousands of syscalls (the
  Apache "Range killer", CVE-2011-3192). nginx's ``max_ranges`` does the same.
* Ranges that overlap or sit closer than a part header's size are coalesced
  (14.6 allows it; it also defeats "0-,0-,0-,..." amplification). When
  nothing needs coalescing, the client's order is kept (15.3.7.2).
* If no range is satisfiable, ``RangeNotSatisfiable`` (416) is raised.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from zcopy.http.conditional import etag_matches, parse_http_date
from zcopy.http.errors import RangeNotSatisfiable

MAX_RANGES = 64
#: Gap below which two ranges are merged: about one multipart part header.
COALESCE_GAP = 80


def parse_range(value: str | None, size: int) -> list[tuple[int, int]] | None:
    """Satisfiable ranges of ``value`` for a representation of ``size`` bytes.

    Returns None to mean "send the whole representation with 200"; raises
    ``RangeNotSatisfiable`` when the header is valid but selects nothing.
    """
    if value is None:
        return None
    unit, eq, spec = value.partition("=")
    if not eq or unit.strip().lower() != "bytes":
        return None
    specs = [s.strip() for s in spec.split(",")]
    specs = [s for s in specs if s]        # RFC 9110 5.6.1.2: empty list elements are ignored
    if not specs or len(specs) > MAX_RANGES:
        return None
    ranges: list[tuple[int, int]] = []
    for s in specs:
        first, dash, last = s.partition("-")
        if not dash:
            return None
        start, end = _pos(first.rstrip()), _pos(last.lstrip())
        if start is _BAD or end is _BAD:
            return None
        if start is None:                # suffix-range: the last N bytes
            if end is None:
                return None
            if end > 0 and size > 0:
                ranges.append((max(0, size - end), size))
            elif end > 0:
                return None              # the whole (empty) representation: 200
            continue
        if end is not None and end < start:
            return None                  # invalid range-spec: ignore the header
        if start < size:
            ranges.append((start, size if end is None else min(end + 1, size)))
    if not ranges:
        raise RangeNotSatisfiable(size)
    return _coalesce(ranges) if len(ranges) > 1 else ranges


_BAD = object()
_HUGE = 1 << 62   # longer digit strings than any file size: clamp, never int() them


def _pos(text: str):
    """A position: int, None when empty, _BAD when not 1*DIGIT."""
    if not text:
        return None
    if not (text.isascii() and text.isdigit()):
        return _BAD
    return int(text) if len(text) <= 18 else _HUGE


def _coalesce(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    ordered = sorted(ranges)
    merged = [ordered[0]]
    for start, stop in ordered[1:]:
        last_start, last_stop = merged[-1]
        if start <= last_stop + COALESCE_GAP:
            merged[-1] = (last_start, max(last_stop, stop))
        else:
            merged.append((start, stop))
    if len(merged) == len(ranges):
        return ranges                    # nothing merged: keep the client's order
    return merged


def if_range_ok(value: str | None, etag: str, last_modified: int, also: tuple = ()) -> bool:
    """Should the Range header be honoured (RFC 9110 13.1.5)?

    True without If-Range. An entity-tag must match strongly; a date must
    equal Last-Modified exactly. Anything else (a weak tag, an unparsable
    date) sends the whole representation, the safe answer.
    """
    if value is None:
        return True
    value = value.strip()
    if value.startswith(('"', "W/")):
        return etag_matches(value, etag, weak=False, also=also)
    date = parse_http_date(value)
    return date is not None and date == last_modified


@dataclass(slots=True)
class MultipartPlan:
    """What to send for a multi-range 206: a head with ``content_type`` and
    ``length``, then for each part its header bytes (``send``) and its file
    range (zero-copy engine), then ``trailer``."""

    content_type: str
    parts: list[tuple[bytes, int, int]]
    trailer: bytes
    length: int


def multipart_plan(ranges, size: int, content_type: str, boundary: str | None = None) -> MultipartPlan:
    """Part headers and total length of a multipart/byteranges body (RFC 9110
    14.6). The boundary is random by default: a file's own bytes must not be
    able to forge a part delimiter."""
    if boundary is None:
        boundary = secrets.token_hex(12)
    delimiter = f"\r\n--{boundary}\r\nContent-Type: {content_type}\r\nContent-Range: bytes ".encode("latin-1")
    parts = []
    length = 0
    for start, stop in ranges:
        head = delimiter + b"%d-%d/%d\r\n\r\n" % (start, stop - 1, size)
        parts.append((head, start, stop))
        length += len(head) + stop - start
    trailer = f"\r\n--{boundary}--\r\n".encode("latin-1")
    return MultipartPlan(f"multipart/byteranges; boundary={boundary}", parts, trailer, length + len(trailer))
