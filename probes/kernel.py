"""Small readers for /proc and /sys, shared by the probes and the profile.

Tunables such as /proc/sys/fs/pipe-max-size can be missing (containers,
older kernels) or unreadable; callers get ``None`` and say so in a detail
instead of guessing a value.
"""

from __future__ import annotations

import errno
import os


def read_text(path: str) -> str | None:
    """The stripped content of a small /proc or /sys file, or None if unreadable."""
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return None


def read_int(path: str) -> int | None:
    text = read_text(path)
    try:
        return int(text.split()[0]) if text else None
    except ValueError:
        return None


def errname(exc: OSError) -> str:
    """``EINVAL`` for an OSError, for short details."""
    return errno.errorcode.get(exc.errno or 0, str(exc.errno))


def is_root() -> bool:
    """True when this process holds effective uid 0 (and so CAP_SYS_RESOURCE,
    which lifts the pipe budget and pipe-max-size limits)."""
    return os.geteuid() == 0
