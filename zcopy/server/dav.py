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
LOCK). Every writer is the same principal (``PRINCIPAL``) until accounts
(issue 16) name users.
"""

from __future__ import annotations

import os
import stat as stat_mod
import time
from urllib.parse import unquote, urlsplit
from xml.sax.saxutils import escape

from zcopy import http
from zcopy.dav import deadprops, ifheader, multistatus, xmlbody
from zcopy.dav.locks import INFINITY, LockError, LockTable, normalise, parse_timeout
from zcopy.server import davcopy, writes
from zcopy.server.body import MemorySink
from zcopy.server.reply import Reply
from zcopy.server.root import TEMP_PREFIX

DAV_METHODS = ("PROPFIND", "PROPPATCH", "COPY", "LOCK", "UNLOCK")
BODY_METHODS = ("PROPFIND", "PROPPATCH", "LOCK")
PRINCIPAL = "token"
XML = b"Content-Type: application/xml; charset=utf-8\r\n"
_OPEN = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC
_DAV_LIVE = set(multistatus.LIVE) | set(multistatus.QUOTA)


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
        self.locks = LockTable(state) if state is not None and writer is not None else None
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
        ``rights``: the responder's ``_Rights``, for what COPY needs on its Destination."""
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
            if req.method == "PROPPATCH":
                return self.proppatch(req, body, close)
            if req.method == "COPY":
                return self.copy(req, close, rights)
            if req.method == "LOCK":
                return self.lock(req, body, close)
            return self.unlock(req, close)
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

    def _defer(self, work, then, close: bool, version):
        """``then(work())``: ``work`` off the loop where there is an executor."""
        def refuse(exc: Exception) -> Reply:
            if isinstance(exc, http.HttpError):
                return self.error(exc, close or exc.close, version)
            if isinstance(exc, OSError):
                return self.error(writes_error(exc), True, version)
            raise exc
        if self.executor is not None:
            from zcopy.server.executor import defer      # the executor's seam (zcopy/server/executor.py)
            return defer(self.executor, work, then, refuse)
        try:
            return then(work())
        except (http.HttpError, OSError) as exc:
            return refuse(exc)

    # -- locks and the If header --------------------------------------------------

    def check(self, req: http.Request, *targets: tuple[str, bool]) -> None:
        """Before a write: the If header must hold (412 otherwise), and every
        lock covering each ``(url, recursive)`` target must have its token in
        it (423 otherwise)."""
        value = req.headers.get("if")
        try:
            clauses = ifheader.parse(value) if value else []
        except ifheader.IfHeaderError as exc:
            raise http.HttpError(400, str(exc)) from None
        submitted = ifheader.tokens(clauses)
        now = time.time()
        if clauses and not self._if_holds(req.path, clauses, now):
            raise http.HttpError(412, "the If header's conditions do not hold")
        if self.locks is not None:
            for url, recursive in targets:
                missing = self.locks.missing_tokens(_key(url), submitted, PRINCIPAL, now, recursive=recursive)
                if missing:
                    hrefs = "".join(f"<D:href>{multistatus.href(lk.root, False)}</D:href>" for lk in missing[:1])
                    raise DavError(423, "locked", f"<D:lock-token-submitted>{hrefs}</D:lock-token-submitted>")

    def _if_holds(self, request_url: str, clauses, now: float) -> bool:
        for clause in clauses:
            url = request_url if clause.resource is None else url_of(clause.resource)
            etag = self._etag(url)
            tokens = {lk.token for lk in self.locks.covering(_key(url), now)} if self.locks is not None else set()
            for conds in clause.lists:
                if all(c.negated != ((c.token in tokens) if c.token else (etag is not None and c.etag == etag))
                       for c in conds):
                    return True
        return False

    def _etag(self, url: str) -> str | None:
        try:
            entry = self.cache.lookup(url)
        except http.HttpError:
            return None
        return None if entry is None else entry.etag

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
        try:
            target_etag = self._etag(url)          # the GET ETag, from the file cache (on the loop)
        except Exception:
            target_etag = None
        locks = self.locks
        show_hidden = self.cache.show_hidden
        digests = getattr(self.cache, "digests", None)

        def etag_of(st) -> str | None:          # what a GET shows (any thread)
            if stat_mod.S_ISDIR(st.st_mode):
                return None
            local = http.make_etag(st)
            return local if digests is None else digests.shown(st, local)
        root = self.cache.fs

        def work() -> bytes:
            now = time.time()
            held = []
            if locks is not None:
                held = locks.covering(_key(url), now) + (locks.beneath(_key(url), now) if depth == "1" else [])
            with root.locate(url) as place:
                try:
                    st = os.stat(place.name, dir_fd=place.dir_fd, follow_symlinks=False)
                except FileNotFoundError:
                    raise http.HttpError(404, "not found") from None
                if not (stat_mod.S_ISDIR(st.st_mode) or stat_mod.S_ISREG(st.st_mode)):
                    raise http.HttpError(404, "not found")
                is_dir = stat_mod.S_ISDIR(st.st_mode)
                if not is_dir and url.endswith("/"):
                    raise http.HttpError(404, "not found")
                parts = [multistatus.HEAD]
                fd = os.open(place.name, _OPEN, dir_fd=place.dir_fd)
                try:
                    parts.append(_props(url, st, lambda: deadprops.get_all(fd), fd, asked,
                                        target_etag or etag_of(st), held))
                    if is_dir and depth == "1":
                        parts += _members(fd, url, asked, held, show_hidden, etag_of, visible)
                finally:
                    os.close(fd)
            parts.append(multistatus.TAIL)
            return b"".join(parts)

        def then(data: bytes) -> Reply:
            return self._xml(207, data, close, req.version)

        return self._defer(work, then, close, req.version)

    # -- PROPPATCH --------------------------------------------------------------------

    def proppatch(self, req: http.Request, body: bytes, close: bool):
        changes = xmlbody.proppatch(body)
        self.check(req, (req.path, False))
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
        from zcopy.server.writer import _authority, _destination

        dest_url = _destination(req.headers.get("destination"), _authority(req))
        depth = req.headers.get("depth", "infinity").strip().lower()
        if depth not in ("0", "infinity"):
            raise http.HttpError(400, "COPY takes Depth 0 or infinity")
        overwrite = req.headers.get("overwrite", "T").strip().upper() != "F"
        self.check(req, (dest_url, True))
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

    def lock(self, req: http.Request, body: bytes, close: bool):
        info = xmlbody.lockinfo(body)
        timeout = parse_timeout(req.headers.get("timeout"))
        now = time.time()
        url = req.path
        if info is None:                                     # a refresh
            value = req.headers.get("if")
            try:
                submitted = ifheader.tokens(ifheader.parse(value)) if value else set()
            except ifheader.IfHeaderError as exc:
                raise http.HttpError(400, str(exc)) from None
            try:
                lk = self.locks.refresh(_key(url), submitted, PRINCIPAL, timeout, now)
            except LockError as exc:
                raise http.HttpError(exc.status, str(exc)) from None
            return self._lock_reply(200, lk, close, req.version)
        depth = req.headers.get("depth", "infinity").strip().lower()
        if depth not in ("0", "infinity"):
            raise http.HttpError(400, "LOCK takes Depth 0 or infinity")
        self.check(req)         # the If header only: a shared lock joins others without their tokens
        writer = self.writer
        try:
            lk = self.locks.lock(_key(url), depth=0 if depth == "0" else INFINITY, exclusive=info.exclusive,
                                 owner=info.owner, principal=PRINCIPAL, timeout=timeout, now=now)
        except LockError as exc:
            hrefs = "".join(f"<D:href>{multistatus.href(c.root, False)}</D:href>" for c in exc.conflicts[:1])
            raise DavError(exc.status, str(exc), f"<D:no-conflicting-lock>{hrefs}</D:no-conflicting-lock>") \
                from None

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

        def then(created: bool) -> Reply:
            if created:
                self.cache.invalidate()
                self.cache.written()
            return self._lock_reply(201 if created else 200, lk, close, req.version)

        def work_or_unlock():
            try:
                return work()
            except BaseException:
                self.locks.unlock(_key(url), lk.token, PRINCIPAL, time.time())
                raise

        return self._defer(work_or_unlock, then, close, req.version)

    def _lock_reply(self, status: int, lk, close: bool, version) -> Reply:
        data = (f'<?xml version="1.0" encoding="utf-8"?>\n<D:prop xmlns:D="DAV:"><D:lockdiscovery>'
                f"{_activelock(lk)}</D:lockdiscovery></D:prop>\n").encode("utf-8", "surrogateescape")
        return self._xml(status, data, close, version, f"Lock-Token: <{lk.token}>\r\n".encode())

    def unlock(self, req: http.Request, close: bool):
        token = req.headers.get("lock-token", "").strip()
        if not (token.startswith("<") and token.endswith(">")):
            raise http.HttpError(400, "UNLOCK needs a Lock-Token header")
        try:
            self.locks.unlock(_key(req.path), token[1:-1], PRINCIPAL, time.time())
        except LockError as exc:
            if exc.status == 409:
                raise DavError(409, str(exc), "<D:lock-token-matches-request-uri/>", close=close) from None
            raise http.HttpError(exc.status, str(exc), close=close) from None
        head = http.response_head(204, self.date.get(), b"", None, close=close, version=req.version)
        return Reply(204, head, [], 0, close)

    def removed(self, url: str) -> None:
        """``url`` (and what was beneath it) is gone: its locks go too."""
        if self.locks is not None:
            self.locks.removed(_key(url))


def _key(url: str) -> str:
    """A URL path as the lock table keeps it: valid UTF-8 (sqlite's text). A
    name that is not UTF-8 (its bytes as surrogates) gets U+FFFD for them, so
    two such names may share their locks: a lock then covers more, never less."""
    return url.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _has_body(req: http.Request) -> bool:
    return bool(req.content_length or req.chunked)


def writes_error(exc: OSError) -> http.HttpError:
    from zcopy.server.writer import http_error_for
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


def _members(fd: int, url: str, asked: xmlbody.PropFind, held, show_hidden: bool, etag_of,
             visible=None) -> list[bytes]:
    """The ``<D:response>`` of each member of the folder open as ``fd`` that a listing shows (no
    dotfiles unless shown, no temp files, no /.zcopy, no symlinks or special files), by name. Members
    are stat'ed from the folder's fd (fstatat) and opened only when dead properties are asked for."""
    base = url if url.endswith("/") else url + "/"
    at_top = http.normalised(url) == "/"
    wants_dead = _needs_dead(asked)
    out = []
    with os.scandir(fd) as it:
        entries = sorted(it, key=lambda d: d.name)
    for d in entries:
        name = d.name
        if name.startswith(TEMP_PREFIX) or (name.startswith(".") and not show_hidden) or \
                (at_top and name == http.RESERVED) or (visible is not None and not visible(name)):
            continue
        try:
            st = d.stat(follow_symlinks=False)
        except OSError:
            continue                                    # gone meanwhile
        if not (stat_mod.S_ISDIR(st.st_mode) or stat_mod.S_ISREG(st.st_mode)):
            continue
        dead = (lambda n=name: _dead_of(fd, n)) if wants_dead else dict
        out.append(_props(base + name, st, dead, fd, asked, etag_of(st), held))
    return out


def _needs_dead(asked: xmlbody.PropFind) -> bool:
    """Whether the request wants dead properties (then each member is opened to read its xattrs)."""
    return asked.kind != "prop" or any(not (ns == xmlbody.DAV and local in _DAV_LIVE) for ns, local in asked.names)


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


def _props(url: str, st, dead, fs_fd: int, asked: xmlbody.PropFind, etag: str | None, held) -> bytes:
    """One ``<D:response>``: ``dead()`` gives the resource's dead properties (called only when they
    are asked for), ``fs_fd`` is an fd on its filesystem (quota)."""
    is_dir = stat_mod.S_ISDIR(st.st_mode)

    def live(name: str) -> str | None:
        lockdiscovery = ""
        if name == "lockdiscovery" and held:
            path = normalise(_key(url))
            lockdiscovery = "".join(_activelock(lk) for lk in held if lk.covers(path))
        return multistatus.live_value(name, st=st, url_path=url, etag=etag,
                                      content_type=_ctype(url, is_dir) if name == "getcontenttype" else None,
                                      lockdiscovery=lockdiscovery,
                                      quota=_quota(fs_fd) if name in multistatus.QUOTA else None)

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


def _quota(fd: int) -> tuple[int, int]:
    sv = os.fstatvfs(fd)
    return sv.f_bavail * sv.f_frsize, (sv.f_blocks - sv.f_bfree) * sv.f_frsize


def _copy(writer, source: writes.Target, dest: writes.Target, infinity: bool, overwrite: bool):
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
        writes.remove_entry(dest)            # RFC 4918 9.8.4: a DELETE of the destination first
    sp, dp = source.place, dest.place
    failures: list = []
    if source.is_dir:
        davcopy.copy_dir(sp.dir_fd, sp.name, dp.dir_fd, dp.name, dest.url, infinity=infinity, fsync=writer.fsync,
                         failures=failures)
    else:
        davcopy.copy_file(sp.dir_fd, sp.name, dp.dir_fd, dp.name, fsync=writer.fsync)
    return (204 if replaced else 201), failures
