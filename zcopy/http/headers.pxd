cdef class DateHeader:
    cdef public object _clock
    cdef public long long _second
    cdef public bytes _line
    cpdef bytes get(self)
