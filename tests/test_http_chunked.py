"""Chunked request bodies (zcopy.http.chunked)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zcopy.http import ChunkedDecoder, HttpError


def decode_all(pieces):
    dec = ChunkedDecoder()
    out = b""
    for p in pieces:
        out += b"".join(bytes(x) for x in dec.feed(p))
    return dec, out


BODY = b"5\r\nhello\r\n6;name=val;q=\"a b\"\r\n world\r\n0\r\nX-Sum: 1\r\n\r\n"


def test_whole():
    dec, out = decode_all([BODY])
    assert out == b"hello world" and dec.done and dec.trailing == b""


def test_byte_by_byte_and_trailing():
    data = BODY + b"GET / HTTP/1.1\r\n"
    dec, out = decode_all([data[i:i + 1] for i in range(len(data))])
    assert out == b"hello world" and dec.done and dec.trailing == b"GET / HTTP/1.1\r\n"


def test_views_for_bytes_copies_for_bytearray():
    assert all(isinstance(x, memoryview) for x in ChunkedDecoder().feed(BODY))
    buf = bytearray(BODY)
    parts = ChunkedDecoder().feed(buf)
    assert all(isinstance(x, bytes) for x in parts)
    buf.clear()                                   # the caller may reuse its buffer at once
    assert b"".join(parts) == b"hello world"


def test_hex_sizes_and_large_chunk():
    data = b"A\r\n" + b"x" * 10 + b"\r\n" + b"00000010\r\n" + b"y" * 16 + b"\r\n0\r\n\r\n"
    dec, out = decode_all([data])
    assert out == b"x" * 10 + b"y" * 16 and dec.done


@pytest.mark.parametrize("data", [
    b"zz\r\n",                                   # not hex
    b"5\nhello\r\n",                             # bare LF after size
    b"5\r\nhelloXX",                             # no CRLF after data
    b"5\r\nhello\n0\r\n\r\n",
    b"-5\r\n",
    b" 5\r\n",
    b"11111111111111111\r\n",                    # 17 hex digits: would overflow
    b"5;\r\n",                                   # empty extension name
    b"0\r\nBad Trailer\r\n\r\n",                 # trailer without a colon
    b"0\r\nX : y\r\n\r\n",                       # whitespace before colon
    b"1" * 5000,                                 # size line without end
    b"0\r\n" + b"X: " + b"y" * 20000,            # endless trailer section
])
def test_malformed(data):
    with pytest.raises(HttpError) as exc:
        ChunkedDecoder().feed(data)
    assert exc.value.status == 400 and exc.value.close


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=40), max_size=6), st.data())
def test_roundtrip_any_split(chunks, data):
    encoded = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\nNEXT"
    cuts = sorted(data.draw(st.lists(st.integers(0, len(encoded)), max_size=5)))
    pieces = [encoded[a:b] for a, b in zip([0] + cuts, cuts + [len(encoded)])]
    dec, out = decode_all(pieces)
    assert out == b"".join(chunks) and dec.done and dec.trailing == b"NEXT"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_only_http_errors(data):
    try:
        ChunkedDecoder().feed(data)
    except HttpError as exc:
        assert exc.status == 400
