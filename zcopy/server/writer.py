"""Write methods: PUT (an ``Upload``), DELETE, MOVE, MKCOL.

``Writer.handle`` maps a request to a ``Pending`` (the work runs on the
executor) that resolves to a ``Reply`` or, for PUT, to an ``Upload`` that the
connection feeds: buffered body bytes through
``Upload.write`` and the rest of a fixed-length body straight from the socket
through the upload engine (splice socket->pipe->file where the probe says so).
Filesystem rules (what may be written where, atomic commit) are in
``zcopy.server.writes``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from urllib.parse import unquote, urlsplit

from zcopy import http
from zcopy.server import writes
from zcopy.server.files import OpenFileCache
from zcopy.server.executor import Executor, defer
from zcopy.server.reply import Reply, refusal

WRITE_METHODS = ("PUT", "DELETE", "MOVE", "MKCOL")
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class Upload:
    """A PUT body on its way into a temp file in the target's folder."""

    def __init__(self, target: writes.Target, temp: writes.TempFile, length: int | None,
                 max_upload: int | None, fsync: bool) -> None:
        self.target = target
        self.temp = temp
        self.fd = temp.fd
        self.offset = 0
        self.remaining = length if length is not None else -1   # -1: chunked, unknown
        self.decoder = http.ChunkedDecoder() if length is None else None
        self.max_upload = max_upload
        self.fsync = fsync

    @property
    def chunked(self) -> bool:
        return self.decoder is not None

    @property
    def done(self) -> bool:
        return self.decoder.done if self.decoder is not None else self.remaining == 0

    def write(self, data: bytes) -> bytes:
        """Write body bytes from user space; returns what lies beyond the body
        (the start of a pipelined next request)."""
        if self.decoder is None:
            take = min(len(data), self.remaining)
            self._pwrite(memoryview(data)[:take])
            self.remaining -= take
            return data[take:]
        for piece in self.decoder.feed(data):
            self._pwrite(memoryview(piece))
        return self.decoder.trailing if self.decoder.done else b""

    def advanced(self, moved: int) -> None:
        """The upload engine wrote ``moved`` bytes at ``offset``."""
        self.offset += moved
        self.remaining -= moved

    def _pwrite(self, view: memoryview) -> None:
        if self.max_upload is not None and self.offset + len(view) > self.max_upload:
            raise http.HttpError(413, f"upload larger than {self.max_upload} bytes")
        while view:
            n = os.pwrite(self.fd, view, self.offset)
            self.offset += n
            view = view[n:]

    def commit(self) -> int:
        """Sweep the folder's stale temps, fsync, link and rename (blocks on the
        disk: the writer runs it off the loop). Aborts the upload on failure."""
        try:
            writes.sweep_if_due(self.temp.folder, self.temp.dir_fd)
            with serialized(self.target.path):   # "did it replace a file" is decided alone
                writes.make_parents(self.target)    # a concurrent DELETE may have removed them
                replaced = self.temp.commit(self.target.path, fsync=self.fsync)
        except BaseException:
            self.abort()
            raise
        return 204 if replaced else 201

    def abort(self) -> None:
        self.temp.abort()


class Writer:
    """DELETE, MOVE, MKCOL and an upload's commit run on ``executor`` (the
    request's reply is then a ``Pending``); without one, on the caller's thread."""

    def __init__(self, cache: OpenFileCache, date: http.DateHeader, *, max_upload: int | None = None,
                 fsync: bool = True, executor: Executor | None = None) -> None:
        self.cache = cache
        self.date = date
        self.max_upload = max_upload
        self.fsync = fsync
        self.executor = executor

    def target(self, url_path: str) -> writes.Target:
        return writes.write_target(self.cache.root, url_path, follow_symlinks=self.cache.follow_symlinks,
                                   show_hidden=self.cache.show_hidden)

    def handle(self, req: http.Request, close: bool = False):
        """Reply for DELETE/MOVE/MKCOL; an Upload (or an error reply) for PUT.
        ``close``: the reply must end the connection."""
        if req.method == "PUT":
            self._check_put(req)
            # The path walk, missing folders and the O_TMPFILE open wait on the disk (its journal).
            return defer(self.executor, lambda: self._put(req, self.target(req.path)), _same,
                         self._refuse(close, req.version))
        close = close or not req.keep_alive or bool(req.content_length or req.chunked)
        method = req.method
        if method == "MOVE":
            dest_path = _destination(req.headers.get("destination"), _authority(req))
            overwrite = req.headers.get("overwrite", "T").strip().upper() != "F"
        recursive = method == "DELETE" and _query_flag(req.query, "recursive")

        def work() -> tuple[int, list[str]]:        # off the loop: it walks and changes the disk
            target = self.target(req.path)
            if method == "DELETE":
                with serialized(target.path):
                    writes.delete(target, recursive=recursive)
                return 204, [target.path]
            if method == "MOVE":
                dest = self.target(dest_path)
                with serialized(target.path, dest.path):
                    replaced = writes.move(target, dest, overwrite)
                return 204 if replaced else 201, [dest.path, target.path]
            with serialized(target.path):
                writes.mkcol(target)
            return 201, [target.path]

        def then(done: tuple[int, list[str]]) -> Reply:      # on the loop
            status, changed = done
            for path in changed:
                self.cache.invalidate(path)
            return self.empty(status, close, req.version)

        return defer(self.executor, work, then, self._refuse(close, req.version))

    def _refuse(self, close: bool, version: tuple):
        def refuse(exc: Exception) -> Reply:
            return refusal(exc, self.date.get(), close=close, version=version)
        return refuse

    def _check_put(self, req: http.Request) -> None:
        """What the head alone refuses (before anything touches the disk)."""
        if req.content_length is None and not req.chunked:
            raise http.HttpError(411, "PUT needs Content-Length or chunked encoding")
        if "content-range" in req.headers:
            # RFC 9110 14.5: storing a partial body as the whole file would
            # corrupt it, so a server without partial PUT must refuse.
            raise http.HttpError(400, "partial PUT (Content-Range) is not supported", close=True)
        if self.max_upload is not None and (req.content_length or 0) > self.max_upload:
            raise http.HttpError(413, f"upload larger than {self.max_upload} bytes", close=True)

    def _put(self, req: http.Request, target: writes.Target) -> Upload:
        """Off the loop: the Upload whose temp file waits in the target's folder."""
        if target.exists and os.path.isdir(target.path):
            raise http.HttpError(409, "a folder exists at this path")
        writes.make_parents(target)
        try:
            temp = writes.TempFile(os.path.dirname(target.path))
        except OSError as exc:
            raise http_error_for(exc) from None
        return Upload(target, temp, None if req.chunked else req.content_length, self.max_upload, self.fsync)

    def finish(self, upload: Upload, req: http.Request, *, closing: bool = False):
        """The upload's body is all in: commit it (off the loop); a Pending
        (or, without an executor, the Reply)."""
        close = closing or not req.keep_alive

        def then(status: int) -> Reply:
            self.cache.invalidate(upload.target.path)
            return self.empty(status, close, req.version)

        return defer(self.executor, upload.commit, then, self._refuse(True, req.version))

    def empty(self, status: int, close: bool, version) -> Reply:
        head = http.response_head(status, self.date.get(), b"", None if status == 204 else 0, close=close,
                                  version=version)
        return Reply(status, head, [], 0, close)


#: Writes run on the executor's threads, side by side. Those naming the same
#: path take turns (a check then an act: "did this replace a file", "does the
#: destination exist"), as they did when they ran on the loop. Paths hash to
#: one of these locks; two paths sharing one merely wait for each other.
_STRIPES = [threading.Lock() for _ in range(64)]


@contextlib.contextmanager
def serialized(*paths: str):
    locks = [_STRIPES[i] for i in sorted({hash(p) % len(_STRIPES) for p in paths})]   # one order: no deadlock
    for lock in locks:
        lock.acquire()
    try:
        yield
    finally:
        for lock in reversed(locks):
            lock.release()


def _same(x):
    return x


def http_error_for(exc: OSError) -> http.HttpError:
    """The status for a filesystem error while writing (507 for a full disk)."""
    if exc.errno in _NO_SPACE:
        return http.HttpError(507, "no space left on the server", close=True)
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return http.HttpError(403, f"not writable: {exc.strerror}")
    if exc.errno == errno.ENAMETOOLONG:
        return http.HttpError(400, "a name in the path is too long")
    return http.HttpError(500, f"write failed: {exc.strerror}", close=True)


def _authority(req: http.Request) -> str | None:
    """The host:port this request was sent to: an absolute-form target's
    (RFC 9112 3.2.2 says it wins over Host), else the Host field."""
    if req.target[:1] != b"/":
        try:
            return urlsplit(req.target.decode("latin-1")).netloc or None
        except ValueError:
            return None
    return req.headers.get("host")


def _same_server(netloc: str, authority: str | None) -> bool:
    """``netloc`` names the server ``authority`` reached (case-insensitive,
    ``:80`` the same as no port). Without an authority (an HTTP/1.0 request
    without Host) there is nothing to compare, and the path alone counts."""
    if authority is None:
        return True

    def norm(a: str) -> str:
        a = a.strip().lower()
        return a[:-3] if a.endswith(":80") else a
    return norm(netloc) == norm(authority)


def _destination(value: str | None, authority: str | None) -> str:
    """The local path a MOVE's Destination names. A URL naming another server
    is 502 Bad Gateway (RFC 4918 9.9.4; Apache mod_dav does the same): moving
    the file to a path of *this* server would not be what was asked. Both
    http and https count as ours: behind a TLS-terminating proxy that keeps
    Host, clients name https URLs (Apache's scheme check makes that a 502)."""
    if not value:
        raise http.HttpError(400, "MOVE needs a Destination header")
    try:
        url = urlsplit(value.strip())
        path = url.path
        if url.scheme and (url.scheme.lower() not in ("http", "https") or not _same_server(url.netloc, authority)):
            raise http.HttpError(502, "Destination names another server")
    except ValueError:          # "Invalid IPv6 URL": an unclosed bracket
        raise http.HttpError(400, "malformed Destination URL") from None
    if not path.startswith("/"):
        raise http.HttpError(400, "Destination must be an absolute path or URL")
    decoded = unquote(path, errors="surrogateescape")   # raw bytes, as request paths (zcopy.http)
    if "\x00" in decoded:
        raise http.HttpError(400, "NUL in Destination")
    return decoded


def _query_flag(query: str, name: str) -> bool:
    for pair in query.split("&"):
        key, _, value = pair.partition("=")
        if key == name:
            return value.lower() in ("1", "true", "yes", "")
    return False
