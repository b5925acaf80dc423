cdef class Trust:
    cdef public bint watched, dropped
    cdef public double resolved_at
    cpdef bint trusted(self, double now)
