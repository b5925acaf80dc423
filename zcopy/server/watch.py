"""Change notices for the open-file cache, from inotify(7).

Without them the cache must ``stat(2)`` a file on every request to notice
that it changed. With them a change arrives as an event on the worker's epoll
loop, and a request for an unchanged cached file costs no syscall at all
before the send.

A watch is on each folder that holds a cached file; the folder's events name
the child that changed (written, truncated, chmod/touch, created, deleted,
renamed over). The worker reads them from epoll in readiness order. A change
that completes before a client sends its request therefore queues its event
before the request's readability, and is applied before that request is
answered.

inotify only sees changes made through this kernel's VFS. A folder on a
network or FUSE filesystem (or one whose type we do not know) is therefore
not watched, and its files are stat'ed per request as before. Writes through
a shared mmap raise no event either; the cache's once-a-second
re-resolution (``RESOLVE_TTL``) bounds how long such a change can go unseen.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct

from zcopy.fsinfo import LOCAL as WATCHABLE, fs_type

#: Folders watched per worker at most; past that, files are stat'ed per request.
MAX_WATCHES = 1024

IN_MODIFY, IN_ATTRIB, IN_MOVED_FROM, IN_MOVED_TO = 0x2, 0x4, 0x40, 0x80
IN_CREATE, IN_DELETE, IN_DELETE_SELF, IN_MOVE_SELF = 0x100, 0x200, 0x400, 0x800
IN_Q_OVERFLOW, IN_IGNORED, IN_ONLYDIR, IN_EXCL_UNLINK = 0x4000, 0x8000, 0x1000000, 0x4000000
IN_ISDIR = 0x40000000
_MASK = (IN_MODIFY | IN_ATTRIB | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE | IN_DELETE_SELF
         | IN_MOVE_SELF | IN_ONLYDIR | IN_EXCL_UNLINK)
_EVENT = struct.Struct("=iIII")      # struct inotify_event: wd, mask, cookie, len (then the name)

#: What ``changes()`` yields for "the folder itself went away or the queue
#: overflowed: forget everything you know".
EVERYTHING = None


class FileWatch:
    """One inotify instance: folders in, changed paths out."""

    def __init__(self) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        fd = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), "inotify_init1")
        self.fd = fd
        self._wd_of: dict[str, int] = {}         # folder -> watch descriptor
        self._folder_of: dict[int, str] = {}     # watch descriptor -> folder
        self._id_of: dict[int, tuple] = {}       # watch descriptor -> (st_dev, st_ino) of its folder
        self._refused: set[str] = set()          # folders we cannot or will not watch
        #: IN_Q_OVERFLOWs seen: events were lost, so nothing learnt from names can be trusted
        self.overflows = 0

    def fileno(self) -> int:
        return self.fd

    def watch(self, folder: str, dir_fd: int) -> bool:
        """Watch the folder open as ``dir_fd`` (once), known as ``folder`` (the
        label events are reported under); True when its files' changes will be
        reported. The watch is added through ``/proc/self/fd/N``: on the very
        folder the caller opened, whatever its name leads to now.

        A watch is on an inode, not a name: the folder a name meant when it was
        watched may have moved away (itself, or an ancestor, which raises no
        event here) and another folder may now have that name. So the folder's
        identity is checked (one fstat, when an entry is built, not per request)."""
        if folder in self._refused or self.fd < 0:
            return False
        try:
            st = os.fstat(dir_fd)
        except OSError:
            return False
        ident = (st.st_dev, st.st_ino)
        wd = self._wd_of.get(folder)
        if wd is not None:
            if self._id_of.get(wd) == ident:
                return True
            self._forget(wd)                 # the name now means another folder
        wd = -1
        if len(self._wd_of) < MAX_WATCHES and _local(dir_fd):
            wd = self._libc.inotify_add_watch(self.fd, f"/proc/self/fd/{dir_fd}".encode(), _MASK)
            # -1: ENOSPC (fs.inotify.max_user_watches), EACCES...: stat instead.
        if wd < 0:
            self._refused.add(folder)
            return False
        other = self._folder_of.get(wd)
        if other is not None:                # this inode was watched under a name it lost
            self._wd_of.pop(other, None)
        self._wd_of[folder] = wd
        self._folder_of[wd] = folder
        self._id_of[wd] = ident
        return True

    def token(self, folder: str):
        """What says, compared later, that ``folder``'s watch stayed up and lost no event in
        between: (its watch descriptor, its folder's (st_dev, st_ino), the overflow count); None when
        it is not watched. A watch dropped and added again has a new descriptor (the kernel hands them
        out cyclically), so an equal token means every change in the folder meanwhile was reported."""
        wd = self._wd_of.get(folder)
        if wd is None:
            return None
        return wd, self._id_of.get(wd), self.overflows

    def _forget(self, wd: int, *, in_kernel: bool = True) -> None:
        """Stop watching ``wd``: its folder is no longer known by its name
        (``in_kernel`` False: the kernel has dropped the watch already)."""
        folder = self._folder_of.pop(wd, None)
        if folder is not None and self._wd_of.get(folder) == wd:
            del self._wd_of[folder]
        self._id_of.pop(wd, None)
        if in_kernel:
            self._libc.inotify_rm_watch(self.fd, wd)     # its IN_IGNORED then names no folder

    def changes(self) -> list:
        """Paths changed since the last call: the file an event names, or a
        folder (ending in ``os.sep``) when a folder itself was created, moved
        or deleted; ``EVERYTHING`` in the list means forget all cached state."""
        out: list = []
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return out
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                raise
            pos = 0
            while pos < len(data):
                wd, mask, _cookie, length = _EVENT.unpack_from(data, pos)
                name = data[pos + 16:pos + 16 + length].rstrip(b"\0")
                pos += 16 + length
                if mask & IN_Q_OVERFLOW:
                    self.overflows += 1
                    out.append(EVERYTHING)
                    continue
                folder = self._folder_of.get(wd)
                if folder is None:
                    continue
                if mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED):
                    out.append(folder + os.sep)     # everything under it is suspect
                    if mask & IN_IGNORED:           # the kernel dropped the watch
                        self._forget(wd, in_kernel=False)
                    elif mask & IN_MOVE_SELF:       # its new name is unknown: unwatch it
                        self._forget(wd)
                    continue
                path = os.path.join(folder, os.fsdecode(name))
                out.append(path + os.sep if mask & IN_ISDIR else path)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self._wd_of.clear()
        self._folder_of.clear()
        self._id_of.clear()


def _local(dir_fd: int) -> bool:
    try:
        return fs_type(dir_fd)[0] in WATCHABLE
    except OSError:
        return False
