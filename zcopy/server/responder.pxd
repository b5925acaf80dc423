# The C types of responder.py's classes for the compiled build (docs/hotpath.md). A new attribute
# of a class declared here needs its line here too; a C-typed one holds only what fits.
from zcopy.http.headers cimport DateHeader
from zcopy.http.request cimport Request
from zcopy.server.files cimport Trust
from zcopy.loop cimport ListenerLoop
cimport cython

cdef class _Answers(dict):
    cdef public object second, reads
    cdef public long long generation, writes

cdef class Responder:
    cdef public object cache, executor, routes, writer, access, folders, listings, gate, shares, dav, allow, uploads
    cdef public DateHeader date
    cdef public _Answers _answers
    cdef public ListenerLoop loop
    cdef public object _writes
    cpdef respond(self, Request req, bint closing=*, conn=*)
    @cython.locals(trust=Trust)
    cdef _memoized(self, _Answers answers, Request req, conn)
    cdef dict __dict__
