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

When the hot path is compiled, a first build's per-member work runs in C (``zcopy.scan``: the
folder read and each member ``fstatat``'ed with the GIL released, a compact ``Stat`` per member in
place of an ``os.stat_result``, the ETag, key, size and date columns and each response's join);
the Python here does the same, to the same bytes, otherwise (``_c`` is None).

Which members are shown is the folder listing's rule (``root.listed``), so
whatever a GET listing hides a PROPFIND hides too.
"""

from __future__ import annotations

import errno
import math
import operator
import os
import re
import stat as stat_mod
import string
import struct
import time
from itertools import compress, count, repeat

from zcopy import hotpath, http
from zcopy.http.headers import ETAG_FIELDS, etag_of_fields, etags_of_fields, make_etags
from zcopy.dav import deadprops, multistatus, xmlbody
from zcopy.server.digests import QUIET
from zcopy.server.listings import TTL, Page
from zcopy.server.prefetch import MEMORY
from zcopy.server.root import TEMP_PREFIX, listed

#: Bytes rendered before they are written to the memfd.
FLUSH = 1 << 16
_IOV_MAX = os.sysconf("SC_IOV_MAX") if "SC_IOV_MAX" in os.sysconf_names else 1024
_OPEN = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC
_DAV_LIVE = frozenset(multistatus.LIVE) | frozenset(multistatus.QUOTA)
#: Names whose href and displayname need no quoting or escaping.
_PLAIN = re.compile(r"[A-Za-z0-9._~-]+").fullmatch
#: The bytes of such names, and the "/" that joins a batch of them: a batch whose joined names are ASCII and
#: hold nothing else (``bytes.translate`` deleting these leaves nothing) needs no quoting nor escaping, checked
#: in one table-driven C pass (a regex over the batch cost 1,000 instructions a member).
_PLAIN_BYTES = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._~-/"
#: Members rendered per batch (``write_members``): each batch is a few C-level passes over its members.
BATCH = 1024
#: Without ``--show-hidden`` the listing rule (``root.listed``) hides exactly the names starting with a dot
#: (our temp files and the reserved top name start with one too): the scan's fast filter relies on it.
_DOT_RULE = TEMP_PREFIX.startswith(".") and http.RESERVED.startswith(".")
_S_IFMT, _S_IFREG, _S_IFDIR = 0o170000, stat_mod.S_IFREG, stat_mod.S_IFDIR
# A stat result's first ten items are st_mode, st_ino, st_dev, st_nlink, st_uid, st_gid, st_size and the
# three times in whole seconds (the kernel's tv_sec: rounded down, as time.gmtime rounds a float): an
# item is cheaper to reach than an attribute.
_mode = operator.itemgetter(0)
_size = operator.itemgetter(6)
_mtime_s = operator.itemgetter(8)
_ctime_s = operator.itemgetter(9)
_ctime_ns = operator.attrgetter("st_ctime_ns")
_ENCODE = operator.methodcaller("encode", "utf-8", "surrogateescape")
_OK = "<D:status>HTTP/1.1 200 OK</D:status></D:propstat>"
_MISSING = "<D:status>HTTP/1.1 404 Not Found</D:status></D:propstat>"
#: The per-member fields of a template, in ``str.format``'s positional order.
_HREF, _SIZE, _MODIFIED, _ETAG, _NAME, _TYPE, _CREATED = range(7)

#: ``zcopy.scan`` (Cython: the scan, the per-member columns and the responses' joins in C) when it is
#: built and current (``hotpath.compiled``); None: the Python below does the same, to the same bytes.
_c = hotpath.extension("zcopy.scan")


class Body:
    """The memfd holding one Multi-Status. Quacks like a ``FileEntry`` where a
    Reply's ``entry`` is used (``acquire``/``release``, ``residency``:
    memory, never cold); the fd closes when the last reference goes (the
    reply was sent, or dropped unsent by a connection that went away)."""

    __slots__ = ("fd", "size", "residency")

    def __init__(self, fd: int, size: int) -> None:
        self.fd = fd
        self.size = size
        self.residency = MEMORY

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


class Memo:
    """What each member's kept response depends on, and the response, per member name: two dicts
    (``keys``, ``responses``) holding bytes only (a tuple per member, 10,000 of them, cost the worker
    15 ms of cyclic garbage collection per first build: measured, docs/benchmarks.md). A key is the
    file's local ETag when getetag is asked (inode, size, mtime and ctime: the ctime moves with the
    mode and attributes too), paired with the shown ETag where that is another (a content digest);
    else the member's inode, size, times and mode packed (``_keys``); None for a member changed within
    ``QUIET`` seconds (a change in the same kernel timestamp tick as the one before it would leave the
    ctime where it was): such a member is rendered again at every build until it is quiet. The
    responses are in the order ``update_members`` writes them in; ``folders`` names the members that
    are folders."""

    __slots__ = ("folders", "keys", "responses")

    def __init__(self) -> None:
        self.keys: dict = {}
        self.responses: dict[str, bytes] = {}
        self.folders: set[str] = set()         # the members that are folders (stat'ed at every rebuild)

    def __len__(self) -> int:
        return len(self.responses)

    def pop(self, name: str) -> None:
        self.keys.pop(name, None)
        self.responses.pop(name, None)
        self.folders.discard(name)


class Members:
    """What the last build of one kept page (a folder and an asked set) knew of the folder's members,
    and what has changed since: the next build re-stats only the members named by the folder's
    inotify events (``update_members``) when that is known to be everything that changed.

    ``memo``: ``write_members``' ``Memo``, every member the last build listed. ``folder``: the filesystem
    folder (the watch's label). ``dirty``: member names the watch (or this worker's writes) reported since
    the last build began; ``whole``: a change no name says (the folder itself moved or went, an ancestor
    did, too many names): the next build stats every member. ``armed``: the folder's watch token
    (``FileWatch.token``) as the loop saw it, after reading every queued event, just before asking for a
    build; ``token``: the one the last build began with. A build may trust the names only when its token
    equals the last build's (the watch was up, on the same folder, with no lost event, from before the last
    build's stats until this build began), and at most ``TTL`` seconds after the last full build
    (``full_at``), which bounds what no event reports (a write through a shared mmap or through a hard link
    in another folder, a content ETag computed since). Touched under its owner's lock (``Dav``)."""

    __slots__ = ("armed", "dirty", "folder", "full_at", "memo", "token", "whole")

    def __init__(self) -> None:
        self.memo = Memo()
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
                if len(self.dirty) > 64 and len(self.dirty) > len(self.memo) // 4:
                    self.whole, self.dirty = True, set()         # as dear as a full build
        elif path == folder or folder.startswith(path.rstrip(os.sep) + os.sep):
            self.whole, self.dirty = True, set()

    def begin(self, now: float):
        """A build begins (its owner's lock held): the names to re-stat, or None for a full build."""
        armed = self.armed
        incremental = (not self.whole and armed is not None and armed == self.token and bool(self.memo)
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


class Scan:
    """A folder's listed members, as columns: ``files`` and ``folders``, each (names, stats)."""

    __slots__ = ("files", "folders")

    def __init__(self, files: tuple[list, list], folders: tuple[list, list]) -> None:
        self.files = files
        self.folders = folders

    def __len__(self) -> int:
        return len(self.files[0]) + len(self.folders[0])


def members(fd: int, url: str, *, show_hidden: bool, visible=None) -> Scan:
    """The members of the folder open as ``fd`` that a listing shows: the listing's rule
    (``root.listed``), then only files and folders (no symlinks, no special files), each stat'ed once
    from the folder's fd (``os.stat`` with ``dir_fd``: fstatat with AT_SYMLINK_NOFOLLOW). The names
    come from one ``listdir`` (no ``DirEntry`` per member: ``scandir`` and ``DirEntry.stat`` cost 6 ms
    more for 10,000 members here), the filters are C-level passes over the whole folder."""
    at_top = http.normalised(url) == "/"
    if _c is not None:
        return _compiled_members(fd, at_top, show_hidden, visible)
    names = os.listdir(fd)
    if _DOT_RULE and not show_hidden:
        if names and (names[0][0] == "." or "/." in "/".join(names)):   # one C-level scan when none is hidden
            names = [name for name in names if name[0] != "."]
    else:
        names = [name for name in names if listed(name, show_hidden=show_hidden, at_top=at_top)]
    if visible is not None:
        names = [name for name in names if visible(name)]
    stat = os.stat
    try:
        stats = [stat(name, dir_fd=fd, follow_symlinks=False) for name in names]
    except OSError:                                  # one went meanwhile: the slow way, skipping it
        names, stats = _each_stat(fd, names)
    shown = {mode & _S_IFMT for mode in set(map(_mode, stats))}
    if shown <= {_S_IFREG}:
        return Scan((names, stats), ([], []))    # only files: the usual big folder
    files = ([], [])
    folders = ([], [])
    for name, st in zip(names, stats):
        kind = st[0] & _S_IFMT
        if kind == _S_IFREG:
            files[0].append(name)
            files[1].append(st)
        elif kind == _S_IFDIR:
            folders[0].append(name)
            folders[1].append(st)
    return Scan(files, folders)     # in the folder's order: RFC 4918 asks for none, clients sort


def _compiled_members(fd: int, at_top: bool, show_hidden: bool, visible) -> Scan:
    """``members`` by ``zcopy.scan.scan``: the same members in the same order, each with a
    ``zcopy.scan.Stat`` (the fields of a stat result zcopy reads) instead of an ``os.stat_result``."""
    hide = _DOT_RULE and not show_hidden
    file_names, file_stats, folder_names, folder_stats = _c.scan(fd, hide)
    columns = [(file_names, file_stats), (folder_names, folder_stats)]
    if not hide or visible is not None:
        for i, (names, stats) in enumerate(columns):
            keep = [(hide or listed(name, show_hidden=show_hidden, at_top=at_top)) and
                    (visible is None or visible(name)) for name in names]
            if not all(keep):
                columns[i] = (list(compress(names, keep)), list(compress(stats, keep)))
    return Scan(*columns)


def _each_stat(fd: int, names: list[str]) -> tuple[list, list]:
    kept, stats = [], []
    for name in names:
        try:
            stats.append(os.stat(name, dir_fd=fd, follow_symlinks=False))
        except OSError:
            continue                                # gone meanwhile
        kept.append(name)
    return kept, stats


def write_members(out_fd: int, dir_fd: int, url: str, plan: Plan, scan: Scan, overrides, held, slow,
                  memo: Memo | None = None) -> int:
    """Render each member's ``<D:response>`` into ``out_fd`` (a memfd), ``BATCH`` members at a time
    (files first, then folders: RFC 4918 asks for no order); the bytes written. ``overrides(stats,
    newest)``: index -> the getetag shown for the files whose shown ETag is not their local one
    (``http.make_etag``: a content digest is known, or it changed just now; ``newest``: the largest
    ``st_ctime_ns`` of ``stats``, or None); ``held``: live locks that may cover members;
    ``slow(url, st, dead)``: the general renderer for a member the templates do not fit.

    ``memo``: the ``Memo`` of the last build of the same folder and asked set, replaced by this
    build's: a member whose key is the same is not rendered again, nor are its attributes looked at
    (setting or removing an extended attribute moves the ctime). Not used
    while a lock is live."""
    want_etag = _ETAG in plan.needs
    if held:
        return _write_each(out_fd, dir_fd, url, plan, scan, overrides, held, slow)
    render = _batch_renderer(dir_fd, url, plan, slow)
    keep = memo is not None
    last_keys = last_responses = None
    settled = 0
    if keep:
        if memo:
            last_keys, last_responses = memo.keys, memo.responses
            memo.keys, memo.responses, memo.folders = {}, {}, set()
        settled = int((time.time() - QUIET) * 1e9)
    size = 0
    for (all_names, all_stats), is_dir in ((scan.files, False), (scan.folders, True)):
        etagged = want_etag and not is_dir
        if keep and is_dir:
            memo.folders.update(all_names)
        for i in range(0, len(all_names), BATCH):
            names, stats = all_names[i:i + BATCH], all_stats[i:i + BATCH]
            local = etags = keys = None
            newest = 0                            # the batch's largest ctime (ns)
            if etagged:
                if _c is not None:
                    newest = _c.newest(stats)
                    local = _c.etags(stats)
                else:
                    fields = list(map(ETAG_FIELDS, stats))
                    newest = max(map(_FIELDS_CTIME_NS, fields), default=0)
                    local = etags_of_fields(fields)
                etags = _shown(local, overrides(stats, newest))
            elif keep:
                newest = _c.newest(stats) if _c is not None else max(map(_ctime_ns, stats), default=0)
            if keep:
                keys = _keys(stats, local, etags, settled, newest)
            redo = None
            if last_keys is not None:
                seen = list(map(last_keys.get, names))
                if None in seen or None in keys:
                    redo = [j for j, old, key in zip(count(), seen, keys) if key is None or old != key]
                else:                             # each member known and settled: C-level passes only
                    redo = list(compress(count(), map(operator.ne, seen, keys)))
                if len(redo) == len(names):
                    redo = None
            if redo is None:                      # every member rendered
                pieces = render(names, stats, etags or [b""] * len(names), is_dir)
            else:
                pieces = list(map(last_responses.get, names))
                if redo:
                    new = render([names[j] for j in redo], [stats[j] for j in redo],
                                 [etags[j] for j in redo] if etags else [b""] * len(redo), is_dir)
                    for j, piece in zip(redo, new):
                        pieces[j] = piece
            if keep:
                memo.keys.update(zip(names, keys))
                memo.responses.update(zip(names, pieces))
            size += _writev(out_fd, pieces)
    return size


#: A memo key of a member whose ETag is not asked for (``_keys``): inode, size, mtime, ctime (ns), mode.
_KEY_PACK = struct.Struct("=QqqqI").pack
_FIELDS_CTIME_NS = operator.itemgetter(3)       # of http.ETAG_FIELDS
_KEY_FIELDS = operator.attrgetter("st_ino", "st_size", "st_mtime_ns", "st_ctime_ns", "st_mode")


def _key(ino: int, size: int, mtime_ns: int, ctime_ns: int, mode: int) -> bytes:
    """One member's packed key; for times that ``=q`` cannot hold (after 2262 or before 1677: a client can
    set them with X-OC-Mtime or a PROPPATCH of Win32LastModifiedTime) the fields in decimal instead, as
    ASCII, never equal to a packed key (whose mode bytes are not ASCII digits). ``zcopy.scan._key`` too."""
    try:
        return _KEY_PACK(ino, size, mtime_ns, ctime_ns, mode)
    except struct.error:
        return b"%d,%d,%d,%d,%d" % (ino, size, mtime_ns, ctime_ns, mode)


def _keys(stats: list, local: list[bytes] | None, shown: list[bytes] | None, settled: int, newest: int) -> list:
    """``Memo`` keys of members: a file's local ETag when getetag is asked (``local``: inode, size, mtime
    and ctime, the ctime moving with its mode and attributes too; the very list the ETags were
    formatted into), paired with the ETag shown where that is another; else its inode, size, times
    and mode packed in 36 bytes (no tuple the collector would walk); None for a member changed after
    ``settled`` (ns; ``newest``: the members' largest ctime)."""
    if local is not None:
        keys = local if shown is local else [key if tag is key else (key, tag) for key, tag in zip(local, shown)]
    elif _c is not None:
        keys = _c.packed_keys(stats)
    else:
        try:
            keys = list(map(_KEY_PACK, *zip(*map(_KEY_FIELDS, stats)))) if stats else []
        except struct.error:                      # a time beyond 64-bit nanoseconds: that member in decimal
            keys = [_key(*fields) for fields in map(_KEY_FIELDS, stats)]
    if newest > settled:
        keys = [key if c <= settled else None for key, c in zip(keys, map(_ctime_ns, stats))]
    return keys


def _shown(local: list[bytes], over: dict) -> list[bytes]:
    """The getetag column: each file's local ETag, or the shown one from ``over`` (index -> ETag)."""
    if not over:
        return local
    shown = list(local)
    for j, tag in over.items():
        shown[j] = tag
    return shown


def _write_each(out_fd: int, dir_fd: int, url: str, plan: Plan, scan: Scan, overrides, held, slow) -> int:
    """``write_members`` while locks are live: one member at a time (each may be covered), no memo."""
    want_etag = _ETAG in plan.needs
    render = _renderer(dir_fd, url, plan, held, slow)
    pieces: list[bytes] = []
    held_chars = 0
    size = 0
    for (names, stats), is_dir in ((scan.files, False), (scan.folders, True)):
        etags = [b""] * len(names)
        if want_etag and not is_dir:
            etags = _shown(make_etags(stats), overrides(stats))
        for name, st, etag in zip(names, stats, etags):
            piece = render(name, st, is_dir, etag)
            pieces.append(piece)
            held_chars += len(piece)
            if held_chars >= FLUSH:
                size += _writev(out_fd, pieces)
                pieces, held_chars = [], 0
    return size + _writev(out_fd, pieces)


def update_members(out_fd: int, dir_fd: int, url: str, plan: Plan, memo: Memo, dirty, overrides, slow, *,
                   show_hidden: bool, visible=None) -> int:
    """The members' responses again from ``memo`` (``write_members``' for this folder and asked set, all
    of the folder's members as the last build saw them), stat'ing only the members named in ``dirty``
    (the names the folder's inotify watch reported since then), the members that are folders (a
    subfolder's own mtime moves with changes inside it, which no event of this folder reports) and
    those not settled when last rendered (their shown ETag turns from weak to strong once they are
    quiet, with no event: their key is None): written into ``out_fd`` in one piece; the bytes written.
    ``memo`` is brought up to date: a named
    member gone, now a symlink or hidden is dropped, a new one added. Only valid where every change
    since the memo's stats was reported by name (``Members``); never while a lock is live. Every member
    rendered here is asked for its attributes when dead properties are asked for, whatever the folder's
    mark says (``deadprops.MARK``): an event named it, and it may have gained some from another program."""
    want_etag = _ETAG in plan.needs
    render = _renderer(dir_fd, url, plan, None, slow, every=True)
    at_top = http.normalised(url) == "/"
    settled = int((time.time() - QUIET) * 1e9)
    again = [name for name, key in memo.keys.items()
             if (key is None or name in memo.folders) and name not in dirty]
    for names, named in ((dirty, True), (again, False)):
        for name in names:
            if not listed(name, show_hidden=show_hidden, at_top=at_top) or \
                    (visible is not None and not visible(name)):
                memo.pop(name)
                continue
            try:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except OSError:
                memo.pop(name)                       # gone (or not ours to see): not listed
                continue
            mode = st.st_mode
            if not (stat_mod.S_ISREG(mode) or stat_mod.S_ISDIR(mode)):
                memo.pop(name)
                continue
            is_dir = stat_mod.S_ISDIR(mode)
            local = shown = None
            if want_etag and not is_dir:
                local = [etag_of_fields(ETAG_FIELDS(st))]
                shown = _shown(local, overrides([st]))
            key = _keys([st], local, shown, settled, st.st_ctime_ns)[0]
            if not named and key is not None and memo.keys.get(name) == key:
                continue
            if is_dir:
                memo.folders.add(name)
            else:
                memo.folders.discard(name)
            memo.keys[name] = key
            memo.responses[name] = render(name, st, is_dir, shown[0] if shown else b"")
    return _writev(out_fd, list(memo.responses.values()))


def _renderer(dir_fd: int, url: str, plan: Plan, held, slow, *, every: bool = False):
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
    has_dead = _dead_probe(dir_fd, every=every) if plan.wants_dead else None
    if has_dead is _never:
        has_dead = None
    locked = held if plan.wants_locks else None
    url_base = url if url.endswith("/") else url + "/"

    def render(name: str, st, is_dir: bool, etag: bytes) -> bytes:
        if has_dead is not None and has_dead(name) or locked and _covered(locked, url_base + name):
            return slow(url_base + name, st, plan.wants_dead).encode("utf-8", "surrogateescape")
        plain = _PLAIN(name) is not None
        href = base + name if plain else multistatus.href(url_base + name, False)
        if is_dir:
            href += "/"
        modified = created = ctype = ""
        if want_modified:
            second = st[8]                                    # st_mtime in whole seconds (_mtime_s)
            modified = dates.get(second)
            if modified is None:
                modified = dates[second] = multistatus.rfc1123(second)
        if want_created:
            second = min(st[9], st[8])
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
        return file_tpl(href, st.st_size if want_size else "", modified, etag.decode("ascii"),
                        name if plain or not want_name else _escape(name), ctype, created).encode(
                            "utf-8", "surrogateescape")
    return render


def _pieces(template: str) -> tuple[list[bytes], list[int]]:
    """A template's constant parts (UTF-8, braces unescaped) and, between them, its fields' numbers."""
    consts: list[bytes] = []
    fields: list[int] = []
    for literal, field, _spec, _conv in string.Formatter().parse(template):
        if consts and len(consts) > len(fields):
            consts[-1] += literal.encode("utf-8", "surrogateescape")
        else:
            consts.append(literal.encode("utf-8", "surrogateescape"))
        if field is not None:
            fields.append(int(field))
    if len(consts) == len(fields):
        consts.append(b"")
    return consts, fields


def _batch_renderer(dir_fd: int, url: str, plan: Plan, slow):
    """``render(names, stats, etags, is_dir)``: the members' ``<D:response>``s (UTF-8), in order, from
    the plan's templates: each field's column is made in one pass over the batch (a C-level ``map``
    where one fits), then each member's response is one ``bytes.join`` of the template's constant
    parts and its fields (``_pieces``): no Python call and no format parsing per member. A member
    with dead properties (when they are asked for and the folder is marked) goes through ``slow``.
    The bytes are ``_renderer``'s (tests/test_dav_propfind.py compares the two)."""
    base = multistatus.href(url, True).encode("utf-8", "surrogateescape")
    shapes = {False: _pieces(plan.file), True: _pieces(plan.folder)}
    dates: dict[int, bytes] = {}
    stamps: dict[int, bytes] = {}
    types: dict[str, bytes] = {}
    has_dead = _dead_probe(dir_fd) if plan.wants_dead else None
    if has_dead is _never:
        has_dead = None
    url_base = url if url.endswith("/") else url + "/"

    def render(names: list[str], stats: list, etags: list[bytes], is_dir: bool) -> list[bytes]:
        if not names:
            return []
        flags = None
        if has_dead is not None:
            flags = list(map(has_dead, names))
            if any(flags):
                every = names, stats
                names = [name for name, flag in zip(names, flags) if not flag]
                stats = [st for st, flag in zip(stats, flags) if not flag]
                etags = [etag for etag, flag in zip(etags, flags) if not flag]
            else:
                flags = None
        consts, fields = shapes[is_dir]
        columns: dict[int, list] = {}
        if not names:                             # every one has dead properties
            return [slow(url_base + name, st, True).encode("utf-8", "surrogateescape") for name, st in zip(*every)]
        joined = "/".join(names)                  # no name holds a "/"
        if _HREF in fields or _NAME in fields:
            whole = joined.encode("ascii") if joined.isascii() else None
            if whole is not None and not whole.translate(None, _PLAIN_BYTES):
                raw = whole.split(b"/")             # one encode for the batch
                columns[_NAME] = raw
                hrefs = list(map(operator.add, repeat(base), raw))
            else:
                columns[_NAME] = [_ENCODE(name if _PLAIN(name) else _escape(name)) for name in names]
                hrefs = [_ENCODE(multistatus.href(url_base + name, False)) for name in names]
            columns[_HREF] = [h + b"/" for h in hrefs] if is_dir else hrefs
        if _SIZE in fields:
            columns[_SIZE] = _c.sizes(stats) if _c is not None else list(
                map(operator.mod, repeat(b"%d"), map(_size, stats)))
        if _MODIFIED in fields:
            seconds = _c.mtimes(stats) if _c is not None else list(map(_mtime_s, stats))
            for second in set(seconds).difference(dates):
                dates[second] = multistatus.rfc1123(second).encode()
            columns[_MODIFIED] = list(map(dates.__getitem__, seconds))
        if _CREATED in fields:
            seconds = _c.created(stats) if _c is not None else list(
                map(min, map(_ctime_s, stats), map(_mtime_s, stats)))
            for second in set(seconds).difference(stamps):
                stamps[second] = multistatus.rfc3339(second).encode()
            columns[_CREATED] = list(map(stamps.__getitem__, seconds))
        if _TYPE in fields:
            if joined[:1] != "." and "/." not in joined:   # no dotfile: the extension is after the last dot
                exts = [tail if dot else "" for _, dot, tail in map(str.rpartition, joined.lower().split("/"),
                                                                     repeat("."))]
            else:
                exts = [name.rpartition(".")[2].lower() if "." in name[1:] else "" for name in names]
            missing = set(exts).difference(types)
            if missing:
                example = dict(zip(exts, names))
                for ext in missing:
                    types[ext] = _escape(http.content_type(example[ext])).encode()
            columns[_TYPE] = list(map(types.__getitem__, exts))
        if _ETAG in fields:
            columns[_ETAG] = etags              # ours (quotes, hex, base64): nothing to escape
        if _c is not None:
            pieces = _c.join(consts, [columns[field] for field in fields], len(names))
        else:
            parts = [repeat(consts[0])]
            for field, const in zip(fields, consts[1:]):
                parts.append(columns[field])
                parts.append(repeat(const))
            pieces = list(map(b"".join, zip(*parts)))
        if flags is None:
            return pieces
        fast = iter(pieces)               # the members with dead properties, one by one, in their places
        return [slow(url_base + name, st, True).encode("utf-8", "surrogateescape") if flag else next(fast)
                for name, st, flag in zip(every[0], every[1], flags)]
    return render


def _covered(locks, path: str) -> bool:
    from zcopy.dav.locks import normalise
    path = normalise(path.encode("utf-8", "surrogateescape").decode("utf-8", "replace"))
    return any(lk.covers(path) for lk in locks)


def _escape(text: str) -> str:
    from xml.sax.saxutils import escape
    return escape(text)


def _dead_probe(dir_fd: int, *, every: bool = False):
    """``has(name)``: whether the member ``name`` of ``dir_fd`` may have dead properties (its extended
    attribute names: an open with O_NOFOLLOW from the folder's fd, flistxattr, close: about 5 µs a
    member here, more than its ``fstatat``; measured no dearer than listing them through /proc without
    the open). ``_never`` when the filesystem keeps no user attributes, or when the folder does not
    carry ``deadprops.MARK`` (set before zcopy gives any member of it a dead property: PROPPATCH, COPY,
    MOVE), unless ``every`` (members an inotify event named, which another program may have given
    attributes: docs/webdav.md says what a folder's mark covers)."""
    try:
        attrs = os.listxattr(dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return _never
        return _always
    if not every and deadprops.MARK not in attrs:
        return _never
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

