cdef class Reply:
    cdef public object head, body, entry
    cdef public int status
    cdef public long long length
    cdef public bint close
