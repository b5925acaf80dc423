"""`zcopy bench`: the JSON shape (never the speed) and the measurement harness."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import threading

import pytest

from zcopy import measure

METHODS = ["read_send", "mmap_send", "sendfile", "splice", "shutil.copyfileobj", "socket.sendfile"]


def zcopy(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "zcopy", *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd)


@pytest.mark.parametrize("target", ["unix", "tcp"])
def test_json_shape(target, tmp_path):
    out = zcopy("bench", "--size", "256KiB", "--runs", "1", "--target", target, "--json", "--dir", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""  # no progress bar (nor its newline) when stderr is not a terminal
    report = json.loads(out.stdout)
    assert set(report) == {"methods", "size", "runs", "machine"}
    assert report["size"] == 256 << 10 and report["runs"] == 1
    assert [m["method"] for m in report["methods"]] == METHODS
    for m in report["methods"]:
        assert set(m) == {"method", "seconds", "gbps", "cpu_s", "relative"}
        assert m["seconds"] > 0 and m["gbps"] > 0 and m["cpu_s"] >= 0
    assert report["methods"][0]["relative"] == 100.0
    machine = report["machine"]
    assert set(machine) == {"cpu", "cpus", "kernel", "python", "filesystem", "target", "cache", "pipe_size",
                            "pipe_size_source"}
    assert machine["target"] == target and machine["cache"] == "warm"
    assert machine["pipe_size"] in measure.PIPE_SIZES and machine["pipe_size_source"] == "measured"
    assert os.listdir(tmp_path) == []  # the test file is gone


def test_markdown_cold_and_fixed_pipe_size(tmp_path):
    out = zcopy("bench", "--size", "100000", "--runs", "1", "--cold", "--pipe-size", "64KiB",
                "--markdown", "--dir", str(tmp_path))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("| method |")
    assert sum(line.startswith("| ") for line in lines) == 1 + len(METHODS)
    assert "64.0 KiB (--pipe-size)" in out.stdout
    if measure.filesystem_type(str(tmp_path)) in ("ext4", "xfs", "btrfs"):
        assert "cold (posix_fadvise DONTNEED before every run)" in out.stdout, out.stdout


def test_drop_cached_pages_really_evicts(tmp_path):
    """What --cold relies on, checked with the kernel's own answer (RWF_NOWAIT)."""
    with measure.temp_file(1 << 20, str(tmp_path)) as fd:
        if measure.is_cached(fd, 0) is None:
            pytest.skip(f"{measure.filesystem_type(str(tmp_path))} cannot say what is cached")
        os.pread(fd, 4096, 512 << 10)
        assert measure.is_cached(fd, 512 << 10) is True
        assert measure.evict(fd, (0, 512 << 10)) is True
        assert measure.is_cached(fd, 0) is False and measure.is_cached(fd, 512 << 10) is False


@pytest.mark.parametrize("flags", [["--size", "0"], ["--runs", "0"], ["--target", "udp"],
                                   ["--json", "--markdown"], ["--size", "lots"]])
def test_bad_flags_one_line_exit_2(flags):
    out = zcopy("bench", *flags)
    assert out.returncode == 2
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_pipe_size_reported_is_what_the_kernel_gave(tmp_path):
    """F_SETPIPE_SZ rounds 3000 up to a page; the report must say so, not echo the flag."""
    out = zcopy("bench", "--size", "8KiB", "--runs", "1", "--pipe-size", "3000", "--json", "--dir", str(tmp_path))
    assert out.returncode == 0, out.stderr
    machine = json.loads(out.stdout)["machine"]
    assert machine["pipe_size"] == os.sysconf("SC_PAGE_SIZE")
    assert machine["pipe_size_source"].startswith("--pipe-size") and "the kernel gave" in machine["pipe_size_source"]


def test_size_that_does_not_fit_is_refused_before_writing(tmp_path):
    """A 1 MiB tmpfs: a 2 MiB test file is one line and exit 2, nothing written."""
    small = tmp_path / "small"
    small.mkdir()
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)], capture_output=True)
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mount.stderr.decode().strip()}")
    try:
        out = zcopy("bench", "--size", "2MiB", "--runs", "1", "--dir", str(small))
        assert out.returncode == 2
        assert out.stderr.count("\n") == 1 and "does not fit" in out.stderr and "free" in out.stderr, out.stderr
        assert os.listdir(small) == []
    finally:
        subprocess.run(["umount", str(small)], check=True)


@pytest.mark.parametrize("where", ["/proc", "/sys"])
def test_unwritable_dir_is_one_line_exit_2(where):
    out = zcopy("bench", "--size", "4KiB", "--runs", "1", "--dir", where)
    assert out.returncode == 2
    assert out.stderr.startswith("zcopy bench: error: ") and out.stderr.count("\n") == 1, out.stderr


def test_progress_bar_on_a_terminal(tmp_path):
    """stderr on a pty: the bar shows what it is doing; stdout still carries clean JSON."""
    import pty

    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen([sys.executable, "-m", "zcopy", "bench", "--size", "4MiB", "--runs", "2",
                                 "--json", "--dir", str(tmp_path)],
                                stdout=subprocess.PIPE, stderr=slave, env={**os.environ, "COLUMNS": "100"})
        os.close(slave)
        slave = -1
        screen = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            screen += chunk
        report = json.loads(proc.stdout.read())
        proc.stdout.close()
        assert proc.wait(60) == 0
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
    text = screen.decode(errors="replace")
    assert "measuring pipe sizes" in text or "2 run(s) x 6 methods" in text, text
    assert f"/{2 * len(METHODS) + 3 * len(measure.PIPE_SIZES)}" in text, text  # the bar's N/total
    assert [m["method"] for m in report["methods"]] == METHODS


def test_cold_on_tmpfs_says_it_cannot(tmp_path):
    from zcopy.cmd.bench import cache_policy

    if measure.filesystem_type("/dev/shm") != "tmpfs":
        pytest.skip("/dev/shm is not tmpfs here")
    with measure.temp_file(8192, "/dev/shm") as fd:
        description, hook = cache_policy(True, "/dev/shm", fd, 8192)
        assert hook is None and "not possible" in description and "tmpfs" in description
        out = zcopy("bench", "--size", "8KiB", "--runs", "1", "--cold", "--json", "--dir", "/dev/shm")
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["machine"]["cache"].startswith("warm (--cold not possible: ")


# -- the harness shared with the pipe.throughput probe ----------------------------------

def reader_pids() -> set[int]:
    """Live reader processes that are our children."""
    pids = set()
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                with open(f"/proc/{name}/cmdline", "rb") as f:
                    cmd = f.read()
            except OSError:
                continue
            if ppid == os.getpid() and b"_drain_main" in cmd:
                pids.add(int(name))
    return pids


def test_sink_reaps_reader_even_on_keyboard_interrupt(fd_guard):
    with pytest.raises(KeyboardInterrupt):
        with measure.Sink(1 << 20) as sink:
            assert sink._proc.pid in reader_pids()
            sink.sock.sendall(b"x" * 1000)  # mid-run: the reader is still waiting for more
            raise KeyboardInterrupt
    assert reader_pids() == set()


def test_run_interleaved_cleans_up_after_a_failing_method(fd_guard):
    def broken(sock, fd, size):
        sock.sendall(b"half")
        raise RuntimeError("method failed")

    with measure.temp_file(4096) as fd:
        with pytest.raises(RuntimeError, match="method failed"):
            measure.run_interleaved({"ok": measure.socket_sendfile, "broken": broken}, fd, 4096, 2)
    assert reader_pids() == set()


def test_run_interleaved_rotates_order_and_takes_medians(fd_guard):
    order = []
    with measure.temp_file(65536) as fd:
        methods = {"a": measure.socket_sendfile, "b": measure.shutil_copyfileobj}
        results = measure.run_interleaved(methods, fd, 65536, 3, on_sample=lambda n, s: order.append(n))
    assert order == ["a", "b", "b", "a", "a", "b"]
    assert set(results) == {"a", "b"} and all(r.seconds > 0 and r.size == 65536 for r in results.values())


@pytest.mark.parametrize("copier", [measure.socket_sendfile, measure.shutil_copyfileobj])
def test_python_copiers_send_the_exact_bytes(copier, fd_guard):
    """The bench's reader discards; check the Python-API methods send the right bytes."""
    with measure.temp_file(300_000) as fd:
        expected = hashlib.sha256(os.pread(fd, 300_000, 0)).hexdigest()
        a, b = socket.socketpair()
        got = hashlib.sha256()

        def read_all():
            while chunk := b.recv(65536):
                got.update(chunk)

        reader = threading.Thread(target=read_all)
        reader.start()
        with a, b:
            os.lseek(fd, 0, os.SEEK_SET)
            copier(a, fd, 300_000)
            a.shutdown(socket.SHUT_WR)
            reader.join(20)
    assert got.hexdigest() == expected


def test_pick_pipe_size_prefers_the_smallest_near_the_best():
    assert measure.pick_pipe_size({65536: 5.0, 262144: 9.7, 1048576: 10.0}) == 262144
    assert measure.pick_pipe_size({65536: 5.0, 262144: 9.0, 1048576: 10.0}) == 1048576
