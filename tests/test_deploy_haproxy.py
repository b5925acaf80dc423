"""Scale-out as docs/deploy.md describes it: three zcopy nodes on loopback behind a real haproxy 2.6
(`balance uri`, `hash-type consistent`, health checks, `retries` + `option redispatch`). One node is
killed with SIGKILL (the node's whole process group: supervisor and workers) while 300 GETs run through
haproxy: every response is either correct, or detectably short (haproxy cannot retry once bytes went
out) and then retried by the client; never wrong bytes."""

from __future__ import annotations

import concurrent.futures
import hashlib
import http.client
import os
import shutil
import socket
import time

import pytest
from haproxyutil import haproxy, needs_haproxy
from serverutil import Server

pytestmark = needs_haproxy

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
            nodes.append(Server(root, own_session=True).start())
        with haproxy(tmp_path, [f"server n{i} 127.0.0.1:{node.port}" for i, node in enumerate(nodes)]) as (port, _):
            yield port, nodes, files
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
        nodes[1].kill_node()        # SIGKILL to the node's whole process group, with transfers under way
        for f in futures:
            f.result()
    assert not wrong
    assert done[0] == 300
    # And the cluster still serves every file after the loss.
    for path in paths:
        outcome, body = _get(port, path)
        assert outcome == "ok" and hashlib.sha256(body).hexdigest() == files[path]
