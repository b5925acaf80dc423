"""`zcopy get | put | ls | rm | mv https://...` against a real `zcopy serve --tls-cert`: certificates
verified (system store, --cacert), --insecure warns, resume and age encryption as over HTTP, and no
credentials across origins when a redirect goes from http to https."""

from __future__ import annotations

import os
import select
import socket
import threading

import pytest

from conftest import needs_tool
from serverutil import Server, make_cert
from test_client import settled, sha256, write_random, zcopy
from test_tls_serve import _redirect_port

pytestmark = needs_tool("openssl")
TOKEN = "tls-t0ken"
PASS_ENV = {"ZCOPY_PASSPHRASE": "correct horse battery staple"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("root")
    with Server(root, "--allow-write", "--token", TOKEN, "--tls-redirect", "0", tls=True,
                env={"COLUMNS": "200"}) as srv:
        yield srv


@pytest.fixture
def work(tmp_path, server):
    os.mkdir(os.path.join(server.root, tmp_path.name))
    return tmp_path, f"https://localhost:{server.port}/{tmp_path.name}", os.path.join(server.root, tmp_path.name)


def test_get_put_ls_mv_rm_over_https_with_cacert(work, server):
    tmp, url, remote = work
    ca = ["--cacert", server.tls[0]]
    digest = write_random(tmp / "up.bin", 5 << 20)
    out = zcopy("put", str(tmp / "up.bin"), f"{url}/", "--token", TOKEN, *ca)
    assert out.returncode == 0, out.stderr
    assert sha256(os.path.join(remote, "up.bin")) == digest
    out = zcopy("get", f"{url}/up.bin", "-o", str(tmp / "back.bin"), *ca)
    assert out.returncode == 0, out.stderr
    assert sha256(tmp / "back.bin") == digest
    out = zcopy("ls", f"{url}/", *ca)
    assert out.returncode == 0 and "up.bin" in out.stdout, out.stderr
    out = zcopy("mv", f"{url}/up.bin", "moved.bin", "--token", TOKEN, *ca)
    assert out.returncode == 0 and os.path.exists(os.path.join(remote, "moved.bin")), out.stderr
    out = zcopy("rm", f"{url}/moved.bin", "--token", TOKEN, *ca)
    assert out.returncode == 0 and not os.listdir(remote), out.stderr


def test_an_unknown_certificate_is_refused_and_insecure_warns(work, server):
    tmp, url, remote = work
    with open(os.path.join(remote, "f"), "wb") as f:
        f.write(b"data")
    # The system store does not know the test's self-signed certificate.
    out = zcopy("get", f"{url}/f", "-o", str(tmp / "f"))
    assert out.returncode == 1 and not (tmp / "f").exists()
    assert out.stderr.count("\n") == 1 and "cannot verify the certificate of localhost:" in out.stderr
    assert "--cacert" in out.stderr
    # --cacert trusts what FILE holds, and only that: another certificate is refused.
    other = tmp / "other"
    other.mkdir()
    out = zcopy("get", f"{url}/f", "-o", str(tmp / "f"), "--cacert", make_cert(other)[0])
    assert out.returncode == 1 and "cannot verify" in out.stderr, out.stderr
    out = zcopy("get", f"{url}/f", "-o", str(tmp / "f"), "--insecure")
    assert out.returncode == 0, out.stderr
    assert "warning: --insecure" in out.stderr and "NOT verified" in out.stderr
    assert (tmp / "f").read_bytes() == b"data"


class TlsCuttingProxy:
    """Forwards one connection both ways (a TLS handshake takes several flights) and cuts it after
    ``limit`` bytes from the server: a real interrupted HTTPS download."""

    def __init__(self, port: int, limit: int) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._run, args=(port, limit), daemon=True)
        self.thread.start()

    def _run(self, port: int, limit: int) -> None:
        client, _ = self.listener.accept()
        with client, socket.create_connection(("127.0.0.1", port)) as up:
            down = 0
            while down < limit:
                ready, _, _ = select.select([client, up], [], [], 10)
                if not ready:
                    return
                if client in ready:
                    data = client.recv(65536)
                    if not data:
                        return
                    up.sendall(data)
                if up in ready:
                    data = up.recv(min(65536, limit - down))
                    if not data:
                        return
                    client.sendall(data)
                    down += len(data)

    def close(self) -> None:
        self.thread.join(10)
        self.listener.close()


def test_an_interrupted_https_download_resumes(work, server):
    tmp, url, remote = work
    digest = write_random(os.path.join(remote, "big"), 8 << 20)
    settled(os.path.join(remote, "big"))
    proxy = TlsCuttingProxy(server.port, 3 << 20)      # cuts the TLS stream after 3 MiB
    try:
        cut = zcopy("get", f"https://localhost:{proxy.port}/{tmp.name}/big", "-o", str(tmp / "big"),
                    "--cacert", server.tls[0])
    finally:
        proxy.close()
    assert cut.returncode == 1
    part = tmp / "big.part"
    assert 0 < part.stat().st_size < 8 << 20
    resumed = zcopy("get", f"{url}/big", "-o", str(tmp / "big"), "--cacert", server.tls[0])
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed at" in resumed.stderr
    assert sha256(tmp / "big") == digest


def test_encrypted_put_and_decrypting_get_over_https(work, server):
    tmp, url, remote = work
    digest = write_random(tmp / "plain", 3 << 20)
    out = zcopy("put", str(tmp / "plain"), f"{url}/p.age", "--passphrase", "--token", TOKEN,
                "--cacert", server.tls[0], env=PASS_ENV)
    assert out.returncode == 0, out.stderr
    assert open(os.path.join(remote, "p.age"), "rb").read(22) == b"age-encryption.org/v1\n"
    out = zcopy("get", f"{url}/p.age", "--decrypt", "--passphrase", "-o", str(tmp / "back"),
                "--cacert", server.tls[0], env=PASS_ENV)
    assert out.returncode == 0, out.stderr
    assert sha256(tmp / "back") == digest


def test_a_redirect_from_http_to_https_is_another_origin_the_token_stays_behind(work, server):
    tmp, url, remote = work
    port = _redirect_port(server)
    # ls follows the redirect to https://localhost:PORT/... but does not send the token there
    # (same host, another scheme: another origin). This server's reads are open, so it lists.
    out = zcopy("ls", f"http://localhost:{port}/{tmp.name}/", "--token", TOKEN, "--cacert", server.tls[0])
    assert out.returncode == 0, out.stderr
    # The write it would need the token for fails: the client never sent it over the redirect.
    # (put/rm/mv do not follow redirects at all: they stop at the 308 and say where it points.)
    out = zcopy("rm", f"http://localhost:{port}/{tmp.name}/x", "--token", TOKEN, "--cacert", server.tls[0])
    assert out.returncode == 1 and "308" in out.stderr, out.stderr
