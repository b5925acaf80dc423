"""Drive a transfer engine over the client's one socket.

The engines (``zcopy.engines``) move bytes between a file and a non-blocking
socket, a budget at a time, and say BLOCKED instead of waiting. The server
drives many of them from epoll; a client drives one, so waiting is a plain
``select`` on its socket with the connection's timeout, and each step's
bytes go to the progress bar.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import ssl

from zcopy.client.errors import ClientError
from zcopy.client.progress import Bar
from zcopy.engines import FileShrank, PeerClosed, Progress, create


#: The buffer of the copying paths (TLS): large reads, one buffer per transfer.
COPY_CHUNK = 1 << 20


def send_file(sock: socket.socket, fd: int, offset: int, count: int, bar: Bar, timeout: float) -> None:
    """``count`` bytes of ``fd`` from ``offset`` to the socket with sendfile(2) (over TLS: pread
    into one buffer, then OpenSSL's write)."""
    if isinstance(sock, ssl.SSLSocket):
        _send_copy(sock, fd, offset, count, bar)
        return
    engine = create("sendfile")
    try:
        _drive(engine.start_send(fd, offset, count), sock, bar, timeout, write=True)
    except FileShrank as exc:
        raise ClientError(f"the file shrank while it was being sent ({exc})") from None
    finally:
        engine.close()


def recv_file(sock: socket.socket, fd: int, offset: int, count: int, bar: Bar, timeout: float) -> None:
    """``count`` bytes from the socket into ``fd`` at ``offset``: splice(2)
    through a pipe, or recv+pwrite where the file system refuses splice (and always over TLS:
    the bytes on the wire are ciphertext)."""
    if isinstance(sock, ssl.SSLSocket):
        _recv_copy(sock, fd, offset, count, bar, timeout)
        return
    for name in ("splice", "recv_pwrite"):
        engine = create(name)
        try:
            xfer = engine.start_recv(fd, offset, count)
            try:
                _drive(xfer, sock, bar, timeout, write=False)
                return
            except PeerClosed:
                raise ClientError(f"connection closed with {xfer.remaining} bytes still to come") from None
            except OSError as exc:
                moved = xfer.offset - offset
                if name != "splice" or exc.errno not in (errno.EINVAL, errno.ENOSYS) or moved:
                    raise
                # This file system does not take splice(2) writes: use recv+pwrite.
        finally:
            engine.close()


def _drive(xfer, sock: socket.socket, bar: Bar, timeout: float, *, write: bool) -> None:
    fd = sock.fileno()
    watch = ([], [fd]) if write else ([fd], [])
    try:
        while True:
            before = xfer.remaining
            state = xfer.step(fd)
            bar.advance(before - xfer.remaining)
            if state is Progress.DONE:
                return
            if state is Progress.BLOCKED and not any(select.select(*watch, [], timeout)):
                raise ClientError(f"transfer stalled for {timeout:g} s")
    finally:
        xfer.close()


def _send_copy(sock: ssl.SSLSocket, fd: int, offset: int, count: int, bar: Bar) -> None:
    buf = bytearray(min(COPY_CHUNK, max(count, 1)))
    view = memoryview(buf)
    while count:
        n = os.preadv(fd, [view[:min(count, len(buf))]], offset)
        if n == 0:
            raise ClientError(f"the file shrank while it was being sent ({count} bytes missing)")
        try:
            sock.sendall(view[:n])
        except TimeoutError:
            raise ClientError("transfer stalled") from None
        offset += n
        count -= n
        bar.advance(n)


def _recv_copy(sock: ssl.SSLSocket, fd: int, offset: int, count: int, bar: Bar, timeout: float) -> None:
    buf = bytearray(min(COPY_CHUNK, max(count, 1)))
    view = memoryview(buf)
    while count:
        try:
            n = sock.recv_into(view[:min(count, len(buf))])
        except TimeoutError:
            raise ClientError(f"transfer stalled for {timeout:g} s") from None
        if n == 0:
            raise ClientError(f"connection closed with {count} bytes still to come")
        done = 0
        while done < n:
            done += os.pwrite(fd, view[done:n], offset + done)
        offset += n
        count -= n
        bar.advance(n)
