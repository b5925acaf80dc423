"""``FILE.part``: the file a download writes before it becomes ``FILE``.

Everything happens relative to the target folder's fd, on a file this run
can vouch for:

- it is opened with O_NOFOLLOW: a symlink planted at ``FILE.part`` is
  refused, never written through (nor renamed into place later);
- a new one is created with O_EXCL, so it is the file this run created; an
  existing one (to resume) must be a regular file with one link, and is
  never created again: no O_CREAT when resuming, so a ``.part`` renamed away
  meanwhile cannot come back as a sparse file;
- it is locked with flock(2) for the whole download: a second ``zcopy get``
  into the same output is refused in one line instead of interleaving;
- before the rename, the name must still point to the inode that was
  written (dev, ino), and its length must be the announced one.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat

from zcopy.client.errors import ClientError
from zcopy.client.names import shown

VALIDATOR_XATTR = "user.zcopy.etag"
_OPEN = os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK   # NONBLOCK: a FIFO must not hang us


class Partial:
    """An open, locked ``NAME.part`` in the folder ``dirfd``."""

    def __init__(self, dirfd: int, out_name: str, folder: str) -> None:
        self.dirfd = dirfd
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
            self._lock(fd)
            self._check_named(fd, "changed while it was being opened; try again")
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
        """Verify and rename to the output name; returns the size. Without
        ``replace``, an output that appeared meanwhile is kept (and so is the
        ``.part``)."""
        size = os.fstat(self.fd).st_size
        if expected is not None and size != expected:
            raise ClientError(f"length mismatch: expected {expected} bytes, have {size} in {self.shown}")
        self._check_named(self.fd, "was moved or replaced during the download; nothing saved")
        try:
            os.removexattr(self.fd, VALIDATOR_XATTR)
        except OSError:
            pass
        if replace:
            os.rename(self.name, self.out_name, src_dir_fd=self.dirfd, dst_dir_fd=self.dirfd)
            return size
        try:                                      # link(2) never replaces: atomic no-clobber
            os.link(self.name, self.out_name, src_dir_fd=self.dirfd, dst_dir_fd=self.dirfd,
                    follow_symlinks=False)
        except FileExistsError:
            raise ClientError(f"{self.shown_out} appeared during the download; kept the download "
                              f"in {self.shown} (use --force to replace)") from None
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK):
                raise
            if output_exists(self.dirfd, self.out_name):   # no hard links here (vfat...)
                raise ClientError(f"{self.shown_out} appeared during the download; kept the download "
                                  f"in {self.shown} (use --force to replace)") from None
            os.rename(self.name, self.out_name, src_dir_fd=self.dirfd, dst_dir_fd=self.dirfd)
            return size
        os.unlink(self.name, dir_fd=self.dirfd)
        return size


def output_exists(dirfd: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=dirfd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True
