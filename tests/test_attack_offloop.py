"""Attacks on the off-loop lookups (OpenFileCache.find / resolve / with_entries) with real
sockets, files and a traced worker: what a request is answered while its file changes."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time

import pytest

from serverutil import Server, get

pytestmark = pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace")


def _wait(cond, timeout: float = 15.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def _traced(pid: int) -> bool:
    def one(tid: str) -> bool:
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                return any(line.startswith("TracerPid:") and line.split()[1] != "0" for line in f)
        except OSError:
            return True
    return all(one(tid) for tid in os.listdir(f"/proc/{pid}/task"))


class _Trace:
    """strace attached to every thread of ``pid``, recording the given calls."""

    def __init__(self, pid: int, calls: str) -> None:
        self.pid = pid
        self.proc = subprocess.Popen(["strace", "-f", "-qq", "-e", f"trace={calls}", "-p", str(pid)],
                                     stderr=subprocess.PIPE, text=True)
        _wait(lambda: _traced(pid), what="strace to attach")

    def stop(self) -> list[str]:
        self.proc.terminate()
        _, err = self.proc.communicate(timeout=20)
        return err.splitlines()


def _on_loop(lines: list[str], pid: int, needle: str) -> list[str]:
    """The lines made by the worker's main thread (the event loop) that name ``needle``."""
    out = []
    for line in lines:
        m = re.match(r"\[pid\s+(\d+)\]", line)
        tid = int(m.group(1)) if m else pid
        if tid == pid and needle in line:
            out.append(line)
    return out


def test_a_file_hard_linked_elsewhere_is_never_walked_on_the_loop(tmp_path):
    """A served, watched file gets a second hard link in a folder nobody watches (no event in
    its own folder). The background re-walk (REFRESH_AT) finds it unchanged but no longer
    watchable (nlink 2): from then on each request checks its name. That check must be the
    fstatat in the folder the walk opened, never a walk from ROOT on the event loop."""
    (tmp_path / "deep").mkdir()
    (tmp_path / "elsewhere").mkdir()
    body = os.urandom(3000)
    (tmp_path / "deep" / "f.bin").write_bytes(body)
    with Server(tmp_path, "--workers", "1") as srv:
        worker = srv.worker_pids()[0]
        assert get(srv.port, "/deep/f.bin")[2] == body         # cached, watched (nlink 1)
        os.link(tmp_path / "deep" / "f.bin", tmp_path / "elsewhere" / "g.bin")
        trace = _Trace(worker, "openat,openat2,newfstatat,statx")
        try:
            # Past REFRESH_AT the entry answers and is walked again off the loop, which
            # finds nlink 2; keep asking until well past RESOLVE_TTL.
            end = time.monotonic() + 2.5
            while time.monotonic() < end:
                status, _, got = get(srv.port, "/deep/f.bin")
                assert (status, got) == (200, body)
                time.sleep(0.1)
        finally:
            lines = trace.stop()
    # The walk from ROOT opens "deep" (openat2 / openat of the folder): never on the loop.
    assert _on_loop(lines, worker, '"deep') == [], (worker, _on_loop(lines, worker, '"deep')[:2])
