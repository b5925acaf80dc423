"""``zcopy get``: download to FILE.part, resume it when possible, verify the
length, then rename to FILE.

Resuming safely needs to know that the bytes already in FILE.part came from
the same version of the remote file. The validator (the ETag, or the
Last-Modified date when there is none) is therefore stored with the partial
file, in the ``user.zcopy.etag`` extended attribute, before any body byte is
written; the next run asks for ``Range: bytes=N-`` with ``If-Range`` set to
it, and the server answers 206 (same version: append) or 200 (changed: start
over). Without a stored validator - or on a file system without user
xattrs - the download starts over rather than risk splicing two versions.

Plain bodies go socket -> pipe -> file with splice(2); with ``--decrypt`` the
ciphertext streams through pyrage into the file and resuming is not
attempted (a STREAM chunk cannot be decrypted from its middle).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from zcopy.client.connection import Connection, check
from zcopy.client.errors import ClientError
from zcopy.client.options import auth_headers
from zcopy.client.progress import CountingReader, transfer_bar
from zcopy.client.pump import recv_file
from zcopy.client.url import Remote

VALIDATOR_XATTR = "user.zcopy.etag"
_CONTENT_RANGE = re.compile(r"bytes (?:(\d+)-(\d+)|\*)/(\d+)")


@dataclass(slots=True)
class Downloaded:
    path: str
    size: int         # bytes in the final file
    resumed_at: int   # 0 unless a partial download was continued


def download(remote: Remote, out: str, *, token: str | None = None, decrypt: dict | None = None,
             quiet: bool = False, timeout: float = 60.0) -> Downloaded:
    """Fetch ``remote`` into ``out``; ``decrypt`` holds decrypt_stream kwargs."""
    part = out + ".part"
    offset, validator = (0, None) if decrypt else _partial(part)
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
                return _finish(part, out, offset, offset)
            os.unlink(part)                          # the remote file shrank: start over
            return download(remote, out, token=token, quiet=quiet, timeout=timeout)
        check(resp, remote.path, body)
        if 300 <= resp.status < 400:
            where = resp.headers.get("location", "?")
            raise ClientError(f"{resp.status} {resp.reason}: {remote.path} (moved to {where}; a folder?)")
        if resp.status == 206:
            start, _, total = _content_range(resp)
            if start != offset:
                raise ClientError(f"asked for bytes from {offset}, got a range from {start}")
        elif resp.status == 200:
            offset, total = 0, body.length
        else:
            raise ClientError(f"unexpected {resp.status} {resp.reason}: {remote.path}")
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if offset == 0 else 0), 0o666)
        try:
            if not decrypt:
                _remember(fd, resp.headers.get("etag") or resp.headers.get("last-modified"))
            label = f"get {remote.name or remote.path}"
            with transfer_bar(label, total, quiet=quiet, completed=offset) as bar:
                if decrypt:
                    _decrypt_body(body, fd, part, bar, decrypt)
                    total = None  # a plaintext length; the ciphertext's was checked as it streamed
                else:
                    _write_body(conn, body, fd, offset, total, bar, timeout)
            size = os.fstat(fd).st_size
        finally:
            os.close(fd)
    if total is not None and size != total:
        raise ClientError(f"length mismatch: expected {total} bytes, have {size} in {part}")
    return _finish(part, out, size, offset)


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


def _decrypt_body(body, fd: int, part: str, bar, decrypt: dict) -> None:
    """Plaintext of a failed decryption is not kept: a wrong key, a cut or a
    tampered file must not leave something that looks like a download."""
    from zcopy.client.crypto import decrypt_stream

    try:
        with os.fdopen(os.dup(fd), "wb") as sink:
            decrypt_stream(CountingReader(body, bar), sink, **decrypt)
        if body.read(1):
            raise ClientError("data after the end of the age file")
    except BaseException:
        os.unlink(part)
        raise


def _partial(part: str) -> tuple[int, str | None]:
    """(bytes already downloaded, their validator) for an existing FILE.part."""
    try:
        size = os.stat(part).st_size
        validator = os.getxattr(part, VALIDATOR_XATTR).decode("latin-1")
    except OSError:
        return 0, None
    return (size, validator) if size and validator else (0, None)


def _remember(fd: int, validator: str | None) -> None:
    try:
        if validator:
            os.setxattr(fd, VALIDATOR_XATTR, validator.encode("latin-1"))
        else:
            os.removexattr(fd, VALIDATOR_XATTR)
    except OSError:
        pass  # no user xattrs here: a later run simply starts over


def _content_range(resp) -> tuple[int | None, int | None, int]:
    m = _CONTENT_RANGE.fullmatch(resp.headers.get("content-range", ""))
    if not m:
        raise ClientError(f"{resp.status} without a usable Content-Range")
    start, end, total = m.groups()
    return (int(start) if start else None, int(end) if end else None, int(total))


def _finish(part: str, out: str, size: int, resumed_at: int) -> Downloaded:
    try:
        os.removexattr(part, VALIDATOR_XATTR)
    except OSError:
        pass
    os.rename(part, out)
    return Downloaded(out, size, resumed_at)
