"""The filesystem zcopy will serve from (--path): what it is, and whether
sendfile, splice and mmap work from files on it.

statfs(2) gives the filesystem magic (f_type); the table below names the
common ones. The transfer checks use a temp file created in the path's
directory; if the path is read-only, an existing regular file there is read
instead (nothing is ever written to it).
"""

from __future__ import annotations

import ctypes
import mmap
import os
import re
from typing import Iterator

from probes.finding import Finding, Status
from probes.kernel import errname
from probes.resources import Resources
from probes.sendfile import recv_exactly, send_all
from probes.splice import splice_all

SIZE = 64 * 1024

MAGIC = {
    0xEF53: "ext4", 0x01021994: "tmpfs", 0x858458F6: "ramfs", 0x58465342: "xfs", 0x9123683E: "btrfs",
    0x6969: "nfs", 0x794C7630: "overlayfs", 0x9FA0: "proc", 0x62656572: "sysfs", 0x2FC12FC1: "zfs",
    0xF2F52010: "f2fs", 0x65735546: "fuse", 0xFF534D42: "cifs", 0xFE534D42: "smb2", 0x00C36400: "ceph",
    0x01021997: "9p", 0x4D44: "vfat", 0x2011BAB0: "exfat", 0x73717368: "squashfs", 0x9660: "isofs",
    0x5346544E: "ntfs", 0xCA451A4E: "bcachefs", 0x6E736673: "nsfs",
    0x27E0EB: "cgroup", 0x63677270: "cgroup2", 0x1373: "devfs",
}
#: Filesystems whose pages already live in RAM: read-ahead/prefetch buys nothing.
IN_MEMORY = {"tmpfs", "ramfs"}


class _StatFS(ctypes.Structure):
    # Only f_type is read; the rest of struct statfs is padding large enough for every ABI.
    _fields_ = [("f_type", ctypes.c_long), ("_rest", ctypes.c_byte * 256)]


def fs_type(path: str | int) -> tuple[str, int]:
    """(name, magic) of the filesystem holding ``path`` (or open fd: fstatfs); raises OSError."""
    libc = ctypes.CDLL(None, use_errno=True)
    buf = _StatFS()
    if isinstance(path, int):
        rc = libc.fstatfs(path, ctypes.byref(buf))
    else:
        rc = libc.statfs(os.fsencode(path), ctypes.byref(buf))
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path)
    magic = buf.f_type & 0xFFFFFFFF
    return MAGIC.get(magic, "unknown"), magic


def mounts_below(path: str) -> list[tuple[str, str]]:
    """(mount point, filesystem type) of every mount strictly below ``path``,
    from /proc/self/mountinfo (proc(5)): a served tree can span filesystems."""
    top = os.path.realpath(path).rstrip("/") + "/"
    found = []
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                mine, _, theirs = line.partition(" - ")
                point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), mine.split()[4])
                if point.startswith(top):
                    found.append((point, theirs.split()[0]))
    except OSError:
        pass
    return found


def probe(ctx) -> Iterator[Finding]:
    path = os.path.abspath(ctx.path)
    try:
        name, magic = fs_type(path)
        dev = os.stat(path).st_dev
    except OSError as exc:
        yield Finding("filesystem.type", Status.ERROR, {"path": path, "type": None, "magic": None, "dev": None},
                      f"statfs({path}) failed: {errname(exc)} ({exc.strerror})")
        return
    below = mounts_below(path)
    yield Finding("filesystem.type", Status.OK, {"path": path, "type": name, "magic": f"{magic:#x}", "dev": dev,
                                                 "mounts_below": [list(m) for m in below]},
                  f"{path} is on {name} (statfs magic {magic:#x})"
                  + (f"; {len(below)} filesystem(s) mounted below it" if below else ""))
    with Resources() as res:
        src, origin = _source(res, path)
        if src is None:
            for fid in ("filesystem.sendfile", "filesystem.splice", "filesystem.mmap"):
                yield Finding(fid, Status.SKIPPED, None, f"{path} is neither a regular file nor a directory "
                              "where a temp file can be made or a readable file found")
            return
        yield _try(res, "filesystem.sendfile", f"sendfile from {origin} to TCP", src, _sendfile)
        yield _try(res, "filesystem.splice", f"splice from {origin} into a pipe", src, _splice)
        yield _try(res, "filesystem.mmap", f"mmap of {origin}", src, _mmap)


def _source(res: Resources, path: str) -> tuple[int | None, str]:
    """A readable fd with data on ``path``'s filesystem, and how it was found."""
    if os.path.isfile(path):
        return res.open(path), path
    if not os.path.isdir(path):
        return None, ""
    try:
        fd, _ = res.tmpfile(SIZE, dir=path)
        return fd, f"a temp file in {path}"
    except OSError:
        pass
    with os.scandir(path) as entries:
        for entry in entries:
            if entry.is_file() and entry.stat().st_size > 0:
                try:
                    return res.open(entry.path), entry.path
                except OSError:
                    continue
    return None, ""


def _try(res: Resources, fid: str, what: str, src: int, check) -> Finding:
    count = min(SIZE, os.fstat(src).st_size)
    if count == 0:
        return Finding(fid, Status.SKIPPED, None, f"{what}: the file reports st_size 0 (nothing to compare)")
    try:
        moved = check(res, src, count)
    except OSError as exc:
        return Finding(fid, Status.UNSUPPORTED, False, f"{what} failed: {errname(exc)} ({exc.strerror})")
    if moved != os.pread(src, count, 0):
        return Finding(fid, Status.ERROR, False, f"{what} returned bytes that differ from read()")
    return Finding(fid, Status.OK, True, f"{what} moved {count} bytes intact")


def _sendfile(res: Resources, src: int, count: int) -> bytes:
    client, server = res.tcp_pair()
    send_all(client.fileno(), src, count)
    return recv_exactly(server, count)


def _splice(res: Resources, src: int, count: int) -> bytes:
    r, w = res.pipe(4 * SIZE)
    splice_all(src, w, count, offset_src=0)
    return os.read(r, 4 * SIZE)


def _mmap(res: Resources, src: int, count: int) -> bytes:
    with mmap.mmap(src, count, prot=mmap.PROT_READ) as m:
        return bytes(m[:count])
