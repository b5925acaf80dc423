"""A real haproxy in front of zcopy nodes, for the scale-out tests (docs/deploy.md)."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time

import pytest

needs_haproxy = pytest.mark.skipif(shutil.which("haproxy") is None,
                                   reason="haproxy is not installed (apt-get install haproxy)")

CONFIG = """\
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
    option httpchk GET {check}
    http-check expect status 200
    default-server check inter {inter} fall 1 rise 1
{servers}
listen stats
    bind 127.0.0.1:{stats}
    stats enable
    stats uri /stats
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accepts(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def haproxy(folder, servers: list[str], *, check: str = "/", inter: str = "200ms"):
    """Run haproxy with ``servers`` (``server`` lines) behind a frontend on a free loopback port;
    yields (frontend port, stats port) once the frontend accepts; stops it on exit."""
    port, stats = free_port(), free_port()
    cfg = folder / "haproxy.cfg"
    cfg.write_text(CONFIG.format(port=port, stats=stats, check=check, inter=inter,
                                 servers="\n".join(f"    {line}" for line in servers)))
    proc = subprocess.Popen(["haproxy", "-db", "-f", str(cfg)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while not (accepts(port) and accepts(stats)):
            assert proc.poll() is None, "haproxy exited at start"
            assert time.monotonic() < deadline, "haproxy did not start listening"
            time.sleep(0.05)
        yield port, stats
    finally:
        proc.terminate()
        proc.wait(10)
