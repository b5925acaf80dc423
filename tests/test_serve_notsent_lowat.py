"""--notsent-lowat: the cap on a connection's unsent bytes (TCP_NOTSENT_LOWAT), set on the listeners
and inherited by every accepted connection; seen from outside, in the kernel's own count of the
server socket's unsent bytes (ss -ti: notsent) while a client reads nothing."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import time

import pytest

from serverutil import Server

pytestmark = pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (Debian: iproute2)")
KiB, MiB = 1024, 1024 * 1024


def unsent_once_stalled(port: int, timeout: float = 15.0) -> int:
    """The server socket's unsent bytes once it has stopped sending to a client that reads nothing:
    the first non-zero count that two samples in a row agree on."""
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        out = subprocess.run(["ss", "-tinH", "state", "established", f"sport = :{port}"],
                             capture_output=True, text=True, check=True).stdout
        m = re.search(r"notsent:(\d+)", out)
        now = int(m.group(1)) if m else 0
        if now and now == last:
            return now
        last = now
        time.sleep(0.05)
    raise AssertionError(f"the server never stalled with unsent bytes: {out!r}")


def stalled_download(tmp_path, *flags: str) -> int:
    (tmp_path / "big.bin").write_bytes(b"z" * (32 * MiB))
    with Server(tmp_path, *flags) as srv, socket.socket() as c:
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * KiB)    # a small window, soon full
        c.connect(("127.0.0.1", srv.port))
        c.sendall(b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n")
        return unsent_once_stalled(srv.port)


def test_the_cap_holds_for_every_connection(tmp_path):
    unsent = stalled_download(tmp_path, "--notsent-lowat", "64KiB")
    # sendfile stops adding once the unsent bytes reach the cap: at most one 64 KiB step past it
    assert unsent <= 128 * KiB, unsent


def test_without_it_the_kernel_queues_megabytes(tmp_path):
    """The same stalled download with the kernel's default: the check above tells the two apart."""
    assert stalled_download(tmp_path, "--notsent-lowat", "0") > MiB


@pytest.mark.parametrize("value, words", [("3GiB", "--notsent-lowat must be below 2 GiB"),
                                          ("lots", "--notsent-lowat")])
def test_a_bad_value_is_one_line_and_exit_2(tmp_path, value, words):
    r = subprocess.run([sys.executable, "-m", "zcopy", "serve", str(tmp_path), "--port", "0",
                        "--notsent-lowat", value], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and words in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
