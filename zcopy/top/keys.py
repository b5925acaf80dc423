"""Single key presses from the terminal, without blocking the refresh.

The tty is put in cbreak mode (keys arrive one by one, no echo, signals such
as Ctrl-C still work) for the life of the context, and ``wait(timeout)``
doubles as the dashboard's sleep: it returns early with the keys typed. When
stdin is not a terminal (pipes, tests) it simply sleeps.
"""

from __future__ import annotations

import os
import select
import sys
import termios
import time
import tty


class Keys:
    def __init__(self, stream=None) -> None:
        self.stream = stream if stream is not None else sys.stdin
        self.fd: int | None = None
        self.saved = None

    def __enter__(self) -> "Keys":
        try:
            fd = self.stream.fileno()
        except (AttributeError, ValueError, OSError):
            return self
        if os.isatty(fd):
            self.fd = fd
            self.saved = termios.tcgetattr(fd)
            tty.setcbreak(fd)
        return self

    def __exit__(self, *exc) -> None:
        if self.saved is not None:
            termios.tcsetattr(self.fd, termios.TCSADRAIN, self.saved)
            self.saved = None

    def wait(self, timeout: float) -> str:
        """Keys typed within ``timeout`` seconds ("" if none); returns at the first key."""
        if self.fd is None:
            time.sleep(timeout)
            return ""
        r, _, _ = select.select([self.fd], [], [], timeout)
        if not r:
            return ""
        try:
            return os.read(self.fd, 64).decode(errors="ignore")
        except OSError:
            return ""
