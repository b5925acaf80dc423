cdef class Reply:
    cdef public object head, body, entry
    cdef public int status
    cdef public object length        # (a multi-range 206 of a file near 2**63 bytes counts its part headers too)
    cdef public bint close
