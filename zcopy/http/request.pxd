# The C types of request.py's classes for the compiled build (docs/hotpath.md). A new attribute
# of a class declared here needs its line here too; a C-typed one holds only what fits.
cdef class Request:
    cdef readonly object method, target, path, query, version, headers
    cdef readonly object content_length     # None, or up to what llhttp accepts (past 64 bits)
    cdef readonly bint keep_alive, chunked, expect_continue, plain
