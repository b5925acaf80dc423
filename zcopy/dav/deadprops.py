"""Dead properties (PROPPATCH) kept with the file, in ``user.*`` extended attributes.

Each property is one attribute, named ``user.zcopy.dav.<16 hex digits of SHA-256(namespace NUL name)>``
(attribute names are short and of one shape whatever the property's name), holding
``namespace NUL name NUL xml``, the element as the client sent it. Kept with the inode, they go along
with MOVE (a rename keeps the inode) and are copied by COPY (``copy``: copy_file_range copies no
attributes). Every call takes an open fd, never a path.

A PROPPATCH is all or nothing (RFC 4918 9.2): ``apply`` sets and removes in order, and on the first
failure puts back what it had changed and reports which property failed and why (507 when the
filesystem's attribute space is full: ext4 keeps all of a file's attributes in one block, about 4 KiB).

A folder some member of which zcopy gave dead properties carries ``MARK`` (``mark``: set by PROPPATCH,
COPY and MOVE before the member gets them, never removed), so that a Depth 1 PROPFIND asks only the
members of marked folders for their attributes (an open and an ``flistxattr`` each, dearer than the
member's ``fstatat``); docs/webdav.md says what the mark does not cover.

Where the filesystem has no user xattrs (``ENOTSUP``: some FUSE and network filesystems, or tmpfs on
old kernels) dead properties are refused with 403 and ``supported`` says so; the live properties work
everywhere.
"""

from __future__ import annotations

import errno
import hashlib
import os

from zcopy.dav.xmlbody import PropChange

PREFIX = "user.zcopy.dav."
#: On a folder: some member may have dead properties (not itself a dead property: not under PREFIX).
MARK = "user.zcopy.davmembers"
MAX_VALUE = 16 * 1024
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_ENTRY = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC


class DeadPropError(Exception):
    def __init__(self, name: tuple[str, str], status: int, message: str) -> None:
        super().__init__(message)
        self.name = name
        self.status = status


def attr_name(name: tuple[str, str]) -> str:
    ns, local = name
    return PREFIX + hashlib.sha256(f"{ns}\0{local}".encode()).hexdigest()[:16]


def _decode(value: bytes) -> tuple[tuple[str, str], bytes] | None:
    parts = value.split(b"\0", 2)
    if len(parts) != 3:
        return None
    try:
        return (parts[0].decode(), parts[1].decode()), parts[2]
    except UnicodeDecodeError:
        return None


def supported(fd: int) -> bool:
    try:
        os.listxattr(fd)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return False
        raise
    return True


def mark(folder_fd: int) -> None:
    """Set ``MARK`` on the folder ``folder_fd`` (any fd of it, O_PATH too: it is opened again as ``.``
    relative to it) unless it is there; raises OSError when it cannot be set (ENOTSUP: no user
    attributes there, so no member can have dead properties either)."""
    fd = os.open(".", _DIR, dir_fd=folder_fd)
    try:
        if MARK in os.listxattr(fd):
            return
        try:
            os.setxattr(fd, MARK, b"1", os.XATTR_CREATE)
        except FileExistsError:
            pass                          # another request set it meanwhile
    finally:
        os.close(fd)


def carry_mark(src_dir: int, name: str, dst_dir: int) -> bool:
    """Mark the folder ``dst_dir`` when the member ``name`` of ``src_dir`` has dead properties (before a
    MOVE puts it there); whether it was marked. A member that cannot be opened to look marks it too; a
    folder that cannot be marked is left as it is (the member's properties then show to a Depth 0
    PROPFIND, not in the folder's Depth 1 listing)."""
    try:
        fd = os.open(name, _ENTRY, dir_fd=src_dir)
    except OSError:
        has = True
    else:
        try:
            has = any(a.startswith(PREFIX) for a in os.listxattr(fd))
        except OSError:
            has = False                   # no attributes here at all
        finally:
            os.close(fd)
    if not has:
        return False
    try:
        mark(dst_dir)
    except OSError:
        return False
    return True


def get_all(fd: int) -> dict[tuple[str, str], bytes]:
    """Every dead property of the open file or folder ``fd``."""
    out = {}
    try:
        names = os.listxattr(fd)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return out
        raise
    for attr in names:
        if not attr.startswith(PREFIX):
            continue
        try:
            decoded = _decode(os.getxattr(fd, attr))
        except OSError:
            continue                      # removed meanwhile
        if decoded is not None:
            out[decoded[0]] = decoded[1]
    return out


def _set(fd: int, name: tuple[str, str], xml: bytes) -> None:
    value = f"{name[0]}\0{name[1]}\0".encode() + xml
    if len(value) > MAX_VALUE:
        raise DeadPropError(name, 507, "property value too large")
    try:
        os.setxattr(fd, attr_name(name), value)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.E2BIG, errno.EDQUOT):
            raise DeadPropError(name, 507, "no room left for properties on this file") from None
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            raise DeadPropError(name, 403, "this filesystem cannot store properties") from None
        raise DeadPropError(name, 500, exc.strerror or str(exc)) from None


def _remove(fd: int, name: tuple[str, str]) -> None:
    try:
        os.removexattr(fd, attr_name(name))
    except OSError as exc:
        if exc.errno == errno.ENODATA:
            return                        # removing a property that is not there succeeds (RFC 4918 14.23)
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            raise DeadPropError(name, 403, "this filesystem cannot store properties") from None
        raise DeadPropError(name, 500, exc.strerror or str(exc)) from None


def apply(fd: int, changes: list[PropChange]) -> None:
    """Apply every change in order, or none: raises DeadPropError (naming the failed property) after
    restoring what it changed."""
    before = get_all(fd)
    done: list[tuple[str, str]] = []
    try:
        for change in changes:
            if change.remove:
                _remove(fd, change.name)
            else:
                _set(fd, change.name, change.value)
            done.append(change.name)
    except DeadPropError:
        for name in reversed(done):
            try:
                if name in before:
                    _set(fd, name, before[name])
                else:
                    _remove(fd, name)
            except DeadPropError:
                pass
        raise


def copy(src_fd: int, dst_fd: int, dst_folder: int | None = None) -> None:
    """Copy every dead property of ``src_fd`` to ``dst_fd`` (COPY); the destination's own are replaced.
    ``dst_folder``: the destination's folder, marked (``mark``) first when there is any to copy (a
    DeadPropError 507 or 403 when it cannot be)."""
    for name in get_all(dst_fd):
        _remove(dst_fd, name)
    props = get_all(src_fd)
    if props and dst_folder is not None:
        try:
            mark(dst_folder)
        except OSError as exc:
            status = 507 if exc.errno in (errno.ENOSPC, errno.E2BIG, errno.EDQUOT) else 403
            raise DeadPropError(next(iter(props)), status, "the folder cannot note that it holds properties") \
                from None
    for name, xml in props.items():
        _set(dst_fd, name, xml)
