"""The route table in front of the file responder: requests under /.zcopy/
go to the server's own handlers (here /.zcopy/ping), never to a file, through
a real server and real clients."""

from __future__ import annotations

import json

import pytest

from serverutil import Server, curl, get, request
from zcopy import __version__
from zcopy.server.routes import reserved


@pytest.fixture
def root(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "a.txt").write_text("a")
    (root / ".zcopy").mkdir()                       # a user folder that would shadow the routes
    (root / ".zcopy" / "ping").write_text("a user's file")
    (root / ".zcopy" / "other").write_text("another user's file")
    return root


def test_ping_answers_from_the_route_table(root):
    with Server(root, "--show-hidden") as s:
        out = curl("-si", f"{s.url}/.zcopy/ping")
        head, _, body = out.stdout.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and b"Content-Type: application/json" in head
        assert json.loads(body) == {"server": "zcopy", "version": __version__}
        status, headers, body = get(s.port, "/.zcopy/ping", method="HEAD")
        assert status == 200 and headers["content-length"] == str(len(json.dumps(
            {"server": "zcopy", "version": __version__}, separators=(",", ":")))) and body == b""
        # the same path however it is spelled
        assert json.loads(get(s.port, "/%2Ezcopy/ping")[2])["server"] == "zcopy"


def test_methods_dispatch_in_one_place(root):
    with Server(root, "--show-hidden", "--allow-write") as s:
        status, headers, _ = get(s.port, "/.zcopy/ping", method="OPTIONS")
        assert status == 204 and headers["allow"] == "GET, HEAD, OPTIONS"
        for method in ("POST", "DELETE", "MKCOL"):
            status, headers, _ = get(s.port, "/.zcopy/ping", method=method)
            assert (status, headers.get("allow")) == (405, "GET, HEAD, OPTIONS"), method
        raw = b"PUT /.zcopy/ping HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nnew"
        status, headers, _ = request(s.port, raw)
        assert status == 405 and headers["connection"] == "close"    # the body was not read
        assert get(s.port, "/a.txt")[2] == b"a"                        # and the server still serves


@pytest.mark.parametrize("path", ["/.zcopy/other", "/.zcopy/", "/.zcopy", "/a/../.zcopy/other",
                                  "//.zcopy/ping", "/.zcopy/./ping", "/.zcopy/ping/"])
def test_reserved_paths_never_reach_the_files(root, path):
    with Server(root, "--show-hidden", "--allow-write") as s:
        status, _, body = get(s.port, path)
        assert status == 404 and b"user's file" not in body, (path, body)
        raw = f"PUT {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx".encode()
        assert request(s.port, raw)[0] in (404, 405)
    assert (root / ".zcopy" / "other").read_text() == "another user's file"
    assert (root / ".zcopy" / "ping").read_text() == "a user's file"


def test_routes_need_what_reads_need(root):
    with Server(root, "--read-token", "r3ad") as s:
        status, headers, _ = get(s.port, "/.zcopy/ping")
        assert status == 401 and "www-authenticate" in headers
        assert get(s.port, "/.zcopy/ping", {"Authorization": "Bearer r3ad"})[0] == 200


def test_reserved_is_decided_after_dot_segments():
    assert reserved("/.zcopy") and reserved("/.zcopy/") and reserved("/.zcopy/ping")
    assert reserved("/x/../.zcopy/ping") and reserved("//.zcopy/ping") and reserved("/./.zcopy")
    assert not reserved("/.zcopy-upload-1234") and not reserved("/a/.zcopy/ping")
    assert not reserved("/.zcopy/../a.txt") and not reserved("/a.txt")
