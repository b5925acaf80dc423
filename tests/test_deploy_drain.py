"""A node drained with SIGTERM leaves a real haproxy's pool through /readyz
(its metrics port) before it stops accepting: with --drain-delay, haproxy marks
it down while its listener still accepts, and no request through haproxy fails."""

from __future__ import annotations

import concurrent.futures
import contextlib
import csv
import hashlib
import http.client
import io
import os
import signal
import time


from haproxyutil import accepts, free_port, haproxy, needs_haproxy
from serverutil import Server

pytestmark = needs_haproxy


def _states(stats_port: int) -> dict[str, str]:
    conn = http.client.HTTPConnection("127.0.0.1", stats_port, timeout=5)
    try:
        conn.request("GET", "/stats;csv")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    rows = csv.DictReader(io.StringIO(text.lstrip("# ")))
    return {r["svname"]: r["status"] for r in rows if r["pxname"] == "nodes" and r["svname"].startswith("n")}


def _wait(predicate, timeout: float = 20.0, what: str = "state"):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
    return value


def test_a_draining_node_leaves_the_pool_before_it_stops_accepting(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    files = {}
    for i in range(12):
        data = os.urandom(32 * 1024 * (1 + i % 4))
        (root / f"f{i:02}.bin").write_bytes(data)
        files[f"/f{i:02}.bin"] = hashlib.sha256(data).hexdigest()
    mports = [free_port(), free_port()]
    with contextlib.ExitStack() as stack:
        nodes = [stack.enter_context(Server(root, "--metrics", f"127.0.0.1:{m}", "--drain-delay", "4"))
                 for m in mports]
        port, stats = stack.enter_context(haproxy(
            tmp_path, [f"server n{i} 127.0.0.1:{node.port} port {m}" for i, (node, m) in enumerate(zip(nodes, mports))],
            check="/readyz", inter="100ms"))
        _wait(lambda: accepts(stats) and _states(stats) == {"n0": "UP", "n1": "UP"}, what="both nodes up")

        failures, done, stop = [], [0], [False]

        def client() -> None:
            paths = sorted(files)
            i = 0
            while not stop[0]:
                path = paths[i % len(paths)]
                i += 1
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                try:
                    conn.request("GET", path)
                    resp = conn.getresponse()
                    body = resp.read()
                    if resp.status != 200 or hashlib.sha256(body).hexdigest() != files[path]:
                        failures.append((path, resp.status))
                    done[0] += 1
                except (OSError, http.client.HTTPException) as exc:
                    failures.append((path, repr(exc)))
                finally:
                    conn.close()

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            running = [pool.submit(client) for _ in range(4)]
            _wait(lambda: done[0] >= 50, what="traffic")
            nodes[1].proc.send_signal(signal.SIGTERM)
            _wait(lambda: _states(stats).get("n1", "").startswith("DOWN"), what="haproxy to take n1 out")
            # haproxy saw /readyz 503 while the node still accepts: it left the pool first
            assert accepts(nodes[1].port)
            assert nodes[1].proc.poll() is None
            seen = done[0]
            _wait(lambda: done[0] >= seen + 50, what="traffic after n1 left")
            assert nodes[1].proc.wait(30) == 0       # then it drained and exited
            _wait(lambda: done[0] >= seen + 100, what="traffic after n1 exited")
            stop[0] = True
            for f in running:
                f.result()
        assert not failures, failures[:5]
        assert _states(stats)["n0"] == "UP"
