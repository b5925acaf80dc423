"""Scale-out as docs/deploy.md describes it: three zcopy nodes on loopback behind a real haproxy 2.6
(`balance uri`, `hash-type consistent`, health checks, `retries` + `option redispatch`). One node is
killed with SIGKILL (the node's whole process group: supervisor and workers) while 300 GETs run through
haproxy: every response is either correct, or detectably short (haproxy cannot retry once bytes went
out) and then retried by the client; never wrong bytes."""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import http.client
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed (apt-get install haproxy)")

_ADDR = re.compile(rb"http://127\.0\.0\.1:(\d+)/")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Node:
    """One zcopy node in its own session, so SIGKILL can take the whole node at once."""

    def __init__(self, root) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "zcopy", "serve", str(root), "--port", "0"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        buf, deadline = b"", time.monotonic() + 30
        while time.monotonic() < deadline:
            r, _, _ = select.select([self.proc.stderr], [], [], 0.2)
            if r:
                chunk = os.read(self.proc.stderr.fileno(), 65536)
                if not chunk:
                    break
                buf += chunk
                m = _ADDR.search(buf)
                if m:
                    self.port = int(m.group(1))
                    return
        self.kill()
        raise RuntimeError(f"node did not start: {buf!r}")

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self.proc.stderr.close()


def _wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


HAPROXY_CFG = """\
global
    maxconn 1000
defaults
    mode http
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    retries 3
    option redispatch 1
frontend web
    bind 127.0.0.1:{port}
    default_backend nodes
backend nodes
    balance uri
    hash-type consistent
    hash-balance-factor 150
    option httpchk GET /
    default-server check inter 200ms fall 1 rise 2
{servers}
"""


@pytest.fixture
def cluster(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    files = {}
    for i in range(24):
        data = os.urandom(64 * 1024 * (1 + i % 8))           # 64 KiB to 512 KiB
        (source / f"f{i:02}.bin").write_bytes(data)
        files[f"/f{i:02}.bin"] = hashlib.sha256(data).hexdigest()
    nodes = []
    try:
        for n in range(3):
            root = tmp_path / f"node{n}"
            shutil.copytree(source, root, copy_function=shutil.copy2)     # cp -a: other inodes, same bytes
            nodes.append(Node(root))
        port = _free_port()
        cfg = tmp_path / "haproxy.cfg"
        cfg.write_text(HAPROXY_CFG.format(port=port, servers="\n".join(
            f"    server n{i} 127.0.0.1:{node.port}" for i, node in enumerate(nodes))))
        haproxy = subprocess.Popen(["haproxy", "-db", "-f", str(cfg)], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        try:
            _wait_port(port)
            yield port, nodes, files
        finally:
            haproxy.terminate()
            haproxy.wait(10)
    finally:
        for node in nodes:
            node.kill()


def _get(port: int, path: str) -> tuple[str, bytes | None]:
    """("ok", body) for a complete response, ("short", None) for one cut or refused."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        if resp.status != 200:
            return f"status {resp.status}", None
        length = int(resp.headers["Content-Length"])
        body = resp.read()
        if len(body) != length:
            return "short", None
        return "ok", body
    except (http.client.IncompleteRead, ConnectionError, socket.timeout, http.client.RemoteDisconnected):
        return "short", None
    finally:
        conn.close()


def test_node_killed_mid_way_gives_no_wrong_bytes(cluster):
    port, nodes, files = cluster
    paths = sorted(files)
    wrong, retried, done = [], [0], [0]

    def fetch(i: int):
        path = paths[i % len(paths)]
        for _attempt in range(10):
            outcome, body = _get(port, path)
            if outcome == "ok":
                if hashlib.sha256(body).hexdigest() != files[path]:
                    wrong.append(path)
                done[0] += 1
                return
            retried[0] += 1
            time.sleep(0.1)         # the client's backoff before it retries (haproxy is marking the node down)
        raise AssertionError(f"{path}: no complete response after 10 tries")

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(fetch, i) for i in range(300)]
        while done[0] < 100:
            time.sleep(0.01)
        nodes[1].kill()             # SIGKILL to the node's whole process group, with transfers under way
        for f in futures:
            f.result()
    assert not wrong
    assert done[0] == 300
    # And the cluster still serves every file after the loss.
    for path in paths:
        outcome, body = _get(port, path)
        assert outcome == "ok" and hashlib.sha256(body).hexdigest() == files[path]
