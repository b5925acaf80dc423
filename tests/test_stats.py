"""Stats publishing and aggregation against a real `zcopy serve` with two
workers: the totals `zcopy top --json` reports are exactly the bytes and
requests real clients moved; workers' files follow their processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from serverutil import Server, connect, curl, read_response

from zcopy.stats import Publisher, aggregate, discover, read_all
from zcopy.stats.location import group_dir


@pytest.fixture
def files(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    sizes = {"a.bin": 1, "b.bin": 70_000, "c.bin": 1_500_000}
    for name, size in sizes.items():
        (root / name).write_bytes(os.urandom(size))
    return root, sizes


def top_json(runtime, *args) -> dict:
    out = subprocess.run([sys.executable, "-m", "zcopy", "top", "--json", *args], capture_output=True,
                         env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)}, timeout=30)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def wait_json(runtime, pred, timeout=10.0) -> dict:
    """Poll `zcopy top --json` until ``pred(snapshot)``; the last snapshot either way."""
    deadline = time.monotonic() + timeout
    while True:
        snap = top_json(runtime)
        if pred(snap) or time.monotonic() > deadline:
            return snap
        time.sleep(0.2)


def wait_for(fn, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


# -- the publisher and reader in-process -------------------------------------

def test_publish_discover_read_close(runtime):
    counter = {"requests": 0}
    pubs = [Publisher("serve", lambda: {"requests": counter["requests"], "bytes_sent": 10,
                                        "latency": {"bounds": [1, 2], "ttfb": [1, 0, 2]}},
                      slot=i, group_pid=os.getpid()) for i in range(2)]
    counter["requests"] = 3
    for p in pubs:
        assert p.publish()
    [target] = discover()
    assert (target.kind, target.pid) == ("serve", os.getpid())
    snap = read_all(target)
    assert snap["requests"] == 6 and snap["bytes_sent"] == 20
    assert snap["latency"] == {"bounds": [1, 2], "ttfb": [2, 0, 4]}      # bounds kept, buckets summed
    assert [w["slot"] for w in snap["workers"]] == [0, 1]
    assert not [n for n in os.listdir(target.path) if n.endswith(".tmp")]
    for p in pubs:
        p.close()
    assert not os.path.exists(target.path)
    assert discover() == []


def test_stale_folder_of_dead_supervisor_is_cleaned(runtime):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    pub = Publisher("relay", lambda: {"requests": 1}, group_pid=dead.pid)
    assert pub.publish()
    stale = group_dir("relay", dead.pid)
    assert os.path.isdir(stale)
    assert discover() == []               # pid gone: ignored...
    assert not os.path.exists(stale)      # ...and removed


def test_worker_file_of_dead_worker_is_skipped(runtime):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = Publisher("serve", lambda: {"requests": 2}, slot=0, group_pid=os.getpid())
    live.publish()
    with open(os.path.join(live.dir, "worker-1.json"), "w") as f:
        json.dump({"pid": dead.pid, "slot": 1, "requests": 1000}, f)
    [target] = discover()
    assert read_all(target)["requests"] == 2
    live.close()
    os.unlink(os.path.join(live.dir, "worker-1.json"))
    os.rmdir(live.dir)


def test_aggregate_concatenates_transfers_and_keeps_constants():
    snaps = [{"slot": 0, "pid": 1, "kind": "serve", "server": {"workers": 2}, "inflight": [{"rate": 1}],
              "engines": {"sendfile": {"bytes_sent": 5, "zero_copy": True}}},
             {"slot": 1, "pid": 2, "kind": "serve", "server": {"workers": 2}, "inflight": [{"rate": 9}],
              "engines": {"sendfile": {"bytes_sent": 7, "zero_copy": True}, "copy": {"bytes_sent": 1}}}]
    total = aggregate(snaps)
    assert total["server"] == {"workers": 2}
    assert total["engines"] == {"sendfile": {"bytes_sent": 12, "zero_copy": True}, "copy": {"bytes_sent": 1}}
    assert [t["rate"] for t in total["inflight"]] == [9, 1]
    assert snaps[0]["inflight"] == [{"rate": 1}]     # inputs untouched


# -- a real server under load -------------------------------------------------

def _client(port: int, paths: list[str], tally: dict, lock: threading.Lock) -> None:
    """Keep-alive client: every request and response byte is counted."""
    sent = received = 0
    with connect(port) as s:
        for i, path in enumerate(paths):
            last = i == len(paths) - 1
            raw = f"GET /{path} HTTP/1.1\r\nHost: t\r\n{'Connection: close' if last else 'X: y'}\r\n\r\n".encode()
            s.sendall(raw)
            sent += len(raw)
            status, _, body, head = read_response(s)
            assert status == 200
            received += len(head) + 4 + len(body)
        s.shutdown(socket.SHUT_WR)
        assert s.recv(1) == b""
    with lock:
        tally["sent"] += sent
        tally["received"] += received
        tally["requests"] += len(paths)


def test_json_totals_equal_what_clients_moved(runtime, files):
    root, sizes = files
    # Every body through the sendfile engine (no small file held in memory), so its count is exact.
    with Server(root, "--workers", "2", "--small-reply-max", "0", env={"XDG_RUNTIME_DIR": str(runtime)}) as srv:
        srv.worker_pids(at_least=2)
        tally, lock = {"sent": 0, "received": 0, "requests": 0}, threading.Lock()
        names = sorted(sizes)
        threads = [threading.Thread(target=_client, args=(srv.port, names * (2 + i % 3), tally, lock))
                   for i in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert tally["requests"] == sum(3 * (2 + i % 3) for i in range(12))
        snap = wait_json(runtime, lambda j: j["requests"] == tally["requests"] and not j["connections"]["active"])
        assert snap["requests"] == tally["requests"]
        assert snap["bytes_sent"] == tally["received"]           # every byte the clients read
        assert snap["bytes_received"] == tally["sent"]           # every byte they wrote
        assert sum(e["sent"] for e in snap["bytes_by_engine"].values()) == snap["bytes_sent"]
        body_bytes = sum(sizes.values()) * tally["requests"] // len(sizes)
        assert snap["bytes_by_engine"]["sendfile"]["sent"] == body_bytes
        assert snap["status"]["2xx"] == tally["requests"] and snap["methods"] == {"GET": tally["requests"]}
        # 12 clients + the one connection serverutil makes to see the port listening
        assert snap["connections"]["accepted"] == snap["connections"]["closed"] == 13
        assert len(snap["workers"]) == 2 and sum(w["requests"] for w in snap["workers"]) == tally["requests"]
        assert sum(snap["latency"]["ttlb"]) == sum(snap["latency"]["ttfb"]) == tally["requests"]
        assert snap["server"]["address"] == f"{srv.url}/"
        folder = group_dir("serve", srv.proc.pid)
        assert sorted(os.listdir(folder)) == ["worker-0.json", "worker-1.json"]
        assert srv.stop() == 0
    assert not os.path.exists(folder)     # the server's stats leave with it
    assert discover() == []


def test_inflight_transfer_is_listed_with_progress(runtime, tmp_path):
    root = tmp_path / "big"
    root.mkdir()
    size = 256 << 20
    with open(root / "huge.bin", "wb") as f:
        f.truncate(size)             # sparse: costs no disk
    with Server(root, "--workers", "2", env={"XDG_RUNTIME_DIR": str(runtime)}) as srv:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        s.connect(("127.0.0.1", srv.port))
        try:
            s.sendall(b"GET /huge.bin HTTP/1.1\r\nHost: t\r\n\r\n")
            s.recv(1 << 20)          # read a little, then stall: the server stays mid-transfer
            snap = wait_json(runtime, lambda j: j["inflight"])
            [x] = snap["inflight"]
            assert x["path"] == "/huge.bin" and x["total"] == size and 0 < x["done"] < size
            assert x["direction"] == "down" and x["client"] == "127.0.0.1:%d" % s.getsockname()[1]
            assert snap["connections"]["active"] == 1
        finally:
            s.close()


def test_killed_worker_is_replaced_in_its_slot(runtime, files):
    root, _ = files
    with Server(root, "--workers", "2", env={"XDG_RUNTIME_DIR": str(runtime)}) as srv:
        pids = srv.worker_pids(at_least=2)
        folder = group_dir("serve", srv.proc.pid)
        wait_for(lambda: len(os.listdir(folder)) == 2 if os.path.isdir(folder) else False)
        os.kill(pids[0], signal.SIGKILL)
        snap = wait_json(runtime, lambda j: len(j["workers"]) == 2 and pids[0] not in [w["pid"] for w in j["workers"]])
        assert pids[0] not in [w["pid"] for w in snap["workers"]], "no replacement took the slot over"
        assert sorted(w["slot"] for w in snap["workers"]) == [0, 1]
        assert sorted(os.listdir(folder)) == ["worker-0.json", "worker-1.json"]
        assert srv.stop() == 0
    assert not os.path.exists(folder)


def test_stats_off_publishes_nothing(runtime, files):
    root, _ = files
    env = {"XDG_RUNTIME_DIR": str(runtime), "ZCOPY_STATS": "off"}
    with Server(root, "--workers", "2", env=env) as srv:
        srv.worker_pids(at_least=2)
        time.sleep(1.2)
        assert discover() == []
        out = subprocess.run([sys.executable, "-m", "zcopy", "top", "--json"], capture_output=True,
                             env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)}, timeout=30)
        assert out.returncode == 1 and b"no zcopy server" in out.stderr


def test_errors_are_counted_by_kind(runtime, tmp_path):
    """Real faults, each counted under its kind: a client that resets
    mid-download, a head that never completes, a file truncated while it is
    sent, and accept(2) failing with EMFILE under a lowered RLIMIT_NOFILE."""
    import resource

    root = tmp_path / "faults"
    root.mkdir()
    for name in ("reset.bin", "shrink.bin"):
        with open(root / name, "wb") as f:
            f.truncate(64 << 20)
    with Server(root, "--header-timeout", "0.5", env={"XDG_RUNTIME_DIR": str(runtime)}) as srv:
        [worker] = srv.worker_pids(at_least=1)

        def stalled_download(path: str) -> socket.socket:
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            s.connect(("127.0.0.1", srv.port))
            s.sendall(f"GET /{path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
            assert s.recv(65536).startswith(b"HTTP/1.1 200")   # the server is now blocked sending the rest
            return s

        slow = connect(srv.port)                    # a head that never ends (answered at the next tick)
        slow.sendall(b"GET / HTTP/1.1\r\nHost:")
        s = stalled_download("reset.bin")           # RST while the server is blocked sending
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
        s.close()
        s = stalled_download("shrink.bin")          # the file shrinks under the transfer
        os.truncate(root / "shrink.bin", 1 << 20)
        while s.recv(1 << 20):
            pass
        s.close()
        with slow:
            assert slow.recv(65536).startswith(b"HTTP/1.1 408")
        fds = len(os.listdir(f"/proc/{worker}/fd"))
        old = resource.prlimit(worker, resource.RLIMIT_NOFILE)
        resource.prlimit(worker, resource.RLIMIT_NOFILE, (fds + 1, old[1]))     # the soft limit only
        try:
            held = [connect(srv.port) for _ in range(4)]
            # seen while the worker is still out of fds: its publisher keeps a spare one
            assert wait_for(lambda: top_json(runtime)["errors"].get("accept_emfile"), timeout=5)
        finally:
            resource.prlimit(worker, resource.RLIMIT_NOFILE, old)
        for c in held:
            c.close()
        snap = wait_json(runtime, lambda j: len(j["errors"]) >= 4)
        errors = snap["errors"]
        assert errors.get("client_reset") == 1, errors
        assert errors.get("file_changed") == 1, errors
        assert errors.get("header_timeout") == 1, errors
        assert errors.get("accept_emfile", 0) >= 1, errors
        with connect(srv.port) as c:                 # and it still serves
            c.sendall(b"HEAD /reset.bin HTTP/1.1\r\nHost: t\r\n\r\n")
            assert read_response(c, head_only=True)[0] == 200


def test_upload_bytes_are_counted_and_every_transfer_in_flight(runtime, tmp_path):
    """curl uploads (one sized, one chunked) to two workers: bytes_received is
    every byte curl wrote, bytes_sent every byte it read, PUTs by method.
    Then 140 uploads stalled after their head: all counted, each worker
    listing only its 64 fastest (one of the two has at least 70)."""
    root = tmp_path / "up"
    root.mkdir()
    body = tmp_path / "body.bin"
    body.write_bytes(os.urandom(2_500_000))
    with Server(root, "--workers", "2", "--allow-write", env={"XDG_RUNTIME_DIR": str(runtime)}) as srv:
        wrote = read = 0
        for name, extra in (("sized.bin", []), ("chunked.bin", ["-H", "Transfer-Encoding: chunked"])):
            out = curl("-o", "/dev/null", "-w", "%{http_code} %{size_request} %{size_upload} %{size_header} "
                       "%{size_download}", "-T", str(body), *extra, f"{srv.url}/{name}")
            code, head_out, up, head_in, down = map(int, out.stdout.split())
            assert code == 201, out
            wrote, read = wrote + head_out + up, read + head_in + down
        assert (root / "chunked.bin").read_bytes() == body.read_bytes()
        # serverutil's probe connection sent and read nothing
        snap = wait_json(runtime, lambda j: j["bytes_received"] == wrote and not j["connections"]["active"])
        assert snap["bytes_received"] == wrote and snap["bytes_sent"] == read
        assert snap["methods"] == {"PUT": 2} and snap["status"]["2xx"] == 2
        assert sum(e["received"] for e in snap["bytes_by_engine"].values()) == wrote
        clients = []
        try:
            for i in range(140):
                c = connect(srv.port)
                c.sendall(f"PUT /f{i} HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\n\r\n".encode() + b"x" * i)
                clients.append(c)
            snap = wait_json(runtime, lambda j: j["inflight_count"] == 140)
            assert snap["inflight_count"] == 140 and 64 <= len(snap["inflight"]) < 140
            assert {x["direction"] for x in snap["inflight"]} == {"up"}
            assert all(x["total"] == 1_000_000 for x in snap["inflight"])
        finally:
            for c in clients:
                c.close()


def test_without_xdg_runtime_dir_snapshots_live_on_tmpfs(monkeypatch):
    """The publish runs on the event loop: its folder must be in memory, not on
    a disk whose metadata reads can queue behind a busy disk (statfs, for real)."""
    from probes.filesystem import IN_MEMORY, fs_type
    from zcopy.stats.location import runtime_dir

    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    folder = os.path.dirname(runtime_dir())
    assert fs_type(folder)[0] in IN_MEMORY, (folder, fs_type(folder))
