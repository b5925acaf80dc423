"""``zcopy seal``: encrypt a folder's files in place, for publishing.

Each regular file NAME becomes NAME.age, and no reader ever sees a half
written NAME.age or loses NAME without a whole NAME.age beside it:

1. encrypt into a hidden temp file in the same folder, fsync it;
2. ``link`` it to NAME.age - atomic, and it fails instead of replacing a
   NAME.age that already exists (which is then left alone and reported);
3. unlink the temp name, fsync the folder, and only then unlink NAME.

A crash leaves at worst a hidden ``.NAME.*.sealing`` temp file (later runs
skip it; delete it by hand) or both NAME and NAME.age, never neither. Files already ending in ``.age``, symlinks and special files are
skipped; symlinked folders are not followed.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
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
    """Encrypt ``path`` to ``path.age`` atomically, then remove ``path``.
    Returns the plaintext size."""
    folder, name = os.path.split(path)
    with open(path, "rb", buffering=0) as src:
        st = os.fstat(src.fileno())
        fd, temp = tempfile.mkstemp(prefix=f".{name}.", suffix=TEMP_SUFFIX, dir=folder or ".")
        try:
            with os.fdopen(fd, "wb") as out:
                encrypt_stream(src, out, **encrypt)
                out.flush()
                os.fchmod(out.fileno(), stat.S_IMODE(st.st_mode))
                os.fsync(out.fileno())
            try:
                os.link(temp, path + SUFFIX)
            except FileExistsError:
                raise ClientError(f"{name}{SUFFIX} appeared meanwhile; left alone") from None
        finally:
            os.unlink(temp)
    _fsync_dir(folder or ".")
    os.unlink(path)
    _fsync_dir(folder or ".")
    return st.st_size


def _fsync_dir(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno != errno.EINVAL:  # some file systems cannot fsync a folder
            raise
    finally:
        os.close(fd)
