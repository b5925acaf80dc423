"""``zcopy seal``: encrypt a folder's files in place, for publishing.

Each regular file NAME becomes NAME.age, and no reader ever sees a half
written NAME.age or loses NAME without a whole NAME.age beside it:

1. encrypt into a hidden temp file in the same folder, fsync it;
2. ``link`` it to NAME.age - atomic, and it fails instead of replacing a
   NAME.age that already exists (which is then left alone and reported);
3. unlink the temp name, fsync the folder, and only then unlink NAME - if
   NAME still is the file that was sealed (fstatat on the folder's fd right
   before unlinkat: same device, inode, size and mtime). If an upload or an
   editor replaced or changed it meanwhile, both NAME and NAME.age are kept
   and the file is reported as failed (exit 1).

A crash leaves at worst a hidden ``.NAME.*.sealing`` temp file (later runs
skip it; delete it by hand) or both NAME and NAME.age, never neither. Files
already ending in ``.age``, symlinks and special files are skipped; symlinked
folders are not followed.
"""

from __future__ import annotations

import errno
import os
import stat
import secrets
from dataclasses import dataclass, field

from zcopy.client.crypto import encrypt_stream
from zcopy.client.errors import ClientError

SUFFIX = ".age"
TEMP_SUFFIX = ".sealing"


@dataclass
class SealReport:
    sealed: list[str] = field(default_factory=list)
    bytes_in: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)   # (path, why)
    failed: list[tuple[str, str]] = field(default_factory=list)    # (path, error)


def seal_tree(root: str, encrypt: dict, on_file=None) -> SealReport:
    """Seal every file under ``root``; ``on_file(path)`` is called before each."""
    if not os.path.isdir(root):
        raise ClientError(f"{root} is not a folder")
    report = SealReport()
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(folder, name)
            why = _skip_reason(path, name)
            if why:
                report.skipped.append((path, why))
                continue
            if on_file:
                on_file(path)
            try:
                report.bytes_in += seal_file(path, encrypt)
                report.sealed.append(path)
            except (OSError, ClientError) as exc:
                report.failed.append((path, getattr(exc, "strerror", None) or str(exc)))
    return report


def _skip_reason(path: str, name: str) -> str | None:
    if name.endswith(SUFFIX):
        return "already .age"
    if name.endswith(TEMP_SUFFIX) and name.startswith("."):
        return "seal temp file"
    st = os.lstat(path)
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if os.path.lexists(path + SUFFIX):
        return f"{name}{SUFFIX} exists"
    return None


def seal_file(path: str, encrypt: dict) -> int:
    """Encrypt ``path`` to ``path.age`` atomically, then remove ``path`` -
    unless the name no longer points to the file that was sealed (replaced,
    or changed in place, meanwhile): then both are kept and a ClientError
    says so. Every step is relative to the folder's fd. Returns the
    plaintext size."""
    folder, name = os.path.split(path)
    dirfd = os.open(folder or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        src = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dirfd)
        with open(src, "rb", buffering=0) as f:
            st = os.fstat(src)
            if not stat.S_ISREG(st.st_mode):
                raise ClientError("not a regular file")
            _encrypt_beside(dirfd, f, st, name, encrypt)
        _fsync_dir(dirfd)
        now = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
        if _identity(now) != _identity(st):
            raise ClientError(f"changed while it was being sealed; kept both {name} and {name}{SUFFIX}")
        os.unlink(name, dir_fd=dirfd)
        _fsync_dir(dirfd)
    finally:
        os.close(dirfd)
    return st.st_size


def _identity(st: os.stat_result) -> tuple:
    """What says "the same file, unchanged": device, inode, size, mtime."""
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def _encrypt_beside(dirfd: int, src, st: os.stat_result, name: str, encrypt: dict) -> None:
    """Encrypt into a hidden temp file, fsync it, then link it to NAME.age
    (which fails rather than replace one that appeared meanwhile)."""
    fd, temp = _temp_file(dirfd, name)
    try:
        with os.fdopen(fd, "wb") as out:
            encrypt_stream(src, out, **encrypt)
            out.flush()
            os.fchmod(out.fileno(), stat.S_IMODE(st.st_mode))
            os.fsync(out.fileno())
        try:
            os.link(temp, name + SUFFIX, src_dir_fd=dirfd, dst_dir_fd=dirfd, follow_symlinks=False)
        except FileExistsError:
            raise ClientError(f"{name}{SUFFIX} appeared meanwhile; left alone") from None
    finally:
        os.unlink(temp, dir_fd=dirfd)


def _temp_file(dirfd: int, name: str) -> tuple[int, str]:
    for _ in range(100):
        temp = f".{name}.{secrets.token_hex(4)}{TEMP_SUFFIX}"
        try:
            return os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                           0o600, dir_fd=dirfd), temp
        except FileExistsError:
            continue
    raise ClientError("cannot create a temp file beside it")


def _fsync_dir(dirfd: int) -> None:
    try:
        os.fsync(dirfd)
    except OSError as exc:
        if exc.errno != errno.EINVAL:  # some file systems cannot fsync a folder
            raise
