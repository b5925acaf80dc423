"""``zcopy get``: download to FILE.part, resume it when possible, verify the
length, then rename to FILE.

Resuming safely needs to know that the bytes already in FILE.part came from
the same version of the remote file. The validator (the ETag, or the
Last-Modified date when there is none) is therefore stored with the partial
file, in the ``user.zcopy.etag`` extended attribute, before any body byte is
written; the next run asks for ``Range: bytes=N-`` with ``If-Range`` set to
it, and the server answers 206 (same version: append) or 200 (changed: start
over). Without a stored validator the download starts over rather than
risk splicing two versions (and a FILE.part without zcopy get's mark, which
includes any on a file system without user xattrs, only with --force).

Plain bodies go socket -> pipe -> file with splice(2); with ``--decrypt`` the
ciphertext streams through pyrage into the file and resuming is not
attempted (a STREAM chunk cannot be decrypted from its middle); a body that
does not start with an age header is refused before anything is written.

The partial file itself (symlinks refused, locked, checked before the
rename) is ``zcopy.client.partial``; the output is never replaced without
``--force``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from zcopy.client.connection import Connection, check
from zcopy.client.errors import ClientError
from zcopy.client.names import shown
from zcopy.client.options import auth_headers
from zcopy.client.partial import Partial, output_exists
from zcopy.client.progress import CountingReader, transfer_bar
from zcopy.client.pump import recv_file
from zcopy.client.url import Remote

_CONTENT_RANGE = re.compile(r"bytes (?:(\d+)-(\d+)|\*)/(\d+)")
AGE_MAGIC = (b"age-encryption.org/", b"-----BEGIN AGE ENCRYPTED FILE-----")


@dataclass(slots=True)
class Downloaded:
    path: str
    size: int         # bytes in the final file
    resumed_at: int   # 0 unless a partial download was continued


def download(remote: Remote, out: str, *, token: str | None = None, decrypt: dict | None = None,
             quiet: bool = False, timeout: float = 60.0, force: bool = False) -> Downloaded:
    """Fetch ``remote`` into ``out``; ``decrypt`` holds decrypt_stream kwargs.
    An existing ``out`` is replaced only with ``force``."""
    folder, name = os.path.split(out)
    if not name:
        raise ClientError(f"{shown(out)} names a folder; give -o FILE")
    dirfd = os.open(folder or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if not force and output_exists(dirfd, name):
            raise ClientError(f"{shown(out)} exists; use --force to replace it")
        with Partial(dirfd, name, folder, force=force) as part:
            try:
                size, resumed_at = _fetch(remote, part, token, decrypt, quiet, timeout, force)
            except BaseException:
                if decrypt or os.fstat(part.fd).st_size == 0:
                    part.discard()   # nothing worth resuming (or plaintext of a failed decryption)
                raise
    finally:
        os.close(dirfd)
    return Downloaded(out, size, resumed_at)


def _fetch(remote: Remote, part: Partial, token, decrypt, quiet, timeout, force) -> tuple[int, int]:
    """(size, resumed_at) once ``part`` is renamed into place."""
    offset, validator = (0, None) if decrypt else part.resume_point()
    headers = auth_headers(token)
    if offset and validator:
        headers |= {"Range": f"bytes={offset}-", "If-Range": validator}
    with Connection(remote, timeout) as conn:
        conn.send_head("GET", remote.target, headers)
        resp = conn.read_head()
        body = conn.body(resp)
        if resp.status == 416 and offset:
            total = _content_range(resp)[2]
            if total == offset:                      # the partial file was already complete
                return part.commit(offset, replace=force), offset
            part.start_over()                        # the remote file shrank: start over
            return _fetch(remote, part, token, decrypt, quiet, timeout, force)
        check(resp, remote.shown, body)
        if 300 <= resp.status < 400:
            where = resp.headers.get("location", "?")
            raise ClientError(f"{resp.status} {resp.reason}: {remote.shown} (moved to {where}; a folder?)")
        if resp.status == 206:
            start, _, total = _content_range(resp)
            if start != offset:
                raise ClientError(f"asked for bytes from {offset}, got a range from {start}")
        elif resp.status == 200:
            offset, total = 0, body.length
        else:
            raise ClientError(f"unexpected {resp.status} {resp.reason}: {remote.shown}")
        if offset == 0:
            part.start_over()
        fd = part.fd
        if not decrypt:
            part.remember(resp.headers.get("etag") or resp.headers.get("last-modified"))
        head = _age_header(body, remote) if decrypt else b""
        label = f"get {remote.name or remote.shown}"
        with transfer_bar(label, total, quiet=quiet, completed=offset) as bar:
            if decrypt:
                _decrypt_body(_Prefixed(head, body), fd, bar, decrypt)
                total = None  # a plaintext length; the ciphertext's was checked as it streamed
            else:
                _write_body(conn, body, fd, offset, total, bar, timeout)
    return part.commit(total, replace=force), offset


def _write_body(conn: Connection, body, fd: int, offset: int, total: int | None, bar, timeout: float) -> None:
    """Bytes already read with the head are written first; the rest of a
    Content-Length body is spliced; chunked or unframed bodies are copied."""
    if total is None or body.chunked:
        buf = bytearray(1 << 20)
        while n := body.readinto(buf):
            os.pwrite(fd, memoryview(buf)[:n], offset)
            offset += n
            bar.advance(n)
        os.ftruncate(fd, offset)
        return
    early = body.read(min(len(conn.buf), body.remaining))
    if early:
        os.pwrite(fd, early, offset)
        offset += len(early)
        bar.advance(len(early))
    if body.remaining:
        recv_file(conn.sock, fd, offset, body.remaining, bar, timeout)


def _age_header(body, remote: Remote) -> bytes:
    """The body's first bytes, which must be an age header's (binary or armored)."""
    want = len(AGE_MAGIC[1])
    head = body.read(want)
    while len(head) < want and (more := body.read(want - len(head))):
        head += more
    if not head.startswith(AGE_MAGIC):
        raise ClientError(f"{remote.shown} is not an age file (no age header); "
                          f"download it without --decrypt")
    return head


def _decrypt_body(body, fd: int, bar, decrypt: dict) -> None:
    """Plaintext of a failed decryption is not kept (the caller discards the
    partial file): a wrong key, a cut or a tampered file must not leave
    something that looks like a download."""
    from zcopy.client.crypto import decrypt_stream

    with os.fdopen(os.dup(fd), "wb") as sink:
        decrypt_stream(CountingReader(body, bar), sink, **decrypt)
    if body.read(1):
        raise ClientError("data after the end of the age file")


class _Prefixed:
    """``head`` (already read, to check the format) and then the rest of ``reader``."""

    def __init__(self, head: bytes, reader) -> None:
        self._head = head
        self._reader = reader

    def read(self, n: int = -1) -> bytes:
        if self._head:
            out = self._head if n < 0 else self._head[:n]
            self._head = self._head[len(out):]
            return out
        return self._reader.read(n)


def _content_range(resp) -> tuple[int | None, int | None, int]:
    m = _CONTENT_RANGE.fullmatch(resp.headers.get("content-range", ""))
    if not m:
        raise ClientError(f"{resp.status} without a usable Content-Range")
    start, end, total = m.groups()
    return (int(start) if start else None, int(end) if end else None, int(total))
