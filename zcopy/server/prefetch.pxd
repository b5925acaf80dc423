# The C types of prefetch.py's classes for the compiled build (docs/hotpath.md). A new attribute
# of a class declared here needs its line here too; a C-typed one holds only what fits.
cdef class Residency:
    cdef public double until

cdef class Readahead:
    cdef public object _pf, job
    cdef public int fd
    cdef public long long end, step, ready_until
    cdef public bint cold, next_hot
    cpdef bint admit(self, long long offset, conn, long long step=*) except -1
