# The C types of loop.py's classes for the compiled build (docs/hotpath.md). A new attribute
# of a class declared here needs its line here too; a C-typed one holds only what fits.
cdef class ListenerLoop:
    cdef public object listener, accepting, draining_since, _seq, first, first_apply, beat, end_of_turn, ep, _ep_poll
    cdef public dict conns, handlers
    cdef public list ready, timers
    cdef public object max_connections     # (the relay passes sys.maxsize: no C int)
    cdef public int wake_r, wake_w, epfd
    cdef public double now, accept_resume_at
    cdef public bint solo
    cpdef bint alone(self) except -1
