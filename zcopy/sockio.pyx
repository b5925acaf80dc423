# cython: language_level=3
"""The hot path's syscalls without the Python wrappers' toll: recv and send on a connected
non-blocking socket (``SocketIO``), sendfile (``Sendfile``, the sendfile engine) and cachestat
(``CacheStat``, the prefetch's residency check).

``socket.socket.recv``/``send`` cost the compiled worker ~3,400 instructions a request together:
argument parsing, the GIL released and taken again around each syscall, and recv's 64 KiB
bytes object allocated and then shrunk by realloc. The socket here never blocks, so these
hold the GIL across the syscall, receive into one static 64 KiB buffer (a worker is one
thread; the GIL is held from the syscall until the bytes object is made), and copy out only
what came.

The semantics are ``socket.socket``'s on a non-blocking socket: ``recv`` returns bytes (b""
at EOF), ``send`` the count sent; EINTR is retried (after the signal handlers ran, as the
socket module does); any other failure raises ``OSError`` from errno, so EAGAIN is
``BlockingIOError``, ECONNRESET ``ConnectionResetError``, EPIPE ``BrokenPipeError``.

``Sendfile`` is ``zcopy.engines.sendfile.SendfileEngine``'s two calls, ``send_once`` and
``start_send`` (whose transfer's ``step`` loops in C), with its semantics and its counters as C
fields; the GIL is released across each sendfile(2) (a page missing from the cache is a disk
read). ``CacheStat`` is ``zcopy.server.prefetch._CacheStat`` without ctypes. A 1 GiB pull takes
1,024 steps and a residency check every 4 MiB: its user time fell from 14.4 to 8.3 ms a GB, and
from 11.3 to 9.5, in two same-run A/Bs (docs/benchmarks.md, "The sendfile engine in C").

The one module of the hot path written in Cython (it has no ``.py``): ``zcopy.transport``,
``zcopy.engines.sendfile`` and ``zcopy.server.prefetch`` use it only when
``zcopy.hotpath.compiled("zcopy.sockio")`` (built, current, not ``ZCOPY_PURE=1``), and the
socket's own methods, ``os.sendfile`` and ctypes otherwise.

``Poller`` is ``select.epoll.poll`` for the event loop (``zcopy.loop.poller``) and ``wall_second``
``int(time.time())`` for ``zcopy.http.DateHeader``; without them, the epoll object's method and
``time.time``.
"""

from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE
from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.exc cimport PyErr_SetFromErrno, PyErr_CheckSignals
from libc.errno cimport errno, EINTR


cdef extern from "<sys/socket.h>" nogil:
    ssize_t c_recv "recv" (int fd, void *buf, size_t n, int flags)
    ssize_t c_send "send" (int fd, const void *buf, size_t n, int flags)


cdef enum:
    BUFSIZE = 65536
#: What one recv may return at most (callers ask for 65536).
RECV_MAX = BUFSIZE

cdef char _buf[BUFSIZE]


cdef inline object _raise_errno():
    PyErr_SetFromErrno(OSError)
    return None


cdef class SocketIO:
    """``recv`` and ``send`` on the connected non-blocking socket ``fd`` (which the caller
    owns and keeps open; ``forget()`` before closing it, so that a late call raises EBADF,
    as on a closed socket, instead of reaching whatever file reuses the number)."""

    def __cinit__(self, int fd):
        self.fd = fd

    cpdef bytes recv(self, Py_ssize_t size):
        """Up to ``size`` bytes (at most 64 KiB) the socket holds; b"" at the peer's EOF."""
        cdef ssize_t n
        if size < 0:
            raise ValueError("negative buffersize in recv")
        if size == 0:               # (no syscall: the socket module's answer, even with nothing to read)
            return b""
        if size > BUFSIZE:
            size = BUFSIZE
        while True:
            n = c_recv(self.fd, _buf, <size_t>size, 0)
            if n >= 0:
                return PyBytes_FromStringAndSize(_buf, n)
            if errno != EINTR:
                return _raise_errno()
            PyErr_CheckSignals()

    cpdef Py_ssize_t send(self, data, int flags=0) except -1:
        """Send what of ``data`` (bytes, bytearray, a contiguous memoryview) the socket takes now;
        the count sent."""
        cdef Py_buffer view
        cdef ssize_t n
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            while True:
                n = c_send(self.fd, view.buf, <size_t>view.len, flags)
                if n >= 0:
                    return n
                if errno != EINTR:
                    PyErr_SetFromErrno(OSError)
                    return -1
                PyErr_CheckSignals()
        finally:
            PyBuffer_Release(&view)

    def forget(self) -> None:
        """The socket is being closed: from now on, recv and send raise ``OSError(EBADF)``."""
        self.fd = -1


# -- sendfile: the sendfile engine's calls (zcopy.engines.sendfile) -----------------------------------

from libc.errno cimport EAGAIN, EBADF
from posix.types cimport off_t

cdef extern from "<sys/sendfile.h>" nogil:
    ssize_t c_sendfile "sendfile" (int out_fd, int in_fd, off_t *offset, size_t count)


from zcopy.engines.base import FileShrank, Progress

cdef object DONE = Progress.DONE
cdef object BLOCKED = Progress.BLOCKED
cdef object MORE = Progress.MORE

#: Largest count Linux moves in one sendfile(2) call (sendfile(2), NOTES).
cdef enum:
    MAX_CHUNK = 0x7FFFF000
    #: The most ``Sendfile.send_once`` sends with the GIL held (128 KiB).
    HOLD_GIL_MAX = 131072


cdef inline ssize_t _sendfile(int sock_fd, int file_fd, off_t offset, off_t count, bint release=True) except -2:
    """One sendfile(2) of at most ``count`` bytes (and MAX_CHUNK), the GIL released across it when
    ``release`` (a page missing from the cache is a disk read: other threads run meanwhile): the
    bytes that left, -1 when the socket is full (EAGAIN). EINTR is retried; other errors raise; 0
    bytes before ``count`` raises ``FileShrank`` (the file was truncated: looping would spin)."""
    cdef ssize_t n
    cdef off_t off
    if count > MAX_CHUNK:
        count = MAX_CHUNK
    while True:
        off = offset
        if release:
            with nogil:
                n = c_sendfile(sock_fd, file_fd, &off, <size_t>count)
        else:
            n = c_sendfile(sock_fd, file_fd, &off, <size_t>count)
        if n > 0 or (n == 0 and count == 0):
            return n
        if n == 0:
            raise FileShrank(f"file ended at offset {offset} with {count} bytes "
                             f"still promised (truncated during sendfile)")
        if errno == EAGAIN:
            return -1
        if errno != EINTR:
            PyErr_SetFromErrno(OSError)
            return -2
        PyErr_CheckSignals()


cdef class Sendfile:
    """``zcopy.engines.sendfile.SendfileEngine``'s ``send_once`` and ``start_send`` in C, with
    their semantics, and its counters as C fields (it is the engine's ``stats``: an
    ``EngineStats`` by duck type): what a 1 GiB pull spends per 1 MiB step in the interpreter,
    and what a 64 KiB reply's body costs, without ``os.sendfile``'s argument parsing, its
    exception on a full socket, two Python frames and the counters' attribute writes."""

    def __cinit__(self, off_t budget):
        self.budget = budget

    def snapshot(self):
        return {"bytes_sent": self.bytes_sent, "bytes_received": self.bytes_received,
                "syscalls": self.syscalls}

    cpdef long long send_once(self, int sock_fd, int file_fd, off_t offset, off_t count) except -1:
        """One sendfile(2) of at most ``count`` bytes: the bytes that left, 0 when the socket is full.
        Up to ``HOLD_GIL_MAX`` bytes (a small reply's body, from pages the connection found resident
        moments ago) the GIL stays held: releasing and taking it again cost about 400 instructions,
        more than the rest of the call."""
        self.syscalls += 1
        cdef ssize_t n = _sendfile(sock_fd, file_fd, offset, count, count > HOLD_GIL_MAX)
        if n < 0:
            return 0
        self.bytes_sent += n
        return n

    def start_send(self, int file_fd, off_t offset, off_t count):
        return SendfileTransfer(self, file_fd, offset, count)


cdef class SendfileTransfer:
    """``zcopy.engines.sendfile.SendfileTransfer`` in C: ``step(sock_fd, budget=0)`` sends at most
    ``budget`` bytes (the engine's when 0) and says DONE, BLOCKED or MORE."""

    cdef readonly off_t offset
    cdef readonly off_t remaining
    cdef int fd
    cdef Sendfile engine

    def __cinit__(self, Sendfile engine, int file_fd, off_t offset, off_t count):
        self.engine = engine
        self.fd = file_fd
        self.offset = offset
        self.remaining = count

    def step(self, int sock_fd, off_t budget=0):
        cdef Sendfile engine = self.engine
        if budget <= 0:
            budget = engine.budget
        cdef ssize_t n
        while self.remaining:
            if budget <= 0:
                return MORE
            engine.syscalls += 1
            n = _sendfile(sock_fd, self.fd, self.offset, self.remaining if self.remaining < budget else budget)
            if n < 0:
                return BLOCKED
            engine.bytes_sent += n
            self.offset += n
            self.remaining -= n
            budget -= n
            if self.remaining and budget > 0:
                # Another call follows: a signal's handler runs first, as it would between the
                # Python engine's calls. A signal that cut a sendfile short is no EINTR (the bytes
                # before it are returned), so _sendfile's check does not see it; on a blocking
                # socket the next call would wait, the handler (KeyboardInterrupt) still pending.
                PyErr_CheckSignals()
        return DONE

    def close(self):
        """Nothing to release."""


# -- cachestat: is a page in the page cache (zcopy.server.prefetch) ---------------------------------

cdef extern from "<unistd.h>" nogil:
    long c_syscall "syscall" (long number, ...)

cdef struct cachestat_range:
    unsigned long long off
    unsigned long long len

cdef struct cachestat_result:
    unsigned long long nr_cache
    unsigned long long nr_dirty
    unsigned long long nr_writeback
    unsigned long long nr_evicted
    unsigned long long nr_recently_evicted

cdef enum:
    NR_CACHESTAT = 451      # the same number on every architecture (the asm-generic table)


cdef class CacheStat:
    """``zcopy.server.prefetch._CacheStat`` in C: ``cached(fd, offset)``, whether the page
    holding ``offset`` is in the page cache, by cachestat(2) of that one page (it only looks:
    it never blocks); errors raise ``OSError`` (ENOSYS on a kernel before 6.5). Where the ctypes
    call it replaces cost ~1.5 us, this is the syscall alone."""

    cdef cachestat_range rng
    cdef cachestat_result res
    cdef long page

    def __cinit__(self, long page):
        self.page = page
        self.rng.len = page

    def cached(self, int fd, off_t offset):
        self.rng.off = offset - offset % self.page
        if c_syscall(NR_CACHESTAT, fd, &self.rng, &self.res, 0) != 0:
            return _raise_errno()
        return self.res.nr_cache > 0


# -- epoll_wait: the event loop's poll (zcopy.loop) ---------------------------------------------------

from libc.stdint cimport uint32_t
from libc.stdlib cimport malloc, free
from libc.math cimport ceil

cdef extern from "<sys/epoll.h>" nogil:
    union epoll_data_t:
        int fd
        unsigned long long u64
    struct epoll_event:
        uint32_t events
        epoll_data_t data
    int epoll_wait(int epfd, epoll_event *events, int maxevents, int timeout)


cdef class Poller:
    """``select.epoll.poll`` in C for one epoll object (``zcopy.loop.ListenerLoop.run``): the same
    list of ``(fd, events)`` pairs. Where it costs less: the timeout is a C double and the events
    land in this object's own array (not a fresh one a call), about 0.2 µs a loop turn of the ~0.9
    the epoll object's method took here. The GIL is released across every call, a poll that cannot
    wait too: the loop is compiled, and a turn that runs only C code (a memory body sent through
    ``SocketIO``) would otherwise never let the prefetch pool's, the digests' or ``stop()``'s
    threads run while its ready queue stays full.

    ``timeout`` is in seconds, rounded up to a millisecond (as the epoll object does); negative or
    None waits without limit; NaN is a ValueError and more than INT_MAX milliseconds an
    OverflowError, as there. An EINTR returns an empty list once the signal handlers have run (the
    loop recomputes its timeout and polls again; the epoll object retries inside instead); any
    other failure raises ``OSError`` (EBADF once the epoll object is closed, where the epoll object
    says ValueError). It holds the epoll object, so that its fd cannot be closed and reused under
    it. ``first``: an fd whose event, when a batch holds one, comes first in the list (the loop
    reads the file watch before the rest of its batch: one test of ``out[0]``, where ``in`` compared
    a tuple with every pair of the batch, about 120 instructions a pair)."""

    cdef object ep
    cdef int epfd
    cdef int maxevents
    cdef int first
    cdef epoll_event *events

    def __cinit__(self, ep, int maxevents, int first=-1):
        if maxevents <= 0:
            raise ValueError("maxevents must be positive")
        self.events = <epoll_event *>malloc(maxevents * sizeof(epoll_event))
        if self.events == NULL:
            raise MemoryError()
        self.ep = ep
        self.epfd = ep.fileno()
        self.maxevents = maxevents
        self.first = first

    def __dealloc__(self):
        free(self.events)

    def poll(self, timeout):
        cdef int ms, n, i
        cdef double t, rounded
        if timeout is None:
            ms = -1
        else:
            t = timeout
            if t != t:
                raise ValueError("Invalid value NaN (not a number)")
            rounded = ceil(t * 1000.0)
            if rounded > 2147483647.0:
                raise OverflowError("timeout is too large")
            ms = -1 if rounded < 0 else <int>rounded
        with nogil:
            n = epoll_wait(self.epfd, self.events, self.maxevents, ms)
        if n < 0:
            if errno == EINTR:
                PyErr_CheckSignals()        # (a handler's exception propagates from here)
                return []
            return _raise_errno()
        out = [None] * n
        cdef int at = -1
        for i in range(n):
            out[i] = (self.events[i].data.fd, self.events[i].events)
            if self.events[i].data.fd == self.first:
                at = i
        if at > 0:
            out[0], out[at] = out[at], out[0]
        return out


cdef extern from "<poll.h>" nogil:
    struct pollfd:
        int fd
        short events
        short revents
    int c_poll "poll" (pollfd *fds, unsigned long nfds, int timeout)
    enum: POLLIN, POLLNVAL


def events_waiting(int epfd):
    """Does the epoll instance ``epfd`` hold a ready event? A poll(2) of it with no wait: an epoll
    fd is readable while an event is ready, and asking takes none (epoll(7)), edge-triggered ones
    included. ``zcopy.loop.ListenerLoop.alone`` asks it before a transfer's next step in the same
    turn. An EINTR answers True (the loop's next poll runs the handlers); a closed fd raises
    ``OSError`` EBADF (poll(2) reports it as POLLNVAL), other errors raise too."""
    cdef pollfd p
    p.fd = epfd
    p.events = POLLIN
    p.revents = 0
    cdef int n = c_poll(&p, 1, 0)
    if n < 0:
        if errno == EINTR:
            return True
        return _raise_errno()
    if p.revents & POLLNVAL:
        raise OSError(EBADF, "Bad file descriptor")
    return n > 0


# -- the wall clock's second: zcopy.http.DateHeader ---------------------------------------------------

cdef extern from "<time.h>" nogil:
    struct timespec:
        long tv_sec
        long tv_nsec
    int clock_gettime(int clk, timespec *ts)
    enum: CLOCK_REALTIME


cdef class WallClock:
    """The second of the wall clock (CLOCK_REALTIME, the clock ``time.time`` reads): ``int(time.time())``
    without the float. The compiled ``zcopy.http.DateHeader`` calls ``WALL.second`` in C once a response."""

    cpdef long long second(self):
        cdef timespec ts
        clock_gettime(CLOCK_REALTIME, &ts)
        return ts.tv_sec


#: The one clock; ``wall_second()`` is its method for Python callers.
WALL = WallClock()
wall_second = WALL.second
