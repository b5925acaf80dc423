"""`zcopy serve --tls-cert/--tls-key` over real sockets with real clients (curl, openssl s_client, a
TLS client on memory BIOs): exact bytes with ranges and conditionals, TLS 1.3 and ALPN, plain HTTP on
the HTTPS port, bad certificates, SIGHUP reloads, half-open handshakes, the redirect port, the
session cookie's Secure flag, and which path (kTLS or user-space TLS) the bytes took."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import resource
import select
import signal
import socket
import ssl
import subprocess
import sys
import time

import pytest

from conftest import needs_tool
from serverutil import (Server, TlsClient, connect, curl, make_cert, owner, read_response, request,
                        serve_refused, server_inode, sockets_of, wait_for)
from zcopy.tls import ulp_available

pytestmark = needs_tool("openssl")

BIG = os.urandom(6 * 1024 * 1024 + 13)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("www")
    (root / "big.bin").write_bytes(BIG)
    (root / "hello.txt").write_bytes(b"hello over tls\n")
    return root


@pytest.fixture(scope="module")
def server(root):
    with Server(root, "--header-timeout", "30", tls=True) as s:
        yield s


def get_raw(port: int, path: str, headers: str = "") -> tuple[int, dict, bytes]:
    return request(port, f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{headers}\r\n".encode())


def test_curl_downloads_byte_identical_with_ranges_and_conditionals(server, tmp_path):
    out = tmp_path / "big"
    r = curl("-o", str(out), "-w", "%{http_code} %{ssl_verify_result}", f"https://localhost:{server.port}/big.bin")
    assert r.stdout == b"200 0", r.stderr
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(BIG).digest()
    r = curl("-r", "1000000-2999999", f"https://localhost:{server.port}/big.bin")
    assert r.stdout == BIG[1000000:3000000]
    r = curl("-D", "-", "-o", "/dev/null", f"https://localhost:{server.port}/big.bin")
    etag = re.search(rb"(?im)^etag: (\S+)", r.stdout).group(1).decode()
    r = curl("-H", f"If-None-Match: {etag}", "-w", "%{http_code}", "-o", "/dev/null",
             f"https://localhost:{server.port}/big.bin")
    assert r.stdout == b"304"
    # A resumed download (curl -C -) ends byte-identical.
    part = tmp_path / "part"
    part.write_bytes(BIG[:12345])
    r = curl("-C", "-", "-o", str(part), f"https://localhost:{server.port}/big.bin")
    assert r.returncode == 0 and part.read_bytes() == BIG


def test_keep_alive_requests_over_one_tls_connection(server):
    with connect(server.port) as c:
        for _ in range(3):
            c.sendall(b"GET /big.bin HTTP/1.1\r\nHost: localhost\r\nRange: bytes=5-99999\r\n\r\n")
            status, h, body, _ = read_response(c)
            assert (status, body) == (206, BIG[5:100000])
        c.sendall(b"GET /hello.txt HTTP/1.1\r\nHost: localhost\r\n\r\nGET /hello.txt HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert read_response(c)[2] == read_response(c)[2] == b"hello over tls\n"


@needs_tool("openssl")
def test_openssl_s_client_sees_tls13_and_alpn_http11(server):
    cert = server.tls[0]
    out = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{server.port}", "-servername", "localhost",
                          "-alpn", "http/1.1", "-CAfile", cert, "-verify_return_error", "-ign_eof"],
                         input=b"GET /hello.txt HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
                         capture_output=True, timeout=30)
    text = out.stdout.decode(errors="replace")
    assert "TLSv1.3" in text and "ALPN protocol: http/1.1" in text, text
    assert "Verify return code: 0 (ok)" in text
    assert "hello over tls" in text
    # TLS 1.2 with an AEAD cipher works (TLS 1.1's refusal: tests/test_tls_context.py).
    out12 = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{server.port}", "-tls1_2", "-CAfile", cert],
                           input=b"", capture_output=True, timeout=30)
    assert re.search(rb"Cipher is ECDHE-\w+-(AES\d+-GCM-SHA\d+|CHACHA20-POLY1305)", out12.stdout), out12.stdout[-800:]


def test_sni_names_are_accepted(server):
    for name in ("localhost", "other.example"):
        ctx = ssl.create_default_context(cafile=server.tls[0])
        ctx.check_hostname = False
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname=name) as s:
                s.sendall(b"GET /hello.txt HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                assert b"hello over tls" in s.recv(4096) + s.recv(4096)


def test_plain_http_to_the_tls_port_gets_400_at_once(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(b"GET /hello.txt HTTP/1.1\r\nHost: localhost\r\n\r\n")
        status, h, body, _ = read_response(s)
        assert status == 400 and h["connection"] == "close"
        assert b"this port speaks HTTPS: use https://localhost:" in body
        assert s.recv(100) == b""                 # and closed, not left hanging
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(b"\x00\x01garbage that is neither TLS nor HTTP\r\n\r\n")
        assert read_response(s)[0] == 400
    # A TLS client is served as before.
    assert get_raw(server.port, "/hello.txt")[2] == b"hello over tls\n"


def test_bad_certificate_or_key_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "www").mkdir()
    cert, key = make_cert(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    _, other_key = make_cert(other, "other")
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    cases = [
        (["--tls-cert", str(tmp_path / "missing.pem"), "--tls-key", key], "cannot read the TLS certificate"),
        (["--tls-cert", str(tmp_path / "junk.pem"), "--tls-key", key], "is not PEM"),
        (["--tls-cert", cert, "--tls-key", other_key], "does not belong to the certificate"),
        (["--tls-cert", cert], "--tls-cert and --tls-key go together"),
        (["--tls-redirect", "8080"], "--tls-redirect needs --tls-cert"),
    ]
    for args, words in cases:
        r = serve_refused(str(tmp_path / "www"), "--port", "0", "--state-dir", str(tmp_path / "state"), *args)
        assert r.returncode == 2, (args, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and words in lines[0], (args, r.stderr)


def _peer_der(port: int, cafile: str) -> bytes:
    c = TlsClient(port, 10, cafile)
    try:
        return c.obj.getpeercert(binary_form=True)
    finally:
        c.close()


def _der(path: str) -> bytes:
    return ssl.PEM_cert_to_DER_cert(open(path).read())


def test_a_reload_lets_a_client_that_had_just_connected_finish_its_handshake(root, tmp_path):
    """The TLS side of the reload race (test_serve_supervision): a connection the old worker
    accepted before its drain, whose handshake had not begun, may still do it and be answered."""
    new_dir = tmp_path / "new"
    new_dir.mkdir()
    cert, key = make_cert(tmp_path)
    old_ca = tmp_path / "old.pem"
    old_ca.write_bytes(open(cert, "rb").read())
    with Server(root, "--state-dir", str(tmp_path / "state"), tls=(cert, key)) as s:
        [old] = s.worker_pids(1)
        raw = socket.create_connection(("127.0.0.1", s.port), timeout=10)
        wait_for(lambda: owner(raw, [old]), what="the old worker to accept")
        listener = sockets_of(old) - {server_inode(raw)}
        make_cert(new_dir)
        for name in ("cert.pem", "key.pem"):
            (tmp_path / name).write_bytes((new_dir / name).read_bytes())
        s.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: not sockets_of(old) & listener, what="the old worker's drain")
        with TlsClient(s.port, 10, str(old_ca), raw=raw) as tls:   # the old certificate: the old worker
            tls.sendall(b"GET /hello.txt HTTP/1.1\r\nHost: localhost\r\n\r\n")
            status, headers, body, _ = read_response(tls)
            assert (status, headers.get("connection"), body) == (200, "close", b"hello over tls\n")


def test_sighup_reloads_the_certificate_while_an_old_connection_keeps_working(root, tmp_path):
    old_dir, new_dir = tmp_path / "old", tmp_path / "new"
    old_dir.mkdir()
    new_dir.mkdir()
    make_cert(new_dir)
    cert, key = make_cert(old_dir)
    bundle = tmp_path / "both.pem"
    bundle.write_text(open(cert).read() + open(new_dir / "cert.pem").read())
    with Server(root, "--state-dir", str(tmp_path / "state"), tls=(cert, key)) as s:
        assert _peer_der(s.port, str(bundle)) == _der(cert)
        old = TlsClient(s.port, 10, str(bundle))
        old.sendall(b"GET /big.bin HTTP/1.1\r\nHost: localhost\r\n\r\n")
        first = old.recv(65536)                 # the download is under way; the rest waits in the server
        assert first.startswith(b"HTTP/1.1 200")
        new_cert = open(new_dir / "cert.pem").read()
        new_key = open(new_dir / "key.pem").read()
        with open(cert, "w") as f:
            f.write(new_cert)
        with open(key, "w") as f:
            f.write(new_key)
        s.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 15
        while _peer_der(s.port, str(bundle)) != _der(str(new_dir / "cert.pem")):
            assert time.monotonic() < deadline, "the new certificate was never served"
            time.sleep(0.1)
        # The connection made before the reload finishes its download, byte for byte.
        data = bytearray(first)
        head_end = data.find(b"\r\n\r\n") + 4
        while len(data) - head_end < len(BIG):
            chunk = old.recv(1 << 20)
            assert chunk, "the old connection was dropped"
            data += chunk
        assert bytes(data[head_end:]) == BIG
        old.close()
        # A broken pair on the next SIGHUP keeps the new certificate, and says why.
        with open(key, "w") as f:
            f.write("broken\n")
        s.proc.send_signal(signal.SIGHUP)
        said = b""
        deadline = time.monotonic() + 15
        while b"--tls-cert/--tls-key: not reloaded" not in said:
            assert time.monotonic() < deadline, said
            if select.select([s.proc.stderr], [], [], 0.5)[0]:
                said += os.read(s.proc.stderr.fileno(), 65536)
        assert b"keeping the old one" in said
        assert _peer_der(s.port, str(bundle)) == _der(str(new_dir / "cert.pem"))


def _raise_nofile(want: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= want:
        return
    if hard != resource.RLIM_INFINITY and hard < want:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {want}: cannot hold the slowloris connections")
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def test_300_unfinished_handshakes_do_not_delay_https_requests(server):
    _raise_nofile(1024)
    pid = server.worker_pids()[0]
    loris = []
    try:
        for i in range(300):
            s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            if i % 2:
                s.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")   # a ClientHello's first bytes, never the rest
            loris.append(s)
        # Normal HTTPS requests, while all 300 are still held (the handshake timeout is 30 s).
        for _ in range(10):
            status, h, body = get_raw(server.port, "/hello.txt")
            assert (status, body) == (200, b"hello over tls\n")
        assert get_raw(server.port, "/big.bin")[2] == BIG
        # Every slowloris socket is still open: the requests did not wait for their timeouts.
        for s in loris:
            s.setblocking(False)
            with pytest.raises(BlockingIOError):
                s.recv(1)
        # They are the worker's: 300 sockets it holds on to without blocking anyone.
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        assert fds >= 300
    finally:
        for s in loris:
            s.close()


def test_an_unfinished_handshake_is_closed_at_the_deadline(root, tmp_path):
    with Server(root, "--header-timeout", "1", "--state-dir", str(tmp_path / "state"), tls=True) as s:
        with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:
            c.sendall(b"\x16\x03\x01")
            start = time.monotonic()
            assert c.recv(100) == b""          # closed by the server (within the 10 s socket timeout)
            assert time.monotonic() - start < 8      # 1 s, plus the once-a-second tick, plus load


def _redirect_port(server: Server) -> int:
    m = re.search(rb"http://127\.0\.0\.1:(\d+)/ -> *\n?.*https", server.stderr)
    assert m, server.stderr.decode()
    return int(m.group(1))


def test_tls_redirect_port_sends_plain_clients_to_https(root, tmp_path):
    with Server(root, "--tls-redirect", "0", "--state-dir", str(tmp_path / "state"), tls=True,
                env={"COLUMNS": "200"}) as s:
        port = _redirect_port(s)
        status, h, _ = request(port, b"GET /big.bin?x=1 HTTP/1.1\r\nHost: localhost:%d\r\nConnection: close\r\n\r\n" % port)
        assert status == 308 and h["location"] == f"https://localhost:{s.port}/big.bin?x=1"
        # The path never becomes an authority; a Host that is no plain name gets no redirect.
        assert request(port, b"GET //evil.example/x HTTP/1.1\r\nHost: localhost\r\n\r\n")[1]["location"] == \
            f"https://localhost:{s.port}//evil.example/x"
        for bad in (b"Host: a@b\r\n", b"Host: \r\n", b"Host: x_y:1:2\r\n"):
            assert request(port, b"GET / HTTP/1.1\r\n" + bad + b"\r\n")[0] == 400, bad
        # curl follows it to the file, verified.
        r = curl("-L", "-o", "-", "--cacert", s.tls[0], f"http://localhost:{port}/hello.txt")
        assert r.stdout == b"hello over tls\n", r.stderr


def test_the_session_cookie_is_secure_over_tls(root, tmp_path):
    from zcopy.accounts import passwords

    users = tmp_path / "users.txt"
    users.write_text(f"ann {passwords.make('ann-pw', time_cost=1, memory_kib=passwords.MIN_MEMORY_KIB)} /:r\n")
    with Server(root, "--users", str(users), "--state-dir", str(tmp_path / "state"), tls=True) as s:
        auth = base64.b64encode(b"ann:ann-pw").decode()
        status, h, _ = request(s.port, b"GET /.zcopy/login HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
                               b"Authorization: Basic %s\r\n\r\n" % auth.encode())
        assert status == 204
        assert "Secure" in h["set-cookie"].split("; ") and "HttpOnly" in h["set-cookie"]


def _top(runtime) -> dict:
    out = subprocess.run([sys.executable, "-m", "zcopy", "top", "--json"], capture_output=True, timeout=30,
                         env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)})
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _wait_top(runtime, pred, timeout=10.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        snap = _top(runtime)
        if pred(snap) or time.monotonic() > deadline:
            return snap
        time.sleep(0.2)


def test_stats_say_which_path_the_bytes_took(root, tmp_path, runtime):
    ktls_here, why = ulp_available()
    with Server(root, "--state-dir", str(tmp_path / "state"), tls=True, env={"XDG_RUNTIME_DIR": str(runtime)}) as s:
        assert get_raw(s.port, "/big.bin")[2] == BIG
        snap = _wait_top(runtime, lambda j: j.get("tls", {}).get("handshakes", 0) >= 1 and j["requests"] >= 1)
        tls = snap["tls"]
        assert tls["handshakes"] >= 1 and tls["protocols"].get("TLSv1.3", 0) >= 1
        if ktls_here:
            # Where the kernel has the TLS ULP, OpenSSL may have put the keys in the kernel; the
            # socket says whether it did, and the bytes are counted on the path they took.
            assert tls["ktls_bytes_sent"] + tls["user_bytes_sent"] >= len(BIG)
        else:
            assert tls["ktls_connections"] == 0 and tls["ktls_bytes_sent"] == 0
            assert tls["user_connections"] >= 1 and tls["user_bytes_sent"] >= len(BIG)
            assert "no tls module" in tls["path_reason"]


@pytest.mark.skipif(not ulp_available()[0], reason=f"kTLS cannot run here: {ulp_available()[1]}")
def test_ktls_sends_file_bytes_with_sendfile_where_the_kernel_allows(root, tmp_path, runtime):
    """Runs only on a kernel with the tls module: the socket's TX keys are in the kernel
    (getsockopt SOL_TLS/TLS_TX said so), the transport let sendfile run, and the client still
    decrypts the exact bytes."""
    with Server(root, "--state-dir", str(tmp_path / "state"), tls=True, env={"XDG_RUNTIME_DIR": str(runtime)}) as s:
        assert get_raw(s.port, "/big.bin")[2] == BIG
        snap = _wait_top(runtime, lambda j: j.get("tls", {}).get("handshakes", 0) >= 1)
        tls = snap["tls"]
        assert tls["ktls_connections"] >= 1, tls["path_reason"]
        assert tls["ktls_bytes_sent"] >= len(BIG)
        assert snap["engines"]["sendfile"]["bytes_sent"] >= len(BIG)


def test_top_shows_bytes_through_ktls_and_user_space_tls(root, tmp_path, runtime):
    with Server(root, "--state-dir", str(tmp_path / "state"), tls=True, env={"XDG_RUNTIME_DIR": str(runtime)}) as s:
        assert get_raw(s.port, "/big.bin")[2] == BIG
        _wait_top(runtime, lambda j: j.get("tls", {}).get("user_bytes_sent", 0) + j.get("tls", {}).get(
            "ktls_bytes_sent", 0) >= len(BIG))
        out = subprocess.run([sys.executable, "-m", "zcopy", "top", "--once", "--pid", str(s.proc.pid)],
                             capture_output=True, text=True, timeout=30,
                             env={**os.environ, "XDG_RUNTIME_DIR": str(runtime), "COLUMNS": "150"})
        assert out.returncode == 0, out.stderr
        lines = {line.strip("│ ").split("  ")[0]: line for line in out.stdout.splitlines()}
        assert "kTLS" in lines and "user-space TLS" in lines, out.stdout
        if not ulp_available()[0]:
            # every body byte of the download was encrypted here, none by the kernel
            assert "6.0 MiB" in lines["user-space TLS"] and "6.0 MiB" not in lines["kTLS"], out.stdout
        assert re.search(r"tls +handshakes \d+ \(TLSv1\.3 \d+\)", out.stdout), out.stdout


def test_a_client_that_closes_its_side_right_after_its_request_still_gets_the_reply(server):
    """Over TLS a half-close is a close_notify: data. A server that closed its drained socket
    right after a closing reply was reset by it, sometimes before the client had read the reply
    (one run in three, before the linger waited for the client's EOF)."""
    for i in range(100):
        with connect(server.port, timeout=5) as c:
            c.sendall(b"GET $ HTTP/1.1\r\n\r\n" if i % 2 else
                      b"GET /hello.txt HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            c.shutdown(socket.SHUT_WR)
            reply = b""
            while chunk := c.recv(65536):
                reply += chunk
            assert reply.startswith(b"HTTP/1.1 400" if i % 2 else b"HTTP/1.1 200"), (i, reply[:100])
