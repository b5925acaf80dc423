"""PROPFIND's Multi-Status, built off the loop into a memfd and sent like a file.

A Depth 1 PROPFIND of a big folder is a listing: a ``scandir``, one ``fstatat``
per member (from the folder's fd) and one ``<D:response>`` per member. As the
folder listings do (``zcopy.server.listings``), it is built on the executor
and written in pieces of ``FLUSH`` bytes into an anonymous file
(``memfd_create``) as it is made; the reply's body is that memfd, sent by
the engine (sendfile), so no connection holds a private copy of it and the
loop never waits for it. The memfd closes when the last reference to the
reply goes (``Body``).

Per member the cost is kept to the least (10,000 members were 0.2 s with a
function call per property; docs/webdav.md has the figures): the asked
properties are planned once per request into two templates (a file's and a
folder's ``<D:response>`` with every constant part pre-rendered, properties a
folder does not have already in their 404 ``propstat``), and a member
fills in only what varies: its href (quoted only when its name needs it),
size, dates (one ``strftime`` per distinct second), ETag and content type
(one lookup per extension). A member that has dead properties, or that a
lock covers, when those are asked for, goes through the general
per-property renderer instead. A rebuild of a kept page reuses the
responses of members whose stat says nothing changed (``write_members``'
memo).

Which members are shown is the folder listing's rule (``root.listed``), so
whatever a GET listing hides a PROPFIND hides too.
"""

from __future__ import annotations

import errno
import os
import re
import stat as stat_mod
import time

from zcopy import http
from zcopy.dav import deadprops, multistatus, xmlbody
from zcopy.server.digests import QUIET
from zcopy.server.listings import Page
from zcopy.server.root import listed

#: Bytes rendered before they are written to the memfd.
FLUSH = 1 << 16
_OPEN = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC
_DAV_LIVE = frozenset(multistatus.LIVE) | frozenset(multistatus.QUOTA)
#: Names whose href and displayname need no quoting or escaping.
_PLAIN = re.compile(r"[A-Za-z0-9._~-]+").fullmatch
_OK = "<D:status>HTTP/1.1 200 OK</D:status></D:propstat>"
_MISSING = "<D:status>HTTP/1.1 404 Not Found</D:status></D:propstat>"
#: The per-member fields of a template, in ``str.format``'s positional order.
_HREF, _SIZE, _MODIFIED, _ETAG, _NAME, _TYPE, _CREATED = range(7)


class Body:
    """The memfd holding one Multi-Status. Quacks like a ``FileEntry`` where a
    Reply's ``entry`` is used (``acquire``/``release``, ``resident_until``:
    memory, never cold); the fd closes when the last reference goes (the
    reply was sent, or dropped unsent by a connection that went away)."""

    __slots__ = ("fd", "size", "resident_until")

    def __init__(self, fd: int, size: int) -> None:
        self.fd = fd
        self.size = size
        self.resident_until = float("inf")

    def acquire(self) -> "Body":
        return self

    def release(self) -> None:
        pass

    def __del__(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class DavPage(Page):
    """A Multi-Status in a memfd (``listings.Page``); ``volatile``: it shows a lock, so it is sent
    but never kept (a lock's end changes no file: nothing would drop the page)."""

    __slots__ = ("volatile",)

    def __init__(self, *args, volatile: bool = False) -> None:
        super().__init__(*args)
        self.volatile = volatile


class Plan:
    """The asked properties, planned once per request: templates for a member that is a file and one
    that is a folder, when every asked property is live (or dead ones are known to be absent)."""

    def __init__(self, asked: xmlbody.PropFind, quota: tuple[int, int] | None) -> None:
        self.asked = asked
        self.wants_dead = asked.kind != "prop" or any(
            not (ns == xmlbody.DAV and local in _DAV_LIVE) for ns, local in asked.names)
        self.wants_locks = asked.kind != "propname" and (
            asked.kind == "allprop" or (xmlbody.DAV, "lockdiscovery") in asked.names)
        self.quota = quota
        self.needs = set()
        self.file = self._template(False)
        self.folder = self._template(True)

    def _template(self, is_dir: bool) -> str:
        found: list[str] = []
        missing: list[str] = []
        asked = self.asked
        if asked.kind == "prop":
            for ns, local in asked.names:
                if ns == xmlbody.DAV and local in _DAV_LIVE:
                    value = self._live(local, is_dir)
                    (missing if value is None else found).append(
                        multistatus.empty_element(ns, local) if value is None else value)
                else:                      # a dead property: the fast path is for members without any
                    missing.append(_braces(multistatus.empty_element(ns, local)))
        else:
            for local in multistatus.LIVE:
                value = self._live(local, is_dir)
                if value is not None:
                    found.append(value if asked.kind == "allprop" else f"<D:{local}/>")
        parts = ["<D:response><D:href>{0}</D:href>"]
        if found:
            parts.append(f"<D:propstat><D:prop>{''.join(found)}</D:prop>{_OK}")
        if missing:
            parts.append(f"<D:propstat><D:prop>{''.join(missing)}</D:prop>{_MISSING}")
        parts.append("</D:response>\n")
        return "".join(parts)

    def _live(self, local: str, is_dir: bool) -> str | None:
        """The property's XML with ``{n}`` where a member's value goes; None: the member has none."""
        if local == "resourcetype":
            return "<D:resourcetype><D:collection/></D:resourcetype>" if is_dir else "<D:resourcetype/>"
        if local == "getcontentlength":
            self.needs.add(_SIZE)
            return None if is_dir else "<D:getcontentlength>{1}</D:getcontentlength>"
        if local == "getlastmodified":
            self.needs.add(_MODIFIED)
            return "<D:getlastmodified>{2}</D:getlastmodified>"
        if local == "getetag":
            self.needs.add(_ETAG)
            return None if is_dir else "<D:getetag>{3}</D:getetag>"
        if local == "displayname":
            self.needs.add(_NAME)
            return "<D:displayname>{4}</D:displayname>"
        if local == "getcontenttype":
            self.needs.add(_TYPE)
            return None if is_dir else "<D:getcontenttype>{5}</D:getcontenttype>"
        if local == "creationdate":
            self.needs.add(_CREATED)
            return "<D:creationdate>{6}</D:creationdate>"
        if local == "supportedlock":
            return _braces(multistatus.SUPPORTED_LOCK)
        if local == "lockdiscovery":
            return "<D:lockdiscovery></D:lockdiscovery>"
        if local in multistatus.QUOTA and self.quota is not None:
            available, used = self.quota
            return f"<D:{local}>{available if local == 'quota-available-bytes' else used}</D:{local}>"
        return None


def _braces(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


def quota(fd: int) -> tuple[int, int]:
    sv = os.fstatvfs(fd)
    return sv.f_bavail * sv.f_frsize, (sv.f_blocks - sv.f_bfree) * sv.f_frsize


def members(fd: int, url: str, *, show_hidden: bool, visible=None) -> list[tuple[str, os.stat_result]]:
    """(name, stat) of each member of the folder open as ``fd`` that a listing shows: the
    listing's rule (``root.listed``), then only files and folders (no symlinks, no special files),
    each stat'ed once from the folder's fd (fstatat)."""
    at_top = http.normalised(url) == "/"
    out = []
    with os.scandir(fd) as it:
        for d in it:
            name = d.name
            if not listed(name, show_hidden=show_hidden, at_top=at_top) or \
                    (visible is not None and not visible(name)):
                continue
            try:
                st = d.stat(follow_symlinks=False)
            except OSError:
                continue                                    # gone meanwhile
            mode = st.st_mode
            if stat_mod.S_ISREG(mode) or stat_mod.S_ISDIR(mode):
                out.append((name, st))
    return out                  # in the folder's order: RFC 4918 asks for none, clients sort


def write_members(out_fd: int, dir_fd: int, url: str, plan: Plan, entries, etag_of, held, slow,
                  memo: dict | None = None) -> int:
    """Render each member's ``<D:response>`` into ``out_fd`` (a memfd) in pieces; the bytes written.
    ``etag_of(st)``: a file's getetag; ``held``: live locks that may cover members; ``slow(url, st,
    dead)``: the general renderer for a member the templates do not fit.

    ``memo``: name -> (what the member's response depends on, the response) from the last build of
    the same folder and asked set, replaced by this build's (a member whose inode, size, times, mode
    and shown ETag are the same is not rendered again, nor are its attributes looked at: setting or
    removing an extended attribute moves the ctime; members changed within ``QUIET`` seconds are not
    remembered). Not used while a lock is live."""
    base = multistatus.href(url, True)
    needs = plan.needs
    want_size, want_modified, want_etag = _SIZE in needs, _MODIFIED in needs, _ETAG in needs
    want_name, want_type, want_created = _NAME in needs, _TYPE in needs, _CREATED in needs
    file_tpl, folder_tpl = plan.file.format, plan.folder.format
    dates: dict[int, str] = {}
    stamps: dict[int, str] = {}
    types: dict[str, str] = {}
    has_dead = _dead_probe(dir_fd) if plan.wants_dead else None
    locked = held if plan.wants_locks else None
    url_base = url if url.endswith("/") else url + "/"
    pieces: list[str] = []
    held_chars = 0
    size = 0
    last = None
    if memo is not None and not held:
        last = dict(memo)
        memo.clear()
        # Remembered only for members quiet for QUIET (as content digests are): a change in the same
        # kernel timestamp tick as the one before it would leave the ctime where it was.
        settled = int((time.time() - QUIET) * 1e9)
    for name, st in entries:
        is_dir = stat_mod.S_ISDIR(st.st_mode)
        etag = etag_of(st) if want_etag and not is_dir else ""
        if last is not None:
            key = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode, etag)
            seen = last.get(name)
            if seen is not None and seen[0] == key:
                piece = seen[1]
                memo[name] = seen
                pieces.append(piece)
                held_chars += len(piece)
                if held_chars >= FLUSH:
                    size += _write(out_fd, pieces)
                    pieces, held_chars = [], 0
                continue
        if has_dead is not None and has_dead(name) or locked and _covered(locked, url_base + name):
            piece = slow(url_base + name, st, plan.wants_dead)
        else:
            plain = _PLAIN(name) is not None
            href = base + name if plain else multistatus.href(url_base + name, False)
            if is_dir:
                href += "/"
            modified = created = ctype = ""
            if want_modified:
                second = int(st.st_mtime)
                modified = dates.get(second)
                if modified is None:
                    modified = dates[second] = multistatus.rfc1123(second)
            if want_created:
                second = int(min(st.st_ctime, st.st_mtime))
                created = stamps.get(second)
                if created is None:
                    created = stamps[second] = multistatus.rfc3339(second)
            if is_dir:
                piece = folder_tpl(href, "", modified, "", name if plain or not want_name else _escape(name),
                                   "", created)
            else:                                 # etag: ours (quotes, hex, base64): nothing to escape
                if want_type:
                    ext = name.rpartition(".")[2].lower() if "." in name[1:] else ""
                    ctype = types.get(ext)
                    if ctype is None:
                        ctype = types[ext] = _escape(http.content_type(name))
                piece = file_tpl(href, st.st_size if want_size else "", modified, etag,
                                 name if plain or not want_name else _escape(name), ctype, created)
        if last is not None and st.st_ctime_ns <= settled:
            memo[name] = (key, piece)
        pieces.append(piece)
        held_chars += len(piece)
        if held_chars >= FLUSH:
            size += _write(out_fd, pieces)
            pieces, held_chars = [], 0
    return size + _write(out_fd, pieces)


def _covered(locks, path: str) -> bool:
    from zcopy.dav.locks import normalise
    path = normalise(path.encode("utf-8", "surrogateescape").decode("utf-8", "replace"))
    return any(lk.covers(path) for lk in locks)


def _escape(text: str) -> str:
    from xml.sax.saxutils import escape
    return escape(text)


def _dead_probe(dir_fd: int):
    """``has(name)``: whether the member ``name`` of ``dir_fd`` may have dead properties (its extended
    attribute names: an open with O_NOFOLLOW from the folder's fd, flistxattr, close; measured no
    dearer than listing them through /proc without the open). ``_never`` when the filesystem keeps
    no user attributes."""
    try:
        os.listxattr(dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return _never
        return _always
    prefix = deadprops.PREFIX

    def has(name: str) -> bool:
        try:
            fd = os.open(name, _OPEN, dir_fd=dir_fd)
        except OSError:
            return True                    # let the general path decide
        try:
            return any(a.startswith(prefix) for a in os.listxattr(fd))
        except OSError:
            return True
        finally:
            os.close(fd)
    return has


def _never(name: str) -> bool:
    return False


def _always(name: str) -> bool:
    return True


def _write(fd: int, pieces: list[str]) -> int:
    data = "".join(pieces).encode("utf-8", "surrogateescape")
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    return len(data)


def new_body() -> int:
    return os.memfd_create("zcopy-propfind", os.MFD_CLOEXEC)


def write(fd: int, data: bytes) -> int:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    return len(data)

