"""Response heads and per-file header facts (zcopy.http.headers)."""

from __future__ import annotations

import os

import pytest

from zcopy.http import (DateHeader, content_type, error_response, http_date, make_etag, redirect_response,
                        response_head, static_headers)

DATE = b"Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n"
LM = 784111777


def test_http_date():
    assert http_date(LM) == "Sun, 06 Nov 1994 08:49:37 GMT"
    assert http_date(0) == "Thu, 01 Jan 1970 00:00:00 GMT"


def test_date_header_rebuilt_once_per_second():
    now = [LM + 0.2]
    date = DateHeader(clock=lambda: now[0])
    first = date.get()
    assert first == DATE
    now[0] = LM + 0.9
    assert date.get() is first                     # same second: the very same object
    now[0] = LM + 1.0
    assert date.get() == b"Date: Sun, 06 Nov 1994 08:49:38 GMT\r\n"


def test_date_header_real_clock():
    line = DateHeader().get()
    assert line.startswith(b"Date: ") and line.endswith(b" GMT\r\n")


def test_make_etag_from_real_files(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(b"one")
    st1 = os.stat(p)
    etag = make_etag(st1)
    assert etag.startswith('"') and etag.endswith('"') and not etag.startswith("W/")
    assert make_etag(os.stat(p)) == etag                        # stable
    os.utime(p, ns=(st1.st_atime_ns, st1.st_mtime_ns + 1))
    assert make_etag(os.stat(p)) != etag                        # mtime_ns counts
    q = tmp_path / "g"
    q.write_bytes(b"one")
    os.utime(q, ns=(st1.st_atime_ns, st1.st_mtime_ns))
    assert make_etag(os.stat(q)) != etag                        # another inode
    p.write_bytes(b"onetwo")
    os.utime(p, ns=(st1.st_atime_ns, st1.st_mtime_ns))
    assert make_etag(os.stat(p)) != etag                        # size counts


@pytest.mark.parametrize("name, ctype", [
    ("index.html", "text/html; charset=utf-8"),
    ("a/b/style.CSS", "text/css; charset=utf-8"),
    ("app.js", "text/javascript; charset=utf-8"),
    ("data.json", "application/json; charset=utf-8"),
    ("feed.xml", "application/xml; charset=utf-8"),
    ("readme.md", "text/markdown; charset=utf-8"),
    ("notes.txt", "text/plain; charset=utf-8"),
    ("logo.svg", "image/svg+xml; charset=utf-8"),
    ("photo.jpg", "image/jpeg"),
    ("photo.webp", "image/webp"),
    ("font.woff2", "font/woff2"),
    ("movie.mp4", "video/mp4"),
    ("module.wasm", "application/wasm"),
    ("backup.tar.gz", "application/gzip"),                      # what the bytes are
    ("x.gz", "application/gzip"),
    ("x.zst", "application/zstd"),
    ("Makefile", "application/octet-stream"),
    ("blob.unknownext", "application/octet-stream"),
])
def test_content_type(name, ctype):
    assert content_type(name) == ctype


def test_static_headers_exact():
    assert static_headers("text/html; charset=utf-8", LM, '"e"') == (
        b"Content-Type: text/html; charset=utf-8\r\n"
        b"Last-Modified: Sun, 06 Nov 1994 08:49:37 GMT\r\n"
        b'ETag: "e"\r\n'
        b"Accept-Ranges: bytes\r\n")
    assert static_headers("text/html", LM, '"e"', encoding="br", vary=True).endswith(
        b"Accept-Ranges: bytes\r\nContent-Encoding: br\r\nVary: Accept-Encoding\r\n")


def test_response_head_exact():
    static = static_headers("text/plain; charset=utf-8", LM, '"e"')
    assert response_head(200, DATE, static, 5) == (
        b"HTTP/1.1 200 OK\r\n"
        b"Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n"
        b"Server: zcopy\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Last-Modified: Sun, 06 Nov 1994 08:49:37 GMT\r\n"
        b'ETag: "e"\r\n'
        b"Accept-Ranges: bytes\r\n"
        b"Content-Length: 5\r\n"
        b"\r\n")


@pytest.mark.parametrize("kwargs, tail", [
    ({}, b"Content-Length: 3\r\n\r\n"),
    ({"close": True}, b"Content-Length: 3\r\nConnection: close\r\n\r\n"),
    ({"version": (1, 0)}, b"Content-Length: 3\r\nConnection: keep-alive\r\n\r\n"),
    ({"version": (1, 0), "close": True}, b"Content-Length: 3\r\nConnection: close\r\n\r\n"),
    ({"extra": b"Content-Range: bytes 0-2/9\r\n"}, b"Content-Range: bytes 0-2/9\r\nContent-Length: 3\r\n\r\n"),
])
def test_response_head_variants(kwargs, tail):
    head = response_head(206, DATE, b"", 3, **kwargs)
    assert head.startswith(b"HTTP/1.1 206 Partial Content\r\n" + DATE + b"Server: zcopy\r\n")
    assert head.endswith(tail) and head.count(b"\r\n\r\n") == 1


def test_response_head_without_length():
    assert response_head(304, DATE, b"", None, extra=b'ETag: "e"\r\n') == (
        b"HTTP/1.1 304 Not Modified\r\n" + DATE + b'Server: zcopy\r\nETag: "e"\r\n\r\n')
    assert response_head(599, DATE, b"", 0).startswith(b"HTTP/1.1 599 Unknown\r\n")


def _split(resp: bytes):
    head, _, body = resp.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    fields = dict(line.split(b": ", 1) for line in lines[1:])
    return lines[0], fields, body


def test_error_response():
    resp = error_response(405, DATE, reason="PUT is not allowed here", headers=[("Allow", "GET, HEAD")])
    status, fields, body = _split(resp)
    assert status == b"HTTP/1.1 405 Method Not Allowed"
    assert fields[b"Allow"] == b"GET, HEAD"
    assert fields[b"Content-Type"] == b"text/plain; charset=utf-8"
    assert fields[b"X-Content-Type-Options"] == b"nosniff"
    assert int(fields[b"Content-Length"]) == len(body)
    assert body == b"405 Method Not Allowed\nPUT is not allowed here\n"
    assert b"Connection" not in fields


def test_error_response_head_only_and_close():
    full = error_response(404, DATE, reason="not found", close=True)
    head = error_response(404, DATE, reason="not found", close=True, head_only=True)
    assert full.startswith(head) and head.endswith(b"Connection: close\r\n\r\n")
    _, fields, body = _split(full)
    assert int(fields[b"Content-Length"]) == len(body) > 0


def test_error_response_no_body_for_304():
    resp = error_response(304, DATE, headers=[("ETag", '"e"')])
    assert resp == b"HTTP/1.1 304 Not Modified\r\n" + DATE + b'Server: zcopy\r\nETag: "e"\r\n\r\n'


def test_error_response_escapes_injection():
    resp = error_response(400, DATE, reason="bad\r\nSet-Cookie: x=1\x00\u00e9",
                          headers=[("X-Evil", "a\r\nInjected: 1")])
    status, fields, body = _split(resp)
    assert b"Injected" not in fields and b"Set-Cookie" not in fields
    assert fields[b"X-Evil"] == b"aInjected: 1"
    assert int(fields[b"Content-Length"]) == len(body)
    assert b"\r" not in body and b"\x00" not in body and "é".encode() in body


def test_error_response_416():
    resp = error_response(416, DATE, headers=[("Content-Range", "bytes */10")])
    _, fields, _ = _split(resp)
    assert fields[b"Content-Range"] == b"bytes */10"


@pytest.mark.parametrize("location, expected", [
    ("/dir/", b"/dir/"),
    ("/a b/", b"/a%20b/"),
    ("/d\u00e9j\u00e0/", b"/d%C3%A9j%C3%A0/"),
    ("/a%20b/", b"/a%20b/"),                         # already quoted: unchanged
    ("/100%/", b"/100%25/"),                         # stray %: encoded
    ('/"<x>"/', b"/%22%3Cx%3E%22/"),
    ("/a/?q=1&r=2", b"/a/?q=1&r=2"),
    ("/x\r\nSet-Cookie: a/", b"/x%0D%0ASet-Cookie:%20a/"),
])
def test_redirect(location, expected):
    resp = redirect_response(location, DATE)
    status, fields, body = _split(resp)
    assert status == b"HTTP/1.1 301 Moved Permanently"
    assert fields[b"Location"] == expected
    assert int(fields[b"Content-Length"]) == len(body)
    assert redirect_response(location, DATE, head_only=True, close=True).endswith(b"Connection: close\r\n\r\n")


def test_status_lines_name_the_upload_protocols_codes():
    from zcopy.http.headers import status_line

    assert status_line(104) == b"HTTP/1.1 104 Upload Resumption Supported\r\n"
    assert status_line(460) == b"HTTP/1.1 460 Checksum Mismatch\r\n"
    assert status_line(599) == b"HTTP/1.1 599 Unknown\r\n"
