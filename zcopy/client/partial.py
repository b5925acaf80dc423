"""``FILE.part``: the file a download writes before it becomes ``FILE``.

Everything happens relative to the target folder's fd, on a file this run
can vouch for:

- it is opened with O_NOFOLLOW: a symlink planted at ``FILE.part`` is
  refused, never written through (nor renamed into place later);
- a new one is created with O_EXCL, so it is the file this run created; an
  existing one (to resume) must be a regular file with one link, owned by
  this user (another user could have planted it with their own first bytes
  and the remote file's validator, and could still write to it), and is
  never created again: no O_CREAT when resuming, so a ``.part`` renamed away
  meanwhile cannot come back as a sparse file. A new one is marked
  (``user.zcopy.part``, removed when it becomes FILE); an existing one with
  bytes but no mark is someone's file that merely has the name (a finished
  download of ``NAME.part``...): it is not truncated without ``--force``;
- it is locked with flock(2) for the whole download: a second ``zcopy get``
  into the same output is refused in one line instead of interleaving;
- before the rename, the name must still point to the inode that was
  written (dev, ino), and its length must be the announced one; the inode
  itself (``/proc/self/fd/N``), not the name, is then linked into place.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat

from zcopy.client.errors import ClientError
from zcopy.client.names import shown

VALIDATOR_XATTR = "user.zcopy.etag"
MARK_XATTR = "user.zcopy.part"          # "zcopy get created this FILE.part": set on creation, removed at the end
_OPEN = os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK   # NONBLOCK: a FIFO must not hang us


class Partial:
    """An open, locked ``NAME.part`` in the folder ``dirfd``."""

    def __init__(self, dirfd: int, out_name: str, folder: str, *, force: bool = False) -> None:
        self.dirfd = dirfd
        self.force = force
        self.out_name = out_name
        self.name = out_name + ".part"
        self.shown = shown(os.path.join(folder, self.name))
        self.shown_out = shown(os.path.join(folder, out_name))
        self.fd = -1
        self.fd = self._open_existing()
        self.existed = self.fd >= 0
        if not self.existed:
            self.fd = self._create()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)                     # also releases the lock
            self.fd = -1

    def __enter__(self) -> "Partial":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- opening -------------------------------------------------------------
    def _open_existing(self) -> int:
        try:
            fd = os.open(self.name, _OPEN, dir_fd=self.dirfd)
        except FileNotFoundError:
            return -1
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise ClientError(f"{self.shown} is a symbolic link; not following it "
                                  f"(remove it to download again)") from None
            raise
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise ClientError(f"{self.shown} is not a regular file; remove it to download again")
            if st.st_nlink != 1:
                raise ClientError(f"{self.shown} has other hard links; remove it to download again")
            if st.st_uid != os.geteuid():
                raise ClientError(f"{self.shown} is owned by another user; not resuming it "
                                  f"(remove it to download again)")
            self._lock(fd)
            self._check_named(fd, "changed while it was being opened; try again")
            if st.st_size and not self.force and not _has_xattr(fd, MARK_XATTR):
                raise ClientError(f"{self.shown} holds bytes that zcopy get cannot resume (it did not "
                                  f"leave them, or user xattrs are off here); remove it, or use --force "
                                  f"to start over")
            os.set_blocking(fd, True)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _create(self) -> int:
        try:
            fd = os.open(self.name, _OPEN | os.O_CREAT | os.O_EXCL, 0o666, dir_fd=self.dirfd)
        except FileExistsError:
            raise ClientError(f"{self.shown} was just created by someone else "
                              f"(another zcopy get?); try again") from None
        try:
            self._lock(fd)
            os.set_blocking(fd, True)
        except BaseException:
            os.close(fd)
            raise
        try:
            os.setxattr(fd, MARK_XATTR, b"1")
        except OSError:
            pass  # no user xattrs here: an interrupted download restarts only with --force
        return fd

    def _lock(self, fd: int) -> None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ClientError(f"{self.shown} is in use by another zcopy get") from None

    def _check_named(self, fd: int, what: str) -> None:
        """The name still points to the inode open as ``fd``."""
        mine = os.fstat(fd)
        try:
            now = os.stat(self.name, dir_fd=self.dirfd, follow_symlinks=False)
        except FileNotFoundError:
            now = None
        if now is None or (now.st_dev, now.st_ino) != (mine.st_dev, mine.st_ino):
            raise ClientError(f"{self.shown} {what}")

    # -- resume --------------------------------------------------------------
    def resume_point(self) -> tuple[int, str | None]:
        """(bytes already there, their validator); (0, None) when they cannot be trusted."""
        if not self.existed:
            return 0, None
        size = os.fstat(self.fd).st_size
        try:
            validator = os.getxattr(self.fd, VALIDATOR_XATTR).decode("latin-1")
        except OSError:
            return 0, None
        return (size, validator) if size and validator else (0, None)

    def start_over(self) -> None:
        os.ftruncate(self.fd, 0)

    def remember(self, validator: str | None) -> None:
        """Store the validator of the version being written (before its first byte)."""
        try:
            if validator:
                os.setxattr(self.fd, VALIDATOR_XATTR, validator.encode("latin-1"))
            else:
                os.removexattr(self.fd, VALIDATOR_XATTR)
        except OSError:
            pass  # no user xattrs here: a later run simply starts over

    # -- ending --------------------------------------------------------------
    def discard(self) -> None:
        """Remove the partial file if the name is still this run's file."""
        try:
            self._check_named(self.fd, "")
        except ClientError:
            return
        os.unlink(self.name, dir_fd=self.dirfd)

    def commit(self, expected: int | None, *, replace: bool) -> int:
        """Verify and put the written inode in place as the output name;
        returns the size. Without ``replace``, an output that appeared
        meanwhile is kept (and so is the ``.part``).

        Without ``replace`` the inode open as ``fd`` is linked by
        ``/proc/self/fd`` (never whatever ``FILE.part`` names by then); a
        rename can only take a name, so after it the output must be that
        inode, or the run fails saying so."""
        size = os.fstat(self.fd).st_size
        if expected is not None and size != expected:
            raise ClientError(f"length mismatch: expected {expected} bytes, have {size} in {self.shown}")
        self._check_named(self.fd, "was moved or replaced during the download; nothing saved")
        if not replace:
            try:                                  # link(2) never replaces: atomic no-clobber
                self._link_written()
            except FileExistsError:
                raise ClientError(f"{self.shown_out} appeared during the download; kept the download "
                                  f"in {self.shown} (use --force to replace)") from None
            except FileNotFoundError:             # no name left for the inode: unlinked or renamed over
                raise ClientError(f"{self.shown} was removed or replaced just before it was put in place; "
                                  f"nothing saved") from None
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK):
                    raise
                if output_exists(self.dirfd, self.out_name):   # no hard links here (vfat...)
                    raise ClientError(f"{self.shown_out} appeared during the download; kept the download "
                                      f"in {self.shown} (use --force to replace)") from None
            else:
                self._unmark()
                self.discard()                    # FILE.part, if that name is still ours
                return size
        os.rename(self.name, self.out_name, src_dir_fd=self.dirfd, dst_dir_fd=self.dirfd)
        mine, now = os.fstat(self.fd), os.stat(self.out_name, dir_fd=self.dirfd, follow_symlinks=False)
        if (now.st_dev, now.st_ino) != (mine.st_dev, mine.st_ino):
            raise ClientError(f"{self.shown} was replaced during the final rename; "
                              f"{self.shown_out} is not the download")
        self._unmark()
        return size

    def _unmark(self) -> None:
        """FILE is not a partial file any more: no validator, no mark."""
        for name in (VALIDATOR_XATTR, MARK_XATTR):
            try:
                os.removexattr(self.fd, name)
            except OSError:
                pass

    def _link_written(self) -> None:
        """link(2) the inode open as ``fd`` to the output name."""
        if os.path.isdir("/proc/self/fd"):
            os.link(f"/proc/self/fd/{self.fd}", self.out_name, dst_dir_fd=self.dirfd, follow_symlinks=True)
        else:                                     # no /proc: the name, checked just before
            os.link(self.name, self.out_name, src_dir_fd=self.dirfd, dst_dir_fd=self.dirfd,
                    follow_symlinks=False)


def _has_xattr(fd: int, name: str) -> bool:
    try:
        os.getxattr(fd, name)
    except OSError:
        return False
    return True


def output_exists(dirfd: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=dirfd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True
