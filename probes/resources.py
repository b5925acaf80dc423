"""A scope that owns every fd, socket, temp file and child a probe makes.

Probes must clean up even when they fail midway (the fd-leak test compares
/proc/self/fd before and after a probe that raises). Everything a probe opens
goes through a ``Resources`` so the ``with`` block closes it in reverse order.

The runner's time bound raises from a SIGALRM handler, which runs at a
bytecode boundary: between ``os.pipe2()`` returning and the fds being
registered, for instance, or on entry to ``__exit__`` before it has closed
anything. Two things keep that from leaking:

- every helper that makes an fd does so ``uninterrupted``: SIGALRM is blocked,
  and the handler, should the signal have arrived just before, sees ``held()``
  and puts the strike off instead of raising (a handler runs after the signal
  was delivered, so blocking alone is not enough);
- each thread keeps the scopes it has open; the runner closes those a struck
  probe left open (``close_left_open``), once its bound can no longer strike.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import tempfile
import threading
from typing import Iterator

_ALRM = {signal.SIGALRM}


class _ThreadState(threading.local):
    def __init__(self) -> None:
        self.held = 0                       # depth of ``uninterrupted`` blocks
        self.scopes: list[Resources] = []   # open, oldest first


_state = _ThreadState()


@contextlib.contextmanager
def uninterrupted() -> Iterator[None]:
    """Hold SIGALRM (the probe time bound) back until the block ends."""
    _state.held += 1
    try:
        old = signal.pthread_sigmask(signal.SIG_BLOCK, _ALRM)
        try:
            yield
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
    finally:
        _state.held -= 1


def held() -> bool:
    """Inside an ``uninterrupted`` block (the time bound's handler must not raise)."""
    return _state.held > 0


def open_scopes() -> int:
    """A mark for ``close_left_open``: how many scopes this thread has open."""
    return len(_state.scopes)


def close_left_open(mark: int) -> None:
    """Close, newest first, the scopes opened since ``mark`` that are still open."""
    while len(_state.scopes) > mark:
        _state.scopes[-1].__exit__(None, None, None)


class Resources(contextlib.ExitStack):
    """ExitStack with helpers for the fd kinds probes need."""

    def __enter__(self) -> "Resources":
        _state.scopes.append(self)
        return self

    def __exit__(self, *exc_info):
        # Unwound with the time bound held back: inside a close callback it would
        # skip the close. If it strikes on entry, before the hold, the runner
        # closes this scope (close_left_open).
        with uninterrupted():
            try:
                return super().__exit__(*exc_info)
            finally:
                if self in _state.scopes:
                    _state.scopes.remove(self)

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
