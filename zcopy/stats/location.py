"""Where live snapshots are published, and how a publisher's liveness is told.

Layout (one folder per server, named by its supervisor's pid)::

    $XDG_RUNTIME_DIR/zcopy/            (fallback /dev/shm/zcopy-<uid>/, mode 0700)
        serve-4711/                    one running `zcopy serve` (supervisor pid 4711)
            worker-0.json              snapshot of worker slot 0, rewritten once a second
            worker-1.json
        relay-4802/
            worker-0.json

The runtime dir is a per-user tmpfs, so a snapshot write is a memory copy:
in effect shared memory with an atomic publish (write a temp file, rename).
Without ``XDG_RUNTIME_DIR`` the fallback is /dev/shm, also tmpfs, and only
then /tmp: a publish happens on the event loop, and on a disk filesystem its
rename can wait for the folder's blocks to be read back in, behind every other
read queued on a busy disk (measured: 263 ms on a throttled disk).
A folder whose supervisor pid is gone is stale and may be removed by anyone.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

KINDS = ("serve", "relay")


def runtime_dir() -> str:
    """The per-user folder holding every server's snapshots (not created here)."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    if base and os.path.isdir(base):
        return os.path.join(base, "zcopy")
    shared = "/dev/shm" if os.path.isdir("/dev/shm") else "/tmp"
    return f"{shared}/zcopy-{os.getuid()}"


def ensure_runtime_dir() -> str:
    """Create the runtime folder 0700 and refuse one another user planted
    (the /dev/shm and /tmp fallbacks are world-writable territory)."""
    path = runtime_dir()
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        raise PermissionError(f"{path} is not a folder owned by uid {os.getuid()}")
    return path


@dataclass(frozen=True)
class Target:
    """One running server as readers see it: its kind, supervisor pid, folder."""

    kind: str
    pid: int
    path: str

    @property
    def name(self) -> str:
        return f"{self.kind}-{self.pid}"


def group_dir(kind: str, pid: int) -> str:
    return os.path.join(runtime_dir(), f"{kind}-{pid}")


def parse_group(path: str) -> Target | None:
    """``.../serve-4711`` -> Target, or None for anything else."""
    kind, sep, pid = os.path.basename(os.path.normpath(path)).rpartition("-")
    if not sep or kind not in KINDS or not pid.isdigit():
        return None
    return Target(kind, int(pid), path)


def alive(pid: int) -> bool:
    """Whether a process with this pid exists (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in (b"Z", b"X")
