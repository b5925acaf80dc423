"""Facts about filesystems: which one holds a path or fd (statfs), which are in
memory, what is mounted below a folder.

A low module: the server (watch, prefetch), the profile and the probes use it;
it imports nothing of zcopy.
"""

from __future__ import annotations

import ctypes
import os
import re

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
#: Local filesystems: every change to them passes through this kernel's VFS
#: (so inotify sees it; network and FUSE filesystems are not among them).
LOCAL = frozenset({"ext4", "xfs", "btrfs", "tmpfs", "ramfs", "f2fs", "zfs", "bcachefs", "vfat",
                   "exfat", "ntfs", "squashfs", "isofs"})


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
