"""sendfile(2): the kernel copies page-cache pages straight into the socket.

One syscall moves up to ``MAX_CHUNK`` bytes without them ever entering user
space. The man page's two traps are handled here:

* Linux transfers at most 0x7ffff000 bytes per call (sendfile(2), NOTES),
  so each call asks for ``min(remaining, budget, MAX_CHUNK)``.
* A return of 0 means "end of file". Before ``count`` bytes that means the
  file was truncated under us: the promised length can no longer be met, so
  ``FileShrank`` is raised. Looping would spin forever; padding would serve
  bytes that are not in the file.

The explicit ``offset`` argument leaves the fd's own file position alone, so
one open file can serve many connections at once.

When the hot path runs compiled, ``send_once`` and ``start_send`` are
``zcopy.sockio.Sendfile``'s: the same calls and counters in C (docs/hotpath.md).
The classes here are what runs otherwise, and what the compiled ones are tested
against.
"""

from __future__ import annotations

import os

from zcopy import hotpath
from zcopy.engines.base import EngineStats, FileShrank, Progress

_compiled = getattr(hotpath.extension("zcopy.sockio"), "Sendfile", None)

DONE, BLOCKED, MORE = Progress.DONE, Progress.BLOCKED, Progress.MORE

#: Largest count Linux moves in one sendfile(2) call.
MAX_CHUNK = 0x7FFFF000


class SendfileEngine:
    name = "sendfile"
    zero_copy = True

    def __init__(self, *, budget: int = 1 << 20) -> None:
        self.budget = budget
        self.stats = EngineStats()
        #: The compiled calls' object (``zcopy.sockio.Sendfile``), which the compiled connection
        #: calls in C; None when they run as Python.
        self.sendfile = None
        if _compiled is not None:
            # The same two calls in C, with the counters (zcopy/sockio.pyx, docs/hotpath.md).
            self.stats = self.sendfile = _compiled(budget)
            self.send_once, self.start_send = self.stats.send_once, self.stats.start_send

    def start_send(self, file_fd: int, offset: int, count: int) -> "SendfileTransfer":
        return SendfileTransfer(self, file_fd, offset, count)

    def send_once(self, sock_fd: int, file_fd: int, offset: int, count: int) -> int:
        """One sendfile(2) of at most ``count`` bytes (and MAX_CHUNK): the
        bytes that left, 0 when the socket is full."""
        stats = self.stats
        stats.syscalls += 1
        try:
            sent = os.sendfile(sock_fd, file_fd, offset, count if count < MAX_CHUNK else MAX_CHUNK)
        except BlockingIOError:
            return 0
        if not sent and count:
            raise FileShrank(f"file ended at offset {offset} with {count} bytes "
                             f"still promised (truncated during sendfile)")
        stats.bytes_sent += sent
        return sent

    def close(self) -> None:
        """Nothing pooled: present so every engine can be closed the same way."""


class SendfileTransfer:
    __slots__ = ("offset", "remaining", "_fd", "_budget", "_once")

    def __init__(self, engine: SendfileEngine, file_fd: int, offset: int, count: int) -> None:
        self.offset = offset
        self.remaining = count
        self._fd = file_fd
        self._budget = engine.budget
        self._once = engine.send_once

    def step(self, sock_fd: int, budget: int = 0) -> Progress:
        """At most ``budget`` bytes (the engine's when 0: the serve connection asks for more only while
        it is alone, ``profile.LONE_STEP``): DONE, BLOCKED or MORE."""
        remaining = self.remaining
        budget = budget or self._budget
        once = self._once
        while remaining:
            if budget <= 0:
                return MORE
            sent = once(sock_fd, self._fd, self.offset, remaining if remaining < budget else budget)
            if not sent:
                return BLOCKED
            self.offset += sent
            self.remaining = remaining = remaining - sent
            budget -= sent
        return DONE

    def close(self) -> None:
        """Nothing to release."""
