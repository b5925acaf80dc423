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


SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*",?)*\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def check_exposition(text: str) -> dict[str, float]:
    """Parse the text format strictly (0.0.4) and check its rules; the samples by ``name{labels}``.

    Every sample belongs to a family announced by one HELP and one TYPE line
    before it; counters end in ``_total``; a histogram has, per label set,
    cumulative buckets with increasing ``le`` ending in ``+Inf``, then
    ``_sum`` and a ``_count`` equal to the ``+Inf`` bucket."""
    assert text.endswith("\n")
    helps, types, samples = set(), {}, {}
    hist: dict[tuple[str, tuple], dict] = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name = line.split(" ")[2]
            assert name not in helps, f"two HELP lines for {name}"
            helps.add(name)
            continue
        if line.startswith("# TYPE "):
            _, _, name, mtype = line.split(" ")
            assert name in helps and name not in types and mtype in ("counter", "gauge", "histogram")
            types[name] = mtype
            continue
        m = SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        name, labels, value = m.group(1), dict(LABEL.findall(m.group(2) or "")), float(m.group(3))
        family = next((f for f in (name, name.rsplit("_", 1)[0]) if f in types), None)
        assert family is not None, f"{name} has no TYPE line before it"
        if types[family] == "counter":
            assert name == family and name.endswith("_total") and value >= 0, line
        if types[family] == "histogram":
            key = (family, tuple(sorted((k, v) for k, v in labels.items() if k != "le")))
            h = hist.setdefault(key, {"le": [], "n": []})
            if name == family + "_bucket":
                assert "sum" not in h, "bucket after _sum"
                h["le"].append(float(labels["le"]))
                h["n"].append(value)
            else:
                h[name.rsplit("_", 1)[1]] = value
        samples[f"{name}{m.group(2) or ''}"] = value
    for (family, _), h in hist.items():
        assert h["le"] == sorted(h["le"]) and h["le"][-1] == float("inf"), family
        assert h["n"] == sorted(h["n"]), f"{family} buckets are not cumulative"
        assert h["count"] == h["n"][-1] and "sum" in h and h["sum"] >= 0, family
    return samples


def scrape(port: int) -> dict[str, float]:
    out = curl("-i", f"http://127.0.0.1:{port}/metrics")
    assert out.returncode == 0, out.stderr
    head, _, body = out.stdout.decode().partition("\r\n\r\n")
    assert "content-type: text/plain; version=0.0.4" in head.lower()
    return check_exposition(body)


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
        with connect(srv.port) as s:
            s.sendall(b"HEAD /missing HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            assert read_response(s, head_only=True)[0] == 404
        deadline = time.monotonic() + 10
        while True:
            m = scrape(mport)
            if m.get('zcopy_ttlb_seconds_count{kind="serve"}') == 6 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert m['zcopy_requests_total{kind="serve",status="2xx"}'] == 5
        assert m['zcopy_requests_total{kind="serve",status="4xx"}'] == 1
        assert m['zcopy_requests_by_method_total{kind="serve",method="GET"}'] == 5
        assert m['zcopy_requests_by_method_total{kind="serve",method="HEAD"}'] == 1
        assert m['zcopy_ttfb_seconds_count{kind="serve"}'] == 6
        assert 0 <= m['zcopy_ttlb_seconds_sum{kind="serve"}'] < 60
        assert m['zcopy_connections_accepted_total{kind="serve"}'] == 7    # + serverutil's probe connection
        assert m['zcopy_sent_bytes_total{kind="serve",engine="sendfile",zero_copy="true"}'] == 500_000
        assert m['zcopy_workers{kind="serve"}'] == 2
        assert m['zcopy_ttlb_seconds_bucket{kind="serve",le="+Inf"}'] == 6
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
    text = render({"kind": "serve", "requests": 3, "status": {"2xx": 3}, "errors": {"client_reset": 2},
                   "latency": {"bounds": [0.001, 0.01], "ttfb": [1, 0, 2], "ttlb": [0, 3, 0],
                               "ttfb_sum": 0.25, "ttlb_sum": 0.0125}})
    samples = check_exposition(text)
    assert samples['zcopy_ttfb_seconds_sum{kind="serve"}'] == 0.25
    assert samples['zcopy_errors_total{kind="serve",error="client_reset"}'] == 2
    assert 'zcopy_ttfb_seconds_bucket{kind="serve",le="0.001"} 1' in text
    assert 'zcopy_ttfb_seconds_bucket{kind="serve",le="0.01"} 1' in text
    assert 'zcopy_ttfb_seconds_bucket{kind="serve",le="+Inf"} 3' in text
    assert re.search(r'^zcopy_ttlb_seconds_count\{kind="serve"\} 3$', text, re.M)
    assert "# TYPE zcopy_ttfb_seconds histogram" in text
