"""Uploads and file management against a real server (issue 5, server side).

Faults are real: a connection cut midway, a worker SIGKILLed mid-upload, a
1 MiB tmpfs for ENOSPC. After each, the old content must be intact and no
temp file may exist under any name.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid

import pytest

from conftest import needs_root, needs_tool
from serverutil import Server, connect, curl, file_fds, get, read_response, request
from test_stats import wait_for, wait_json

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def put(port, path, body: bytes, headers=None, chunked=False):
    extra = "".join(f"{k}: {v}\r\n" for k, v in {**AUTH, **(headers or {})}.items())
    if chunked:
        framing = "Transfer-Encoding: chunked\r\n"
        payload = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 1000]), body[i:i + 1000])
                           for i in range(0, len(body), 1000)) + b"0\r\n\r\n"
    else:
        framing = f"Content-Length: {len(body)}\r\n"
        payload = body
    raw = f"PUT {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{extra}{framing}\r\n".encode() + payload
    return request(port, raw)


def call(port, method, path, headers=None):
    extra = "".join(f"{k}: {v}\r\n" for k, v in {**AUTH, **(headers or {})}.items())
    return request(port, f"{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{extra}\r\n".encode())


def unnamed_inodes(server) -> list[str]:
    """O_TMPFILE inodes under the root that the workers hold open ("ROOT/#INO (deleted)")."""
    held = []
    for pid in server.worker_pids():
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except FileNotFoundError:
                continue
            if target.startswith(server.root + "/") and target.endswith(" (deleted)"):
                held.append(target)
    return held


def listing(root) -> set[str]:
    found = set()
    for dirpath, dirs, files in os.walk(root):
        for name in files + dirs:
            found.add(os.path.relpath(os.path.join(dirpath, name), root))
    return found


@pytest.fixture(scope="module", params=["splice", "recv_pwrite"])
def wserver(request, tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    (root / "keep.txt").write_bytes(b"original content")
    flag = {"splice": "splice", "recv_pwrite": "recv"}[request.param]
    # --make-parents: these tests cover the old behaviour (missing folders made); tests/test_dav.py the default.
    with Server(root, "--allow-write", "--token", TOKEN, "--max-upload", "100MiB", "--upload-engine", flag,
                "--make-parents") as s:
        assert request.param.encode() in s.stderr
        yield s


@pytest.mark.parametrize("size", [0, 1, 64 << 20])
def test_round_trip(wserver, size):
    body = os.urandom(size)
    name = f"/rt/{uuid.uuid4().hex}.bin"
    status, _, _ = put(wserver.port, name, body)
    assert status == 201
    status, h, got = get(wserver.port, name)
    assert status == 200 and hashlib.sha256(got).digest() == hashlib.sha256(body).digest()
    assert put(wserver.port, name, b"v2")[0] == 204
    assert get(wserver.port, name)[2] == b"v2"


def test_chunked_upload(wserver):
    body = os.urandom(50_001)
    assert put(wserver.port, "/chunked.bin", body, chunked=True)[0] in (201, 204)
    assert get(wserver.port, "/chunked.bin")[2] == body


def test_http10_chunked_upload_closes_after_the_reply(wserver):
    """RFC 9112 6.1: Transfer-Encoding in an HTTP/1.0 request (which a 1.0 hop
    may have framed otherwise) makes the server close after its reply, even
    when the client asked for keep-alive; the reply says so."""
    with connect(wserver.port) as s:
        s.sendall(f"PUT /te10.bin HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n"
                  f"Authorization: Bearer {TOKEN}\r\n\r\n".encode() + b"5\r\nhello\r\n0\r\n\r\n")
        status, h, _, _ = read_response(s)
        assert status in (201, 204) and h.get("connection", "").lower() == "close"
        assert s.recv(10) == b""                 # closed, not kept alive
    assert get(wserver.port, "/te10.bin")[2] == b"hello"


@needs_tool("curl")
def test_curl_put_with_expect_continue_and_basic_auth(wserver, tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(3 << 20))
    out = curl("-f", "-T", str(src), "-u", f"anyone:{TOKEN}", "-H", "Expect: 100-continue",
               "-w", "%{http_code}", "-o", "/dev/null", f"{wserver.url}/curl/up.bin")
    assert out.stdout in (b"201", b"204"), out.stderr
    assert get(wserver.port, "/curl/up.bin")[2] == src.read_bytes()
    # stdin: curl sends it chunked
    out = subprocess.run(["curl", "-sSf", "-T", "-", "-H", f"Authorization: Bearer {TOKEN}",
                          f"{wserver.url}/curl/stdin.txt"], input=b"from stdin", capture_output=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert get(wserver.port, "/curl/stdin.txt")[2] == b"from stdin"


@pytest.mark.parametrize("framing", ["Content-Length: 10000000", "Transfer-Encoding: chunked"])
def test_cut_off_upload_keeps_old_file_and_leaves_nothing(wserver, framing):
    root = wserver.root
    before = listing(root)
    body = os.urandom(3_000_000)
    if framing.startswith("Transfer"):
        body = b"%x\r\n" % 10_000_000 + body       # a chunk announced whole, cut a third of the way
    with connect(wserver.port) as c:
        c.sendall(b"PUT /keep.txt HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer " + TOKEN.encode() +
                  b"\r\n" + framing.encode() + b"\r\n\r\n" + body)
        assert wait_for(lambda: len(unnamed_inodes(wserver)) == 1)   # under way, in an unnamed inode
    assert wait_for(lambda: unnamed_inodes(wserver) == [])           # gone with the connection, blocks freed
    assert get(wserver.port, "/keep.txt")[2] == b"original content"
    assert listing(root) == before


def test_killed_server_mid_upload_leaves_nothing(tmp_path):
    root = tmp_path / "r"
    root.mkdir()
    (root / "keep.txt").write_bytes(b"original content")
    with Server(root, "--allow-write") as s:
        c = connect(s.port)
        c.sendall(b"PUT /keep.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 10000000\r\n\r\n" + os.urandom(2_000_000))
        time.sleep(0.5)
        for pid in s.worker_pids():
            os.kill(pid, signal.SIGKILL)
        c.close()
        time.sleep(0.5)
        assert get(s.port, "/keep.txt")[2] == b"original content"
    assert sorted(os.listdir(root)) == ["keep.txt"]


@needs_root
@pytest.mark.parametrize("engine", ["splice", "recv"])
def test_enospc_gives_507_and_leaves_nothing(tmp_path, engine):
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], check=True)
    try:
        (mnt / "keep.txt").write_bytes(b"original content")
        free = os.statvfs(mnt).f_bfree
        with Server(mnt, "--allow-write", "--upload-engine", engine) as s:
            status, _, _ = put(s.port, "/keep.txt", os.urandom(3 << 20))
            assert status == 507
            status, _, _ = put(s.port, "/new.bin", os.urandom(3 << 20), chunked=True)
            assert status == 507
            assert get(s.port, "/keep.txt")[2] == b"original content"
            # the partial bodies' blocks are given back, not held by an open unnamed inode
            assert wait_for(lambda: os.statvfs(mnt).f_bfree == free)
            assert put(s.port, "/small.txt", b"still works")[0] == 201
        assert sorted(os.listdir(mnt)) == ["keep.txt", "small.txt"]
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_concurrent_uploads_to_one_name_never_mix(wserver):
    a, b = b"A" * (8 << 20), b"B" * (8 << 20)
    results = []
    threads = [threading.Thread(target=lambda body=body: results.append(put(wserver.port, "/race.bin", body)[0]))
               for body in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) in ([201, 204], [204, 204])
    got = get(wserver.port, "/race.bin")[2]
    assert got in (a, b)


@pytest.mark.parametrize("headers,status", [
    ({}, 401),
    ({"Authorization": "Bearer wrong"}, 401),
    ({"Authorization": "Basic " + base64.b64encode(b"u:wrong").decode()}, 401),
])
def test_writes_need_the_token(wserver, headers, status):
    raw = (b"PUT /keep.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n" +
           b"".join(f"{k}: {v}\r\n".encode() for k, v in headers.items()) + b"\r\nbad")
    got, h, _ = request(wserver.port, raw)
    assert got == status and "Bearer" in h["www-authenticate"]
    raw_delete = (b"DELETE /keep.txt HTTP/1.1\r\nHost: t\r\n" +
                  b"".join(f"{k}: {v}\r\n".encode() for k, v in headers.items()) + b"\r\n")
    assert request(wserver.port, raw_delete)[0] == 401
    assert get(wserver.port, "/keep.txt")[2] == b"original content"


def test_read_only_server_refuses_writes(tmp_path):
    (tmp_path / "a.txt").write_text("a")
    with Server(tmp_path) as s:
        assert put(s.port, "/a.txt", b"changed")[0] == 403
        assert call(s.port, "DELETE", "/a.txt")[0] == 403
    assert (tmp_path / "a.txt").read_text() == "a"


def test_read_token(tmp_path):
    (tmp_path / "a.txt").write_text("a")
    with Server(tmp_path, "--read-token", "r3ad") as s:
        assert get(s.port, "/a.txt")[0] == 401
        assert get(s.port, "/a.txt", {"Authorization": "Bearer r3ad"})[2] == b"a"


@pytest.mark.parametrize("path", ["/../escape.txt", "/a/../../escape.txt", "/%2e%2e/escape.txt", "/.hidden",
                                  "/.zcopy-upload-x"])
def test_traversal_in_path_refused(wserver, path):
    status, _, _ = put(wserver.port, path, b"x")
    assert status in (400, 403, 404)
    assert not os.path.exists(os.path.join(os.path.dirname(wserver.root), "escape.txt"))


def test_delete_move_mkcol(wserver):
    port = wserver.port
    assert put(port, "/m/a.txt", b"a")[0] == 201
    assert call(port, "MKCOL", "/newdir")[0] == 201
    assert call(port, "MKCOL", "/newdir")[0] == 405
    assert call(port, "MKCOL", "/no/parent")[0] == 409
    assert call(port, "MOVE", "/m/a.txt", {"Destination": "/newdir/b.txt"})[0] == 201
    assert get(port, "/newdir/b.txt")[2] == b"a" and get(port, "/m/a.txt")[0] == 404
    assert put(port, "/m/c.txt", b"c")[0] == 201
    assert call(port, "MOVE", "/m/c.txt", {"Destination": "/newdir/b.txt", "Overwrite": "F"})[0] == 412
    assert call(port, "MOVE", "/m/c.txt", {"Destination": "http://t/newdir/b.txt"})[0] == 204   # a URL on this Host
    assert get(port, "/newdir/b.txt")[2] == b"c"
    for dest in ("/../out.txt", "/newdir/../../out.txt", "/.secret"):
        assert call(port, "MOVE", "/newdir/b.txt", {"Destination": dest})[0] in (400, 403)
    assert call(port, "DELETE", "/newdir")[0] == 204         # RFC 4918 9.6.1: with what it holds
    assert call(port, "MKCOL", "/newdir")[0] == 201
    assert put(port, "/newdir/x", b"x")[0] == 201
    assert call(port, "DELETE", "/newdir?recursive=1")[0] == 204   # the old spelling still works
    assert get(port, "/newdir/")[0] == 404
    assert call(port, "DELETE", "/newdir")[0] == 404


def test_partial_put_with_content_range_is_refused_and_changes_nothing(wserver):
    # RFC 9110 14.5: a server without partial PUT must say 400, not store the piece as the file.
    status, _, _ = put(wserver.port, "/keep.txt", b"XYZ", {"Content-Range": "bytes 0-2/16"})
    assert status == 400
    assert get(wserver.port, "/keep.txt")[2] == b"original content"


def test_oversized_upload_is_refused(wserver):
    raw = (f"PUT /big HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {TOKEN}\r\n"
           f"Content-Length: {200 << 20}\r\nExpect: 100-continue\r\n\r\n").encode()
    assert request(wserver.port, raw)[0] == 413
    assert get(wserver.port, "/big")[0] == 404


def test_oversized_chunked_upload_is_cut(tmp_path):
    with Server(tmp_path, "--allow-write", "--max-upload", "1KiB") as s:
        assert put(s.port, "/big", b"x" * 5000, chunked=True)[0] == 413
        assert put(s.port, "/fits", b"x" * 1000, chunked=True)[0] == 201
    assert os.listdir(tmp_path) == ["fits"]


def test_temp_names_are_never_listed_served_or_written_even_with_show_hidden(tmp_path):
    # What a named temp file (filesystems without O_TMPFILE) looks like mid-upload.
    (tmp_path / ".zcopy-upload-0123abcd").write_bytes(b"half an upload")
    (tmp_path / ".dotfile").write_bytes(b"shown")
    with Server(tmp_path, "--allow-write", "--show-hidden") as s:
        assert get(s.port, "/.dotfile")[2] == b"shown"
        assert get(s.port, "/.zcopy-upload-0123abcd")[0] == 404
        assert get(s.port, "/.zcopy-upload-0123abcd", method="HEAD")[0] == 404
        status, _, body = get(s.port, "/", {"Accept": "application/json"})
        names = [e["name"] for e in json.loads(body)["entries"]]
        assert status == 200 and names == [".dotfile"]
        assert put(s.port, "/.zcopy-upload-0123abcd", b"overwrite")[0] == 403
    assert (tmp_path / ".zcopy-upload-0123abcd").read_bytes() == b"half an upload"


def test_server_token_from_environment_or_file_and_read_token_file(tmp_path):
    root = tmp_path / "r"
    root.mkdir()
    (root / "a.txt").write_text("a")
    with Server(root, "--allow-write", env={"ZCOPY_TOKEN": "from-env"}) as s:
        assert put(s.port, "/a.txt", b"x", {"Authorization": "Bearer wrong"})[0] == 401
        assert put(s.port, "/a.txt", b"env", {"Authorization": "Bearer from-env"})[0] == 204
    (tmp_path / "write.tok").write_text("from-file\nsecond line is not part of it\n")
    (tmp_path / "read.tok").write_text("r3ad\n")
    with Server(root, "--allow-write", "--token-file", str(tmp_path / "write.tok"),
                "--read-token-file", str(tmp_path / "read.tok"), env={"ZCOPY_TOKEN": "from-env"}) as s:
        assert put(s.port, "/a.txt", b"x", {"Authorization": "Bearer from-env"})[0] == 401
        basic = "Basic " + base64.b64encode(b"anyone:from-file").decode()
        assert put(s.port, "/a.txt", b"file", {"Authorization": basic})[0] == 204
        assert get(s.port, "/a.txt")[0] == 401
        assert get(s.port, "/a.txt", {"Authorization": "Bearer r3ad"})[2] == b"file"
        assert get(s.port, "/a.txt", {"Authorization": basic})[2] == b"file"   # the write token reads too
        assert put(s.port, "/a.txt", b"x", {"Authorization": "Bearer r3ad"})[0] == 401   # but not the other way
    assert (root / "a.txt").read_bytes() == b"file"


@pytest.mark.parametrize("args,message", [
    (["--token", "a", "--token-file", "f"], "not allowed with argument"),
    (["--allow-write", "--token-file", "/nonexistent/tok"], "cannot read --token-file /nonexistent/tok"),
    (["--read-token-file", "EMPTY"], "is empty"),
])
def test_bad_token_flags_are_one_line_and_exit_2(tmp_path, args, message):
    (tmp_path / "empty").write_text("\n")
    args = [str(tmp_path / "empty") if a == "EMPTY" else a for a in args]
    out = subprocess.run([sys.executable, "-m", "zcopy", "serve", str(tmp_path), "--port", "0", *args],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and message in out.stderr and out.stderr.count("\n") == 1, out.stderr


@pytest.mark.parametrize("flag,engine", [("splice", "splice"), ("recv", "recv_pwrite")])
def test_stats_count_upload_bytes_by_engine(runtime, tmp_path, flag, engine):
    root = tmp_path / "r"
    root.mkdir()
    body = os.urandom(3 << 20)
    with Server(root, "--allow-write", "--upload-engine", flag, env={"XDG_RUNTIME_DIR": str(runtime)}) as s:
        assert put(s.port, "/up.bin", body)[0] == 201
        snap = wait_json(runtime, lambda j: j["methods"].get("PUT") == 1)
    by_engine = snap["bytes_by_engine"]
    # Body bytes that came with the head are buffered (and counted as plain recv);
    # the rest went through the upload engine.
    assert by_engine[engine]["received"] + snap["body_buffered"] == len(body)
    assert by_engine[engine]["received"] > len(body) // 2
    assert snap["bytes_received"] == sum(e["received"] for e in by_engine.values())


def test_left_behind_named_temps_are_removed_but_live_ones_kept(tmp_path):
    """Named temp files (filesystems without O_TMPFILE) that a killed worker left:
    unheld and unchanged for a minute, they go; one an upload holds stays."""
    import fcntl

    from zcopy.server import fileops

    old = time.time() - 2 * fileops.STALE_AFTER
    for name in ("dead", "live", "fresh"):
        (tmp_path / f"{fileops.TEMP_PREFIX}{name}").write_bytes(b"partial")
    for name in ("dead", "live"):
        os.utime(tmp_path / f"{fileops.TEMP_PREFIX}{name}", (old, old))
    (tmp_path / "other").write_bytes(b"x")
    os.utime(tmp_path / "other", (old, old))
    dir_fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    with open(tmp_path / f"{fileops.TEMP_PREFIX}live", "rb") as live:
        fcntl.flock(live, fcntl.LOCK_EX)               # as TempFile holds its own
        try:
            assert fileops.remove_stale_temps(dir_fd) == [f"{fileops.TEMP_PREFIX}dead"]
        finally:
            os.close(dir_fd)
    assert sorted(os.listdir(tmp_path)) == sorted([f"{fileops.TEMP_PREFIX}live", f"{fileops.TEMP_PREFIX}fresh", "other"])


def test_an_upload_sweeps_the_temps_a_killed_worker_left_in_its_folder(tmp_path):
    """End to end on an O_TMPFILE filesystem: a worker killed between linkat and
    rename leaves a named temp; the next upload into that folder removes it
    (but not one an upload holds, nor a fresh one)."""
    import fcntl

    from zcopy.server import fileops

    old = time.time() - 2 * fileops.STALE_AFTER
    (tmp_path / "d").mkdir()
    for name in ("dead", "live", "fresh"):
        (tmp_path / "d" / f"{fileops.TEMP_PREFIX}{name}").write_bytes(b"partial")
    for name in ("dead", "live"):
        os.utime(tmp_path / "d" / f"{fileops.TEMP_PREFIX}{name}", (old, old))
    with open(tmp_path / "d" / f"{fileops.TEMP_PREFIX}live", "rb") as live:
        fcntl.flock(live, fcntl.LOCK_EX)
        with Server(tmp_path, "--allow-write", "--workers", "1") as s:
            status, _, _ = request(s.port, b"PUT /d/new.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
                                              b"Connection: close\r\n\r\nwhole")
            assert status == 201
    assert sorted(os.listdir(tmp_path / "d")) == sorted(
        ["new.txt", f"{fileops.TEMP_PREFIX}live", f"{fileops.TEMP_PREFIX}fresh"])
    assert (tmp_path / "d" / "new.txt").read_bytes() == b"whole"


def test_upload_temp_file_is_held_with_flock(tmp_path):
    import fcntl

    from zcopy.server import fileops

    folder = os.open(tmp_path, os.O_PATH | os.O_DIRECTORY)
    temp = fileops.TempFile(folder)
    os.close(folder)
    try:
        other = os.open(f"/proc/self/fd/{temp.fd}", os.O_RDONLY)   # a second open file description
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(other)
    finally:
        temp.abort()


@needs_tool("strace")
@pytest.mark.parametrize("flags, fsyncs", [((), 2), (("--no-fsync",), 0)])
def test_upload_is_fsynced_before_its_rename_unless_no_fsync(tmp_path, flags, fsyncs):
    """What the worker asks of the kernel for one PUT (strace on the real
    worker, all its threads): the file's fsync, then rename, then the folder's
    fsync; with --no-fsync the rename alone. None of them on the event loop's
    thread (the worker's main thread, tid == pid): they run on the executor,
    as do the start of the upload (the missing folder's mkdir, the O_TMPFILE open)."""
    # Stats off: the once-a-second snapshot is a rename and an fsync of its own.
    with Server(tmp_path, "--allow-write", "--workers", "1", "--make-parents", *flags, env={"ZCOPY_STATS": "off"}) as s:
        [pid] = s.worker_pids()
        log = tmp_path.parent / f"strace-{uuid.uuid4().hex}.log"
        tracer = subprocess.Popen(["strace", "-f", "-p", str(pid), "-o", str(log),
                                   "-e", "trace=fsync,fdatasync,rename,renameat,renameat2,mkdir,mkdirat,openat"],
                                  stderr=subprocess.PIPE)
        try:
            assert b"attached" in tracer.stderr.readline()     # strace: "Process N attached"
            status, _, _ = request(s.port, b"PUT /d/f.bin HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
                                            b"Connection: close\r\n\r\nhello")
            assert status == 201
            # The 201 leaves after the folder's fsync; strace may write its
            # lines a moment later (a loaded machine): wait for the rename.
            deadline = time.monotonic() + 10
            while "rename" not in log.read_text() and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.2)
        finally:
            tracer.terminate()
            tracer.wait(10)
        lines = [line for line in log.read_text().splitlines()
                 if "(" in line and ("openat(" not in line or "O_TMPFILE" in line)]
        traced = [line.split("(", 1)[0].split() for line in lines]
        log.unlink()
    calls = [t[-1] for t in traced]
    tids = {int(t[0]) for t in traced if len(t) == 2}
    assert tids and pid not in tids, lines       # -f prefixes each line with its thread id
    assert "openat" in calls and ("mkdir" in calls or "mkdirat" in calls), lines
    calls = [c for c in calls if c not in ("openat", "mkdir", "mkdirat")]
    renames = [i for i, c in enumerate(calls) if c.startswith("rename")]
    assert len(renames) == 1, calls
    syncs = [i for i, c in enumerate(calls) if c in ("fsync", "fdatasync")]
    assert len(syncs) == fsyncs, calls
    if fsyncs:       # one before the rename (the data), one after (the folder entry)
        assert syncs[0] < renames[0] < syncs[1], calls
    assert (tmp_path / "d" / "f.bin").read_bytes() == b"hello"


@pytest.mark.parametrize("framing", ["Content-Length: 10000000", "Transfer-Encoding: chunked"])
def test_a_cut_upload_leaves_none_of_the_folders_it_made(wserver, framing):
    # Issue 13.8: the parents a failed upload created go with it; ones that were there stay.
    root = wserver.root
    os.makedirs(os.path.join(root, "had"), exist_ok=True)
    before = listing(root)
    body = os.urandom(1_000_000)
    if framing.startswith("Transfer"):
        body = b"%x\r\n" % 10_000_000 + body
    name = uuid.uuid4().hex
    with connect(wserver.port) as c:
        c.sendall(f"PUT /had/{name}/deeper/f.bin HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {TOKEN}\r\n"
                  f"{framing}\r\n\r\n".encode() + body)
        assert wait_for(lambda: os.path.isdir(os.path.join(root, "had", name, "deeper")))   # under way
    assert wait_for(lambda: not os.path.exists(os.path.join(root, "had", name)))
    assert listing(root) == before


def test_a_refused_upload_leaves_none_of_the_folders_it_made(tmp_path):
    with Server(tmp_path, "--allow-write", "--max-upload", "1KiB", "--make-parents") as s:
        assert put(s.port, "/n1/n2/big", b"x" * 5000, chunked=True)[0] == 413
        assert put(s.port, "/n1/n2/fits", b"x" * 10, chunked=True)[0] == 201
        assert put(s.port, "/n1/m/big", b"x" * 5000, chunked=True)[0] == 413
    assert listing(tmp_path) == {"n1", "n1/n2", "n1/n2/fits"}


def test_a_trailing_slash_or_dot_segment_never_names_a_file(wserver):
    # Issue 15.11: "PUT /newdir/" made a file "newdir"; "/a.txt/." served a.txt; "/a.txt/.." was a 301.
    port = wserver.port
    assert put(port, "/slashed/", b"x")[0] == 400
    assert not os.path.lexists(os.path.join(wserver.root, "slashed"))
    assert put(port, "/dots/a.txt", b"a")[0] == 201
    for path in ("/dots/a.txt/", "/dots/a.txt/.", "/dots/a.txt/..", "/dots/a.txt/./", "/dots/a.txt/../a.txt"):
        for method in ("GET", "HEAD"):
            status, _, body = get(port, path, method=method)
            assert status == 404 and b"a" != body, (method, path, status)
    assert call(port, "DELETE", "/dots/a.txt/")[0] == 404
    assert call(port, "MOVE", "/dots/a.txt/", {"Destination": "/dots/b.txt"})[0] == 404
    assert call(port, "MOVE", "/dots/a.txt", {"Destination": "/dots/b/"})[0] == 400
    assert get(port, "/dots/a.txt")[2] == b"a"
    assert call(port, "MKCOL", "/dots/col/")[0] == 201          # a folder path may end with a slash
    assert call(port, "DELETE", "/dots/col/")[0] == 204


def test_the_reserved_namespace_is_never_a_user_file(tmp_path):
    # /.zcopy/ is the server's own: not served, listed or written, even with --show-hidden.
    (tmp_path / ".zcopy").mkdir()
    (tmp_path / ".zcopy" / "x").write_bytes(b"user file")
    (tmp_path / "sub" / ".zcopy").mkdir(parents=True)      # only the top-level name is reserved
    with Server(tmp_path, "--allow-write", "--show-hidden") as s:
        for path in ("/.zcopy/x", "/.zcopy/", "/sub/../.zcopy/x", "//.zcopy/x"):
            assert get(s.port, path)[0] == 404, path
        names = [e["name"] for e in json.loads(get(s.port, "/", {"Accept": "application/json"})[2])["entries"]]
        assert ".zcopy" not in names and "sub" in names
        # The route table answers these (no such route); the file side would refuse them too (403).
        assert put(s.port, "/.zcopy/x", b"overwrite")[0] in (403, 404)
        assert put(s.port, "/.zcopy/new", b"new")[0] in (403, 404)
        assert call(s.port, "DELETE", "/.zcopy/x")[0] in (403, 404)
        assert call(s.port, "MKCOL", "/.zcopy/d")[0] in (403, 404)
        assert call(s.port, "MOVE", "/.zcopy/x", {"Destination": "/y"})[0] in (403, 404)
        assert put(s.port, "/f", b"f")[0] == 201
        assert call(s.port, "MOVE", "/f", {"Destination": "/.zcopy/f"})[0] == 403     # the file side's refusal
        assert call(s.port, "MOVE", "/f", {"Destination": "/sub/../.zcopy/f"})[0] == 400
        assert get(s.port, "/sub/.zcopy/")[0] == 200
    assert sorted(os.listdir(tmp_path / ".zcopy")) == ["x"] and (tmp_path / ".zcopy" / "x").read_bytes() == b"user file"


def test_write_operations_leave_no_folder_fds_open(tmp_path):
    # Every walk opens folder fds; each request, answered or refused, must close them all.
    with Server(tmp_path, "--allow-write", "--workers", "1", "--max-upload", "1KiB", "--make-parents") as s:
        (pid,) = s.worker_pids()
        port = s.port
        assert put(port, "/warm/x", b"x")[0] == 201            # whatever a first upload sets up once
        before = file_fds(pid)
        for i in range(20):
            assert put(port, f"/p{i}/q/f", b"data")[0] == 201
            assert put(port, f"/p{i}/q/f/x", b"data")[0] == 409          # a file is not a folder
            assert put(port, f"/n{i}/big", b"x" * 5000, chunked=True)[0] == 413
            assert call(port, "MKCOL", f"/p{i}/c")[0] == 201
            assert call(port, "MKCOL", f"/p{i}/c")[0] == 405
            assert call(port, "MOVE", f"/p{i}/q/f", {"Destination": f"/m{i}/deep/g"})[0] == 201
            assert call(port, "MOVE", f"/p{i}/none", {"Destination": f"/m{i}/h"})[0] == 404
            assert call(port, "MOVE", f"/m{i}/deep/g", {"Destination": "/../x"})[0] == 403
            assert call(port, "DELETE", f"/p{i}")[0] == 204
            assert call(port, "DELETE", f"/p{i}")[0] == 404
        assert file_fds(pid) == before


def test_an_upload_whose_folder_is_deleted_meanwhile_is_a_conflict(wserver):
    # The upload's folder is the fd its walk opened: once that folder is gone
    # there is nothing to name the file in (no new folder is made by its old path).
    name = uuid.uuid4().hex
    assert call(wserver.port, "MKCOL", f"/{name}")[0] == 201
    body = os.urandom(200_000)
    with connect(wserver.port) as c:
        c.sendall(f"PUT /{name}/f HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n"
                  f"Content-Length: {len(body)}\r\n\r\n".encode() + body[:1000])
        assert wait_for(lambda: len(unnamed_inodes(wserver)) == 1)
        assert call(wserver.port, "DELETE", f"/{name}")[0] == 204      # empty: the upload has no name yet
        c.sendall(body[1000:])
        status, _, _, _ = read_response(c)
    assert status == 409
    assert not os.path.exists(os.path.join(wserver.root, name))
    assert wait_for(lambda: unnamed_inodes(wserver) == [])
