"""Nothing that blocks on the disk or burns CPU runs on a worker's event loop
(issue 13, item 4): hot 1 KiB GETs stay fast while uploads commit with fsync,
a big folder is listed in a loop, and clients pipeline listings they never
read. CI sizes of tools/bench_offloop.py, which has the full ones and the
issue's bar (250 ms for the slowest GET). Here the bar is 1 s: on a shared,
loaded machine the scheduler alone delays a client by a few hundred ms now
and then (the worker's own syscalls, traced, never waited more than 40 ms),
while a loop that renders a 20,000-entry listing itself stalls every other
connection for seconds (measured on the code before: 4.2 s and 8.4 s)."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time

import pytest

from probes.filesystem import IN_MEMORY, fs_type
from serverutil import Server, get, request

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tools"))
import bench_offloop  # noqa: E402

MiB = 1 << 20
BAR = 1.0


@pytest.fixture(scope="module")
def disk_tree():
    """A tree on a real disk (fsync and scandir cost what they cost there)."""
    for base in (tempfile.gettempdir(), "/var/tmp", "/work"):
        if os.path.isdir(base) and os.access(base, os.W_OK) and fs_type(base)[0] not in IN_MEMORY:
            break
    else:
        pytest.skip("no disk-backed temp folder")
    root = tempfile.mkdtemp(prefix="zcopy-offloop-", dir=base)
    try:
        bench_offloop.make_tree(root, 0, 20000)
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_hot_gets_stay_fast_while_uploads_fsync_and_a_big_folder_is_listed(disk_tree):
    with Server(disk_tree, "--workers", "1", "--allow-write", env={"ZCOPY_STATS": "off"}) as s:
        lat = bench_offloop.uploads_load(s.port, clients=4, size=16 * MiB, seconds=4, folder="/big/",
                                          listers=2)
        status, _, body = get(s.port, "/big/", {"Accept": "application/json"})
    assert status == 200 and body.count(b'"type":"file"') == 20000
    print(bench_offloop.summary(lat))
    assert max(lat) < BAR, bench_offloop.summary(lat)
    assert len(lat) > 50, bench_offloop.summary(lat)


def test_hot_gets_stay_fast_while_clients_pipeline_listings_they_never_read(disk_tree):
    with Server(disk_tree, "--workers", "1", env={"ZCOPY_STATS": "off"}) as s:
        [pid] = s.worker_pids()
        page = len(get(s.port, "/big/")[2])
        # a fresh build for the load: drop what the first GET cached
        os.utime(os.path.join(disk_tree, "big", "file-000000.txt"))
        lat, grown = bench_offloop.pipelined_load(s.port, clients=4, pipelined=8, seconds=3, pid=pid)
        status, _, body = get(s.port, "/big/")          # still serving, and the page is whole
    assert status == 200 and len(body) == page and body.count(b"<tr data-name=") == 20000
    print(bench_offloop.summary(lat))
    assert max(lat) < BAR, bench_offloop.summary(lat)
    assert len(lat) > 50, bench_offloop.summary(lat)
    # Four connections each stuck with a listing: no private copy of the page each.
    print(f"RssAnon grew {grown} B; page {page} B")
    assert grown < 2 * page, (grown, page)


def test_a_cached_listing_shows_changes_at_once(tmp_path):
    """Pages are cached, and dropped by the watch's events (a file made by
    another process) and by this server's own writes (PUT, DELETE)."""
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.txt").write_text("a")
    with Server(tmp_path, "--workers", "1", "--allow-write", env={"ZCOPY_STATS": "off"}) as s:
        first = get(s.port, "/d/")
        assert first[0] == 200 and b"a.txt" in first[2]
        assert get(s.port, "/d/") == first                       # the same page (the cached one)
        (tmp_path / "d" / "b.txt").write_text("b")               # another process writes
        assert b"b.txt" in get(s.port, "/d/")[2]
        status, _, _ = request(s.port, b"PUT /d/c.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n"
                                       b"Connection: close\r\n\r\nc")
        assert status == 201 and b"c.txt" in get(s.port, "/d/")[2]
        assert request(s.port, b"DELETE /d/a.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")[0] == 204
        assert b"a.txt" not in get(s.port, "/d/")[2]
        (tmp_path / "d" / "b.txt").write_text("bigger now")      # a size in the listing changed
        assert b"10 B" in get(s.port, "/d/")[2] or b"10" in get(s.port, "/d/", {"Accept": "application/json"})[2]


def test_the_page_cache_is_capped_in_bytes_and_closes_what_it_drops(tmp_path, fd_guard):
    """In process: pages past the cap are evicted oldest first and their memfds
    closed; a page a reply still holds closes when that reply releases it."""
    from zcopy import http
    from zcopy.server.files import OpenFileCache
    from zcopy.server.listings import GRACE, Listings
    from zcopy.server.responder import Responder

    for i in range(6):
        (tmp_path / f"d{i}").mkdir()
        for j in range(200):
            (tmp_path / f"d{i}" / f"file-{j:04d}").write_bytes(b"")
    cache = OpenFileCache(str(tmp_path))
    try:
        scan = Responder(cache, http.DateHeader()).folders._scan
        one = Listings(cache, scan)
        size = one.serve("/d0/", False, lambda page: page.size, None)
        one.close()
        listings = Listings(cache, scan, max_bytes=4 * size)             # room for four pages
        held = listings.serve("/d0/", False, lambda page: page.acquire(), None)   # a reply sending it
        pages = [held] + [listings.serve(f"/d{i}/", False, lambda page: page, None) for i in range(1, 6)]
        assert [p.size for p in pages] == [size] * 6
        assert listings.bytes == 4 * size and len(listings._pages) == 4
        assert held.retired and pages[1].retired and not pages[2].retired
        listings.sweep(time.monotonic())
        assert held.fd >= 0 and pages[1].fd >= 0                   # a reply may still take them up
        listings.sweep(time.monotonic() + GRACE)
        assert held.fd >= 0 and pages[1].fd == -1                  # closed; the held one still sends
        held.release()
        listings.sweep(time.monotonic() + GRACE)
        assert held.fd == -1
        listings.close()
        assert all(p.fd == -1 for p in pages)
    finally:
        cache.close()
