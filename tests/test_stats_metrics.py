"""`zcopy serve --metrics HOST:PORT`: Prometheus text with the same numbers
as `zcopy top --json`, on its own listener, gone with the server."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time

from serverutil import Server, connect, curl, read_response

from zcopy.stats.prometheus import render


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int) -> dict[str, float]:
    out = curl(f"http://127.0.0.1:{port}/metrics")
    assert out.returncode == 0, out.stderr
    samples = {}
    for line in out.stdout.decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def test_metrics_listener_matches_json(tmp_path):
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    root = tmp_path / "www"
    root.mkdir()
    (root / "f.bin").write_bytes(os.urandom(100_000))
    mport = free_port()
    env = {"XDG_RUNTIME_DIR": str(runtime)}
    with Server(root, "--workers", "2", "--metrics", f"127.0.0.1:{mport}", env=env) as srv:
        for _ in range(5):
            with connect(srv.port) as s:
                s.sendall(b"GET /f.bin HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                assert read_response(s)[0] == 200
        deadline = time.monotonic() + 10
        while True:
            m = scrape(mport)
            if m.get('zcopy_requests_total{kind="serve",status="2xx"}') == 5 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert m['zcopy_requests_total{kind="serve",status="2xx"}'] == 5
        assert m['zcopy_sent_bytes_total{kind="serve",engine="sendfile",zero_copy="true"}'] == 500_000
        assert m['zcopy_workers{kind="serve"}'] == 2
        assert m['zcopy_ttlb_seconds_bucket{kind="serve",le="+Inf"}'] == 5
        snap = json.loads(subprocess.run([sys.executable, "-m", "zcopy", "top", "--json"], capture_output=True,
                                         env={**os.environ, **env}, timeout=30).stdout)
        sent = sum(v for k, v in m.items() if k.startswith("zcopy_sent_bytes_total"))
        assert sent == snap["bytes_sent"]
        assert curl(f"http://127.0.0.1:{mport}/other", "-o", "/dev/null", "-w", "%{http_code}").stdout == b"404"
        # the workers did not keep the metrics socket (closed at fork)
        for pid in srv.worker_pids(at_least=2):
            targets = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
            sockets = [t for t in targets if t.startswith("socket:")]
            assert len(sockets) == 1, targets    # only its own HTTP listener
        assert srv.stop() == 0
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", mport)) != 0


def test_metrics_bad_address_is_a_usage_error(tmp_path):
    out = subprocess.run([sys.executable, "-m", "zcopy", "serve", str(tmp_path), "--metrics", "nope"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "expected HOST:PORT" in out.stderr


def test_render_histogram_is_cumulative():
    text = render({"kind": "serve", "requests": 3, "status": {"2xx": 3},
                   "latency": {"bounds": [0.001, 0.01], "ttfb": [1, 0, 2], "ttlb": [0, 3, 0]}})
    assert 'zcopy_ttfb_seconds_bucket{kind="serve",le="0.001"} 1' in text
    assert 'zcopy_ttfb_seconds_bucket{kind="serve",le="0.01"} 1' in text
    assert 'zcopy_ttfb_seconds_bucket{kind="serve",le="+Inf"} 3' in text
    assert re.search(r'^zcopy_ttlb_seconds_count\{kind="serve"\} 3$', text, re.M)
    assert "# TYPE zcopy_ttfb_seconds histogram" in text
