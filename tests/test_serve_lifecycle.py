"""Black-box tests of the server as a process: engines, workers, signals,
timeouts, limits, leaks and hostile input."""

from __future__ import annotations

import hashlib
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from serverutil import Server, connect, get, read_response, wait_for

SIZES = [0, 1, 4095, 4096, 65537, 3 * 1024 * 1024 + 7]


def worker_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))  # fds of a worker process, from /proc


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("files")
    data = {}
    for size in SIZES:
        blob = os.urandom(size)
        (root / f"f{size}").write_bytes(blob)
        data[size] = blob
    (root / "large.bin").write_bytes(os.urandom(64 << 20))
    return root, data


@pytest.mark.parametrize("engine", ["sendfile", "splice", "mmap", "readwrite"])
def test_every_engine_serves_exact_bytes(files, engine):
    root, data = files
    with Server(root, "--engine", engine) as s:
        assert "send engine".encode() in s.stderr
        with connect(s.port) as c:
            for size, blob in data.items():
                c.sendall(f"GET /f{size} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
                status, h, body, _ = read_response(c)
                assert status == 200 and body == blob, size
                if size < 8:
                    continue
                c.sendall(f"GET /f{size} HTTP/1.1\r\nHost: t\r\nRange: bytes=1-2,-3\r\n\r\n".encode())
                status, h, body, _ = read_response(c)
                assert status == 206
                assert blob[1:3] in body and body.count(blob[-3:]) >= 1
                c.sendall(f"GET /f{size} HTTP/1.1\r\nHost: t\r\nRange: bytes=5-\r\n\r\n".encode())
                assert read_response(c)[2] == blob[5:]
        assert s.stop() == 0


def test_two_workers_share_the_port_and_a_dead_worker_is_replaced(files):
    root, data = files
    with Server(root, "--workers", "2") as s:
        pids = s.worker_pids(2)
        assert len(pids) == 2
        os.kill(pids[0], signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            now = s.worker_pids(0)
            if len(now) == 2 and pids[0] not in now:
                break
            time.sleep(0.05)
        assert len(s.worker_pids(2)) == 2 and pids[0] not in s.worker_pids(2)
        for _ in range(20):
            assert get(s.port, "/f4096")[2] == data[4096]
        assert s.stop() == 0


def test_sigterm_drains_an_inflight_download(files):
    root, _ = files
    expected = hashlib.sha256((root / "large.bin").read_bytes()).hexdigest()
    with Server(root) as s:
        c = connect(s.port)
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        c.sendall(b"GET /large.bin HTTP/1.1\r\nHost: t\r\n\r\n")
        first = c.recv(65536)
        assert first.startswith(b"HTTP/1.1 200")
        s.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        with pytest.raises(ConnectionRefusedError):   # no new connections while draining
            connect(s.port, timeout=2)
        data = bytearray(first)              # bytes += would copy quadratically
        while True:
            chunk = c.recv(1 << 20)
            if not chunk:
                break
            data += chunk
        c.close()
        body = bytes(data).split(b"\r\n\r\n", 1)[1]
        assert hashlib.sha256(body).hexdigest() == expected
        assert s.proc.wait(20) == 0


def test_a_request_answered_while_draining_says_connection_close(files):
    """RFC 9112 9.6: a request already read (pipelined behind a download in
    flight when SIGTERM came) is still answered, with ``Connection: close``,
    and then the connection ends."""
    root, _ = files
    with Server(root) as s:
        c = connect(s.port)
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        # Two pipelined requests, read together; the first stalls on our small buffer.
        c.sendall(b"GET /large.bin HTTP/1.1\r\nHost: t\r\n\r\nGET /f4096 HTTP/1.1\r\nHost: t\r\n\r\n")
        # The download has begun (so both requests were read) before the signal: a fixed sleep
        # was not always long enough for a worker just started on a loaded machine.
        assert select.select([c], [], [], 20)[0]
        s.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        status, h, _, _ = read_response(c)           # the download (its head left before the signal)
        assert status == 200 and "connection" not in h
        status, h, body, _ = read_response(c)
        assert (status, h.get("connection"), len(body)) == (200, "close", 4096)
        assert c.recv(10) == b""                     # and then the connection ends
        c.close()
        assert s.proc.wait(20) == 0


def test_second_signal_exits_at_once(files):
    root, _ = files
    with Server(root, "--drain-timeout", "60") as s:
        c, _ = _stalled_download(s.port, "/large.bin")
        s.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        assert s.proc.poll() is None          # still draining: the client is not reading
        s.proc.send_signal(signal.SIGTERM)
        assert s.proc.wait(5) != 0
        c.close()


def test_drain_is_bounded_by_the_drain_timeout(files):
    """A client that stops reading cannot hold a stopping server: after
    --drain-timeout the worker's last connections are closed and it exits 0."""
    root, _ = files
    with Server(root, "--drain-timeout", "1") as s:
        c, left = _stalled_download(s.port, "/large.bin")
        s.proc.send_signal(signal.SIGTERM)
        assert s.proc.wait(20) == 0                   # the default drain timeout is 30 s
        assert _read_to_end(c)[0] < left
        c.close()


def test_client_vanishing_midtransfer_leaks_no_fd(files):
    root, _ = files
    with Server(root) as s:
        pid = s.worker_pids()[0]

        def fds() -> dict[int, str]:
            out = {}
            for f in os.listdir(f"/proc/{pid}/fd"):
                try:
                    out[int(f)] = os.readlink(f"/proc/{pid}/fd/{f}")
                except FileNotFoundError:       # a transient fd closed since the listing
                    pass
            return out

        def hashed(path: str) -> bool:
            # The content digest (zcopy.server.digests) is computed off the loop on a
            # dup of the file, and its entry is rebuilt when it is known: a strong
            # "z1-" ETag says that job is over and its dup closed.
            return get(s.port, path, method="HEAD")[1].get("etag", "").startswith('"z1-')

        wait_for(lambda: hashed("/f4096"), what="the digest of f4096")
        baseline = fds()
        for _ in range(10):
            c = connect(s.port)
            c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            c.sendall(b"GET /large.bin HTTP/1.1\r\nHost: t\r\n\r\n")
            c.recv(1000)
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            c.close()                                # RST mid-transfer
        wait_for(lambda: hashed("/large.bin"), what="the digest of large.bin")

        def leaked() -> list[tuple[int, str]]:
            # What is open now that was not before, beyond one cache entry of
            # large.bin; a per-connection leak (socket, pipe, file dup) stays.
            now = fds()
            extra = sorted((fd, t) for fd, t in now.items() if baseline.get(fd) != t)
            entries = [x for x in extra if x[1].endswith("/large.bin")]
            return [x for x in extra if x not in entries[:1]]

        try:
            wait_for(lambda: not leaked(), what="the worker's fds back to the baseline")
        except AssertionError:
            raise AssertionError(f"left open: {leaked()}; baseline {sorted(baseline.items())}") from None


def test_header_timeout_slowloris(files):
    root, _ = files
    with Server(root, "--header-timeout", "1") as s:
        with connect(s.port) as c:
            c.sendall(b"GET /f1 HTTP/1.1\r\nHost: t\r\n")
            time.sleep(2.5)
            data = c.recv(1000)
            assert data.startswith(b"HTTP/1.1 408") or data == b""
        assert get(s.port, "/f1")[0] == 200


def test_idle_keepalive_timeout(files):
    root, _ = files
    with Server(root, "--idle-timeout", "1") as s:
        with connect(s.port) as c:
            c.sendall(b"GET /f1 HTTP/1.1\r\nHost: t\r\n\r\n")
            read_response(c)
            time.sleep(2.5)
            assert c.recv(10) == b""


def _read_to_end(c: socket.socket) -> tuple[int, bool]:
    """Bytes until the server ends the connection, and whether it did so with a FIN."""
    got = 0
    try:
        while True:
            chunk = c.recv(1 << 20)
            if not chunk:
                return got, True
            got += len(chunk)
    except ConnectionResetError:
        return got, False


def _stalled_download(port: int, path: str) -> tuple[socket.socket, int]:
    """A GET whose client stops reading after the head: (socket, Content-Length)."""
    c = socket.socket()
    c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    c.settimeout(15)
    c.connect(("127.0.0.1", port))
    c.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    head = c.recv(4096)
    assert head.startswith(b"HTTP/1.1 200")
    length = int(re.search(rb"Content-Length: (\d+)", head).group(1))
    return c, length - len(head.split(b"\r\n\r\n", 1)[1])


def test_a_stalled_download_is_closed_after_the_send_timeout(files):
    root, data = files
    with Server(root, "--send-timeout", "1") as s:
        c, left = _stalled_download(s.port, "/large.bin")
        time.sleep(2.5)                               # accept nothing for longer than the timeout
        got, _ = _read_to_end(c)                      # what the kernel buffered, then the end
        c.close()
        assert got < left
        assert get(s.port, "/f4096")[2] == data[4096]


def test_a_file_shrinking_mid_send_closes_that_connection(tmp_path):
    """The response is never padded or left hanging: the connection ends short
    of its Content-Length, the worker goes on, and the next request sees the
    new length."""
    path = tmp_path / "shrinks.bin"
    with open(path, "wb") as f:
        f.truncate(64 << 20)                          # sparse: no disk, no page cache to fill
    with Server(tmp_path) as s:
        pid = s.worker_pids()[0]
        c, left = _stalled_download(s.port, "/shrinks.bin")
        os.truncate(path, 1 << 20)
        got, _ = _read_to_end(c)                      # without the close this would hang (timeout)
        c.close()
        assert got < left
        status, h, body = get(s.port, "/shrinks.bin")
        assert (status, h["content-length"], len(body)) == (200, str(1 << 20), 1 << 20)
        assert s.worker_pids() == [pid]


def test_max_connections_holds_the_rest_in_the_backlog(files):
    root, data = files
    with Server(root, "--max-connections", "2") as s:
        held = [connect(s.port) for _ in range(2)]
        for c in held:
            c.sendall(b"GET /f1 HTTP/1.1\r\nHost: t\r\n\r\n")
            read_response(c)
        waiting = connect(s.port)
        waiting.sendall(b"GET /f1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        waiting.settimeout(0.5)
        with pytest.raises(socket.timeout):
            waiting.recv(10)
        held[0].close()
        waiting.settimeout(5)
        assert read_response(waiting)[2] == data[1]
        for c in held[1:] + [waiting]:
            c.close()


def test_emfile_does_not_spin_and_recovers(files):
    """RLIMIT_NOFILE makes accept fail with EMFILE; the worker must back off
    (low CPU) and serve again once fds are free."""
    root, data = files
    limit = 40
    env_cmd = [sys.executable, "-c",
               "import resource,sys,runpy; resource.setrlimit(resource.RLIMIT_NOFILE, (%d, %d)); "
               "sys.argv=['zcopy']+sys.argv[1:]; runpy.run_module('zcopy', run_name='__main__')" % (limit, limit)]
    proc = subprocess.Popen(env_cmd + ["serve", str(root), "--port", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        buf = b""
        while b"http://127.0.0.1:" not in buf or not re.search(rb":(\d+)/", buf):
            buf += os.read(proc.stderr.fileno(), 4096)
        port = int(re.search(rb"http://127\.0\.0\.1:(\d+)/", buf).group(1))
        time.sleep(0.3)
        clients = []
        for _ in range(limit + 10):
            try:
                clients.append(socket.create_connection(("127.0.0.1", port), timeout=2))
            except OSError:
                break
        time.sleep(0.5)
        worker = int(open(f"/proc/{proc.pid}/task/{proc.pid}/children").read().split()[0])
        cpu0 = _cpu(worker)
        time.sleep(1.0)
        cpu1 = _cpu(worker)
        assert cpu1 - cpu0 < 0.5, "worker spins on EMFILE"
        for c in clients:
            c.close()
        time.sleep(0.5)
        assert get(port, "/f4096")[2] == data[4096]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def _cpu(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def test_startup_errors_are_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = subprocess.run([sys.executable, "-m", "zcopy", "serve", str(tmp_path), "--port", str(port)],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode != 0
        assert len(out.stderr.strip().splitlines()) == 1 and "in use" in out.stderr
    out = subprocess.run([sys.executable, "-m", "zcopy", "serve", str(tmp_path / "missing")],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode != 0 and len(out.stderr.strip().splitlines()) == 1
    out = subprocess.run([sys.executable, "-m", "zcopy", "serve", "--workers", "zero"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
    # an access log that cannot be opened: one line at start, not every worker dying in a loop
    out = subprocess.run([sys.executable, "-m", "zcopy", "serve", str(tmp_path), "--port", "0",
                          "--access-log", str(tmp_path / "no" / "such" / "dir.log")],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        f"zcopy serve: error: cannot open --access-log {tmp_path}/no/such/dir.log: No such file or directory"]


def test_access_log_combined_format(files, tmp_path):
    root, _ = files
    log = tmp_path / "access.log"
    with Server(root, "--access-log", str(log)) as s:
        get(s.port, "/f1", {"User-Agent": 'evil" "agent', "Referer": "http://x/"})
        _, _, not_found = get(s.port, "/nope")
        (root / "folder").mkdir(exist_ok=True)
        _, _, moved = get(s.port, "/folder")
        get(s.port, "/nope", method="HEAD")
        assert s.stop() == 0
    lines = log.read_text().splitlines()
    assert len(lines) == 4
    assert re.match(r'127\.0\.0\.1 - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] "GET /f1 HTTP/1\.1" 200 1 '
                    r'"http://x/" "evil\\x22 \\x22agent"$', lines[0]), lines[0]
    # the size field is the body that left, for error pages and redirects too (none for HEAD)
    assert f'"GET /nope HTTP/1.1" 404 {len(not_found)} ' in lines[1], lines[1]
    assert f'"GET /folder HTTP/1.1" 301 {len(moved)} ' in lines[2], lines[2]
    assert '"HEAD /nope HTTP/1.1" 404 - ' in lines[3], lines[3]


@pytest.fixture(scope="module", params=["plain", "tls"])
def fuzz_server(files, request):
    """Both transports: over TLS the same bytes arrive inside records (and a half-close is a
    close_notify)."""
    root, _ = files
    with Server(root, "--header-timeout", "2", tls=request.param == "tls") as s:
        yield s


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.one_of(
    st.binary(max_size=300),
    st.builds(lambda m, p, v, h: b"%s %s %s\r\n%s\r\n" % (m, p, v, h),
              st.sampled_from([b"GET", b"HEAD", b"PUT", b"G\x00T", b"", b"get"]),
              st.binary(max_size=40), st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/9", b""]),
              st.binary(max_size=80)),
))
def test_random_bytes_never_crash_a_worker(fuzz_server, data):
    pid = fuzz_server.worker_pids()[0]
    with connect(fuzz_server.port, timeout=5) as c:
        c.sendall(data)
        c.shutdown(socket.SHUT_WR)
        reply = b""
        try:
            while True:
                chunk = c.recv(65536)
                if not chunk:
                    break
                reply += chunk
        except ConnectionResetError:
            pass
    if reply:
        _assert_well_formed(reply, head_request=data.lstrip(b"\r\n").startswith(b"HEAD "))
    assert fuzz_server.worker_pids() == [pid]


def _assert_well_formed(reply: bytes, *, head_request: bool) -> None:
    """The first response is a whole head of "Name: value" fields, framed by a
    Content-Length that its body fills (none after a HEAD, 204 or 304)."""
    head, sep, body = reply.partition(b"\r\n\r\n")
    assert sep, reply[:200]
    lines = head.split(b"\r\n")
    m = re.fullmatch(rb"HTTP/1\.1 ([1-5]\d\d) [A-Za-z -]+", lines[0])
    assert m, lines[0]
    fields = {}
    for line in lines[1:]:
        name, colon, value = line.partition(b": ")
        assert colon and re.fullmatch(rb"[A-Za-z-]+", name), line
        fields[name.lower()] = value
    status = int(m.group(1))
    if status in (204, 304):
        assert b"content-length" not in fields
        return
    length = int(fields[b"content-length"])
    if not head_request:
        assert len(body) >= length, (length, len(body))


def test_access_log_to_a_closed_pipe_does_not_hurt_serving(files):
    """`zcopy serve --access-log - | head -1`: once the reader is gone the log
    turns off with one message; the worker keeps serving."""
    root, data = files
    with Server(root, "--access-log", "-") as s:
        pid = s.worker_pids()[0]
        s.proc.stdout.close()                      # the reader goes away
        for _ in range(3):
            assert get(s.port, "/f4096")[2] == data[4096]
            time.sleep(1.1)                        # a tick flushes the log into the closed pipe
        assert get(s.port, "/f4096")[2] == data[4096]
        assert s.worker_pids() == [pid]
        said = b""
        while select.select([s.proc.stderr], [], [], 2)[0]:
            said += os.read(s.proc.stderr.fileno(), 4096)
            if b"access log off" in said:
                break
        assert b"access log off" in said
        s.proc.stdout = None
        assert s.stop() == 0


def test_a_cut_download_is_logged_with_the_bytes_that_left(files, tmp_path):
    root, _ = files
    log = tmp_path / "access.log"
    size = os.path.getsize(root / "large.bin")
    with Server(root, "--access-log", str(log)) as s:
        c = connect(s.port)
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        c.sendall(b"GET /large.bin HTTP/1.1\r\nHost: t\r\n\r\n")
        got = 0
        while got < 200_000:                        # some of the body has left the server
            got += len(c.recv(65536))
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        c.close()                                   # RST mid-transfer
        time.sleep(0.3)
        assert s.stop() == 0
    [line] = log.read_text().splitlines()
    sent = int(re.search(r'" 200 (\d+) ', line).group(1))
    assert 0 < sent < size


def test_a_stalled_upload_gets_408(tmp_path):
    with Server(tmp_path, "--allow-write", "--send-timeout", "1") as s:
        with connect(s.port) as c:
            c.sendall(b"PUT /slow.bin HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
            c.settimeout(5)
            assert c.recv(100).startswith(b"HTTP/1.1 408")
    assert os.listdir(tmp_path) == []


def test_out_of_fds_at_accept_the_cache_gives_one_back_and_the_client_is_served(tmp_path):
    """The worker's fd table full (RLIMIT_NOFILE lowered to just above its highest fd), most of
    it held by cached files no transfer uses: new clients are accepted with fds the cache
    closes, and served, instead of waiting in the backlog until some other fd happens to close
    (the old behaviour: EMFILE, back off 0.25 s, EMFILE again, for as long as the cache holds on)."""
    import resource

    root = tmp_path / "many"
    root.mkdir()
    for i in range(24):
        (root / f"f{i}.txt").write_bytes(b"%d" % i * 100)
    with Server(root) as s:
        [worker] = s.worker_pids(at_least=1)
        with connect(s.port) as c:                  # one keep-alive connection opens them all
            for i in range(24):
                c.sendall(f"GET /f{i}.txt HTTP/1.1\r\nHost: t\r\n\r\n".encode())
                assert read_response(c)[0] == 200
        # The content digests run off the loop on dups: wait until each is done (a strong tag),
        # so that the fds counted below are the cache's own.
        for i in range(24):
            wait_for(lambda: get(s.port, f"/f{i}.txt", method="HEAD")[1].get("etag", "").startswith('"z1-'),
                     what=f"the digest of f{i}.txt")
        fds = [int(fd) for fd in os.listdir(f"/proc/{worker}/fd")]
        limit = max(fds) + 1                        # the limit bounds fd numbers, not counts
        free = limit - len(fds)                     # numbers below it that closed fds left free
        old = resource.prlimit(worker, resource.RLIMIT_NOFILE)
        resource.prlimit(worker, resource.RLIMIT_NOFILE, (limit, old[1]))
        clients = []
        try:
            for n in range(free + 8):               # 8 more clients than free numbers
                c = connect(s.port)
                clients.append(c)
                c.settimeout(5)                     # the old code left the ninth in the backlog
                c.sendall(b"GET /f23.txt HTTP/1.1\r\nHost: t\r\n\r\n")
                status, _, body, _ = read_response(c)
                assert (status, body) == (200, b"23" * 100), f"client {n + 1} of {free + 8}"
        finally:
            resource.prlimit(worker, resource.RLIMIT_NOFILE, old)
            for c in clients:
                c.close()
