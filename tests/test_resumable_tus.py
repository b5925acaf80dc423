"""tus 1.0.0 against a real `zcopy serve`: tuspy (the real client) through a SIGKILL of every process and
a restart, and raw requests for the parts a client library does not show: OPTIONS, offset mismatch,
checksum 460, termination, expiry, takeover of a silent append, --max-upload, access rules, and the
partials never visible to GET, listings, PROPFIND or archives (docs/uploads.md)."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import socket
import sqlite3
import subprocess
import tarfile
import threading

import pytest
from conftest import needs_root
from resumableutil import exchange, group_gone, responses, send
from serverutil import wait_for
from serverutil import Server
from tusclient import client as tus_client
from tusclient.exceptions import TusCommunicationError, TusUploadFailed

from zcopy.accounts import passwords

MiB = 1 << 20
TUS = "Tus-Resumable: 1.0.0\r\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def partials(root) -> list[str]:
    folder = os.path.join(root, ".zcopy", "uploads")
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


def rows(state) -> list[tuple]:
    db = sqlite3.connect(f"file:{state}/state.db?mode=ro", uri=True)
    try:
        # unfinished uploads (a completed one is remembered, without a file, until it expires)
        return db.execute("SELECT target, offset, length FROM uploads WHERE completed = 0").fetchall()
    finally:
        db.close()


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def create(port: int, folder: str, name: str, length: int, extra: str = "") -> str:
    (status, headers, _), = exchange(port, f"POST {folder} HTTP/1.1\r\nHost: t\r\n{TUS}Upload-Length: {length}\r\n"
                                           f"Upload-Metadata: filename {b64(name)}\r\nContent-Length: 0\r\n{extra}")
    assert status == 201, (status, headers)
    return headers["location"]


def patch(port: int, location: str, offset: int, body: bytes, extra: str = ""):
    return exchange(port, f"PATCH {location} HTTP/1.1\r\nHost: t\r\n{TUS}Upload-Offset: {offset}\r\n"
                          f"Content-Type: application/offset+octet-stream\r\nContent-Length: {len(body)}\r\n{extra}",
                    body)[-1]


def head(port: int, location: str, extra: str = ""):
    with send(port, f"HEAD {location} HTTP/1.1\r\nHost: t\r\n{TUS}{extra}") as s:
        s.shutdown(socket.SHUT_WR)
        return responses(s)[-1]


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "root"
    (root / "in").mkdir(parents=True)
    return root, tmp_path / "state"


def test_tuspy_48mib_in_4mib_chunks_survives_sigkill_of_every_process(tree, tmp_path):
    root, state = tree
    data = os.urandom(48 * MiB)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    port = free_port()
    args = ("--allow-write", "--state-dir", str(state), "--workers", "2", "--port", str(port))
    server = Server(root, *args, own_session=True).start()
    try:
        c = tus_client.TusClient(f"http://127.0.0.1:{port}/in/")
        up = c.uploader(str(src), chunk_size=4 * MiB, metadata={"filename": "big.bin"})
        failure = []

        def run():
            try:
                up.upload()
            except (TusCommunicationError, TusUploadFailed, OSError) as exc:
                failure.append(exc)
        t = threading.Thread(target=run)
        t.start()
        # Mid-upload: some chunks are in, the rest is not.
        wait_for(lambda: any(r[1] >= 12 * MiB for r in rows(state)) if os.path.exists(state / "state.db") else False,
                 what="12 MiB recorded")
        server.kill_node()          # supervisor and every worker, SIGKILL, at once
        wait_for(lambda: group_gone(server.proc.pid), what="every process of the node gone")
        t.join(30)
        assert failure and not t.is_alive()
        assert not (root / "in" / "big.bin").exists()
        (target, durable, length), = rows(state)
        assert target == "/in/big.bin" and length == 48 * MiB and 12 * MiB <= durable < 48 * MiB
        server = Server(root, *args, own_session=True).start()
        resumed = c.uploader(str(src), chunk_size=4 * MiB, url=up.url)
        assert resumed.offset == durable      # the server's offset, asked with HEAD
        resumed.upload()
        assert (root / "in" / "big.bin").read_bytes() == data
        assert partials(root) == [] and rows(state) == []
    finally:
        server.kill()


def test_options_advertise_version_extensions_and_max_size(tree):
    root, state = tree
    with Server(root, "--allow-write", "--state-dir", str(state), "--max-upload", "1MiB") as s:
        (status, h, _), = exchange(s.port, f"OPTIONS /in/ HTTP/1.1\r\nHost: t\r\n{TUS}")
        assert status == 204
        assert h["tus-version"] == "1.0.0" and h["tus-max-size"] == str(MiB)
        assert set(h["tus-extension"].split(",")) >= {"creation", "creation-with-upload", "termination",
                                                     "checksum", "expiration", "creation-defer-length"}
        assert h["tus-checksum-algorithm"] == "sha1,sha256"
        # --max-upload applies to the declared length
        (status, h, _), = exchange(s.port, f"POST /in/ HTTP/1.1\r\nHost: t\r\n{TUS}Upload-Length: {MiB + 1}\r\n"
                                           f"Upload-Metadata: filename {b64('x')}\r\nContent-Length: 0\r\n")
        assert status == 413
        # a wrong Tus-Resumable is 412 with Tus-Version
        (status, h, _), = exchange(s.port, f"POST /in/ HTTP/1.1\r\nHost: t\r\nTus-Resumable: 0.2.2\r\n"
                                           f"Upload-Length: 1\r\nUpload-Metadata: filename {b64('x')}\r\n"
                                           "Content-Length: 0\r\n")
        assert status == 412 and h["tus-version"] == "1.0.0"


def test_offset_mismatch_checksum_defer_length_and_creation_with_upload(tree):
    root, state = tree
    with Server(root, "--allow-write", "--state-dir", str(state)) as s:
        loc = create(s.port, "/in/", "c.bin", 10)
        assert loc.startswith("/in/c.bin?upload=")
        status, h, _ = patch(s.port, loc, 0, b"01234")
        assert (status, h["upload-offset"]) == (204, "5")
        status, h, _ = patch(s.port, loc, 3, b"xx")
        assert status == 409 and h["upload-offset"] == "5"
        wrong = base64.b64encode(hashlib.sha1(b"nope!").digest()).decode()
        status, h, _ = patch(s.port, loc, 5, b"56789", f"Upload-Checksum: sha1 {wrong}\r\n")
        assert status == 460
        status, h, _ = head(s.port, loc)
        assert (status, h["upload-offset"], h["upload-length"]) == (200, "5", "10")
        assert h["cache-control"] == "no-store" and "upload-expires" in h
        right = base64.b64encode(hashlib.sha256(b"56789").digest()).decode()
        status, h, _ = patch(s.port, loc, 5, b"56789", f"Upload-Checksum: sha256 {right}\r\n")
        assert (status, h["upload-offset"]) == (204, "10")
        assert (root / "in" / "c.bin").read_bytes() == b"0123456789"

        # defer-length: the length comes with a later PATCH
        (status, h, _), = exchange(s.port, f"POST /in/ HTTP/1.1\r\nHost: t\r\n{TUS}Upload-Defer-Length: 1\r\n"
                                           f"Upload-Metadata: filename {b64('d.txt')},kind {b64('x')}\r\n"
                                           "Content-Length: 0\r\n")
        assert status == 201
        loc = h["location"]
        status, h, _ = head(s.port, loc)
        assert h["upload-defer-length"] == "1" and "upload-length" not in h
        assert h["upload-metadata"].startswith("filename ")
        assert patch(s.port, loc, 0, b"abc")[0] == 204
        assert patch(s.port, loc, 3, b"def", "Upload-Length: 6\r\n")[0] == 204
        assert (root / "in" / "d.txt").read_bytes() == b"abcdef"

        # creation-with-upload: the POST's body is the first append
        body = b"hello"
        (status, h, _), = exchange(s.port, f"POST /in/ HTTP/1.1\r\nHost: t\r\n{TUS}Upload-Length: 8\r\n"
                                           f"Upload-Metadata: filename {b64('w.txt')}\r\n"
                                           "Content-Type: application/offset+octet-stream\r\n"
                                           f"Content-Length: {len(body)}\r\n", body)
        assert status == 201 and h["upload-offset"] == "5"
        assert patch(s.port, h["location"], 5, b"!!!")[0] == 204
        assert (root / "in" / "w.txt").read_bytes() == b"hello!!!"


def test_writing_past_the_length_is_refused_and_the_upload_kept(tree):
    root, state = tree
    with Server(root, "--allow-write", "--state-dir", str(state)) as s:
        loc = create(s.port, "/in/", "p.bin", 4)
        assert patch(s.port, loc, 0, b"ab")[0] == 204
        status, h, _ = patch(s.port, loc, 2, b"cdef")
        assert status == 413
        assert head(s.port, loc)[1]["upload-offset"] == "2"
        assert patch(s.port, loc, 2, b"cd")[0] == 204
        assert (root / "in" / "p.bin").read_bytes() == b"abcd"


def test_unfinished_uploads_per_owner_are_capped(tree):
    """Each unfinished upload holds disk until it completes, is cancelled or expires: one owner may
    hold --max-pending-uploads of them; the next creation is 429 and nothing is made for it."""
    root, state = tree
    with Server(root, "--allow-write", "--state-dir", str(state), "--max-pending-uploads", "2") as s:
        first = create(s.port, "/in/", "a.bin", 10)
        create(s.port, "/in/", "b.bin", 10)
        (status, headers, body), = exchange(
            s.port, f"POST /in/ HTTP/1.1\r\nHost: t\r\n{TUS}Upload-Length: 10\r\n"
                    f"Upload-Metadata: filename {b64('c.bin')}\r\nContent-Length: 0\r\n")
        assert status == 429 and b"--max-pending-uploads" in body
        assert len(partials(root)) == 2 and len(rows(state)) == 2
        # one completes: room for the next
        assert patch(s.port, first, 0, b"0123456789")[0] == 204
        assert (root / "in" / "a.bin").read_bytes() == b"0123456789"
        create(s.port, "/in/", "c.bin", 10)


def test_termination_removes_data_and_row(tree):
    root, state = tree
    with Server(root, "--allow-write", "--state-dir", str(state)) as s:
        loc = create(s.port, "/in/", "t.bin", 100)
        assert patch(s.port, loc, 0, b"x" * 50)[0] == 204
        assert len(partials(root)) == 1
        (status, h, _), = exchange(s.port, f"DELETE {loc} HTTP/1.1\r\nHost: t\r\n{TUS}")
        assert status == 204
        assert head(s.port, loc)[0] == 404
        assert partials(root) == [] and rows(state) == []
        assert not (root / "in" / "t.bin").exists()
        # an id that never was, a malformed one, a GET of an upload resource
        assert head(s.port, "/in/t.bin?upload=" + "0" * 32)[0] == 404
        assert head(s.port, "/in/t.bin?upload=zz")[0] == 404
        (status, h, _), = exchange(s.port, f"GET {loc} HTTP/1.1\r\nHost: t\r\n{TUS}")
        assert status == 405 and "PATCH" in h["allow"]


def test_expired_uploads_answer_410_then_are_swept(tree):
    root, state = tree
    with Server(root, "--allow-write", "--state-dir", str(state), "--upload-expiry", "1") as s:
        loc = create(s.port, "/in/", "e.bin", 100)
        assert len(partials(root)) == 1
        # swept (a quarter of the expiry apart, on the executor): no file, no row left
        wait_for(lambda: partials(root) == [] and rows(state) == [], what="the sweep")
        assert head(s.port, loc)[0] == 404


def test_a_second_append_takes_over_a_silent_one(tree):
    root, state = tree
    with Server(root, "--allow-write", "--state-dir", str(state), "--workers", "2") as s:
        loc = create(s.port, "/in/", "k.bin", 4 * MiB)
        first = os.urandom(MiB)
        old = send(s.port, f"PATCH {loc} HTTP/1.1\r\nHost: t\r\n{TUS}Upload-Offset: 0\r\n"
                           f"Content-Type: application/offset+octet-stream\r\nContent-Length: {4 * MiB}\r\n", first)
        try:
            # the old connection has sent 1 MiB and then nothing (a silent drop); a new one resumes
            wait_for(lambda: os.path.getsize(root / ".zcopy" / "uploads" / partials(root)[0]) >= MiB,
                     what="the first MiB on disk")
            status, h, _ = patch(s.port, loc, 0, b"x")
            assert status == 409 and h["upload-offset"] == str(MiB)    # the old append's bytes, made durable
            old.settimeout(10)
            assert old.recv(65536) in (b"",)                            # closed by the server
            rest = os.urandom(3 * MiB)
            assert patch(s.port, loc, MiB, rest)[0] == 204
            assert (root / "in" / "k.bin").read_bytes() == first + rest
        finally:
            old.close()


USERS = "alice {a} /in:rw /own:rwd\nbob {b} /in:rw\ncarol {c} /:r\n"


@pytest.fixture
def accounts(tree, tmp_path):
    root, state = tree
    fast = dict(time_cost=1, memory_kib=passwords.MIN_MEMORY_KIB)
    users = tmp_path / "users.txt"
    users.write_text(USERS.format(**{k: passwords.make(f"{k}-pw", **fast) for k in "abc"}))
    (root / "own").mkdir()
    (root / "in" / "old.txt").write_bytes(b"old")
    return root, state, users


def auth(name: str) -> str:
    full = {"a": "alice", "b": "bob", "c": "carol"}[name]
    return "Authorization: Basic " + base64.b64encode(f"{full}:{name}-pw".encode()).decode() + "\r\n"


def test_access_rules_creation_resume_and_replace(accounts):
    root, state, users = accounts
    with Server(root, "--users", str(users), "--state-dir", str(state)) as s:
        p = s.port
        # anonymous and a reader may not create
        assert exchange(p, f"POST /in/ HTTP/1.1\r\nHost: t\r\n{TUS}Upload-Length: 3\r\n"
                           f"Upload-Metadata: filename {b64('n.txt')}\r\nContent-Length: 0\r\n")[-1][0] == 401
        assert exchange(p, f"POST /in/ HTTP/1.1\r\nHost: t\r\n{TUS}{auth('c')}Upload-Length: 3\r\n"
                           f"Upload-Metadata: filename {b64('n.txt')}\r\nContent-Length: 0\r\n")[-1][0] == 403
        loc = create(p, "/in/", "n.txt", 3, auth("a"))
        # only its creator resumes it
        assert patch(p, loc, 0, b"abc", auth("b"))[0] == 403
        assert head(p, loc, auth("b"))[0] == 403
        assert patch(p, loc, 0, b"abc", auth("a"))[0] == 204
        assert (root / "in" / "n.txt").read_bytes() == b"abc"
        # replacing needs d: alice has rw on /in (no d) -> refused; rwd on /own -> allowed
        status = exchange(p, f"POST /in/ HTTP/1.1\r\nHost: t\r\n{TUS}{auth('a')}Upload-Length: 3\r\n"
                             f"Upload-Metadata: filename {b64('old.txt')}\r\nContent-Length: 0\r\n")[-1][0]
        assert status == 403 and (root / "in" / "old.txt").read_bytes() == b"old"
        (root / "own" / "f.txt").write_bytes(b"before")
        loc = create(p, "/own/", "f.txt", 5, auth("a"))
        assert patch(p, loc, 0, b"after", auth("a"))[0] == 204
        assert (root / "own" / "f.txt").read_bytes() == b"after"


def test_partials_are_invisible_to_get_listings_propfind_archives_and_search(tree):
    root, state = tree
    (root / "in" / "seen.txt").write_bytes(b"seen")
    with Server(root, "--allow-write", "--state-dir", str(state), "--show-hidden") as s:
        p = s.port
        loc = create(p, "/in/", "hidden.bin", 10)
        assert patch(p, loc, 0, b"01234")[0] == 204
        key, = partials(root)
        for path in ("/.zcopy/uploads/", f"/.zcopy/uploads/{key}", "/.zcopy/", "/in/hidden.bin"):
            assert exchange(p, f"GET {path} HTTP/1.1\r\nHost: t\r\n")[-1][0] == 404, path
        listing = json.loads(exchange(p, "GET / HTTP/1.1\r\nHost: t\r\nAccept: application/json\r\n")[-1][2])
        names = json.dumps(listing)
        assert "in" in names and ".zcopy" not in names
        inner = exchange(p, "GET /in/ HTTP/1.1\r\nHost: t\r\nAccept: application/json\r\n")[-1][2]
        assert b"seen.txt" in inner and b"hidden.bin" not in inner and b".zcopy" not in inner
        status, _, body = exchange(p, "PROPFIND / HTTP/1.1\r\nHost: t\r\nDepth: 1\r\nContent-Length: 0\r\n")[-1]
        assert status == 207 and b".zcopy" not in body and b"/in/" in body
        status, _, body = exchange(p, "GET /?download=tar HTTP/1.1\r\nHost: t\r\n")[-1]
        assert status == 200
        names = tarfile.open(fileobj=io.BytesIO(body)).getnames()
        assert any(n.endswith("seen.txt") for n in names)
        assert not any(".zcopy" in n or "hidden.bin" in n for n in names)
        for term in ("hidden", "uploads", "zcopy", key[:8]):        # the page's subtree search
            found = json.loads(exchange(p, f"GET /?search={term} HTTP/1.1\r\nHost: t\r\n"
                                           "Accept: application/json\r\n")[-1][2])
            assert found["complete"] and found["results"] == [], (term, found)
        # a write to the reserved folder is refused too
        assert exchange(p, f"PUT /.zcopy/uploads/{key} HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n", b"x")[-1][0] \
            in (403, 404, 405)


def test_takeover_across_processes(tree):
    """Two servers on one folder and state (two nodes behind a balancer that lost its hash, or two
    workers): the append held by one is closed when the other is asked to resume (claim + tick)."""
    root, state = tree
    with Server(root, "--allow-write", "--state-dir", str(state)) as a, \
            Server(root, "--allow-write", "--state-dir", str(state)) as b:
        loc = create(a.port, "/in/", "x.bin", 2 * MiB)
        first = os.urandom(MiB)
        old = send(a.port, f"PATCH {loc} HTTP/1.1\r\nHost: t\r\n{TUS}Upload-Offset: 0\r\n"
                           f"Content-Type: application/offset+octet-stream\r\nContent-Length: {2 * MiB}\r\n", first)
        try:
            wait_for(lambda: os.path.getsize(root / ".zcopy" / "uploads" / partials(root)[0]) >= MiB,
                     what="the first MiB on disk")
            status, h, _ = patch(b.port, loc, 0, b"x")
            assert status == 409 and h["upload-offset"] == str(MiB)
            old.settimeout(10)
            assert old.recv(65536) == b""
            rest = os.urandom(MiB)
            assert patch(b.port, loc, MiB, rest)[0] == 204
            assert (root / "in" / "x.bin").read_bytes() == first + rest
        finally:
            old.close()


@needs_root
def test_a_target_on_another_filesystem_is_committed_by_a_copy(tree):
    """ROOT/.zcopy/uploads is on ROOT's filesystem; a target folder that is a mount below ROOT gets
    EXDEV from the rename, and the upload is copied into a PUT's temp file there instead."""
    root, state = tree
    mnt = root / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)], check=True)
    try:
        with Server(root, "--allow-write", "--state-dir", str(state)) as s:
            data = os.urandom(3 * MiB)
            loc = create(s.port, "/mnt/", "x.bin", len(data))
            assert patch(s.port, loc, 0, data[:MiB])[0] == 204
            status, h, _ = patch(s.port, loc, MiB, data[MiB:])
            assert status == 204 and h["zcopy-commit"] == "201"
            assert (mnt / "x.bin").read_bytes() == data
            assert sorted(os.listdir(mnt)) == ["x.bin"] and partials(root) == [] and rows(state) == []
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_webdav_locks_apply_at_creation_and_at_commit(tree):
    root, state = tree
    lockinfo = (b'<D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/>'
                b"</D:locktype><D:owner>me</D:owner></D:lockinfo>")
    with Server(root, "--allow-write", "--state-dir", str(state)) as s:
        p = s.port
        loc = create(p, "/in/", "l.txt", 4)
        assert patch(p, loc, 0, b"ab")[0] == 204
        (status, h, _), = exchange(p, f"LOCK /in/l.txt HTTP/1.1\r\nHost: t\r\nTimeout: Second-60\r\n"
                                      f"Content-Length: {len(lockinfo)}\r\n", lockinfo)
        assert status == 201
        token = h["lock-token"]
        # the completing append is refused before its body is read; the upload stays where it was
        assert patch(p, loc, 2, b"cd")[0] == 423
        assert head(p, loc)[1]["upload-offset"] == "2"
        assert (root / "in" / "l.txt").read_bytes() == b""          # the lock-null file, untouched
        # a new upload onto the locked path is refused at creation
        assert exchange(p, f"POST /in/ HTTP/1.1\r\nHost: t\r\n{TUS}Upload-Length: 1\r\n"
                           f"Upload-Metadata: filename {b64('l.txt')}\r\nContent-Length: 0\r\n")[-1][0] == 423
        # with the lock token it completes
        assert patch(p, loc, 2, b"cd", f"If: ({token})\r\n")[0] == 204
        assert (root / "in" / "l.txt").read_bytes() == b"abcd"
