# The C types of reply.py's classes for the compiled build (docs/hotpath.md). A new attribute
# of a class declared here needs its line here too; a C-typed one holds only what fits.
cdef class Reply:
    cdef public object head, body, entry
    cdef public int status
    cdef public object length        # (a multi-range 206 of a file near 2**63 bytes counts its part headers too)
    cdef public bint close
