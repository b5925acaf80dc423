"""``zcopy seal``: encrypt a folder's files in place, for publishing.

Each regular file NAME becomes NAME.age, and no reader ever sees a half
written NAME.age or loses NAME without a whole NAME.age beside it:

1. encrypt into a hidden temp file in the same folder, fsync it;
2. ``link`` it to NAME.age - atomic, and it fails instead of replacing a
   NAME.age that already exists (which is then left alone and reported);
3. unlink the temp name, fsync the folder, and only then remove NAME - if
   NAME still is the file that was sealed: NAME is renamed to a hidden temp
   name (taking, atomically, whatever it is at that instant), which must
   show the same device, inode, size and mtime, and is then unlinked. If an
   upload or an editor replaced or changed it meanwhile, it is put back
   (link(2), never over a newer NAME), both NAME and NAME.age are kept, and
   the file is reported as failed (exit 1).

A crash leaves at worst a hidden ``.NAME.*.sealing`` temp file (later runs
skip it; delete it by hand) or both NAME and NAME.age, never neither. Files
already ending in ``.age``, symlinks and special files are skipped; symlinked
folders are not followed, and each folder is opened once (``os.fwalk``) so
its files are sealed relative to its fd, never by a path that a symlink
swapped in after the walk listed it could redirect.
"""

from __future__ import annotations

import errno
import os
import stat
import secrets
from dataclasses import dataclass, field

from zcopy.client.crypto import encrypt_stream
from zcopy.client.errors import ClientError
from zcopy.client.names import shown

SUFFIX = ".age"
TEMP_SUFFIX = ".sealing"


@dataclass
class SealReport:
    sealed: list[str] = field(default_factory=list)
    bytes_in: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)   # (path, why)
    failed: list[tuple[str, str]] = field(default_factory=list)    # (path, error)


def seal_tree(root: str, encrypt: dict, on_file=None) -> SealReport:
    """Seal every file under ``root``; ``on_file(path)`` is called before each.

    The tree is walked with ``os.fwalk``: each folder is opened once, below
    its parent's fd and without following symlinks, and its files are
    sealed relative to that fd. A sub-folder swapped for a symlink after it
    was listed therefore cannot send the seal (and its unlink) elsewhere."""
    try:
        rootfd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)   # ROOT itself may be a symlink
    except OSError:
        raise ClientError(f"{shown(root)} is not a folder") from None
    report = SealReport()
    try:
        _seal_walk(root, rootfd, encrypt, on_file, report)
    finally:
        os.close(rootfd)
    return report


def _seal_walk(root: str, rootfd: int, encrypt: dict, on_file, report: SealReport) -> None:
    for folder, dirs, files, dirfd in os.fwalk(".", dir_fd=rootfd):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(root, folder[2:], name)         # folder: "." or "./sub/..."
            why = _skip_reason(dirfd, name)
            if why:
                report.skipped.append((path, why))
                continue
            if on_file:
                on_file(path)
            try:
                report.bytes_in += seal_file(dirfd, name, encrypt)
                report.sealed.append(path)
            except (OSError, ClientError) as exc:
                report.failed.append((path, getattr(exc, "strerror", None) or str(exc)))


def _skip_reason(dirfd: int, name: str) -> str | None:
    if name.endswith(SUFFIX):
        return "already .age"
    if name.endswith(TEMP_SUFFIX) and name.startswith("."):
        return "seal temp file"
    st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if _exists(dirfd, name + SUFFIX):
        return f"{name}{SUFFIX} exists"
    return None


def _exists(dirfd: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=dirfd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def seal_file(dirfd: int, name: str, encrypt: dict) -> int:
    """Encrypt ``name`` in the folder ``dirfd`` to ``name.age`` atomically,
    then remove ``name`` - unless the name no longer points to the file that
    was sealed (replaced, or changed in place, meanwhile): then both are
    kept and a ClientError says so. Every step is relative to the folder's
    fd. Returns the plaintext size."""
    src = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dirfd)
    with open(src, "rb", buffering=0) as f:
        st = os.fstat(src)
        if not stat.S_ISREG(st.st_mode):
            raise ClientError("not a regular file")
        _encrypt_beside(dirfd, f, st, name, encrypt)
    _fsync_dir(dirfd)
    _remove_if_same(dirfd, name, st)
    _fsync_dir(dirfd)
    return st.st_size


def _remove_if_same(dirfd: int, name: str, st: os.stat_result) -> None:
    """Remove ``name`` if it still is the file ``st`` describes. The name is
    first renamed to a hidden temp name - atomically taking whatever it
    points to at that instant - and that is compared; checking the name and
    then unlinking it would delete a version renamed over it in between.
    A different file is put back with link(2), which never replaces a
    newer one that appeared meanwhile (then it stays under the temp name)."""
    aside = _temp_name(name)
    os.rename(name, aside, src_dir_fd=dirfd, dst_dir_fd=dirfd)
    taken = os.stat(aside, dir_fd=dirfd, follow_symlinks=False)
    if _identity(taken) == _identity(st):
        os.unlink(aside, dir_fd=dirfd)
        return
    kept = f"kept both {shown(name)} and {shown(name + SUFFIX)}"
    try:
        if stat.S_ISDIR(taken.st_mode):           # a folder made at NAME meanwhile: no link(2) for it
            if _exists(dirfd, name):
                raise FileExistsError
            os.rename(aside, name, src_dir_fd=dirfd, dst_dir_fd=dirfd)
        else:
            os.link(aside, name, src_dir_fd=dirfd, dst_dir_fd=dirfd, follow_symlinks=False)
            os.unlink(aside, dir_fd=dirfd)
    except FileExistsError:
        kept = f"kept it as {shown(aside)} ({shown(name)} is newer still), and {shown(name + SUFFIX)}"
    raise ClientError(f"changed while it was being sealed; {kept}")


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
            raise ClientError(f"{shown(name + SUFFIX)} appeared meanwhile; left alone") from None
    finally:
        os.unlink(temp, dir_fd=dirfd)


def _temp_name(name: str) -> str:
    """A hidden name beside ``name`` that later seals skip; ``name`` is cut to
    200 bytes so that any NAME whose NAME.age fits has a temp name too."""
    short = os.fsdecode(os.fsencode(name)[:200])
    return f".{short}.{secrets.token_hex(8)}{TEMP_SUFFIX}"


def _temp_file(dirfd: int, name: str) -> tuple[int, str]:
    for _ in range(100):
        temp = _temp_name(name)
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
