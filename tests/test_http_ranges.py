"""Range, If-Range and multipart/byteranges (zcopy.http.ranges)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zcopy.http import (MAX_RANGES, HttpError, RangeNotSatisfiable, http_date, if_range_ok,
                        multipart_plan, parse_range)


@pytest.mark.parametrize("value, size, expected", [
    # RFC 9110 14.1.2 examples, on a 10000-byte representation
    ("bytes=0-499", 10000, [(0, 500)]),
    ("bytes=500-999", 10000, [(500, 1000)]),
    ("bytes=-500", 10000, [(9500, 10000)]),
    ("bytes=9500-", 10000, [(9500, 10000)]),
    ("bytes=0-0,-1", 10000, [(0, 1), (9999, 10000)]),
    ("bytes= 0-999, 4500-5499, -1000", 10000, [(0, 1000), (4500, 5500), (9000, 10000)]),
    ("bytes=500-600,601-999", 10000, [(500, 1000)]),          # adjacent: coalesced
    ("bytes=500-700,601-999", 10000, [(500, 1000)]),          # overlapping: coalesced
    # clamping, order, case
    ("bytes=0-99999", 100, [(0, 100)]),
    ("bytes=-500", 100, [(0, 100)]),                           # suffix longer than the file
    ("BYTES=1-2", 100, [(1, 3)]),
    ("bytes=500-599,0-9", 1000, [(500, 600), (0, 10)]),        # far apart: client's order kept
    ("bytes=0-1,5-6", 100, [(0, 7)]),                         # closer than a part header: merged
    ("bytes=0-,0-,0-", 1000, [(0, 1000)]),                     # amplification defeated
    ("bytes=200-300,,", 1000, [(200, 301)]),                   # empty list elements ignored
    ("bytes=0-1,500-", 400, [(0, 2)]),                         # the unsatisfiable one dropped
    ("bytes=0-" + "9" * 40, 10, [(0, 10)]),                    # huge numbers are clamped, not parsed
    # ignored (None -> 200)
    (None, 100, None),
    ("", 100, None),
    ("items=0-1", 100, None),
    ("bytes", 100, None),
    ("bytes=", 100, None),
    ("bytes=abc", 100, None),
    ("bytes=5-1", 100, None),                                  # last < first: invalid
    ("bytes=-", 100, None),
    ("bytes=1-2-3", 100, None),
    ("bytes=+1-2", 100, None),
    ("bytes=１-2", 100, None),                                  # non-ASCII digit
    ("bytes=-5", 0, None),                                     # suffix of an empty file: send it whole
    ("bytes=" + ",".join(f"{i * 10}-{i * 10}" for i in range(MAX_RANGES + 1)), 10**6, None),
])
def test_parse_range(value, size, expected):
    assert parse_range(value, size) == expected


@pytest.mark.parametrize("value, size", [
    ("bytes=100-", 100), ("bytes=100-200", 100), ("bytes=-0", 100), ("bytes=0-", 0), ("bytes=5-9,-0", 5),
])
def test_unsatisfiable(value, size):
    with pytest.raises(RangeNotSatisfiable) as exc:
        parse_range(value, size)
    assert isinstance(exc.value, HttpError) and exc.value.status == 416
    assert ("Content-Range", f"bytes */{size}") in exc.value.headers


def test_max_ranges_is_allowed():
    value = "bytes=" + ",".join(f"{i * 1000}-{i * 1000}" for i in range(MAX_RANGES))
    assert len(parse_range(value, 10**6)) == MAX_RANGES


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.one_of(st.none(), st.integers(0, 3000)), st.one_of(st.none(), st.integers(0, 3000))),
                min_size=1, max_size=8),
       st.integers(0, 2000))
def test_ranges_always_inside(specs, size):
    value = "bytes=" + ",".join(f"{'' if a is None else a}-{'' if b is None else b}" for a, b in specs)
    try:
        ranges = parse_range(value, size)
    except RangeNotSatisfiable:
        return
    if ranges is None:
        return
    for start, stop in ranges:
        assert 0 <= start < stop <= size


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60), st.integers(0, 10**6))
def test_random_range_text(value, size):
    try:
        ranges = parse_range(value, size)
    except RangeNotSatisfiable as exc:
        assert exc.status == 416
        return
    assert ranges is None or all(0 <= a < b <= size for a, b in ranges)


# -- If-Range ---------------------------------------------------------------------

ETAG = '"abc-1"'
LM = 784111777   # Sun, 06 Nov 1994 08:49:37 GMT


@pytest.mark.parametrize("value, ok", [
    (None, True),
    (ETAG, True),
    ('"other"', False),
    ("W/" + ETAG, False),                          # weak never matches for If-Range
    (http_date(LM), True),
    ("Sunday, 06-Nov-94 08:49:37 GMT", True),
    (http_date(LM + 1), False),
    (http_date(LM - 1), False),                    # a date only works when exactly equal
    ("not a date", False),
])
def test_if_range(value, ok):
    assert if_range_ok(value, ETAG, LM) is ok


# -- multipart --------------------------------------------------------------------

def test_multipart_exact_bytes():
    plan = multipart_plan([(0, 2), (8, 10)], 10, "text/plain; charset=utf-8", boundary="B0UND")
    assert plan.content_type == "multipart/byteranges; boundary=B0UND"
    assert plan.parts == [
        (b"\r\n--B0UND\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Range: bytes 0-1/10\r\n\r\n", 0, 2),
        (b"\r\n--B0UND\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Range: bytes 8-9/10\r\n\r\n", 8, 10),
    ]
    assert plan.trailer == b"\r\n--B0UND--\r\n"
    data = b"0123456789"
    body = b"".join(h + data[a:b] for h, a, b in plan.parts) + plan.trailer
    assert plan.length == len(body)


def test_multipart_parses_as_mime():
    """A real MIME parser reads the parts back out of the body we would send."""
    import email.parser
    import email.policy

    data = bytes(range(256)) * 4
    plan = multipart_plan([(0, 10), (500, 600), (1000, 1024)], len(data), "application/octet-stream")
    body = b"".join(h + data[a:b] for h, a, b in plan.parts) + plan.trailer
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {plan.content_type}\r\n\r\n".encode() + body)
    parts = list(msg.iter_parts())
    assert [p["Content-Range"] for p in parts] == ["bytes 0-9/1024", "bytes 500-599/1024", "bytes 1000-1023/1024"]
    assert [p.get_payload(decode=True) for p in parts] == [data[0:10], data[500:600], data[1000:1024]]


def test_boundaries_are_random():
    assert multipart_plan([(0, 1)], 1, "a/b").content_type != multipart_plan([(0, 1)], 1, "a/b").content_type
