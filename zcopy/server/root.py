"""The served folder, reached only through its directory fd.

Every file operation of the server starts here: ``Root.locate`` turns a URL
path into a ``Place``, an open fd of the folder that holds the named entry
(``dir_fd``) plus the entry's plain ``name`` in it. The caller then acts on
that name relative to the fd (``openat``, ``fstatat``, ``renameat``,
``unlinkat``, ``mkdirat``, ``linkat``: Python's ``dir_fd`` arguments), with
``O_NOFOLLOW``. No path string that was checked earlier is ever handed to the
kernel again, so swapping an ancestor folder for a symlink between the check
and the use leads nowhere: the fd is the folder that was checked.

The walk, from the ROOT fd opened once per process:

* Without ``--follow-symlinks``: one ``openat2(RESOLVE_BENEATH |
  RESOLVE_NO_MAGICLINKS | RESOLVE_NO_SYMLINKS)`` of the parent folder, where
  the kernel has it (probed once per process: syscall 437 through ctypes;
  Python 3.11's os has no openat2); else the segment walker below.
* With it, or without openat2: segment by segment, each folder opened with
  ``O_PATH | O_NOFOLLOW`` relative to the previous one's fd. A symlink is read
  with ``readlinkat`` and resolved here, never by the kernel: a relative
  target continues from the link's folder, an absolute one must lie in ROOT
  or in a ``--symlink-target`` folder (compared by its segments, no ``..``
  among them) and continues from that folder's fd; a ``..`` never climbs
  above the folder the walk (re)started from. (``RESOLVE_BENEATH`` refuses an
  absolute link even when it points inside ROOT, hence this walker.)
  At most 40 links per walk (ELOOP).

``Place.folder`` and ``Place.path`` are the path strings the walk went
through: labels for the open-file cache and the inotify watch (which adds
its watch through ``/proc/self/fd/N`` of the folder fd), never used to reach
a file.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat as stat_mod
from dataclasses import dataclass, field

from zcopy import http

#: Name prefix of an upload's named temp file: never served, listed or written.
TEMP_PREFIX = ".zcopy-upload-"
MAX_LINKS = 40


def listed(name: str, *, show_hidden: bool, at_top: bool) -> bool:
    """Whether a folder's member may appear in a listing (GET's HTML and JSON, WebDAV's PROPFIND): the
    one hidden-name rule. Never our temp files or, at the top, the server's own namespace; dotfiles
    only with ``--show-hidden``."""
    if name.startswith(TEMP_PREFIX) or (at_top and name == http.RESERVED):
        return False
    return show_hidden or not name.startswith(".")
_WALK = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
_RESOLVE_NO_MAGICLINKS, _RESOLVE_NO_SYMLINKS, _RESOLVE_BENEATH = 0x02, 0x04, 0x08
_SYS_OPENAT2 = 437          # the same number on every architecture (new syscall table)


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_openat2_works: bool | None = None      # probed once per process
_syscall = None                         # libc's syscall(2), prototyped (saves the argument guessing)
_hows: dict[tuple[int, int], tuple[_OpenHow, int]] = {}    # (flags, resolve) -> struct and its address


def _openat2(dir_fd: int, path: str, flags: int, resolve: int) -> int:
    known = _hows.get((flags, resolve))
    if known is None:
        how = _OpenHow(flags, 0, resolve)
        known = _hows[flags, resolve] = (how, ctypes.addressof(how))
    fd = _syscall(_SYS_OPENAT2, dir_fd, os.fsencode(path), known[1], ctypes.sizeof(_OpenHow))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path)
    return fd


def has_openat2(dir_fd: int) -> bool:
    """Whether openat2(2) works here (kernel >= 5.6, not filtered by seccomp)."""
    global _openat2_works, _syscall
    if _openat2_works is None:
        try:
            _syscall = ctypes.CDLL(None, use_errno=True).syscall
            _syscall.restype = ctypes.c_long
            _syscall.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_size_t]
            os.close(_openat2(dir_fd, ".", os.O_PATH | os.O_CLOEXEC, _RESOLVE_BENEATH))
            _openat2_works = True
        except (OSError, AttributeError):
            _openat2_works = False
    return _openat2_works


@dataclass(eq=False)
class Place:
    """Where a URL path leads: the folder ``dir_fd`` (owned, O_PATH) and a plain
    ``name`` in it (``"."``: the folder itself). For writes, ``missing`` lists
    the folders still to create below ``dir_fd``, outermost first; ``name``
    goes into the last of them."""

    dir_fd: int
    name: str
    folder: str                         # path string of dir_fd: a label, never opened
    missing: list[str] = field(default_factory=list)
    link: str | None = None             # the followed symlink the URL's last segment named (its path string)
    link_fd: int = -1                   # ... and its folder (owned), for watching it

    @property
    def path(self) -> str:
        if self.missing:
            return os.path.join(self.folder, *self.missing, self.name)
        return self.folder if self.name == "." else os.path.join(self.folder, self.name)

    def stat(self) -> os.stat_result:
        """fstatat of the entry, not following a symlink."""
        return os.stat(self.name, dir_fd=self.dir_fd, follow_symlinks=False)

    def open(self, flags: int) -> int:
        """openat of the entry with O_NOFOLLOW (a symlink there now: ELOOP)."""
        return os.open(self.name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self.dir_fd)

    def open_dir(self) -> int:
        """The entry as a readable folder fd (for scandir, fsync)."""
        return self.open(os.O_RDONLY | os.O_DIRECTORY)

    def close(self) -> None:
        for fd in (self.dir_fd, self.link_fd):
            if fd >= 0:
                os.close(fd)
        self.dir_fd = self.link_fd = -1

    def __enter__(self) -> "Place":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Root:
    """ROOT's fd and the policy for reaching what is under it."""

    def __init__(self, path: str, *, follow_symlinks: bool = False, show_hidden: bool = False, mac_files: bool = False,
                 allowed: tuple[str, ...] = ()) -> None:
        self.path = path.rstrip("/") or "/"        # a realpath (the CLI resolves it)
        self.follow_symlinks = follow_symlinks
        self.show_hidden = show_hidden
        self.mac_files = mac_files          # macOS Finder's ._* and .DS_Store may be read and written
        self.fd = _open_base(self.path)
        #: ROOT and the --symlink-target folders: (their segments, path, fd)
        self.bases = [(_segments_of(self.path), self.path, self.fd)]
        for extra in allowed:
            extra = extra.rstrip("/") or "/"
            self.bases.append((_segments_of(extra), extra, _open_base(extra)))
        self.fast = not follow_symlinks and has_openat2(self.fd)

    def close(self) -> None:
        for _, _, fd in self.bases:
            os.close(fd)
        self.bases = []

    def locate(self, url_path: str, *, write: bool = False) -> Place:
        """The Place ``url_path`` names (raises HttpError). Reads follow a
        symlink in the last segment (where links are allowed); writes act on
        the last segment itself and may name missing folders (``missing``)."""
        segments = http.url_segments(url_path, show_hidden=self.show_hidden, write=write, mac_files=self.mac_files)
        for seg in segments:
            if seg.startswith(TEMP_PREFIX):
                raise http.HttpError(403 if write else 404, "reserved name" if write else "not found")
        if write and not segments:
            raise http.HttpError(403, "the root folder itself cannot be written")
        if self.fast:
            place = self._beneath(segments, write)
        else:
            place = self._walk(segments, write)
        if place.name.startswith(TEMP_PREFIX):         # reached through a link
            place.close()
            raise http.HttpError(403 if write else 404, "reserved name" if write else "not found")
        return place

    # -- openat2: one call for the parent folder ------------------------------

    def open_folder(self, url_path: str) -> tuple[str, int]:
        """(the path label, a readable fd) of the folder ``url_path`` names; the caller closes the fd.
        Raises HttpError: what ``locate`` says, then 403 unreadable, 503 out of fds, else 404
        (``fs_error``)."""
        with self.locate(url_path) as place:
            try:
                return place.path, place.open_dir()
            except OSError as exc:
                raise fs_error(exc, False) from None

    def _beneath(self, segments: list[str], write: bool) -> Place:
        if not segments:
            try:
                return Place(os.dup(self.fd), ".", self.path)
            except OSError as exc:      # EMFILE: an answer, not a connection closed without one
                raise fs_error(exc, write) from None
        if segments[-1] in (".", ".."):
            parent, name = segments, "."
        else:
            parent, name = segments[:-1], segments[-1]
        resolve = _RESOLVE_BENEATH | _RESOLVE_NO_MAGICLINKS | _RESOLVE_NO_SYMLINKS
        try:
            fd = _openat2(self.fd, "/".join(parent) or ".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, resolve)
        except OSError as exc:
            if exc.errno == errno.EAGAIN or (write and exc.errno == errno.ENOENT):
                return self._walk(segments, write)     # a rename raced ".."; or: which folders are missing
            raise fs_error(exc, write) from None
        folder = "/".join([self.path.rstrip("/")] + http.paths.normalised_parts(parent)) or "/"
        return Place(fd, name, folder)

    # -- the segment walker ----------------------------------------------------

    def _walk(self, segments: list[str], write: bool) -> Place:
        # stack[0] is the folder the walk (re)started from (ROOT or an allowed
        # folder, borrowed); the rest are folders opened on the way (owned).
        stack: list[tuple[int, str]] = [(self.fd, self.path)]
        todo = list(reversed(segments))
        links = 0
        link: str | None = None
        link_fd = -1

        def unwind(keep: int = 0) -> None:
            while len(stack) > 1 + keep:
                os.close(stack.pop()[0])

        def place(name: str, missing: list[str] | None = None) -> Place:
            fd, path = stack.pop() if len(stack) > 1 else (os.dup(stack[0][0]), stack[0][1])
            unwind()
            return Place(fd, name, path, missing or [], link, link_fd)

        try:
            while True:
                if not todo:
                    return place(".")
                seg = todo.pop()
                if seg in ("", "."):
                    continue
                if seg == "..":
                    if len(stack) > 1:
                        os.close(stack.pop()[0])
                        continue
                    # Above the folder the walk started from (only a link can
                    # lead here): go on only if the rest lies in ROOT or an
                    # allowed folder, as an absolute link target would.
                    up = os.path.dirname(stack[0][1])
                    base = self._base_of("/".join([up] + list(reversed(todo))))
                    if base is None:
                        raise http.HttpError(404, "a link leads out of the served folder")
                    below, path, fd = base
                    stack[0] = (fd, path)
                    todo[:] = list(reversed(below))
                    continue
                top, top_path = stack[-1]
                last = not any(todo)         # a "." after it still makes it a folder to open
                if last and (write or not self.follow_symlinks):
                    return place(seg)        # not followed: the caller acts on it with O_NOFOLLOW
                try:
                    fd = os.open(seg, _WALK, dir_fd=top)
                except FileNotFoundError:
                    if last:
                        return place(seg)
                    if not write:
                        raise http.HttpError(404, "not found") from None
                    rest = [seg] + [s for s in reversed(todo) if s not in ("", ".")]
                    if ".." in rest:
                        raise http.HttpError(404, "not found") from None
                    return place(rest[-1], rest[:-1])
                st = os.fstat(fd)
                if stat_mod.S_ISLNK(st.st_mode):
                    os.close(fd)
                    if not self.follow_symlinks:
                        raise http.HttpError(403 if write else 404,
                                             "symbolic links cannot be written through" if write else "not found")
                    links += 1
                    if links > MAX_LINKS:
                        raise http.HttpError(404, "too many levels of symbolic links")
                    target = os.readlink(seg, dir_fd=top)
                    if last and link is None:      # the link the URL names (not later hops)
                        link, link_fd = os.path.join(top_path, seg), os.dup(top)
                    if target.startswith("/"):
                        base = self._base_of(target)
                        if base is None:
                            raise http.HttpError(404, "a link leads out of the served folder")
                        below, path, fd = base
                        unwind()
                        stack[0] = (fd, path)
                        todo.extend(reversed(below))
                    else:
                        todo.extend(reversed(target.split("/")))
                    continue
                if last:
                    os.close(fd)
                    return place(seg)
                if not stat_mod.S_ISDIR(st.st_mode):
                    os.close(fd)
                    raise http.HttpError(409 if write else 404,
                                         f"{seg} is not a folder" if write else "not found")
                stack.append((fd, os.path.join(top_path, seg)))
        except OSError as exc:
            unwind()
            if link_fd >= 0:
                os.close(link_fd)
            raise fs_error(exc, write) from None
        except BaseException:
            unwind()
            if link_fd >= 0:
                os.close(link_fd)
            raise

    def _base_of(self, target: str):
        """(segments below it, path, fd) of the base (ROOT or an allowed folder)
        an absolute link target lies in, or None. Compared by segments: a
        ``..`` in the part that names the base never matches."""
        segs = [s for s in target.split("/") if s and s != "."]
        for base_segs, path, fd in self.bases:
            if segs[:len(base_segs)] == base_segs:
                return segs[len(base_segs):], path, fd
        return None


def _open_base(path: str) -> int:
    """ROOT or a --symlink-target folder, by its absolute path: where every
    walk starts, opened once per process before any request (``dir_fd=None``:
    no folder above it is ours to walk from)."""
    return os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=None)


def _segments_of(path: str) -> list[str]:
    return [s for s in path.split("/") if s]


def fs_error(exc: OSError, write: bool) -> http.HttpError:
    """The answer for a walk (or the open of what it reached) that the
    filesystem stopped: 403, 503 out of fds, 400/409 for a write, else 404."""
    if exc.errno in (errno.EACCES, errno.EPERM):
        return http.HttpError(403, "permission denied")
    if exc.errno in (errno.EMFILE, errno.ENFILE):
        return http.HttpError(503, "out of file descriptors", headers=[("Retry-After", "1")])
    if exc.errno == errno.ENAMETOOLONG:
        return http.HttpError(400 if write else 404, "a name in the path is too long")
    if write and exc.errno == errno.ENOTDIR:
        return http.HttpError(409, "a segment of the path is not a folder")
    if write and exc.errno == errno.ELOOP:
        return http.HttpError(403, "symbolic links cannot be written through")
    return http.HttpError(404, "not found")


def open_below(dir_fd: int, names: list[str]) -> int:
    """A readable fd of the folder ``names`` (plain entry names, as ``scandir`` gave them) below the
    folder ``dir_fd``, never through a symlink: one ``openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)``
    where the kernel has it, else one ``O_NOFOLLOW`` open per name from the previous one's fd. For the
    walks that go down a tree from a folder the root walk opened (the subtree search); raises OSError
    (ELOOP/ENOTDIR for a name swapped for a link or a file since it was read)."""
    if not names:
        return os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=dir_fd)
    for name in names:
        if not name or "/" in name or name in (".", ".."):
            raise OSError(errno.EINVAL, "not a plain name", name)
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
    if has_openat2(dir_fd):
        return _openat2(dir_fd, "/".join(names), flags,
                        _RESOLVE_BENEATH | _RESOLVE_NO_MAGICLINKS | _RESOLVE_NO_SYMLINKS)
    fd = dir_fd
    try:
        for i, name in enumerate(names):
            last = i == len(names) - 1
            step = os.open(name, (flags if last else os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC) | os.O_NOFOLLOW,
                           dir_fd=fd)
            if fd != dir_fd:
                os.close(fd)
            fd = step
        return fd
    except BaseException:
        if fd != dir_fd:
            os.close(fd)
        raise
