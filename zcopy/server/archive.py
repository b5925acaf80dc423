"""``FOLDER/?download=tar``: the walk that feeds ``zcopy.http.tar``'s plan.

The folder is walked from the fd the root walk opened for it (``zcopy.server.root``), every
subfolder and file opened relative to its parent's fd with O_NOFOLLOW, so nothing outside ROOT is
reached and no path string is ever re-resolved. Only regular files and folders are archived
(symlinks, FIFOs, sockets and devices are left out, as are temp files, hidden names unless
--show-hidden, and ``/.zcopy``; for an account whose rules read only part of the tree, what it may
not read: a file without ``r``, a folder that leads to nothing readable). Each file's size is its fd's ``fstat``, so the Content-Length is
exact before the first byte, and the file's bytes leave as a ``(fd, 0, size)`` range by sendfile.

The reply holds one open fd per non-empty file until it is sent (``OpenFds`` stands where a
``FileEntry`` stands, acquire/release, and closes them all at the end); a folder with more than
``MAX_FILES`` files (or ``MAX_MEMBERS`` members, or too deep to walk) is refused with 413 rather
than risk the process's fd limit or memory; out of fds mid-walk is a 503, never an archive that
silently lacks a file.
"""

from __future__ import annotations

import errno
import os
import stat as stat_mod

from zcopy import http
from zcopy.http import tar
from zcopy.server.prefetch import NOT_KNOWN
from zcopy.server.root import listed

MAX_FILES = 4096
#: Members (files and folders) at most: their headers are held in memory until sent.
MAX_MEMBERS = 50_000
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class OpenFds:
    """The archive's open files, closed once the reply is done with them (the connection acquires
    and releases it as it would a ``FileEntry``)."""

    residency = NOT_KNOWN       # never taken for hot at first: the prefetcher may read ahead

    def __init__(self, dev: int) -> None:
        self.fds: list[int] = []
        self.users = 0
        self.key = (dev, 0, -1, 0)
        self.size = -1          # not one file: never admitted as a whole-file readahead

    def acquire(self) -> "OpenFds":
        self.users += 1
        return self

    def release(self) -> None:
        self.users -= 1
        if self.users <= 0:
            self.close()

    def close(self) -> None:
        fds, self.fds = self.fds, []
        for fd in fds:
            os.close(fd)

    __del__ = close


def walk(dir_fd: int, *, show_hidden: bool, at_top: bool, fds: OpenFds, prefix: bytes = b"",
         keep=None, segs: tuple = ()):
    """(Member, fd or None) for everything under the folder ``dir_fd`` (not closed here), depth first,
    names in byte order. Opened file fds are added to ``fds``. ``keep(segments, is_dir)``, when
    given, says which entries go in (``segs``: the URL path segments of ``dir_fd``): a folder left
    out is not walked."""
    with os.scandir(dir_fd) as it:
        names = sorted(d.name for d in it)
    for name in names:
        if not listed(name, show_hidden=show_hidden, at_top=at_top):
            continue                    # the listings' rule: what a listing hides, the tar leaves out
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except OSError:
            continue                    # gone since the scan
        rel = prefix + os.fsencode(name)
        child = segs + (name,)
        if keep is not None and not keep(child, stat_mod.S_ISDIR(st.st_mode)):
            continue
        if stat_mod.S_ISDIR(st.st_mode):
            try:
                sub = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
            except OSError as exc:
                _unless_out_of_fds(exc)
                continue
            try:
                st = os.fstat(sub)
                yield tar.Member(rel, True, 0, int(st.st_mtime), st.st_mode), None
                yield from walk(sub, show_hidden=show_hidden, at_top=False, fds=fds, prefix=rel + b"/",
                                keep=keep, segs=child)
            finally:
                os.close(sub)
        elif stat_mod.S_ISREG(st.st_mode):
            try:
                fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
            except OSError as exc:
                _unless_out_of_fds(exc)
                continue
            st = os.fstat(fd)
            if not stat_mod.S_ISREG(st.st_mode):        # swapped since the stat
                os.close(fd)
                continue
            if st.st_size == 0:
                os.close(fd)
                fd = None
            else:
                fds.fds.append(fd)
                if len(fds.fds) > MAX_FILES:
                    raise http.HttpError(413, f"more than {MAX_FILES} files: too many to archive at once")
            yield tar.Member(rel, False, st.st_size, int(st.st_mtime), st.st_mode), fd


def _unless_out_of_fds(exc: OSError) -> None:
    """A file that vanished or is unreadable is left out; running out of fds is the server's
    trouble, not the folder's: answer 503 rather than an archive missing files."""
    if exc.errno in (errno.EMFILE, errno.ENFILE):
        raise http.HttpError(503, "out of file descriptors", headers=[("Retry-After", "1")]) from None


def disposition(url_path: str) -> str:
    """``attachment; filename=...`` naming the folder (``root`` for /), ASCII and RFC 8187 forms."""
    name = url_path.rstrip("/").rsplit("/", 1)[-1] or "root"
    from urllib.parse import quote

    ascii_name = "".join(c if c.isascii() and c.isprintable() and c not in '"\\;' else "_" for c in name)
    return (f'attachment; filename="{ascii_name}.tar"; '
            f"filename*=UTF-8''{quote(name.encode('utf-8', 'surrogateescape'), safe='')}.tar")


def plan(dir_fd: int, *, show_hidden: bool, at_top: bool, keep=None, segs: tuple = ()) -> tuple[list, int, OpenFds]:
    """(body segments, length, fds holder) for the tar of the folder ``dir_fd`` (URL path segments
    ``segs``), with only the entries ``keep`` keeps (see ``walk``). Blocks on the disk."""
    fds = OpenFds(os.fstat(dir_fd).st_dev)
    members = []
    try:
        for member in walk(dir_fd, show_hidden=show_hidden, at_top=at_top, fds=fds, keep=keep, segs=segs):
            members.append(member)
            if len(members) > MAX_MEMBERS:
                raise http.HttpError(413, f"more than {MAX_MEMBERS} entries: too many to archive at once")
    except RecursionError:
        fds.close()
        raise http.HttpError(413, "the folder is too deep to archive") from None
    except BaseException:
        fds.close()
        raise
    body, length = tar.plan(members)
    return body, length, fds
