"""Regression tests from a review of `zcopy serve`: each test is a defect a
real client could hit, tried against a real server over real sockets."""

from __future__ import annotations

import os
import re
import resource
from pathlib import Path

import pytest

from serverutil import Server, connect, get, read_response, request


@pytest.fixture(scope="module")
def wserver(tmp_path_factory):
    root = tmp_path_factory.mktemp("review")
    (root / "a.txt").write_bytes(b"alpha")
    (root / "dir").mkdir()
    with Server(root, "--allow-write", "--no-fsync") as s:
        yield s


def _call(port, method, target: bytes, headers: bytes = b"", body: bytes = b""):
    return request(port, method.encode() + b" " + target + b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n" +
                   headers + b"\r\n" + body)


@pytest.mark.parametrize("destination", [b"http://[::1/b.txt"])
def test_move_with_a_bad_destination_is_400_not_a_worker_crash(wserver, destination):
    """A URL urlsplit refuses (an unclosed IPv6 bracket) used to raise
    ValueError out of the worker loop: traceback, worker restarted, every
    connection on it dropped."""
    before = wserver.worker_pids()
    status, _, _ = _call(wserver.port, "MOVE", b"/a.txt", b"Destination: " + destination + b"\r\n")
    assert status == 400
    assert wserver.worker_pids() == before          # the same worker still runs
    assert _call(wserver.port, "GET", b"/a.txt")[2] == b"alpha"


@pytest.mark.parametrize("method,headers,body", [
    ("PUT", b"Content-Length: 2\r\n", b"hi"),
    ("MKCOL", b"", b""),
    ("DELETE", b"", b""),
    ("MOVE", b"Destination: /b.txt\r\n", b""),
])
def test_write_to_an_overlong_name_gets_an_answer(wserver, method, headers, body):
    """A name longer than NAME_MAX made lstat raise ENAMETOOLONG, which was not
    an HttpError: the connection was closed without any response."""
    status, _, _ = _call(wserver.port, method, b"/dir/" + b"n" * 300, headers, body)
    assert status == 400


def test_move_onto_an_overlong_destination_gets_an_answer(wserver):
    status, _, _ = _call(wserver.port, "MOVE", b"/a.txt", b"Destination: /" + b"n" * 300 + b"\r\n")
    assert status == 400
    assert _call(wserver.port, "GET", b"/a.txt")[2] == b"alpha"


@pytest.fixture(scope="module")
def rserver(tmp_path_factory):
    root = tmp_path_factory.mktemp("review-read")
    (root / "secret.txt").write_bytes(b"secret")
    with Server(root, "--read-token", "rt") as s:
        yield s


SMUGGLED = b"GET /secret.txt HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer rt\r\n\r\n"


@pytest.mark.parametrize("head", [
    b"POST /x HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer rt\r\nContent-Length: %d\r\n\r\n" % len(SMUGGLED),
    b"GET /secret.txt HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(SMUGGLED),
    b"TRACE / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n" % len(SMUGGLED),
])
def test_refused_request_body_is_never_parsed_as_a_request(rserver, head):
    """A body we do not read must close the connection after the answer: the
    405 (POST, TRACE) and 401 (read token) refusals used to keep it alive, so
    the body's bytes were answered as a pipelined request (smuggling)."""
    with connect(rserver.port, timeout=5) as c:
        c.sendall(head + SMUGGLED)
        status, headers, _, _ = read_response(c)
        assert status in (401, 405)
        assert headers.get("connection") == "close"
        rest = b""
        while chunk := c.recv(65536):
            rest += chunk
        assert b"HTTP/1.1" not in rest


def test_access_log_counts_listing_and_multipart_bodies(tmp_path):
    """The logged size was the file bytes moved by the engine only: a listing
    logged "-" and a multipart/byteranges reply left out its part headers."""
    root = tmp_path / "r"
    (root / "d").mkdir(parents=True)
    (root / "d" / "f.bin").write_bytes(bytes(range(256)) * 8)
    log = tmp_path / "access.log"
    with Server(root, "--access-log", str(log)) as s:
        listing = _call(s.port, "GET", b"/d/")
        multi = _call(s.port, "GET", b"/d/f.bin", b"Range: bytes=0-9,1000-1099\r\n")
        assert listing[0] == 200 and multi[0] == 206
        assert s.stop() == 0
    lines = log.read_text().splitlines()
    assert f'"GET /d/ HTTP/1.1" 200 {len(listing[2])} ' in lines[0]
    assert f'"GET /d/f.bin HTTP/1.1" 206 {len(multi[2])} ' in lines[1]


def test_no_100_continue_to_an_http10_client(wserver):
    """RFC 9110 10.1.1 and 15.2: an HTTP/1.0 request's 100-continue is ignored
    and no 1xx is sent to it; a 1.0 client reads "100 Continue" as the answer."""
    with connect(wserver.port, timeout=5) as c:
        c.sendall(b"PUT /old.txt HTTP/1.0\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
        c.settimeout(0.5)
        with pytest.raises(TimeoutError):
            c.recv(100)                  # nothing yet: no 100 Continue
        c.settimeout(5)
        c.sendall(b"old")
        status, _, _, _ = read_response(c)
    assert status == 201
    assert _call(wserver.port, "GET", b"/old.txt")[2] == b"old"


def test_many_distinct_files_under_a_low_fd_limit_are_all_served(tmp_path):
    """The open-file cache keeps up to 1024 fds, more than a default soft
    RLIMIT_NOFILE allows: once the fds ran out, every file not yet cached
    answered 404 (os.open's EMFILE read as "not found"), for good. The cache
    must give back fds of entries no transfer uses and open again."""
    root = tmp_path / "r"
    root.mkdir()
    for i in range(120):
        (root / f"f{i}.txt").write_bytes(b"file %d" % i)
    with Server(root) as s:
        (pid,) = s.worker_pids()
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (48, 48))
        for rnd in range(2):
            for i in range(120):
                status, _, body = _call(s.port, "GET", b"/f%d.txt" % i)
                assert (status, body) == (200, b"file %d" % i), (rnd, i)


def test_non_utf8_names_round_trip(wserver):
    """Linux names are bytes: a Destination whose %XX escapes are not UTF-8 (it
    used to crash the worker, then was refused) names exactly those bytes, and
    GET finds the file by the same escapes."""
    root = wserver.root
    status, _, _ = _call(wserver.port, "MOVE", b"/a.txt", b"Destination: /caf%e9-%ff.txt\r\n")
    assert status == 201
    assert os.path.exists(os.path.join(os.fsencode(root), b"caf\xe9-\xff.txt"))
    assert _call(wserver.port, "GET", b"/caf%E9-%FF.txt")[2] == b"alpha"
    assert _call(wserver.port, "MOVE", b"/caf%e9-%ff.txt", b"Destination: /a.txt\r\n")[0] == 201
    assert _call(wserver.port, "GET", b"/a.txt")[2] == b"alpha"


def test_a_latin1_name_on_disk_is_listed_and_served(tmp_path):
    """The HTML listing links the name's raw bytes; following the link serves the file."""
    folder = os.fsencode(str(tmp_path)) + b"/d\xe9p\xf4t"
    os.mkdir(folder)
    with open(folder + b"/r\xe9sum\xe9.txt", "wb") as f:
        f.write(b"latin-1 name")
    with Server(tmp_path) as s:
        status, headers, _ = get(s.port, "/d%E9p%F4t")
        assert status == 301 and headers["location"] == "/d%E9p%F4t/"
        listing = get(s.port, "/d%E9p%F4t/")[2]
        href = re.search(rb'href="([^"]*sum[^"]*)"', listing).group(1).decode()
        target = href if href.startswith("/") else "/d%E9p%F4t/" + href
        assert get(s.port, target)[2] == b"latin-1 name"


def test_a_file_with_a_trailing_slash_is_404(wserver):
    assert _call(wserver.port, "GET", b"/a.txt")[0] == 200
    assert _call(wserver.port, "GET", b"/a.txt/")[0] == 404


def test_a_fifo_is_refused_without_blocking_the_worker(tmp_path):
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "ok.txt").write_text("ok")
    with Server(tmp_path) as s:
        assert get(s.port, "/pipe")[0] == 403
        assert get(s.port, "/ok.txt")[2] == b"ok"


@pytest.mark.parametrize("destination, status", [
    (b"http://elsewhere.example/b.txt", 502),        # another server: not ours to write
    (b"ftp://t/b.txt", 502),                         # a scheme that is not HTTP
    (b"https://t/moved.txt", 201),                   # https: this server behind a TLS proxy
    (b"http://T:80/moved.txt", 201),                 # this server (Host: t), spelled differently
])
def test_move_to_another_server_is_502(wserver, destination, status):
    """RFC 4918 9.9.4 (and Apache mod_dav): a Destination on another server is
    502 Bad Gateway; it used to be moved to the same path on this one."""
    (Path(wserver.root) / "m.txt").write_bytes(b"mine")
    try:
        got, _, _ = _call(wserver.port, "MOVE", b"/m.txt", b"Destination: " + destination + b"\r\n")
        assert got == status
        assert (Path(wserver.root) / "m.txt").exists() == (status == 502)
        assert not (Path(wserver.root) / "b.txt").exists()
    finally:
        for name in ("m.txt", "moved.txt"):
            (Path(wserver.root) / name).unlink(missing_ok=True)
