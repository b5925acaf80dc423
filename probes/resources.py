"""A scope that owns every fd, socket, temp file and child a probe makes.

Probes must clean up even when they fail midway (the fd-leak test compares
/proc/self/fd before and after a probe that raises). Everything a probe opens
goes through a ``Resources`` so the ``with`` block closes it in reverse order.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile


class Resources(contextlib.ExitStack):
    """ExitStack with helpers for the fd kinds probes need."""

    def fd(self, fd: int) -> int:
        """Adopt a raw fd: it is closed when the scope ends."""
        self.callback(_close_quietly, fd)
        return fd

    def sock(self, s: socket.socket) -> socket.socket:
        self.callback(s.close)
        return s

    def pipe(self, size: int | None = None) -> tuple[int, int]:
        """A non-blocking pipe (read end, write end), optionally resized."""
        r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.fd(r)
        self.fd(w)
        if size is not None:
            import fcntl

            fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, size)
        return r, w

    def tmpdir(self, dir: str | None = None) -> str:
        path = tempfile.mkdtemp(prefix="zcopy-probe-", dir=dir)
        self.callback(shutil.rmtree, path, True)
        return path

    def tmpfile(self, size: int = 0, dir: str | None = None, fill: bytes = b"z") -> tuple[int, str]:
        """A temp file of ``size`` bytes, opened O_RDWR; returns (fd, path)."""
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
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as lst:
            lst.bind(("127.0.0.1", 0))
            lst.listen(1)
            client = self.sock(socket.create_connection(lst.getsockname(), timeout=5))
            server, _ = lst.accept()
            self.sock(server)
        return client, server

    def unix_pair(self) -> tuple[socket.socket, socket.socket]:
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
