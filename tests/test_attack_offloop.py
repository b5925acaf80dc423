"""Attacks on the off-loop lookups (OpenFileCache.find / resolve / with_entries) with real
sockets, files and a traced worker: what a request is answered while its file changes."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time

import pytest

from serverutil import Server, get, sockets_of, wait_for
from test_serve_open_offloop import _traced

pytestmark = pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace")


class _Trace:
    """strace attached to every thread of ``pid``, recording the given calls."""

    def __init__(self, pid: int, calls: str) -> None:
        self.pid = pid
        self.proc = subprocess.Popen(["strace", "-f", "-qq", "-e", f"trace={calls}", "-p", str(pid)],
                                     stderr=subprocess.PIPE, text=True)
        wait_for(lambda: _traced(pid), what="strace to attach")

    def stop(self) -> list[str]:
        self.proc.terminate()
        _, err = self.proc.communicate(timeout=20)
        return err.splitlines()


def _on_loop(lines: list[str], pid: int, needle: str) -> list[str]:
    """The lines made by the worker's main thread (the event loop) that name ``needle``."""
    out = []
    for line in lines:
        m = re.match(r"\[pid\s+(\d+)\]", line)
        tid = int(m.group(1)) if m else pid
        if tid == pid and needle in line:
            out.append(line)
    return out


def test_a_file_hard_linked_elsewhere_is_never_walked_on_the_loop(tmp_path):
    """A served, watched file gets a second hard link in a folder nobody watches (no event in
    its own folder). The background re-walk (REFRESH_AT) finds it unchanged but no longer
    watchable (nlink 2): from then on each request checks its name. That check must be the
    fstatat in the folder the walk opened, never a walk from ROOT on the event loop."""
    (tmp_path / "deep").mkdir()
    (tmp_path / "elsewhere").mkdir()
    body = os.urandom(3000)
    (tmp_path / "deep" / "f.bin").write_bytes(body)
    with Server(tmp_path, "--workers", "1") as srv:
        worker = srv.worker_pids()[0]
        assert get(srv.port, "/deep/f.bin")[2] == body         # cached, watched (nlink 1)
        os.link(tmp_path / "deep" / "f.bin", tmp_path / "elsewhere" / "g.bin")
        trace = _Trace(worker, "openat,openat2,newfstatat,statx")
        try:
            # Past REFRESH_AT the entry answers and is walked again off the loop, which
            # finds nlink 2; keep asking until well past RESOLVE_TTL.
            end = time.monotonic() + 2.5
            while time.monotonic() < end:
                status, _, got = get(srv.port, "/deep/f.bin")
                assert (status, got) == (200, body)
                time.sleep(0.1)
        finally:
            lines = trace.stop()
    # The walk from ROOT opens "deep" (openat2 / openat of the folder): never on the loop.
    assert _on_loop(lines, worker, '"deep') == [], (worker, _on_loop(lines, worker, '"deep')[:2])


def test_a_shared_lookup_whose_file_goes_before_it_settles_answers_every_waiter(tmp_path):
    """Two requests share one off-loop lookup of an uncached file. The first (a GET whose If
    header names the file's ETag: ``with_entries``) is answered first and finds the file gone
    (its entry is dropped, its fd closed); the second is then answered from the entry the
    lookup found. It must get the bytes the open saw or a 404, never a reply sent from a
    closed (or reused) fd. (A GET no longer looks up its If header's URLs, so this exact path
    is closed twice now: the responder's ``_dropped`` guard stays for any answer that drops.)"""
    from test_serve_open_offloop import _Delay, _stopped_threads
    import threading

    from serverutil import connect, read_response

    body = os.urandom(200_000)
    (tmp_path / "a.bin").write_bytes(body)
    (tmp_path / "other").mkdir()
    os.link(tmp_path / "a.bin", tmp_path / "other" / "b.bin")     # nlink 2: checked per request
    with Server(tmp_path, "--workers", "1") as srv:
        worker = srv.worker_pids()[0]
        delay = _Delay(worker, "a.bin.br")          # the sibling's open, after the file's fstat
        results: dict = {}
        try:
            def ask(key: str, extra: bytes) -> None:
                with connect(srv.port) as s:
                    s.sendall(b"GET /a.bin HTTP/1.1\r\nHost: t\r\n" + extra + b"Connection: close\r\n\r\n")
                    try:
                        status, _, got, _ = read_response(s)
                        results[key] = (status, got)
                    except Exception as exc:        # a connection closed mid-reply
                        results[key] = ("broken", repr(exc))
            first = threading.Thread(target=ask, args=("if", b'If: (["x"])\r\n'))
            first.start()
            wait_for(lambda: _stopped_threads(worker), what="the sibling's open to be held")
            sockets = len(sockets_of(worker))
            second = threading.Thread(target=ask, args=("plain", b""))
            second.start()
            # The second request reaches the worker (its socket) and joins the lookup.
            wait_for(lambda: len(sockets_of(worker)) > sockets, what="the second connection")
            time.sleep(0.2)     # (its head is read in the accept's turn: nothing to wait on)
            os.unlink(tmp_path / "a.bin")
            first.join(timeout=30)
            second.join(timeout=30)
        finally:
            delay.stop()
        # (since GET no longer looks up its If header's URLs, the first is answered from the entry
        # too; before, it found the file gone: 404, and the second's reply came from the closed fd)
        assert results["if"] in ((200, body), (404, results["if"][1])), results["if"][:1]
        assert results["plain"] in ((200, body), (404, results["plain"][1])), results["plain"][:1]
        assert get(srv.port, "/other/b.bin")[2] == body         # the worker carries on


def test_an_account_without_rights_never_learns_whether_a_file_exists(tmp_path):
    """Holds: an account (and anonymous) that may not read a folder is refused the same way for a
    file there that is not cached, one that is (read by an account that may), one that does not
    exist, and one turned into a folder meanwhile, GET and HEAD alike: the off-loop lookup is made
    only after the rights said yes."""
    import base64

    from serverutil import request
    from zcopy.accounts import passwords

    fast = dict(time_cost=1, memory_kib=passwords.MIN_MEMORY_KIB)
    root = tmp_path / "root"
    (root / "secret").mkdir(parents=True)
    (root / "pub").mkdir()
    (root / "secret" / "cold.txt").write_bytes(b"c")
    (root / "secret" / "hot.txt").write_bytes(b"h")
    users = tmp_path / "users.txt"
    users.write_text(f"alice {passwords.make('a-pw', **fast)} /pub:r\n"
                     f"reader {passwords.make('r-pw', **fast)} /:r\n* - /pub:r\n")

    def ask(port, method, path, who):
        auth = "" if who is None else "Authorization: Basic " + base64.b64encode(who.encode()).decode() + "\r\n"
        raw = f"{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{auth}\r\n".encode()
        return request(port, raw, head_only=method == "HEAD")[0]

    with Server(root, "--users", str(users), "--state-dir", str(tmp_path / "state"), "--workers", "1") as srv:
        assert ask(srv.port, "GET", "/secret/hot.txt", "reader:r-pw") == 200       # cached now
        os.unlink(root / "secret" / "cold.txt")
        os.mkdir(root / "secret" / "cold.txt")          # (and one that is a folder now)
        (root / "secret" / "cold2.txt").write_bytes(b"c")
        for who, refused in (("alice:a-pw", 403), (None, 401)):
            for method in ("GET", "HEAD"):
                got = {p: ask(srv.port, method, p, who)
                       for p in ("/secret/hot.txt", "/secret/cold2.txt", "/secret/none.txt", "/secret/cold.txt")}
                assert set(got.values()) == {refused}, (who, method, got)
        assert ask(srv.port, "GET", "/secret/cold2.txt", "reader:r-pw") == 200


def test_waiters_of_a_lookup_that_runs_out_of_fds_are_all_answered_and_served_after(tmp_path):
    """Holds: three keep-alive connections (one with a second request pipelined) wait for one
    held open of an uncached file; the worker runs out of fds before the open goes on. Every
    request is answered, in order, 503 with Retry-After (the cache has nothing to give back),
    the connections stay usable, and once fds are back the same connections get the file."""
    import resource

    from test_serve_open_offloop import _Delay, _lowest_free_fd, _stopped_threads

    from serverutil import connect, read_response

    data = os.urandom(50_000)
    (tmp_path / "x.bin").write_bytes(data)
    with Server(tmp_path, "--workers", "1") as srv:
        worker = srv.worker_pids()[0]
        socks = [connect(srv.port) for _ in range(3)]
        soft, hard = resource.prlimit(worker, resource.RLIMIT_NOFILE)
        delay = _Delay(worker, "x.bin")
        try:
            ask = b"GET /x.bin HTTP/1.1\r\nHost: t\r\n\r\n"
            socks[0].sendall(ask + ask)                 # (a pipelined second one)
            wait_for(lambda: _stopped_threads(worker), what="the open to be held")
            for s in socks[1:]:                         # (they join it, or start their own: all answered)
                s.sendall(ask)
            resource.prlimit(worker, resource.RLIMIT_NOFILE, (_lowest_free_fd(worker), hard))
            try:
                answers = [read_response(s) for s in socks] + [read_response(socks[0])]
            finally:
                resource.prlimit(worker, resource.RLIMIT_NOFILE, (soft, hard))
        finally:
            delay.stop()
        for status, headers, body, _ in answers:
            assert status == 503 and headers.get("retry-after") == "1", (status, headers)
        for s in socks:                                 # the same connections, fds back
            s.sendall(b"GET /x.bin HTTP/1.1\r\nHost: t\r\n\r\n")
            status, _, body, _ = read_response(s)
            assert (status, body == data) == (200, True)
            s.close()
        assert srv.worker_pids() == [worker]


def test_an_if_header_etag_is_compared_with_the_file_as_it_is_when_the_lookups_are_back(tmp_path):
    """A PUT's If header names two resources (RFC 4918 10.4: true when either list is): /a.txt,
    cached, with its ETag, and /other.txt, not cached, whose open strace holds. /a.txt is
    replaced meanwhile. When the lookups are back the condition must be compared with /a.txt as
    it is then (412), not with the entry found from memory before the wait: that stale ETag
    let the PUT overwrite the replacement (a lost update, what the If header exists to stop)."""
    import threading

    from test_serve_open_offloop import _Delay, _stopped_threads

    from serverutil import connect, read_response

    (tmp_path / "a.txt").write_text("v1")
    (tmp_path / "other.txt").write_text("o")
    with Server(tmp_path, "--workers", "1", "--allow-write", "--no-fsync") as srv:
        worker = srv.worker_pids()[0]
        etag = get(srv.port, "/a.txt")[1]["etag"]          # /a.txt cached (and watched)
        delay = _Delay(worker, "other.txt")
        results: list = []
        try:
            def put() -> None:
                with connect(srv.port) as s:
                    s.sendall(b"PUT /a.txt HTTP/1.1\r\nHost: t\r\n"
                              b"If: <http://t/a.txt> ([" + etag.encode() + b"]) <http://t/other.txt> ([\"nope\"])\r\n"
                              b"Content-Length: 3\r\nConnection: close\r\n\r\nput")
                    results.append(read_response(s)[0])
            client = threading.Thread(target=put)
            client.start()
            wait_for(lambda: _stopped_threads(worker), what="the open of other.txt to be held")
            (tmp_path / "new.tmp").write_text("v2, someone else's")
            os.rename(tmp_path / "new.tmp", tmp_path / "a.txt")
            # (the loop reads the rename's event while the open is held; a GET shows it did)
            wait_for(lambda: get(srv.port, "/a.txt")[2] == b"v2, someone else's", what="the replacement served")
            client.join(timeout=30)
        finally:
            delay.stop()
        assert results == [412]
        assert (tmp_path / "a.txt").read_text() == "v2, someone else's"
        etag = get(srv.port, "/a.txt")[1]["etag"]          # the same If, with the current ETag: holds
        with connect(srv.port) as s:
            s.sendall(b"PUT /a.txt HTTP/1.1\r\nHost: t\r\n"
                      b"If: <http://t/a.txt> ([" + etag.encode() + b"]) <http://t/other.txt> ([\"nope\"])\r\n"
                      b"Content-Length: 3\r\nConnection: close\r\n\r\nput")
            assert read_response(s)[0] == 204
        assert (tmp_path / "a.txt").read_text() == "put"


def test_a_keep_alive_sign_in_does_not_outlive_the_removal_of_its_account(tmp_path):
    """Holds: a connection signed in (its credentials remembered for its keep-alive requests,
    ``Gate.identify``) stops being that account once a reload of the users file removed it:
    the same connection's next requests are 401, for a cached file and an uncached one."""
    import base64

    from serverutil import connect, read_response
    from zcopy.accounts import passwords

    fast = dict(time_cost=1, memory_kib=passwords.MIN_MEMORY_KIB)
    root = tmp_path / "root"
    root.mkdir()
    (root / "hot.txt").write_bytes(b"h")
    (root / "cold.txt").write_bytes(b"c")
    users = tmp_path / "users.txt"
    keep = f"keeper {passwords.make('k-pw', **fast)} /:r\n"
    users.write_text(f"gone {passwords.make('g-pw', **fast)} /:r\n" + keep)
    auth = b"Authorization: Basic " + base64.b64encode(b"gone:g-pw") + b"\r\n"
    with Server(root, "--users", str(users), "--state-dir", str(tmp_path / "state"), "--workers", "1") as srv:
        with connect(srv.port) as s:
            s.sendall(b"GET /hot.txt HTTP/1.1\r\nHost: t\r\n" + auth + b"\r\n")
            assert read_response(s)[0] == 200
            users.write_text(keep)
            deadline = time.monotonic() + 10
            while True:
                s.sendall(b"GET /hot.txt HTTP/1.1\r\nHost: t\r\n" + auth + b"\r\n")
                status = read_response(s)[0]
                if status == 401:
                    break
                assert status == 200 and time.monotonic() < deadline, "the removed account still reads"
                time.sleep(0.1)
            s.sendall(b"GET /cold.txt HTTP/1.1\r\nHost: t\r\n" + auth + b"\r\n")
            assert read_response(s)[0] == 401


def test_the_connection_that_started_a_shared_lookup_leaving_early_leaves_the_others_served(tmp_path):
    """Holds: the connection whose request started an off-loop lookup closes while the open is
    held; two others that joined it (one a HEAD, one a GET pipelined behind a second GET of
    another uncached file) are answered, in order, with the right bytes, and no fd of the file
    is left beyond the cache's one."""
    from test_serve_open_offloop import _Delay, _fds_to, _stopped_threads

    from serverutil import connect, read_response

    data = os.urandom(70_000)
    other = os.urandom(5_000)
    (tmp_path / "s.bin").write_bytes(data)
    (tmp_path / "t.bin").write_bytes(other)
    with Server(tmp_path, "--workers", "1") as srv:
        worker = srv.worker_pids()[0]
        delay = _Delay(worker, "s.bin")
        try:
            first = connect(srv.port)
            first.sendall(b"GET /s.bin HTTP/1.1\r\nHost: t\r\n\r\n")
            wait_for(lambda: _stopped_threads(worker), what="the open to be held")
            head = connect(srv.port)
            head.sendall(b"HEAD /s.bin HTTP/1.1\r\nHost: t\r\n\r\n")
            piped = connect(srv.port)
            piped.sendall(b"GET /s.bin HTTP/1.1\r\nHost: t\r\n\r\nGET /t.bin HTTP/1.1\r\nHost: t\r\n\r\n")
            first.close()
            status, headers, body, _ = read_response(head, head_only=True)
            assert (status, headers["content-length"], body) == (200, str(len(data)), b"")
            status, _, body, _ = read_response(piped)
            assert (status, body == data) == (200, True)
            status, _, body, _ = read_response(piped)
            assert (status, body == other) == (200, True)
            head.close()
            piped.close()
        finally:
            delay.stop()
        wait_for(lambda: _fds_to(worker, str(tmp_path / "s.bin")) <= 1, what="at most the cache's fd")
        assert get(srv.port, "/s.bin")[2] == data


def test_an_if_header_with_lock_tokens_only_opens_nothing_on_the_loop(tmp_path):
    """A WebDAV client holding a lock sends its token in an If header without any ETag
    (``If: (<token>)``); no entry is looked up off the loop for it (``Dav.if_etag_urls`` names
    only clauses with ETags), so the check must not ask for the file's ETags at all: it did, with
    ``OpenFileCache.lookup``, a walk and an open of an uncached file on the event loop."""
    from serverutil import request

    (tmp_path / "doc.txt").write_text("v1")
    (tmp_path / "hot.txt").write_text("hot")
    with Server(tmp_path, "--workers", "1", "--allow-write", "--no-fsync") as srv:
        worker = srv.worker_pids()[0]
        assert get(srv.port, "/hot.txt")[2] == b"hot"
        trace = _Trace(worker, "openat,openat2,newfstatat,statx")
        try:
            for value in (b"(Not <urn:uuid:0-no-such-lock>)", b"<http://t/doc.txt> (Not <urn:uuid:0-none>)"):
                raw = (b"PUT /doc.txt HTTP/1.1\r\nHost: t\r\nIf: " + value +
                       b"\r\nContent-Length: 2\r\nConnection: close\r\n\r\nv2")
                assert request(srv.port, raw)[0] == 204
        finally:
            lines = trace.stop()
    assert (tmp_path / "doc.txt").read_text() == "v2"
    assert _on_loop(lines, worker, '"doc.txt"') == [], _on_loop(lines, worker, '"doc.txt"')[:3]


def test_an_if_header_naming_a_malformed_url_is_a_bad_request(tmp_path):
    """``If: <http://[bad/x> (["e"])`` parses (the tag is any URL) but the URL does not
    (urlsplit: "Invalid IPv6 URL"). ``if_etag_urls`` skipped it; the check raised ValueError out
    of the responder: a 500 "internal error" (a traceback, counted as a server bug). It is the
    client's error: 400, and the file is left alone."""
    from serverutil import request

    (tmp_path / "doc.txt").write_text("v1")
    with Server(tmp_path, "--workers", "1", "--allow-write", "--no-fsync") as srv:
        for value in (b'<http://[bad/doc.txt> (["e"])', b"<http://[bad/doc.txt> (<urn:uuid:0-x>)"):
            raw = (b"PUT /doc.txt HTTP/1.1\r\nHost: t\r\nIf: " + value +
                   b"\r\nContent-Length: 2\r\nConnection: close\r\n\r\nv2")
            assert request(srv.port, raw)[0] == 400, value
        assert get(srv.port, "/doc.txt")[2] == b"v1"


@pytest.mark.parametrize("tag", [b"<foo>", b"<http://t/%00x>", b"<http://t/../../etc/hostname>", b"<http://t/a/../../x>",
                                 b"<http://t/.zcopy/x>", b"<http://t/" + b"a/" * 3000 + b">"])
def test_if_header_tags_naming_odd_urls_are_answered_not_crashed(tmp_path, tag):
    """Holds (after the fix above): the URL an If header's tag names is looked up off the loop like a
    request's; odd ones (relative, a NUL, climbing out, reserved, very deep) make the condition
    false (412) or the request bad (400), never a 500 or a dropped connection, and the worker lives."""
    from serverutil import request

    (tmp_path / "doc.txt").write_text("v1")
    with Server(tmp_path, "--workers", "1", "--allow-write", "--no-fsync") as srv:
        worker = srv.worker_pids()[0]
        raw = (b"PUT /doc.txt HTTP/1.1\r\nHost: t\r\nIf: " + tag + b' (["e"])'
               b"\r\nContent-Length: 2\r\nConnection: close\r\n\r\nv2")
        assert request(srv.port, raw)[0] in (400, 412)
        assert get(srv.port, "/doc.txt")[2] == b"v1"
        assert srv.worker_pids() == [worker]


def test_an_if_header_is_no_etag_oracle_for_a_file_outside_root(tmp_path):
    """Holds: a tag climbing out of ROOT (``..``, encoded or not) names a path beneath ROOT (or
    nothing): the ETag of a file outside ROOT, which the If header compares, never matches."""
    from serverutil import request
    from zcopy import http

    root = tmp_path / "root"
    root.mkdir()
    (root / "doc.txt").write_text("v1")
    (tmp_path / "out.txt").write_text("outside")
    etag = http.make_etag(os.stat(tmp_path / "out.txt")).encode()
    with Server(root, "--workers", "1", "--allow-write", "--no-fsync") as srv:
        for tag in (b"<http://t/../out.txt>", b"<http://t/%2e%2e/out.txt>", b"<http://t/doc.txt/../../out.txt>",
                    b"<http://t/%2e%2e%2fout.txt>"):
            raw = (b"PUT /doc.txt HTTP/1.1\r\nHost: t\r\nIf: " + tag + b" ([" + etag + b"])"
                   b"\r\nContent-Length: 2\r\nConnection: close\r\n\r\nv2")
            assert request(srv.port, raw)[0] in (400, 412), tag
        assert get(srv.port, "/doc.txt")[2] == b"v1"
        # (the same condition, with the ETag computed the same way for a file inside, holds)
        inside = http.make_etag(os.stat(root / "doc.txt")).encode()
        raw = (b"PUT /doc.txt HTTP/1.1\r\nHost: t\r\nIf: <http://t/doc.txt> ([" + inside + b"])"
               b"\r\nContent-Length: 2\r\nConnection: close\r\n\r\nv2")
        assert request(srv.port, raw)[0] == 204


def test_an_if_header_is_no_etag_oracle_for_a_file_the_account_may_not_read(tmp_path):
    """An account that may write its own folder but not read /secret sends a PUT whose If
    header names /secret/s.txt with a guessed ETag: were the condition compared with the file's
    real ETag, 204 against 412 would tell the account whether its guess (of the file's bytes,
    with content-digest ETags, or its size and mtime) is right. The If header must treat what
    the account may not read as nothing there."""
    import base64

    from serverutil import request
    from zcopy import http
    from zcopy.accounts import passwords

    fast = dict(time_cost=1, memory_kib=passwords.MIN_MEMORY_KIB)
    root = tmp_path / "root"
    (root / "secret").mkdir(parents=True)
    (root / "home").mkdir()
    (root / "secret" / "s.txt").write_text("salary: 1")
    users = tmp_path / "users.txt"
    users.write_text(f"alice {passwords.make('a-pw', **fast)} /home:rwd\n"
                     f"boss {passwords.make('b-pw', **fast)} /:rwd\n")
    auth = b"Authorization: Basic " + base64.b64encode(b"alice:a-pw") + b"\r\n"
    right = http.make_etag(os.stat(root / "secret" / "s.txt")).encode()
    with Server(root, "--users", str(users), "--state-dir", str(tmp_path / "state"), "--workers", "1",
                "--allow-write", "--no-fsync") as srv:
        said = {}
        for name, guess in (("right", right), ("wrong", b'"nope"')):
            raw = (b"PUT /home/f.txt HTTP/1.1\r\nHost: t\r\n" + auth +
                   b"If: <http://t/secret/s.txt> ([" + guess + b"])"
                   b"\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi")
            said[name] = request(srv.port, raw)[0]
        assert said["right"] == said["wrong"], said
        # (an account that may read it: the condition is compared, and holds)
        raw = (b"PUT /home/g.txt HTTP/1.1\r\nHost: t\r\nAuthorization: Basic " + base64.b64encode(b"boss:b-pw") +
               b"\r\nIf: <http://t/secret/s.txt> ([" + right + b"])"
               b"\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi")
        assert request(srv.port, raw)[0] == 201


def test_an_if_header_naming_many_files_opens_none_for_a_read_and_is_bounded_for_a_write(tmp_path):
    """An If header's ETag conditions make the server find the entries of the URLs they name (off
    the loop) before it answers. A GET does not evaluate the If header, yet anyone's GET naming
    300 files opened all 300 (and evicted the hot entries of the cache): one request, hundreds of
    opens. A read must look up none; a write naming more URLs than any client does is refused
    (400) before any is opened."""
    from test_serve_open_offloop import _fds_to

    from serverutil import request

    many = tmp_path / "many"
    many.mkdir()
    for i in range(300):
        (many / f"f{i}").write_bytes(b"x")
    (tmp_path / "doc.txt").write_text("v1")
    tags = b" ".join(b"<http://t/many/f%d> ([\"e\"])" % i for i in range(300))
    with Server(tmp_path, "--workers", "1", "--allow-write", "--no-fsync") as srv:
        worker = srv.worker_pids()[0]
        status, _, body = request(srv.port, b"GET /doc.txt HTTP/1.1\r\nHost: t\r\nIf: " + tags +
                                  b"\r\nConnection: close\r\n\r\n")
        assert (status, body) == (200, b"v1")
        assert _fds_to(worker, str(many)) == 0
        raw = (b"PUT /doc.txt HTTP/1.1\r\nHost: t\r\nIf: " + tags +
               b"\r\nContent-Length: 2\r\nConnection: close\r\n\r\nv2")
        assert request(srv.port, raw)[0] == 400
        assert _fds_to(worker, str(many)) == 0
        assert get(srv.port, "/doc.txt")[2] == b"v1"


def test_an_index_removed_while_its_open_is_held_gives_the_index_or_the_listing(tmp_path):
    """Holds: a folder URL whose index.html is opened off the loop; index.html is removed while
    the open of its sibling is held. Two requests sharing the lookup each get the index as it
    was opened or the folder's listing, whole; never a cut reply."""
    import threading

    from test_serve_open_offloop import _Delay, _stopped_threads

    from serverutil import connect, read_response

    (tmp_path / "site").mkdir()
    page = b"<h1>home</h1>" * 1000
    (tmp_path / "site" / "index.html").write_bytes(page)
    (tmp_path / "site" / "other.txt").write_text("o")
    with Server(tmp_path, "--workers", "1") as srv:
        worker = srv.worker_pids()[0]
        delay = _Delay(worker, "index.html.br")
        results: list = []
        try:
            def ask() -> None:
                with connect(srv.port) as s:
                    s.sendall(b"GET /site/ HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                    try:
                        status, _, body, _ = read_response(s)
                        results.append((status, body))
                    except Exception as exc:
                        results.append(("broken", repr(exc)))
            clients = [threading.Thread(target=ask) for _ in range(2)]
            clients[0].start()
            wait_for(lambda: _stopped_threads(worker), what="the sibling's open to be held")
            clients[1].start()
            os.unlink(tmp_path / "site" / "index.html")
            for c in clients:
                c.join(timeout=30)
        finally:
            delay.stop()
        assert len(results) == 2
        for status, body in results:
            assert status == 200 and (body == page or b"other.txt" in body), (status, body[:80])
        status, _, body = get(srv.port, "/site/")
        assert status == 200 and b"other.txt" in body and b"<h1>home</h1>" not in body
