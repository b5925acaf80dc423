# The C types of connection.py's classes for the compiled build (docs/hotpath.md). A new attribute
# of a class declared here needs its line here too; a C-typed one holds only what fits.
from zcopy.loop cimport ListenerLoop
from zcopy.server.stats cimport WorkerStats
from zcopy.http.protocol cimport ServerProtocol
from zcopy.server.reply cimport Reply
from zcopy.http.request cimport Request
from zcopy.server.prefetch cimport Readahead
cimport cython

cdef class Connection:
    cdef public ListenerLoop worker
    cdef public WorkerStats stats
    cdef public object responder, transport, wire, recv, send, addr, out, xfer, upload, spool, pending, user, auth, config, engine, once, prefetch
    cdef public ServerProtocol proto
    cdef public Readahead ahead
    cdef public Reply reply
    cdef public list owed
    cdef public int fd, state, at
    cdef public bint readable, writable, draining, hup, corked
    cdef public double deadline, started, head_at, header_timeout, idle_timeout, send_timeout
    cdef public long long sent, budget, lone_budget
    cdef bint _read_request(self) except -1
    cdef object _read(self)
    cpdef _start_reply(self, Reply reply)
    cpdef _finish_reply(self)
    cdef _send_at_once(self, head, tuple item)
    cdef bint _hot(self, entry)
    cdef bint _send_range_once(self, int fd, long long start, long long stop) except -1
    cdef _transfer(self, int fd, long long start, long long count)
    cdef object _pump(self)
    @cython.locals(req=Request)
    cdef _count(self, Reply reply, bint complete)
