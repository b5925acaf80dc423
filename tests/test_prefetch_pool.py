"""The prefetch building blocks on real files and real threads: the
RWF_NOWAIT residency check, the self-sizing pool, and the loop-side
Readahead that parks a transfer on a cold window."""

from __future__ import annotations

import os
import select
import threading
import time
from types import SimpleNamespace

import pytest

from zcopy.server.prefetch import Job, Pool, Prefetcher, decide, resident, sendfile_to

MiB = 1 << 20


def make_cold(path, size: int) -> bytes:
    """Write ``size`` random bytes, fsync, and drop the file's pages from the
    page cache (posix_fadvise DONTNEED only works on clean pages)."""
    data = os.urandom(size)
    with open(path, "w+b") as f:          # readable too: mapped for mincore in evict()
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
        evict(f.fileno(), 0, size)
    return data


def evict(fd: int, start: int, stop: int) -> None:
    """Drop [start, stop) of a clean file from the page cache, again until
    mincore(2) finds none of it cached: the kernel may still be bringing pages
    in (readahead a read started) or hold some in another CPU's LRU batch.
    Not checked with an RWF_NOWAIT read: on a miss that starts reading the
    page (measured on 6.18), warming what it checks."""
    for _ in range(100):
        os.posix_fadvise(fd, start, stop - start, os.POSIX_FADV_DONTNEED)
        if not cached_pages(fd, start, stop):
            return
        time.sleep(0.02)
    raise AssertionError("the kernel keeps the file's pages cached; a cold-file test cannot run")


def cached_pages(fd: int, start: int, stop: int) -> int:
    """How many pages of [start, stop) are in the page cache (mincore(2) on a
    read-only shared mapping of the whole file; mapping reads nothing)."""
    import ctypes
    import mmap

    size = os.fstat(fd).st_size
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
    addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
    if addr in (None, ctypes.c_void_p(-1).value):
        raise OSError(ctypes.get_errno(), "mmap")
    try:
        pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
        vec = ctypes.create_string_buffer(pages)
        if libc.mincore(ctypes.c_void_p(addr), size, vec) != 0:
            raise OSError(ctypes.get_errno(), "mincore")
        return sum(b & 1 for b in vec.raw[start // mmap.PAGESIZE:(stop + mmap.PAGESIZE - 1) // mmap.PAGESIZE])
    finally:
        libc.munmap(ctypes.c_void_p(addr), size)


def prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "zcopy-prefetch"]


def wait_for(cond, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


class SlowFetch:
    """A real fetch that sleeps first, as a slow disk would, then reads the
    window into the page cache; counts how many run at once."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.running = 0
        self.most = 0
        self.lock = threading.Lock()
        self.null = os.open("/dev/null", os.O_WRONLY | os.O_CLOEXEC)

    def __call__(self, fd: int, offset: int, count: int) -> None:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            time.sleep(self.delay)
            sendfile_to(self.null, fd, offset, count)
        finally:
            with self.lock:
                self.running -= 1

    def close(self) -> None:
        os.close(self.null)


def readahead_bytes(path) -> int:
    """The block device's readahead window for the filesystem holding
    ``path`` (queue/read_ahead_kb of the device or its parent disk); 8 MiB
    when sysfs does not say."""
    dev = os.stat(path).st_dev
    base = f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}"
    for queue in (f"{base}/queue/read_ahead_kb", f"{base}/../queue/read_ahead_kb"):
        try:
            with open(queue) as f:
                return int(f.read()) * 1024
        except (OSError, ValueError):
            continue
    return 8 * MiB


def test_resident_tells_cold_from_hot_without_reading(tmp_path, fd_guard):
    # The two pages a check samples lie further apart than the disk's
    # readahead window: a read of the first page may bring in up to one
    # window after it, and must not make the far page resident (this
    # machine's virtio disk reads ahead 8 MiB). The check is cachestat(2),
    # which reads nothing; the RWF_NOWAIT fallback warmed the pages it
    # missed and made this test fail about one run in five.
    half = max(4 * MiB, 2 * readahead_bytes(tmp_path))
    path = tmp_path / "f"
    make_cold(path, 2 * half)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert not resident(fd, 0, half)
        assert not resident(fd, half, 2 * half)
        os.pread(fd, 4096, 0)                    # first page only: the last is still cold
        assert not resident(fd, 0, half)
        os.pread(fd, 4096, half - 4096)
        assert resident(fd, 0, half)
        assert resident(fd, 100, 200)            # one page: one check
    finally:
        os.close(fd)


def test_resident_without_cachestat_falls_back_to_nowait_reads(tmp_path, fd_guard, monkeypatch):
    import zcopy.server.prefetch as prefetch

    if prefetch._cachestat is None:
        pytest.skip("no cachestat(2) here: the fallback is the only path and the test above covers it")
    path = tmp_path / "f"
    path.write_bytes(os.urandom(3 * 4096))            # just written: every page cached
    fd = os.open(path, os.O_RDONLY)
    try:
        monkeypatch.setattr(prefetch, "_cachestat", None)
        assert resident(fd, 0, 3 * 4096)
        assert resident(fd, 4096, 4097)
    finally:
        os.close(fd)


def test_pool_reads_a_window_into_the_cache_and_signals_the_eventfd(tmp_path, fd_guard):
    path = tmp_path / "f"
    make_cold(path, 8 * MiB)
    fd = os.open(path, os.O_RDONLY)
    pool = Pool()
    try:
        job = Job(fd, 4 * MiB, 8 * MiB)
        pool.submit(job)
        r, _, _ = select.select([pool.efd], [], [], 10)
        assert r == [pool.efd]
        assert pool.completed() == [job] and job.done
        assert resident(fd, 4 * MiB, 8 * MiB)
        # every page of the window, not only the ends the check samples
        assert all(resident(fd, off, off + 1) for off in range(4 * MiB, 8 * MiB, 4096))
        assert not resident(fd, 0, 1)            # outside the window: untouched
        assert pool.completed() == []            # the eventfd was drained too
    finally:
        pool.close()
        os.close(fd)
    assert pool.size == 0 and not prefetch_threads()


def test_pool_grows_with_queue_depth_and_shrinks_when_idle(tmp_path, fd_guard):
    path = tmp_path / "f"
    make_cold(path, 8 * MiB)
    fd = os.open(path, os.O_RDONLY)
    slow = SlowFetch(0.3)
    pool = Pool(min_threads=1, max_threads=4, idle_timeout=0.3, fetch=slow)
    try:
        jobs = [Job(fd, i * MiB, (i + 1) * MiB) for i in range(8)]
        for job in jobs:
            pool.submit(job)
        assert pool.size == 4                    # 8 queued, capped at 4
        assert wait_for(lambda: all(j.done for j in jobs))
        assert slow.most == 4                    # they really ran side by side
        assert len(pool.completed()) == 8
        assert wait_for(lambda: pool.size == 1)  # idle ones retire down to the minimum
        time.sleep(0.5)
        assert pool.size == 1 and len(prefetch_threads()) == 1
        pool.submit(Job(fd, 0, MiB))             # the survivor takes new work: no new thread
        assert pool.size == 1
        assert wait_for(lambda: len(pool._completed) == 1)
    finally:
        pool.close()
        slow.close()
        os.close(fd)
    assert not prefetch_threads()


def test_close_joins_busy_threads_and_closes_unstarted_jobs(tmp_path, fd_guard):
    path = tmp_path / "f"
    make_cold(path, 4 * MiB)
    fd = os.open(path, os.O_RDONLY)
    slow = SlowFetch(0.2)
    pool = Pool(max_threads=2, fetch=slow)
    for i in range(6):
        pool.submit(Job(fd, i * 4096, (i + 1) * 4096))   # 2 running, 4 queued with their dup'd fds
    pool.close()                                         # fd_guard checks the dups are closed
    slow.close()
    os.close(fd)
    assert not prefetch_threads()


def test_readahead_parks_on_a_cold_window_and_keeps_one_window_ahead(tmp_path, fd_guard):
    path = tmp_path / "f"
    make_cold(path, 10 * MiB)
    fd = os.open(path, os.O_RDONLY)
    pf = Prefetcher(step=MiB, window=4 * MiB)
    conn = SimpleNamespace(worker=SimpleNamespace(now=time.monotonic()))   # an identity to wake
    try:
        ahead = pf.track(fd, 0, 10 * MiB)
        assert not ahead.admit(0, conn)                  # cold: parked, window 0 queued
        assert not ahead.admit(0, conn)                  # woken early (socket event): still parked
        ready: list = []
        select.select([pf.fileno()], [], [], 10)
        pf.wake(ready, time.monotonic())
        assert ready == [conn] and pf.parks == 1 and pf.prefetched == 1
        evict(fd, 4 * MiB, 10 * MiB)                     # what the disk's own readahead brought in
        assert ahead.admit(0, conn)                      # window 0 resident: go
        assert ahead.ready_until == 4 * MiB
        assert ahead.job is not None and ahead.job.offset == 4 * MiB   # next window (cold) in flight
        assert ahead.admit(3 * MiB, conn)                # still inside window 0
        # Stepping from 3.5 MiB reads into window 1: allowed once the background read finished.
        assert wait_for(lambda: ahead.job.done)
        evict(fd, 8 * MiB, 10 * MiB)
        assert ahead.admit(3 * MiB + MiB // 2, conn)
        assert ahead.job.offset == 8 * MiB and ahead.job.stop == 10 * MiB   # last, short window
        ahead.close()                                    # transfer over: the job is dropped
        select.select([pf.fileno()], [], [], 10)
        ready.clear()
        pf.wake(ready, time.monotonic())
        assert ready == [] and pf.prefetched == 2        # the cancelled tail may be skipped
    finally:
        pf.close()
        os.close(fd)


def test_readahead_costs_nothing_but_checks_on_a_hot_file(tmp_path, fd_guard):
    path = tmp_path / "f"
    path.write_bytes(os.urandom(9 * MiB))
    fd = os.open(path, os.O_RDONLY)
    os.pread(fd, 9 * MiB, 0)
    pf = Prefetcher(step=MiB, window=4 * MiB)
    conn = SimpleNamespace(worker=SimpleNamespace(now=time.monotonic()))
    try:
        ahead = pf.track(fd, 0, 9 * MiB)
        for off in range(0, 9 * MiB, MiB):
            assert ahead.admit(off, conn)
        assert ahead.job is None and pf.pool.size == 0   # no thread ever started
    finally:
        pf.close()
        os.close(fd)


def test_auto_skips_memory_filesystems(tmp_path):
    on, why = decide(str(tmp_path))
    assert on and "reads may miss the page cache" in why
    if os.path.ismount("/dev/shm"):
        on, why = decide("/dev/shm")
        assert not on and "tmpfs" in why
    else:
        pytest.skip("no /dev/shm tmpfs here")


def test_readahead_sends_the_resident_windows_of_a_partly_evicted_file_as_they_are(tmp_path, fd_guard):
    """A hot file that lost a window (reclaim takes pages a few at a time): that window goes
    through the pool, the resident ones after it do not (one pass over their pages, no wait
    for a thread), and a later cold window is still fetched one window ahead."""
    path = tmp_path / "f"
    make_cold(path, 16 * MiB)
    fd = os.open(path, os.O_RDONLY)
    os.pread(fd, 16 * MiB, 0)                            # hot...
    evict(fd, 0, 4 * MiB)                                # ... but for window 0
    pf = Prefetcher(step=MiB, window=4 * MiB)
    conn = SimpleNamespace(worker=SimpleNamespace(now=time.monotonic()))
    try:
        ahead = pf.track(fd, 0, 16 * MiB)
        assert not ahead.admit(0, conn)                  # window 0 cold: parked
        select.select([pf.fileno()], [], [], 10)
        ready: list = []
        pf.wake(ready, time.monotonic())
        assert ready == [conn] and pf.prefetched == 1
        assert ahead.admit(0, conn)
        assert ahead.job is None                         # window 1 is resident: not read again
        evict(fd, 8 * MiB, 12 * MiB)                     # window 2 goes cold meanwhile
        assert ahead.admit(4 * MiB, conn)                # window 1 as it is...
        assert ahead.job is not None and ahead.job.offset == 8 * MiB   # ... and window 2 fetched ahead
        assert wait_for(lambda: ahead.job.done)
        assert ahead.admit(8 * MiB, conn)
        assert ahead.job is None                         # window 3 resident
        ahead.close()
        assert pf.parks == 1
    finally:
        pf.close()
        os.close(fd)
