# cython: language_level=3
"""recv and send on a connected non-blocking socket, without the socket module's toll.

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

The one module of the hot path written in Cython (it has no ``.py``): ``zcopy.transport``
uses it only when ``zcopy.hotpath.compiled("zcopy.sockio")`` (built, current, not
``ZCOPY_PURE=1``), and the socket's own methods otherwise.
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

    cdef readonly int fd

    def __cinit__(self, int fd):
        self.fd = fd

    def recv(self, Py_ssize_t size):
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

    def send(self, data, int flags=0):
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
                    return _raise_errno()
                PyErr_CheckSignals()
        finally:
            PyBuffer_Release(&view)

    def forget(self) -> None:
        """The socket is being closed: from now on, recv and send raise ``OSError(EBADF)``."""
        self.fd = -1
