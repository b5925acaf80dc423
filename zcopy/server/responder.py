"""Turn one parsed request into a reply plan: head bytes plus body segments.

Everything HTTP-shaped is decided here by calling the sans-I/O functions of
``zcopy.http``; nothing here touches a socket. A body segment is either
``bytes`` (error pages, listings, multipart part headers) or a ``(fd, start,
stop)`` file range that the connection hands to the zero-copy engine.
"""

from __future__ import annotations

import os
import sys
import traceback
from time import monotonic

from zcopy import http
from zcopy.server.access import Access, Identity
from zcopy.server.dav import DAV_METHODS, Dav
from zcopy.server.digests import CONTENT_TAG, names_content_tag
from zcopy.server.files import ENCODINGS, LATER, FileEntry, OpenFileCache, file_key
from zcopy.server.folders import Folders
from zcopy.server.gate import Gate, Rights, rules_path
from zcopy.server.reply import Pending, Reply, refusal
from zcopy.server.root import fs_error
from zcopy.server.routes import Routes, reserved, server_routes
from zcopy.server.write_methods import WRITE_METHODS, Writer, http_error_for

READ_METHODS = ("GET", "HEAD")
#: The most URLs an If header's ETag conditions may name (each is looked up before the answer:
#: one request must not cost hundreds of opens; clients name the target, perhaps a destination).
MAX_IF_URLS = 16
_SHARE_KINDS = ("share", "share-folder")
#: Who a cookie can sign in: a file read that way is this browser's, not for a shared cache
#: (RFC 9111 3.5 keeps shared caches from storing what answered an Authorization header, not a Cookie).
_COOKIE_KINDS = ("user", "share-folder")
#: Methods that may start or carry a resumable upload without naming one in the query.
_UPLOAD_METHODS = ("POST", "PATCH", "PUT", "OPTIONS")
#: Answers memoized per Date second and Request (``_Answers``); starts over when full.
ANSWERS = 256


class _ReplyMemo:
    """The responder's memo of one file's 200, hung on its entry (``FileEntry.memo``, cleared
    when the entry retires): the head for ``key`` = (Date line, close, HTTP version), what the
    head depends on besides the entry, and the ``Reply`` built on it (None until a body is asked
    for). A request with another key builds a new memo."""

    __slots__ = ("key", "head", "reply")

    def __init__(self, key: tuple, head: bytes) -> None:
        self.key = key
        self.head = head
        self.reply: Reply | None = None


class _Answers(dict):
    """The answer memo of one Date second and one rules generation, keyed by
    what a memoized answer depends on: the ``Request`` (one per distinct
    head's bytes: method, path, credentials, framing, every field) here, the
    Date second in ``second``, the users file's generation
    (``Access.generation``) in ``generation``: the identity a request proves
    is its credentials under that generation, so a reload (a revoked user, a
    changed rule) starts a new memo; and the workers' write stamp
    (``OpenFileCache.writes``) in ``writes``: any write starts one too, after
    ``OpenFileCache.sync`` (so a memo in use means no write since that sync).
    Each value is ``(reply, trust, user)``, good while ``trust.trusted()`` (the
    cache's record of the file's entry: still cached, unchanged per its watch,
    walked less than a TTL ago);
    ``user`` is the name the access log shows. ``reads`` remembers rule
    decisions for the same second and generation."""

    __slots__ = ("second", "generation", "writes", "reads")

    def __init__(self, second: bytes, generation: int = 0, writes: int = -1) -> None:
        super().__init__()
        self.second = second
        self.generation = generation
        self.writes = writes
        #: (id(rules), path) -> whether those rules read that path. The ``id`` is safe: every
        #: ``Rules`` in use belongs to this generation's accounts (or is a module constant), all
        #: alive while this memo is, and a reload starts a new memo.
        self.reads: dict = {}


class Responder:
    """Answers requests for one worker: reads here, writes through ``Writer``.
    Holds the file cache, the Date header and the access rules."""

    def __init__(self, cache: OpenFileCache, date: http.DateHeader, *, writer: Writer | None = None,
                 token: str | None = None, read_token: str | None = None, routes: Routes | None = None,
                 access: Access | None = None, verifier=None, trusted_proxy: str | None = None,
                 shared_throttle=None, sessions=None, executor=None, shares=None) -> None:
        self.cache = cache
        self.executor = executor
        self.date = date
        self.routes = routes if routes is not None else server_routes(date)   # /.zcopy/...
        self.writer = writer            # None: writes are refused with 403
        #: Who is asking and what they may do: the one place (zcopy.server.access).
        self.access = access if access is not None else Access(token=token, read_token=read_token,
                                                               allow_write=writer is not None)
        #: Folder pages, searches and tars (zcopy.server.folders), built on ``executor``.
        self.folders = Folders(cache, date, self.access, executor)
        self.listings = self.folders.listings      # the worker's stats and shutdown reach them here
        #: Who is asking (zcopy.server.gate): tokens, passwords off the loop, cookies, share links.
        self.gate = Gate(self.access, self._checked, self.error, verifier=verifier, shared_throttle=shared_throttle,
                         sessions=sessions, shares=shares, trusted_proxy=trusted_proxy)
        self.shares = shares
        #: WebDAV (PROPFIND, PROPPATCH, COPY, LOCK, UNLOCK; locks and If for the writes)
        self.dav = Dav(cache, date, writer, getattr(self.routes, "state", None), executor)
        self.dav.readable = lambda identity, url: self.access.allows(identity, "GET", rules_path(url), True)
        if writer is not None:
            writer.removed = self.dav.removed       # locks go with what DELETE removes and MOVE moves away
            writer.dav = self.dav                   # a PUT's lock and If check again at its commit
        self.allow = self.dav.allow
        self._answers = _Answers(b"")
        self._writes = cache.writes     # (the same object for the cache's life: one attribute lookup less a request)
        #: Resumable uploads (zcopy.server.uploads), set by the worker when writes and state exist.
        self.uploads = None
        #: The worker's loop, set by the worker: a memoized answer's trust is checked against its
        #: turn's clock (``loop.now``), not a clock read of its own. None (unit tests): ``monotonic()``.
        self.loop = None

    # -- entry points ---------------------------------------------------------

    def respond(self, req: http.Request, closing: bool = False, conn=None):
        """A Reply, an ``Upload`` for a PUT whose body must be received, or a
        ``Pending`` while a password is checked off the loop. ``closing``: the
        connection ends after this reply (the server is draining), so the
        reply says ``Connection: close`` (RFC 9112 9.6). ``conn``: the
        connection asking (its peer address, its remembered sign-in, the user
        name its access log line shows); None in unit tests.

        A plain GET or HEAD of a watched file without siblings is answered
        from a memo keyed by what the answer depends on (``_Answers``): the
        Date second, the rules generation, the workers' write stamp and the
        Request (``HeadCache`` hands out one per distinct head), checked
        against the file's entry (trusted: unchanged)."""
        date = self.date.get()
        answers = self._answers
        generation = self.access.generation
        writes = self._writes[0]
        # stale: a new second, a reload, or some worker wrote (which ``sync`` checks, before
        # any entry is trusted: another worker's write makes every entry re-validate)
        if answers.second is not date or answers.generation != generation or answers.writes != writes:
            self.cache.sync()
            answers = self._answers = _Answers(date, generation, writes)
        if not closing:
            reply = self._memoized(answers, req, conn)
            if reply is not None:
                return reply
        if conn is not None:
            conn.user = "-"     # until someone signs in
        try:
            identity = self.gate.identify(req, closing, conn)
        except http.HttpError as exc:
            close = closing or not req.keep_alive or bool(req.content_length or req.chunked)
            return self.error(exc, close=close, head_only=req.method == "HEAD", version=req.version)
        if identity.__class__ is not Identity:
            return identity             # a Pending (or a Reply: the check was refused)
        return self._respond(req, identity, closing, conn, answers)

    def _memoized(self, answers: _Answers, req: http.Request, conn):
        """The memo's reply to ``req``, if it has one and its file's entry is still trusted."""
        try:
            reply, trust, user = answers[req]       # (compiled: a C call, where .get was a method call)
        except KeyError:
            return None
        if not trust.trusted(monotonic() if self.loop is None else self.loop.now):
            return None
        if conn is not None:
            conn.user = user
        return reply

    def _checked(self, req: http.Request, identity: Identity, closing: bool, conn):
        """The rest of a request whose password the gate checked off the loop."""
        return self._respond(req, identity, closing, conn, None)

    # -- what they asked --------------------------------------------------------

    def _respond(self, req: http.Request, identity: Identity, closing: bool, conn, answers, hashed: bool = False,
                 found: tuple | None = None, etags: dict | None = None):
        """``hashed``: this request already waited for its file's content digest
        (``_after_digest``); answer it with whatever ETag there is. ``found``:
        (the entry,) its lookup found off the loop (``_later``). ``etags``: the entries
        its If header's ETag conditions name, found (off the loop when not cached)."""
        if etags is None and "if" in req.headers and req.method not in READ_METHODS:   # (a read ignores If)
            urls = self.dav.if_etag_urls(req, identity)     # (only what this identity may read)
            if urls:
                close = closing or not req.keep_alive or bool(req.content_length or req.chunked)
                if len(set(urls)) > MAX_IF_URLS:        # each is walked and opened before the answer
                    return self.error(http.HttpError(400, "the If header names too many resources"),
                                      close=close, head_only=req.method == "HEAD", version=req.version)
                return self.cache.with_entries(
                    urls, lambda known: self._with_etags(known, req, identity, closing, conn, hashed, found),
                    lambda exc: self.error(exc, close=close, head_only=req.method == "HEAD", version=req.version))
        if conn is not None:
            conn.user = identity.name
        close = closing or not req.keep_alive
        head_only = req.method == "HEAD"
        has_body = bool(req.content_length or req.chunked)
        access = self.access
        try:
            if ".zcopy" in req.path and reserved(req.path):   # the server's own resources, never a file
                close = close or has_body                     # (no route reads a body yet)
                return self.routes.respond(req, close, self._may_use_routes(identity), identity, conn)
            if self.uploads is not None and (req.query or req.method in _UPLOAD_METHODS):
                reply = self.uploads.route(req, identity, close, conn)   # tus and the IETF draft
                if reply is not None:
                    return reply
            if req.method in WRITE_METHODS:
                return self._write(req, identity, close or has_body)
            if req.method in DAV_METHODS:
                return self._dav(req, identity, close, has_body)
            # Nothing below reads a body, so the framing of whatever follows
            # one is unknowable: answer (even a refusal) and close, or the
            # body's bytes would be taken for the next request (smuggling).
            close = close or has_body
            if req.method == "OPTIONS":
                # 200 with an empty body, not 204: Windows' WebDAV redirector wants 200.
                extra = self.dav.options_headers()
                if self.uploads is not None:        # resumable uploads are offered here (Accept-Patch, Tus-*)
                    extra += self.uploads.options_headers()
                head = http.response_head(200, self.date.get(), b"", 0, close=close, extra=extra,
                                          version=req.version)
                return Reply(200, head, [], 0, close)
            if req.method not in READ_METHODS:
                raise http.HttpError(405, f"{req.method} is not allowed here",
                                     headers=[("Allow", self.allow)])
            path = rules_path(req.path)
            rules = identity.rules
            if rules is None or answers is None or identity.kind in _SHARE_KINDS:   # (a link's rules are its own)
                may_read = access.allows(identity, req.method, path, True)
            else:
                # Rules are answered once per (rules, path) per memo: its second and generation.
                key = (id(rules), path)
                may_read = answers.reads.get(key)
                if may_read is None:
                    if len(answers.reads) >= 4 * ANSWERS:
                        answers.reads.clear()
                    may_read = answers.reads[key] = access.allows(identity, req.method, path, True)
            if not may_read and not access.may_browse(identity, path):
                raise self.gate.refuse(identity, "read here", "this server needs a token to read")
            entry = self.cache.find(req.path) if found is None or _dropped(found[0]) else found[0]
            if entry is LATER:          # not in memory: walked and opened off the loop
                if self.cache.executor is None:
                    entry = self.cache.lookup(req.path)
                else:
                    return self._later(req.path, lambda e: self._respond(req, identity, closing, conn, None, hashed,
                                                                         (e,)),
                                       lambda exc: self.error(exc, close=close, head_only=head_only,
                                                              version=req.version))
            if entry is None:
                if identity.kind == "share":        # a link to a file: never a listing
                    raise http.HttpError(404, "not found")
                return self._directory(req, close, head_only, identity, path)
            if not may_read:            # a folder on the way to something readable, not this file
                raise self.gate.refuse(identity, "read here", "this server needs a token to read")
            if req.path[-1] == "/":            # "/file.txt/": a file is not a folder
                raise http.HttpError(404, "not found")
            if not (req.plain or hashed) and self.cache.digests is not None \
                    and not entry.etag.startswith(CONTENT_TAG) and names_content_tag(req.headers):
                return self._after_digest(req, entry, closing, conn, identity)
            reply = self._file(req, entry, close, head_only, found is not None)
            if reply is LATER:          # its sibling changed: opened again off the loop, then this again
                if self.cache.executor is None:
                    reply = self._file(req, self._renewed(req.path), close, head_only, True)
                else:
                    return self._later(req.path, lambda e: self._respond(req, identity, closing, conn, None, hashed,
                                                                         (e,)),
                                       lambda exc: self.error(exc, close=close, head_only=head_only,
                                                              version=req.version))
            if identity.kind in _COOKIE_KINDS and "cookie" in req.headers and "authorization" not in req.headers:
                reply = _private(reply)
            trust = entry.trust
            if answers is not None and req.plain and trust.watched and not entry.variants and not closing:
                if len(answers) >= ANSWERS:
                    answers.clear()
                # Filed under ``date``, read before the reply was built: were
                # they seconds apart, the memo misses once instead of serving an old Date.
                answers[req] = (reply, trust, identity.name)
            return reply
        except http.HttpError as exc:
            if getattr(exc, "body", None) is not None:      # a WebDAV error with its XML body
                return self.dav.error(exc, close or exc.close, req.version)
            return self.error(exc, close=close, head_only=head_only, version=req.version)

    def _with_etags(self, known: dict, req: http.Request, identity: Identity, closing: bool, conn, hashed: bool,
                    found: tuple | None):
        """``_respond`` with the entries the If header names at hand (``Dav.known_etags``, read by
        the synchronous checks of this answer: no lookup of theirs touches the disk on the loop)."""
        self.dav.known_etags = known
        try:
            return self._respond(req, identity, closing, conn, None, hashed, found, known)
        finally:
            self.dav.known_etags = None

    def _may_use_routes(self, identity: Identity) -> bool:
        """The server's own resources need what reading its top needs; with a users file, any
        signed-in user may use them (they hold no file), and anonymous when ``*`` reads ``/``."""
        if identity.rules is None or identity.kind == "anonymous":
            return self.access.allows(identity, "GET", "/", True)
        return True

    def _dav(self, req: http.Request, identity: Identity, close: bool, has_body: bool):
        """WebDAV's own methods, with the rights of zcopy.accounts.rules: PROPFIND ``r`` (a Depth 1
        listing shows only what ``identity`` may see), PROPPATCH/LOCK/UNLOCK ``w``, COPY ``r`` on the
        source and ``w`` (and ``d`` when it replaces) on the Destination (checked in ``Dav.copy``)."""
        method = req.method
        if method != "PROPFIND" and self.writer is None:
            raise http.HttpError(403, "this server is read-only (start it with --allow-write)", close=close or has_body)
        path = rules_path(req.path)
        if not self.access.allows(identity, method, path, True) and \
                not (method == "PROPFIND" and self.access.may_browse(identity, path)):
            legacy = "this server needs a token to read" if method == "PROPFIND" else "a valid token is needed to write"
            err = self.gate.refuse(identity, "read here" if method == "PROPFIND" else f"{method} here", legacy)
            err.close = err.close or close or has_body
            raise err
        if method == "PROPFIND":
            visible = None if identity.rules is None else \
                (lambda name, folder=path: self.access.may_list(identity, folder, name))
            return self.dav.handle(req, close, visible=visible)
        return self.dav.handle(req, close, rights=Rights(self.gate, identity))

    def may_write(self, identity: Identity, folder: str) -> bool:
        """What the folder page asks (``data-write``) before it shows its upload and edit controls:
        whether ``identity`` may create something in ``folder`` (the write methods themselves ask
        ``Access`` through ``_Rights``)."""
        return self.writer is not None and self.access.allows(identity, "PUT", folder.rstrip("/") + "/x", False)

    def _write(self, req: http.Request, identity: Identity, close_on_error: bool):
        if self.writer is None:
            raise http.HttpError(403, "this server is read-only (start it with --allow-write)", close=close_on_error)
        if b"#" in req.target:      # a fragment is the client's business: never part of what is changed
            raise http.HttpError(400, "a request target cannot hold a fragment (#)", close=close_on_error)
        try:
            self._check_locks(req, identity)
            return self.writer.handle(req, close_on_error, Rights(self.gate, identity))
        except http.HttpError as exc:
            exc.close = exc.close or close_on_error
            raise
        except OSError as exc:      # ENAMETOOLONG, EACCES...: an answer, not a dropped connection
            err = http_error_for(exc)
            err.close = err.close or close_on_error
            raise err from None

    def _check_locks(self, req: http.Request, identity: Identity) -> None:
        """423 when a lock covers what this write changes and its token is not
        in the If header; 412 when the If header does not hold."""
        if not self.dav.may_refuse(req):
            return
        method = req.method
        targets = [(req.path, method in ("DELETE", "MOVE"))]
        if method == "MOVE":
            from zcopy.server.write_methods import _authority, _destination
            targets.append((_destination(req.headers.get("destination"), _authority(req)), True))
        self.dav.check(req, *targets, identity=identity)

    def error(self, exc: http.HttpError, *, close: bool = True, head_only: bool = False,
              version: tuple = (1, 1)) -> Reply:
        return refusal(exc, self.date.get(), close=close, head_only=head_only, version=version)

    # -- files ----------------------------------------------------------------

    def _after_digest(self, req: http.Request, entry: FileEntry, closing: bool, conn, identity) -> Pending:
        """A conditional request names a content ETag (another node's, or ours from before a
        restart) and this node has not hashed the file yet: answer once it has, so an If-Range
        resume through a balancer gets its 206 instead of the whole file again."""
        pending = Pending()
        try:
            taken = self.cache.digests.want(entry.fd, os.fstat(entry.fd),
                                            lambda ok: pending.done(self._respond(req, identity, closing, conn, None,
                                                                                  hashed=True)))
        except OSError:         # no fd for the digest's dup (EMFILE)
            taken = False
        if not taken:           # (or too many files wait for theirs): answer with the ETag there is
            return self._respond(req, identity, closing, conn, None, hashed=True)
        return pending

    def _later(self, url_path: str, answer, refuse) -> Pending:
        """A Pending answered once the cache has resolved ``url_path`` off the
        loop (``OpenFileCache.resolve``): ``answer(entry)``, or ``refuse(exc)``."""
        pending = Pending()

        def done(entry, exc) -> None:
            # On the loop, inside the executor's callbacks: whatever happens, the
            # request gets its answer (an exception here would end the worker).
            try:
                reply = refuse(exc) if exc is not None else answer(entry)
            except OSError as err:          # EMFILE (a digest's dup...): 503, not a dropped request
                reply = refuse(fs_error(err, False))
            except Exception:               # a bug: this request's 500, as Connection.run does
                traceback.print_exc(file=sys.stderr)
                reply = refuse(http.HttpError(500, "internal error", close=True))
            pending.done(reply)
        self.cache.resolve(url_path, done)
        return pending

    def _file(self, req: http.Request, entry: FileEntry, close: bool, head_only: bool, again: bool = False):
        """The reply for ``entry``; LATER when the precompressed sibling it would send changed
        (the entry is dropped: resolve the path off the loop, then answer again). ``again``: this
        is that second answer; a sibling that changed once more is not waited for a second time,
        the file itself is sent."""
        headers = req.headers
        if entry.variants:
            coding = http.choose_encoding(headers.get("accept-encoding"),
                                          {c: v.path for c, v in entry.variants.items()})
            if coding is not None:
                variant = self._fresh_variant(entry, coding)
                if variant is not None:
                    entry = variant
                elif not again:
                    # Dropped: its fds close once no transfer uses them, so never answer from it.
                    self.cache.invalidate(entry.path)
                    return LATER
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
            date = self.date.get()
            key = (date, close, req.version)
            memo = entry.memo
            if memo is None or memo.key != key:     # a new second, or another framing
                memo = entry.memo = _ReplyMemo(key, http.response_head(200, date, entry.static, size, close=close,
                                                                       version=req.version))
            if head_only or not size:
                return Reply(200, memo.head, [], 0, close)
            reply = memo.reply
            if reply is None:
                data = self.cache.held.body(entry)
                if data is None:
                    reply = Reply(200, memo.head, [(entry.fd, 0, size)], size, close, entry)
                else:                   # a small file held in memory: head and body in one send
                    reply = Reply(200, memo.head + data, [], size, close)
                memo.reply = reply
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

    @staticmethod
    def _fresh_variant(entry: FileEntry, coding: str) -> FileEntry | None:
        """A precompressed sibling is only as fresh as its own stat says (an fstatat in the
        folder the entry keeps); None: it changed (the walk and the opens that follow run off
        the loop: ``_file``)."""
        variant = entry.variants[coding]
        st = entry.stat_name(ENCODINGS[coding])
        if st is not None and file_key(st) == variant.key:
            return variant
        return None

    def _renewed(self, url_path: str) -> FileEntry:
        """Without an executor (unit tests): the file opened again here."""
        renewed = self.cache.lookup(url_path)
        if renewed is None:
            # Became a folder since the lookup: the old entry is retired and its
            # fd may be closed (its number reused); never answer from it.
            raise http.HttpError(404, "not found (it changed while being answered)")
        return renewed

    # -- directories ----------------------------------------------------------

    def _directory(self, req: http.Request, close: bool, head_only: bool, identity: Identity,
                   path: str, found: tuple | None = None) -> Reply:
        """A folder: its redirect, tar or search (``zcopy.server.folders``), else its
        ``index.html`` where there is one this identity may read (looked up off the loop when
        not in memory; ``found``: that lookup's entry), else its listing."""
        folders = self.folders
        if not req.path.endswith("/"):
            return folders.redirect(req, close, head_only)
        asked = folders.asked(req, identity, path, close, head_only)
        if asked is not None:
            return asked
        try:
            index = self.cache.find(req.path + "index.html") if found is None or _dropped(found[0]) else found[0]
            if index is LATER:          # resolved off the loop, then this again
                if self.cache.executor is None:
                    index = self.cache.lookup(req.path + "index.html")
                else:
                    return self._index_later(req, close, head_only, identity, path)
        except http.HttpError:
            index = None
        if index is not None and self.access.allows(identity, req.method, path.rstrip("/") + "/index.html", True):
            reply = self._file(req, index, close, head_only, found is not None)
            if reply is not LATER:
                return reply
            if self.cache.executor is None:
                return self._file(req, self._renewed(req.path + "index.html"), close, head_only, True)
            return self._index_later(req, close, head_only, identity, path)
        return folders.page(req, identity, path, close, head_only, self.may_write(identity, path))

    def _index_later(self, req: http.Request, close: bool, head_only: bool, identity: Identity,
                     path: str) -> Pending:
        """The folder answered again once its ``index.html`` is resolved off the loop: gone or
        refused (4xx) means the listing; out of fds (503) or a fault is that error."""
        def again(entry) -> Reply:
            try:
                return self._directory(req, close, head_only, identity, path, (entry,))
            except http.HttpError as exc:
                return self.error(exc, close=close, head_only=head_only, version=req.version)
        return self._later(req.path + "index.html", again,
                           lambda exc: again(None) if getattr(exc, "status", 500) < 500 else
                           self.error(exc, close=close, head_only=head_only, version=req.version))


def _dropped(entry: FileEntry | None) -> bool:
    """Whether the entry an off-loop lookup found was dropped before this waiter's turn: an
    earlier waiter of the same lookup (answered first, on the loop) found the file gone or
    changed, and the entry's fd is closed (its number may be reused): never answer from it."""
    return entry is not None and entry.retired


def _private(reply: Reply) -> Reply:
    """``reply`` with ``Cache-Control: private`` (a file read by a signed-in browser: a shared cache
    between it and us must not hand it to the next visitor). Replies are never changed: a copy."""
    head = reply.head
    end = head.index(b"\r\n\r\n") + 2     # (a small file's body may follow in the same bytes)
    if b"\r\nCache-Control:" in head[:end]:
        return reply
    return Reply(reply.status, head[:end] + b"Cache-Control: private\r\n" + head[end:], reply.body,
                 reply.length, reply.close, reply.entry)
