"""Adversarial tests against the core13 merge: the file entry's memos, the off-loop If/lock checks of
resumable uploads, and the one-string natural sort key (server and page script alike)."""

from __future__ import annotations

import os
import shutil

import pytest

from tests.serverutil import Server

from test_ui_browser import CHROMIUM, browser as _ui_browser


@pytest.fixture(scope="module")
def browser():
    """The Chromium of tests/test_ui_browser.py (its fixture, the same launch), skipped without it."""
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is not installed")
    yield from _ui_browser.__wrapped__()


def _row_names(page) -> list[str]:
    return page.eval_on_selector_all("#listing tbody tr:not([hidden])", "rs => rs.map(r => r.dataset.name)")


def test_control_characters_in_names_reach_the_script_unchanged_and_sort_alike(tmp_path, browser):
    """HTML turns a raw CR (and CR LF) into LF before it parses: a name holding ``\\r`` written raw
    into ``data-name`` reached the script as another name (its sort, rename and delete then used
    the wrong one). Every control character must reach ``dataset.name`` as it is on the disk."""
    from zcopy.http.natural import key
    wanted = ["a\rb", "a\nb", "a\x0bb", "a\x0cb", "a\tb", "c\r\nd", "c\nd", "e\x01f", "e\x1ff", "g\x7fh",
              "i\x85j", "k\r"]
    for n in wanted:
        (tmp_path / n).write_bytes(b"x")
    page = browser.new_page()
    try:
        with Server(tmp_path) as srv:
            page.goto(f"{srv.url}/?sort=name&order=asc")
            assert _row_names(page) == sorted(wanted, key=key)
            page.click("th[data-col=name] a")                    # the script: descending
            assert _row_names(page) == sorted(wanted, key=key, reverse=True)
            page.click("th[data-col=name] a")                    # and back
            assert _row_names(page) == sorted(wanted, key=key)
    finally:
        page.close()


def test_a_held_body_holding_cache_control_still_gets_private(tmp_path):
    """A small file's 200 is head and body in one ``bytes`` (zcopy.server.held); ``_private`` looked
    for an existing ``Cache-Control`` in all of it, so a file whose text held one left a signed-in
    browser's reply cacheable by a shared cache."""
    from tests.test_serve_accounts import PW, USERS, call
    from tests.serverutil import curl
    root = tmp_path / "root"
    (root / "secret").mkdir(parents=True)
    body = b"note\r\nCache-Control: public\r\n\r\n"
    (root / "secret" / "cc.txt").write_bytes(body)
    users = tmp_path / "users.txt"
    users.write_text(USERS)
    jar = tmp_path / "cookies.txt"
    with Server(root, "--users", str(users), "--state-dir", str(tmp_path / "state")) as s:
        r = curl("-u", f"reader:{PW['reader']}", "-c", str(jar), "-o", "/dev/null", f"{s.url}/.zcopy/login")
        assert r.returncode == 0
        for _ in range(3):      # first from the file, then held in memory (and from the memo)
            r = curl("-b", str(jar), "-D", "-", f"{s.url}/secret/cc.txt")
            head, got = r.stdout.split(b"\r\n\r\n", 1)
            assert got == body
            assert b"\r\nCache-Control: private" in head + b"\r\n", head
        status, _, _ = call(s.port, "GET", "/secret/cc.txt")
        assert status == 401


def _rows(page) -> list[tuple[str, str]]:
    return page.eval_on_selector_all("#listing tbody tr:not([hidden])",
                                     "rs => rs.map(r => [r.dataset.name, r.querySelector('a').getAttribute('href')])")


def test_modified_order_of_the_server_is_the_scripts(tmp_path, browser):
    """The page's rows carry their times in whole seconds (``data-mtime``) and the script sorts by
    those; the server sorted by the float, so two files of one second came in another order than a
    click gives (the script then ties them by name)."""
    base = 1_700_000_000
    for name, frac in (("a", 0.4), ("b", 0.2), ("c", 0.3), ("d", -1.0), ("e", 0.49), ("f", 2.5), ("g", 3.5)):
        (tmp_path / name).write_bytes(b"x")
        os.utime(tmp_path / name, ns=(base * 10**9, int((base + frac) * 10**9)))
    page = browser.new_page()
    try:
        with Server(tmp_path) as srv:
            page.goto(f"{srv.url}/?sort=mtime&order=desc")
            server_desc = _rows(page)
            page.goto(f"{srv.url}/?sort=mtime&order=asc")
            server_asc = _rows(page)
            assert [n for n, _ in server_asc][:5] == ["d", "a", "b", "c", "e"]
            page.click("th[data-col=mtime] a")                   # the script: descending
            assert _rows(page) == server_desc
            page.click("th[data-col=mtime] a")
            assert _rows(page) == server_asc
            # The rows the script builds from the JSON listing (after a write) carry Math.round of
            # its times: the server's rows must carry the same second (a half rounds up there).
            shown = page.evaluate("""async () => {
                const doc = await (await fetch(location.pathname, {headers: {Accept: "application/json"}})).json();
                const rows = {};
                document.querySelectorAll("#listing tbody tr").forEach(r => { rows[r.dataset.name] = r.dataset.mtime; });
                return doc.entries.map(e => [e.name, String(Math.round(e.mtime)), rows[e.name]]);
            }""")
            assert len(shown) == 7 and all(script == server for _, script, server in shown), shown
    finally:
        page.close()


def test_names_shown_alike_keep_one_order_both_ways(tmp_path, browser):
    """Two names that are not UTF-8 may show alike (``a\\ufffd``); the script cannot tell them
    apart and keeps their order on a click (a stable sort), so the server must order them the same
    way whichever way the column goes: by the name on the disk, ascending, always."""
    root = os.fsencode(tmp_path)
    for raw in (b"a\xfe", b"a\xff", b"a\xfd", b"b", b"a"):
        with open(os.path.join(root, raw), "wb") as f:
            f.write(b"x")
    page = browser.new_page()
    try:
        with Server(tmp_path) as srv:
            page.goto(f"{srv.url}/?sort=name&order=desc")
            server_desc = _rows(page)
            page.goto(f"{srv.url}/?sort=name&order=asc")
            server_asc = _rows(page)
            assert [h for _, h in server_asc] == ["a", "a%FD", "a%FE", "a%FF", "b"]
            page.click("th[data-col=name] a")                    # the script: descending
            assert _rows(page) == server_desc
            page.click("th[data-col=name] a")
            assert _rows(page) == server_asc
            page.goto(f"{srv.url}/?sort=name&order=desc")        # from the server's descending page
            page.click("th[data-col=name] a")                    # the script: ascending
            assert _rows(page) == server_asc
    finally:
        page.close()


def test_lower_casing_of_the_browsers_unicode_is_not_the_servers(tmp_path, browser):
    """Python lower-cases with the Unicode of its build (3.11: 14.0), the browser with its own
    (Chromium: 17): ``\\ua7cb`` (Unicode 16) lower-cases to ``\\u0264`` in the page only, and a
    click sorted it elsewhere than the server. Names not ASCII carry the server's lower-cased
    text (``data-fold``), so the script never lower-cases beyond ASCII itself."""
    names = ["\ua7cb", "\u0265", "\u0263", "\u0264x", "a\ua7cb1", "a\u02652", "Éz", "éa", "b"]
    for i, n in enumerate(names):
        (tmp_path / n).write_bytes(b"x" * i)
    page = browser.new_page()
    try:
        with Server(tmp_path) as srv:
            by_name = None
            for col in ("name", "size"):
                page.goto(f"{srv.url}/?sort={col}&order=desc")
                server_desc = _rows(page)
                page.goto(f"{srv.url}/?sort={col}&order=asc")
                server_asc = _rows(page)
                by_name = by_name or [n for n, _ in server_asc]
                page.click(f"th[data-col={col}] a")
                assert _rows(page) == server_desc, col
                page.click(f"th[data-col={col}] a")
                assert _rows(page) == server_asc, col
            # The rows the script builds from the JSON listing sort alike too.
            order = page.evaluate("""async () => {
                const doc = await (await fetch(location.pathname, {headers: {Accept: "application/json"}})).json();
                return doc.entries.map(e => [e.name, e.fold]);
            }""")
            assert [n for n, _ in order] == by_name
            assert dict(order)["\ua7cb"] == "\ua7cb" and dict(order)["b"] is None
    finally:
        page.close()


def test_fold_is_the_text_the_key_compares():
    """``natural.fold`` (what the page is given for a name not ASCII) splits into the same pieces as
    the name, each text piece lower-cased as ``key`` lower-cases it."""
    import re

    from hypothesis import given, strategies as st

    from zcopy.http.natural import fold, key
    split = re.compile(r"([0-9]+)").split

    @given(st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), max_size=16))
    def check(name):
        a, b = split(name), split(fold(name))
        assert len(a) == len(b)
        assert all(x == y if i % 2 else x.lower() == y for i, (x, y) in enumerate(zip(a, b)))
        assert key(fold(name))[:-len(fold(name))] == key(name)[:-len(name)]
    check()


def _pipeline(port: int, raws: list[bytes], head_only: list[bool]) -> list[tuple]:
    from tests.serverutil import connect, read_response
    with connect(port) as s:
        s.sendall(b"".join(raws))
        return [read_response(s, head_only=h) for h in head_only]


@pytest.mark.parametrize("size", [100, 200_000])      # held in memory, and sent from the file
def test_one_files_memo_under_every_framing(tmp_path, size):
    """The entry's memo is keyed by (Date line, close, version); HEAD and GET, a Range, an If-Range
    that fails and HTTP/1.0 all meet it within one second, in one pipelined burst, each with its own
    framing and its own bytes (an HTTP/1.1 status line to 1.0 too, RFC 9110 2.5)."""
    data = os.urandom(size)
    (tmp_path / "f.bin").write_bytes(data)
    with Server(tmp_path) as srv:
        h = b"Host: t\r\n"
        raws = [b"GET /f.bin HTTP/1.1\r\n" + h + b"\r\n",
                b"HEAD /f.bin HTTP/1.1\r\n" + h + b"\r\n",
                b"GET /f.bin HTTP/1.0\r\nConnection: keep-alive\r\n" + h + b"\r\n",
                b"GET /f.bin HTTP/1.1\r\nRange: bytes=10-19\r\n" + h + b"\r\n",
                b'GET /f.bin HTTP/1.1\r\nRange: bytes=10-19\r\nIf-Range: "other"\r\n' + h + b"\r\n",
                b"HEAD /f.bin HTTP/1.0\r\nConnection: keep-alive\r\n" + h + b"\r\n",
                b"GET /f.bin HTTP/1.1\r\n" + h + b"\r\n",
                b"GET /f.bin HTTP/1.1\r\nConnection: close\r\n" + h + b"\r\n"]
        got = _pipeline(srv.port, raws, [False, True, False, False, False, True, False, False])
        want = [(200, "HTTP/1.1", None, data), (200, "HTTP/1.1", None, b""),
                (200, "HTTP/1.1", "keep-alive", data), (206, "HTTP/1.1", None, data[10:20]),
                (200, "HTTP/1.1", None, data), (200, "HTTP/1.1", "keep-alive", b""),
                (200, "HTTP/1.1", None, data), (200, "HTTP/1.1", "close", data)]
        for (status, headers, body, head), (w_status, w_version, w_conn, w_body) in zip(got, want):
            assert status == w_status and head.startswith(w_version.encode()), head
            assert headers.get("connection") == w_conn, head
            assert body == w_body
            if status == 200:
                assert headers["content-length"] == str(size)


def test_no_memo_answers_for_a_file_replaced_deleted_or_written_elsewhere(tmp_path):
    """The answer memo and the entry's memo, after each way a file can change under them: renamed
    over, deleted, written through a hard link made after it was cached (its folder's watch sees
    nothing: bounded by the re-walk, RESOLVE_TTL), and written by another worker (``--workers 2``:
    the shared write generation)."""
    from tests.serverutil import connect, get, read_response, wait_for
    (tmp_path / "d").mkdir()
    (tmp_path / "elsewhere").mkdir()
    f = tmp_path / "d" / "f.txt"
    f.write_bytes(b"one")
    with Server(tmp_path, "--workers", "2", "--allow-write", "--no-fsync") as srv:
        for _ in range(3):
            assert get(srv.port, "/d/f.txt")[2] == b"one"
        (tmp_path / "d" / "new").write_bytes(b"two!")
        os.rename(tmp_path / "d" / "new", f)                         # renamed over
        assert get(srv.port, "/d/f.txt")[2] == b"two!"
        os.link(f, tmp_path / "elsewhere" / "link.txt")              # a link made after the cache
        with open(tmp_path / "elsewhere" / "link.txt", "r+b") as w:  # written through it
            w.write(b"THREE")
        wait_for(lambda: get(srv.port, "/d/f.txt")[2] == b"THREE", what="the link's write served")
        os.unlink(tmp_path / "elsewhere" / "link.txt")
        for i in range(6):                                           # each worker's memo, then a PUT
            body = f"put {i}".encode()
            with connect(srv.port) as s:
                s.sendall(b"PUT /d/f.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: "
                          + str(len(body)).encode() + b"\r\n\r\n" + body)
                assert read_response(s)[0] == 204
            for _ in range(6):                                       # (new connections: either worker)
                assert get(srv.port, "/d/f.txt")[2] == body
        f.unlink()
        assert get(srv.port, "/d/f.txt")[0] == 404


def test_a_replaced_files_fd_number_never_sends_another_files_bytes(tmp_path):
    """Each replacement retires the entry and closes its fd, whose number the next open takes (the
    other file's, or the new one's): a memo still holding the old reply would send those bytes. One
    keep-alive connection asks, between replacements, for both files, pipelined."""
    from tests.serverutil import connect, read_response
    (tmp_path / "other.bin").write_bytes(b"O" * 150_000)
    with Server(tmp_path, "--workers", "1") as srv, connect(srv.port) as s:
        for i in range(40):
            data = bytes([65 + i % 26]) * (100_000 + i * 997)
            (tmp_path / "new").write_bytes(data)
            os.rename(tmp_path / "new", tmp_path / "f.bin")
            if i % 3 == 0:
                os.rename(tmp_path / "other.bin", tmp_path / "o2")        # the other one's fd goes too
                os.rename(tmp_path / "o2", tmp_path / "other.bin")
            s.sendall(b"GET /f.bin HTTP/1.1\r\nHost: t\r\n\r\nGET /other.bin HTTP/1.1\r\nHost: t\r\n\r\n"
                      b"GET /f.bin HTTP/1.1\r\nHost: t\r\n\r\n")
            assert read_response(s)[2] == data
            assert read_response(s)[2] == b"O" * 150_000
            assert read_response(s)[2] == data


def test_a_completing_append_whose_if_no_longer_holds_never_becomes_the_file(tmp_path):
    """The If header of the append that completes a resumable upload names the target's ETag; the
    target is replaced meanwhile (its ETag is another): 412 at once, the target is the other
    writer's, the upload stays where it was and completes later with the new ETag. A malformed If
    is a 400 with the same guarantees; the upload's bytes never become the file."""
    from test_resumable_tus import create, head, patch

    from tests.serverutil import get
    root = tmp_path / "root"
    (root / "in").mkdir(parents=True)
    target = root / "in" / "t.txt"
    target.write_bytes(b"old!")
    with Server(root, "--allow-write", "--state-dir", str(tmp_path / "state")) as s:
        p = s.port
        etag = get(p, "/in/t.txt")[1]["etag"]
        loc = create(p, "/in/", "t.txt", 4)
        assert patch(p, loc, 0, b"ab")[0] == 204
        (root / "in" / "theirs").write_bytes(b"THEIRS")
        os.rename(root / "in" / "theirs", target)                  # replaced under the upload
        for bad in (f"If: ([{etag}])\r\n", f"If: <http://t/in/t.txt> ([{etag}])\r\n", "If: ([\r\n",
                    "If: <http://t/in/t.txt>\r\n", "If: (<no-token> [\"x\"]\r\n"):
            status = patch(p, loc, 2, b"cd", bad)[0]
            assert status in (400, 412), (bad, status)
            assert target.read_bytes() == b"THEIRS"
            assert head(p, loc)[1]["upload-offset"] == "2"
        new = get(p, "/in/t.txt")[1]["etag"]
        assert new != etag
        assert patch(p, loc, 2, b"cd", f"If: <http://t/in/t.txt> ([{new}])\r\n")[0] == 204
        assert target.read_bytes() == b"abcd"


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace")
def test_a_lock_taken_while_the_completing_append_syncs_is_met_at_the_commit(tmp_path):
    """The lock check of the append that completes a resumable upload ran before that append's
    fdatasync (seconds for a big upload), the commit after it: a LOCK granted to another client
    meanwhile was overwritten. strace holds the fdatasync of the partial file; a LOCK of the
    target is granted meanwhile; the commit must then meet it (423), the locked file untouched."""
    import threading

    from test_resumable_tus import create, head, patch
    from test_serve_open_offloop import _Delay, _stopped_threads

    from tests.serverutil import wait_for
    from resumableutil import exchange
    fdatasync = {"x86_64": 75, "aarch64": 83}.get(os.uname().machine, 75)
    root = tmp_path / "root"
    (root / "in").mkdir(parents=True)
    lockinfo = (b'<D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/>'
                b"</D:locktype><D:owner>other</D:owner></D:lockinfo>")
    with Server(root, "--workers", "1", "--allow-write", "--state-dir", str(tmp_path / "state")) as srv:
        p = srv.port
        worker = srv.worker_pids()[0]
        loc = create(p, "/in/", "l.txt", 4)
        assert patch(p, loc, 0, b"ab")[0] == 204
        partial, = os.listdir(root / ".zcopy" / "uploads")
        delay = _Delay(worker, str(root / ".zcopy" / "uploads" / partial), "fdatasync")
        try:
            results: list = []
            client = threading.Thread(target=lambda: results.append(patch(p, loc, 2, b"cd")[0]))
            client.start()
            wait_for(lambda: _stopped_threads(worker, fdatasync), what="the partial's fdatasync to be held")
            (status, h, _), = exchange(p, f"LOCK /in/l.txt HTTP/1.1\r\nHost: t\r\nTimeout: Second-60\r\n"
                                          f"Content-Length: {len(lockinfo)}\r\n", lockinfo)
            lock_status = status
            client.join(timeout=30)
        finally:
            delay.stop()
        assert lock_status == 201
        assert results == [423]
        assert (root / "in" / "l.txt").read_bytes() == b""       # the lock-null file, untouched
        assert head(p, loc)[1]["upload-offset"] in ("2", "4")


def test_precompressed_siblings_changing_under_a_cached_entry(tmp_path):
    """A watched file's .gz/.br siblings replaced, deleted and added while the entry (and its memos)
    is cached: the next request sends what is on the disk now, with its own length."""
    from tests.serverutil import get
    (tmp_path / "p.txt").write_bytes(b"plain " * 50)
    (tmp_path / "p.txt.gz").write_bytes(b"gz one")
    gz, br = {"Accept-Encoding": "gzip"}, {"Accept-Encoding": "br, gzip"}
    with Server(tmp_path, "--workers", "1") as srv:
        for _ in range(2):
            assert get(srv.port, "/p.txt", gz)[2] == b"gz one"
            assert get(srv.port, "/p.txt")[2] == b"plain " * 50
        (tmp_path / "n").write_bytes(b"gz number two")
        os.rename(tmp_path / "n", tmp_path / "p.txt.gz")
        status, headers, body = get(srv.port, "/p.txt", gz)
        assert body == b"gz number two" and headers["content-length"] == "13"
        (tmp_path / "p.txt.br").write_bytes(b"br!")
        assert get(srv.port, "/p.txt", br)[2] == b"br!"
        os.unlink(tmp_path / "p.txt.gz")
        os.unlink(tmp_path / "p.txt.br")
        status, headers, body = get(srv.port, "/p.txt", br)
        assert body == b"plain " * 50 and "content-encoding" not in headers


def test_a_lock_taken_while_a_put_body_arrives_is_met_at_the_commit(tmp_path):
    """A PUT's lock check ran once, before its body: a LOCK granted to another client while the
    body arrived (or synced) was overwritten by the rename. The check now runs again on the
    commit's thread, right before the rename: 423, the locked file as it was, no temp left."""
    import socket

    from tests.serverutil import connect, read_response

    root = tmp_path / "root"
    (root / "in").mkdir(parents=True)
    (root / "in" / "f.txt").write_bytes(b"old")
    lockinfo = (b'<D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/>'
                b"</D:locktype><D:owner>other</D:owner></D:lockinfo>")
    with Server(root, "--workers", "1", "--allow-write", "--state-dir", str(tmp_path / "state")) as srv:
        with connect(srv.port) as put:
            put.sendall(b"PUT /in/f.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n"
                        b"Expect: 100-continue\r\n\r\n")
            put.settimeout(10)
            assert put.recv(100).startswith(b"HTTP/1.1 100")    # its checks passed: the body may come
            put.sendall(b"new12")
            with connect(srv.port) as other:
                other.sendall(b"LOCK /in/f.txt HTTP/1.1\r\nHost: t\r\nTimeout: Second-60\r\n"
                              b"Content-Length: %d\r\n\r\n" % len(lockinfo) + lockinfo)
                assert read_response(other)[0] == 200               # a lock on an existing file
            put.sendall(b"bytes")
            status, _, body, _ = read_response(put)
        assert status == 423, body
        assert (root / "in" / "f.txt").read_bytes() == b"old"
        assert [n for n in os.listdir(root / "in") if n != "f.txt"] == []


def test_a_same_size_rewrite_with_its_old_mtime_put_back_is_a_new_etag(tmp_path):
    """An unwatched file (a second hard link makes it so) is checked by one fstatat per request.
    Rewritten in place with the same size and its old mtime put back (``touch -r``, ``cp -p``),
    only its ctime moves: the cached entry, keyed without the ctime, kept the old ETag, so a
    client holding it was told 304 for bytes it had never seen."""
    from tests.serverutil import get

    f = tmp_path / "f.txt"
    f.write_bytes(b"first version")
    os.link(f, tmp_path / "other-name.txt")            # nlink 2: not trusted to the folder's watch
    st = f.stat()
    with Server(tmp_path, "--workers", "1") as srv:
        status, headers, body = get(srv.port, "/f.txt")
        old = headers["etag"]
        assert (status, body) == (200, b"first version")
        assert get(srv.port, "/f.txt", {"If-None-Match": old})[0] == 304
        with open(f, "r+b") as w:                       # same inode, same size
            w.write(b"other version")
        os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
        assert f.stat().st_mtime_ns == st.st_mtime_ns and f.stat().st_size == st.st_size
        status, headers, body = get(srv.port, "/f.txt", {"If-None-Match": old})
        assert (status, body) == (200, b"other version")
        assert headers["etag"] != old
