"""The open-file cache revalidated by inotify events (zcopy/server/watch.py),
on real files with the real kernel's inotify; and end to end through serve."""

from __future__ import annotations

import gzip
import os

import pytest

from serverutil import Server, get
from zcopy.server.files import OpenFileCache
from zcopy.server.watch import FileWatch


@pytest.fixture
def watch():
    w = FileWatch()
    yield w
    w.close()


@pytest.fixture
def cache(tmp_path, watch):
    c = OpenFileCache(str(tmp_path), watch=watch)
    yield c
    c.close()


def test_changes_name_the_child_that_changed(tmp_path, watch):
    f = tmp_path / "a.txt"
    f.write_text("one")
    (tmp_path / "sub").mkdir()
    assert watch_folder(watch, tmp_path) and watch.changes() == []
    with open(f, "a") as fh:
        fh.write("two")                                  # IN_MODIFY
    os.chmod(f, 0o600)                                   # IN_ATTRIB
    (tmp_path / "b.new").write_text("x")
    os.replace(tmp_path / "b.new", tmp_path / "b.txt")   # IN_MOVED_FROM/TO
    os.rename(tmp_path / "sub", tmp_path / "sub2")       # a folder: trailing separator
    changed = set(watch.changes())
    assert {str(f), str(tmp_path / "b.txt"), str(tmp_path / "sub") + os.sep} <= changed
    assert watch.changes() == []                         # read once


def test_folder_gone_is_reported_as_everything_under_it(tmp_path, watch):
    folder = tmp_path / "d"
    folder.mkdir()
    assert watch_folder(watch, folder)
    os.rmdir(folder)
    assert str(folder) + os.sep in watch.changes()


def test_filesystems_without_local_events_are_not_watched(watch):
    # procfs (like NFS or FUSE) changes without this kernel's VFS seeing writes.
    assert watch_folder(watch, "/proc/self") is False


def watch_folder(watch, folder) -> bool:
    """Watch a folder as the cache does: through an fd of it (the path is its label)."""
    fd = os.open(folder, os.O_PATH | os.O_DIRECTORY)
    try:
        return watch.watch(str(folder), fd)
    finally:
        os.close(fd)


def test_watched_entry_is_served_without_a_stat_until_its_event(tmp_path, cache):
    path = tmp_path / "f.txt"
    path.write_text("first")
    entry = cache.lookup("/f.txt")
    assert entry.trust.watched and entry.size == 5
    path.write_text("second, longer")
    # No stat per request: the cache answers from memory until the event is applied ...
    assert cache.lookup("/f.txt") is entry
    cache.apply_changes()
    # ... and the event drops it: the next lookup sees the new file.
    fresh = cache.lookup("/f.txt")
    assert fresh is not entry and fresh.size == len("second, longer")
    assert entry.retired and entry.fd == -1


def test_new_precompressed_sibling_is_offered_after_its_event(tmp_path, cache):
    (tmp_path / "app.js").write_text("x" * 1000)
    assert cache.lookup("/app.js").variants == {}
    (tmp_path / "app.js.gz").write_bytes(gzip.compress(b"x" * 1000))
    cache.apply_changes()
    assert set(cache.lookup("/app.js").variants) == {"gzip"}


def test_moved_folder_drops_the_entries_under_it(tmp_path, cache):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_text("in d")
    cache.lookup("/d/f")          # watches tmp_path/d
    cache.lookup("/d/")           # a folder: not cached, but tmp_path is not watched either
    os.rename(tmp_path / "d", tmp_path / "e")
    cache.apply_changes()         # IN_MOVE_SELF on the watched d
    assert len(cache) == 0
    with pytest.raises(Exception):
        cache.lookup("/d/f")


def test_unwatched_cache_still_stats_per_request(tmp_path):
    cache = OpenFileCache(str(tmp_path))          # no watch: the stat path
    try:
        path = tmp_path / "f.txt"
        path.write_text("first")
        entry = cache.lookup("/f.txt")
        assert not entry.trust.watched
        path.write_text("second, longer")
        assert cache.lookup("/f.txt").size == len("second, longer")
    finally:
        cache.close()


def test_serve_offers_a_sibling_created_after_the_file_was_served(tmp_path):
    (tmp_path / "app.js").write_text("console.log(1)\n" * 50)
    with Server(tmp_path, "--workers", "1") as server:
        status, h, _ = get(server.port, "/app.js", {"Accept-Encoding": "gzip"})
        assert status == 200 and "content-encoding" not in h
        (tmp_path / "app.js.gz").write_bytes(gzip.compress(b"console.log(1)\n" * 50))
        status, h, body = get(server.port, "/app.js", {"Accept-Encoding": "gzip"})
        assert h.get("content-encoding") == "gzip"
        assert gzip.decompress(body) == b"console.log(1)\n" * 50
        # and an in-place rewrite is served at its new length at once
        (tmp_path / "app.js").write_text("short")
        status, h, body = get(server.port, "/app.js")
        assert (h["content-length"], body) == ("5", b"short")


def test_a_folder_made_where_a_watched_one_was_moved_from_gets_its_own_watch(tmp_path):
    # The watch follows the moved inode; the new folder of the same name must
    # not count as watched through it (its changes would go unseen).
    d = tmp_path / "d"
    d.mkdir()
    (d / "f").write_text("one")
    with Server(tmp_path, "--workers", "1") as server:
        assert get(server.port, "/d/f")[2] == b"one"
        os.rename(d, tmp_path / "old")
        assert get(server.port, "/old/f")[2] == b"one"   # the moved folder, served under its new name
        d.mkdir()
        (d / "f").write_text("two")
        assert get(server.port, "/d/f")[2] == b"two"
        (d / "f.new").write_text("three, longer")
        os.replace(d / "f.new", d / "f")
        assert get(server.port, "/d/f")[2] == b"three, longer"
        (tmp_path / "old" / "f").write_text("four")
        assert get(server.port, "/old/f")[2] == b"four"


def test_a_file_with_another_hard_link_is_stat_ed_per_request(tmp_path):
    # inotify reports a write to the folder of the name it was made through:
    # one through a link elsewhere raises nothing in the served file's folder.
    root = tmp_path / "root"
    root.mkdir()
    (root / "f").write_text("abc")
    os.link(root / "f", tmp_path / "elsewhere")
    with Server(root, "--workers", "1") as server:
        assert get(server.port, "/f")[2] == b"abc"
        with open(tmp_path / "elsewhere", "a") as fh:
            fh.write("defgh")
        status, h, body = get(server.port, "/f")
        assert (h["content-length"], body) == ("8", b"abcdefgh")


def test_a_followed_symlink_pointed_elsewhere_is_served_from_its_new_target(tmp_path):
    # The link's own folder must be watched too: the target's folder sees nothing.
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "f").write_text("in a")
    (tmp_path / "b" / "f").write_text("in b, longer")
    os.symlink("a/f", tmp_path / "link")
    with Server(tmp_path, "--workers", "1", "--follow-symlinks") as server:
        assert get(server.port, "/link")[2] == b"in a"
        os.symlink("b/f", tmp_path / "link.new")
        os.replace(tmp_path / "link.new", tmp_path / "link")
        assert get(server.port, "/link")[2] == b"in b, longer"


def test_a_file_that_became_a_folder_mid_request_is_never_answered_from_its_closed_fd(tmp_path, cache):
    """The watched entry is trusted until its event is applied; if the path
    turned into a folder meanwhile and its sibling changed, the responder's
    re-lookup finds a folder: 404, not a reply planned on the retired fd."""
    from zcopy import http
    from zcopy.server.responder import Responder

    (tmp_path / "app.js").write_text("x" * 1000)
    (tmp_path / "app.js.gz").write_bytes(gzip.compress(b"x" * 1000))
    responder = Responder(cache, http.DateHeader())
    head = b"GET /app.js HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip\r\n\r\n"
    first = responder.respond(http.parse_head(head))
    assert first.status == 200 and b"Content-Encoding: gzip" in first.head
    os.unlink(tmp_path / "app.js")
    os.mkdir(tmp_path / "app.js")                        # now a folder ...
    (tmp_path / "app.js.gz").write_bytes(b"changed")     # ... and the sibling changed
    reply = responder.respond(http.parse_head(head))     # events not applied yet
    assert reply.status == 404 and reply.body == [] and reply.entry is None
