"""``FOLDER/?search=TERM`` (zcopy.server.search) over a real server with curl and raw sockets, and its
walk on real trees: words, tree order, what is never found (hidden, temp, /.zcopy, FIFOs, links out of
the tree), access rules, the three bounds, the HTML page for a browser without script."""

from __future__ import annotations

import base64
import json
import os
import re
import time
from urllib.parse import quote

import pytest

from tests.serverutil import Server, curl, get
from zcopy.accounts import passwords
from zcopy.server import search
from zcopy.server.root import TEMP_PREFIX

JSON = {"Accept": "application/json"}


def found(port: int, path: str, headers: dict | None = None) -> dict:
    status, head, body = get(port, path, {**JSON, **(headers or {})})
    assert status == 200, (status, body)
    assert head["content-type"] == "application/json" and head["cache-control"] == "no-store"
    return json.loads(body)


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "root"
    for rel, data in {"Reports/2024 Q1 report.pdf": b"q1", "Reports/old/report_10.txt": b"ten",
                      "Reports/old/report_2.txt": b"two", "notes/meeting.txt": b"m", "report card.txt": b"c",
                      "notes/deep/er/still/REPORT.md": b"deep", ".secret/report.txt": b"hidden",
                      "日本/レポート report.txt": b"jp"}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    (root / "report folder").mkdir()
    (root / ".hidden report").write_text("h")
    (root / (TEMP_PREFIX + "report")).write_text("t")
    os.mkfifo(root / "notes" / "report.fifo")
    os.symlink("/etc", root / "notes" / "report-link-out")          # never followed, never listed
    outside = tmp_path / "outside"
    (outside / "report inside a link").mkdir(parents=True)
    os.symlink(outside, root / "notes" / "linked")                   # not descended
    with open(os.path.join(os.fsencode(root), b"bad\xffreport.bin"), "wb") as f:
        f.write(b"raw")
    return root


def test_words_tree_order_and_what_is_never_found(tree):
    with Server(tree) as srv:
        doc = found(srv.port, "/?search=report")
        paths = [r["path"] for r in doc["results"]]
        assert paths == ["notes/deep/er/still/REPORT.md", "report folder/", "Reports/", "Reports/old/report_2.txt",
                         "Reports/old/report_10.txt", "Reports/2024 Q1 report.pdf", "日本/レポート report.txt",
                         "bad\ufffdreport.bin", "report card.txt"]
        assert doc["complete"] is True and doc["stopped"] is None and doc["search"] == "report"
        # Every word, any case, any order.
        assert [r["path"] for r in found(srv.port, "/?search=" + quote("REPORT 2024"))["results"]] == \
            ["Reports/2024 Q1 report.pdf"]
        # Below a subfolder: paths and links relative to it; links fetch exactly the file.
        doc = found(srv.port, "/Reports/?search=report_")
        assert [(r["path"], r["href"], r["type"], r["size"]) for r in doc["results"]] == \
            [("old/report_2.txt", "old/report_2.txt", "file", 3), ("old/report_10.txt", "old/report_10.txt", "file", 3)]
        assert curl(f"{srv.url}/Reports/{doc['results'][1]['href']}").stdout == b"ten"
        bad = next(r for r in found(srv.port, "/?search=bad")["results"])
        assert bad["href"] == "bad%FFreport.bin" and curl(f"{srv.url}/{bad['href']}").stdout == b"raw"
        assert found(srv.port, "/?search=nothing-like-this")["results"] == []


def test_hidden_names_with_show_hidden(tree):
    with Server(tree, "--show-hidden") as srv:
        paths = {r["path"] for r in found(srv.port, "/?search=report")["results"]}
        assert {".hidden report", ".secret/report.txt"} <= paths
        assert not any(p.startswith(TEMP_PREFIX) for p in paths)


def test_links_with_follow_symlinks_only_where_served(tree, tmp_path):
    os.symlink("Reports/old/report_2.txt", tree / "report alias.txt")       # inside ROOT: served
    with Server(tree, "--follow-symlinks") as srv:
        doc = found(srv.port, "/?search=report")
        by = {r["path"]: r for r in doc["results"]}
        assert by["report alias.txt"]["type"] == "file" and by["report alias.txt"]["size"] == 3
        assert "notes/report-link-out" not in by                       # leads out of ROOT: not served
        assert not any("inside a link" in p for p in by)               # links are never descended


def test_the_html_page_needs_no_script(tree):
    with Server(tree) as srv:
        status, head, page = get(srv.port, "/Reports/?search=" + quote("<report>"))
        assert status == 200 and head["content-type"].startswith("text/html")
        assert "script-src 'self'" in head["content-security-policy"]
        assert b"<script" not in page
        assert b'value="&lt;report&gt;"' in page                          # the term, escaped, in the form
        status, head, page = get(srv.port, "/Reports/?search=report")
        assert re.findall(rb'<td class="name"><a href="([^"]+)">', page) == \
            [b"old/report_2.txt", b"old/report_10.txt", b"2024%20Q1%20report.pdf"]
        assert b"3 results for" in page and b'href="./"' in page
        # The folder page's find box is a plain GET form to ?search=.
        listing = get(srv.port, "/")[2]
        assert b'<form id="filter-box" class="find" role="search" method="get" action="">' in listing
        assert b'name="search"' in listing
        # A blank term is the listing; a long one a 400; HEAD has no body.
        assert b'id="listing"' in get(srv.port, "/?search=++")[2]
        assert get(srv.port, "/?search=" + "x" * (search.MAX_TERM + 1))[0] == 400
        status, head, body = get(srv.port, "/?search=report", method="HEAD")
        assert status == 200 and body == b""


def test_only_what_the_reader_may_read(tree, tmp_path):
    fast = {"time_cost": 1, "memory_kib": passwords.MIN_MEMORY_KIB}
    users = tmp_path / "users.txt"
    users.write_text(f"alice {passwords.make('alice-pw', **fast)} /Reports:r /Reports/old:- /notes/deep:r\n"
                     "* - /notes:r\n")
    alice = {"Authorization": "Basic " + base64.b64encode(b"alice:alice-pw").decode()}
    with Server(tree, "--users", str(users), "--state-dir", str(tmp_path / "state")) as srv:
        paths = [r["path"] for r in found(srv.port, "/?search=report", alice)["results"]]
        assert paths == ["notes/deep/er/still/REPORT.md", "Reports/", "Reports/2024 Q1 report.pdf"]
        # Anonymous ('*': /notes:r) finds what /notes holds, nothing of /Reports.
        assert [r["path"] for r in found(srv.port, "/?search=report")["results"]] == ["notes/deep/er/still/REPORT.md"]
        assert get(srv.port, "/Reports/?search=report")[0] == 401                 # not even to search there


def test_walk_bounds_on_a_real_tree(tmp_path):
    for d in range(5):
        for f in range(40):
            (tmp_path / f"d{d}" / f"sub{f % 4}").mkdir(parents=True, exist_ok=True)
            (tmp_path / f"d{d}" / f"sub{f % 4}" / f"match {d} {f}.txt").write_text("x")
    before = len(os.listdir("/proc/self/fd"))
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        every = search.walk(fd, ["match"], show_hidden=False, at_top=False)
        assert len(every.hits) == 200 and every.stopped is None and every.visited == 5 + 20 + 200
        few = search.walk(fd, ["match"], show_hidden=False, at_top=False, max_results=7)
        assert len(few.hits) == 7 and few.stopped == "results"
        short = search.walk(fd, ["match"], show_hidden=False, at_top=False, max_visited=60)
        assert short.stopped == "entries" and short.visited == 60 and len(short.hits) < 200
        quick = search.walk(fd, ["match"], show_hidden=False, at_top=False, max_seconds=0)
        assert quick.stopped == "time" and len(quick.hits) < 200
    finally:
        os.close(fd)
    assert len(os.listdir("/proc/self/fd")) == before                # every folder fd closed


def test_a_folder_swapped_for_a_link_is_not_entered(tmp_path):
    """The walk reopens each folder below the searched one with RESOLVE_NO_SYMLINKS (or O_NOFOLLOW per
    name): a folder replaced by a link to elsewhere after it was read is skipped, not followed."""
    from zcopy.server.root import open_below

    (tmp_path / "root" / "a").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "secret match").write_text("s")
    fd = os.open(tmp_path / "root", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.rmdir(tmp_path / "root" / "a")
        os.symlink(tmp_path / "elsewhere", tmp_path / "root" / "a")
        with pytest.raises(OSError):
            open_below(fd, ["a"])
        assert search.walk(fd, ["match"], show_hidden=False, at_top=False).hits == []
    finally:
        os.close(fd)


def test_searches_run_off_the_loop_and_are_capped(tmp_path):
    """A real worker whose search walks wait for a file to appear (a slow disk, by a seam in the
    forked child): meanwhile a file is served (the loop is free), a third search at once gets 503
    (``MAX_RUNNING``), and the two held searches answer once the walk may go on."""
    import socket
    import threading

    from tests.serverutil import read_response, worker_with

    (tmp_path / "small.txt").write_text("small")
    (tmp_path / "a match.txt").write_text("m")
    go = tmp_path.parent / (tmp_path.name + "-go")

    def extend(respond):
        real = search.walk

        def held(*args, **kwargs):
            (go.parent / f"{go.name}-in-{os.urandom(4).hex()}").touch()      # this walk has started
            while not go.exists():
                time.sleep(0.01)
            return real(*args, **kwargs)
        search.walk = held
        return respond

    with worker_with(tmp_path, extend) as (port, _pid):
        answers = []

        def ask():
            with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
                s.sendall(b"GET /?search=match HTTP/1.1\r\nHost: t\r\nAccept: application/json\r\n"
                          b"Connection: close\r\n\r\n")
                answers.append(read_response(s)[:3])
        held = [threading.Thread(target=ask) for _ in range(search.MAX_RUNNING)]
        for t in held:
            t.start()
        deadline = time.monotonic() + 20
        while len(list(go.parent.glob(go.name + "-in-*"))) < search.MAX_RUNNING and time.monotonic() < deadline:
            time.sleep(0.01)                          # until both walks have started (and wait)
        busy = get(port, "/?search=match", JSON)
        assert busy[0] == 503 and busy[1]["retry-after"] == "1"
        assert get(port, "/small.txt")[2] == b"small"  # the loop serves while the walks wait
        assert not answers
        go.touch()
        try:
            for t in held:
                t.join(30)
            assert [(a[0], [r["path"] for r in json.loads(a[2])["results"]]) for a in answers] == \
                [(200, ["a match.txt"])] * search.MAX_RUNNING
            assert get(port, "/?search=match", JSON)[0] == 200
        finally:
            go.unlink()
