"""A scope that owns every fd, socket, temp file and child a probe makes.

Probes must clean up even when they fail midway (the fd-leak test compares
/proc/self/fd before and after a probe that raises). Everything a probe opens
goes through a ``Resources`` so the ``with`` block closes it in reverse order.

The runner's time bound raises from a SIGALRM handler, which can fire between
any two bytecodes: between ``os.pipe2()`` returning and the fds being
registered, for instance, which would leak them. So every helper that makes
an fd does so with SIGALRM blocked (``uninterrupted``); a timer that expires
meanwhile fires as soon as the fd is safely owned.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import tempfile
from typing import Iterator

_ALRM = {signal.SIGALRM}


@contextlib.contextmanager
def uninterrupted() -> Iterator[None]:
    """Hold SIGALRM (the probe time bound) back until the block ends."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _ALRM)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


class Resources(contextlib.ExitStack):
    """ExitStack with helpers for the fd kinds probes need."""

    def __exit__(self, *exc_info):
        # The time bound raises from a signal handler, between any two
        # bytecodes: inside a close callback it would skip the close, and
        # before the block below takes effect it would skip every callback.
        # Unwind with it held back; if it struck first, the ``finally`` runs
        # what is left (the bound is a one-shot timer: it cannot strike twice).
        try:
            with uninterrupted():
                return super().__exit__(*exc_info)
        finally:
            with uninterrupted():
                super().__exit__(None, None, None)   # nothing left to do, normally

    def fd(self, fd: int) -> int:
        """Adopt a raw fd: it is closed when the scope ends."""
        self.callback(_close_quietly, fd)
        return fd

    def open(self, path: str, flags: int = os.O_RDONLY) -> int:
        """os.open, owned by this scope (O_CLOEXEC added).

        The open itself is O_NONBLOCK so it cannot hang with the time bound
        held back (a FIFO without a writer would); the fd is switched back to
        blocking unless ``flags`` asked for O_NONBLOCK."""
        with uninterrupted():
            fd = self.fd(os.open(path, flags | os.O_CLOEXEC | os.O_NONBLOCK))
        if not flags & os.O_NONBLOCK:
            os.set_blocking(fd, True)
        return fd

    def sock(self, s: socket.socket) -> socket.socket:
        self.callback(s.close)
        return s

    def pipe(self, size: int | None = None) -> tuple[int, int]:
        """A non-blocking pipe (read end, write end), optionally resized."""
        with uninterrupted():
            r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            self.fd(r)
            self.fd(w)
        if size is not None:
            import fcntl

            fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, size)
        return r, w

    def tmpdir(self, dir: str | None = None) -> str:
        with uninterrupted():
            path = tempfile.mkdtemp(prefix="zcopy-probe-", dir=dir)
            self.callback(shutil.rmtree, path, True)
        return path

    def tmpfile(self, size: int = 0, dir: str | None = None, fill: bytes = b"z") -> tuple[int, str]:
        """A temp file of ``size`` bytes, opened O_RDWR; returns (fd, path)."""
        with uninterrupted():
            fd, path = tempfile.mkstemp(prefix="zcopy-probe-", dir=dir)
            self.callback(_unlink_quietly, path)
            self.fd(fd)
        if size:
            block = (fill * (65536 // len(fill) + 1))[:65536]
            left = size
            while left:
                left -= os.write(fd, block[: min(left, len(block))])
        return fd, path

    def tcp_pair(self) -> tuple[socket.socket, socket.socket]:
        """A connected TCP pair on 127.0.0.1: (client, server side)."""
        with uninterrupted(), socket.socket(socket.AF_INET, socket.SOCK_STREAM) as lst:
            lst.bind(("127.0.0.1", 0))
            lst.listen(1)
            client = self.sock(socket.create_connection(lst.getsockname(), timeout=5))
            server, _ = lst.accept()
            self.sock(server)
        return client, server

    def unix_pair(self) -> tuple[socket.socket, socket.socket]:
        with uninterrupted():
            a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            return self.sock(a), self.sock(b)


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
