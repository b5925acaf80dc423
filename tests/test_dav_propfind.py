"""PROPFIND's Multi-Status built from templates into a memfd and kept per folder (zcopy/server/propfind.py),
and the lock horizon in shared memory (zcopy/dav/locks.py): over real sockets against `zcopy serve`, and
on a real state database. The speed comparison with nginx is tools/bench_propfind.py."""

from __future__ import annotations

import os
import stat
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
    seconds is remembered (a rebuild from events needs every member) but not reused on its stat alone."""
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
    memo = pf.Memo()

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
            n = pf.write_members(out, fd, "/f/", plan, pf.members(fd, "/f/", show_hidden=False),
                                 lambda stats, newest=None: {}, [], slow, memo)
            return os.pread(out, n, 0)
        finally:
            os.close(out)
    try:
        first = build()
        assert set(memo.responses) == {"a.txt", "b.txt"} and b"<slow>" not in first
        kept = dict(memo.responses)
        mfd = os.open(folder / "a.txt", os.O_RDONLY)
        try:
            deadprops.mark(fd)                              # as PROPPATCH does first
            deadprops.apply(mfd, [PropChange(False, ("urn:x", "color"), b'<X:color xmlns:X="urn:x">red</X:color>')])
        finally:
            os.close(mfd)
        second = build()
        assert b"<slow>a.txt</slow>" in second and b">red<" in second
        assert memo.responses["b.txt"] is kept["b.txt"]    # reused as it was
        changed = memo.responses["a.txt"]
        assert changed.endswith(b"<slow>a.txt</slow>\n")       # remembered; key None: not settled yet
        unsettled = memo.keys["a.txt"] is None
        third = build()
        assert third == second and memo.responses["b.txt"] is kept["b.txt"]
        if unsettled:                                       # changed within QUIET: rendered again
            assert memo.responses["a.txt"] is not changed
    finally:
        os.close(fd)


def test_a_rebuild_shows_a_content_etag_learnt_since_with_no_change_to_the_file(tmp_path):
    """A member's memo key holds the ETag shown when it is not the local one: once a GET has learnt a
    file's content digest (``overrides`` names it), a rebuild that stats every member renders that
    member again with it, though its stat did not move; the others are reused as they were."""
    from zcopy.dav import xmlbody
    from zcopy.server import propfind as pf
    from zcopy.server.digests import QUIET

    folder = tmp_path / "f"
    folder.mkdir()
    for name in ("a.txt", "b.txt"):
        (folder / name).write_bytes(b"x")
    settled = os.stat(folder / "b.txt").st_ctime + QUIET
    while time.time() <= settled:                       # both quiet now
        time.sleep(0.01)
    plan = pf.Plan(xmlbody.PropFind("prop", [(xmlbody.DAV, "getetag")]), None)
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    memo = pf.Memo()
    learnt: dict = {}

    def overrides(stats, newest=None) -> dict:
        return {j: learnt[st.st_ino] for j, st in enumerate(stats) if st.st_ino in learnt}

    def build() -> bytes:
        out = pf.new_body()
        try:
            n = pf.write_members(out, fd, "/f/", plan, pf.members(fd, "/f/", show_hidden=False), overrides,
                                 [], None, memo)
            return os.pread(out, n, 0)
        finally:
            os.close(out)
    try:
        first = build()
        kept = dict(memo.responses)
        learnt[os.stat(folder / "a.txt").st_ino] = b'"zc-content"'
        second = build()
        assert b'"zc-content"' in second and b'"zc-content"' not in first
        assert b'"zc-content"' in memo.responses["a.txt"] and memo.responses["b.txt"] is kept["b.txt"]
        again = memo.responses["a.txt"]
        assert build() == second and memo.responses["a.txt"] is again   # the same key: reused
    finally:
        os.close(fd)


# -- rebuilds from the watch's names (propfind.Members, update_members) ---------------------------------

SHOWN = (b'<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop><D:resourcetype/><D:getcontentlength/>'
         b'<D:getlastmodified/><D:getetag/><X:color xmlns:X="urn:x"/></D:prop></D:propfind>')


def _http_date(t: float) -> str:
    return time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(t))


def _shown(port, url: str) -> dict:
    """href -> (folder?, length, last modified, dead property color) as a PROPFIND Depth 1 shows them."""
    _, rs = propfind(port, url, SHOWN)
    out = {}
    for href, r in rs.items():
        if href == url:
            continue
        length = prop(r, D + "getcontentlength")
        color = prop(r, "{urn:x}color")
        out[href] = (prop(r, D + "resourcetype").find(D + "collection") is not None,
                     None if length is None else int(length.text), prop(r, D + "getlastmodified").text,
                     None if color is None else color.text)
    return out


def _truth(folder, url: str) -> dict:
    """The same, from the folder itself (files and folders, no dotfiles, no symlinks)."""
    from zcopy.dav import deadprops
    out = {}
    for name in os.listdir(folder):
        st = os.lstat(folder / name)
        if name.startswith(".") or not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
            continue
        is_dir = stat.S_ISDIR(st.st_mode)
        fd = os.open(folder / name, os.O_RDONLY)
        try:
            color = deadprops.get_all(fd).get(("urn:x", "color"))
        finally:
            os.close(fd)
        if color is not None:
            color = DET.fromstring(color).text
        out[url + name + ("/" if is_dir else "")] = (is_dir, None if is_dir else st.st_size,
                                                      _http_date(st.st_mtime), color)
    return out


def _set_color(path, value: str) -> None:
    from zcopy.dav import deadprops
    from zcopy.dav.xmlbody import PropChange
    fd = os.open(path, os.O_RDONLY)
    try:
        deadprops.apply(fd, [PropChange(False, ("urn:x", "color"),
                                        f'<X:color xmlns:X="urn:x">{value}</X:color>'.encode())])
    finally:
        os.close(fd)


def test_every_change_behind_the_servers_back_shows_in_the_next_answer(tmp_path):
    """A rebuild re-stats only the members the folder's watch named (after two full builds: the watch
    is up): each kind of change made behind the server's back, then a PROPFIND, whose answer must be
    the folder as it is. A subfolder's own mtime raises no event in its parent: shown at the next
    rebuild all the same (folders are re-stat'ed every time)."""
    root, state = tmp_path / "root", tmp_path / "state"
    folder = root / "many"
    folder.mkdir(parents=True)
    for i in range(40):
        (folder / f"f{i:02d}.txt").write_bytes(b"x" * i)
    (folder / "sub").mkdir()
    url = "/many/"
    with Server(root, "--allow-write", "--token", TOKEN, "--state-dir", str(state)) as s:
        def check():
            assert _shown(s.port, url) == _truth(folder, url)

        check()                                                   # full build; the page's watch is added
        os.utime(folder / "f00.txt", (1_000_000_000, 1_000_000_000))
        check()                                                   # full build again (the watch's first)
        steps = [
            lambda: (folder / "f01.txt").write_bytes(b"longer content now"),      # IN_MODIFY
            lambda: os.utime(folder / "f02.txt", (1_100_000_000, 1_100_000_000)),  # IN_ATTRIB
            lambda: (folder / "new.txt").write_bytes(b"new"),                      # IN_CREATE
            lambda: os.unlink(folder / "f03.txt"),                                 # IN_DELETE
            lambda: os.rename(folder / "f04.txt", folder / "renamed.txt"),         # IN_MOVED_FROM/TO
            lambda: os.rename(folder / "f05.txt", folder / "f06.txt"),             # renamed over another
            lambda: _set_color(folder / "f07.txt", "red"),                         # an extended attribute
            lambda: _set_color(folder / "f07.txt", "blue"),
            lambda: (os.unlink(folder / "f08.txt"), os.symlink("f09.txt", folder / "f08.txt")),
            lambda: (os.unlink(folder / "f10.txt"), os.mkdir(folder / "f10.txt")),  # a file became a folder
            lambda: os.rename(folder / "sub", folder / "sub2"),                    # a subfolder renamed
            lambda: (folder / ".dot").write_bytes(b"hidden"),                      # never shown
            lambda: os.rename(folder / ".dot", folder / "undotted"),
            lambda: os.truncate(folder / "f11.txt", 0),
        ]
        for step in steps:
            step()
            check()
        os.utime(folder / "sub2", (1_200_000_000, 1_200_000_000))            # IN_ATTRIB of a member
        check()
        (folder / "sub2" / "inside").write_bytes(b"i")          # sub2's mtime moves: no event in many/
        os.utime(folder / "f12.txt", (1_300_000_000, 1_300_000_000))          # a rebuild
        check()
        # Written elsewhere and renamed in (how editors save), then the folder replaced by another.
        (root / "elsewhere.txt").write_bytes(b"from outside")
        os.rename(root / "elsewhere.txt", folder / "f13.txt")
        check()
        os.rename(folder, root / "old")
        folder.mkdir()
        (folder / "other.txt").write_bytes(b"another folder")
        check()


def test_a_change_through_another_worker_shows_in_every_workers_answer(tmp_path):
    """Every worker watches the folder's inode: a write answered by one worker raises the events that
    mark the member in the other's memo (the shared write generation names nothing). Many new
    connections: SO_REUSEPORT spreads them over both workers."""
    root, state = tmp_path / "root", tmp_path / "state"
    folder = root / "w"
    folder.mkdir(parents=True)
    for i in range(30):
        (folder / f"f{i:02d}.txt").write_bytes(b"x" * i)
    with Server(root, "--allow-write", "--token", TOKEN, "--state-dir", str(state), "--workers", "2") as s:
        def check_all():
            for _ in range(8):                                    # new connections: both workers answer
                assert _shown(s.port, "/w/") == _truth(folder, "/w/")

        for i in range(3):                                        # both workers: two full builds, watched
            assert call(s.port, "PUT", f"/w/warm{i}.txt", body=b"w")[0] == 201
            check_all()
        assert call(s.port, "PUT", "/w/f01.txt", body=b"rewritten by a worker")[0] == 204
        check_all()
        assert call(s.port, "PUT", "/w/made.txt", body=b"made")[0] == 201
        check_all()
        assert call(s.port, "DELETE", "/w/f02.txt")[0] == 204
        check_all()
        assert call(s.port, "MOVE", "/w/f03.txt", {"Destination": "/w/moved.txt"})[0] == 201
        check_all()
        patch = (b'<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:X="urn:x"><D:set><D:prop>'
                 b'<X:color>green</X:color></D:prop></D:set></D:propertyupdate>')
        assert call(s.port, "PROPPATCH", "/w/f04.txt", body=patch)[0] == 207
        check_all()
        assert call(s.port, "COPY", "/w/f05.txt", {"Destination": "/w/copied.txt"})[0] == 201
        check_all()
        assert call(s.port, "MKCOL", "/w/col")[0] == 201
        check_all()


def test_names_are_trusted_only_while_the_watch_reported_everything(tmp_path):
    """``Members.begin``'s decision on a real folder and a real inotify watch: full builds until the
    watch's token is the same across two builds; then only the named members are re-stat'ed, and the
    answer equals a full build's; a queue overflow (real: more events than the queue holds), the folder
    itself moved, and the age bound each make the next build a full one."""
    from zcopy.dav import xmlbody
    from zcopy.server import propfind as pf
    from zcopy.server.listings import TTL
    from zcopy.server.watch import FileWatch

    folder = tmp_path / "f"
    folder.mkdir()
    for i in range(20):
        (folder / f"m{i:02d}").write_bytes(b"x" * i)
    plan = pf.Plan(xmlbody.PropFind("prop", [(xmlbody.DAV, "getcontentlength"), (xmlbody.DAV, "getetag"),
                                             (xmlbody.DAV, "getlastmodified")]), None)
    watch = FileWatch()
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    members = pf.Members()
    label = str(folder)

    def render(memo, dirty=None) -> tuple[bytes, str]:
        out = pf.new_body()
        try:
            if dirty is None:
                n = pf.write_members(out, fd, "/f/", plan, pf.members(fd, "/f/", show_hidden=False),
                                     lambda stats, newest=None: {}, [], None, memo)
            else:
                n = pf.update_members(out, fd, "/f/", plan, memo, dirty, lambda stats, newest=None: {}, None,
                                      show_hidden=False)
            return os.pread(out, n, 0)
        finally:
            os.close(out)

    def build(now=None) -> str:
        """What the worker does: apply the queued events, note the token, build."""
        for path in watch.changes():
            members.changed(path)
        if members.folder is not None:
            members.armed = watch.token(members.folder)
        dirty = members.begin(time.monotonic() if now is None else now)
        if dirty is None:
            members.folder, members.full_at = label, time.monotonic()
        got = render(members.memo, dirty)
        assert sorted(got.split(b"</D:response>")) == sorted(render(pf.Memo()).split(b"</D:response>"))
        return "full" if dirty is None else f"named {sorted(dirty)}"

    try:
        assert build() == "full"                                  # nothing known
        assert watch.watch(label, fd)                             # what Listings._keep does
        assert build() == "full"                                  # the watch was not up before the stats
        os.utime(folder / "m01", (1_000_000_000, 1_000_000_000))
        (folder / "new").write_bytes(b"n")
        os.unlink(folder / "m02")
        assert build() == "named ['m01', 'm02', 'new']"
        assert build() == "named []"
        assert build(now=members.full_at + TTL) == "full"         # the age bound
        with open("/proc/sys/fs/inotify/max_queued_events") as f:
            limit = int(f.read())
        for _ in range(limit // 2 + 2):                      # two events a rename: the queue overflows
            os.rename(folder / "m03", folder / "m03b")
            os.rename(folder / "m03b", folder / "m03")
        assert build() == "full" and watch.overflows >= 1        # the token moved with the overflow
        os.utime(folder / "m04", (1_000_000_000, 1_000_000_000))
        assert build() == "named ['m04']"                          # the full build began after it
        os.rename(folder, tmp_path / "g")                         # the folder itself moved
        os.rename(tmp_path / "g", folder)
        assert build() == "full"
    finally:
        os.close(fd)
        watch.close()


@pytest.mark.parametrize("pure", [False, True])
def test_a_member_dated_beyond_2262_is_listed_and_kills_no_worker(tmp_path, pure):
    """A PROPPATCH of Win32LastModifiedTime (or X-OC-Mtime, or anyone's utime) can date a file after 2262,
    beyond 64-bit nanoseconds: a Depth 1 PROPFIND that asks no getetag keys its memo by the members'
    packed stats, whose ``struct.pack`` raised there and took the worker down (compiled or not)."""
    (tmp_path / "later.txt").write_bytes(b"x")
    (tmp_path / "earlier.txt").write_bytes(b"y")
    with Server(tmp_path, "--allow-write", "--token", TOKEN, env={"ZCOPY_PURE": "1"} if pure else {}) as s:
        body = (b'<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:schemas-microsoft-com:">'
                b'<D:set><D:prop><Z:Win32LastModifiedTime>Fri, 31 Dec 9999 23:59:59 GMT</Z:Win32LastModifiedTime>'
                b'</D:prop></D:set></D:propertyupdate>')
        assert call(s.port, "PROPPATCH", "/later.txt", body=body)[0] == 207
        os.utime(tmp_path / "earlier.txt", (0, -(1 << 31)))
        if os.stat(tmp_path / "later.txt").st_mtime_ns < 1 << 63:
            pytest.skip("this filesystem does not keep times past 2262")
        asked = (b'<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop><D:getlastmodified/>'
                 b'<D:getcontentlength/></D:prop></D:propfind>')
        workers = s.worker_pids()
        for _ in range(2):                         # a first build, then a rebuild from its memo
            _, rs = propfind(s.port, "/", asked)
            assert prop(rs["/later.txt"], D + "getcontentlength").text == "1"
            assert prop(rs["/earlier.txt"], D + "getlastmodified").text.endswith("1901 20:45:52 GMT")
        assert s.worker_pids() == workers
