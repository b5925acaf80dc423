"""A Depth 1 PROPFIND's first build through ``zcopy.scan`` (the scan and the per-member columns in C)
against the plain-Python path of zcopy/server/propfind.py: the same members, the same Multi-Status bytes,
the same memo, for the same folder. The Python path is had in the same process by setting
``propfind._c`` to None (what ``ZCOPY_PURE=1`` or a stale build gives)."""

from __future__ import annotations

import os
import threading
import time

import pytest

from zcopy import http, hotpath
from zcopy.dav import xmlbody
from zcopy.server import propfind as pf

pytestmark = pytest.mark.skipif(pf._c is None, reason="zcopy.scan is not compiled (or ZCOPY_PURE=1)")

ODD = ["plain.txt", "with space.txt", "caf\u00e9 & <tag>.md", "100%.bin", "a&b<c>d\"e'.html", "\u65e5\u672c.JPG",
       "no-extension", "trailing.", "x.tar.gz", "UPPER.TXT", "semi;colon?.css", "plus+sign#.js"]
DIRS = ["sub dir", "caf\u00e9 dir", "plain", "100% & <d>"]
BODIES = {
    "named": xmlbody.PropFind("prop", [(xmlbody.DAV, n) for n in (
        "resourcetype", "getcontentlength", "getlastmodified", "getetag", "displayname", "getcontenttype")]),
    "created": xmlbody.PropFind("prop", [(xmlbody.DAV, n) for n in (
        "creationdate", "getcontentlength", "displayname", "resourcetype")]),     # no getetag: packed keys
    "rclone": xmlbody.PropFind("prop", [(xmlbody.DAV, n) for n in (
        "getlastmodified", "getcontentlength", "resourcetype", "getcontenttype", "getetag")]
        + [("http://owncloud.org/ns", "checksums")]),
    "allprop": xmlbody.PropFind("allprop"),
    "propname": xmlbody.PropFind("propname"),
}


def _fill(folder, files: int = 0) -> None:
    folder.mkdir()
    for name in ODD:
        (folder / name).write_bytes(name.encode() * 3)
    for name in DIRS:
        (folder / name).mkdir()
    for i in range(files):
        (folder / f"file-{i:05d}.txt").write_bytes(b"x" * (i % 7))
    (folder / ".hidden").write_bytes(b"h")
    (folder / ".hidden dir").mkdir()
    (folder / ".zcopy-upload-0123").write_bytes(b"partial")
    (folder / ".zcopy").mkdir()
    os.symlink("plain.txt", folder / "link")
    os.symlink("sub dir", folder / "dirlink")
    os.symlink("nowhere", folder / "dangling")
    os.mkfifo(folder / "fifo")
    os.utime(folder / "plain.txt", ns=(0, -1_500_000_123))      # before 1970: negative times
    os.utime(folder / "100%.bin", ns=(0, 4_102_444_800_123_456_789))   # 2100
    with open(folder / "x.tar.gz", "wb") as f:
        f.truncate(5 << 40)                                     # sparse, 5 TiB
    raw = os.fsencode(str(folder)) + b"/bad-\xff\xfe.txt"          # not UTF-8: surrogateescape'd
    with open(raw, "wb") as f:
        f.write(b"raw")


def _quiet(folder) -> None:
    from zcopy.server.digests import QUIET
    newest = max(os.stat(os.path.join(folder, n), follow_symlinks=False).st_ctime for n in os.listdir(folder))
    while time.time() <= newest + QUIET:
        time.sleep(0.01)


def _build(fd: int, url: str, asked, *, show_hidden=False, visible=None, memo=None, overrides=None) -> bytes:
    plan = pf.Plan(asked, None)
    out = pf.new_body()

    def slow(member_url, st, wants_dead):
        return f"<slow>{member_url} {st.st_size} {st.st_mode:o} {http.make_etag(st)}</slow>\n"
    try:
        scan = pf.members(fd, url, show_hidden=show_hidden, visible=visible)
        n = pf.write_members(out, fd, url, plan, scan, overrides or (lambda stats, newest=None: {}), [], slow, memo)
        return os.pread(out, n, 0)
    finally:
        os.close(out)


def _both(monkeypatch, fn):
    compiled = fn()
    with monkeypatch.context() as m:
        m.setattr(pf, "_c", None)
        pure = fn()
    return compiled, pure


@pytest.fixture(scope="module")
def big_folder(tmp_path_factory):
    """More than two batches of files and every odd kind of member, made once for the builds that only
    read it (filling it costs 0.9 s, a build 0.03)."""
    folder = tmp_path_factory.mktemp("scan") / "f"
    _fill(folder, files=2500)
    return folder


@pytest.mark.parametrize("body", sorted(BODIES))
@pytest.mark.parametrize("show_hidden", [False, True])
@pytest.mark.parametrize("url", ["/f/", "/"])
def test_a_first_build_is_byte_identical_to_the_python_path(big_folder, monkeypatch, body, show_hidden, url):
    fd = os.open(big_folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        compiled, pure = _both(monkeypatch, lambda: _build(fd, url, BODIES[body], show_hidden=show_hidden))
    finally:
        os.close(fd)
    assert compiled == pure
    assert compiled.count(b"<D:response>") >= 2500 + len(ODD) + len(DIRS)
    for absent in (b"fifo", b"link<", b"dangling", b"zcopy-upload"):
        assert absent not in compiled
    assert (b".hidden" in compiled) is show_hidden
    assert (b".zcopy/</D:href>" in compiled) is (show_hidden and url == "/f/")   # the top's own namespace


@pytest.mark.parametrize("body", ["named", "created", "allprop"])
def test_the_memo_and_a_rebuild_agree_with_the_python_path(tmp_path, monkeypatch, body):
    """The memo a compiled first build leaves holds the same keys and responses as the Python one's, and
    a rebuild that stats every member after changes (``restat``) writes the same bytes either way."""
    folder = tmp_path / "f"
    _fill(folder, files=1100)
    _quiet(folder)
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    memos = {}
    try:
        def run(label):
            memo = pf.Memo()
            first = _build(fd, "/f/", BODIES[body], memo=memo)
            memos[label] = memo
            return first
        compiled, pure = _both(monkeypatch, lambda: run("c" if pf._c is not None else "p"))
        assert compiled == pure
        assert memos["c"].keys == memos["p"].keys and memos["c"].responses == memos["p"].responses
        assert memos["c"].folders == memos["p"].folders
        (folder / "file-00003.txt").write_bytes(b"changed")
        os.unlink(folder / "file-00004.txt")
        (folder / "new one.txt").write_bytes(b"new")
        _quiet(folder)                   # (a member changed within QUIET has no key: both builds alike)

        def again():
            memo = memos["c" if pf._c is not None else "p"]
            return _build(fd, "/f/", BODIES[body], memo=memo)
        compiled, pure = _both(monkeypatch, again)
        assert compiled == pure and b"new%20one.txt" in compiled and b"file-00004.txt" not in compiled
        assert memos["c"].keys == memos["p"].keys and memos["c"].responses == memos["p"].responses
    finally:
        os.close(fd)


def test_overrides_visible_and_an_empty_folder(tmp_path, monkeypatch):
    folder = tmp_path / "f"
    _fill(folder, files=30)
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    seen = []

    def overrides(stats, newest=None):          # as digests.overrides: reads st_dev, st_ino, sizes and times
        seen.append((type(stats[0]).__name__, newest))
        return {j: b'"zc-%x-%x"' % (st.st_dev, st.st_mtime_ns) for j, st in enumerate(stats) if st.st_ino % 3 == 0}
    try:
        compiled, pure = _both(monkeypatch, lambda: _build(
            fd, "/f/", BODIES["named"], overrides=overrides, visible=lambda name: "5" not in name))
    finally:
        os.close(fd)
    assert compiled == pure and b"zc-" in compiled and b"file-00005" not in compiled
    assert seen[0][0] == "Stat" and seen[1][0] == "stat_result" and seen[0][1] == seen[1][1]
    empty = tmp_path / "e"
    empty.mkdir()
    fd = os.open(empty, os.O_RDONLY | os.O_DIRECTORY)
    try:
        compiled, pure = _both(monkeypatch, lambda: _build(fd, "/e/", BODIES["allprop"], memo=pf.Memo()))
        assert pf._c.scan(fd, True) == ([], [], [], [])
    finally:
        os.close(fd)
    assert compiled == pure == b""


def test_a_stat_reads_as_the_stat_result(tmp_path):
    folder = tmp_path / "f"
    _fill(folder)
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        files, fstats, dirs, dstats = pf._c.scan(fd, False)
        assert sorted(files + dirs) == sorted(n for n in os.listdir(fd)
                                              if n not in ("link", "dirlink", "dangling", "fifo"))
        assert [n for n in os.listdir(fd) if n in set(files)] == files      # the folder's order
        for name, st in zip(files + dirs, fstats + dstats):
            want = os.stat(name, dir_fd=fd, follow_symlinks=False)
            for field in ("st_mode", "st_ino", "st_dev", "st_nlink", "st_uid", "st_gid", "st_size",
                          "st_atime", "st_mtime", "st_ctime", "st_atime_ns", "st_mtime_ns", "st_ctime_ns"):
                assert getattr(st, field) == getattr(want, field) and \
                    type(getattr(st, field)) is type(getattr(want, field)), (name, field)
            assert [st[i] for i in range(10)] == list(want[:10]) and st[-1] == want[-1] and len(st) == 10
            assert http.make_etag(st) == http.make_etag(want)
        assert pf._c.etags(fstats) == http.make_etags(fstats) == http.make_etags(
            [os.stat(n, dir_fd=fd, follow_symlinks=False) for n in files])
        with pytest.raises(IndexError):
            fstats[0][10]
        hidden = pf._c.scan(fd, True)
        assert not any(n.startswith(".") for n in hidden[0] + hidden[2]) and ".hidden" in files
    finally:
        os.close(fd)
    from zcopy.http.headers import ETAG_FORMAT
    assert pf._c._ETAG_FORMAT == ETAG_FORMAT


def test_members_vanishing_and_appearing_during_the_scan(tmp_path):
    """A member gone between ``readdir`` and its ``fstatat`` is left out (as one that never was); one
    replaced meanwhile by a symlink or a fifo is not shown. Churned by a thread while scans run."""
    folder = tmp_path / "f"
    folder.mkdir()
    for i in range(2000):
        (folder / f"m{i}").write_bytes(b"x")
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    stop = threading.Event()

    def churn():
        i = 0
        while not stop.is_set():
            name = f"m{i % 2000}"
            try:
                os.unlink(name, dir_fd=fd)
                if i % 3 == 0:
                    os.symlink("m0", name, dir_fd=fd)
                elif i % 3 == 1:
                    os.mkfifo(name, dir_fd=fd)
                else:
                    os.close(os.open(name, os.O_CREAT | os.O_WRONLY, dir_fd=fd))
            except FileExistsError:
                pass
            except FileNotFoundError:
                pass
            i += 1
    t = threading.Thread(target=churn)
    t.start()
    try:
        for _ in range(30):
            files, stats, dirs, dstats = pf._c.scan(fd, True)
            assert not dirs and len(files) == len(stats)
            assert all(st.st_mode & 0o170000 == 0o100000 for st in stats)
    finally:
        stop.set()
        t.join()
        os.close(fd)


def test_a_scan_of_what_is_not_a_folder_raises_as_listdir(tmp_path):
    path = tmp_path / "file"
    path.write_bytes(b"x")
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(NotADirectoryError):
            pf._c.scan(fd, True)
    finally:
        os.close(fd)
    with pytest.raises(OSError):
        pf._c.scan(-1, True)


def test_the_module_is_guarded_by_the_hot_path_manifest():
    assert hotpath.compiled("zcopy.scan") and "zcopy.scan" in hotpath.SOURCES
    assert hotpath.SOURCES["zcopy.scan"][0] == os.path.join("zcopy", "scan.pyx")


def test_members_dated_beyond_64_bit_nanoseconds(tmp_path, monkeypatch):
    """Times that ``=q`` cannot hold (the year 2446 is ext4's last): the memo's packed keys fall back
    to decimal the same way in both paths, with nothing raised."""
    folder = tmp_path / "f"
    _fill(folder, files=10)
    os.utime(folder / "plain.txt", (0, 15_000_000_000))
    os.utime(folder / "no-extension", (0, -(1 << 31)))
    _quiet(folder)
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    memos = {}
    try:
        def run():
            memo = memos.setdefault(pf._c is not None, pf.Memo())
            return _build(fd, "/f/", BODIES["created"], memo=memo), _build(fd, "/f/", BODIES["created"], memo=memo)
        compiled, pure = _both(monkeypatch, run)
    finally:
        os.close(fd)
    assert compiled == pure and b"plain.txt" in compiled[0] and compiled[0] == compiled[1]
    assert memos[True].keys == memos[False].keys
    st = os.stat(folder / "plain.txt")
    assert memos[True].keys["plain.txt"] == b"%d,%d,%d,%d,%d" % (
        st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode)
