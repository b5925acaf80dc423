# cython: language_level=3, boundscheck=False, wraparound=False
"""A Depth 1 PROPFIND's first build, its per-member work in C (``zcopy.server.propfind``).

In Python a folder of 10,000 members cost about 3 µs a member beyond its system calls
(docs/benchmarks.md, "A first build's floor"): ``os.stat`` building a ``stat_result`` (a dozen
objects each: its three times as floats and as nanosecond integers), a tuple per member for the
ETag's fields and its ``%`` formatting, the size's ``%d``, and a ``bytes.join`` over a ``zip`` per
response. Here:

- ``scan(fd, hide_dots)`` reads the folder open as ``fd`` (``readdir`` on a dup of it, as
  ``os.listdir`` does) and ``fstatat(fd, name, AT_SYMLINK_NOFOLLOW)`` each member, with the GIL
  released (no Python object is touched in that loop), keeps only regular files and folders, and
  returns their names (``str``, decoded as ``os.listdir`` decodes them) and a ``Stat`` each: a compact
  stand-in for ``os.stat_result`` (the fields zcopy reads, by name and by the first ten indices, with
  the same values and types), one allocation with nothing for the cyclic collector to track.
- ``newest``, ``etags``, ``packed_keys``, ``sizes``, ``mtimes``, ``created``: the columns the batch
  renderer and the memo need, one C loop each, with ``http.ETAG_FORMAT``'s and ``struct``'s bytes.
- ``join(consts, columns, n)``: each member's response as one allocation, the template's constant parts
  and its fields copied in (what ``map(b"".join, zip(...))`` made through a tuple a member).

Written in Cython (no ``.py``): ``zcopy.server.propfind`` uses it only when
``zcopy.hotpath.compiled("zcopy.scan")`` (built, current, not ``ZCOPY_PURE=1``), and its own
Python otherwise; both give the same bytes (tests/test_dav_scan.py compares them).
"""

from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.object cimport PyObject
from cpython.ref cimport Py_INCREF
from cpython.list cimport PyList_New, PyList_SET_ITEM, PyList_GET_ITEM, PyList_GET_SIZE
from cpython.exc cimport PyErr_SetFromErrno
from libc.stdlib cimport malloc, realloc, free
from libc.string cimport memcpy, strlen
from libc.errno cimport errno, ENOMEM


cdef extern from "Python.h":
    object PyUnicode_DecodeFSDefaultAndSize(const char *s, Py_ssize_t size)


cdef extern from "<dirent.h>" nogil:
    ctypedef struct DIR:
        pass
    struct dirent:
        unsigned char d_type
        char d_name[256]
    DIR *fdopendir(int fd)
    dirent *readdir(DIR *d)
    int closedir(DIR *d)
    void rewinddir(DIR *d)
    enum:
        DT_UNKNOWN
        DT_REG
        DT_DIR


cdef extern from "<time.h>" nogil:
    struct timespec:
        long tv_sec
        long tv_nsec


cdef extern from "<sys/stat.h>" nogil:
    struct c_stat "stat":
        unsigned long long st_dev
        unsigned long long st_ino
        unsigned int st_mode
        unsigned long long st_nlink
        unsigned int st_uid
        unsigned int st_gid
        long long st_size
        timespec st_atim
        timespec st_mtim
        timespec st_ctim
    int fstatat(int dirfd, const char *path, c_stat *buf, int flags)


cdef extern from "<fcntl.h>" nogil:
    int fcntl(int fd, int cmd, int arg)
    enum:
        AT_SYMLINK_NOFOLLOW
        F_DUPFD_CLOEXEC


cdef extern from "<unistd.h>" nogil:
    int close(int fd)


cdef extern from *:
    """
    #include <errno.h>
    static void zcopy_set_errno(int e) { errno = e; }
    """
    void set_errno "zcopy_set_errno" (int e) nogil


cdef enum:
    S_IFMT = 0o170000
    S_IFREG = 0o100000
    S_IFDIR = 0o040000


cdef long long _NS = 1000000000
#: Seconds whose nanosecond count fits a signed 64-bit integer with room to spare.
cdef long long _SAFE_S = 9000000000


cdef class Stat:
    """A member's stat, as ``os.stat_result`` shows it for the fields zcopy reads: ``st_mode``,
    ``st_ino``, ``st_dev``, ``st_nlink``, ``st_uid``, ``st_gid``, ``st_size``, the times as floats
    (``st_mtime``...) and nanosecond integers (``st_mtime_ns``...), and the first ten items by index
    (the times in whole seconds). Nothing else: it is made only by ``scan``."""

    cdef readonly unsigned long long st_dev, st_ino, st_nlink
    cdef readonly unsigned int st_mode, st_uid, st_gid
    cdef readonly long long st_size
    cdef long long a_s, a_ns, m_s, m_ns, c_s, c_ns

    def __getitem__(self, Py_ssize_t i):
        if i < 0:
            i += 10
        if i == 0:
            return self.st_mode
        if i == 1:
            return self.st_ino
        if i == 2:
            return self.st_dev
        if i == 3:
            return self.st_nlink
        if i == 4:
            return self.st_uid
        if i == 5:
            return self.st_gid
        if i == 6:
            return self.st_size
        if i == 7:
            return self.a_s
        if i == 8:
            return self.m_s
        if i == 9:
            return self.c_s
        raise IndexError("tuple index out of range")

    def __len__(self):
        return 10

    @property
    def st_atime(self):
        return <double>self.a_s + <double>self.a_ns * 1e-9      # os.stat's own arithmetic (fill_time)

    @property
    def st_mtime(self):
        return <double>self.m_s + <double>self.m_ns * 1e-9

    @property
    def st_ctime(self):
        return <double>self.c_s + <double>self.c_ns * 1e-9

    @property
    def st_atime_ns(self):
        return _ns(self.a_s, self.a_ns)

    @property
    def st_mtime_ns(self):
        return _ns(self.m_s, self.m_ns)

    @property
    def st_ctime_ns(self):
        return _ns(self.c_s, self.c_ns)

    def __repr__(self):
        return (f"zcopy.scan.Stat(st_mode={self.st_mode}, st_ino={self.st_ino}, st_dev={self.st_dev}, "
                f"st_size={self.st_size}, st_mtime_ns={self.st_mtime_ns}, st_ctime_ns={self.st_ctime_ns})")


cdef inline object _ns(long long s, long long ns):
    if -_SAFE_S < s < _SAFE_S:
        return s * _NS + ns
    return <object>s * 1000000000 + ns


cdef inline bint _safe(Stat st):
    """Whether every nanosecond time of ``st`` fits a long long (always, until the year 2255)."""
    return -_SAFE_S < st.m_s < _SAFE_S and -_SAFE_S < st.c_s < _SAFE_S


cdef struct Entry:
    size_t name_at
    size_t name_len
    c_stat st


cdef object _raise_errno():
    PyErr_SetFromErrno(OSError)
    return None


def scan(int fd, bint hide_dots):
    """The folder open as ``fd``: (file names, their ``Stat``s, folder names, their ``Stat``s), in the
    folder's order, members that are neither a regular file nor a folder left out, and those whose
    name starts with a dot when ``hide_dots``. Each member is ``fstatat``'ed from ``fd`` by its bare
    name without following a symlink; one gone (or not ours to see) by then is left out, as one that
    never was. Raises ``OSError`` as ``os.listdir(fd)`` does when the folder cannot be read."""
    cdef int dfd
    cdef DIR *d
    cdef dirent *ent
    cdef Entry *entries = NULL
    cdef Entry *grown
    cdef char *names = NULL
    cdef char *grown_names
    cdef size_t count = 0, cap = 0, used = 0, names_cap = 0, n
    cdef const char *name
    cdef int failed = 0
    cdef unsigned char kind
    cdef unsigned int fmt
    with nogil:
        dfd = fcntl(fd, F_DUPFD_CLOEXEC, 0)
        if dfd < 0:
            failed = errno
        else:
            d = fdopendir(dfd)
            if d == NULL:
                failed = errno
                close(dfd)
            else:
                rewinddir(d)                     # the dup shares the fd's offset: from the start, as listdir
                while True:
                    set_errno(0)
                    ent = readdir(d)
                    if ent == NULL:
                        failed = errno
                        break
                    name = ent.d_name
                    if name[0] == b'.':
                        if hide_dots or name[1] == 0 or (name[1] == b'.' and name[2] == 0):
                            continue
                    kind = ent.d_type
                    if kind != DT_UNKNOWN and kind != DT_REG and kind != DT_DIR:
                        continue                 # a symlink, fifo, socket or device: never shown
                    if count == cap:
                        cap = cap * 2 if cap else 256
                        grown = <Entry *>realloc(entries, cap * sizeof(Entry))
                        if grown == NULL:
                            failed = ENOMEM
                            break
                        entries = grown
                    if fstatat(fd, name, &entries[count].st, AT_SYMLINK_NOFOLLOW) != 0:
                        continue                 # gone meanwhile
                    fmt = entries[count].st.st_mode & S_IFMT
                    if fmt != S_IFREG and fmt != S_IFDIR:
                        continue
                    n = strlen(name)
                    if used + n > names_cap:
                        names_cap = (names_cap * 2) if names_cap else 16384
                        while used + n > names_cap:
                            names_cap *= 2
                        grown_names = <char *>realloc(names, names_cap)
                        if grown_names == NULL:
                            failed = ENOMEM
                            break
                        names = grown_names
                    memcpy(names + used, name, n)
                    entries[count].name_at = used
                    entries[count].name_len = n
                    used += n
                    count += 1
                rewinddir(d)
                closedir(d)                      # closes dfd
    try:
        if failed:
            set_errno(failed)
            return _raise_errno()
        return _columns(entries, names, count)
    finally:
        free(entries)
        free(names)


cdef tuple _columns(Entry *entries, char *names, size_t count):
    cdef list file_names = [], file_stats = [], folder_names = [], folder_stats = []
    cdef size_t i
    cdef Entry *e
    cdef Stat st
    for i in range(count):
        e = &entries[i]
        st = Stat.__new__(Stat)
        st.st_dev = e.st.st_dev
        st.st_ino = e.st.st_ino
        st.st_nlink = e.st.st_nlink
        st.st_mode = e.st.st_mode
        st.st_uid = e.st.st_uid
        st.st_gid = e.st.st_gid
        st.st_size = e.st.st_size
        st.a_s, st.a_ns = e.st.st_atim.tv_sec, e.st.st_atim.tv_nsec
        st.m_s, st.m_ns = e.st.st_mtim.tv_sec, e.st.st_mtim.tv_nsec
        st.c_s, st.c_ns = e.st.st_ctim.tv_sec, e.st.st_ctim.tv_nsec
        name = PyUnicode_DecodeFSDefaultAndSize(names + e.name_at, <Py_ssize_t>e.name_len)
        if (e.st.st_mode & S_IFMT) == S_IFREG:
            file_names.append(name)
            file_stats.append(st)
        else:
            folder_names.append(name)
            folder_stats.append(st)
    return file_names, file_stats, folder_names, folder_stats


# -- columns of a batch (each takes a list of Stat; any other stat goes the Python way) --------------

def newest(list stats):
    """The largest ``st_ctime_ns`` of ``stats``, 0 for none."""
    cdef object best = 0
    cdef long long top = 0
    cdef bint any_c = False
    cdef Stat st
    for o in stats:
        if type(o) is Stat and _safe(<Stat>o):
            st = <Stat>o
            if not any_c or st.c_s * _NS + st.c_ns > top:
                top = st.c_s * _NS + st.c_ns
                any_c = True
        else:
            v = o.st_ctime_ns
            if v > best:
                best = v
    if any_c and top > best:
        return top
    return best


cdef extern from *:
    """
    /* u in lowercase hexadecimal at p (no sign); returns the end. */
    static inline char *zcopy_uhex(char *p, unsigned long long u) {
        static const char digits[] = "0123456789abcdef";
        int n = u ? (64 - __builtin_clzll(u) + 3) >> 2 : 1;
        char *end = p + n;
        char *q = end;
        do { *--q = digits[u & 15]; u >>= 4; } while (q > p);
        return end;
    }
    """
    char *_uhex "zcopy_uhex" (char *p, unsigned long long u) noexcept nogil


cdef inline char *_hex(char *p, long long v) noexcept:
    """``v`` in lowercase hexadecimal at ``p``, as Python's ``%x`` (a "-" before a negative one)."""
    if v < 0:
        p[0] = b'-'
        return _uhex(p + 1, <unsigned long long>(-(v + 1)) + 1)
    return _uhex(p, <unsigned long long>v)


_ETAG_FORMAT = b'"%x-%x-%x-%x"'             # http.ETAG_FORMAT (tests/test_dav_scan.py checks they agree)


def etags(list stats):
    """``http.ETAG_FORMAT`` of each stat's inode, size, mtime and ctime (ns): ``http.make_etags``."""
    cdef Py_ssize_t n = len(stats), i
    cdef list out = PyList_New(n)
    cdef char buf[96]
    cdef char *p
    cdef Stat st
    for i in range(n):
        o = <object>PyList_GET_ITEM(stats, i)
        if type(o) is Stat and _safe(<Stat>o):
            st = <Stat>o
            p = buf
            p[0] = b'"'
            p = _uhex(p + 1, st.st_ino)
            p[0] = b'-'
            p = _hex(p + 1, st.st_size)
            p[0] = b'-'
            p = _hex(p + 1, st.m_s * _NS + st.m_ns)
            p[0] = b'-'
            p = _hex(p + 1, st.c_s * _NS + st.c_ns)
            p[0] = b'"'
            tag = PyBytes_FromStringAndSize(buf, p + 1 - buf)
        else:
            tag = _ETAG_FORMAT % (o.st_ino, o.st_size, o.st_mtime_ns, o.st_ctime_ns)
        Py_INCREF(tag)
        PyList_SET_ITEM(out, i, tag)
    return out


cdef packed struct Key:
    unsigned long long ino
    long long size
    long long mtime_ns
    long long ctime_ns
    unsigned int mode

import struct as _struct
_KEY_PACK = _struct.Struct("=QqqqI").pack
_KEY_ERROR = _struct.error


def _key(ino, size, mtime_ns, ctime_ns, mode):
    """``propfind._key``: the packed key, or for times ``=q`` cannot hold (after 2262 or before 1677:
    an X-OC-Mtime or a PROPPATCH Win32LastModifiedTime can set them) the fields in decimal (ASCII:
    never equal to a packed key, whose mode bytes are not)."""
    try:
        return _KEY_PACK(ino, size, mtime_ns, ctime_ns, mode)
    except _KEY_ERROR:
        return b"%d,%d,%d,%d,%d" % (ino, size, mtime_ns, ctime_ns, mode)


def packed_keys(list stats):
    """Each stat's inode, size, mtime and ctime (ns) and mode, as ``struct.pack("=QqqqI", ...)``."""
    cdef Py_ssize_t n = len(stats), i
    cdef list out = PyList_New(n)
    cdef Key key
    cdef Stat st
    for i in range(n):
        o = <object>PyList_GET_ITEM(stats, i)
        if type(o) is Stat and _safe(<Stat>o):
            st = <Stat>o
            key.ino = st.st_ino
            key.size = st.st_size
            key.mtime_ns = st.m_s * _NS + st.m_ns
            key.ctime_ns = st.c_s * _NS + st.c_ns
            key.mode = st.st_mode
            packed = PyBytes_FromStringAndSize(<char *>&key, sizeof(Key))
        else:
            packed = _key(o.st_ino, o.st_size, o.st_mtime_ns, o.st_ctime_ns, o.st_mode)
        Py_INCREF(packed)
        PyList_SET_ITEM(out, i, packed)
    return out


def sizes(list stats):
    """Each stat's size as ASCII decimal bytes (``b"%d" % st.st_size``)."""
    cdef Py_ssize_t n = len(stats), i
    cdef list out = PyList_New(n)
    cdef char tmp[24]
    cdef int k
    cdef long long v
    cdef unsigned long long u
    cdef bint neg
    for i in range(n):
        o = <object>PyList_GET_ITEM(stats, i)
        if type(o) is Stat:
            v = (<Stat>o).st_size
            neg = v < 0
            u = <unsigned long long>(-(v + 1)) + 1 if neg else <unsigned long long>v
            k = 24
            while True:
                k -= 1
                tmp[k] = <char>(48 + u % 10)
                u //= 10
                if u == 0:
                    break
            if neg:
                k -= 1
                tmp[k] = b'-'
            text = PyBytes_FromStringAndSize(tmp + k, 24 - k)
        else:
            text = b"%d" % o.st_size
        Py_INCREF(text)
        PyList_SET_ITEM(out, i, text)
    return out


def mtimes(list stats):
    """Each stat's mtime in whole seconds (``st[8]``)."""
    cdef Py_ssize_t n = len(stats), i
    cdef list out = PyList_New(n)
    for i in range(n):
        o = <object>PyList_GET_ITEM(stats, i)
        v = (<Stat>o).m_s if type(o) is Stat else o[8]
        Py_INCREF(v)
        PyList_SET_ITEM(out, i, v)
    return out


def created(list stats):
    """Each stat's ``min(st[9], st[8])``: the creationdate's second."""
    cdef Py_ssize_t n = len(stats), i
    cdef list out = PyList_New(n)
    cdef Stat st
    for i in range(n):
        o = <object>PyList_GET_ITEM(stats, i)
        if type(o) is Stat:
            st = <Stat>o
            v = st.c_s if st.c_s < st.m_s else st.m_s
        else:
            v = min(o[9], o[8])
        Py_INCREF(v)
        PyList_SET_ITEM(out, i, v)
    return out


def join(list consts, list columns, Py_ssize_t n):
    """``n`` responses: member ``i``'s is ``consts[0] + columns[0][i] + consts[1] + ... + consts[-1]``
    (``len(consts) == len(columns) + 1``; every item bytes)."""
    cdef Py_ssize_t k = len(columns), i, j, total, fixed = 0, size
    cdef list out
    cdef PyObject **cols
    cdef PyObject *item
    cdef char *p
    if len(consts) != k + 1:
        raise ValueError("consts must be one more than columns")
    for c in consts:
        fixed += len(<bytes?>c)
    for col in columns:
        if len(<list?>col) < n:
            raise ValueError("a column is shorter than n")
        for j in range(n):
            if type(<object>PyList_GET_ITEM(col, j)) is not bytes:
                raise TypeError("columns hold bytes only")
    out = PyList_New(n)
    cols = <PyObject **>malloc((k + 1) * sizeof(PyObject *))
    if cols == NULL:
        raise MemoryError()
    try:
        for j in range(k):
            cols[j] = <PyObject *>columns[j]
        for i in range(n):
            total = fixed
            for j in range(k):
                total += PyBytes_GET_SIZE(<object>PyList_GET_ITEM(<object>cols[j], i))
            piece = PyBytes_FromStringAndSize(NULL, total)
            p = PyBytes_AS_STRING(piece)
            c = <object>PyList_GET_ITEM(consts, 0)
            size = PyBytes_GET_SIZE(c)
            memcpy(p, PyBytes_AS_STRING(c), size)
            p += size
            for j in range(k):
                item = PyList_GET_ITEM(<object>cols[j], i)
                size = PyBytes_GET_SIZE(<object>item)
                memcpy(p, PyBytes_AS_STRING(<object>item), size)
                p += size
                c = <object>PyList_GET_ITEM(consts, j + 1)
                size = PyBytes_GET_SIZE(c)
                memcpy(p, PyBytes_AS_STRING(c), size)
                p += size
            Py_INCREF(piece)
            PyList_SET_ITEM(out, i, piece)
    finally:
        free(cols)
    return out
