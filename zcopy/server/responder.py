"""Turn one parsed request into a reply plan: head bytes plus body segments.

Everything HTTP-shaped is decided here by calling the sans-I/O functions of
``zcopy.http``; nothing here touches a socket. A body segment is either
``bytes`` (error pages, listings, multipart part headers) or a ``(fd, start,
stop)`` file range that the connection hands to the zero-copy engine.
"""

from __future__ import annotations

import os
import stat as stat_mod
import time
from urllib.parse import quote

from zcopy import http, ui
from zcopy.server import archive
from zcopy.server.auth import CHALLENGE, token_ok
from zcopy.server.dav import DAV_METHODS, Dav
from zcopy.server.digests import CONTENT_TAG, names_content_tag
from zcopy.server.executor import defer
from zcopy.server.files import ENCODINGS, FileEntry, OpenFileCache
from zcopy.server.listings import Listings
from zcopy.server.reply import Pending, Reply, refusal, whole
from zcopy.server.root import TEMP_PREFIX, fs_error
from zcopy.server.routes import Routes, reserved, server_routes
from zcopy.server.writer import WRITE_METHODS, Writer, http_error_for

READ_METHODS = ("GET", "HEAD")
#: The folder page's own policy (zcopy.ui.PAGE_CSP) and no sniffing.
_PAGE_HEADERS = (f"Content-Security-Policy: {ui.PAGE_CSP}\r\nX-Content-Type-Options: nosniff\r\n"
                 "Referrer-Policy: same-origin\r\n").encode()
#: Answers memoized per Date second and Request (``_Answers``); starts over when full.
ANSWERS = 256


class _Answers(dict):
    """The answer memo of one Date second, keyed by what a memoized answer
    depends on: the ``Request`` (one per distinct head's bytes: method,
    path, token, framing, every field) here, the Date second in ``second``.
    Each value is ``(reply, entry)``, good while ``entry.trusted()`` (the
    file unchanged, per its watch)."""

    __slots__ = ("second",)

    def __init__(self, second: bytes) -> None:
        super().__init__()
        self.second = second


class Responder:
    """Answers requests for one worker: reads here, writes through ``Writer``.
    Holds the file cache, the Date header and the access rules."""

    def __init__(self, cache: OpenFileCache, date: http.DateHeader, *, writer: Writer | None = None,
                 token: str | None = None, read_token: str | None = None, routes: Routes | None = None,
                 executor=None) -> None:
        self.cache = cache
        #: folder listings, built on ``executor`` (None: on the caller's thread)
        self.listings = Listings(cache, self._scan, executor)
        self.executor = executor        # the tar walk runs there too
        self.date = date
        self.routes = routes if routes is not None else server_routes(date)   # /.zcopy/...
        self.writer = writer            # None: writes are refused with 403
        self.token = token
        self.read_token = read_token
        #: WebDAV (PROPFIND, PROPPATCH, COPY, LOCK, UNLOCK; locks and If for the writes)
        self.dav = Dav(cache, date, writer, getattr(self.routes, "state", None), executor)
        if writer is not None:
            writer.removed = self.dav.removed       # locks go with what DELETE removes and MOVE moves away
        self.allow = self.dav.allow
        self._answers = _Answers(b"")

    # -- entry points ---------------------------------------------------------

    def respond(self, req: http.Request, closing: bool = False, hashed: bool = False):
        """A Reply, or an ``Upload`` for a PUT whose body must be received.
        ``closing``: the connection ends after this reply (the server is
        draining), so the reply says ``Connection: close`` (RFC 9112 9.6).

        A plain GET or HEAD of a watched file without siblings is answered
        from a memo keyed by what the answer depends on (``_Answers``): the
        Date second and the Request (``HeadCache`` hands out one per distinct
        head), checked against the file's entry (trusted: unchanged).

        ``hashed``: this request already waited for its file's content
        digest (``_after_digest``); answer it with whatever ETag there is."""
        date = self.date.get()
        self.cache.sync()       # another worker's write: nothing cached is trusted unchecked
        answers = self._answers
        if answers.second is not date:      # a new Date second: the last second's answers are stale
            answers = self._answers = _Answers(date)
        if not closing:
            known = answers.get(req)
            if known is not None:
                reply, entry = known
                if entry.trusted(time.monotonic()):
                    return reply
        close = closing or not req.keep_alive
        head_only = req.method == "HEAD"
        has_body = bool(req.content_length or req.chunked)
        try:
            if ".zcopy" in req.path and reserved(req.path):   # the server's own resources, never a file
                close = close or has_body                     # (no route reads a body yet)
                may_read = not self.read_token or token_ok(req.headers.get("authorization"), self.read_token,
                                                           self.token)
                return self.routes.respond(req, close, may_read)
            if req.method in WRITE_METHODS:
                return self._write(req, close or has_body)
            if req.method in DAV_METHODS:
                return self._dav(req, close, has_body)
            # Nothing below reads a body, so the framing of whatever follows
            # one is unknowable: answer (even a refusal) and close, or the
            # body's bytes would be taken for the next request (smuggling).
            close = close or has_body
            if req.method == "OPTIONS":
                # 200 with an empty body, not 204: Windows' WebDAV redirector wants 200.
                head = http.response_head(200, self.date.get(), b"", 0, close=close,
                                          extra=self.dav.options_headers(), version=req.version)
                return Reply(200, head, [], 0, close)
            if req.method not in READ_METHODS:
                raise http.HttpError(405, f"{req.method} is not allowed here",
                                     headers=[("Allow", self.allow)])
            if self.read_token and not token_ok(req.headers.get("authorization"), self.read_token, self.token):
                raise http.HttpError(401, "this server needs a token to read", headers=[CHALLENGE])
            entry = self.cache.lookup(req.path)
            if entry is None:
                return self._directory(req, close, head_only)
            if req.path[-1] == "/":            # "/file.txt/": a file is not a folder
                raise http.HttpError(404, "not found")
            if not (req.plain or hashed) and self.cache.digests is not None \
                    and not entry.etag.startswith(CONTENT_TAG) and names_content_tag(req.headers):
                return self._after_digest(req, entry, closing)
            reply = self._file(req, entry, close, head_only)
            if req.plain and entry.watched and not entry.variants and not closing:
                if len(answers) >= ANSWERS:
                    answers.clear()
                # Filed under ``date``, read before the reply was built: were
                # they seconds apart, the memo misses once instead of serving an old Date.
                answers[req] = (reply, entry)
            return reply
        except http.HttpError as exc:
            if getattr(exc, "body", None) is not None:      # a WebDAV error with its XML body
                return self.dav.error(exc, close or exc.close, req.version)
            return self.error(exc, close=close, head_only=head_only, version=req.version)

    def _dav(self, req: http.Request, close: bool, has_body: bool):
        authorization = req.headers.get("authorization")
        if req.method == "PROPFIND":
            if self.read_token and not token_ok(authorization, self.read_token, self.token):
                raise http.HttpError(401, "this server needs a token to read", headers=[CHALLENGE],
                                     close=close or has_body)
        elif self.writer is not None and not self.may_write(req):
            raise http.HttpError(401, "a valid token is needed to write", headers=[CHALLENGE], close=close or has_body)
        return self.dav.handle(req, close)

    def may_write(self, req: http.Request) -> bool:
        """The one rights check for writes: what the write methods enforce and what the folder page
        asks (``data-write``) before it shows its upload and edit controls."""
        return self.writer is not None and (not self.token or token_ok(req.headers.get("authorization"),
                                                                         self.token))

    def _write(self, req: http.Request, close_on_error: bool):
        if self.writer is None:
            raise http.HttpError(403, "this server is read-only (start it with --allow-write)", close=close_on_error)
        if not self.may_write(req):
            raise http.HttpError(401, "a valid token is needed to write", headers=[CHALLENGE], close=close_on_error)
        if b"#" in req.target:      # a fragment is the client's business: never part of what is changed
            raise http.HttpError(400, "a request target cannot hold a fragment (#)", close=close_on_error)
        try:
            self._check_locks(req)
            return self.writer.handle(req, close_on_error)
        except http.HttpError as exc:
            exc.close = exc.close or close_on_error
            raise
        except OSError as exc:      # ENAMETOOLONG, EACCES...: an answer, not a dropped connection
            err = http_error_for(exc)
            err.close = err.close or close_on_error
            raise err from None

    def _check_locks(self, req: http.Request) -> None:
        """423 when a lock covers what this write changes and its token is not
        in the If header; 412 when the If header does not hold."""
        if self.dav.locks is None and "if" not in req.headers:
            return
        method = req.method
        targets = [(req.path, method in ("DELETE", "MOVE"))]
        if method == "MOVE":
            from zcopy.server.writer import _authority, _destination
            targets.append((_destination(req.headers.get("destination"), _authority(req)), True))
        self.dav.check(req, *targets)

    def error(self, exc: http.HttpError, *, close: bool = True, head_only: bool = False,
              version: tuple = (1, 1)) -> Reply:
        return refusal(exc, self.date.get(), close=close, head_only=head_only, version=version)

    # -- files ----------------------------------------------------------------

    def _after_digest(self, req: http.Request, entry: FileEntry, closing: bool) -> Pending:
        """A conditional request names a content ETag (another node's, or ours from before a
        restart) and this node has not hashed the file yet: answer once it has, so an If-Range
        resume through a balancer gets its 206 instead of the whole file again."""
        pending = Pending()
        self.cache.digests.want(entry.fd, os.fstat(entry.fd),
                                lambda ok: pending.done(self.respond(req, closing, hashed=True)))
        return pending

    def _file(self, req: http.Request, entry: FileEntry, close: bool, head_only: bool) -> Reply:
        headers = req.headers
        if entry.variants:
            coding = http.choose_encoding(headers.get("accept-encoding"),
                                          {c: v.path for c, v in entry.variants.items()})
            if coding is not None:
                entry = self._fresh_variant(req.path, entry, coding)
        size = entry.size
        ranges = None
        if not req.plain:      # preconditions or Range; most requests have neither
            verdict = http.evaluate_preconditions(req.method, headers, entry.etag, entry.mtime, entry.also)
            if verdict == 304:
                extra = f"ETag: {entry.etag}\r\n".encode()
                if b"Vary:" in entry.static:
                    extra += b"Vary: Accept-Encoding\r\n"
                head = http.response_head(304, self.date.get(), b"", None, extra=extra, close=close,
                                          version=req.version)
                return Reply(304, head, [], 0, close)
            if verdict is not None:
                raise http.HttpError(verdict, "precondition failed")
            if "range" in headers and http.if_range_ok(headers.get("if-range"), entry.etag, entry.mtime, entry.also):
                ranges = http.parse_range(headers["range"], size)   # may raise 416
        if ranges is None:
            head = entry.head_200(self.date.get(), close, req.version)
            if head_only or not size:
                return Reply(200, head, [], 0, close)
            reply = entry.reply
            if reply is None or reply.head is not head:    # the head memo moved on: so does this one
                reply = entry.reply = Reply(200, head, entry.whole, size, close, entry)
            return reply
        if len(ranges) == 1:
            start, stop = ranges[0]
            extra = f"Content-Range: bytes {start}-{stop - 1}/{size}\r\n".encode()
            head = http.response_head(206, self.date.get(), entry.static, stop - start, extra=extra,
                                      close=close, version=req.version)
            body = [] if head_only else [(entry.fd, start, stop)]
            return Reply(206, head, body, 0 if head_only else stop - start, close, entry if body else None)
        plan = http.multipart_plan(ranges, size, entry.content_type)
        static = http.static_headers(plan.content_type, entry.mtime, entry.etag, encoding=entry.encoding,
                                     vary=b"Vary:" in entry.static)
        head = http.response_head(206, self.date.get(), static, plan.length, close=close, version=req.version)
        if head_only:
            return Reply(206, head, [], 0, close)
        body: list = []
        for part_head, start, stop in plan.parts:
            body.append(part_head)
            body.append((entry.fd, start, stop))
        body.append(plan.trailer)
        return Reply(206, head, body, plan.length, close, entry)

    def _fresh_variant(self, url_path: str, entry: FileEntry, coding: str) -> FileEntry:
        """A precompressed sibling is only as fresh as its own stat says."""
        variant = entry.variants[coding]
        st = entry.stat_name(ENCODINGS[coding])
        if st is not None and (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) == variant.key:
            return variant
        self.cache.invalidate(entry.path)
        renewed = self.cache.lookup(url_path)
        if renewed is None:
            # Became a folder since the lookup: the old entry is retired and its
            # fd may be closed (its number reused); never answer from it.
            raise http.HttpError(404, "not found (it changed while being answered)")
        if coding not in renewed.variants:
            return renewed
        return renewed.variants[coding]

    # -- directories ----------------------------------------------------------

    def _directory(self, req: http.Request, close: bool, head_only: bool) -> Reply:
        if not req.path.endswith("/"):
            # From the normalised path: "//host/.." must not become a Location
            # a browser takes for another host (scheme-relative).
            location = http.normalised(req.path).rstrip("/") + "/"
            location = quote(location.encode("utf-8", "surrogateescape"), safe="/:@!$&'()*+,;=-._~")
            if req.query:
                location += "?" + req.query
            data = http.redirect_response(location, self.date.get(), close=close, head_only=head_only,
                                          version=req.version)
            return whole(301, data, close)
        if req.query and "download=tar" in req.query.split("&"):
            return self._tar(req, close, head_only)
        try:
            index = self.cache.lookup(req.path + "index.html")
        except http.HttpError:
            index = None
        if index is not None:
            return self._file(req, index, close, head_only)
        as_json = http.wants_json(req.headers.get("accept"))
        # The HTML page's view: its order (``?sort=&order=``) and whether its write controls show.
        view = None if as_json else (*http.sort_request(req.query), self.may_write(req))

        def reply(page) -> Reply:
            return self._listing(req, page, close, head_only)

        def refuse(exc: Exception) -> Reply:
            return refusal(exc, self.date.get(), close=close, head_only=head_only, version=req.version)
        return self.listings.serve(req.path, as_json, reply, refuse, view)

    def _listing(self, req: http.Request, page, close: bool, head_only: bool) -> Reply:
        """The reply for a built listing page (``listings.Page``): its body is
        the page's memfd, sent like a file."""
        # Vary, since Accept picks HTML or JSON; the 304 carries the same.
        extra = f"Cache-Control: no-cache\r\nETag: {page.etag}\r\nVary: Accept\r\n".encode()
        if not req.plain:
            verdict = http.evaluate_preconditions(req.method, req.headers, page.etag, None)
            if verdict == 304:
                head = http.response_head(304, self.date.get(), b"", None, extra=extra, close=close,
                                          version=req.version)
                return Reply(304, head, [], 0, close)
            if verdict is not None:
                raise http.HttpError(verdict, "precondition failed")
        extra = f"Content-Type: {page.content_type}\r\n".encode() + extra
        if page.content_type.startswith("text/html"):
            extra += _PAGE_HEADERS
        head = http.response_head(200, self.date.get(), b"", page.size, extra=extra, close=close,
                                  version=req.version)
        if head_only:
            return Reply(200, head, [], 0, close)
        return Reply(200, head, [(page.fd, 0, page.size)], page.size, close, page)

    def _tar(self, req: http.Request, close: bool, head_only: bool):
        """The folder as a tar (zcopy.server.archive): headers as bytes, file bodies as fd ranges.
        The walk runs on the executor (a Pending), the reply is made on the loop."""
        url_path, show_hidden = req.path, self.cache.show_hidden

        def walk():
            with self.cache.fs.locate(url_path) as place:
                try:
                    dir_fd = place.open_dir()
                except PermissionError:
                    raise http.HttpError(403, "permission denied") from None
                except OSError:
                    raise http.HttpError(404, "not found") from None
            try:
                return archive.plan(dir_fd, show_hidden=show_hidden, at_top=http.normalised(url_path) == "/")
            finally:
                os.close(dir_fd)

        def then(planned) -> Reply:
            body, length, fds = planned
            extra = (f"Content-Type: application/x-tar\r\nContent-Disposition: {archive.disposition(url_path)}\r\n"
                     "Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n").encode()
            head = http.response_head(200, self.date.get(), b"", length, extra=extra, close=close,
                                      version=req.version)
            if head_only:
                fds.close()
                return Reply(200, head, [], 0, close)
            return Reply(200, head, body, length, close, fds)

        def refuse(exc: Exception) -> Reply:
            return refusal(exc, self.date.get(), close=close, head_only=head_only, version=req.version)
        return defer(self.executor, walk, then, refuse)

    def _scan(self, url_path: str) -> tuple[str, int, list]:
        """The folder ``url_path`` names: its path label, an fd of it (the
        caller closes it) and its entries, read from that fd. Blocks on the
        disk: the listings run it off the loop."""
        with self.cache.fs.locate(url_path) as place:
            try:
                dir_fd = place.open_dir()
            except OSError as exc:          # EACCES 403, EMFILE 503 (not 404: the folder is there)
                raise fs_error(exc, False) from None
            folder = place.path
        try:
            return folder, dir_fd, list(self._entries(dir_fd, url_path))
        except BaseException as exc:
            os.close(dir_fd)
            if isinstance(exc, OSError):    # scandir's own fd
                raise fs_error(exc, False) from None
            raise

    def _entries(self, dir_fd: int, url_path: str):
        show_hidden = self.cache.show_hidden
        at_top = http.normalised(url_path) == "/"
        with os.scandir(dir_fd) as it:
            for d in it:
                name = d.name
                if name.startswith(TEMP_PREFIX) or (name.startswith(".") and not show_hidden):
                    continue
                if at_top and name == http.RESERVED:
                    continue            # the server's own namespace, even with --show-hidden
                if d.is_symlink():
                    if not self.cache.follow_symlinks:
                        continue
                    # Listed only where following it would be served: walked as a request would be.
                    st = self.cache.stat(url_path.rstrip("/") + "/" + name)
                else:
                    try:
                        st = d.stat(follow_symlinks=False)     # fstatat on the folder's fd
                    except OSError:
                        st = None
                if st is None:
                    continue
                is_dir = stat_mod.S_ISDIR(st.st_mode)
                if not is_dir and not stat_mod.S_ISREG(st.st_mode):
                    continue            # a FIFO, socket or device is refused (403): not listed either
                yield http.Entry(name, is_dir, 0 if is_dir else st.st_size, st.st_mtime)

