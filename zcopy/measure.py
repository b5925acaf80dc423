"""Time ways of copying a file into a socket: shared by ``zcopy bench`` and
the ``pipe.throughput`` probe.

What is measured is the sender. The far end of the socket is a *separate
process* (so the reader never competes with the sender for the GIL) that
discards cheaply: it splices socket -> pipe -> /dev/null, so the receiving
side does no user-space copy of its own. After each run's ``size`` bytes it
writes one acknowledgement byte back; the clock stops when that byte
arrives, so a run counts the whole trip, not just filling a socket buffer.

Sender CPU is ``time.thread_time()`` (user + sys of the copying thread), so
a progress bar refreshing in another thread is not billed to the method.

Methods are interleaved across runs (run 1: A B C, run 2: B C A, ...) and
the median is reported: on a shared machine a burst of someone else's load
then hurts one sample of every method rather than every sample of one.

Everything spawned or written is cleaned up on any exit, including
KeyboardInterrupt and the probe runner's timeout exception.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Callable, Iterator

#: A copy method: send exactly ``size`` bytes of ``file_fd`` from offset 0 to ``sock``.
Copier = Callable[[socket.socket, int, int], None]

_ACK = b"k"
_READER_PIPE_SIZE = 1 << 20


@dataclass(frozen=True)
class Sample:
    seconds: float   # wall time until the reader acknowledged the last byte
    cpu_s: float     # sender thread user + sys


@dataclass(frozen=True)
class Summary:
    """The median of a method's samples."""

    seconds: float
    cpu_s: float
    size: int

    @property
    def gbps(self) -> float:
        """Throughput in GB/s (10**9 bytes per second)."""
        return self.size / self.seconds / 1e9 if self.seconds > 0 else 0.0


def summarise(samples: list[Sample], size: int) -> Summary:
    return Summary(statistics.median(s.seconds for s in samples),
                   statistics.median(s.cpu_s for s in samples), size)


# -- the discarding reader --------------------------------------------------

def _drain_main() -> None:
    """Entry point of the reader process: ``python -c ... <fd> <size>``.

    Repeatedly discards exactly ``size`` bytes with splice and acknowledges
    them, until the sender closes the socket.
    """
    import fcntl

    fd, size = int(sys.argv[1]), int(sys.argv[2])
    r, w = os.pipe()
    with contextlib.suppress(OSError):
        fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, _READER_PIPE_SIZE)
    chunk = fcntl.fcntl(w, fcntl.F_GETPIPE_SZ)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.write(fd, _ACK)  # ready: the first run must not time interpreter start-up
        while True:
            left = size
            while left:
                n = os.splice(fd, w, min(left, chunk), flags=os.SPLICE_F_MOVE)
                if n == 0:
                    return  # sender is done (or gave up mid-run)
                left -= n
                while n:
                    n -= os.splice(r, null, n, flags=os.SPLICE_F_MOVE)
            os.write(fd, _ACK)
    except (BrokenPipeError, ConnectionResetError):
        return  # the sender went away: nothing left to discard


class Sink:
    """A connected, blocking ``sock`` whose far end is a discarding reader
    process expecting ``size`` bytes per run. Use as a context manager."""

    def __init__(self, size: int, target: str = "unix") -> None:
        if size <= 0:
            raise ValueError(f"size must be positive, not {size}")
        if target not in ("unix", "tcp"):
            raise ValueError(f"target must be 'unix' or 'tcp', not {target!r}")
        self.size = size
        self.target = target
        self.sock: socket.socket | None = None
        self._proc: subprocess.Popen | None = None

    def __enter__(self) -> "Sink":
        try:
            self.sock, far = self._connected_pair()
            with far:
                self._proc = subprocess.Popen(
                    [sys.executable, "-c", "from zcopy.measure import _drain_main; _drain_main()",
                     str(far.fileno()), str(self.size)],
                    pass_fds=[far.fileno()], stdin=subprocess.DEVNULL)
            self.wait_done()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _connected_pair(self) -> tuple[socket.socket, socket.socket]:
        if self.target == "unix":
            return socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(1)
            client = socket.create_connection(listener.getsockname(), timeout=5)
            client.settimeout(None)
            far, _ = listener.accept()
        return client, far

    def wait_done(self) -> None:
        """Block until the reader acknowledged a whole run (or being ready)."""
        if self.sock.recv(1) != _ACK:
            raise RuntimeError("reader process exited before acknowledging the run")

    def close(self) -> None:
        """Close the socket (the reader sees EOF and exits), then reap it."""
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self._proc is not None:
            proc, self._proc = self._proc, None
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            except BaseException:  # interrupted while waiting: still reap, then go on
                proc.kill()
                proc.wait()
                raise


# -- timing -------------------------------------------------------------------

def time_copy(sink: Sink, copy: Copier, file_fd: int) -> Sample:
    """One run: ``copy`` sends ``sink.size`` bytes; timed until acknowledged."""
    os.lseek(file_fd, 0, os.SEEK_SET)  # for methods that use the file position
    wall, cpu = time.perf_counter(), time.thread_time()
    copy(sink.sock, file_fd, sink.size)
    sink.wait_done()
    return Sample(time.perf_counter() - wall, time.thread_time() - cpu)


def run_interleaved(methods: dict[str, Copier], file_fd: int, size: int, runs: int, *,
                    target: str = "unix", before_each: Callable[[], None] | None = None,
                    on_sample: Callable[[str, Sample], None] | None = None) -> dict[str, Summary]:
    """Time every method ``runs`` times, rotating the order each run; medians.

    ``before_each`` runs untimed before every sample (``--cold`` drops the
    file's cached pages there). One reader process serves all the runs.
    """
    names = list(methods)
    samples: dict[str, list[Sample]] = {name: [] for name in names}
    with Sink(size, target) as sink:
        for run in range(runs):
            shift = run % len(names)
            for name in names[shift:] + names[:shift]:
                if before_each:
                    before_each()
                sample = time_copy(sink, methods[name], file_fd)
                samples[name].append(sample)
                if on_sample:
                    on_sample(name, sample)
    return {name: summarise(samples[name], size) for name in names}


# -- copy methods -----------------------------------------------------------------

def engine_copier(engine) -> Copier:
    """Drive a zcopy engine the way the server does: non-blocking socket,
    ``step`` until DONE, poll for writability on BLOCKED."""
    from zcopy.engines import Progress

    def copy(sock: socket.socket, file_fd: int, size: int) -> None:
        sock.setblocking(False)
        poller = select.poll()
        poller.register(sock, select.POLLOUT)
        xfer = engine.start_send(file_fd, 0, size)
        try:
            while (state := xfer.step(sock.fileno())) is not Progress.DONE:
                if state is Progress.BLOCKED:
                    poller.poll()
        finally:
            xfer.close()
            sock.setblocking(True)

    return copy


def socket_sendfile(sock: socket.socket, file_fd: int, size: int) -> None:
    """``socket.sendfile``: what a Python programmer writes first."""
    with os.fdopen(file_fd, "rb", closefd=False) as f:
        sock.sendfile(f, 0, size)


def shutil_copyfileobj(sock: socket.socket, file_fd: int, size: int) -> None:
    """``shutil.copyfileobj(file, sock.makefile("wb"))``: the generic stream copy."""
    import shutil

    with os.fdopen(file_fd, "rb", closefd=False) as src, sock.makefile("wb") as dst:
        shutil.copyfileobj(src, dst)


# -- test files and the page cache ------------------------------------------------

class SampleFileError(OSError):
    """The test file could not be made (no space, unwritable or odd directory)."""


@contextlib.contextmanager
def temp_file(size: int, dir: str | None = None) -> Iterator[int]:
    """An fd on a new ``size``-byte file of random-looking data, synced to
    disk (so writeback does not run during the timing), deleted on exit.

    Raises ``SampleFileError`` (one line, fit for a CLI) before writing a byte
    when the filesystem has less than ``size`` bytes free, and when creating
    or writing the file fails.
    """
    where = dir or tempfile.gettempdir()
    try:
        st = os.statvfs(where)
        free = st.f_bavail * st.f_frsize
        if free < size:
            raise SampleFileError(errno.ENOSPC, f"a {_fmt(size)} test file does not fit in {where} "
                                              f"({_fmt(free)} free)")
        fd, path = tempfile.mkstemp(prefix="zcopy-measure-", dir=dir)
    except SampleFileError:
        raise
    except OSError as exc:
        raise SampleFileError(exc.errno, f"cannot create a test file in {where}: {exc.strerror}") from None
    try:
        try:
            os.unlink(path)  # nothing to clean up later, whatever happens
            block = os.urandom(1 << 20)
            view = memoryview(block)
            left = size
            while left:
                left -= os.write(fd, view[: min(left, len(block))])
            os.fsync(fd)
        except OSError as exc:
            raise SampleFileError(exc.errno, f"cannot write the {_fmt(size)} test file in {where}: "
                                           f"{exc.strerror}") from None
        yield fd
    finally:
        os.close(fd)


def _fmt(n: int) -> str:
    from zcopy.units import format_size
    return format_size(n)


def drop_cached_pages(fd: int) -> None:
    """Ask the kernel to evict this file's clean pages (posix_fadvise(2)
    POSIX_FADV_DONTNEED): no root needed and, unlike /proc/sys/vm/drop_caches,
    it does not slow down everyone else on the machine."""
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


def evict(fd: int, offsets, timeout: float = 2.0) -> bool | None:
    """Drop the file's pages and check at ``offsets`` that they are gone: True when they are,
    False when they stay cached past ``timeout``, None when the filesystem cannot say. DONTNEED
    skips pages still sitting in another CPU's LRU batch; those reach the LRU within moments, so
    the drop is repeated until the kernel's own answer (RWF_NOWAIT) says they are out."""
    deadline = time.monotonic() + timeout
    while True:
        drop_cached_pages(fd)
        cached = [is_cached(fd, offset) for offset in offsets]
        if None in cached:
            return None
        if not any(cached):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)


def is_cached(fd: int, offset: int) -> bool | None:
    """Whether the page at ``offset`` is in the page cache. cachestat(2) where the kernel has it: it
    only looks. Else a ``preadv2`` with RWF_NOWAIT, which succeeds only from the cache but starts
    reading the page it missed (measured on 6.18; zcopy.server.prefetch): a page it finds out may be
    back moments later, so ``evict`` checked by it alone once let ``--cold`` runs start warm. None
    when the filesystem cannot say (EOPNOTSUPP, e.g. tmpfs)."""
    from zcopy.server.prefetch import page_cached

    cached = page_cached(fd, offset)
    if cached is not None:
        return cached
    try:
        return os.preadv(fd, [bytearray(1)], offset, os.RWF_NOWAIT) >= 0
    except BlockingIOError:
        return False
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL):
            return None
        raise


def filesystem_type(path: str) -> str:
    """The filesystem type of ``path`` from /proc/self/mounts (longest mount prefix)."""
    path = os.path.realpath(path)
    best, fstype = "", "unknown"
    with open("/proc/self/mounts") as mounts:
        for line in mounts:
            fields = line.split()
            mount = fields[1].replace("\\040", " ")
            if (path == mount or path.startswith(mount.rstrip("/") + "/")) and len(mount) >= len(best):
                best, fstype = mount, fields[2]
    return fstype


# -- pipe sizes (the pipe.throughput probe and bench's splice size) --------------------

#: Pipe sizes tried by the sweep: 64 KiB (the default) up to 1 MiB (the usual pipe-max-size).
PIPE_SIZES = (64 << 10, 128 << 10, 256 << 10, 512 << 10, 1 << 20)


def pipe_size_sweep(file_fd: int, file_size: int, runs: int = 3, sizes: tuple[int, ...] = PIPE_SIZES,
                    target: str = "unix",
                    on_sample: Callable[[str, Sample], None] | None = None) -> dict[int, float]:
    """Splice throughput (GB/s) of the first ``file_size`` bytes of
    ``file_fd`` through file -> pipe -> socket, for each pipe size."""
    from zcopy.engines.splice import SpliceEngine
    from zcopy.pipes import PipePool

    with contextlib.ExitStack() as stack:
        methods = {}
        for size in sizes:
            pool = PipePool(size, max_idle=1)
            stack.callback(pool.close)
            methods[str(size)] = engine_copier(SpliceEngine(pipe_pool=pool))
        results = run_interleaved(methods, file_fd, file_size, runs, target=target, on_sample=on_sample)
    return {int(name): summary.gbps for name, summary in results.items()}


def pick_pipe_size(gbps_by_size: dict[int, float], tolerance: float = 0.05) -> int:
    """The smallest pipe within ``tolerance`` of the best: pipe memory is
    charged per user, so a bigger pipe must earn its pages."""
    best = max(gbps_by_size.values())
    return min(size for size, gbps in gbps_by_size.items() if gbps >= best * (1 - tolerance))
