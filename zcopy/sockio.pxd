# The C types of sockio.pyx's classes that other compiled modules call directly (a C call, not a
# Python one: no argument parsing, no int objects): the connection's recv, send and small sendfile.
from posix.types cimport off_t

cdef class SocketIO:
    cdef readonly int fd
    cpdef bytes recv(self, Py_ssize_t size)
    cpdef Py_ssize_t send(self, data, int flags=*) except -1

cdef class WallClock:
    cpdef long long second(self)

cdef class Sendfile:
    cdef off_t budget
    cdef readonly long long bytes_sent
    cdef readonly long long bytes_received
    cdef readonly long long syscalls
    cpdef long long send_once(self, int sock_fd, int file_fd, off_t offset, off_t count) except -1
