"""A real FUSE mount for tests, served by a thread of the test process: an
empty root folder that answers INIT, GETATTR, STATFS, OPENDIR/OPEN and their
releases, and ENOSYS to everything else. Enough for statfs(2) to report
FUSE_SUPER_MAGIC and for a process to stat and open the folder: what a check
of "is this a network/FUSE filesystem" sees. Needs root and /dev/fuse."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import stat
import struct
import threading

_IN = struct.Struct("<IIQQIIII")        # fuse_in_header
_OUT = struct.Struct("<IiQ")            # fuse_out_header
_NO_REPLY = {2, 42}                     # FORGET, BATCH_FORGET
_ROOT_ATTR = struct.pack("<QQQQQQIIIIIIIIII", 1, 0, 0, 0, 0, 0, 0, 0, 0, stat.S_IFDIR | 0o700, 2,
                         os.geteuid(), os.getegid(), 0, 4096, 0)
_REPLIES = {
    3: struct.pack("<QII", 0, 0, 0) + _ROOT_ATTR,                                   # GETATTR
    17: struct.pack("<QQQQQIIII24x", 1000, 1000, 1000, 100, 100, 4096, 255, 4096, 0),  # STATFS
    14: struct.pack("<QII", 1, 0, 0), 27: struct.pack("<QII", 1, 0, 0),            # OPEN, OPENDIR
    18: b"", 25: b"", 29: b"",                                                      # RELEASE, FLUSH, RELEASEDIR
}


def available() -> bool:
    return os.geteuid() == 0 and os.path.exists("/dev/fuse")


def _serve(fd: int) -> None:
    while True:
        try:
            req = os.read(fd, 1 << 17)
        except OSError:                 # ENODEV: unmounted
            return
        _, op, unique, *_ = _IN.unpack_from(req)
        if op in _NO_REPLY:
            continue
        if op == 26:                    # INIT: protocol 7.x, at most the kernel's minor
            minor = struct.unpack_from("<I", req, _IN.size + 4)[0]
            body, err = struct.pack("<IIIIHHIIHHI28x", 7, min(minor, 31), 0, 0, 16, 12, 4096, 1, 0, 0, 0), 0
        elif op in _REPLIES:
            body, err = _REPLIES[op], 0
        else:
            body, err = b"", -errno.ENOSYS
        with contextlib.suppress(OSError):
            os.write(fd, _OUT.pack(_OUT.size + len(body), err, unique) + body)


@contextlib.contextmanager
def fuse_mount(mountpoint: str):
    """Mount the empty FUSE folder on ``mountpoint`` (an existing empty folder)
    for the duration; always unmounted after."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
    try:
        opts = f"fd={fd},rootmode=40000,user_id={os.geteuid()},group_id={os.getegid()}".encode()
        if libc.mount(b"zcopy-test", os.fsencode(mountpoint), b"fuse", 0, opts) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), mountpoint)
        thread = threading.Thread(target=_serve, args=(fd,), daemon=True, name="fuse")
        thread.start()
        try:
            yield mountpoint
        finally:
            libc.umount2(os.fsencode(mountpoint), 2)     # MNT_DETACH: ends the connection, the thread sees ENODEV
            thread.join(10)
    finally:
        os.close(fd)
