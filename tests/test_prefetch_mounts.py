"""Prefetch against real storage (root only). A served tree can span
filesystems, so prefetch decides per file, not by the root alone: a tmpfs
inside a disk-backed root, a disk folder bind-mounted inside a tmpfs root.
A slow disk for real: a blkio cgroup throttle on the worker's reads. A
failing disk for real: an ext4 image on a loop device shrunk under the
filesystem, so reading a file fails with EIO."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from conftest import needs_root
from serverutil import connect, get
from test_prefetch_pool import make_cold
from test_prefetch_serve import arrived, forked_worker

from zcopy import profile
from probes.filesystem import fs_type
from zcopy.server.prefetch import decide

MiB = 1 << 20
pytestmark = needs_root


@contextlib.contextmanager
def mounted(*argv: str):
    """``mount *argv`` (the last argument is the mount point), unmounted after."""
    done = subprocess.run(["mount", *argv], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount here: {done.stderr.strip()}")
    try:
        yield argv[-1]
    finally:
        subprocess.run(["umount", argv[-1]], check=True)


@contextlib.contextmanager
def loop_thread_traced(pid: int, calls: str):
    """strace the worker's loop thread only (``-p`` without ``-f``: not the
    pool's threads); yields a list filled with the traced lines on exit."""
    if shutil.which("strace") is None:
        pytest.skip("needs strace")
    log = tempfile.NamedTemporaryFile("r", prefix="strace-", suffix=".log")
    proc = subprocess.Popen(["strace", "-p", str(pid), "-e", f"trace={calls}", "-o", log.name],
                            stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    try:
        assert "attached" in proc.stderr.readline()
        yield lines
    finally:
        proc.terminate()
        proc.wait()
        lines.extend(line for line in log.read().splitlines() if "(" in line)
        log.close()


def test_a_tmpfs_inside_a_disk_root_is_never_prefetched(tmp_path):
    assert decide(str(tmp_path))[0]                       # the root is on disk: prefetch on
    (tmp_path / "mem").mkdir()
    disk = make_cold(tmp_path / "disk.bin", 9 * MiB)
    with mounted("-t", "tmpfs", "-o", "size=16m", "tmpfs", str(tmp_path / "mem")):
        mem = os.urandom(9 * MiB)
        (tmp_path / "mem" / "mem.bin").write_bytes(mem)
        with forked_worker(tmp_path) as (port, result):
            for _ in range(3):
                assert get(port, "/mem/mem.bin")[2] == mem
            assert get(port, "/disk.bin")[2] == disk
            report = result()
    # tmpfs refuses RWF_NOWAIT; checked anyway, each of its windows would go
    # to the pool (9 more per request). Only the disk file's did: its first window, and each of
    # the other two unless the kernel's readahead of the pool's read had brought it in.
    assert 1 <= report["prefetch"]["windows_prefetched"] <= 3


def test_a_disk_folder_mounted_inside_a_tmpfs_root_turns_auto_on(tmp_path):
    root, disk = tmp_path / "root", tmp_path / "disk"
    root.mkdir()
    disk.mkdir()
    with mounted("-t", "tmpfs", "-o", "size=1m", "tmpfs", str(root)):
        on, why = decide(str(root))
        assert not on and "tmpfs" in why
        assert profile.load_or_probe(str(root)).prefetch is False
        (root / "data").mkdir()
        with mounted("--bind", str(disk), str(root / "data")):
            on, why = decide(str(root))
            assert on and f"{root / 'data'} ({fs_type(str(disk))[0]}) is mounted below it" in why
            assert profile.load_or_probe(str(root)).prefetch is True


@pytest.mark.skipif(shutil.which("losetup") is None or shutil.which("mkfs.ext4") is None,
                    reason="needs losetup and mkfs.ext4")
def test_a_read_error_in_the_pool_ends_the_transfer_and_the_worker_serves_on(tmp_path):
    img, mnt = tmp_path / "img", tmp_path / "mnt"
    mnt.mkdir()
    with open(img, "wb") as f:
        f.truncate(32 * MiB)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(img)], check=True)
    loop = subprocess.run(["losetup", "-f", "--show", str(img)], capture_output=True, text=True)
    if loop.returncode != 0:
        pytest.skip(f"no loop device: {loop.stderr.strip()}")
    dev = loop.stdout.strip()
    try:
        with mounted(dev, str(mnt)):
            make_cold(mnt / "bad.bin", 8 * MiB)
            (mnt / "ok.txt").write_bytes(b"fine")
            os.sync()
            with forked_worker(mnt) as (port, result):
                assert get(port, "/ok.txt")[2] == b"fine"     # cached in the page cache now
                # Shrink the device under the filesystem: the file's blocks are past its end.
                with open(img, "r+b") as f:
                    f.truncate(4 * MiB)
                subprocess.run(["losetup", "-c", dev], check=True)
                with loop_thread_traced(result.pid, "sendfile,splice,read,pread64,preadv2") as calls:
                    s = connect(port)
                    s.sendall(b"GET /bad.bin HTTP/1.1\r\nHost: t\r\n\r\n")
                    got = b""
                    while chunk := s.recv(1 << 20):
                        got += chunk
                    s.close()
                assert got.startswith(b"HTTP/1.1 200") and len(got) < 8 * MiB   # cut off, not hung
                assert get(port, "/ok.txt")[2] == b"fine"     # the worker serves on
                report = result()
    finally:
        subprocess.run(["losetup", "-d", dev], check=True)
    assert report["exit"] == 0
    # The pool's read failed; the loop did not try the disk again itself
    # (on a failing disk that retry can block for seconds).
    assert calls and not [c for c in calls if "EIO" in c]
    assert report["prefetch"]["failed"] >= 1
    assert report["errors"].get("EIO") == 1


def test_a_hot_request_is_answered_while_the_disk_is_slowly_reading_a_cold_window(tmp_path):
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tools"))
    from bench_cold import Throttle

    if not os.path.exists(os.path.join(Throttle.BASE, "blkio.throttle.read_bps_device")):
        pytest.skip("needs the cgroup v1 blkio controller")
    cold = make_cold(tmp_path / "cold.bin", 4 * MiB)
    (tmp_path / "hot.txt").write_bytes(b"h" * 1024)
    with Throttle(str(tmp_path), 4_000_000) as throttle, forked_worker(tmp_path) as (port, result):
        throttle.add([result.pid])                      # its pool threads too: they start later
        assert get(port, "/hot.txt")[2] == b"h" * 1024  # warm
        s = connect(port)
        s.sendall(b"GET /cold.bin HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:                # the head comes at once (not corked by
            head += s.recv(1)                           # MSG_MORE) while its window is read
        for _ in range(5):
            assert get(port, "/hot.txt")[2] == b"h" * 1024
        # Had the loop read the cold window itself (as with --prefetch off), it
        # would have sent cold bytes before it could read the hot requests.
        assert arrived(s) == b"", "cold bytes left before the hot requests were answered"
        body = b""
        while chunk := s.recv(1 << 20):
            body += chunk
        s.close()
        assert body == cold
        report = result()
    assert report["prefetch"]["parks"] == 1 and report["prefetch"]["windows_prefetched"] == 1
