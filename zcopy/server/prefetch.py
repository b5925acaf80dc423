"""Cold-cache safe sends: disk reads that would stall the loop go to a pool.

sendfile(2), splice(2) and the other engines block the calling thread while
the kernel reads pages that are not in the page cache. In one event loop that
stalls every connection for the length of a disk read. So before each
*window* (``WINDOW`` bytes) of a file transfer, the loop asks the kernel
whether the window is resident, without blocking, and if it is not, hands the
window to a thread pool and parks the connection until a thread reports it
resident through an eventfd the loop polls.

Three pieces, each used by the next:

* ``resident(fd, start, stop)``: asks whether the window's first and last
  page are in the page cache with cachestat(2) (Linux 6.5+), one page per
  call: it reads nothing and never blocks. 1.5 us per call through ctypes,
  measured here; a call over the whole 4 MiB window walks the cache's tree
  and costs 47 us, so the ends are sampled. Where cachestat is missing it
  falls back to ``preadv2(RWF_NOWAIT)`` of one byte on the same two pages,
  which fails with EAGAIN instead of waiting for I/O (preadv2(2)) but, as
  measured on 6.18, starts reading the page it missed and may even finish
  in time to succeed on a fast disk: a check that warms what it samples,
  harmless here (the pool reads the window next anyway) but not a clean
  answer. mmap+mincore costs 7.6 us for the mmap/munmap alone. Two pages
  are a sample, not a proof: a window with a hole in the middle still
  blocks the loop briefly. Files normally leave the cache whole (LRU) or
  were read sequentially, so ends are what goes missing first.
* ``Pool``: threads that read windows into the page cache with
  ``sendfile(fd -> /dev/null)``: the kernel reads (and reads ahead) into the
  cache and discards without copying to user space, and the call blocks until
  the bytes are resident, which is the signal the loop needs. Measured against
  fadvise(WILLNEED) (asynchronous: returns before the pages are in, so it
  cannot tell us when to resume), preadv into a buffer (copies, 6x the CPU)
  and mmap+MADV_WILLNEED+touch (the seed's way; touching pages from Python
  holds the GIL across page faults unless a C routine does it, 40x the CPU);
  see docs/cold-cache.md. The pool grows by queue depth up to ``max_threads``
  and idle threads retire after ``idle_timeout`` down to ``min_threads``.
* ``Readahead`` (one per file transfer) and ``Prefetcher`` (one per worker):
  the loop side. A transfer found cold then has each next window that is not
  resident read in the background one window ahead, so a fast client does
  not wait on every window (resident ones are sent as they are); memory stays
  bounded at two windows of page cache per connection beyond what it sent,
  and no process memory at all (nothing is mapped).

Threads never touch a connection: they set ``job.done``, queue the job and
bump the eventfd; the loop drains the queue and makes the waiters ready. Each
job owns a dup of the file fd, so a connection closing (and its file fd
closing or being reused) during a fetch cannot send a thread to the wrong file.
"""

from __future__ import annotations

import errno
import os

from zcopy import hotpath
from zcopy.fsinfo import IN_MEMORY, fs_type, mounts_below
from zcopy.server.executor import IDLE_TIMEOUT, MAX_THREADS, MIN_THREADS, Executor, Task

#: Bytes checked and prefetched at a time: large enough that a fast client
#: costs a residency check only every few MiB, small enough that a window is
#: read in tens of ms even from a slow disk.
WINDOW = 4 << 20
_PAGE = os.sysconf("SC_PAGE_SIZE")
_NOWAIT = os.RWF_NOWAIT
_NO_FDS = (errno.EMFILE, errno.ENFILE)
_probe_buf = [bytearray(1)]   # loop thread only


class Residency:
    """A connection's memo that a whole file was in the page cache: trusted to
    stay so ``until`` (monotonic; inf on a memory filesystem), so that a hot file
    costs no residency syscall per request. Hung on the reply's entry
    (``entry.residency``) and never changed: a new finding is a new record, so
    the shared ``NOT_KNOWN`` and ``MEMORY`` stay what they say."""

    __slots__ = ("until",)

    def __init__(self, until: float) -> None:
        self.until = until


#: Where nothing is known yet (a new entry; an archive's files): ask (the prefetcher may read ahead).
NOT_KNOWN = Residency(0.0)
#: The residency of bodies held in memory (a listing's or a Multi-Status's memfd): never cold.
MEMORY = Residency(float("inf"))


class _CacheStat:
    """cachestat(2) of one page at a time, through libc's syscall(2): the
    argument structs are allocated once (loop thread only)."""

    NR = 451    # the same number on every architecture (asm-generic table)

    def __init__(self) -> None:
        import ctypes

        class Range(ctypes.Structure):
            _fields_ = [("off", ctypes.c_uint64), ("len", ctypes.c_uint64)]

        class Stat(ctypes.Structure):
            _fields_ = [(name, ctypes.c_uint64) for name in
                        ("nr_cache", "nr_dirty", "nr_writeback", "nr_evicted", "nr_recently_evicted")]

        libc = ctypes.CDLL(None, use_errno=True)
        self._syscall = libc.syscall
        self._syscall.restype = ctypes.c_long
        self._get_errno = ctypes.get_errno
        self._range, self._stat = Range(0, _PAGE), Stat()
        self._args = (ctypes.byref(self._range), ctypes.byref(self._stat), 0)

    def cached(self, fd: int, offset: int) -> bool:
        self._range.off = offset - offset % _PAGE
        if self._syscall(self.NR, fd, *self._args) != 0:
            raise OSError(self._get_errno(), "cachestat")
        return self._stat.nr_cache > 0


#: ``zcopy.sockio.CacheStat`` (the same call in C) when the hot path runs compiled, else None.
_CompiledCacheStat = getattr(hotpath.extension("zcopy.sockio"), "CacheStat", None)


def _open_cachestat() -> _CacheStat | None:
    """A working cachestat(2): the compiled one (``zcopy.sockio.CacheStat``: the syscall alone,
    where this ctypes call costs ~1.5 us) or ``_CacheStat``; None when this kernel (or libc) lacks it."""
    try:
        probe = _CompiledCacheStat(_PAGE) if _CompiledCacheStat is not None else _CacheStat()
        fd = os.open("/proc/self/exe", os.O_RDONLY)
        try:
            probe.cached(fd, 0)
        finally:
            os.close(fd)
        return probe
    except (OSError, AttributeError):
        return None


_cachestat = _open_cachestat()


def page_cached(fd: int, offset: int) -> bool | None:
    """Whether the page holding ``offset`` is in the page cache, by cachestat(2), which only looks;
    None where this kernel has no cachestat (or it failed). ``zcopy.measure.is_cached``'s first choice."""
    if _cachestat is None:
        return None
    try:
        return _cachestat.cached(fd, offset)
    except OSError:
        return None


def resident(fd: int, start: int, stop: int) -> bool:
    """True when the pages holding ``start`` and ``stop - 1`` are cached
    (a read of them would not block). Never blocks."""
    last = stop - 1
    both = last // _PAGE != start // _PAGE
    if _cachestat is not None:
        try:
            return _cachestat.cached(fd, start) and (not both or _cachestat.cached(fd, last))
        except OSError:
            return False    # cannot know: read it off the loop
    try:
        os.preadv(fd, _probe_buf, start, _NOWAIT)
        if both:
            os.preadv(fd, _probe_buf, last, _NOWAIT)
    except OSError:
        return False    # EAGAIN, or EOPNOTSUPP (no RWF_NOWAIT here): read it off the loop
    return True


class _Mincore:
    """mincore(2) of one page at each end of a range, through a read-only shared mapping of just
    that range (mapping reads nothing; loop thread only). mincore counts a page only when it is
    up to date, so a page still being read by the kernel's readahead is not counted, where
    cachestat(2) counts it as cached."""

    def __init__(self) -> None:
        import ctypes
        import mmap

        libc = ctypes.CDLL(None, use_errno=True)
        self._mmap, self._munmap, self._mincore = libc.mmap, libc.munmap, libc.mincore
        self._mmap.restype = ctypes.c_void_p
        self._mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                               ctypes.c_long]
        self._munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        self._mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
        self._prot, self._flags = mmap.PROT_READ, mmap.MAP_SHARED
        self._failed = ctypes.c_void_p(-1).value
        self._vec = ctypes.create_string_buffer(1)

    def both(self, fd: int, start: int, stop: int) -> bool:
        base = start - start % _PAGE
        length = stop - base
        addr = self._mmap(None, length, self._prot, self._flags, fd, base)
        if addr is None or addr == self._failed:
            return False            # cannot know: read it off the loop
        try:
            vec = self._vec
            for page in (0, (stop - 1 - base) // _PAGE):
                if self._mincore(addr + page * _PAGE, _PAGE, vec) != 0 or not vec.raw[0] & 1:
                    return False
            return True
        finally:
            self._munmap(addr, length)


_mincore: _Mincore | None = None


def settled(fd: int, start: int, stop: int) -> bool:
    """True when the pages holding ``start`` and ``stop - 1`` are cached *and read* (a page the
    kernel's readahead is still reading is in the cache, and cachestat counts it, but a send
    would wait for it). mincore(2) on a mapping of the range: reads nothing, starts no I/O,
    about 8 us. Never blocks."""
    global _mincore
    if _mincore is None:
        _mincore = _Mincore()
    try:
        return _mincore.both(fd, start, stop)
    except OSError:
        return False


def decide(root: str) -> tuple[bool, str]:
    """The ``--prefetch auto`` choice for a served folder, with its reason."""
    from zcopy.profile import prefetch_choice

    try:
        name, _ = fs_type(root)
    except OSError as exc:
        return True, f"statfs failed ({exc.strerror}): assume reads may miss the page cache"
    return prefetch_choice(root, name, mounts_below(root))


def sendfile_to(sink: int, fd: int, offset: int, count: int) -> None:
    """Bring ``count`` bytes at ``offset`` into the page cache; blocks until they are."""
    while count > 0:
        n = os.sendfile(sink, fd, offset, count)
        if n == 0:          # file shorter than promised: the engine will report it
            return
        offset += n
        count -= n


class Job(Task):
    """One window to bring into the cache. ``fd`` is the job's own dup."""

    __slots__ = ("fd", "offset", "stop", "waiter", "parked_at")

    def __init__(self, fd: int, offset: int, stop: int) -> None:
        super().__init__()
        self.fd = os.dup(fd)
        self.offset = offset
        self.stop = stop
        self.waiter = None       # the parked connection, loop thread only
        self.parked_at = 0.0
        # error: the read failed (EIO...): the transfer ends with it

    def fail(self, exc: Exception) -> None:
        self.error = exc if isinstance(exc, OSError) else OSError(f"prefetch failed: {exc!r}")

    def finish(self) -> None:
        os.close(self.fd)

    discard = finish


class Pool(Executor):
    """The executor whose tasks read windows into the page cache (its own
    threads, so cold reads and a worker's other off-loop work do not queue
    behind each other); completions via its eventfd."""

    THREAD_NAME = "zcopy-prefetch"

    def __init__(self, *, min_threads: int = MIN_THREADS, max_threads: int = MAX_THREADS,
                 idle_timeout: float = IDLE_TIMEOUT, fetch=None) -> None:
        super().__init__(min_threads=min_threads, max_threads=max_threads, idle_timeout=idle_timeout)
        self._null = -1
        if fetch is None:
            self._null = os.open("/dev/null", os.O_WRONLY | os.O_CLOEXEC)
            sink = self._null
            fetch = lambda fd, offset, count: sendfile_to(sink, fd, offset, count)  # noqa: E731
        self.fetch = fetch

    def submit(self, job: Job) -> Job:
        job.fn = self.fetch
        job.args = (job.fd, job.offset, job.stop - job.offset)
        return self.put(job)

    def close(self) -> None:
        """Stop and join every thread (a fetch in progress finishes first),
        close the fds of jobs never started, the eventfd and /dev/null."""
        super().close()
        if self._null >= 0:
            os.close(self._null)
            self._null = -1


class Readahead:
    """The loop side of one file transfer: which bytes are known resident."""

    __slots__ = ("_pf", "fd", "end", "step", "ready_until", "job", "cold", "next_hot")

    def __init__(self, prefetcher: "Prefetcher", fd: int, start: int, stop: int, step: int) -> None:
        self._pf = prefetcher
        self.fd = fd
        self.end = stop
        self.step = step           # bytes one engine step may read past the offset
        self.ready_until = start   # [.., ready_until) checked or fetched
        self.job: Job | None = None
        self.cold = False          # a window was missing once: look one ahead from then on
        self.next_hot = False      # the window after the job's was in the cache when the job began

    def admit(self, offset: int, conn, step: int = 0) -> bool:
        """May the engine step from ``offset`` (``step`` bytes, or the usual step when 0) without a disk read? False: the
        connection is parked; the prefetcher makes it ready when it may.
        Raises the pool's OSError when the window could not be read: a read
        that failed off the loop (EIO can take seconds of retries on a bad disk)
        is not tried again on it."""
        need = offset + (step or self.step)
        if need > self.end:     # (not min(): this runs once per engine step, 1,024 times a GiB)
            need = self.end
        while self.ready_until < need:
            job = self.job
            if job is not None:
                if not job.done:
                    job.waiter = conn
                    if not job.parked_at:
                        job.parked_at = conn.worker.now
                    return False
                self.job = None
                if job.waiter is not None:      # done before the eventfd was drained
                    self._pf.unpark(job, conn.worker.now)
                if job.error is not None:
                    raise job.error
                self.ready_until = job.stop
                if self.next_hot:       # a few pages missing in a hot file: on as it is
                    self._look_ahead()
                elif job.stop < self.end:   # a cold stretch: keep one window in flight ahead
                    self._submit(job.stop)  # (None out of fds: that window is checked when it is needed)
                continue
            stop = min(self.ready_until + self._pf.window, self.end)
            if resident(self.fd, self.ready_until, stop):
                self.ready_until = stop
                if self.cold:
                    self._look_ahead()
                continue
            self.cold = True
            job = self._submit(self.ready_until)
            if job is None:
                # Out of fds (EMFILE) for the job's dup: the engine reads this window itself, as
                # without prefetch, rather than the transfer ending there (the connection was closed).
                self.ready_until = stop
                continue
            job.waiter = conn
            self.job.parked_at = conn.worker.now
            return False
        return True

    def _look_ahead(self) -> None:
        """Cold once, in a hot stretch: have the pool read the next window now, unless its pages
        are in the cache and read already (a file partly evicted is mostly hot: its resident
        windows are sent as they are, not read through the pool first, which cost a second pass
        over their pages and a wait for a thread each). A cold stretch (the window after a
        fetched one was not in the cache when the fetch began) keeps the pool one window ahead
        unconditionally: the windows its reads bring in are then read, and their readahead
        started, by the pool's threads, never by the loop's sends. Checked with ``settled``, not ``resident``: the kernel's own
        readahead, which the pool's read of the last window started, may still be reading these
        pages, and a page under read is in the cache (cachestat counts it) but would block. (Not
        with an RWF_NOWAIT read either: on a miss that starts the read from the loop thread, and
        with a throttled disk the hot requests' p99 doubled, bench_cold.py --throttle.)"""
        start = self.ready_until
        if start < self.end:
            stop = min(start + self._pf.window, self.end)
            if not resident(self.fd, start, stop) or not settled(self.fd, start, stop):
                self._submit(start)

    def _submit(self, start: int) -> Job | None:
        stop = min(start + self._pf.window, self.end)
        # Asked before the read starts (whose readahead may bring the next window in): was the
        # window after this one in the cache already? Then this is a hole in a hot file, not a
        # cold stretch, and the pool need not go on ahead of the transfer.
        self.next_hot = stop < self.end and resident(self.fd, stop, min(stop + self._pf.window, self.end))
        try:
            job = Job(self.fd, start, stop)
        except OSError as exc:      # no fd for the job's dup
            if exc.errno not in _NO_FDS:
                raise
            return None
        self.job = job
        self._pf.pool.submit(job)
        return job

    def close(self) -> None:
        """The transfer ended (done or connection closed): forget the window in flight."""
        job = self.job
        if job is not None:
            job.cancelled = True
            job.waiter = None
            self.job = None


class Prefetcher:
    """One per worker: makes ``Readahead``s, wakes parked connections, counts."""

    def __init__(self, *, step: int = 1 << 20, window: int = WINDOW, **pool_args) -> None:
        self.step = step
        self.window = max(window, step)
        self.pool = Pool(**pool_args)
        self.prefetched = 0         # windows read into the cache by the pool
        self.parks = 0              # times a connection waited for a window
        self.parked_seconds = 0.0   # total time connections spent parked
        self._on_disk: dict[int, bool] = {}   # st_dev -> files there may be cold

    def may_be_cold(self, fd: int, dev: int) -> bool:
        """False for a file on a memory filesystem (tmpfs, ramfs), whatever the
        served root is on: a tree can span mounts. Its pages are in memory, and
        such filesystems refuse RWF_NOWAIT (EOPNOTSUPP), so checking would send
        every window to the pool. fstatfs once per device."""
        on_disk = self._on_disk.get(dev)
        if on_disk is None:
            try:
                on_disk = fs_type(fd)[0] not in IN_MEMORY
            except OSError:
                on_disk = True
            self._on_disk[dev] = on_disk
        return on_disk

    def fileno(self) -> int:
        return self.pool.efd

    def track(self, fd: int, start: int, stop: int) -> Readahead:
        return Readahead(self, fd, start, stop, self.step)

    def wake(self, ready: list, now: float) -> None:
        """The eventfd fired: count finished windows, make their waiters ready."""
        for job in self.pool.completed():
            if not job.cancelled:
                self.prefetched += 1
            conn = job.waiter
            if conn is not None:
                self.unpark(job, now)
                ready.append(conn)

    def unpark(self, job: Job, now: float) -> None:
        job.waiter = None
        self.parks += 1
        self.parked_seconds += now - job.parked_at

    def close(self) -> None:
        self.pool.close()

    def snapshot(self) -> dict:
        pool = self.pool
        return {"windows_prefetched": self.prefetched, "parks": self.parks,
                "parked_seconds": round(self.parked_seconds, 6), "pool_size": pool.size,
                "pool_peak": pool.peak, "pool_max": pool.max_threads, "failed": pool.failed}
