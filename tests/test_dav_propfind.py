"""PROPFIND's Multi-Status built from templates into a memfd and kept per folder (zcopy/server/propfind.py),
and the lock horizon in shared memory (zcopy/dav/locks.py): over real sockets against `zcopy serve`, and
on a real state database. The speed comparison with nginx is tools/bench_propfind.py."""

from __future__ import annotations

import os
import time

import defusedxml.ElementTree as DET
import pytest

from serverutil import Server
from test_dav import D, TOKEN, call, prop, responses
from zcopy.dav.locks import LockTable, beneath_in, covering_in
from zcopy.server import state as state_mod

NAMED = (b'<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop><D:resourcetype/><D:getcontentlength/>'
         b'<D:getlastmodified/><D:getetag/><D:displayname/><D:getcontenttype/><D:creationdate/>'
         b'<X:color xmlns:X="urn:x"/></D:prop></D:propfind>')
ODD = ["plain.txt", "with space.txt", "caf\u00e9 & <tag>.md", "100%.bin", "sub dir"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("pfroot")
    state = tmp_path_factory.mktemp("pfstate")
    big = root / "big"
    big.mkdir()
    for name in ODD:
        if name == "sub dir":
            (big / name).mkdir()
        else:
            (big / name).write_bytes(name.encode() * 3)
    (big / ".hidden").write_bytes(b"h")
    (big / ".zcopy-upload-0123").write_bytes(b"partial")
    os.symlink("plain.txt", big / "link")
    os.mkfifo(big / "fifo")
    with Server(root, "--allow-write", "--token", TOKEN, "--state-dir", str(state)) as s:
        s.root_path = root
        yield s


def propfind(port, path, body=NAMED, depth="1"):
    status, headers, data = call(port, "PROPFIND", path, {"Depth": depth}, body)
    assert status == 207, data
    DET.fromstring(data)                    # well-formed, whatever the names
    return headers, responses(data)


def test_depth_1_lists_what_a_listing_shows_with_every_name_quoted_and_escaped(server):
    headers, rs = propfind(server.port, "/big/")
    assert headers["content-type"].startswith("application/xml")
    assert sorted(rs) == sorted(["/big/", "/big/plain.txt", "/big/with%20space.txt",
                                 "/big/caf%C3%A9%20&amp;%20%3Ctag%3E.md".replace("&amp;", "&"),
                                 "/big/100%25.bin", "/big/sub%20dir/"])
    md = rs["/big/caf%C3%A9%20&%20%3Ctag%3E.md"]
    assert prop(md, D + "displayname").text == "caf\u00e9 & <tag>.md"
    assert prop(md, D + "getcontenttype").text.startswith("text/markdown")
    assert prop(md, D + "getcontentlength").text == str(len("caf\u00e9 & <tag>.md".encode()) * 3)
    assert prop(md, "{urn:x}color", "404") is not None            # dead, not set: 404
    folder = rs["/big/sub%20dir/"]
    assert prop(folder, D + "resourcetype").find(D + "collection") is not None
    assert prop(folder, D + "getcontentlength", "404") is not None
    assert prop(folder, D + "getetag", "404") is not None
    st = os.stat(server.root_path / "big" / "plain.txt")
    plain = rs["/big/plain.txt"]
    assert prop(plain, D + "getlastmodified").text == time.strftime("%a, %d %b %Y %H:%M:%S GMT",
                                                                     time.gmtime(st.st_mtime))
    # getetag is what a GET of the member shows
    status, get_headers, _ = call(server.port, "GET", "/big/plain.txt")
    assert status == 200 and prop(plain, D + "getetag").text == get_headers["etag"]


def test_a_kept_page_is_dropped_by_any_change_in_the_folder(server):
    propfind(server.port, "/big/")                                 # kept now
    assert call(server.port, "PUT", "/big/new.txt", body=b"fresh")[0] == 201
    _, rs = propfind(server.port, "/big/")
    assert prop(rs["/big/new.txt"], D + "getcontentlength").text == "5"
    path = server.root_path / "big" / "plain.txt"
    os.utime(path, (1_000_000_000, 1_000_000_000))                 # behind the server's back: inotify
    _, rs = propfind(server.port, "/big/")
    assert prop(rs["/big/plain.txt"], D + "getlastmodified").text == "Sun, 09 Sep 2001 01:46:40 GMT"
    assert call(server.port, "DELETE", "/big/new.txt")[0] == 204
    _, rs = propfind(server.port, "/big/")
    assert "/big/new.txt" not in rs


def test_dead_properties_and_locks_of_members_show_and_go(server):
    patch = (b'<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:X="urn:x"><D:set><D:prop>'
             b'<X:color>blue</X:color></D:prop></D:set></D:propertyupdate>')
    assert call(server.port, "PROPPATCH", "/big/with%20space.txt", body=patch)[0] == 207
    _, rs = propfind(server.port, "/big/")
    assert prop(rs["/big/with%20space.txt"], "{urn:x}color").text == "blue"
    assert prop(rs["/big/plain.txt"], "{urn:x}color", "404") is not None
    _, rs = propfind(server.port, "/big/", body=b"")               # no body: allprop, dead ones too
    assert prop(rs["/big/with%20space.txt"], "{urn:x}color").text == "blue"
    assert prop(rs["/big/plain.txt"], D + "supportedlock") is not None

    lockinfo = (b'<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope>'
                b'<D:locktype><D:write/></D:locktype><D:owner>me</D:owner></D:lockinfo>')
    status, headers, _ = call(server.port, "LOCK", "/big/plain.txt", {"Depth": "0"}, lockinfo)
    assert status == 200
    token = headers["lock-token"]
    _, rs = propfind(server.port, "/big/", body=b"")
    active = prop(rs["/big/plain.txt"], D + "lockdiscovery").find(D + "activelock")
    assert active.find(D + "locktoken").find(D + "href").text == token.strip("<>")
    assert prop(rs["/big/100%25.bin"], D + "lockdiscovery").find(D + "activelock") is None
    assert call(server.port, "PUT", "/big/plain.txt", body=b"x")[0] == 423
    assert call(server.port, "UNLOCK", "/big/plain.txt", {"Lock-Token": token})[0] == 204
    _, rs = propfind(server.port, "/big/", body=b"")               # no lock shown once it is gone
    assert prop(rs["/big/plain.txt"], D + "lockdiscovery").find(D + "activelock") is None
    assert call(server.port, "PUT", "/big/plain.txt", body=b"plain.txt" * 3)[0] == 204


def test_quota_and_depth_0_are_answered(server):
    body = (b'<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop><D:quota-available-bytes/>'
            b'<D:quota-used-bytes/></D:prop></D:propfind>')
    _, rs = propfind(server.port, "/big/", body)
    sv = os.statvfs(server.root_path)
    for r in rs.values():
        assert int(prop(r, D + "quota-available-bytes").text) > 0
        assert abs(int(prop(r, D + "quota-used-bytes").text) - (sv.f_blocks - sv.f_bfree) * sv.f_frsize) < 1 << 30
    _, rs = propfind(server.port, "/big/plain.txt", depth="0")
    assert list(rs) == ["/big/plain.txt"]


def test_a_lock_taken_through_one_worker_holds_in_the_other(tmp_path):
    """The horizon is shared memory: a write reaching the other worker (SO_REUSEPORT spreads
    connections) must still see the lock, and see it gone after UNLOCK."""
    root, state = tmp_path / "root", tmp_path / "state"
    root.mkdir()
    (root / "f.txt").write_bytes(b"x")
    lockinfo = (b'<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope>'
                b'<D:locktype><D:write/></D:locktype></D:lockinfo>')
    with Server(root, "--allow-write", "--token", TOKEN, "--state-dir", str(state), "--workers", "2") as s:
        status, headers, _ = call(s.port, "LOCK", "/f.txt", {"Depth": "0"}, lockinfo)
        assert status == 200
        for _ in range(12):                                        # new connections: both workers answer
            assert call(s.port, "PUT", "/f.txt", body=b"y")[0] == 423
        assert call(s.port, "UNLOCK", "/f.txt", {"Lock-Token": headers["lock-token"]})[0] == 204
        for _ in range(12):
            assert call(s.port, "PUT", "/f.txt", body=b"z")[0] == 204


def test_the_horizon_follows_every_change_of_the_table(tmp_path):
    path = state_mod.prepare(str(tmp_path / "state"))
    a_state, b_state = state_mod.State(path), state_mod.State(path)
    try:
        shared = memoryview(bytearray(8)).cast("d")
        shared[0] = float("inf")
        word = memoryview(bytearray(8)).cast("Q")
        a, b = LockTable(a_state, shared, word), LockTable(b_state, shared, word)
        assert a.may_exist(0.0)                                     # not known yet: ask the table
        b.sweep(now=0.0)
        assert shared[0] == 0.0 and not a.may_exist(0.0)            # nothing locked: no sqlite needed
        assert b.live() == {}
        lk = a.lock("/f", depth=0, exclusive=True, owner=b"", principal="p", timeout=60, now=100.0)
        assert shared[0] == 160.0 and b.may_exist(150.0) and not b.may_exist(161.0)
        assert word[0] == a.generation() and [x.token for x in b.live()["/f"]] == [lk.token]   # moved: read again
        assert covering_in(b.live(), "/f", 150.0) and not covering_in(b.live(), "/f", 161.0)
        assert beneath_in(b.live(), "/", 150.0) and not beneath_in(b.live(), "/f", 150.0)
        b.refresh("/f", {lk.token}, "p", 600, now=120.0)
        assert shared[0] == 720.0
        other = a.lock("/g", depth=0, exclusive=True, owner=b"", principal="p", timeout=30, now=120.0)
        b.unlock("/f", lk.token, "p", now=130.0)
        assert shared[0] == 150.0                                   # the other lock's expiry
        assert [x.token for xs in a.live().values() for x in xs] == [other.token]
        a.removed("/g")
        assert shared[0] == 0.0 and other.token and b.live() == {}
    finally:
        a_state.close()
        b_state.close()


def test_a_rebuild_reuses_unchanged_members_and_sees_attribute_changes(tmp_path):
    """``write_members``' memo on a real folder: a member whose stat did not move is not rendered
    again; setting a dead property moves the ctime, so that member is; one changed within QUIET
    seconds is never remembered."""
    from zcopy import http
    from zcopy.dav import deadprops, xmlbody
    from zcopy.dav.xmlbody import PropChange
    from zcopy.server import propfind as pf
    from zcopy.server.digests import QUIET

    folder = tmp_path / "f"
    folder.mkdir()
    for name in ("a.txt", "b.txt"):
        (folder / name).write_bytes(b"x")
    settled = os.stat(folder / "b.txt").st_ctime + QUIET
    while time.time() <= settled:                       # both quiet now
        time.sleep(0.01)
    asked = xmlbody.PropFind("allprop")
    plan = pf.Plan(asked, None)
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    memo: dict = {}

    def build() -> bytes:
        out = pf.new_body()
        try:
            def slow(url, st, wants_dead):                  # the general path: dead properties shown
                name = url.rsplit("/", 1)[1]
                mfd = os.open(name, os.O_RDONLY, dir_fd=fd)
                try:
                    dead = deadprops.get_all(mfd)
                finally:
                    os.close(mfd)
                return "".join(x.decode() for x in dead.values()) + f"<slow>{name}</slow>\n"
            n = pf.write_members(out, fd, "/f/", plan, pf.members(fd, "/f/", show_hidden=False), http.make_etag,
                                 [], slow, memo)
            return os.pread(out, n, 0)
        finally:
            os.close(out)
    try:
        first = build()
        assert set(memo) == {"a.txt", "b.txt"} and b"<slow>" not in first
        kept = dict(memo)
        mfd = os.open(folder / "a.txt", os.O_RDONLY)
        try:
            deadprops.apply(mfd, [PropChange(False, ("urn:x", "color"), b'<X:color xmlns:X="urn:x">red</X:color>')])
        finally:
            os.close(mfd)
        second = build()
        assert b"<slow>a.txt</slow>" in second and b">red<" in second
        assert memo["b.txt"] is kept["b.txt"]              # reused as it was
        assert "a.txt" not in memo                          # changed just now: not remembered
    finally:
        os.close(fd)
