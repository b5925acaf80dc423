"""PipePool: real pipes, real F_SETPIPE_SZ, real per-user limits."""

from __future__ import annotations

import fcntl
import json
import os

import pytest

from zcopy.pipes import PipePool


def test_acquire_gives_nonblocking_cloexec_pipe_of_the_size(fd_guard):
    pool = PipePool(256 << 10)
    pipe = pool.acquire()
    try:
        assert fcntl.fcntl(pipe.w, fcntl.F_GETPIPE_SZ) == pipe.size >= 256 << 10
        for fd in (pipe.r, pipe.w):
            assert fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK
            assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
        assert os.write(pipe.w, b"abc") == 3 and os.read(pipe.r, 10) == b"abc"
        with pytest.raises(BlockingIOError):
            os.read(pipe.r, 1)
    finally:
        pool.release(pipe)
        pool.close()


def test_empty_pipe_is_reused(fd_guard):
    pool = PipePool(64 << 10)
    first = pool.acquire()
    fds = (first.r, first.w)
    pool.release(first)
    assert pool.idle == 1
    again = pool.acquire()
    assert (again.r, again.w) == fds and pool.reused == 1 and pool.created == 1
    pool.release(again)
    pool.close()
    assert pool.idle == 0


def test_pipe_with_bytes_inside_is_closed_not_pooled(fd_guard):
    pool = PipePool(64 << 10)
    pipe = pool.acquire()
    pipe.pending = os.write(pipe.w, b"left over from an aborted transfer")
    r = pipe.r
    pool.release(pipe)
    assert pool.idle == 0 and pool.discarded == 1 and pipe.closed
    with pytest.raises(OSError):
        os.fstat(r)
    pool.close()


def test_max_idle_bounds_the_pool(fd_guard):
    pool = PipePool(4096, max_idle=2)
    pipes = [pool.acquire() for _ in range(4)]
    for p in pipes:
        pool.release(p)
    assert pool.idle == 2 and sum(p.closed for p in pipes) == 2
    pool.close()


def test_refused_resize_keeps_smaller_pipe_and_counts_it(fd_guard):
    """An unprivileged process asking for more than pipe-max-size gets EPERM
    (fcntl(2)); the pool keeps the default-sized pipe. Run as nobody in a
    forked child so the refusal is the kernel's own."""
    max_size = int(open("/proc/sys/fs/pipe-max-size").read())
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: drop privileges, try, report, exit without cleanup handlers
        try:
            os.close(r)
            if os.geteuid() == 0:
                os.setgid(65534)
                os.setuid(65534)
            pool = PipePool(max_size * 2)
            pipe = pool.acquire()
            os.write(w, json.dumps({"size": pipe.size, "shrunk": pool.shrunk}).encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        report = json.loads(f.read())
    os.waitpid(pid, 0)
    assert report["shrunk"] == 1
    assert 4096 <= report["size"] <= max_size


def test_bad_size_is_refused():
    with pytest.raises(ValueError):
        PipePool(0)
