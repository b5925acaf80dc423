# The C types of stats.py's classes for the compiled build (docs/hotpath.md). A new attribute
# of a class declared here needs its line here too; a C-typed one holds only what fits.
cdef class WorkerStats:
    cdef public object started, errors, ttfb, ttlb, _rates, by_user
    cdef public list by_class
    cdef public dict by_method
    cdef public long long gets, accepted, closed, body_buffered, copy_sent, copy_received, instant
    cpdef reply(self, method, int status, ttfb=*, ttlb=*)
    cpdef reply_at_once(self, method, int status)
    cdef _count_method(self, str method)
