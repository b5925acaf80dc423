# The C types of headers.py's classes for the compiled build (docs/hotpath.md). A new attribute
# of a class declared here needs its line here too; a C-typed one holds only what fits.
from zcopy.sockio cimport WallClock

cdef class DateHeader:
    cdef public object _clock
    cdef public WallClock _wall
    cdef public long long _second
    cdef public bytes _line
    cpdef bytes get(self)
