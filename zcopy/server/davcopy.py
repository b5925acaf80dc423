"""WebDAV COPY (RFC 4918 9.8) under ROOT, every step relative to a folder fd.

A file is copied with ``os.copy_file_range`` (a server-side copy: no byte
passes through user space, and a filesystem that can share extents, such as
btrfs or XFS, reflinks) into an upload temp file (``fileops.TempFile``) that is
renamed over the destination, so a reader never sees a half-copied file. Its
dead properties go along (``deadprops.copy``: copy_file_range copies no
extended attributes), and its permission bits.

A folder is copied member by member (Depth infinity) or alone (Depth 0), each
folder opened with ``O_NOFOLLOW`` relative to its parent's fd; symbolic links,
FIFOs and our temp files are not copied. A member that fails does not stop
the rest: the failures come back as ``(url, status)`` pairs for a 207.
"""

from __future__ import annotations

import errno
import os
import stat as stat_mod

from zcopy.dav import deadprops
from zcopy.server.root import TEMP_PREFIX
from zcopy.server.fileops import TempFile

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
CHUNK = 1 << 30


def copy_props(src_fd: int, dst_fd: int, dst_folder: int) -> None:
    """Dead properties, where both ends can hold them (``dst_folder``, the destination's folder, is marked
    first: ``deadprops.mark``)."""
    if deadprops.supported(src_fd) and deadprops.supported(dst_fd):
        try:
            deadprops.copy(src_fd, dst_fd, dst_folder)
        except deadprops.DeadPropError:
            pass            # the destination's attribute space is full: the content still arrived


def copy_file(src_dir: int, name: str, dst_dir: int, dst_name: str, *, fsync: bool) -> None:
    """``name`` in ``src_dir`` to ``dst_name`` in ``dst_dir`` (replacing a file there)."""
    src = os.open(name, _FILE, dir_fd=src_dir)
    try:
        st = os.fstat(src)
        if not stat_mod.S_ISREG(st.st_mode):
            raise OSError(errno.EPERM, "not a regular file")
        temp = TempFile(dst_dir)
        try:
            left = st.st_size
            while left > 0:
                n = os.copy_file_range(src, temp.fd, min(left, CHUNK))
                if n == 0:
                    break               # it shrank meanwhile
                left -= n
            os.fchmod(temp.fd, stat_mod.S_IMODE(st.st_mode))
            copy_props(src, temp.fd, dst_dir)
            temp.commit(dst_name, fsync=fsync)
        except BaseException:
            temp.abort()
            raise
    finally:
        os.close(src)


def copy_dir(src_dir: int, name: str, dst_dir: int, dst_name: str, dst_url: str, *, infinity: bool, fsync: bool,
             failures: list) -> None:
    """The folder ``name`` as a new folder ``dst_name`` (which must not exist), and with ``infinity``
    everything in it; failed members are appended to ``failures`` as (url, status)."""
    src = os.open(name, _DIR, dir_fd=src_dir)
    try:
        os.mkdir(dst_name, stat_mod.S_IMODE(os.fstat(src).st_mode) | 0o700, dir_fd=dst_dir)
        dst = os.open(dst_name, _DIR, dir_fd=dst_dir)
        try:
            copy_props(src, dst, dst_dir)
            if infinity:
                _members(src, dst, dst_url.rstrip("/") + "/", fsync, failures)
        finally:
            os.close(dst)
    finally:
        os.close(src)


def _members(src: int, dst: int, base_url: str, fsync: bool, failures: list) -> None:
    with os.scandir(src) as it:
        entries = [(d.name, d.is_dir(follow_symlinks=False), d.is_file(follow_symlinks=False)) for d in it
                   if not d.name.startswith(TEMP_PREFIX)]
    for name, is_dir, is_file in entries:
        url = base_url + name
        try:
            if is_dir:
                copy_dir(src, name, dst, name, url, infinity=True, fsync=fsync, failures=failures)
            elif is_file:
                copy_file(src, name, dst, name, fsync=fsync)
        except OSError as exc:
            failures.append((url + ("/" if is_dir else ""), status_of(exc)))


def status_of(exc: OSError) -> int:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return 507
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return 403
    return 500
