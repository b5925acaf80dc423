"""The client against hostile servers, names and neighbours (field report,
issue 15 items 1-8): where `zcopy get` may write, what it writes through,
two downloads into one file, credentials and redirects, malformed listings,
and the wording of messages. Servers are real: `zcopy serve`, or a tiny raw
HTTP server on loopback that answers exactly what a malicious one would."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import threading
from urllib.parse import quote

import pytest

from serverutil import Server, wait_for
from test_client import TOKEN, zcopy


def run(*args: str, cwd=None, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "zcopy", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, env={**os.environ, "ZCOPY_TOKEN": "", **(env or {})})


def one_line(out: subprocess.CompletedProcess) -> bool:
    return out.stderr.count("\n") == 1 and "Traceback" not in out.stderr



class RawServer:
    """A tiny HTTP server on loopback, one thread per connection: records
    each request head, and answers with ``answer(head)``: bytes, or a
    callable that gets the socket and sends what it likes."""

    def __init__(self, answer) -> None:
        self.answer = answer
        self.heads: list[bytes] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.threads: list[threading.Thread] = []
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self.threads.append(t)
            t.start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                head += chunk
            self.heads.append(head)
            reply = self.answer(head)
            try:
                reply(conn) if callable(reply) else conn.sendall(reply)
            except OSError:
                pass

    def authorization(self, i: int) -> str | None:
        """The Authorization field of the i-th request, if it had one."""
        for line in self.heads[i].split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"authorization":
                return value.strip().decode("latin-1")
        return None

    def close(self) -> None:
        self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self._accepting.join(10)
        for t in self.threads:
            t.join(10)

    def __enter__(self) -> "RawServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def ok(body: bytes, *, etag: str = '"v1"', content_type: str = "application/octet-stream") -> bytes:
    return (b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nETag: %b\r\nContent-Type: %b\r\n"
            b"Connection: close\r\n\r\n" % (len(body), etag.encode(), content_type.encode())) + body


def files_under(path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if not p.is_dir())


# -- 1. the saved name is a plain file name in the target folder --------------------------------

@pytest.mark.parametrize("segment", ["..%2F..%2Fescaped", "ABS", "..", "%2E%2E", "a%00b", "a%0Ab",
                                     "a%1B%5B2Jb"])
def test_get_saves_only_a_plain_file_name_inside_the_folder(tmp_path, segment):
    if segment == "ABS":
        segment = quote(str(tmp_path / "absolute"), safe="")          # %2Ftmp%2F...%2Fabsolute
    cwd = tmp_path / "a" / "b"
    into = tmp_path / "into"
    cwd.mkdir(parents=True)
    into.mkdir()
    with RawServer(lambda head: ok(b"pwned")) as srv:
        here = run("get", f"{srv.url}/pub/{segment}", cwd=cwd)
        contained = run("get", f"{srv.url}/pub/{segment}", "-o", str(into), cwd=cwd)
    for out in (here, contained):
        assert out.returncode == 1 and one_line(out), out.stderr
        assert "refusing to save as" in out.stderr or "names a folder" in out.stderr, out.stderr
    assert files_under(tmp_path) == []


def test_get_saves_a_plain_name_into_the_output_folder(tmp_path):
    (tmp_path / "into").mkdir()
    with RawServer(lambda head: ok(b"fine")) as srv:
        out = run("get", f"{srv.url}/pub/a%20b.txt", "-o", str(tmp_path / "into"), "-q")
    assert out.returncode == 0, out.stderr
    assert files_under(tmp_path) == ["into/a b.txt"]


# -- 2. a symlink (or hard link) planted at NAME.part is never written through -------------------

@pytest.mark.parametrize("kind", ["symlink", "hardlink"])
def test_get_does_not_write_through_a_link_planted_at_the_part_name(tmp_path, kind):
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    dl = tmp_path / "dl"
    dl.mkdir()
    (os.symlink if kind == "symlink" else os.link)(victim, dl / "f.part")
    with RawServer(lambda head: ok(b"attacker data")) as srv:
        out = run("get", f"{srv.url}/f", "-o", str(dl / "f"))
        default = run("get", f"{srv.url}/f", cwd=dl)
    for o in (out, default):
        assert o.returncode == 1 and one_line(o), o.stderr
        assert ("symbolic link" if kind == "symlink" else "hard links") in o.stderr
    assert victim.read_bytes() == b"precious"
    assert not (dl / "f").exists()
    assert (dl / "f.part").is_symlink() == (kind == "symlink")


# -- 3. two downloads into one output; a partial file moved away meanwhile ----------------------

def test_second_get_into_the_same_output_is_refused_while_the_first_runs(tmp_path):
    body = os.urandom(1 << 20)
    release = threading.Event()
    calls = []

    def answer(head):
        calls.append(head)
        if len(calls) > 1:                 # any later request: the whole file at once
            return ok(body)

        def slow(conn):
            conn.sendall(ok(body)[:-len(body) // 2])
            release.wait(30)
            conn.sendall(body[-len(body) // 2:])
        return slow

    dl = tmp_path / "dl"
    dl.mkdir()
    with RawServer(answer) as srv:
        first = subprocess.Popen([sys.executable, "-m", "zcopy", "get", f"{srv.url}/f", "-o", str(dl / "f"), "-q"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            wait_for(lambda: (dl / "f.part").exists() and (dl / "f.part").stat().st_size >= len(body) // 2,
                     what="half of the body in f.part")
            second = run("get", f"{srv.url}/f", "-o", str(dl / "f"))
        finally:
            release.set()
            _, err = first.communicate(timeout=60)
    assert second.returncode == 1 and one_line(second), second.stderr
    assert "in use by another zcopy get" in second.stderr
    assert first.returncode == 0, err
    assert (dl / "f").read_bytes() == body
    assert files_under(dl) == ["f"]


def test_resume_does_not_recreate_a_partial_file_moved_away_meanwhile(tmp_path):
    """The race of the field report: a resume measured f.part, then another
    run renamed it away before the answer came; the old client recreated it
    with O_CREAT, wrote the rest at the old offset (a sparse file whose length
    check passes) and exited 0."""
    body = os.urandom(256 << 10)
    have = 100 << 10
    dl = tmp_path / "dl"
    dl.mkdir()
    part = dl / "f.part"
    part.write_bytes(body[:have])
    try:
        os.setxattr(part, "user.zcopy.etag", b'"v1"')
        os.setxattr(part, "user.zcopy.part", b"1")           # left by an earlier zcopy get
    except OSError:
        pytest.skip("no user xattrs on this file system")
    go = threading.Event()

    def answer(head):
        def later(conn):
            go.wait(30)
            rest = body[have:]
            conn.sendall(b"HTTP/1.1 206 Partial Content\r\nContent-Length: %d\r\nETag: \"v1\"\r\n"
                         b"Content-Range: bytes %d-%d/%d\r\nConnection: close\r\n\r\n"
                         % (len(rest), have, len(body) - 1, len(body)) + rest)
        return later

    with RawServer(answer) as srv:
        proc = subprocess.Popen([sys.executable, "-m", "zcopy", "get", f"{srv.url}/f", "-o", str(dl / "f"), "-q"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            wait_for(lambda: srv.heads, what="the resume request")
            assert b"Range: bytes=%d-" % have in srv.heads[0]
            os.rename(part, dl / "elsewhere")          # what the other run's final rename does
        finally:
            go.set()
            _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and err.count("\n") == 1, err
    assert "moved or replaced" in err
    assert not (dl / "f").exists() and not part.exists()


def test_a_part_file_replaced_during_the_download_is_not_renamed_into_place(tmp_path):
    body = os.urandom(512 << 10)
    release = threading.Event()

    def answer(head):
        def slow(conn):
            conn.sendall(ok(body)[:-len(body) // 2])
            release.wait(30)
            conn.sendall(body[-len(body) // 2:])
        return slow

    dl = tmp_path / "dl"
    dl.mkdir()
    part = dl / "f.part"
    with RawServer(answer) as srv:
        proc = subprocess.Popen([sys.executable, "-m", "zcopy", "get", f"{srv.url}/f", "-o", str(dl / "f"), "-q"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            wait_for(lambda: part.exists() and part.stat().st_size >= len(body) // 2, what="half of f.part")
            (dl / "other").write_bytes(b"\0" * len(body))     # someone else's file, same length
            os.rename(dl / "other", part)
        finally:
            release.set()
            _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and err.count("\n") == 1, err
    assert "moved or replaced" in err
    assert not (dl / "f").exists()
    assert part.read_bytes() == b"\0" * len(body)             # theirs, left alone


# -- 4. credentials never follow a redirect to another origin ----------------------------------

LISTING = json.dumps({"path": "/list/", "entries": [{"name": "a", "type": "file", "size": 1, "mtime": 0}]}).encode()


def test_ls_does_not_send_the_token_to_the_host_a_redirect_names(tmp_path):
    with RawServer(lambda head: ok(LISTING, content_type="application/json")) as second:
        moved = (b"HTTP/1.1 301 Moved Permanently\r\nLocation: %b/list/\r\nContent-Length: 0\r\n\r\n"
                 % second.url.encode())
        with RawServer(lambda head: moved) as first:
            out = run("ls", f"{first.url}/list", "--token", "s3cret")
            assert first.authorization(0) == "Bearer s3cret"
    assert out.returncode == 0, out.stderr
    assert len(second.heads) == 1
    assert second.authorization(0) is None


def test_ls_keeps_the_token_on_a_redirect_within_the_origin(tmp_path):
    def answer(head):
        if head.startswith(b"GET /list "):
            return b"HTTP/1.1 301 Moved Permanently\r\nLocation: /list/\r\nContent-Length: 0\r\n\r\n"
        return ok(LISTING, content_type="application/json")

    with RawServer(answer) as srv:
        out = run("ls", f"{srv.url}/list", "--token", "s3cret")
        assert [srv.authorization(i) for i in range(len(srv.heads))] == ["Bearer s3cret"] * 2
    assert out.returncode == 0, out.stderr


def test_ls_does_not_send_an_accounts_password_to_the_host_a_redirect_names(tmp_path):
    """--user: Basic goes to the origin on the command line only (the password from the environment)."""
    with RawServer(lambda head: ok(LISTING, content_type="application/json")) as second:
        moved = (b"HTTP/1.1 302 Found\r\nLocation: %b/list/\r\nContent-Length: 0\r\n\r\n"
                 % second.url.encode())
        with RawServer(lambda head: moved) as first:
            out = run("ls", f"{first.url}/list", "--user", "alice", env={"ZCOPY_PASSWORD": "pa:ss w"})
            assert first.authorization(0) == "Basic " + base64.b64encode(b"alice:pa:ss w").decode()
    assert out.returncode == 0, out.stderr
    assert len(second.heads) == 1
    assert second.authorization(0) is None


def test_user_without_a_terminal_or_password_is_one_line_and_exit_2():
    out = run("ls", "http://127.0.0.1:9/", "--user", "alice", env={"ZCOPY_PASSWORD": ""})
    assert out.returncode == 2 and one_line(out), out.stderr
    assert "--password-stdin" in out.stderr
    out = run("ls", "http://127.0.0.1:9/", "--password-stdin")
    assert out.returncode == 2 and one_line(out) and "goes with --user" in out.stderr


# -- 6. a malformed listing is one line, never a traceback -------------------------------------

def listing(*entries) -> bytes:
    return json.dumps({"path": "/d/", "entries": list(entries)}).encode()


@pytest.mark.parametrize("doc, code, says", [
    (listing({"type": "file", "size": 1, "mtime": 0}), 1, "entry 1 has no name"),
    (listing({"name": "a", "mtime": 0}, {"name": None}), 1, "entry 2 has no name"),
    (json.dumps({"path": "/d/", "entries": "nope"}).encode(), 1, "no list of entries"),
    (b"[]", 1, "no list of entries"),
    (b"[" * 100_000, 1, "not valid JSON"),
    (b'{"entries": [{"name": "\\ud800"}]}', 0, ""),
    (listing({"name": "late", "mtime": 1e300, "size": 1}), 0, ""),
    (listing({"name": "odd", "mtime": "yesterday", "size": "big"}), 0, ""),
    (listing({"name": "huge", "mtime": -1e20, "size": 10 ** 400}), 0, ""),
    (listing({"name": "esc\x1b[2J", "mtime": float("inf")}).replace(b"Infinity", b"1e999"), 0, ""),
], ids=["no-name", "null-name", "entries-string", "not-object", "deep", "surrogate", "mtime-1e300",
        "strings", "huge-size", "escape-and-inf"])
def test_ls_survives_a_malformed_listing(doc, code, says):
    with RawServer(lambda head: ok(doc, content_type="application/json")) as srv:
        table = run("ls", f"{srv.url}/d/")
        as_json = run("ls", f"{srv.url}/d/", "--json")
    for out in (table, as_json):
        assert out.returncode == code, out.stderr
        assert "Traceback" not in out.stderr
        if code:
            assert one_line(out) and says in out.stderr, out.stderr
    if code == 0:
        assert "\x1b" not in table.stdout
        assert "?" in table.stdout or "\\ud800" in table.stdout


# -- 7. messages, overwrite, names that are not UTF-8 -------------------------------------------

@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("root")
    with Server(root, "--allow-write", "--token", TOKEN) as srv:
        yield srv


def test_rm_of_a_non_empty_folder_suggests_the_flag(server):
    os.makedirs(os.path.join(server.root, "full", "sub"))
    out = zcopy("rm", f"{server.url}/full", "--token", TOKEN)
    assert out.returncode == 1 and one_line(out), out.stderr
    assert "zcopy rm -r" in out.stderr and "recursive=1" not in out.stderr


def test_paths_are_shown_decoded_in_success_and_error_lines(server, tmp_path):
    src = tmp_path / "s"
    src.write_bytes(b"x")
    put = zcopy("put", str(src), f"{server.url}/dec/two%20words", "--token", TOKEN, "-q")
    assert put.returncode == 0, put.stderr
    put = zcopy("put", str(src), f"{server.url}/dec/two%20words", "--token", TOKEN)
    assert "\nreplaced /dec/two words (" in put.stderr
    denied = zcopy("put", str(src), f"{server.url}/dec/two%20words", "--token", "wrong")
    assert denied.stderr.startswith("zcopy put: 401 Unauthorized: /dec/two words")
    missing = zcopy("get", f"{server.url}/dec/no%20such", "-o", str(tmp_path / "n"))
    assert missing.stderr.startswith("zcopy get: 404 Not Found: /dec/no such")
    moved = zcopy("mv", f"{server.url}/dec/two%20words", "three words", "--token", TOKEN)
    assert moved.stderr == "moved: /dec/two words -> /dec/three words\n"
    removed = zcopy("rm", f"{server.url}/dec/three%20words", "--token", TOKEN)
    assert removed.stderr == "removed /dec/three words\n"


def test_get_decrypt_of_a_file_that_is_not_age_says_so(server, tmp_path):
    import pyrage

    with open(os.path.join(server.root, "plain.txt"), "wb") as f:
        f.write(b"just text, not age\n" * 100)
    key = tmp_path / "key.txt"
    key.write_text(f"{pyrage.x25519.Identity.generate()}\n")
    out = zcopy("get", f"{server.url}/plain.txt", "--decrypt", "-i", str(key), "-o", str(tmp_path / "p"))
    assert out.returncode == 1 and one_line(out), out.stderr
    assert "/plain.txt is not an age file" in out.stderr
    assert files_under(tmp_path) == ["key.txt"]


def test_get_does_not_replace_a_complete_file_without_force(server, tmp_path):
    with open(os.path.join(server.root, "v.txt"), "wb") as f:
        f.write(b"remote version")
    mine = tmp_path / "v.txt"
    mine.write_bytes(b"my local edits")
    kept = run("get", f"{server.url}/v.txt", cwd=tmp_path)
    assert kept.returncode == 1 and one_line(kept), kept.stderr
    assert "exists; use --force" in kept.stderr
    assert mine.read_bytes() == b"my local edits" and files_under(tmp_path) == ["v.txt"]
    forced = run("get", f"{server.url}/v.txt", "--force", "-q", cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert mine.read_bytes() == b"remote version" and files_under(tmp_path) == ["v.txt"]


def test_a_name_that_is_not_utf8_is_saved_with_its_bytes(tmp_path):
    with RawServer(lambda head: ok(b"bytes")) as srv:
        out = run("get", f"{srv.url}/caf%E9.txt", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert os.listdir(bytes(tmp_path)) == [b"caf\xe9.txt"]
    assert "saved caf\\xe9.txt" in out.stderr
    with RawServer(lambda head: ok(b"bytes")) as srv:                  # a local error line shows it alike
        missing = subprocess.run([sys.executable, "-m", "zcopy", "get", f"{srv.url}/f", "-o",
                                  os.path.join(bytes(tmp_path), b"gone\xe9", b"f")], capture_output=True, timeout=60)
    assert missing.returncode == 1 and missing.stderr.count(b"\n") == 1, missing.stderr
    assert missing.stderr.startswith(b"zcopy get: No such file or directory: ")
    assert missing.stderr.endswith(b"gone\\xe9\n"), missing.stderr


# -- 8. layering --------------------------------------------------------------------------------

def test_the_client_does_not_import_the_server(tmp_path):
    (tmp_path / "tok").write_text("t\n")
    code = ("import sys, argparse\n"
            "import zcopy.cmd.get, zcopy.cmd.put, zcopy.cmd.ls, zcopy.cmd.rm, zcopy.cmd.mv, zcopy.cmd.seal\n"
            "import zcopy.client.download, zcopy.client.upload, zcopy.client.remote, zcopy.client.seal\n"
            "from zcopy.client.options import resolve_token, auth_headers\n"
            f"ns = argparse.Namespace(token=None, token_file={str(tmp_path / 'tok')!r})\n"
            "assert auth_headers(resolve_token(ns)) == {'Authorization': 'Bearer t'}\n"
            "print(sorted(m for m in sys.modules if m.startswith('zcopy.server')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_put_of_a_name_that_is_not_utf8_keeps_its_bytes(server, tmp_path):
    local = os.path.join(bytes(tmp_path), b"na\xefve")
    with open(local, "wb") as f:
        f.write(b"bytes")
    os.mkdir(os.path.join(server.root, "raw"))
    out = subprocess.run([sys.executable, "-m", "zcopy", "put", local, f"{server.url}/raw/", "--token", TOKEN],
                         capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stderr.endswith(b"\ncreated /raw/na\\xefve (5 B)\n") and b"\\udc" not in out.stderr
    assert os.listdir(os.path.join(os.fsencode(server.root), b"raw")) == [b"na\xefve"]
