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
per-property renderer instead.

A rebuild of a kept page reuses the members' responses of its last build
(``Members``). When the folder's inotify watch has been up since before that
build's stats and lost no event, only the members its events named since
then are stat'ed again (with the subfolders and the members changed just
before, which can move with no event here), and the page is written from the
kept responses (``update_members``); otherwise, and at least every ``TTL``
seconds, every member is stat'ed and only those whose stat moved are
rendered again (``write_members``' memo).

Which members are shown is the folder listing's rule (``root.listed``), so
whatever a GET listing hides a PROPFIND hides too.
"""

from __future__ import annotations

import errno
import math
import os
import re
import stat as stat_mod
import time

from zcopy import http
from zcopy.dav import deadprops, multistatus, xmlbody
from zcopy.server.digests import QUIET
from zcopy.server.listings import TTL, Page
from zcopy.server.root import listed

#: Bytes rendered before they are written to the memfd.
FLUSH = 1 << 16
_IOV_MAX = os.sysconf("SC_IOV_MAX") if "SC_IOV_MAX" in os.sysconf_names else 1024
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


class Members:
    """What the last build of one kept page (a folder and an asked set) knew of the folder's members,
    and what has changed since: the next build re-stats only the members named by the folder's
    inotify events (``update_members``) when that is known to be everything that changed.

    ``responses``: ``write_members``' memo, every member the last build listed (name -> (stat key,
    response, settled)). ``folder``: the filesystem folder (the watch's label). ``dirty``: member
    names the watch (or this worker's writes) reported since the last build began; ``whole``: a
    change no name says (the folder itself moved or went, an ancestor did, too many names): the next
    build stats every member. ``armed``: the folder's watch token (``FileWatch.token``) as the loop
    saw it, after reading every queued event, just before asking for a build; ``token``: the one the
    last build began with. A build may trust the names only when its token equals the last build's
    (the watch was up, on the same folder, with no lost event, from before the last build's stats
    until this build began), and at most ``TTL`` seconds after the last full build (``full_at``),
    which bounds what no event reports (a write through a shared mmap or through a hard link in
    another folder, a content ETag computed since). Touched under its owner's lock (``Dav``)."""

    __slots__ = ("armed", "dirty", "folder", "full_at", "responses", "token", "whole")

    def __init__(self) -> None:
        self.responses: dict = {}
        self.folder: str | None = None
        self.token = None
        self.armed = None
        self.dirty: set[str] = set()
        self.whole = True
        self.full_at = -math.inf

    def changed(self, fs_path: str | None) -> None:
        """A change notice (the file cache's listener): a member's name, or a folder's path (ending in
        ``os.sep``). None (an overflow, or another worker's write) says nothing here: an overflow
        moves the watch's token, and another worker's change in this folder reaches this worker's
        watch too (one inode, one set of events for every watcher)."""
        if fs_path is None or self.folder is None:
            return
        path = fs_path.rstrip(os.sep) or os.sep
        folder = self.folder
        if os.path.dirname(path) == folder:
            if not self.whole:
                self.dirty.add(os.path.basename(path))
                if len(self.dirty) > 64 and len(self.dirty) > len(self.responses) // 4:
                    self.whole, self.dirty = True, set()         # as dear as a full build
        elif path == folder or folder.startswith(path.rstrip(os.sep) + os.sep):
            self.whole, self.dirty = True, set()

    def begin(self, now: float):
        """A build begins (its owner's lock held): the names to re-stat, or None for a full build."""
        armed = self.armed
        incremental = (not self.whole and armed is not None and armed == self.token and bool(self.responses)
                       and now - self.full_at < TTL)
        dirty = self.dirty
        self.dirty = set()
        self.whole = False
        self.token = armed
        return dirty if incremental else None


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

    ``memo``: name -> (what the member's response depends on, the response, settled) from the last
    build of the same folder and asked set, replaced by this build's (a settled member whose inode,
    size, times, mode and shown ETag are the same is not rendered again, nor are its attributes looked
    at: setting or removing an extended attribute moves the ctime; a member changed within ``QUIET``
    seconds is not settled: a change in the same kernel timestamp tick as the one before it would
    leave the ctime where it was). Not used while a lock is live."""
    want_etag = _ETAG in plan.needs
    render = _renderer(dir_fd, url, plan, etag_of, held, slow)
    pieces: list[bytes] = []
    held_chars = 0
    size = 0
    last = None
    if memo is not None and not held:
        last = dict(memo)
        memo.clear()
        settled = int((time.time() - QUIET) * 1e9)
    for name, st in entries:
        is_dir = stat_mod.S_ISDIR(st.st_mode)
        etag = etag_of(st) if want_etag and not is_dir else ""
        if last is not None:
            key = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode, etag)
            seen = last.get(name)
            if seen is not None and seen[2] and seen[0] == key:
                piece = seen[1]
                memo[name] = seen
            else:
                piece = render(name, st, is_dir, etag)
                memo[name] = (key, piece, st.st_ctime_ns <= settled)
        else:
            piece = render(name, st, is_dir, etag)
        pieces.append(piece)
        held_chars += len(piece)
        if held_chars >= FLUSH:
            size += _writev(out_fd, pieces)
            pieces, held_chars = [], 0
    return size + _writev(out_fd, pieces)


def update_members(out_fd: int, dir_fd: int, url: str, plan: Plan, memo: dict, dirty, etag_of, slow, *,
                   show_hidden: bool, visible=None) -> int:
    """The members' responses again from ``memo`` (``write_members``' for this folder and asked set, all
    of the folder's members as the last build saw them), stat'ing only the members named in ``dirty``
    (the names the folder's inotify watch reported since then), the members that are folders (a
    subfolder's own mtime moves with changes inside it, which no event of this folder reports) and
    those not settled when last rendered (their shown ETag turns from weak to strong once they are
    quiet, with no event): written into ``out_fd`` in one piece; the bytes written. ``memo`` is brought up to date: a named
    member gone, now a symlink or hidden is dropped, a new one added. Only valid where every change
    since the memo's stats was reported by name (``Members``); never while a lock is live."""
    want_etag = _ETAG in plan.needs
    render = _renderer(dir_fd, url, plan, etag_of, None, slow)
    at_top = http.normalised(url) == "/"
    settled = int((time.time() - QUIET) * 1e9)
    again = [name for name, seen in memo.items() if (not seen[2] or stat_mod.S_ISDIR(seen[0][4])) and
             name not in dirty]
    for names, named in ((dirty, True), (again, False)):
        for name in names:
            if not listed(name, show_hidden=show_hidden, at_top=at_top) or \
                    (visible is not None and not visible(name)):
                memo.pop(name, None)
                continue
            try:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except OSError:
                memo.pop(name, None)                 # gone (or not ours to see): not listed
                continue
            mode = st.st_mode
            if not (stat_mod.S_ISREG(mode) or stat_mod.S_ISDIR(mode)):
                memo.pop(name, None)
                continue
            is_dir = stat_mod.S_ISDIR(mode)
            etag = etag_of(st) if want_etag and not is_dir else ""
            key = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, mode, etag)
            seen = memo.get(name)
            if not named and seen is not None and seen[2] and seen[0] == key:
                continue
            memo[name] = (key, render(name, st, is_dir, etag), st.st_ctime_ns <= settled)
    return _writev(out_fd, [seen[1] for seen in memo.values()])


def _renderer(dir_fd: int, url: str, plan: Plan, etag_of, held, slow):
    """``render(name, st, is_dir, etag)``: one member's ``<D:response>`` (UTF-8), from the plan's templates, or
    from ``slow`` for a member with dead properties (when asked for) or covered by a lock."""
    base = multistatus.href(url, True)
    needs = plan.needs
    want_size, want_modified = _SIZE in needs, _MODIFIED in needs
    want_name, want_type, want_created = _NAME in needs, _TYPE in needs, _CREATED in needs
    file_tpl, folder_tpl = plan.file.format, plan.folder.format
    dates: dict[int, str] = {}
    stamps: dict[int, str] = {}
    types: dict[str, str] = {}
    has_dead = _dead_probe(dir_fd) if plan.wants_dead else None
    locked = held if plan.wants_locks else None
    url_base = url if url.endswith("/") else url + "/"

    def render(name: str, st, is_dir: bool, etag: str) -> bytes:
        if has_dead is not None and has_dead(name) or locked and _covered(locked, url_base + name):
            return slow(url_base + name, st, plan.wants_dead).encode("utf-8", "surrogateescape")
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
            return folder_tpl(href, "", modified, "", name if plain or not want_name else _escape(name),
                              "", created).encode("utf-8", "surrogateescape")
        if want_type:                             # etag: ours (quotes, hex, base64): nothing to escape
            ext = name.rpartition(".")[2].lower() if "." in name[1:] else ""
            ctype = types.get(ext)
            if ctype is None:
                ctype = types[ext] = _escape(http.content_type(name))
        return file_tpl(href, st.st_size if want_size else "", modified, etag,
                        name if plain or not want_name else _escape(name), ctype, created).encode(
                            "utf-8", "surrogateescape")
    return render


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


def _writev(fd: int, pieces: list[bytes]) -> int:
    """Write ``pieces`` in order, ``IOV_MAX`` at a time (no joined copy in user space)."""
    total = 0
    for i in range(0, len(pieces), _IOV_MAX):
        chunk = pieces[i:i + _IOV_MAX]
        want = sum(map(len, chunk))
        done = os.writev(fd, chunk)
        if done < want:
            rest = memoryview(b"".join(chunk))[done:]
            while rest:
                rest = rest[os.write(fd, rest):]
        total += want
    return total


def new_body() -> int:
    return os.memfd_create("zcopy-propfind", os.MFD_CLOEXEC)


def write(fd: int, data: bytes) -> int:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    return len(data)

