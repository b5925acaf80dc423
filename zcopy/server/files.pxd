# The C types of files.py's classes for the compiled build (docs/hotpath.md). A new attribute
# of a class declared here needs its line here too; a C-typed one holds only what fits.
cdef class Trust:
    cdef public bint watched, dropped
    cdef public double resolved_at
    cpdef bint trusted(self, double now)
