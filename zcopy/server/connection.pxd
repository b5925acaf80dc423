# The C types of connection.py's classes for the compiled build (docs/hotpath.md). A new attribute
# of a class declared here needs its line here too; a C-typed one holds only what fits.
from zcopy.loop cimport ListenerLoop
from zcopy.server.stats cimport WorkerStats
from zcopy.http.protocol cimport ServerProtocol
from zcopy.server.reply cimport Reply
from zcopy.http.request cimport Request
from zcopy.server.prefetch cimport Readahead, Residency
from zcopy.server.responder cimport Responder
from zcopy.sockio cimport SocketIO, Sendfile
cimport cython

# Module constants the hot path compares with C ints (``CLOSED`` stays a Python name: other
# modules import it).
cdef int READING, RECEIVING, WRITING, LINGERING, WAITING, PIPELINE_BURST, _MSG_MORE
cdef Py_ssize_t RECV_SIZE

cdef class Connection:
    cdef public ListenerLoop worker
    cdef public WorkerStats stats
    cdef public Responder responder
    cdef public SocketIO io
    cdef public Sendfile sendfile
    cdef public object transport, wire, recv, send, addr, out, xfer, upload, spool, pending, user, auth, config, engine, once, prefetch, access_log, held
    cdef public ServerProtocol proto
    cdef public Readahead ahead
    cdef public Reply reply
    cdef public list owed
    cdef public int fd, state, at
    cdef public bint readable, writable, draining, hup, corked
    cdef public double deadline, started, head_at, header_timeout, idle_timeout, send_timeout
    cdef public long long sent, budget, lone_budget
    cdef bint _read_request(self) except -1
    cdef object _recv(self)
    cdef Py_ssize_t _send(self, data, int flags=*) except -1
    @cython.locals(n=Py_ssize_t)
    cdef object _read(self)
    @cython.locals(n=Py_ssize_t)
    cpdef _start_reply(self, Reply reply)
    cpdef _finish_reply(self)
    @cython.locals(n=Py_ssize_t)
    cdef _send_at_once(self, head, tuple item)
    @cython.locals(residency=Residency)
    cdef bint _hot(self, entry)
    @cython.locals(n=cython.longlong, count=cython.longlong, step=cython.longlong)
    cdef bint _send_range_once(self, int fd, long long start, long long stop) except -1
    cdef _transfer(self, int fd, long long start, long long count)
    cdef object _pump(self)
    @cython.locals(req=Request)
    cdef _count(self, Reply reply, bint complete)
