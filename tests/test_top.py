"""`zcopy top` in a real terminal (tmux): the dashboard over a real server
under load, waiting for a server, a server killed under it, and the CLI's
one-shot modes and errors."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from conftest import needs_tool
from serverutil import Server, connect, read_response

pytestmark = needs_tool("tmux")


@pytest.fixture
def root(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    (root / "data.bin").write_bytes(os.urandom(2_000_000))
    return root


class Term:
    """One tmux server on a private socket running one command in a 160x50 pane."""

    def __init__(self, command: list[str], env: dict) -> None:
        self.sock = f"zcopy-test-{secrets.token_hex(6)}"
        exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        # COLUMNS/LINES inherited from the test's environment would override the pane size
        line = f"env -u COLUMNS -u LINES {exports} {shlex.join(command)}; echo EXITED $?; sleep 60"
        self.tmux("new-session", "-d", "-x", "160", "-y", "50", line)
        self.path = self.tmux("display-message", "-p", "#{socket_path}").strip()

    def tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.sock, *args], capture_output=True, text=True,
                              timeout=10).stdout

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p")

    def wait(self, pattern: str, timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            text = self.screen()
            if re.search(pattern, text):
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"{pattern!r} never showed; screen:\n{text}")
            time.sleep(0.2)

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", *keys)

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.sock, "kill-server"], capture_output=True, timeout=10)
        if self.path:   # kill-server leaves the socket file behind
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)


def top(*args: str) -> list[str]:
    return [sys.executable, "-m", "zcopy", "top", *args]


def env_for(runtime) -> dict:
    return {"XDG_RUNTIME_DIR": str(runtime), "PYTHONPATH": os.pathsep.join(sys.path), "TERM": "xterm-256color"}


class Load:
    """Clients fetching data.bin on keep-alive connections until stopped."""

    def __init__(self, port: int, clients: int = 4) -> None:
        self.port, self.stop_flag = port, threading.Event()
        self.threads = [threading.Thread(target=self._run) for _ in range(clients)]
        for t in self.threads:
            t.start()

    def _run(self) -> None:
        try:
            with connect(self.port) as s:
                while not self.stop_flag.is_set():
                    s.sendall(b"GET /data.bin HTTP/1.1\r\nHost: t\r\n\r\n")
                    read_response(s)
                    time.sleep(0.05)
        except OSError:
            pass   # the server went away (the kill test)

    def stop(self) -> None:
        self.stop_flag.set()
        for t in self.threads:
            t.join(20)


FIGURE = r"\d+(\.\d)? (B|KiB|MiB|GiB)"


@pytest.mark.slow
def test_dashboard_shows_engines_and_rate_and_quits_on_q(runtime, root):
    with Server(root, "--workers", "2", env={"XDG_RUNTIME_DIR": str(runtime)}) as srv:
        load = Load(srv.port)
        term = Term(top("--interval", "0.5"), env_for(runtime))
        try:
            text = term.wait(rf"pid {srv.proc.pid} http://127\.0\.0\.1:{srv.port}/")
            # a non-zero rate on the "all" row and the engine rows once two publications are in
            text = term.wait(r"all\s+[1-9][\d.]* (KiB|MiB|GiB)/s")
            # engine rows: out now, in now, out, in, syscalls, zero-copy
            assert re.search(rf"sendfile\s+[1-9][\d.]* \w+/s\s+{FIGURE}/s\s+[1-9][\d.]* (KiB|MiB|GiB)\s+{FIGURE}"
                             r"\s+[1-9]\d*\s+yes", text), text
            assert re.search(rf"copy\s+{FIGURE}/s\s+{FIGURE}/s\s+{FIGURE}\s+{FIGURE}\s+-\s+no", text), text
            assert re.search(r"bytes sent zero-copy", text) and "last minute" in text
            assert re.search(r"2xx [1-9]\d*/s", text) and "2 workers" in text
            assert re.search(rf"lo \(nic\)\s+{FIGURE}/s\s+{FIGURE}/s", text), text
            assert re.search(r"127\.0\.0\.1:\d+\s+↓\s+/data\.bin", text) or "transfers in flight: 0" in text
            for sort in ("progress", "remaining", "client", "rate"):
                term.keys("s")
                term.wait(rf"sort: {sort} ")
            term.keys("p")
            term.wait(r"PAUSED")
            term.keys("p")
            term.wait(r"\A(?![\s\S]*PAUSED)")       # p again: running, the mark is gone
            # a resize to the smallest usual terminal: the frame is redrawn to fit, figures whole
            term.tmux("resize-window", "-x", "80", "-y", "24")
            text = term.wait(r"sendfile ⚡")
            lines = text.rstrip("\n").split("\n")
            assert len(lines) <= 24 and all(len(line) <= 80 for line in lines), text
            assert re.search(rf"all\s+{FIGURE}/s\s+{FIGURE}/s\s+{FIGURE}\s+{FIGURE}\s", text), text
            assert "q quit" in lines[-1] and not re.search(r"\d…", text), text
            term.keys("q")
            text = term.wait(r"EXITED \d+")
            assert "EXITED 0" in text and "Traceback" not in text
        finally:
            term.close()
            load.stop()


@pytest.mark.slow
def test_top_started_first_waits_then_attaches(runtime, root):
    term = Term(top("--interval", "0.5"), env_for(runtime))
    try:
        term.wait(r"no zcopy server of uid \d+ is running; waiting")
        with Server(root, "--workers", "2", env={"XDG_RUNTIME_DIR": str(runtime)}) as srv:
            term.wait(rf"serve pid {srv.proc.pid} http://127\.0\.0\.1:{srv.port}/")
            term.keys("q")
            assert "EXITED 0" in term.wait(r"EXITED \d+")
    finally:
        term.close()


@pytest.mark.slow
def test_server_killed_under_top_is_reported(runtime, root):
    with Server(root, "--workers", "2", env={"XDG_RUNTIME_DIR": str(runtime)}) as srv:
        load = Load(srv.port, clients=2)
        term = Term(top("--interval", "0.5"), env_for(runtime))
        try:
            term.wait(rf"serve pid {srv.proc.pid}")
            workers = srv.worker_pids(at_least=2)
            for pid in [srv.proc.pid, *workers]:       # the whole group, without a chance to clean up
                os.kill(pid, signal.SIGKILL)
            srv.proc.wait(10)
            text = term.wait(rf"server serve-{srv.proc.pid} went away at [\d:]+; waiting")
            assert "Traceback" not in text and "EXITED" not in text
            # the stale folder of the killed server is removed by the reader looking for the next one
            stale = runtime / "zcopy" / f"serve-{srv.proc.pid}"
            deadline = time.monotonic() + 5
            while stale.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            assert not stale.exists()
            term.keys("q")
            assert "EXITED 0" in term.wait(r"EXITED \d+")
        finally:
            term.close()
            load.stop()
            for pid in workers:
                _reap_orphan(pid)


def _reap_orphan(pid: int) -> None:
    """Workers of a SIGKILLed supervisor were killed too; wait until they are gone."""
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                return    # a zombie of init's, nothing left running
        time.sleep(0.05)


def wait_for_json(pid: int, pred, timeout: float = 10.0) -> dict:
    """Poll `zcopy top --json --pid PID` until ``pred(snapshot)`` (published once a second)."""
    deadline = time.monotonic() + timeout
    while True:
        out = subprocess.run(top("--json", "--pid", str(pid)), capture_output=True, text=True, timeout=30)
        if out.returncode == 0 and pred(snap := json.loads(out.stdout)):
            return snap
        assert time.monotonic() < deadline, f"never published what the test waits for: {out.stdout}"
        time.sleep(0.2)


def test_once_prints_one_frame(runtime, root):
    with Server(root, "--workers", "2", "--prefetch", "on", env={"XDG_RUNTIME_DIR": str(runtime)}) as srv:
        for _ in range(3):
            with connect(srv.port) as s:
                s.sendall(b"GET /data.bin HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                read_response(s)
        snap = wait_for_json(srv.proc.pid, lambda j: j["requests"] >= 3)
        assert set(snap["prefetch"]) == {"windows_prefetched", "parks", "parked_seconds", "pool_size",
                                         "pool_peak", "pool_max", "failed"}
        assert snap["prefetch"]["pool_max"] == 16                 # 8 per worker, summed over 2
        out = subprocess.run(top("--once", "--pid", str(srv.proc.pid)), capture_output=True, text=True,
                             timeout=30, env={**os.environ, "COLUMNS": "150"})
        assert out.returncode == 0, out.stderr
        assert f"serve pid {srv.proc.pid}" in out.stdout and "sendfile" in out.stdout
        assert re.search(r"total \d+", out.stdout) and "5.7 MiB" in out.stdout   # 3 x 2,000,000 bytes
        assert re.search(r"prefetch +read ahead \d+ +parked \d+ \([\d.]+ s\)", out.stdout), out.stdout


def test_several_servers_are_listed(runtime, root):
    with Server(root, env={"XDG_RUNTIME_DIR": str(runtime)}) as a, \
            Server(root, env={"XDG_RUNTIME_DIR": str(runtime)}) as b:
        deadline = time.monotonic() + 10
        while len(os.listdir(runtime / "zcopy")) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        out = subprocess.run(top("--json"), capture_output=True, text=True, timeout=30)
        assert out.returncode == 1 and out.stdout == ""
        assert f"--pid {a.proc.pid}" in out.stderr and f"--pid {b.proc.pid}" in out.stderr
        assert f"  --pid {b.proc.pid}  serve  http://127.0.0.1:{b.port}/  1 worker\n" in out.stderr
        # either one is chosen by its supervisor's pid or by its stats folder
        folder_b = str(runtime / "zcopy" / f"serve-{b.proc.pid}")
        for args, server in ((["--pid", str(a.proc.pid)], a), (["--socket", folder_b], b)):
            out = subprocess.run(top("--json", *args), capture_output=True, text=True, timeout=30)
            assert out.returncode == 0, out.stderr
            snap = json.loads(out.stdout)
            assert snap["pid"] == server.proc.pid and snap["server"]["address"] == f"{server.url}/"
        out = subprocess.run(top("--json", "--pid", "1"), capture_output=True, text=True, timeout=30)
        assert out.returncode == 1 and out.stderr == "zcopy top: no zcopy server with pid 1 is running\n"


@pytest.mark.parametrize("args, message", [
    (["--socket", "/nowhere/else"], "is not a zcopy stats folder"),
    (["--interval", "0"], "must be positive"),
    (["--pid", "x"], "not a whole number"),
    (["--once", "--json"], "not allowed with"),
])
def test_bad_arguments_exit_2_with_one_line(args, message):
    out = subprocess.run(top(*args), capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and message in out.stderr and out.stderr.count("\n") == 1


def test_live_view_to_a_pipe_is_a_usage_error(runtime):
    out = subprocess.run(top(), capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr == "zcopy top: error: the live view needs a terminal; use --once or --json for a pipe or file\n"


def test_no_server_once_and_json_exit_1(runtime):
    for flag in ("--once", "--json"):
        out = subprocess.run(top(flag), capture_output=True, text=True, timeout=30)
        assert out.returncode == 1 and "no zcopy server of uid" in out.stderr and "Traceback" not in out.stderr


def test_top_shows_a_relay(runtime):
    """`zcopy relay` publishes the same way: --json has the required keys and
    exact totals, --once a frame with the open connection in flight."""
    from test_relay import Upstream, echo, recv_all
    from test_relay_cli import RelayProcess

    up = Upstream(echo)
    relay = RelayProcess("--upstream", f"127.0.0.1:{up.port}", "--engine", "splice", "--workers", "2")
    try:
        data = os.urandom(300_000)
        with socket.create_connection(("127.0.0.1", relay.port)) as c:
            c.sendall(data)
            got = b""
            while len(got) < len(data):
                got += c.recv(1 << 20)
            wait_for_json(relay.proc.pid, lambda j: j["inflight"] and j["inflight"][0]["done"] == 2 * len(data))
            out = subprocess.run(top("--once", "--pid", str(relay.proc.pid)), capture_output=True, text=True,
                                 timeout=30, env={**os.environ, "COLUMNS": "120"})
            assert out.returncode == 0, out.stderr
            assert re.search(rf"relay pid {relay.proc.pid} 127\.0\.0\.1:{relay.port} → 127\.0\.0\.1:{up.port}",
                             out.stdout), out.stdout
            assert re.search(r"splice\s+.*\s+yes\s", out.stdout) and "100.0% of bytes sent zero-copy" in out.stdout
            assert re.search(rf"127\.0\.0\.1:{c.getsockname()[1]}\s+⇅\s+→ 127\.0\.0\.1:{up.port}\s+585\.9 KiB",
                             out.stdout), out.stdout
            c.shutdown(socket.SHUT_WR)
            assert got + recv_all(c) == data
        snap = wait_for_json(relay.proc.pid, lambda j: j["connections"]["closed"] == 1)
        for key in ("requests", "bytes_sent", "bytes_received", "bytes_by_engine", "connections", "workers"):
            assert key in snap, key
        # each byte crossed the relay twice: client -> upstream and back
        assert snap["bytes_sent"] == snap["bytes_received"] == 2 * len(data)
        assert snap["bytes_by_engine"]["splice"] == {"sent": 2 * len(data), "received": 2 * len(data)}
        assert snap["connections"] == {"accepted": 1, "active": 0, "closed": 1} and len(snap["workers"]) == 2
        assert snap["kind"] == "relay" and snap["inflight"] == []
    finally:
        assert relay.stop()[0] == 0
        up.close()


@pytest.mark.slow
def test_a_steadily_read_download_shows_a_steady_rate(runtime, tmp_path):
    """A client reading 256 KiB/s steadily: every published rate of its
    transfer stays near that, read the way `zcopy top` reads it (issue 15.15:
    the socket's send buffer takes bytes in bursts, and the rate flipped
    between 0 and double on alternate snapshots)."""
    from zcopy.stats import discover, read_all

    pace = 256 * 1024
    www = tmp_path / "www"
    www.mkdir()
    with open(www / "big.bin", "wb") as f:
        f.truncate(64 << 20)           # read at 256 KiB/s: never finishes within the test
    with Server(www, env={"XDG_RUNTIME_DIR": str(runtime)}) as srv:
        stop = threading.Event()

        def client():
            with connect(srv.port) as s:
                s.sendall(b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n")
                got, t0 = 0, time.monotonic()
                while not stop.is_set():
                    got += len(s.recv(16384))
                    ahead = got / pace - (time.monotonic() - t0)
                    if ahead > 0:
                        time.sleep(ahead)

        reader = threading.Thread(target=client)
        reader.start()
        try:
            deadline = time.monotonic() + 30
            while not (found := [t for t in discover() if t.pid == srv.proc.pid]):
                assert time.monotonic() < deadline, "the server never published"
                time.sleep(0.1)
            rates, last = [], None
            while len(rates) < 6:
                assert time.monotonic() < deadline, f"too few publications: {rates}"
                snap = read_all(found[0])
                if snap and snap["published"] != last and snap["inflight"]:
                    last = snap["published"]
                    if snap["inflight"][0]["seconds"] > 2.5:    # past the first fill of the socket buffers
                        rates.append(snap["inflight"][0]["rate"])
                time.sleep(0.1)
        finally:
            stop.set()
            reader.join(10)
        assert all(0.5 * pace <= r <= 2 * pace for r in rates), [f"{r / 1024:.0f} KiB/s" for r in rates]


def test_failed_sign_ins_are_counted_and_shown(runtime, root, tmp_path):
    import base64

    from zcopy.accounts import passwords

    users = tmp_path / "users.txt"
    users.write_text(f"alice {passwords.make('pw', time_cost=1, memory_kib=passwords.MIN_MEMORY_KIB)} /:r\n")
    wrong = base64.b64encode(b"alice:wrong")
    with Server(root, "--users", str(users), "--workers", "2", "--state-dir", str(tmp_path / "state"),
                env={"XDG_RUNTIME_DIR": str(runtime)}) as srv:
        for _ in range(3):
            with connect(srv.port) as s:
                s.sendall(b"GET /data.bin HTTP/1.1\r\nHost: t\r\nConnection: close\r\nAuthorization: Basic "
                          + wrong + b"\r\n\r\n")
                assert read_response(s)[0] == 401
        snap = wait_for_json(srv.proc.pid, lambda j: j.get("auth", {}).get("failures", 0) >= 3)
        assert snap["auth"] == {"failures": 3, "throttled": 0, "busy": 0}      # summed over the workers
        out = subprocess.run(top("--once", "--pid", str(srv.proc.pid)), capture_output=True, text=True,
                             timeout=30, env={**os.environ, "COLUMNS": "150"})
        assert re.search(r"sign-ins +failed 3 +throttled 0 +busy 0", out.stdout), out.stdout


def test_requests_are_counted_by_user_and_shown(runtime, root, tmp_path):
    import base64

    from zcopy.accounts import passwords

    users = tmp_path / "users.txt"
    users.write_text(f"alice {passwords.make('pw', time_cost=1, memory_kib=passwords.MIN_MEMORY_KIB)} /:r\n"
                     "* - /:r\n")
    alice = b"Authorization: Basic " + base64.b64encode(b"alice:pw") + b"\r\n"
    with Server(root, "--users", str(users), "--workers", "2", "--state-dir", str(tmp_path / "state"),
                env={"XDG_RUNTIME_DIR": str(runtime)}) as srv:
        for i in range(5):
            with connect(srv.port) as s:       # a new connection each: spread over the workers
                s.sendall(b"HEAD /data.bin HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
                          + (alice if i < 3 else b"") + b"\r\n")
                assert read_response(s, head_only=True)[0] == 200
        snap = wait_for_json(srv.proc.pid, lambda j: j.get("users", {}).get("alice", 0) >= 3)
        assert snap["users"] == {"alice": 3}          # summed over the workers; anonymous not counted
        out = subprocess.run(top("--once", "--pid", str(srv.proc.pid)), capture_output=True, text=True,
                             timeout=30, env={**os.environ, "COLUMNS": "150"})
        assert re.search(r"by user +alice 3", out.stdout), out.stdout
