"""`zcopy get | put | ls | rm | mv` against a real `zcopy serve --allow-write`,
run as the user runs them: subprocesses, real sockets, real files."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import threading

import pytest

from conftest import needs_root
from serverutil import Server, wait_for

TOKEN = "t0ken-for-tests"


def zcopy(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "zcopy", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("root")
    with Server(root, "--allow-write", "--token", TOKEN) as srv:
        yield srv


@pytest.fixture
def work(tmp_path, server):
    """A fresh remote folder per test (so tests do not see each other's files)."""
    name = tmp_path.name
    os.mkdir(os.path.join(server.root, name))
    return tmp_path, f"{server.url}/{name}", os.path.join(server.root, name)


def settled(path) -> None:
    """Wait until ``path`` has been quiet long enough for the server to give it a strong ETag, as a
    file that has been there a while has: one changed less than ``digests.QUIET`` ago gets a weak
    one, which If-Range may not use (RFC 9110 13.1.5), so its download could not resume."""
    from zcopy.server.digests import quiet

    wait_for(lambda: quiet(os.stat(path)), timeout=5, what=f"{path} to be quiet")


def write_random(path, size: int) -> str:
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            block = os.urandom(min(left, 1 << 20))
            f.write(block)
            digest.update(block)
            left -= len(block)
    return digest.hexdigest()


def sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


@pytest.mark.parametrize("size", [0, 1, 64 << 20], ids=["0B", "1B", "64MiB"])
def test_put_then_get_round_trip(work, size):
    tmp, url, remote_dir = work
    src = tmp / "src.bin"
    digest = write_random(src, size)
    put = zcopy("put", str(src), f"{url}/data.bin", "--token", TOKEN)
    assert put.returncode == 0, put.stderr
    assert "created" in put.stderr
    assert sha256(os.path.join(remote_dir, "data.bin")) == digest
    got = zcopy("get", f"{url}/data.bin", "-o", str(tmp / "back.bin"))
    assert got.returncode == 0, got.stderr
    assert sha256(tmp / "back.bin") == digest
    assert not (tmp / "back.bin.part").exists()
    again = zcopy("put", str(src), f"{url}/data.bin", "--token", TOKEN, "-q")
    assert again.returncode == 0 and again.stderr == ""


def test_put_to_folder_url_keeps_the_name_and_token_sources(work):
    tmp, url, remote_dir = work
    src = tmp / "named.txt"
    src.write_bytes(b"hello")
    (tmp / "tok").write_text(TOKEN + "\n")
    assert zcopy("put", str(src), f"{url}/a/", "--token-file", str(tmp / "tok")).returncode == 0
    assert zcopy("put", str(src), f"{url}/b/", env={"ZCOPY_TOKEN": TOKEN}).returncode == 0
    assert open(os.path.join(remote_dir, "a", "named.txt"), "rb").read() == b"hello"
    assert open(os.path.join(remote_dir, "b", "named.txt"), "rb").read() == b"hello"


@pytest.mark.parametrize("token", [None, "wrong"])
def test_put_without_the_right_token_fails_with_401_and_changes_nothing(work, token):
    tmp, url, remote_dir = work
    src = tmp / "x"
    src.write_bytes(b"new")
    with open(os.path.join(remote_dir, "x"), "wb") as f:
        f.write(b"old")
    args = ["--token", token] if token else []
    out = zcopy("put", str(src), f"{url}/x", *args, env={"ZCOPY_TOKEN": ""})
    assert out.returncode != 0
    assert out.stderr.startswith("zcopy put: 401 Unauthorized: /")
    assert len(out.stderr.strip().splitlines()) == 1
    assert open(os.path.join(remote_dir, "x"), "rb").read() == b"old"


def test_get_missing_file_is_one_line_with_the_status(work):
    tmp, url, _ = work
    out = zcopy("get", f"{url}/missing", "-o", str(tmp / "m"))
    assert out.returncode == 1
    assert out.stderr.startswith("zcopy get: 404 Not Found: /")
    assert len(out.stderr.strip().splitlines()) == 1
    assert not (tmp / "m").exists() and not (tmp / "m.part").exists()


def test_connection_refused_is_one_line(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    out = zcopy("get", f"http://127.0.0.1:{port}/x", "-o", str(tmp_path / "x"))
    assert out.returncode == 1
    assert out.stderr.startswith("zcopy get: cannot connect to 127.0.0.1:")


def test_bad_url_is_an_error(tmp_path):
    out = zcopy("get", "ftp://example/x")
    assert out.returncode == 1 and "not an http:// or https:// URL" in out.stderr


def test_ls_table_and_json(work):
    tmp, url, remote_dir = work
    os.mkdir(os.path.join(remote_dir, "folder"))
    with open(os.path.join(remote_dir, "file one.txt"), "wb") as f:
        f.write(b"x" * 1536)
    table = zcopy("ls", url)  # no trailing slash: follows the redirect
    assert table.returncode == 0, table.stderr
    assert "folder/" in table.stdout and "file one.txt" in table.stdout and "1.5 KiB" in table.stdout
    doc = json.loads(zcopy("ls", url + "/", "--json").stdout)
    by_name = {e["name"]: e for e in doc["entries"]}
    assert by_name["folder"]["type"] == "dir"
    assert by_name["file one.txt"]["size"] == 1536
    one = json.loads(zcopy("ls", f"{url}/file%20one.txt", "--json").stdout)
    assert [(e["name"], e["size"]) for e in one["entries"]] == [("file one.txt", 1536)]


def test_rm_file_and_folders(work):
    tmp, url, remote_dir = work
    os.makedirs(os.path.join(remote_dir, "d", "e"))
    with open(os.path.join(remote_dir, "d", "e", "f"), "wb") as f:
        f.write(b"1")
    with open(os.path.join(remote_dir, "g"), "wb") as f:
        f.write(b"1")
    assert zcopy("rm", f"{url}/g", "--token", TOKEN).returncode == 0
    assert not os.path.exists(os.path.join(remote_dir, "g"))
    refused = zcopy("rm", f"{url}/d", "--token", TOKEN)
    assert refused.returncode == 1 and "409" in refused.stderr
    assert os.path.exists(os.path.join(remote_dir, "d", "e", "f"))
    assert zcopy("rm", "-r", f"{url}/d", "--token", TOKEN).returncode == 0
    assert not os.path.exists(os.path.join(remote_dir, "d"))
    gone = zcopy("rm", f"{url}/g", "--token", TOKEN)
    assert gone.returncode == 1 and gone.stderr.startswith("zcopy rm: 404 Not Found")


def test_mv_relative_absolute_and_no_clobber(work):
    tmp, url, remote_dir = work
    base = os.path.basename(remote_dir)
    for name in ("a", "b"):
        with open(os.path.join(remote_dir, name), "wb") as f:
            f.write(name.encode())
    assert zcopy("mv", f"{url}/a", "c", "--token", TOKEN).returncode == 0        # relative to the folder
    assert open(os.path.join(remote_dir, "c"), "rb").read() == b"a"
    os.mkdir(os.path.join(remote_dir, "sub"))
    assert zcopy("mv", f"{url}/c", f"/{base}/sub/", "--token", TOKEN).returncode == 0  # into a folder
    assert open(os.path.join(remote_dir, "sub", "c"), "rb").read() == b"a"
    kept = zcopy("mv", f"{url}/b", f"{url}/sub/c", "-n", "--token", TOKEN)          # same-server URL
    assert kept.returncode == 1 and "412" in kept.stderr
    assert open(os.path.join(remote_dir, "sub", "c"), "rb").read() == b"a"
    assert zcopy("mv", f"{url}/b", f"{url}/sub/c", "--token", TOKEN).returncode == 0
    assert open(os.path.join(remote_dir, "sub", "c"), "rb").read() == b"b"
    denied = zcopy("mv", f"{url}/sub/c", "d", "--token", "nope")
    assert denied.returncode == 1 and "401" in denied.stderr


class CuttingProxy:
    """Forwards one connection to the server and cuts it after ``limit``
    response bytes: a real interrupted download."""

    def __init__(self, port: int, limit: int) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._run, args=(port, limit), daemon=True)
        self.thread.start()

    def _run(self, port: int, limit: int) -> None:
        client, _ = self.listener.accept()
        with client, socket.create_connection(("127.0.0.1", port)) as up:
            up.sendall(client.recv(65536))  # the request head: a GET is one small packet
            sent = 0
            while sent < limit:
                data = up.recv(min(65536, limit - sent))
                if not data:
                    break
                client.sendall(data)
                sent += len(data)

    def close(self) -> None:
        self.thread.join(10)
        self.listener.close()


def test_interrupted_download_resumes_with_range(work, server):
    tmp, url, remote_dir = work
    digest = write_random(os.path.join(remote_dir, "big"), 8 << 20)
    settled(os.path.join(remote_dir, "big"))
    path = url.partition(f":{server.port}")[2]
    proxy = CuttingProxy(server.port, 3 << 20)
    try:
        cut = zcopy("get", f"http://127.0.0.1:{proxy.port}{path}/big", "-o", str(tmp / "big"))
    finally:
        proxy.close()
    assert cut.returncode == 1 and "connection closed" in cut.stderr
    part = tmp / "big.part"
    have = part.stat().st_size
    assert 0 < have < 8 << 20
    assert not (tmp / "big").exists()
    os.truncate(part, have // 2)  # a shorter partial resumes as well
    resumed = zcopy("get", f"{url}/big", "-o", str(tmp / "big"))
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed at" in resumed.stderr
    assert sha256(tmp / "big") == digest
    assert not part.exists()


def test_partial_of_a_changed_file_is_fetched_whole(work, server):
    tmp, url, remote_dir = work
    write_random(os.path.join(remote_dir, "f"), 4 << 20)
    path = url.partition(f":{server.port}")[2]
    proxy = CuttingProxy(server.port, 1 << 20)
    try:
        zcopy("get", f"http://127.0.0.1:{proxy.port}{path}/f", "-o", str(tmp / "f"))
    finally:
        proxy.close()
    assert (tmp / "f.part").stat().st_size > 0
    digest = write_random(os.path.join(remote_dir, "f"), 3 << 20)  # new content, new ETag
    out = zcopy("get", f"{url}/f", "-o", str(tmp / "f"))
    assert out.returncode == 0, out.stderr
    assert "resumed" not in out.stderr           # If-Range failed: the server sent it all
    assert sha256(tmp / "f") == digest


def test_get_of_a_folder_says_so(work):
    tmp, url, remote_dir = work
    os.mkdir(os.path.join(remote_dir, "dir"))
    out = zcopy("get", f"{url}/dir", "-o", str(tmp / "x"))
    assert out.returncode == 1 and "301" in out.stderr and "folder" in out.stderr


def test_get_into_a_folder_and_local_errors_are_one_line(work):
    tmp, url, remote_dir = work
    with open(os.path.join(remote_dir, "f.bin"), "wb") as f:
        f.write(b"data")
    (tmp / "into").mkdir()
    out = zcopy("get", f"{url}/f.bin", "-o", str(tmp / "into"))
    assert out.returncode == 0, out.stderr
    assert (tmp / "into" / "f.bin").read_bytes() == b"data"
    out = zcopy("get", f"{url}/f.bin", "-o", str(tmp / "missing" / "f.bin"))
    assert out.returncode == 1 and out.stderr.count("\n") == 1, out.stderr
    assert out.stderr.startswith("zcopy get: No such file or directory: ") and "Traceback" not in out.stderr


@needs_root
def test_get_onto_a_full_disk_is_one_line(work):
    tmp, url, remote_dir = work
    write_random(os.path.join(remote_dir, "big"), 3 << 20)
    mnt = tmp / "tiny"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], check=True)
    try:
        out = zcopy("get", f"{url}/big", "-o", str(mnt / "big"), "-q")
        assert out.returncode == 1 and out.stderr == "zcopy get: No space left on device\n"
        assert not (mnt / "big").exists()      # only big.part, to resume once there is room
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


@pytest.mark.parametrize("answer", [b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
                                    b"HTTP/1.1 2x0 OK\r\n\r\n", b"SSH-2.0-OpenSSH_9.2\r\n\r\n"])
def test_get_refuses_a_malformed_response_head(tmp_path, answer):
    """Response heads are parsed by httptools: a broken one is a one-line
    error and a non-zero exit, and no file is written."""
    listener = socket.create_server(("127.0.0.1", 0))

    def answer_once():
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(answer)

    t = threading.Thread(target=answer_once, daemon=True)
    t.start()
    try:
        out = subprocess.run([sys.executable, "-m", "zcopy", "get",
                              f"http://127.0.0.1:{listener.getsockname()[1]}/f", "-o", str(tmp_path / "f")],
                             capture_output=True, text=True, timeout=30)
    finally:
        t.join(10)
        listener.close()
    assert out.returncode != 0
    assert len(out.stderr.strip().splitlines()) == 1 and "response" in out.stderr, out.stderr
    assert not (tmp_path / "f").exists()


class RawServer:
    """A tiny misbehaving HTTP server: after reading the request, it sends
    ``first`` and then ``again`` every ``period`` seconds until the client
    goes away."""

    def __init__(self, first: bytes, again: bytes, period: float) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.first, self.again, self.period = first, again, period
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}"

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            conn.recv(65536)
            try:
                conn.sendall(self.first)
                while not self.stop.wait(self.period):
                    conn.sendall(self.again)
            except OSError:
                pass                     # the client gave up: what the test wants

    def __enter__(self) -> "RawServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(10)
        self.listener.close()


def test_get_refuses_an_endless_stream_of_100_continue(tmp_path):
    """Issue 15.8: interim responses are bounded in number, so a server that
    answers every request with 100 Continue forever cannot hold the client."""
    interim = b"HTTP/1.1 100 Continue\r\n\r\n"
    with RawServer(interim, interim, 0.01) as raw:
        out = zcopy("get", f"{raw.url}/f", "-o", str(tmp_path / "f"), timeout=30)
    assert out.returncode == 1
    assert len(out.stderr.strip().splitlines()) == 1 and "interim" in out.stderr, out.stderr
    assert not (tmp_path / "f").exists()


def test_a_head_that_never_ends_is_bounded_in_time():
    """Issue 15.8: a server that trickles header fields forever (each recv
    returns before the socket timeout) is given ``timeout`` seconds for the
    whole head, not per byte."""
    from zcopy.client.connection import Connection
    from zcopy.client.errors import ClientError
    from zcopy.client.url import parse_url

    with RawServer(b"HTTP/1.1 200 OK\r\n", b"X-Drip: 1\r\n", 0.05) as raw:
        with Connection(parse_url(f"{raw.url}/f"), timeout=1.0) as conn:
            conn.send_head("GET", "/f")
            with pytest.raises(ClientError, match="no complete response head within 1 s"):
                conn.read_head()
