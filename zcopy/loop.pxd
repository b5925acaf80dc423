cdef class ListenerLoop:
    cdef public object listener, accepting, draining_since, signals, conns, handlers, ready, timers, _seq, first, first_apply, beat, end_of_turn, ep
    cdef public object max_connections
    cdef public int wake_r, wake_w
    cdef public double now, accept_resume_at
