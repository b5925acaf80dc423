"""The folder page over a real server: assets, headers that keep user files from attacking the UI,
server-side sort, the folder as a tar (zcopy.ui, zcopy.http.listing, zcopy.server.archive)."""

from __future__ import annotations

import io
import os
import re
import subprocess
import tarfile

from tests.serverutil import Server, file_fds, get
from zcopy import ui


def test_assets_cached_forever_with_etags(tmp_path):
    with Server(tmp_path) as srv:
        status, headers, page = get(srv.port, "/")
        urls = re.findall(rb'(?:href|src)="(/\.zcopy/ui/[0-9a-f]{16}/(?:app|account)\.(?:css|js))"', page)
        assert sorted(u.decode() for u in urls) == sorted(a.url for a in ui.ASSETS.values())
        for url in urls:
            status, headers, body = get(srv.port, url.decode())
            assert status == 200
            assert headers["cache-control"] == "public, max-age=31536000, immutable"
            assert headers["x-content-type-options"] == "nosniff"
            name = url.decode().rsplit("/", 1)[1]
            assert body == ui.ASSETS[name].body
            assert headers["content-type"].startswith("text/css" if name.endswith(".css") else "text/javascript")
            status, again, body = get(srv.port, url.decode(), {"If-None-Match": headers["etag"]})
            assert (status, body) == (304, b"")
        assert get(srv.port, "/.zcopy/ui/0000000000000000/app.js")[0] == 404   # only the current hash


def test_assets_and_search_answers_without_prefetch(tmp_path):
    """Replies whose body is bytes in memory (assets, search results) with prefetch off, where every
    reply of one segment is a candidate for the at-once path (which takes only file ranges)."""
    (tmp_path / "a match.txt").write_text("m")
    with Server(tmp_path, "--prefetch", "off") as srv:
        for asset in ui.ASSETS.values():
            assert get(srv.port, asset.url)[2] == asset.body
        status, _, body = get(srv.port, "/?search=match", {"Accept": "application/json"})
        assert status == 200 and b'"a match.txt"' in body


def test_page_policy_and_user_file_guards(tmp_path):
    (tmp_path / "evil.html").write_text("<script>fetch('/x',{method:'PUT'})</script>")
    (tmp_path / "pic.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    (tmp_path / "notes.txt").write_text("hello")
    with Server(tmp_path) as srv:
        status, headers, page = get(srv.port, "/")
        csp = headers["content-security-policy"]
        assert "script-src 'self'" in csp and "default-src 'none'" in csp and "unsafe-inline" not in csp
        assert headers["x-content-type-options"] == "nosniff"
        assert b"<script>" not in page and b"<style" not in page          # nothing inline to allow
        for name, sandboxed in (("evil.html", True), ("pic.svg", True), ("notes.txt", False)):
            for _ in range(2):          # the second answer comes from the cached entry: same headers
                status, headers, _body = get(srv.port, "/" + name)
                assert status == 200 and headers["x-content-type-options"] == "nosniff", name
                assert (headers.get("content-security-policy") == "sandbox") is sandboxed, name


def test_server_side_sort_without_script(tmp_path):
    for name in ("file_10", "file_2", "File_1"):
        (tmp_path / name).write_bytes(b"x" * len(name))
    (tmp_path / "sub").mkdir()
    with Server(tmp_path) as srv:
        names = lambda q: re.findall(rb'data-name="([^"]*)"', get(srv.port, "/" + q)[2])  # noqa: E731
        assert names("") == [b"sub", b"File_1", b"file_2", b"file_10"]
        assert names("?sort=name&order=desc") == [b"sub", b"file_10", b"file_2", b"File_1"]
        page = get(srv.port, "/?sort=mtime&order=desc")[2]
        assert b'data-col="mtime" aria-sort="descending"' in page
        assert b'data-write="0"' in page and b'id="pick-files"' not in page   # read-only server


def test_write_rights_decide_the_controls(tmp_path):
    with Server(tmp_path, "--allow-write", "--token", "s3cret-token-xyz") as srv:
        assert b'data-write="0"' in get(srv.port, "/")[2]                     # no token: reads only
        page = get(srv.port, "/", {"Authorization": "Bearer s3cret-token-xyz"})[2]
        assert b'data-write="1"' in page and b'id="pick-files"' in page


ODD = ["plain.txt", "sp ace & <angle>.bin", "日本語/ファイル.txt", "deep/" + "d" * 120 + "/" + "n" * 110,
       "quote\"and'apos", "empty", "new\nline", "folder/inner/x.dat"]


def test_tar_of_odd_names_equals_the_files(tmp_path, fd_guard):
    root = tmp_path / "root"
    want = {}
    for i, rel in enumerate(ODD):
        path = root / "tree" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        data = b"" if rel == "empty" else os.urandom(1000 + 7919 * i)
        path.write_bytes(data)
        want[rel] = data
    big = os.urandom(64 << 20)
    (root / "tree" / "big.bin").write_bytes(big)
    want["big.bin"] = big
    raw = os.fsencode("tree") + b"/bad\xffname"
    with open(os.path.join(os.fsencode(root), raw), "wb") as f:
        f.write(b"non-utf8")
    want[os.fsdecode(b"bad\xffname")] = b"non-utf8"
    (root / "tree" / "sub-empty").mkdir()
    os.symlink("/etc/passwd", root / "tree" / "link-out")          # never archived
    os.mkfifo(root / "tree" / "fifo")                              # nor this
    (root / "tree" / ".hidden").write_text("h")                     # nor hidden names
    with Server(root) as srv:
        status, headers, body = get(srv.port, "/tree/?download=tar")
        assert status == 200 and headers["content-type"] == "application/x-tar"
        assert int(headers["content-length"]) == len(body)
        assert headers["content-disposition"].startswith('attachment; filename="tree.tar"')
        with tarfile.open(fileobj=io.BytesIO(body), encoding="utf-8", errors="surrogateescape") as tf:
            members = tf.getmembers()
            files = {m.name: tf.extractfile(m).read() for m in members if m.isfile()}
            dirs = {m.name for m in members if m.isdir()}
        assert files == want
        assert {"sub-empty", "folder", "folder/inner", "日本語", "deep"} <= dirs
        assert all(m.isfile() or m.isdir() for m in members)
        status, _, refused = get(srv.port, "/tree/?download=zip")    # not offered (docs/ui.md)
        assert status == 400 and b"?download=tar" in refused
        head = get(srv.port, "/tree/?download=tar", method="HEAD")
        assert head[0] == 200 and int(head[1]["content-length"]) == len(body)
        pid = srv.worker_pids()[0]
        assert not [f for f in file_fds(pid) if "/tree/" in f]      # every archived file's fd closed


def test_tar_refuses_rather_than_lacks_files(tmp_path):
    """Out of fds mid-walk (the worker's RLIMIT_NOFILE lowered by prlimit): 503, not an archive that
    silently lacks files; more files than one reply may hold open: 413. The server keeps serving."""
    from zcopy.server import archive

    many = tmp_path / "many"
    many.mkdir()
    for i in range(archive.MAX_FILES + 1):
        (many / f"f{i}").write_bytes(b"x")
    few = tmp_path / "few"
    few.mkdir()
    for i in range(300):
        (few / f"f{i}").write_bytes(b"y")
    with Server(tmp_path) as srv:
        assert get(srv.port, "/many/?download=tar")[0] == 413
        pid = srv.worker_pids()[0]
        soft = subprocess.run(["prlimit", f"--pid={pid}", "--nofile", "--output=SOFT", "--noheadings"],
                              check=True, capture_output=True, text=True).stdout.strip()
        limit = len(os.listdir(f"/proc/{pid}/fd")) + 100
        subprocess.run(["prlimit", f"--pid={pid}", f"--nofile={limit}:"], check=True)     # the soft limit only
        try:
            status, headers, _ = get(srv.port, "/few/?download=tar")
            assert status == 503 and headers["retry-after"] == "1"
        finally:
            subprocess.run(["prlimit", f"--pid={pid}", f"--nofile={soft}:"], check=True)
        status, _, body = get(srv.port, "/few/?download=tar")
        assert status == 200
        with tarfile.open(fileobj=io.BytesIO(body)) as tf:
            assert len(tf.getnames()) == 300


def test_tar_bodies_leave_by_the_zero_copy_engine(tmp_path):
    """Under strace, the files' bytes leave the worker by sendfile (or splice), not through Python."""
    import shutil
    import signal
    import time

    if shutil.which("strace") is None:
        import pytest
        pytest.skip("strace is not installed")
    folder = tmp_path / "root" / "tree"
    folder.mkdir(parents=True)
    for i in range(4):
        (folder / f"part{i}.bin").write_bytes(os.urandom(4 << 20))
    log = tmp_path / "strace.log"
    with Server(tmp_path / "root") as srv:
        pid = srv.worker_pids()[0]
        tracer = subprocess.Popen(["strace", "-f", "-qq", "-p", str(pid), "-o", str(log),
                                   "-e", "trace=sendfile,splice,sendto,sendmsg,write,writev"],
                                  stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 10        # attached: the worker shows a tracer
            while time.monotonic() < deadline and "TracerPid:\t0" in open(f"/proc/{pid}/status").read():
                time.sleep(0.02)
            status, headers, body = get(srv.port, "/tree/?download=tar")
            assert status == 200 and len(body) == int(headers["content-length"])
        finally:
            tracer.send_signal(signal.SIGINT)
            tracer.wait(timeout=10)
    moved = {"sendfile": 0, "splice": 0, "other": 0}
    for line in log.read_text().splitlines():
        m = re.search(r"(\w+)\(.*\)\s+=\s+(\d+)$", line)
        if m:
            moved[m.group(1) if m.group(1) in moved else "other"] += int(m.group(2))
    zero_copy = moved["sendfile"] + moved["splice"]
    assert zero_copy >= 16 << 20, moved                       # every file byte (splice counts twice)
    assert moved["other"] < 64 << 10, moved                   # headers and padding only


def test_tar_walk_runs_on_the_executor(tmp_path):
    """With an executor (as in a worker) the answer is a Pending whose walk ran on another thread;
    its reply holds the files' fds until released."""
    import select
    import threading
    import time

    from zcopy import http
    from zcopy.server import archive
    from zcopy.server.executor import Executor
    from zcopy.server.files import OpenFileCache
    from zcopy.server.reply import Pending
    from zcopy.server.responder import Responder

    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.bin").write_bytes(b"a" * 1000)
    threads = []
    real_plan = archive.plan

    def spy(*args, **kw):                # records where the walk ran; the walk itself is the real one
        threads.append(threading.get_ident())
        return real_plan(*args, **kw)

    cache = OpenFileCache(str(tmp_path))
    ex = Executor(max_threads=1)
    archive.plan = spy
    try:
        responder = Responder(cache, http.DateHeader(), executor=ex)
        pending = responder.respond(http.HeadCache().parse(b"GET /d/?download=tar HTTP/1.1\r\nHost: x\r\n\r\n"))
        assert isinstance(pending, Pending)
        got = []
        pending.wait(got.append)
        deadline = time.monotonic() + 10
        while not got and time.monotonic() < deadline:
            select.select([ex.fileno()], [], [], 0.5)
            ex.run_callbacks()
        [reply] = got
        assert reply.status == 200 and threads and threads[0] != threading.get_ident()
        fds = reply.entry
        assert len(fds.fds) == 1
        fds.acquire()
        pending.release()                # as the connection does once it holds the reply
        fds.release()                    # the connection is done with it: the files close
        assert fds.fds == []
    finally:
        archive.plan = real_plan
        ex.close()
        cache.close()
