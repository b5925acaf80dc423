"""Framing and parsing of request heads (zcopy.http.request)."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zcopy import http
from zcopy.http import HttpError, parse_head, split_head

GET = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"


# -- split_head ------------------------------------------------------------------

@pytest.mark.parametrize("buf, expected", [
    (GET, len(GET)),
    (GET + b"GET /b HTTP/1.1\r\n", len(GET)),              # pipelined: only the first head
    (GET[:-1], None),
    (b"GET /a HTTP/1.1\r\nHost: x\r\n", None),
    (b"", None),
    (b"\r\n\r\n" + GET, 4 + len(GET)),                     # leading empty lines skipped, counted
    (b"\r\n", None),
    (b"GET / HTTP/1.1\nHost: x\n\n", 24),                   # bare LF framed (parse_head says 400)
    (b"GET / HTTP/1.1\r\nHost: x\n\n\r\n", 25),             # the earliest end wins
])
def test_split_head(buf, expected):
    assert split_head(buf) == expected
    assert split_head(bytearray(buf)) == expected


@pytest.mark.parametrize("buf, status", [
    (b"GET /" + b"a" * 9000, 414),                                   # request line never ends
    (b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 3000, 431),               # incomplete and too big
    (b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 3000 + b"\r\n", 431),     # complete but too big
])
def test_split_head_limits(buf, status):
    with pytest.raises(HttpError) as exc:
        split_head(buf)
    assert exc.value.status == status and exc.value.close


def test_split_head_custom_limits():
    assert split_head(b"GET /abc", max_head=100, max_target=4) is None   # not over the slack yet
    with pytest.raises(HttpError) as exc:
        split_head(b"GET /" + b"a" * 100, max_head=1000, max_target=4)
    assert exc.value.status == 414
    with pytest.raises(HttpError) as exc:
        split_head(GET, max_head=10)
    assert exc.value.status == 431


# -- parse_head: good requests -------------------------------------------------------

def test_parse_head_fields():
    req = parse_head(b"GET /d%C3%A9j%C3%A0/a%20b.txt?sort=size&x=%41 HTTP/1.1\r\n"
                     b"Host: example\r\nAccept: text/html\r\nAccept: application/json\r\n"
                     b"X-Trail:   padded \t\r\nIf-None-Match: \"a\"\r\n\r\n")
    assert req.method == "GET"
    assert req.target == b"/d%C3%A9j%C3%A0/a%20b.txt?sort=size&x=%41"
    assert req.path == "/déjà/a b.txt"
    assert req.query == "sort=size&x=%41"
    assert req.version == (1, 1)
    assert req.headers == {"host": "example", "accept": "text/html, application/json",
                           "x-trail": "padded", "if-none-match": '"a"'}
    assert req.keep_alive and not req.chunked and not req.expect_continue
    assert req.content_length is None


@pytest.mark.parametrize("head, keep_alive", [
    (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", True),
    (b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", False),
    (b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Keep-Alive, Close\r\n\r\n", False),
    (b"GET / HTTP/1.0\r\n\r\n", False),
    (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", True),
    (b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", True),
])
def test_keep_alive(head, keep_alive):
    assert parse_head(head).keep_alive is keep_alive


def test_bodies_and_expect():
    req = parse_head(b"PUT /f HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\nExpect: 100-continue\r\n\r\n")
    assert (req.method, req.content_length, req.chunked, req.expect_continue) == ("PUT", 12, False, True)
    req = parse_head(b"PUT /f HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert req.chunked and req.content_length is None


@pytest.mark.parametrize("head, path, query", [
    (b"GET http://example/a%2Fb?q=1 HTTP/1.1\r\nHost: example\r\n\r\n", "/a/b", "q=1"),  # absolute-form
    (b"GET http://example HTTP/1.1\r\nHost: example\r\n\r\n", "/", ""),
    (b"GET /a#frag HTTP/1.1\r\nHost: x\r\n\r\n", "/a", ""),
    (b"\r\nGET /lead HTTP/1.1\r\nHost: x\r\n\r\n", "/lead", ""),
    (b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", "*", ""),
    (b"GET /a\\b HTTP/1.1\r\nHost: x\r\n\r\n", "/a\\b", ""),          # url_segments refuses it
])
def test_targets(head, path, query):
    req = parse_head(head)
    assert (req.path, req.query) == (path, query)


def test_upgrade_is_parsed_and_ignored():
    req = parse_head(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n")
    assert req.method == "GET" and req.headers["upgrade"] == "h2c"


# -- parse_head: refusals ----------------------------------------------------------

H = b"Host: x\r\n"


@pytest.mark.parametrize("host", ["", "example.com", "example.com:8080", "h:", "127.0.0.1:1", "[::1]:8000",
                                  "[fe80::1%25eth0]", "xn--caf-dma.example", "a_b.local", "ex%41mple"])
def test_valid_hosts(host):
    assert parse_head(f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()).headers["host"] == host


@pytest.mark.parametrize("head, status", [
    (b"GET / HTTP/1.1\r\n\r\n", 400),                                     # 1.1 without Host
    (b"GET / HTTP/1.1\r\n" + H + H + b"\r\n", 400),                        # two Hosts
    (b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400),                         # whitespace before colon
    (b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),                         # RFC 9112 3.2: invalid Host
    (b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: u@h\r\n\r\n", 400),                         # no userinfo in Host
    (b"GET / HTTP/1.1\r\nHost: h:80:1\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: h:ab\r\n\r\n", 400),
    (b"GET / HTTP/1.0\r\nHost: <x>\r\n\r\n", 400),                         # 1.0 too, when it sends one
    (b"GET / HTTP/1.1\r\n" + H + b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n" + H + b"Content-Length: 3\r\nContent-Length: 4\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n" + H + b"Content-Length: 3\r\nContent-Length: 3\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n" + H + b"Content-Length: -1\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n" + H + b"Content-Length: 1e3\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip\r\n\r\n", 400),   # chunked not last
    (b"GET / HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip, chunked\r\n\r\n", 501),
    (b"GET / HTTP/1.1\r\n" + H + b" folded\r\n\r\n", 400),               # obs-fold
    (b"GET / HTTP/1.1\nHost: x\n\n", 400),                                # bare LF
    (b"GET /a b HTTP/1.1\r\n" + H + b"\r\n", 400),
    (b"GET /a%00b HTTP/1.1\r\n" + H + b"\r\n", 400),                     # NUL via percent
    (b"GET /a\x00b HTTP/1.1\r\n" + H + b"\r\n", 400),                    # raw NUL
    (b"GET /a%zzb HTTP/1.1\r\n" + H + b"\r\n", 400),                     # bad percent-encoding
    (b"GET /a%4 HTTP/1.1\r\n" + H + b"\r\n", 400),
    (b"GET /\xc3\xa9 HTTP/1.1\r\n" + H + b"\r\n", 400),                  # raw non-ASCII target
    (b"GET a HTTP/1.1\r\n" + H + b"\r\n", 400),
    (b"G(T / HTTP/1.1\r\n" + H + b"\r\n", 400),                          # method not a token
    (b"FROB / HTTP/1.1\r\n" + H + b"\r\n", 501),                         # unknown token
    (b"get / HTTP/1.1\r\n" + H + b"\r\n", 501),                          # methods are case-sensitive
    (b"PURGE / HTTP/1.1\r\n" + H + b"\r\n", 501),                        # llhttp knows it, we do not
    (b"GET / HTTP/2.0\r\n" + H + b"\r\n", 505),
    (b"GET / HTTP/1.2\r\n" + H + b"\r\n", 505),
    (b"GET / HTTP/0.9\r\n\r\n", 505),
    (b"GET /\r\n\r\n", 505),                                             # HTTP/0.9-style line
    (b"GET / RTSP/1.0\r\n" + H + b"\r\n", 505),                          # llhttp parses RTSP; we do not serve it
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n" + H + b"\r\n", 414),
    (b"GET / HTTP/1.1\r\n" + H + b"X: " + b"y" * 17000 + b"\r\n\r\n", 431),
    (b"GET / HTTP/1.1\r\n" + H, 400),                                    # not a whole head
])
def test_refusals(head, status):
    with pytest.raises(HttpError) as exc:
        parse_head(head)
    assert exc.value.status == status, exc.value.reason
    assert exc.value.close


def test_known_methods_parse():
    for method in ("GET", "HEAD", "PUT", "DELETE", "MKCOL", "MOVE", "COPY", "OPTIONS", "POST", "PATCH",
                   "PROPFIND"):
        assert parse_head(method.encode() + b" /x HTTP/1.1\r\nHost: x\r\n\r\n").method == method


# -- hypothesis: only a result or an HttpError, ever -----------------------------------

_pieces = st.sampled_from([
    b"GET ", b"HEAD ", b"FOO ", b"/", b"/a%", b"%00", b"%2F", b"?", b"#", b" HTTP/1.1", b" HTTP/1.0",
    b" HTTP/2", b"\r\n", b"\n", b"\r", b"Host: x", b"Host:", b"Content-Length: 5", b"Transfer-Encoding: chunked",
    b"Connection: close", b" ", b":", b"\x00", b"\xff", b"\t", b"a", b"Expect: 100-continue",
])
_heads = st.one_of(st.binary(max_size=300), st.lists(_pieces, max_size=30).map(b"".join))


@settings(max_examples=400, deadline=None)
@given(_heads)
def test_random_bytes_never_crash(data):
    try:
        n = split_head(data, max_head=256, max_target=64)
    except HttpError as exc:
        assert exc.status in (414, 431)
        return
    if n is None:
        return
    assert 0 < n <= len(data)
    try:
        req = parse_head(bytes(data[:n]))
    except HttpError as exc:
        assert 400 <= exc.status < 600 and exc.close
        return
    assert req.version in ((1, 0), (1, 1))
    assert "\x00" not in req.path


def test_non_utf8_path_bytes_survive_as_surrogates():
    """A Latin-1 name on disk: the bytes come back exactly through os.fsencode."""
    req = parse_head(b"GET /caf%E9/%FF%FE.txt HTTP/1.1\r\nHost: t\r\n\r\n")
    assert os.fsencode(req.path) == b"/caf\xe9/\xff\xfe.txt"


def test_memoized_requests_are_shared_and_read_only():
    """HeadCache hands every identical head the same Request: neither it nor
    its header fields can be changed by one user behind the others' backs."""
    import dataclasses

    heads = http.HeadCache()
    head = b"GET /a HTTP/1.1\r\nHost: t\r\nX-One: 1\r\n\r\n"
    first, again = heads.parse(head), heads.parse(bytes(head))
    assert first is again and first.headers["x-one"] == "1"
    with pytest.raises(TypeError):
        first.headers["x-one"] = "2"
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.path = "/b"


def test_head_cache_is_bounded_and_never_keeps_refused_heads():
    heads = http.HeadCache(size=8)
    for i in range(100):
        heads.parse(b"GET /%d HTTP/1.1\r\nHost: t\r\n\r\n" % i)
        assert len(heads) <= 8
    with pytest.raises(http.HttpError):
        heads.parse(b"GET / HTTP/1.1\r\n\r\n")          # no Host
    assert b"GET / HTTP/1.1\r\n\r\n" not in heads.known


def test_head_reader_takes_heads_one_by_one_and_keeps_what_follows():
    """The head reader the server protocol and the client share."""
    reader = http.HeadReader()
    reader.buf += b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-"
    assert reader.take() == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert reader.take() is None                      # the second is incomplete
    reader.buf += b"Length: 2\r\n\r\nhi"
    assert reader.take() == b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"
    assert bytes(reader.buf) == b"hi"                 # the body stays for its reader


@pytest.mark.parametrize("data, status", [
    (b"HTTP/1.1 200 OK\r\nX: " + b"a" * 20000, 431),    # never ends, over the limit
    (b"HTTP/1.1 200 OK\r\nX: " + b"a" * 20000 + b"\r\n\r\n", 431),
])
def test_head_reader_limits(data, status):
    reader = http.HeadReader()
    reader.buf += data
    with pytest.raises(HttpError) as info:
        reader.take()
    assert info.value.status == status


@pytest.mark.parametrize("head, expected", [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: 1\r\nX-A: 2 \r\n\r\n",
     (200, "OK", {"content-length": "2", "x-a": "1, 2"})),
    (b"HTTP/1.1 100 Continue\r\n\r\n", (100, "Continue", {})),
    (b"HTTP/1.0 404 Not Found\r\n\r\n", (404, "Not Found", {})),
])
def test_parse_response_head(head, expected):
    from zcopy.http.request import parse_response_head

    assert parse_response_head(head) == expected


@pytest.mark.parametrize("head", [b"HTTP/1.1 2x0 OK\r\n\r\n", b"SSH-2.0-OpenSSH_9.2\r\n\r\n",
                                  b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n", b"HTTP/2.0 200 OK\r\n\r\n"])
def test_parse_response_head_refuses_what_is_not_http1(head):
    from zcopy.http.request import parse_response_head

    with pytest.raises(HttpError) as info:
        parse_response_head(head)
    assert info.value.status == 502
