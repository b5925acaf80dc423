"""``zcopy put``: upload one file with PUT.

A plain file goes out with ``Content-Length`` and sendfile(2): its bytes go
from the page cache to the socket without entering Python. An encrypted one
is produced while it is sent, so its length is not known up front; it goes
out with ``Transfer-Encoding: chunked``, one chunk per 64 KiB age STREAM
chunk that pyrage writes.

``Expect: 100-continue`` is sent so a server that will refuse the upload
(no token, no write access, too large) says so before the body is sent; if
the server stays silent for a second the body goes anyway (RFC 9110 10.1.1).
A server that answers early and closes while the body is still going out is
heard too: its status, not a broken pipe, is what the user sees.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from urllib.parse import quote

from zcopy.client import resumable
from zcopy.client.connection import Connection, check
from zcopy.client.errors import ClientError, StatusError
from zcopy.client.names import shown
from zcopy.client.options import auth_headers
from zcopy.client.progress import CountingReader, transfer_bar
from zcopy.client.pump import send_file
from zcopy.client.url import Remote

CONTINUE_WAIT = 1.0


@dataclass(slots=True)
class Uploaded:
    remote: Remote
    status: int       # 201 created, 204 replaced (200: a resumable upload an earlier attempt completed)
    size: int         # plaintext bytes read from the file
    sent: int | None = None     # resumable: bytes sent by this command (less than size when it resumed)


def upload(path: str, remote: Remote, *, token: str | None = None, encrypt: dict | None = None,
           quiet: bool = False, timeout: float = 60.0, retries: int = 0, resume: bool = True) -> Uploaded:
    """PUT the file at ``path`` to ``remote`` (a folder URL gets the file's
    name appended); ``encrypt`` holds encrypt_stream kwargs. A 409 (WebDAV:
    the folder does not exist) makes the missing folders (MKCOL) and tries once more."""
    if remote.path.endswith("/"):
        name = quote(os.fsencode(os.path.basename(path)))      # bytes: a non-UTF-8 name keeps them
        remote = Remote(remote.host, remote.port, remote.path + name, remote.query, remote.scheme)
    try:
        return _upload(path, remote, token, encrypt, quiet, timeout, retries, resume)
    except StatusError as exc:
        if exc.status != 409:
            raise
    from zcopy.client.remote import make_folders

    make_folders(remote, remote.path, token=token, timeout=timeout)
    return _upload(path, remote, token, encrypt, quiet, timeout, retries, resume)


def _upload(path: str, remote: Remote, token, encrypt, quiet: bool, timeout: float, retries: int = 0,
            resume: bool = True) -> Uploaded:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)    # NONBLOCK: a FIFO must not hang us
    except OSError as exc:
        raise ClientError(f"cannot open {shown(path)}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ClientError(f"{shown(path)} is not a regular file")
        os.set_blocking(fd, True)
        # Resumable (tus) when the server offers it; encrypted uploads restart instead (docs/client.md).
        if resume and not encrypt and st.st_size >= resumable.MIN_SIZE and resumable.offered(remote, token, timeout):
            status, sent = resumable.upload(path, fd, st, remote, token=token, quiet=quiet, timeout=timeout,
                                            retries=retries)
            return Uploaded(remote, status, st.st_size, sent)
        headers = auth_headers(token) | {"Expect": "100-continue", "Content-Type": "application/octet-stream"}
        headers |= {"Transfer-Encoding": "chunked"} if encrypt else {"Content-Length": str(st.st_size)}
        with Connection(remote, timeout) as conn:
            conn.send_head("PUT", remote.target, headers)
            early = _early_answer(conn)
            if early is None:
                try:
                    with transfer_bar(f"put {shown(os.path.basename(path))}", st.st_size, quiet=quiet) as bar:
                        if encrypt:
                            _send_encrypted(conn, fd, bar, encrypt)
                        else:
                            send_file(conn.sock, fd, 0, st.st_size, bar, timeout)
                except (BrokenPipeError, ConnectionResetError) as exc:
                    # The server gave up on the body; its answer says why.
                    if not conn.head_ready(0.5):
                        raise ClientError(f"connection lost during upload: {exc.strerror}") from None
            resp = early or conn.read_head()
            check(resp, remote.shown, conn.body(resp))
            if resp.status not in (200, 201, 204):
                raise ClientError(f"unexpected {resp.status} {resp.reason}: {remote.shown}")
            return Uploaded(remote, resp.status, st.st_size)
    finally:
        os.close(fd)


def _early_answer(conn: Connection):
    """The final response if the server answered before the body, else None
    (a 100 Continue, or silence, means: send the body)."""
    if not conn.head_ready(CONTINUE_WAIT):
        return None
    resp = conn.read_head(skip_interim=False)
    return None if resp.status == 100 else resp


def _send_encrypted(conn: Connection, fd: int, bar, encrypt: dict) -> None:
    from zcopy.client.crypto import encrypt_stream

    with os.fdopen(os.dup(fd), "rb", buffering=0) as plain:
        writer = ChunkedWriter(conn.sock)
        encrypt_stream(CountingReader(plain, bar), writer, **encrypt)
        writer.finish()


class ChunkedWriter:
    """A write-only file object that frames each write as one HTTP chunk."""

    def __init__(self, sock) -> None:
        self._sock = sock

    def write(self, data) -> int:
        n = len(data)
        if n:  # a zero-length chunk would end the body
            self._sock.sendall(b"%x\r\n%b\r\n" % (n, bytes(data)))
        return n

    def flush(self) -> None:
        pass

    def finish(self) -> None:
        self._sock.sendall(b"0\r\n\r\n")
