"""The WebDAV methods (RFC 4918 class 1 and 2) on top of the file server.

``Dav.handle`` answers PROPFIND, PROPPATCH, COPY, LOCK and UNLOCK; the
responder sends those here and keeps PUT, DELETE, MOVE and MKCOL in the
writer, asking ``Dav.check`` first (locks and the If header). The pieces that
know the protocol's syntax are in ``zcopy.dav`` (bodies, If header,
Multi-Status, dead properties, the lock table); this module walks ROOT (every
file operation relative to a folder fd, as ``zcopy.server.root`` says) and
decides statuses.

Request bodies (PROPFIND, PROPPATCH, LOCK) are read into a ``MemorySink``
bounded by ``xmlbody.MAX_BODY``, then parsed; a malformed one is 400 and
changes nothing. The work that walks folders or reads attributes (PROPFIND,
PROPPATCH, COPY, LOCK's lock-null file) runs through ``_defer``: on the
worker's executor when it has one (the reply is then a ``Pending``), else on
the caller's thread.

Locks live in the state database (``zcopy.dav.locks``), shared by every
worker. Without a state folder the server is class 1 only (``DAV: 1``, no
LOCK). Each account is its own lock principal (``principal``): one account cannot
use or remove another's lock.
"""

from __future__ import annotations

import collections
import errno
import math
import os
import stat as stat_mod
import threading
import time
from urllib.parse import unquote, urlsplit
from xml.sax.saxutils import escape

from zcopy import http
from zcopy.dav import deadprops, ifheader, multistatus, xmlbody
from zcopy.dav.locks import INFINITY, LockError, LockTable, beneath_in, covering_in, normalise, parse_timeout
from zcopy.server import davcopy, fileops, propfind
from zcopy.server.body import MemorySink
from zcopy.server.executor import collector_paused
from zcopy.server.listings import Listings
from zcopy.server.reply import Reply

DAV_METHODS = ("PROPFIND", "PROPPATCH", "COPY", "LOCK", "UNLOCK")
BODY_METHODS = ("PROPFIND", "PROPPATCH", "LOCK")
PRINCIPAL = "token"


def principal(identity) -> str:
    """Who owns a lock (RFC 4918 6.4: only its owner may use or remove it). Each account is its own
    principal, and so is each minter's share links; tokens and the anonymous writers of an open
    server stay the one principal they were before accounts (``PRINCIPAL``)."""
    if identity is None:
        return PRINCIPAL
    if identity.kind == "user":
        return "user:" + identity.name
    if identity.kind.startswith("share"):
        return identity.name            # "share:<minter>"
    return PRINCIPAL
#: Members whose rendered responses a worker remembers across PROPFIND page builds (0.5-1 KiB each).
MEMO_MEMBERS = 50_000
XML = b"Content-Type: application/xml; charset=utf-8\r\n"
_OPEN = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC
_DAV_LIVE = set(multistatus.LIVE) | set(multistatus.QUOTA)


def _ident(st) -> tuple:
    return st.st_dev, st.st_ino


def _error_body(condition: str) -> bytes:
    return (f'<?xml version="1.0" encoding="utf-8"?>\n<D:error xmlns:D="DAV:">{condition}</D:error>\n').encode()


class DavError(http.HttpError):
    """An error answered with an RFC 4918 ``DAV:error`` body (a precondition element)."""

    def __init__(self, status: int, reason: str, condition: str, **kw) -> None:
        super().__init__(status, reason, **kw)
        self.body = _error_body(condition)


def url_of(href: str) -> str:
    """The decoded path of a URL or path in a header (Destination, If's tags)."""
    return unquote(urlsplit(href.strip()).path, errors="surrogateescape")


class Dav:
    def __init__(self, cache, date: http.DateHeader, writer, state=None, executor=None) -> None:
        self.cache = cache
        self.date = date
        self.writer = writer                   # None: read-only (PROPFIND only)
        self.executor = executor
        #: url -> entry (None: a folder; an HttpError: nothing there) found off the loop for the
        #: If header of the request being answered now (``Responder``); None between requests
        self.known_etags: dict | None = None
        #: ``readable(identity, url)``: whether ``identity`` may read ``url`` (set by the responder).
        #: What it may not read has no ETag for its If header: no oracle for its bytes or existence.
        self.readable = None
        #: PROPFIND Depth 1 Multi-Status pages, kept like folder listings (zcopy.server.propfind)
        self.pages = Listings(cache, None, executor, build=self._page)
        #: (url, view) -> propfind.Members: the members of each kept page as its last build saw them
        self._memos: collections.OrderedDict = collections.OrderedDict()
        self._memo_lock = threading.Lock()
        if hasattr(cache, "listeners"):
            cache.listeners.append(self._members_changed)
        self.locks = None
        if state is not None and writer is not None:
            from zcopy.server.shared import lock_horizon
            self.locks = LockTable(state, *lock_horizon())
            if self.locks.horizon[0] == math.inf:     # the first worker: learn it (and drop expired locks)
                self._defer(self._learn_horizon, lambda n: None, False, (1, 1))
        self.compliance = "1, 2" if self.locks is not None else "1"
        methods = ["GET", "HEAD", "OPTIONS", "PROPFIND"]
        if writer is not None:
            methods += ["PUT", "DELETE", "MKCOL", "COPY", "MOVE", "PROPPATCH"]
            if self.locks is not None:
                methods += ["LOCK", "UNLOCK"]
        self.allow = ", ".join(methods)

    # -- entry ----------------------------------------------------------------

    def options_headers(self) -> bytes:
        return f"Allow: {self.allow}\r\nDAV: {self.compliance}\r\nMS-Author-Via: DAV\r\n".encode()

    def handle(self, req: http.Request, close: bool, *, visible=None, rights=None):
        """A Reply, a Pending, or a MemorySink for the XML body. ``close``: the
        reply must end the connection (not counting an unread body: a sink reads it).
        ``visible(name)``: whether a Depth 1 PROPFIND shows a member (accounts);
        ``rights``: the gate's ``Rights``, for what COPY needs on its Destination."""
        method = req.method
        if method != "PROPFIND" and self.writer is None:
            raise http.HttpError(403, "this server is read-only (start it with --allow-write)",
                                 close=close or _has_body(req))
        if method in ("LOCK", "UNLOCK") and self.locks is None:
            raise http.HttpError(405, f"{method} needs a state folder", headers=[("Allow", self.allow)],
                                 close=close or _has_body(req))
        if method in BODY_METHODS and _has_body(req):
            def complete(sink: MemorySink, r: http.Request, closing: bool):
                try:
                    return self._dispatch(r, bytes(sink.data), close or closing, visible, rights)
                except http.HttpError as exc:
                    return self.error(exc, close or closing or exc.close, r.version)
            return MemorySink(xmlbody.MAX_BODY, complete)
        if _has_body(req):
            close = True            # a body nobody reads: its framing ends the connection
        return self._dispatch(req, b"", close, visible, rights)

    def _dispatch(self, req: http.Request, body: bytes, close: bool, visible=None, rights=None):
        try:
            if req.method == "PROPFIND":
                return self.propfind(req, body, close, visible)
            identity = rights.identity if rights is not None else None
            if req.method == "PROPPATCH":
                return self.proppatch(req, body, close, identity)
            if req.method == "COPY":
                return self.copy(req, close, rights)
            if req.method == "LOCK":
                return self.lock(req, body, close, identity)
            return self.unlock(req, close, identity)
        except xmlbody.XmlError as exc:
            raise http.HttpError(400, str(exc), close=close) from None

    def error(self, exc: http.HttpError, close: bool, version) -> Reply:
        body = getattr(exc, "body", None)
        if body is None:
            data = http.error_response(exc.status, self.date.get(), reason=exc.reason, headers=exc.headers,
                                       close=close, version=version)
            return Reply(exc.status, data, [], len(data) - data.index(b"\r\n\r\n") - 4, close)
        return self._xml(exc.status, body, close, version)

    def _xml(self, status: int, body: bytes, close: bool, version, extra: bytes = b"") -> Reply:
        head = http.response_head(status, self.date.get(), b"", len(body), extra=XML + extra, close=close,
                                  version=version)
        return Reply(status, head, [body], len(body), close)

    def _defer(self, work, then, close: bool, version, cpu: bool = False):
        """``then(work())``: ``work`` off the loop where there is an executor."""
        def refuse(exc: Exception) -> Reply:
            if isinstance(exc, http.HttpError):
                return self.error(exc, close or exc.close, version)
            if isinstance(exc, OSError):
                return self.error(writes_error(exc), True, version)
            raise exc
        if self.executor is not None:
            from zcopy.server.executor import defer      # the executor's seam (zcopy/server/executor.py)
            return defer(self.executor, work, then, refuse, cpu=cpu)
        try:
            return then(work())
        except (http.HttpError, OSError) as exc:
            return refuse(exc)

    # -- locks and the If header --------------------------------------------------

    def check(self, req: http.Request, *targets: tuple[str, bool], identity=None, known: dict | None = None) -> None:
        """Before a write: the If header must hold (412 otherwise), and every
        lock covering each ``(url, recursive)`` target must have its token in
        it, submitted by the lock's owner (423 otherwise). ``known``: the entries
        the If header's ETag conditions name, found beforehand (``check_off_loop``:
        this runs on an executor thread then, and never asks the cache)."""
        value = req.headers.get("if")
        try:
            clauses = ifheader.parse(value) if value else []
        except ifheader.IfHeaderError as exc:
            raise http.HttpError(400, str(exc)) from None
        submitted = ifheader.tokens(clauses)
        now = time.time()
        if clauses and not self._if_holds(req.path, clauses, now, identity, known):
            raise http.HttpError(412, "the If header's conditions do not hold")
        if self.locks_may_exist(now):
            who = principal(identity)
            live = self.locks.live()                 # from memory while the table has not changed
            for url, recursive in targets:
                key = _key(url)
                found = covering_in(live, key, now) + (beneath_in(live, key, now) if recursive else [])
                missing = [lk for lk in found if lk.token not in submitted or lk.principal != who]
                if missing:
                    hrefs = "".join(f"<D:href>{multistatus.href(lk.root, False)}</D:href>" for lk in missing[:1])
                    raise DavError(423, "locked", f"<D:lock-token-submitted>{hrefs}</D:lock-token-submitted>")

    def check_off_loop(self, req: http.Request, targets: list, identity, then, refuse):
        """``check``, with nothing that can wait for the disk on the loop (a resumable upload's
        check when an append will complete it, long after the request's own lookups): the
        entries its If header's ETag conditions name are found as a GET finds them
        (``with_if_entries``), then ``check``, which may read the lock table, runs on the
        executor with them. On the loop: ``then(None)``, or ``refuse(exc)`` for the 412/423 (or
        any error) it raised. Returns what they return, or a ``Pending`` of it."""
        from zcopy.server.executor import defer

        def checked(known: dict):
            return defer(self.executor, lambda: self.check(req, *targets, identity=identity, known=known),
                         then, refuse)
        return self.with_if_entries(req, identity, checked, refuse)

    def with_if_entries(self, req: http.Request, identity, then, refuse):
        """``then(known)``: ``known`` the entries the If header's ETag conditions name (those
        ``identity`` may read), found as a GET finds them (``OpenFileCache.with_entries``: from
        memory, else walked and opened off the loop), for a ``check(..., known=known)`` on a
        thread (a resumable upload's commit runs it there, right before its rename)."""
        urls = self.if_etag_urls(req, identity)
        if not urls:
            return then({})
        return self.cache.with_entries(urls, then, refuse)

    def may_refuse(self, req: http.Request) -> bool:
        """Whether ``check`` can refuse this write: locks may be kept (a state folder) or it has an
        If header. False: the check is skipped, with nothing looked up."""
        return self.locks is not None or "if" in req.headers

    def _if_holds(self, request_url: str, clauses, now: float, identity=None, known: dict | None = None) -> bool:
        for clause in clauses:
            try:
                url = request_url if clause.resource is None else url_of(clause.resource)
            except ValueError as exc:       # urlsplit: "Invalid IPv6 URL"... the client's error
                raise http.HttpError(400, f"a URL in the If header does not parse ({exc})") from None
            # Only a clause comparing ETags needs the file's (its entry was found off the loop,
            # ``if_etag_urls``); one with lock tokens only must not look the file up here.
            readable = self.readable
            if not any(c.etag for conds in clause.lists for c in conds) or \
                    readable is not None and identity is not None and not readable(identity, url):
                etags = ()          # (compared as nothing there: an account learns nothing it may not read)
            else:
                etags = self._etags(url, known)
            tokens = {lk.token for lk in covering_in(self.locks.live(), _key(url), now)} \
                if self.locks_may_exist(now) else set()
            for conds in clause.lists:
                if all(c.negated != ((c.token in tokens) if c.token else (c.etag in etags))
                       for c in conds):
                    return True
        return False

    def _learn_horizon(self) -> None:
        """Sweep the lock table (off the loop), which stores the horizon and generation words. A
        database that cannot be written now leaves the horizon unknown: checks then read the table."""
        try:
            self.locks.sweep(time.time())
        except Exception as exc:              # sqlite3.Error, OSError: nothing to answer, no worker to stop
            import sys
            print(f"zcopy: the lock table could not be swept ({exc}); lock checks read it", file=sys.stderr)

    def locks_may_exist(self, now: float) -> bool:
        """Whether a lock may be live now: False (the common case) is known from shared memory
        (``LockTable.may_exist``), with no sqlite read."""
        return self.locks is not None and self.locks.may_exist(now)

    def if_etag_urls(self, req: http.Request, identity=None) -> list[str]:
        """The URLs whose current ETag the request's If header compares (none without one), of
        those ``identity`` may read (``readable``: the check compares no other ETag). The
        responder finds their entries off the loop first (``known_etags``)."""
        value = req.headers.get("if")
        if not value:
            return []
        try:
            clauses = ifheader.parse(value)
        except ifheader.IfHeaderError:
            return []                   # (``check`` answers 400)
        urls = []
        for clause in clauses:
            if any(c.etag for conds in clause.lists for c in conds):
                try:
                    urls.append(req.path if clause.resource is None else url_of(clause.resource))
                except ValueError:
                    pass
        readable = self.readable
        if readable is not None and identity is not None:
            urls = [u for u in urls if readable(identity, u)]
        return urls

    def _etags(self, url: str, given: dict | None = None) -> tuple:
        """The strong ETags that name ``url``'s current bytes (its ETag, and this node's own
        tag once the content digest is shown instead: a GET's conditions accept both), none
        for nothing there or a folder: from the entries the responder found off the loop for
        this request (``known_etags``) or handed to ``check`` (``given``: then never the
        cache, which belongs to the loop), else the cache (a lookup on the loop)."""
        known = self.known_etags if given is None else given
        if known is not None and url in known:
            entry = known[url]
        elif given is not None:
            return ()               # (not named by the If header's ETag conditions: not compared)
        else:
            try:
                entry = self.cache.lookup(url)
            except http.HttpError:
                return ()
        return () if entry is None or isinstance(entry, http.HttpError) else (entry.etag, *entry.also)

    def _lockdiscovery(self, locks) -> str:
        return "".join(_activelock(lk) for lk in locks)

    # -- PROPFIND -------------------------------------------------------------------

    def propfind(self, req: http.Request, body: bytes, close: bool, visible=None):
        depth = req.headers.get("depth", "infinity").strip().lower()
        if depth == "infinity":
            raise DavError(403, "Depth infinity is not supported", "<D:propfind-finite-depth/>", close=close)
        if depth not in ("0", "1"):
            raise http.HttpError(400, "Depth must be 0, 1 or infinity", close=close)
        asked = xmlbody.propfind(body)
        url = req.path

        def then(page) -> Reply:
            head = http.response_head(207, self.date.get(), b"", page.size, extra=XML, close=close,
                                      version=req.version)
            return Reply(207, head, [(page.fd, 0, page.size)], page.size, close, page)

        def refuse(exc: Exception) -> Reply:
            if isinstance(exc, http.HttpError):
                return self.error(exc, close or exc.close, req.version)
            if isinstance(exc, OSError):
                return self.error(writes_error(exc), True, req.version)
            raise exc

        quota = any(n in multistatus.QUOTA for _, n in asked.names)
        if depth == "1" and visible is None and not quota and not self.locks_may_exist(time.time()):
            # Kept per folder and asked set, dropped on any change as listings are (``Listings``).
            view = ("propfind", asked.kind, tuple(asked.names))
            self._arm((url, view))
            return self.pages.serve(url, False, then, refuse, view)
        def work() -> propfind.Body:
            with collector_paused():
                page = self._build(url, depth, asked, visible)
            page.forget_folder()
            return propfind.Body(page.fd, page.size)     # not kept: closes when its reply is done
        return self._defer(work, then, close, req.version, cpu=depth == "1")

    def _members_changed(self, fs_path: str | None) -> None:
        """The file cache's change notice (loop thread): the member names each memo must re-stat."""
        with self._memo_lock:
            for members in self._memos.values():
                members.changed(fs_path)

    def _arm(self, key: tuple) -> None:
        """Before a kept page is served or built (loop thread): every event queued so far is applied
        (the page dropped, the named members marked), then the folder's watch token is noted for the
        next build (``propfind.Members``)."""
        watch = self.cache.watch
        if watch is None:
            return
        self.cache.apply_changes()
        with self._memo_lock:
            members = self._memos.get(key)
            if members is not None and members.folder is not None:
                members.armed = watch.token(members.folder)

    def _page(self, _scan, url: str, _as_json: bool, view: tuple, _keep) -> propfind.DavPage:
        """``Listings``' build for PROPFIND's kept pages (Depth 1, no locks, no quota, no account filter),
        off the loop. The members' responses of the page's last build are reused: re-stat'ing only the
        members the folder's watch named since then when that is known to be all that changed
        (``propfind.Members``), else re-stat'ing every member and re-rendering those whose stat moved
        (``propfind.write_members``' memo). ``Listings`` runs one build per page at a time."""
        key = (url, view)
        with self._memo_lock:
            members = self._memos.get(key)
            if members is None:
                members = self._memos[key] = propfind.Members()
            self._memos.move_to_end(key)
            dirty = members.begin(time.monotonic())
        ok = False
        try:
            with collector_paused():            # docs/webdav.md "PROPFIND": no collection mid-build
                page = self._build(url, "1", xmlbody.PropFind(view[1], list(view[2])), None, members, dirty)
            ok = True
            return page
        finally:
            with self._memo_lock:
                if not ok:
                    members.whole = True
                total = sum(len(m.memo) for m in self._memos.values())
                while total > MEMO_MEMBERS and len(self._memos) > 1:
                    total -= len(self._memos.pop(next(iter(self._memos))).memo)

    def _build(self, url: str, depth: str, asked: xmlbody.PropFind, visible, members=None,
               dirty=None) -> propfind.DavPage:
        """The Multi-Status of a PROPFIND, written into a memfd (off the loop): a ``listings.Page``
        whose memfd closes once no reply holds it (``propfind.Body`` for one not kept)."""
        show_hidden = self.cache.show_hidden
        digests = getattr(self.cache, "digests", None)
        locks = self.locks

        def etag_of(st) -> str | None:          # what a GET shows (any thread)
            if stat_mod.S_ISDIR(st.st_mode):
                return None
            local = http.make_etag(st)
            return local if digests is None else digests.shown(st, local)

        def overrides(stats: list, newest=None) -> dict:   # where etag_of is not the local ETag: index -> it
            return {} if digests is None else digests.overrides(stats, newest)

        now = time.time()
        started = time.monotonic()
        held = []
        if self.locks_may_exist(now):
            held = locks.covering(_key(url), now) + (locks.beneath(_key(url), now) if depth == "1" else [])
        with self.cache.fs.locate(url) as place:
            try:
                st = os.stat(place.name, dir_fd=place.dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                raise http.HttpError(404, "not found") from None
            if not (stat_mod.S_ISDIR(st.st_mode) or stat_mod.S_ISREG(st.st_mode)):
                raise http.HttpError(404, "not found")
            is_dir = stat_mod.S_ISDIR(st.st_mode)
            if not is_dir and url.endswith("/"):
                raise http.HttpError(404, "not found")
            fd = os.open(place.name, _OPEN, dir_fd=place.dir_fd)
            out = -1
            try:
                quota = propfind.quota(fd) if any(n in multistatus.QUOTA for _, n in asked.names) else None
                out = propfind.new_body()
                size = propfind.write(out, multistatus.HEAD + _props(
                    url, st, lambda: deadprops.get_all(fd), asked, etag_of(st), held, quota))
                if is_dir and depth == "1":
                    plan = propfind.Plan(asked, quota)

                    def slow(member_url: str, mst, wants_dead: bool) -> str:
                        name = member_url.rsplit("/", 1)[1]
                        dead = (lambda: _dead_of(fd, name)) if wants_dead else dict
                        return _props(member_url, mst, dead, asked, etag_of(mst), held, quota).decode(
                            "utf-8", "surrogateescape")
                    if members is not None and dirty is not None and not held and \
                            members.token[1] == _ident(os.fstat(fd)):
                        size += propfind.update_members(out, fd, url, plan, members.memo, dirty, overrides,
                                                        slow, show_hidden=show_hidden, visible=visible)
                    else:
                        if members is not None:
                            members.folder = place.path
                            if held:                      # the memo is neither used nor refreshed
                                with self._memo_lock:
                                    members.whole = True
                            else:
                                members.full_at = started
                        entries = propfind.members(fd, url, show_hidden=show_hidden, visible=visible)
                        size += propfind.write_members(out, fd, url, plan, entries, overrides, held, slow,
                                                       None if members is None else members.memo)
                size += propfind.write(out, multistatus.TAIL)
                # The folder whose changes make the page stale (watched by the kept pages' cache).
                watched = os.dup(fd) if is_dir else os.dup(place.dir_fd)
                page = propfind.DavPage(out, size, "", "application/xml", place.path if is_dir else place.folder,
                                        watched, volatile=bool(held))
                out = -1
                return page
            finally:
                os.close(fd)
                if out >= 0:
                    os.close(out)

    # -- PROPPATCH --------------------------------------------------------------------

    def proppatch(self, req: http.Request, body: bytes, close: bool, identity=None):
        changes = xmlbody.proppatch(body)
        self.check(req, (req.path, False), identity=identity)
        root, url = self.cache.fs, req.path

        def work() -> bytes:
            with root.locate(url) as place:
                try:
                    fd = os.open(place.name, _OPEN, dir_fd=place.dir_fd)
                except FileNotFoundError:
                    raise http.HttpError(404, "not found") from None
                try:
                    st = os.fstat(fd)
                    protected = [c.name for c in changes if c.name[0] == xmlbody.DAV and c.name[1] in _DAV_LIVE]
                    groups: dict[int, list[str]] = {}
                    if protected:
                        for c in changes:
                            status = 403 if c.name in protected else 424
                            groups.setdefault(status, []).append(multistatus.empty_element(*c.name))
                    else:
                        try:
                            if any(not c.remove for c in changes):
                                _mark(place.dir_fd, changes)     # Depth 1 listings look for them there
                            deadprops.apply(fd, changes)
                            _win32_times(fd, changes)
                            groups[200] = [multistatus.empty_element(*c.name) for c in changes]
                        except deadprops.DeadPropError as exc:
                            for c in changes:
                                status = exc.status if c.name == exc.name else 424
                                groups.setdefault(status, []).append(multistatus.empty_element(*c.name))
                finally:
                    os.close(fd)
            return multistatus.HEAD + multistatus.response(url, stat_mod.S_ISDIR(st.st_mode), groups) + \
                multistatus.TAIL

        def then(data: bytes) -> Reply:
            return self._xml(207, data, close, req.version)

        return self._defer(work, then, close, req.version)

    # -- COPY ---------------------------------------------------------------------------

    def copy(self, req: http.Request, close: bool, rights=None):
        from zcopy.server.write_methods import _authority, _destination

        dest_url = _destination(req.headers.get("destination"), _authority(req))
        depth = req.headers.get("depth", "infinity").strip().lower()
        if depth not in ("0", "infinity"):
            raise http.HttpError(400, "COPY takes Depth 0 or infinity")
        overwrite = req.headers.get("overwrite", "T").strip().upper() != "F"
        self.check(req, (dest_url, True), identity=rights.identity if rights is not None else None)
        writer, src_url = self.writer, req.path

        def work():
            source = writer.target(src_url)
            try:
                dest = writer.target(dest_url)
            except BaseException:
                source.close()
                raise
            with source, dest:
                if rights is not None:      # rules are plain data: asking them here is safe off the loop
                    rights.need("COPY", dest_url, dest.exists, destination=True)
                    if source.is_dir and not rights.whole_tree(src_url):
                        raise http.HttpError(403, "part of this folder is not yours to read: it cannot be copied whole")
                return _copy(writer, source, dest, depth == "infinity", overwrite)

        def then(done) -> Reply:
            status, failures = done
            self.cache.invalidate()
            self.cache.written()
            if failures:
                data = multistatus.HEAD + b"".join(multistatus.status_response(u, u.endswith("/"), s)
                                                   for u, s in failures) + multistatus.TAIL
                return self._xml(207, data, close, req.version)
            return writer.empty(status, close, req.version)

        return self._defer(work, then, close, req.version)

    # -- LOCK / UNLOCK ------------------------------------------------------------------

    def lock(self, req: http.Request, body: bytes, close: bool, identity=None):
        info = xmlbody.lockinfo(body)
        who = principal(identity)
        timeout = parse_timeout(req.headers.get("timeout"))
        now = time.time()
        url = req.path
        if info is None:                                     # a refresh
            value = req.headers.get("if")
            try:
                submitted = ifheader.tokens(ifheader.parse(value)) if value else set()
            except ifheader.IfHeaderError as exc:
                raise http.HttpError(400, str(exc)) from None
            locks = self.locks

            def renew():
                try:
                    return locks.refresh(_key(url), submitted, who, timeout, now)
                except LockError as exc:
                    raise http.HttpError(exc.status, str(exc)) from None
            return self._defer(renew, lambda lk: self._lock_reply(200, lk, close, req.version), close, req.version)
        depth = req.headers.get("depth", "infinity").strip().lower()
        if depth not in ("0", "infinity"):
            raise http.HttpError(400, "LOCK takes Depth 0 or infinity")
        self.check(req, identity=identity)   # the If header only: a shared lock joins others without their tokens
        writer, locks = self.writer, self.locks

        def take():
            try:
                return locks.lock(_key(url), depth=0 if depth == "0" else INFINITY, exclusive=info.exclusive,
                                  owner=info.owner, principal=who, timeout=timeout, now=now)
            except LockError as exc:
                hrefs = "".join(f"<D:href>{multistatus.href(c.root, False)}</D:href>" for c in exc.conflicts[:1])
                raise DavError(exc.status, str(exc), f"<D:no-conflicting-lock>{hrefs}</D:no-conflicting-lock>",
                               close=close) from None

        def work() -> bool:            # lock-null: a LOCK on nothing makes an empty file (RFC 4918 9.10.4)
            with writer.target(url) as target:
                if target.exists:
                    return False
                if target.place.missing:
                    raise http.HttpError(409, "the parent folder does not exist")
                if target.slashed:
                    raise http.HttpError(409, "cannot lock a missing folder")
                os.close(os.open(target.place.name, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o644,
                                 dir_fd=target.place.dir_fd))
                return True

        def then(done) -> Reply:
            lk, created = done
            if created:
                self.cache.invalidate()
                self.cache.written()
            return self._lock_reply(201 if created else 200, lk, close, req.version)

        def work_or_unlock():
            lk = take()
            try:
                return lk, work()
            except BaseException:
                locks.unlock(_key(url), lk.token, who, time.time())
                raise

        return self._defer(work_or_unlock, then, close, req.version)

    def _lock_reply(self, status: int, lk, close: bool, version) -> Reply:
        data = (f'<?xml version="1.0" encoding="utf-8"?>\n<D:prop xmlns:D="DAV:"><D:lockdiscovery>'
                f"{_activelock(lk)}</D:lockdiscovery></D:prop>\n").encode("utf-8", "surrogateescape")
        return self._xml(status, data, close, version, f"Lock-Token: <{lk.token}>\r\n".encode())

    def unlock(self, req: http.Request, close: bool, identity=None):
        who = principal(identity)
        token = req.headers.get("lock-token", "").strip()
        if not (token.startswith("<") and token.endswith(">")):
            raise http.HttpError(400, "UNLOCK needs a Lock-Token header")
        locks, url = self.locks, req.path

        def work() -> None:
            try:
                locks.unlock(_key(url), token[1:-1], who, time.time())
            except LockError as exc:
                if exc.status == 409:
                    raise DavError(409, str(exc), "<D:lock-token-matches-request-uri/>", close=close) from None
                raise http.HttpError(exc.status, str(exc), close=close) from None

        def then(_) -> Reply:
            head = http.response_head(204, self.date.get(), b"", None, close=close, version=req.version)
            return Reply(204, head, [], 0, close)
        return self._defer(work, then, close, req.version)

    def removed(self, url: str) -> None:
        """``url`` (and what was beneath it) is gone: its locks go too."""
        if self.locks_may_exist(time.time()):
            self.locks.removed(_key(url))


def _key(url: str) -> str:
    """A URL path as the lock table keeps it: valid UTF-8 (sqlite's text). A
    name that is not UTF-8 (its bytes as surrogates) gets U+FFFD for them, so
    two such names may share their locks: a lock then covers more, never less."""
    return url.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _has_body(req: http.Request) -> bool:
    return bool(req.content_length or req.chunked)


def writes_error(exc: OSError) -> http.HttpError:
    from zcopy.server.write_methods import http_error_for
    return http_error_for(exc)


def _activelock(lk) -> str:
    scope = "<D:exclusive/>" if lk.exclusive else "<D:shared/>"
    depth = "infinity" if lk.depth == INFINITY else "0"
    owner = lk.owner.decode("utf-8", "replace")
    if owner.startswith("<?xml"):
        owner = owner.split("?>", 1)[1]
    return (f"<D:activelock><D:locktype><D:write/></D:locktype><D:lockscope>{scope}</D:lockscope>"
            f"<D:depth>{depth}</D:depth>{owner}<D:timeout>Second-{lk.remaining(time.time())}</D:timeout>"
            f"<D:locktoken><D:href>{escape(lk.token)}</D:href></D:locktoken>"
            f"<D:lockroot><D:href>{multistatus.href(lk.root, False)}</D:href></D:lockroot></D:activelock>")


def _dead_of(dir_fd: int, name: str) -> dict:
    """The dead properties of ``name`` in ``dir_fd`` (opened with O_NOFOLLOW; gone meanwhile: none)."""
    try:
        fd = os.open(name, _OPEN, dir_fd=dir_fd)
    except OSError:
        return {}
    try:
        return deadprops.get_all(fd)
    finally:
        os.close(fd)


def _mark(folder_fd: int, changes) -> None:
    """``deadprops.mark`` the folder before a PROPPATCH sets properties in it; DeadPropError when it
    cannot be (then nothing is set)."""
    try:
        deadprops.mark(folder_fd)
    except OSError as exc:
        name = next(c.name for c in changes if not c.remove)
        if exc.errno in (errno.ENOSPC, errno.E2BIG, errno.EDQUOT):
            raise deadprops.DeadPropError(name, 507, "no room left for properties in this folder") from None
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            raise deadprops.DeadPropError(name, 403, "this filesystem cannot store properties") from None
        raise deadprops.DeadPropError(name, 403, exc.strerror or str(exc)) from None


def _props(url: str, st, dead, asked: xmlbody.PropFind, etag: str | None, held, quota=None) -> bytes:
    """One ``<D:response>``: ``dead()`` gives the resource's dead properties (called only when they
    are asked for); ``quota``: (available, used) bytes of its filesystem, when asked for."""
    is_dir = stat_mod.S_ISDIR(st.st_mode)

    def live(name: str) -> str | None:
        lockdiscovery = ""
        if name == "lockdiscovery" and held:
            path = normalise(_key(url))
            lockdiscovery = "".join(_activelock(lk) for lk in held if lk.covers(path))
        return multistatus.live_value(name, st=st, url_path=url, etag=etag,
                                      content_type=_ctype(url, is_dir) if name == "getcontenttype" else None,
                                      lockdiscovery=lockdiscovery,
                                      quota=quota)

    groups: dict[int, list[str]] = {200: [], 404: []}
    if asked.kind == "prop":
        found = None
        for ns, local in asked.names:
            if ns == xmlbody.DAV and local in _DAV_LIVE:
                value = live(local)
            else:
                if found is None:
                    found = dead()
                xml = found.get((ns, local))
                value = None if xml is None else xml.decode("utf-8", "surrogateescape")
            if value is None:
                groups[404].append(multistatus.empty_element(ns, local))
            else:
                groups[200].append(value)
    else:
        for name in multistatus.LIVE:
            value = live(name)
            if value is not None:
                groups[200].append(value if asked.kind == "allprop" else f"<D:{name}/>")
        for (ns, local), xml in dead().items():
            groups[200].append(xml.decode("utf-8", "surrogateescape") if asked.kind == "allprop"
                               else multistatus.empty_element(ns, local))
    return multistatus.response(url, is_dir, groups)


#: Windows' WebDAV redirector sets a file's times with PROPPATCH of these (RFC 1123 dates).
WIN32 = "urn:schemas-microsoft-com:"


def _win32_times(fd: int, changes) -> None:
    """Apply a PROPPATCH's Win32LastModifiedTime / Win32LastAccessTime to the file (they are kept as dead
    properties too); a date that does not parse is left as a dead property only."""
    import email.utils
    import re

    times = {}
    for c in changes:
        if c.remove or c.name[0] != WIN32 or c.name[1] not in ("Win32LastModifiedTime", "Win32LastAccessTime"):
            continue
        m = re.search(rb">([^<]*)<", c.value)
        try:
            when = email.utils.parsedate_to_datetime(m.group(1).decode().strip()).timestamp() if m else None
        except (TypeError, ValueError, UnicodeDecodeError, OverflowError):
            when = None
        if when is not None:
            times[c.name[1]] = when
    if times:
        st = os.fstat(fd)
        mtime = times.get("Win32LastModifiedTime", st.st_mtime)
        os.utime(fd, (times.get("Win32LastAccessTime", st.st_atime), mtime))


def _ctype(url: str, is_dir: bool) -> str | None:
    return None if is_dir else http.content_type(url)


def _copy(writer, source: fileops.Target, dest: fileops.Target, infinity: bool, overwrite: bool):
    """COPY (off the loop): (201 or 204, failed members)."""
    if not source.exists or (source.slashed and not source.is_dir):
        raise http.HttpError(404, "not found")
    src, dst = http.normalised(source.url), http.normalised(dest.url)
    if src == dst:
        raise http.HttpError(403, "source and destination are the same")
    if source.is_dir and dst.startswith(src.rstrip("/") + "/"):
        raise http.HttpError(409, "cannot copy a folder into itself")
    if dest.exists and not overwrite:
        raise http.HttpError(412, "destination exists and Overwrite is F")
    writer.parents(dest)
    replaced = dest.exists
    if dest.exists and (dest.is_dir or source.is_dir):
        fileops.remove_entry(dest)            # RFC 4918 9.8.4: a DELETE of the destination first
    sp, dp = source.place, dest.place
    failures: list = []
    if source.is_dir:
        davcopy.copy_dir(sp.dir_fd, sp.name, dp.dir_fd, dp.name, dest.url, infinity=infinity, fsync=writer.fsync,
                         failures=failures)
    else:
        davcopy.copy_file(sp.dir_fd, sp.name, dp.dir_fd, dp.name, fsync=writer.fsync)
    return (204 if replaced else 201), failures
