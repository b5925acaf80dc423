"""`zcopy relay` as a real process: flags, the startup line, the per-connection
log, a leak check on the forked worker's /proc/<pid>/fd, and SIGTERM drain."""

from __future__ import annotations

import os
import re
import select
import signal
import socket
import subprocess
import sys
import time

import pytest

from test_relay import Upstream, echo, fd_kinds, free_port, recv_all, wait_for

_ADDR = re.compile(rb"listening on \S+:(\d+) ->")


def zcopy(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "zcopy", *args], capture_output=True, timeout=30)


_OK = ["--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:1"]


@pytest.mark.parametrize("args", [
    [],
    ["--listen", "127.0.0.1:0"],
    ["--listen", "nope", "--upstream", "127.0.0.1:1"],
    ["--listen", "127.0.0.1:70000", "--upstream", "127.0.0.1:1"],
    ["--listen", "127.0.0.1:0", "--upstream", "no.such.host.invalid:80"],
    ["--listen", "127.0.0.1:0", "--upstream", "[::1]"],
    *([*_OK, flag, value] for flag, value in [
        ("--rate", "fast"), ("--rate", "-5"), ("--conn-rate", "0"), ("--engine", "sendfile"),
        ("--workers", "0"), ("--idle-timeout", "-1"), ("--idle-timeout", "nan"), ("--pipe-size", "0"),
        ("--pipe-size", "4GiB"), ("--max-connections", "0")]),
])
def test_bad_flags_are_one_line_and_exit_2(args):
    r = zcopy("relay", *args)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "error" in lines[0], lines


class RelayProcess:
    def __init__(self, *args: str, listen: str = "127.0.0.1:0", env: dict | None = None) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "zcopy", "relay", "--listen", listen, *args],
                                     stderr=subprocess.PIPE, env=None if env is None else {**os.environ, **env})
        buf = b""
        deadline = time.monotonic() + 20
        while not (m := _ADDR.search(buf)):
            assert time.monotonic() < deadline and self.proc.poll() is None, buf
            if select.select([self.proc.stderr], [], [], 0.2)[0]:
                buf += os.read(self.proc.stderr.fileno(), 65536)
        self.port = int(m.group(1))
        self.banner = buf.decode()

    def worker_pids(self) -> list[int]:
        pid = self.proc.pid
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]

    def stop(self) -> tuple[int, str]:
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(20)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        rest = self.proc.stderr.read().decode()
        self.proc.stderr.close()
        return code, rest


def test_relay_logs_each_connection_and_leaks_no_fd_in_its_worker(tmp_path):
    up = Upstream(echo)
    log = tmp_path / "relay.log"
    relay = RelayProcess("--upstream", f"127.0.0.1:{up.port}", "--engine", "splice", "--log", str(log))
    try:
        assert "engine splice (--engine flag)" in relay.banner
        assert re.search(r"pipe [\d.]+ [KM]iB \(probe ", relay.banner), relay.banner   # the pool is sized by the probe
        [worker] = wait_for(relay.worker_pids)

        def rounds(n):
            for i in range(n):
                with socket.create_connection(("127.0.0.1", relay.port)) as c:
                    data = os.urandom(100_000 + i)
                    c.sendall(data)
                    if i % 2:     # every other client resets mid-stream
                        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
                        continue
                    c.shutdown(socket.SHUT_WR)
                    assert recv_all(c) == data

        rounds(2)
        assert wait_for(lambda: len(log.read_text().splitlines()) == 2)
        before = fd_kinds(worker)
        rounds(20)
        assert wait_for(lambda: len(log.read_text().splitlines()) == 22)
        assert wait_for(lambda: fd_kinds(worker) == before), (before, fd_kinds(worker))
        lines = log.read_text().splitlines()
        assert all(re.fullmatch(r"\S+ relay client=127\.0\.0\.1:\d+ upstream=127\.0\.0\.1:\d+ engine=splice "
                                r"up=\d+ down=\d+ duration=[\d.]+s end=\w+", line) for line in lines), lines
        ends = [line.rsplit("end=", 1)[1] for line in lines]
        assert ends.count("closed") == 11 and ends.count("client_reset") == 11, ends
        assert "up=100000 down=100000" in lines[0]
    finally:
        code, _ = relay.stop()
        up.close()
    assert code == 0


def test_sigterm_drains_open_connections_then_exits_0():
    up = Upstream(echo)
    relay = RelayProcess("--upstream", f"127.0.0.1:{up.port}", "--workers", "2")
    try:
        # --engine auto: the profile's relay_engine, with its reason
        assert "engine splice (probe (" in relay.banner and "socket -> pipe and pipe -> TCP socket both work" \
            in relay.banner, relay.banner
        c = socket.create_connection(("127.0.0.1", relay.port))
        c.sendall(b"before")
        c.settimeout(5)
        assert c.recv(6) == b"before"
        relay.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        with pytest.raises(OSError):          # no new connections
            socket.create_connection(("127.0.0.1", relay.port), timeout=1).close()
        c.sendall(b"during")                  # the open one still flows
        assert c.recv(6) == b"during"
        c.shutdown(socket.SHUT_WR)
        assert recv_all(c) == b""
        c.close()
        assert relay.proc.wait(10) == 0
    finally:
        code, rest = relay.stop()
        up.close()
    assert code == 0
    assert "end=closed" in rest


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.parametrize("listen, upstream_host, upstream_name", [
    pytest.param("[::1]:0", "::1", "[::1]", marks=pytest.mark.skipif(not _has_ipv6_loopback(), reason="no ::1")),
    ("127.0.0.1:0", "127.0.0.1", "localhost"),
])
def test_ipv6_addresses_and_upstream_hostname(listen, upstream_host, upstream_name):
    up = Upstream(echo, host=upstream_host)
    relay = RelayProcess("--upstream", f"{upstream_name}:{up.port}", listen=listen)
    try:
        assert f"-> {upstream_name}:{up.port}," in relay.banner
        host = listen.rsplit(":", 1)[0].strip("[]")
        with socket.create_connection((host, relay.port)) as c:
            data = os.urandom(200_000)
            c.sendall(data)
            c.shutdown(socket.SHUT_WR)
            assert recv_all(c) == data
            client = f"[::1]:{c.getsockname()[1]}" if ":" in host else f"127.0.0.1:{c.getsockname()[1]}"
    finally:
        code, rest = relay.stop()
        up.close()
    assert code == 0
    assert f"client={client} upstream={upstream_name}:{up.port} " in rest and "end=closed" in rest, rest


def test_refused_upstream_is_logged_and_client_gets_eof():
    relay = RelayProcess("--upstream", f"127.0.0.1:{free_port()}", "--engine", "copy")
    try:
        with socket.create_connection(("127.0.0.1", relay.port)) as c:
            c.settimeout(5)
            assert c.recv(1) == b""
    finally:
        code, rest = relay.stop()
    assert code == 0
    assert re.search(r"engine=copy up=0 down=0 duration=[\d.]+s end=upstream_refused", rest), rest
