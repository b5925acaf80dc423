"""File management under ROOT: where a write may go, and the operations.

A write's path is walked like a read's (``zcopy.server.root``), from ROOT's
fd, with the same rules (symlinks, ``--symlink-target``, dotfiles, our temp
prefix, ``/.zcopy/``), except that the last segment is never followed: a
write acts on the name itself. ``write_target`` returns the folder's fd and
the name; every operation here is relative to that fd (``mkdirat``,
``openat``, ``linkat``, ``renameat`` with both folders' fds, ``unlinkat``,
``shutil.rmtree(dir_fd=...)``, which walks with fds too). Folders the path
needs and that do not exist are created one by one, each opened with
``O_NOFOLLOW`` relative to its parent; when the request then fails (a cut or
refused upload), the folders it created are removed again (``undo_parents``),
as far as they are still empty and no other upload is under way in them.

Uploads are atomic: the body goes into an unnamed ``O_TMPFILE`` inode in the
target folder (falling back to a named ``.zcopy-upload-*`` temp file where the
filesystem has no O_TMPFILE), is fsync'ed, given a temp name with linkat and
renamed over the target. A killed server leaves at most an unnamed inode that
the kernel frees, never a partial file under any name.

Each temp file is held with ``flock(LOCK_EX)`` while its upload runs; the
lock dies with the process. A folder's temp files that nobody holds and that
have not changed for ``STALE_AFTER`` seconds are removed when an upload into
that folder starts (at most once per ``STALE_AFTER`` per folder and worker).
They are left by a worker killed while its upload had a temp name: always on
the named fallback, and between linkat and rename with O_TMPFILE.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import stat as stat_mod
import time
import uuid

from zcopy import http
from zcopy.dav import deadprops
from zcopy.server.root import TEMP_PREFIX, Place, Root

__all__ = ["TEMP_PREFIX", "STALE_AFTER", "Target", "TempFile", "write_target", "make_parents", "undo_parents",
           "remove_stale_temps", "remove_entry", "delete", "move", "mkcol"]

STALE_AFTER = 60.0      # seconds without a write before an unheld temp file counts as left behind


class Target:
    """The entry a write names: ``place.name`` in the folder ``place.dir_fd``
    (below which ``place.missing`` folders may still have to be made).
    Owns fds: ``close()`` it."""

    def __init__(self, url: str, place: Place) -> None:
        self.url = url
        self.place = place
        self.created: list[tuple[int, str, int]] = []    # (parent fd, name, inode) of folders made here
        self.exists = False
        self.is_dir = False
        self.is_link = False
        if not place.missing:
            try:
                st = place.stat()
            except FileNotFoundError:
                pass
            else:
                self.exists = True
                self.is_dir = stat_mod.S_ISDIR(st.st_mode)
                self.is_link = stat_mod.S_ISLNK(st.st_mode)

    @property
    def path(self) -> str:
        """The path string (cache invalidation; never opened)."""
        return self.place.path

    @property
    def slashed(self) -> bool:
        """The URL ends with "/": it names a folder."""
        return self.url.endswith("/")

    def close(self) -> None:
        for parent_fd, _, _ in self.created:
            os.close(parent_fd)
        self.created = []
        self.place.close()

    def __enter__(self) -> "Target":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_target(root: Root, url_path: str) -> Target:
    target = Target(url_path, root.locate(url_path, write=True))
    if target.is_link and not _servable(root, url_path):
        # Replacing or removing a link is allowed only where the server would follow it.
        target.close()
        raise http.HttpError(403, "symbolic links cannot be written through")
    return target


def _servable(root: Root, url_path: str) -> bool:
    if not root.follow_symlinks:
        return False
    try:
        root.locate(url_path).close()
    except http.HttpError:
        return False
    return True


def make_parents(target: Target) -> None:
    """Create the missing folders, each relative to its parent's fd; the
    target's folder fd then is the innermost one."""
    place = target.place
    while place.missing:
        name = place.missing[0]
        made = False
        try:
            os.mkdir(name, 0o755, dir_fd=place.dir_fd)
            made = True
        except FileExistsError:
            pass                           # another request made it meanwhile: use it if it is a folder
        try:
            fd = os.open(name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=place.dir_fd)
        except OSError as exc:
            if made:        # not yet in ``created`` (EMFILE here): undo_parents would not know it
                try:
                    os.rmdir(name, dir_fd=place.dir_fd)
                except OSError:
                    pass
            if exc.errno in (errno.ENOTDIR, errno.ELOOP, errno.ENOENT):
                raise http.HttpError(409, f"{name} is not a folder") from None
            raise
        if made:
            target.created.append((place.dir_fd, name, os.fstat(fd).st_ino))
        else:
            os.close(place.dir_fd)
        place.dir_fd = fd
        place.folder = os.path.join(place.folder, name)
        place.missing.pop(0)


def undo_parents(target: Target) -> None:
    """Remove the folders ``make_parents`` created for this request, innermost
    first, as long as each is still the one it made, still empty, and no
    upload is under way in it (its O_TMPFILE is invisible, so "empty" does not
    say that: each upload holds a shared flock on its folder, see TempFile)."""
    while target.created:
        parent_fd, name, ino = target.created[-1]
        try:
            fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent_fd)
        except OSError as exc:
            if exc.errno not in (errno.EMFILE, errno.ENFILE):
                break                      # gone, or replaced by a link
            fd = -1                        # out of fds (why we are undoing, often): no lock to ask
        try:
            st = os.fstat(fd) if fd >= 0 else os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
            if st.st_ino != ino:
                break
            if fd >= 0:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.rmdir(name, dir_fd=parent_fd)
        except OSError:
            break                          # another upload in it, or not empty any more: leave the rest
        finally:
            if fd >= 0:
                os.close(fd)
        target.created.pop()
        os.close(parent_fd)


class TempFile:
    """An upload's destination until it is complete, in the folder ``folder_fd``."""

    def __init__(self, folder_fd: int) -> None:
        self.name: str | None = None      # set while the data has a (temp) name
        # Readable (fsync, scandir), unlike the walk's O_PATH fd; the very same folder.
        self.dir_fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=folder_fd)
        try:
            # Shared, until this upload ends: a cut upload that made this folder
            # leaves it while ours is under way (undo_parents). Held exclusively
            # only by an undo about to remove it: then this upload ends in 409.
            fcntl.flock(self.dir_fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            pass
        _sweep_if_due(self.dir_fd)
        try:
            self.fd = os.open(".", os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o644, dir_fd=self.dir_fd)
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                os.close(self.dir_fd)
                raise
            self.name = f"{TEMP_PREFIX}{uuid.uuid4().hex}"
            self.fd = os.open(self.name, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o644,
                              dir_fd=self.dir_fd)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)   # ours until closed, also once named
        except BlockingIOError:
            pass    # a sweeper looking at a file this new lets it be (it is not stale)

    @classmethod
    def adopt(cls, folder_fd: int, fd: int, name: str) -> "TempFile":
        """A temp file made elsewhere and already named ``name`` in the folder ``folder_fd`` (a
        completed resumable upload, zcopy.server.uploads): owns ``fd``; commits like any other."""
        self = cls.__new__(cls)
        self.name = name
        self.fd = fd
        self.dir_fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=folder_fd)
        return self

    def commit(self, target: str, *, fsync: bool = True, replace: bool = True, check=None) -> bool:
        """Make the data visible as ``target``, a name in the same folder;
        returns whether it replaced a file. ``replace=False``: a file that
        exists by then stays (linkat fails with EEXIST, atomically): 403.
        ``check()``: runs after the fsync, right before the name moves (the
        WebDAV lock and If check: a LOCK granted while the data synced is
        met); what it raises aborts the commit (the temp file goes)."""
        if fsync:
            os.fsync(self.fd)
        if check is not None:
            try:
                check()
            except BaseException:
                self.abort()
                raise
        if not replace:
            try:
                if self.name is None:
                    os.link(f"/proc/self/fd/{self.fd}", target, dst_dir_fd=self.dir_fd, follow_symlinks=True)
                else:
                    os.link(self.name, target, src_dir_fd=self.dir_fd, dst_dir_fd=self.dir_fd,
                            follow_symlinks=False)
            except FileExistsError:
                self.abort()
                raise http.HttpError(403, "a file appeared at this path; replacing it needs the d right") from None
            except OSError:
                self.abort()
                raise
            if fsync:
                os.fsync(self.dir_fd)
            self.abort()                # drops the temp name, if any; the data lives on as ``target``
            return False
        if self.name is None:
            self.name = f"{TEMP_PREFIX}{uuid.uuid4().hex}"
            # linkat(AT_SYMLINK_FOLLOW) on /proc/self/fd/N names an O_TMPFILE
            # inode (open(2)). CPython only uses linkat when a dir_fd is given.
            os.link(f"/proc/self/fd/{self.fd}", self.name, dst_dir_fd=self.dir_fd, follow_symlinks=True)
        try:
            os.stat(target, dir_fd=self.dir_fd, follow_symlinks=False)
            replaced = True
        except FileNotFoundError:
            replaced = False
        try:
            os.rename(self.name, target, src_dir_fd=self.dir_fd, dst_dir_fd=self.dir_fd)
        except OSError:
            self.abort()
            raise
        self.name = None
        if fsync:
            os.fsync(self.dir_fd)
        self._close()
        return replaced

    def abort(self) -> None:
        if self.name is not None:
            try:
                os.unlink(self.name, dir_fd=self.dir_fd)
            except FileNotFoundError:
                pass
            self.name = None
        self._close()

    def _close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self.dir_fd >= 0:
            os.close(self.dir_fd)
            self.dir_fd = -1


#: folder (st_dev, st_ino) -> monotonic time of its last sweep, in this process.
_swept: dict[tuple, float] = {}


def _sweep_if_due(dir_fd: int) -> None:
    st = os.fstat(dir_fd)
    folder = (st.st_dev, st.st_ino)
    now = time.monotonic()
    if now - _swept.get(folder, now - STALE_AFTER) < STALE_AFTER:
        return
    if len(_swept) > 4096:
        _swept.clear()
    _swept[folder] = now
    try:
        remove_stale_temps(dir_fd)
    except OSError:
        pass            # an unreadable folder: the upload itself will say what is wrong


def remove_stale_temps(dir_fd: int) -> list[str]:
    """Unlink the folder's temp files that no live upload holds and that have
    not been written for STALE_AFTER seconds; returns their names."""
    cutoff = time.time() - STALE_AFTER
    removed = []
    with os.scandir(dir_fd) as it:
        names = [d.name for d in it if d.name.startswith(TEMP_PREFIX)]
    for name in names:
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
        except OSError:
            continue
        try:
            if os.fstat(fd).st_mtime > cutoff:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue                      # an upload in progress holds it
            os.unlink(name, dir_fd=dir_fd)
            removed.append(name)
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed


def _closing(op):
    """The operation closes its Target arguments when done, whatever happens."""
    def run(*args, **kwargs):
        try:
            return op(*args, **kwargs)
        finally:
            for arg in args:
                if isinstance(arg, Target):
                    arg.close()
    run.__name__, run.__doc__, run.__wrapped__ = op.__name__, op.__doc__, op
    return run


def remove_entry(target: Target) -> list[str]:
    """Remove what ``target`` names, a folder with everything in it (fd-based:
    ``shutil.rmtree`` opens each folder with O_NOFOLLOW relative to its
    parent's fd). Returns the paths (relative to the target's folder) that
    could not be removed: empty when all went (RFC 4918 9.6.1's partial failure)."""
    place = target.place
    if not target.is_dir:
        os.unlink(place.name, dir_fd=place.dir_fd)
        return []
    failed: list[str] = []

    def onerror(func, path, exc_info) -> None:
        failed.append(path)

    shutil.rmtree(place.name, dir_fd=place.dir_fd, onerror=onerror)
    return failed


@_closing
def delete(target: Target, recursive: bool) -> list[str]:
    """Remove the target (a folder only when ``recursive`` or empty); the
    members that could not be removed (``remove_entry``)."""
    if not target.exists or (target.slashed and not target.is_dir):
        raise http.HttpError(404, "not found")
    place = target.place
    if target.is_dir:
        if recursive:
            return remove_entry(target)
        else:
            try:
                os.rmdir(place.name, dir_fd=place.dir_fd)
            except OSError as exc:
                if exc.errno == errno.ENOTEMPTY:
                    raise http.HttpError(409, "folder is not empty (use ?recursive=1)") from None
                raise
    else:
        os.unlink(place.name, dir_fd=place.dir_fd)
    return []


@_closing
def move(source: Target, dest: Target, overwrite: bool, *, parents: bool = True) -> bool:
    """Rename (renameat with both folders' fds); returns whether something was replaced."""
    if not source.exists or (source.slashed and not source.is_dir):
        raise http.HttpError(404, "not found")
    src, dst = http.normalised(source.url), http.normalised(dest.url)
    if src == dst:
        raise http.HttpError(403, "source and destination are the same")
    if dst.startswith(src + "/"):
        raise http.HttpError(409, "cannot move a folder into itself")
    if dest.slashed and not source.is_dir and not (dest.is_dir and overwrite):
        raise http.HttpError(400, "a file cannot be moved to a folder path (ending in /)")
    if dest.exists and not overwrite:
        raise http.HttpError(412, "destination exists and Overwrite is F")
    replaced = dest.exists
    if dest.place.missing and not parents:
        raise http.HttpError(409, "the destination's parent folder does not exist")
    if dest.exists and (dest.is_dir or source.is_dir):
        # RFC 4918 9.9.3: Overwrite T deletes the destination first (a rename cannot replace a folder
        # with a file, or a non-empty folder).
        if remove_entry(dest):
            raise http.HttpError(409, "the destination could not be removed entirely")
    try:
        make_parents(dest)
        src_dir, dst_dir = os.fstat(source.place.dir_fd), os.fstat(dest.place.dir_fd)
        if (src_dir.st_dev, src_dir.st_ino) != (dst_dir.st_dev, dst_dir.st_ino):
            # Its dead properties go along: the destination folder notes that it holds some.
            deadprops.carry_mark(source.place.dir_fd, source.place.name, dest.place.dir_fd)
        os.rename(source.place.name, dest.place.name, src_dir_fd=source.place.dir_fd, dst_dir_fd=dest.place.dir_fd)
        if replaced and not source.is_dir:
            _unlink_if_same(source.place, dest.place)
    except BaseException as exc:
        undo_parents(dest)
        if isinstance(exc, OSError) and exc.errno in (errno.ENOTEMPTY, errno.EISDIR, errno.ENOTDIR, errno.EEXIST,
                                                      errno.EINVAL):
            raise http.HttpError(409, f"cannot replace: {exc.strerror}") from None
        raise
    return replaced


def _unlink_if_same(source: Place, dest: Place) -> None:
    """rename(2) does nothing, and succeeds, when both names are hard links
    of one file: the source must still go for the MOVE to have happened."""
    try:
        st = os.stat(source.name, dir_fd=source.dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return                              # the usual case: renamed away
    dst = os.stat(dest.name, dir_fd=dest.dir_fd, follow_symlinks=False)
    if (st.st_dev, st.st_ino) == (dst.st_dev, dst.st_ino):
        os.unlink(source.name, dir_fd=source.dir_fd)


@_closing
def mkcol(target: Target) -> None:
    if target.exists:
        raise http.HttpError(405, "already exists", headers=[("Allow", "GET, HEAD, PUT, DELETE, MOVE")])
    if target.place.missing:
        raise http.HttpError(409, "parent folder does not exist")
    os.mkdir(target.place.name, 0o755, dir_fd=target.place.dir_fd)
