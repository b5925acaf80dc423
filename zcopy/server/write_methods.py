"""Write methods: PUT (an ``Upload``), DELETE, MOVE, MKCOL.

``Writer.handle`` maps a request to a ``Pending``: its filesystem work runs
on the worker's executor (``zcopy.server.executor``), never on the event
loop, and it resolves to a ``Reply`` or, for PUT, to an ``Upload``: a ``FileSink`` (``zcopy.server.body``) the connection feeds,
buffered body bytes through ``write`` and the rest of a fixed-length body
straight from the socket through the upload engine (splice
socket->pipe->file where the probe says so).
Filesystem rules (what may be written where, atomic commit) are in
``zcopy.server.fileops``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from urllib.parse import unquote, urlsplit

from zcopy import http
from zcopy.server import fileops
from zcopy.server.body import FileSink
from zcopy.server.executor import Executor, defer
from zcopy.server.files import OpenFileCache
from zcopy.server.reply import Reply, refusal
from zcopy.server.root import fs_error

WRITE_METHODS = ("PUT", "DELETE", "MOVE", "MKCOL")
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class Upload(FileSink):
    """A PUT body on its way into a temp file in the target's folder (the
    connection moves it in; framing is the protocol's, see ``body.py``)."""

    def __init__(self, writer: "Writer", target: fileops.Target, temp: fileops.TempFile, max_upload: int | None,
                 fsync: bool) -> None:
        super().__init__(temp.fd, max_upload, writer.finish)
        self.target = target
        self.temp = temp
        self.fsync = fsync
        self.replace = True         # False: the uploader may not replace (no d): never replace
        self.mtime_ns: int | None = None        # X-OC-Mtime (rclone, ownCloud clients): set before the rename
        self.identity = None        # who is writing (the gate's Identity; None in unit tests): for the lock check

    def commit(self, check=None) -> int:
        """fsync, link and rename (blocks on the disk: the writer runs it off the loop); ``check()``
        between the fsync and the rename (``fileops.TempFile.commit``)."""
        if self.mtime_ns is not None:
            os.utime(self.temp.fd, ns=(self.mtime_ns, self.mtime_ns))
        try:
            with serialized(self.target.path):   # "did it replace a file" is decided alone
                replaced = self.temp.commit(self.target.place.name, fsync=self.fsync, replace=self.replace,
                                            check=check)
        except FileNotFoundError:
            # Its folder was removed while the body arrived (a DELETE): nothing to rename into.
            raise http.HttpError(409, "the folder was removed during the upload") from None
        self.target.close()
        return 204 if replaced else 201

    def abort(self) -> None:
        """The upload failed or was cut: no temp file, and none of the folders it made."""
        self.temp.abort()
        fileops.undo_parents(self.target)
        self.target.close()


class Writer:
    """Every filesystem operation of a write runs on ``executor`` (the reply is
    then a ``Pending``); without one, on the caller's thread."""

    def __init__(self, cache: OpenFileCache, date: http.DateHeader, *, max_upload: int | None = None,
                 fsync: bool = True, executor: Executor | None = None, make_parents: bool = False) -> None:
        self.cache = cache
        self.date = date
        self.max_upload = max_upload
        self.fsync = fsync
        self.executor = executor
        #: PUT, MOVE and COPY into a missing folder: create it (``serve --make-parents``, the old
        #: behaviour) or answer 409 Conflict (RFC 4918 9.7.1, the default).
        self.make_parents = make_parents
        #: WebDAV (``zcopy.server.dav.Dav``, set by the responder when it has one): a PUT's lock and
        #: If check runs again at its commit, after the fsync and right before the rename.
        self.dav = None
        #: Called off the loop with the URL path a DELETE removed or a MOVE moved away (its locks go).
        self.removed = None

    def parents(self, target: fileops.Target) -> None:
        """The target's missing folders: made (``make_parents``) or 409."""
        if target.place.missing:
            if not self.make_parents:
                raise http.HttpError(409, "the parent folder does not exist")
            fileops.make_parents(target)

    def target(self, url_path: str) -> fileops.Target:
        return fileops.write_target(self.cache.fs, url_path)

    def handle(self, req: http.Request, close: bool = False, rights=None):
        """A Pending of the Reply for DELETE/MOVE/MKCOL, of the Upload (or an
        error reply) for PUT (without an executor: that Reply or Upload).
        ``close``: the reply must end the connection. ``rights``: what the
        requester may do (the gate's ``Rights``: ``need`` raises 401/403,
        ``has`` answers); None: everything (unit tests). What the method needs
        on a new path is asked here, before the walk, so a refused client
        learns nothing of what is there (a walk's 404/409 would tell); what
        replacing needs, once the walk has found something there."""
        refuse = self._refuse(close, req.version)
        if rights is not None:
            rights.need(req.method, req.path, False)
        if req.method == "PUT":
            # The walk, missing folders, the temp sweep and the O_TMPFILE open wait on the disk.
            return defer(self.executor, lambda: self._put(req, self._target_for(req.path, "PUT", rights), rights),
                         _same, refuse)
        close = close or not req.keep_alive or bool(req.content_length or req.chunked)
        method = req.method
        if method == "MOVE":
            dest_url = _destination(req.headers.get("destination"), _authority(req))
            if rights is not None:
                rights.need("MOVE", dest_url, False, destination=True)
            overwrite = req.headers.get("overwrite", "T").strip().upper() != "F"
        if method == "MKCOL" and (req.content_length or req.chunked):
            raise http.HttpError(415, "MKCOL takes no body", close=True)      # RFC 4918 9.3.1
        removed = self.removed

        def work():        # off the loop: it walks and changes the disk
            # Each operation closes the targets it is given (their folder fds), also when it fails.
            target = self.target(req.path)
            if method == "DELETE":
                path = target.path
                # RFC 4918 9.6.1: a folder goes with everything in it (``?recursive=1`` is still accepted).
                with serialized(path):
                    failed = fileops.delete(target, recursive=True)
                if removed is not None:
                    removed(req.path)
                return (207, failed) if failed else 204, [path]
            if method == "MOVE":
                try:
                    dest = self._target_for(dest_url, "MOVE", rights, destination=True)
                except BaseException:
                    target.close()
                    raise
                paths = [dest.path, target.path]
                with serialized(*paths):
                    replaced = fileops.move(target, dest, overwrite, parents=self.make_parents)
                if removed is not None:
                    removed(req.path)
                return 204 if replaced else 201, paths
            path = target.path
            with serialized(path):
                fileops.mkcol(target)
            return 201, [path]

        def then(done) -> Reply:      # on the loop
            status, changed = done
            for path in changed:
                self.cache.invalidate(path)
            self.cache.written()
            if isinstance(status, tuple):
                return self._partial(req.path, status[1], close, req.version)
            return self.empty(status, close, req.version)

        return defer(self.executor, work, then, refuse)

    def _refuse(self, close: bool, version: tuple):
        def refuse(exc: Exception) -> Reply:
            return refusal(exc, self.date.get(), close=close, version=version)
        return refuse

    def _target_for(self, url_path: str, method: str, rights, destination: bool = False) -> fileops.Target:
        """The walked target, once replacing what is there is allowed (w and d: a PUT over a file, a
        MOVE onto one). A PUT without the right to replace must not replace what appears meanwhile
        either: its Upload links instead of renaming (``target.replace``)."""
        target = self.target(url_path)
        target.replace = True
        if rights is None:
            return target
        try:
            if target.exists:
                rights.need(method, url_path, True, destination)
            elif method == "PUT":
                target.replace = rights.has(method, url_path, True)
        except BaseException:
            target.close()
            raise
        return target

    def _put(self, req: http.Request, target: fileops.Target, rights=None) -> Upload:
        try:
            upload = self._start_upload(req, target)
            upload.replace = target.replace
            upload.identity = rights.identity if rights is not None else None
            return upload
        except BaseException as exc:
            fileops.undo_parents(target)
            target.close()
            if isinstance(exc, OSError):
                raise http_error_for(exc) from None
            raise

    def _start_upload(self, req: http.Request, target: fileops.Target) -> Upload:
        if target.is_dir:
            raise http.HttpError(409, "a folder exists at this path")
        if target.slashed:      # "PUT /newdir/": a file name cannot end with a slash
            raise http.HttpError(400, "a file cannot be written to a folder path (ending in /)")
        if req.content_length is None and not req.chunked:
            raise http.HttpError(411, "PUT needs Content-Length or chunked encoding")
        if "content-range" in req.headers:
            # RFC 9110 14.5: storing a partial body as the whole file would
            # corrupt it, so a server without partial PUT must refuse.
            raise http.HttpError(400, "partial PUT (Content-Range) is not supported", close=True)
        if self.max_upload is not None and (req.content_length or 0) > self.max_upload:
            raise http.HttpError(413, f"upload larger than {self.max_upload} bytes", close=True)
        mtime_ns = _oc_mtime(req.headers.get("x-oc-mtime"))
        self.parents(target)
        temp = fileops.TempFile(target.place.dir_fd)
        upload = Upload(self, target, temp, self.max_upload, self.fsync)
        upload.mtime_ns = mtime_ns
        return upload

    def finish(self, upload: Upload, req: http.Request, closing: bool = False):
        """The body is all in: commit it off the loop (a Pending; without an
        executor, the Reply). Where WebDAV locks may exist, or the request has
        an If header, the check made before the body runs again on the commit's
        thread, after the fsync and right before the rename (a LOCK another
        client took while the body arrived or synced is met: 423, nothing
        replaced); the If header's entries are found first, off the loop."""
        close = closing or not req.keep_alive
        dav = self.dav

        def then(status: int) -> Reply:
            self.cache.invalidate(upload.target.path)
            self.cache.written()
            extra = b"X-OC-Mtime: accepted\r\n" if upload.mtime_ns is not None else b""
            return self.empty(status, close, req.version, extra)

        def refuse(exc: Exception) -> Reply:
            if dav is not None and isinstance(exc, http.HttpError):
                return dav.error(exc, True, req.version)        # 423 with its DAV:error body
            return refusal(exc, self.date.get(), close=True, version=req.version)

        def commit_with(check):
            def commit() -> int:        # off the loop
                try:
                    return upload.commit(check)
                except BaseException:
                    upload.abort()
                    raise
            return defer(self.executor, commit, then, refuse)

        if dav is None or not dav.may_refuse(req):
            return commit_with(None)

        def checked(known: dict):
            return commit_with(lambda: dav.check(req, (req.path, False), identity=upload.identity, known=known))

        def not_looked_up(exc: Exception) -> Reply:     # the entries' lookup failed: no commit ran
            upload.abort()
            return refuse(exc)
        try:
            return dav.with_if_entries(req, upload.identity, checked, not_looked_up)
        except BaseException:
            upload.abort()
            raise

    def _partial(self, url: str, failed: list[str], close: bool, version) -> Reply:
        """207 for a DELETE that removed some members and not others (RFC 4918 9.6.1)."""
        from zcopy.dav import multistatus

        base = url.rstrip("/").rsplit("/", 1)[0] + "/"
        body = multistatus.HEAD + b"".join(multistatus.status_response(base + p, False, 403) for p in failed) + \
            multistatus.TAIL
        head = http.response_head(207, self.date.get(), b"", len(body), close=close, version=version,
                                  extra=b"Content-Type: application/xml; charset=utf-8\r\n")
        return Reply(207, head, [body], len(body), close)

    def empty(self, status: int, close: bool, version, extra: bytes = b"") -> Reply:
        head = http.response_head(status, self.date.get(), b"", None if status == 204 else 0, close=close,
                                  version=version, extra=extra)
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
    if exc.errno in (errno.EMFILE, errno.ENFILE):      # 503, as a walk that runs out says
        return fs_error(exc, True)
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
        # A network-path reference ("//host/path", no scheme) names a server too.
        if (url.scheme or url.netloc) and (url.scheme.lower() not in ("", "http", "https")
                                           or not _same_server(url.netloc, authority)):
            raise http.HttpError(502, "Destination names another server")
    except ValueError:          # "Invalid IPv6 URL": an unclosed bracket
        raise http.HttpError(400, "malformed Destination URL") from None
    if not path.startswith("/"):
        raise http.HttpError(400, "Destination must be an absolute path or URL")
    decoded = unquote(path, errors="surrogateescape")   # raw bytes, as request paths (zcopy.http)
    if "\x00" in decoded:
        raise http.HttpError(400, "NUL in Destination")
    return decoded


def _oc_mtime(value: str | None) -> int | None:
    """``X-OC-Mtime: <seconds since the epoch>`` (rclone's owncloud/nextcloud vendors, ownCloud clients):
    the modification time to give the uploaded file, in ns; 400 when it is not a number of seconds."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        raise http.HttpError(400, "X-OC-Mtime must be seconds since the epoch") from None
    if not 0 <= seconds < 1 << 40:
        raise http.HttpError(400, "X-OC-Mtime out of range")
    return int(seconds * 1_000_000_000)


def _query_flag(query: str, name: str) -> bool:
    for pair in query.split("&"):
        key, _, value = pair.partition("=")
        if key == name:
            return value.lower() in ("1", "true", "yes", "")
    return False
