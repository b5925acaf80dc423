cdef class WorkerStats:
    cdef public object started, by_class, by_method, errors, ttfb, ttlb, _rates, by_user
    cdef public long long accepted, closed, body_buffered, copy_sent, copy_received, instant
    cpdef reply(self, method, int status, ttfb=*, ttlb=*)
