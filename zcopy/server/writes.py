"""File management under ROOT: where a write may go, and the operations.

Reads use ``zcopy.http.resolve_path``, which needs the path to exist. A
write names a path that may not exist yet, so ``write_target`` walks it one
segment at a time from ROOT with ``lstat``: a segment that is a symlink (unless
--follow-symlinks and it stays inside ROOT), a dotfile (unless --show-hidden),
our own temp prefix, ``.``/``..`` or a NUL is refused before anything is
created. The same check guards the source and the Destination of MOVE.

Uploads are atomic: the body goes into an unnamed ``O_TMPFILE`` inode in the
target folder (falling back to a named ``.zcopy-upload-*`` temp file where the
filesystem has no O_TMPFILE), is fsync'ed, given a temp name with linkat and
renamed over the target. A killed server leaves at most an unnamed inode that
the kernel frees, never a partial file under any name.

Each temp file is held with ``flock(LOCK_EX)`` while its upload runs; the
lock dies with the process. A folder's temp files that nobody holds and that
have not changed for ``STALE_AFTER`` seconds are removed when an upload into
that folder commits, off the event loop with the commit (at most once per ``STALE_AFTER`` per folder and worker).
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
from dataclasses import dataclass

from zcopy import http

TEMP_PREFIX = ".zcopy-upload-"
STALE_AFTER = 60.0      # seconds without a write before an unheld temp file counts as left behind


@dataclass
class Target:
    path: str                 # absolute filesystem path inside root
    missing: list[str]        # folders to create (outermost first) before writing
    exists: bool              # the final segment exists now


def write_target(root: str, url_path: str, *, follow_symlinks: bool = False, show_hidden: bool = False) -> Target:
    segments = [s for s in url_path.split("/") if s]
    if not segments:
        raise http.HttpError(403, "the root folder itself cannot be written")
    path = root
    missing: list[str] = []            # parent folders that do not exist yet
    for i, seg in enumerate(segments):
        if seg in (".", "..") or "\x00" in seg or "\\" in seg:
            raise http.HttpError(400, f"invalid path segment {seg!r}")
        if seg.startswith(TEMP_PREFIX) or (seg.startswith(".") and not show_hidden):
            raise http.HttpError(403, "hidden names cannot be written")
        path = os.path.join(path, seg)
        last = i == len(segments) - 1
        if missing:                    # under a missing folder: missing too
            if not last:
                missing.append(path)
            continue
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            if not last:
                missing.append(path)
            continue
        if stat_mod.S_ISLNK(st.st_mode):
            real = os.path.realpath(path)
            if not follow_symlinks or not (real == root or real.startswith(root + os.sep)):
                raise http.HttpError(403, "symbolic links cannot be written through")
        if not last and not os.path.isdir(path):
            raise http.HttpError(409, f"{'/'.join(segments[:i + 1])} is not a folder")
    exists = not missing and os.path.lexists(path)
    return Target(path, missing, exists)


def make_parents(target: Target) -> None:
    for folder in target.missing:
        try:
            os.mkdir(folder, 0o755)
        except FileExistsError:
            if not os.path.isdir(folder):
                raise http.HttpError(409, f"{folder} is not a folder") from None


class TempFile:
    """An upload's destination until it is complete."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.name: str | None = None      # set while the data has a (temp) name
        self.dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
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

    def commit(self, target: str, *, fsync: bool = True) -> bool:
        """Make the data visible at ``target``; returns whether it replaced a file."""
        if fsync:
            os.fsync(self.fd)
        if self.name is None:
            self.name = f"{TEMP_PREFIX}{uuid.uuid4().hex}"
            # linkat(AT_SYMLINK_FOLLOW) on /proc/self/fd/N names an O_TMPFILE
            # inode (open(2)). CPython only uses linkat when a dir_fd is given.
            os.link(f"/proc/self/fd/{self.fd}", self.name, dst_dir_fd=self.dir_fd, follow_symlinks=True)
        replaced = os.path.lexists(target)
        try:
            os.rename(self.name, target, src_dir_fd=self.dir_fd)
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


#: folder -> monotonic time of its last sweep, in this process.
_swept: dict[str, float] = {}


def sweep_if_due(folder: str, dir_fd: int) -> None:
    """Remove the folder's stale temp files (``remove_stale_temps``) unless this
    process did within STALE_AFTER. A scan of the folder: run it off the loop."""
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


def delete(target: Target, recursive: bool) -> None:
    if not target.exists:
        raise http.HttpError(404, "not found")
    if os.path.isdir(target.path) and not os.path.islink(target.path):
        if recursive:
            shutil.rmtree(target.path)
        else:
            try:
                os.rmdir(target.path)
            except OSError as exc:
                if exc.errno == errno.ENOTEMPTY:
                    raise http.HttpError(409, "folder is not empty (use ?recursive=1)") from None
                raise
    else:
        os.unlink(target.path)


def move(source: Target, dest: Target, overwrite: bool) -> bool:
    """Rename; returns whether something was replaced."""
    if not source.exists:
        raise http.HttpError(404, "not found")
    if source.path == dest.path:
        raise http.HttpError(403, "source and destination are the same")
    if dest.path.startswith(source.path + os.sep):
        raise http.HttpError(409, "cannot move a folder into itself")
    if dest.exists and not overwrite:
        raise http.HttpError(412, "destination exists and Overwrite is F")
    make_parents(dest)
    replaced = dest.exists
    try:
        os.rename(source.path, dest.path)
    except OSError as exc:
        if exc.errno in (errno.ENOTEMPTY, errno.EISDIR, errno.ENOTDIR, errno.EEXIST):
            raise http.HttpError(409, f"cannot replace: {exc.strerror}") from None
        raise
    return replaced


def mkcol(target: Target) -> None:
    if target.exists:
        raise http.HttpError(405, "already exists", headers=[("Allow", "GET, HEAD, PUT, DELETE, MOVE")])
    if target.missing:
        raise http.HttpError(409, "parent folder does not exist")
    os.mkdir(target.path, 0o755)
