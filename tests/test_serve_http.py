"""Black-box tests of `zcopy serve` over real sockets: the HTTP behaviour of issue 4.

One server (module fixture) serves a prepared folder; each test speaks raw
HTTP (to see exact bytes) or runs curl (a real client).

The server fixture is parametrised over both transports: plain TCP, and TLS (``--tls-cert``;
``serverutil.connect`` and ``curl`` then speak TLS with the exact same bytes inside). The TLS
variant of every test runs with ``ZCOPY_TLS_FULL=1``; without it, only ``TLS_IN_CI`` (a short
subset: framing, keep-alive and pipelining, ranges, conditionals, the big file) runs over TLS.
"""

from __future__ import annotations

import email.utils
import gzip
import hashlib
import json
import os
import socket
import struct
from pathlib import Path

import pytest

from serverutil import Server, connect, curl, file_fds, get, read_response, request
from conftest import needs_tool

BIG = os.urandom(3 * 1024 * 1024 + 7)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("www")
    (root / "hello.txt").write_bytes(b"hello, world\n")
    (root / "big.bin").write_bytes(BIG)
    (root / "empty").write_bytes(b"")
    (root / "page.html").write_text("<h1>hi</h1>")
    (root / "site").mkdir()
    (root / "site" / "index.html").write_text("<p>index</p>")
    (root / "list").mkdir()
    (root / "list" / "<script>alert(1).txt").write_text("x")
    (root / "list" / 'a"b & c.txt').write_text("y")
    (root / "list" / "sub").mkdir()
    (root / "list" / ".hidden").write_text("secret")
    (root / ".env").write_text("SECRET=1")
    (root / "app.js").write_text("console.log(1)\n" * 100)
    (root / "app.js.gz").write_bytes(gzip.compress(b"console.log(1)\n" * 100))
    (root / "sp ace.txt").write_text("space")
    outside = tmp_path_factory.mktemp("outside")
    (outside / "secret.txt").write_text("outside")
    (root / "escape").symlink_to(outside / "secret.txt")
    return root


TLS_FULL = os.environ.get("ZCOPY_TLS_FULL") == "1"
TLS_IN_CI = {"test_get_file_headers_and_body", "test_big_file_exact_bytes", "test_empty_file",
             "test_keep_alive_and_pipelining", "test_bad_requests", "test_single_range_with_curl",
             "test_multipart_ranges", "test_conditionals_with_curl", "test_head_has_no_body_and_keeps_connection"}
#: What only plain TCP can show (TCP segments on the wire).
PLAIN_ONLY = {"test_a_small_file_leaves_in_one_segment_with_its_head"}


@pytest.fixture(scope="module", params=["plain", "tls"])
def server(request, root):
    with Server(root, "--header-timeout", "1", "--idle-timeout", "3", tls=request.param == "tls") as s:
        yield s


@pytest.fixture(autouse=True)
def _transport_subset(request):
    params = getattr(request.node, "callspec", None)
    if params is None or params.params.get("server") != "tls":
        return
    name = request.node.originalname
    if name in PLAIN_ONLY:
        pytest.skip("what this test looks at exists on plain TCP only")
    if not TLS_FULL and name not in TLS_IN_CI:
        pytest.skip("TLS variant outside the CI subset (ZCOPY_TLS_FULL=1 runs it)")


def test_get_file_headers_and_body(server):
    status, h, body = get(server.port, "/hello.txt")
    assert status == 200
    assert body == b"hello, world\n"
    assert h["content-length"] == "13"
    assert h["content-type"] == "text/plain; charset=utf-8"
    assert h["accept-ranges"] == "bytes"
    assert h["server"].startswith("zcopy")
    assert h["etag"].startswith('"') and h["etag"].endswith('"')
    assert email.utils.parsedate_to_datetime(h["date"])
    mtime = int(os.stat(server.root + "/hello.txt").st_mtime)
    assert email.utils.parsedate_to_datetime(h["last-modified"]).timestamp() == mtime


def test_big_file_exact_bytes(server):
    status, h, body = get(server.port, "/big.bin")
    assert status == 200
    assert hashlib.sha256(body).digest() == hashlib.sha256(BIG).digest()


def test_empty_file(server):
    status, h, body = get(server.port, "/empty")
    assert (status, h["content-length"], body) == (200, "0", b"")


@needs_tool("curl")
def test_head_with_curl(server):
    out = curl("-I", f"{server.url}/big.bin")
    text = out.stdout.decode()
    assert text.startswith("HTTP/1.1 200")
    assert f"Content-Length: {len(BIG)}" in text


def test_head_has_no_body_and_keeps_connection(server):
    with connect(server.port) as s:
        s.sendall(b"HEAD /hello.txt HTTP/1.1\r\nHost: t\r\n\r\nGET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n")
        status, h, body, _ = read_response(s, head_only=True)
        assert status == 200 and h["content-length"] == "13"
        status, h, body, _ = read_response(s)
        assert body == b"hello, world\n"


def test_keep_alive_and_pipelining(server):
    with connect(server.port) as s:
        s.sendall(b"".join(b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n" for _ in range(5)))
        for _ in range(5):
            status, _, body, _ = read_response(s)
            assert (status, body) == (200, b"hello, world\n")
        s.sendall(b"GET /page.html HTTP/1.1\r\nHost: t\r\n\r\n")
        assert read_response(s)[2] == b"<h1>hi</h1>"


def _data_segments_in(sock) -> int:
    """tcpi_data_segs_in of struct tcp_info (linux/tcp.h, offset 152, Linux >= 4.6):
    segments carrying data that this socket received."""
    return struct.unpack_from("I", sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256), 152)[0]


def test_a_small_file_leaves_in_one_segment_with_its_head(server):
    """The head goes out with MSG_MORE and the body's sendfile pushes both, so a
    small reply is one TCP segment, not a head segment and a body segment."""
    with connect(server.port) as s:
        for _ in range(3):
            before = _data_segments_in(s)
            s.sendall(b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n")
            assert read_response(s)[2] == b"hello, world\n"
            assert _data_segments_in(s) - before == 1


@needs_tool("curl")
def test_curl_reuses_connection(server):
    out = curl("-v", f"{server.url}/hello.txt", f"{server.url}/page.html")
    assert out.stdout == b"hello, world\n<h1>hi</h1>"
    assert b"Re-using existing connection" in out.stderr or b"Reusing existing" in out.stderr


def test_http10_closes_and_keepalive_header(server):
    with connect(server.port) as s:
        s.sendall(b"GET /hello.txt HTTP/1.0\r\n\r\n")
        status, h, body, _ = read_response(s)
        assert status == 200 and body == b"hello, world\n"
        assert s.recv(10) == b""
    with connect(server.port) as s:
        s.sendall(b"GET /hello.txt HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        status, h, body, _ = read_response(s)
        assert h.get("connection", "").lower() == "keep-alive"
        s.sendall(b"GET /hello.txt HTTP/1.0\r\n\r\n")
        assert read_response(s)[2] == b"hello, world\n"


def test_connection_close_is_honoured(server):
    with connect(server.port) as s:
        s.sendall(b"GET /hello.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        status, h, _, _ = read_response(s)
        assert h["connection"] == "close"
        assert s.recv(10) == b""


@pytest.mark.parametrize("raw,status", [
    (b"GARBAGE\r\n\r\n", 400),
    (b"GET /hello.txt HTTP/1.1\r\n\r\n", 400),                       # 1.1 without Host
    (b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost : t\r\n\r\n", 400),                     # whitespace before colon
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: t\r\n\r\n", 414),
    (b"GET / HTTP/1.1\r\nHost: t\r\n" + b"X-Big: " + b"b" * 20000 + b"\r\n\r\n", 431),
    (b"POST /hello.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n", 405),
    (b"FROB /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n", 501),
    (b"GET /hello.txt HTTP/2.0\r\nHost: t\r\n\r\n", 505),
])
def test_bad_requests(server, raw, status):
    got, headers, _ = request(server.port, raw)
    assert got == status
    if status == 405:
        assert "GET" in headers["allow"] and "HEAD" in headers["allow"]
    # and the server keeps serving
    assert get(server.port, "/hello.txt")[0] == 200


# -- ranges -------------------------------------------------------------------

@needs_tool("curl")
def test_single_range_with_curl(server):
    out = curl("-s", "-D", "-", "-r", "100-199", f"{server.url}/big.bin")
    head, _, body = out.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 206")
    assert f"Content-Range: bytes 100-199/{len(BIG)}".encode() in head
    assert body == BIG[100:200]


@pytest.mark.parametrize("spec,expected", [
    ("bytes=-10", slice(-10, None)),
    ("bytes=3145700-", slice(3145700, None)),
    ("bytes=0-0", slice(0, 1)),
    ("bytes=5-99999999999", slice(5, None)),
])
def test_suffix_and_open_ranges(server, spec, expected):
    status, h, body = get(server.port, "/big.bin", {"Range": spec})
    assert status == 206
    assert body == BIG[expected]


def test_multipart_ranges(server):
    status, h, body = get(server.port, "/big.bin", {"Range": "bytes=0-9,1000-1009,-5"})
    assert status == 206
    assert h["content-type"].startswith("multipart/byteranges; boundary=")
    boundary = h["content-type"].split("boundary=")[1].strip('"').encode()
    parts = body.split(b"--" + boundary)
    payloads = [p.split(b"\r\n\r\n", 1)[1][:-2] for p in parts[1:-1]]
    assert payloads == [BIG[0:10], BIG[1000:1010], BIG[-5:]]
    assert parts[-1].startswith(b"--")
    assert int(h["content-length"]) == len(body)


def test_unsatisfiable_range(server):
    status, h, _ = get(server.port, "/hello.txt", {"Range": "bytes=500-600"})
    assert status == 416
    assert h["content-range"] == "bytes */13"


def test_invalid_range_is_ignored(server):
    status, _, body = get(server.port, "/hello.txt", {"Range": "bytes=abc"})
    assert (status, body) == (200, b"hello, world\n")


def test_if_range(server):
    etag = get(server.port, "/hello.txt", method="HEAD")[1]["etag"]
    assert get(server.port, "/hello.txt", {"Range": "bytes=0-4", "If-Range": etag})[2] == b"hello"
    status, _, body = get(server.port, "/hello.txt", {"Range": "bytes=0-4", "If-Range": '"other"'})
    assert (status, body) == (200, b"hello, world\n")


def test_if_range_with_a_date(server):
    lm = get(server.port, "/hello.txt", method="HEAD")[1]["last-modified"]
    status, h, body = get(server.port, "/hello.txt", {"Range": "bytes=7-", "If-Range": lm})
    assert (status, body, h["content-range"]) == (206, b"world\n", "bytes 7-12/13")
    status, _, body = get(server.port, "/hello.txt", {"Range": "bytes=7-", "If-Range": "Mon, 01 Jan 2001 00:00:00 GMT"})
    assert (status, body) == (200, b"hello, world\n")


# -- conditionals ---------------------------------------------------------------

@needs_tool("curl")
def test_conditionals_with_curl(server, tmp_path):
    """curl's own revalidation: --etag-save/--etag-compare (If-None-Match) and
    -z DATE (If-Modified-Since), then a resumed download (-C -: Range)."""
    tag = tmp_path / "etag"
    out = curl("-o", str(tmp_path / "a"), "-w", "%{http_code}", "--etag-save", str(tag), f"{server.url}/hello.txt")
    assert out.stdout == b"200" and tag.read_text().strip().startswith('"')
    out = curl("-o", str(tmp_path / "b"), "-w", "%{http_code}", "--etag-compare", str(tag), f"{server.url}/hello.txt")
    assert out.stdout == b"304"
    lm = get(server.port, "/hello.txt", method="HEAD")[1]["last-modified"]
    assert curl("-o", "/dev/null", "-w", "%{http_code}", "-z", lm, f"{server.url}/hello.txt").stdout == b"304"
    assert curl("-o", "/dev/null", "-w", "%{http_code}", "-z", "1 Jan 2001", f"{server.url}/hello.txt").stdout == b"200"
    part = tmp_path / "resumed"
    part.write_bytes(BIG[:1000])
    out = curl("-o", str(part), "-C", "-", "-w", "%{http_code}", f"{server.url}/big.bin")
    assert out.stdout == b"206" and part.read_bytes() == BIG

def test_conditionals(server):
    _, h, _ = get(server.port, "/hello.txt", method="HEAD")
    etag, lm = h["etag"], h["last-modified"]
    status, h304, body = get(server.port, "/hello.txt", {"If-None-Match": etag})
    assert status == 304 and body == b"" and h304["etag"] == etag and "content-length" not in h304
    assert get(server.port, "/hello.txt", {"If-None-Match": "W/" + etag})[0] == 304   # weak compare
    assert get(server.port, "/hello.txt", {"If-None-Match": "*"})[0] == 304
    assert get(server.port, "/hello.txt", {"If-Modified-Since": lm})[0] == 304
    assert get(server.port, "/hello.txt", {"If-Match": '"nope"'})[0] == 412
    assert get(server.port, "/hello.txt", {"If-Match": etag})[0] == 200
    assert get(server.port, "/hello.txt", {"If-Unmodified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"})[0] == 412
    # If-None-Match wins over If-Modified-Since
    assert get(server.port, "/hello.txt", {"If-None-Match": '"x"', "If-Modified-Since": lm})[0] == 200


# -- directories, listings, precompressed, paths -----------------------------------

def test_directory_redirect_and_index(server):
    status, h, _ = get(server.port, "/site")
    assert status == 301 and h["location"] == "/site/"
    status, _, body = get(server.port, "/site/")
    assert (status, body) == (200, b"<p>index</p>")


def test_listing_html_is_escaped_and_hides_dotfiles(server):
    status, h, body = get(server.port, "/list/")
    assert status == 200 and h["content-type"].startswith("text/html")
    assert b"<script>alert(1)" not in body
    assert b"&lt;script&gt;" in body
    assert b".hidden" not in body
    assert b"sub/" in body


def test_special_files_are_neither_served_nor_listed(server):
    fifo = Path(server.root) / "list" / "a.fifo"
    os.mkfifo(fifo)
    try:
        assert get(server.port, "/list/a.fifo")[0] == 403       # and the worker did not wait for a writer
        assert b"a.fifo" not in get(server.port, "/list/")[2]
    finally:
        fifo.unlink()


def test_listing_json(server):
    status, h, body = get(server.port, "/list/", {"Accept": "application/json"})
    assert status == 200 and h["content-type"].startswith("application/json")
    data = json.loads(body)
    text = json.dumps(data)
    assert "<script>alert(1).txt" in text and 'a\\"b & c.txt' in text
    assert ".hidden" not in text


def test_listing_revalidates_with_a_weak_etag(server):
    """A listing has no modification date (a file growing does not change the
    folder's mtime), but a weak ETag from the page: a browser's revalidation
    gets 304, and Vary: Accept because Accept picks HTML or JSON."""
    status, h, _ = get(server.port, "/list/")
    etag = h["etag"]
    assert status == 200 and etag.startswith('W/"') and h["vary"] == "Accept"
    status, h304, body = get(server.port, "/list/", {"If-None-Match": etag})
    assert (status, body, h304["etag"]) == (304, b"", etag) and "content-length" not in h304
    assert (h304["cache-control"], h304["vary"]) == ("no-cache", "Accept")   # RFC 9110 15.4.5
    assert get(server.port, "/list/", {"If-None-Match": "*"})[0] == 304
    assert get(server.port, "/list/", {"If-Match": etag})[0] == 412        # weak: never a strong match
    assert get(server.port, "/list/", {"Accept": "application/json"})[1]["etag"] != etag
    (Path(server.root) / "list" / "sub" / "grown.txt").write_text("1")
    try:
        assert get(server.port, "/list/sub/", {"If-None-Match": etag})[0] == 200
        before = get(server.port, "/list/sub/")[1]["etag"]
        (Path(server.root) / "list" / "sub" / "grown.txt").write_text("longer")
        assert get(server.port, "/list/sub/", {"If-None-Match": before})[0] == 200
    finally:
        (Path(server.root) / "list" / "sub" / "grown.txt").unlink()


def test_precompressed_sibling(server):
    status, h, body = get(server.port, "/app.js", {"Accept-Encoding": "gzip, br;q=0"})
    assert status == 200 and h["content-encoding"] == "gzip" and "Accept-Encoding" in h["vary"]
    assert gzip.decompress(body) == b"console.log(1)\n" * 100
    status, h, body = get(server.port, "/app.js")
    assert "content-encoding" not in h and body == b"console.log(1)\n" * 100
    assert "Accept-Encoding" in h["vary"]


@pytest.mark.parametrize("path", ["/../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/list/..%2f..%2f..%2fetc/passwd",
                                  "/escape", "/.env", "/list/.hidden", "/hello.txt%00.html", "/nope.txt"])
def test_path_safety(server, path):
    status, _, body = get(server.port, path)
    assert status in (400, 403, 404), (path, status)
    assert b"SECRET" not in body and b"outside" not in body and b"root:" not in body


def test_show_hidden_serves_and_lists_dotfiles(root):
    with Server(root, "--show-hidden") as s:
        assert get(s.port, "/.env")[2] == b"SECRET=1"
        assert b'href=".hidden"' in get(s.port, "/list/")[2]
        assert get(s.port, "/escape")[0] == 404           # still no symlinks out of ROOT


def test_percent_encoded_name(server):
    assert get(server.port, "/sp%20ace.txt")[2] == b"space"


# -- cache freshness ---------------------------------------------------------------

def test_replaced_file_is_never_served_stale(server):
    path = os.path.join(server.root, "changing.txt")
    with open(path, "w") as f:
        f.write("first version")
    assert get(server.port, "/changing.txt")[2] == b"first version"
    tmp = path + ".new"
    with open(tmp, "w") as f:
        f.write("second, longer version")
    os.replace(tmp, path)
    assert get(server.port, "/changing.txt")[2] == b"second, longer version"
    with open(path, "w") as f:   # in place, same inode, shorter
        f.write("3rd")
    status, h, body = get(server.port, "/changing.txt")
    assert (h["content-length"], body) == ("3", b"3rd")
    with open(path, "a") as f:   # in place, same inode, grown
        f.write(" and more")
    status, h, body = get(server.port, "/changing.txt")
    assert (h["content-length"], body) == ("12", b"3rd and more")


def test_a_folder_redirect_never_names_another_host(tmp_path):
    # Issue 15.9: "GET /%2Fevil.example%2F.." was answered "Location: //evil.example/../".
    (tmp_path / "evil.example").mkdir()
    with Server(tmp_path) as s:
        for target in ("/%2Fevil.example%2F..", "/%2F%2Fevil.example", "//evil.example", "/%2F/evil.example/.",
                       "/evil.example/..", "/./evil.example"):
            status, h, _ = request(s.port, f"GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
            location = h.get("location", "")
            assert not location.startswith("//") and not location.startswith("/\\"), (target, location)
            assert status in (301, 404), (target, status)
            if status == 301:
                assert location in ("/", "/evil.example/"), (target, location)


def _folder_fds(pid: int) -> list[str]:
    """file_fds without the listing cache's pages (memfds, bounded by the cache)
    and the watch's inotify instance."""
    return [t for t in file_fds(pid) if not t.startswith(("/memfd:zcopy-listing", "anon_inode:inotify"))]


def test_reads_that_walk_folders_leave_no_fds_open(tmp_path):
    # Listings, redirects and refusals open folder fds on the way; none may stay open.
    (tmp_path / "d" / "e").mkdir(parents=True)
    (tmp_path / "d" / "f.txt").write_text("f")
    with Server(tmp_path, "--workers", "1") as s:
        (pid,) = s.worker_pids()
        assert get(s.port, "/d/")[0] == 200
        before = _folder_fds(pid)
        for _ in range(30):
            for path, status in [("/d/", 200), ("/d/e/", 200), ("/d", 301), ("/d/e/..", 301), ("/nope/x", 404),
                                 ("/d/f.txt/", 404), ("/d/f.txt/..", 404), ("/d/missing", 404), ("/.zcopy/", 404)]:
                assert get(s.port, path)[0] == status, path
        assert _folder_fds(pid) == before
        assert len(file_fds(pid)) - len(before) <= 6      # a page or two per listed folder, and the watch
