# The C types of protocol.py's classes for the compiled build (docs/hotpath.md). A new attribute
# of a class declared here needs its line here too; a C-typed one holds only what fits.
cimport cython
from zcopy.http.request cimport Request

cdef class ServerProtocol:
    cdef public object heads, reader, buf, state, decoder
    cdef public Request request
    cdef public dict known
    cdef public bint keep_alive, continue_due
    cdef public object body_left     # (a Content-Length may exceed 64 bits before it is refused)
    @cython.locals(req=Request)
    cpdef object receive(self, bytes data)
    @cython.locals(req=Request)
    cpdef object next_request(self)
    cdef object _begin(self, Request req)
    cpdef str reply_finished(self, bint close=*)
