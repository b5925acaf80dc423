"""Folder listings: built off the loop, streamed into a memfd, cached per folder.

A listing costs a ``scandir`` and a ``stat`` per entry (disk) and a rendered
row per entry (CPU): for 50,000 entries, most of a second. So it is built on
the worker's executor: scanned, sorted, rendered in pieces of a few hundred
rows, each piece written to an anonymous file (``memfd_create``) as it is made
and hashed for the ETag. The reply's body is then a file range of that memfd,
sent by the engine (sendfile) like any file: a connection holds its socket's
send buffer, never a private copy of the page, and a client that sends the
request and never reads pins nothing but its reference to the shared page.

Pages are cached per (URL path, JSON or the HTML page's view: its order and
whether its write controls show), shared by every reply that
sends them (reference-counted like ``FileEntry``: an evicted page's memfd
closes once no reply holds it, and at least ``GRACE`` after it left the
cache, since a reply handed to a waiting connection is taken up in that
connection's next turn), the whole cache capped in bytes
(``MAX_BYTES``, least recently used out first; a page larger than a quarter of
the cap is served but not kept). A cached page is dropped when the file
cache's inotify watch reports a change in its folder (a child created,
removed, renamed, written), or the folder itself moved or went, or a write of
this worker touched it, and in any case after ``TTL`` seconds (what no event
of the folder reports: a subfolder's own mtime, an ancestor swapped; ``RESOLVE_TTL``
where the folder cannot be watched). Requests for a page being built wait for
that one build.
"""

from __future__ import annotations

import collections
import hashlib
import os
import time

from zcopy import http, ui
from zcopy.server.executor import collector_paused, defer, refused
from zcopy.server.files import RESOLVE_TTL
from zcopy.server.prefetch import MEMORY

#: Bytes of rendered pages a worker keeps.
MAX_BYTES = 64 << 20
#: Seconds a watched folder's page is trusted.
TTL = 10.0
#: Bytes rendered before they are written to the memfd.
FLUSH = 1 << 16
#: Seconds a page out of the cache stays open at least: a Pending's reply is
#: taken up by its connection later in the same loop turn, not at once.
GRACE = 1.0


class Page:
    """One rendered listing in a memfd. Quacks like a ``FileEntry`` where a
    Reply's ``entry`` is used: ``acquire``/``release``, ``residency``
    (memory: never cold, so the connection sends it at once)."""

    __slots__ = ("fd", "size", "etag", "content_type", "folder", "dir_fd", "built_at", "ttl", "users", "retired",
                 "residency", "retired_at")

    def __init__(self, fd: int, size: int, etag: str, content_type: str, folder: str, dir_fd: int = -1) -> None:
        self.fd = fd
        self.dir_fd = dir_fd           # the folder, until the cache has watched it (then closed)
        self.size = size
        self.etag = etag
        self.content_type = content_type
        self.folder = folder           # the filesystem folder it lists
        self.built_at = 0.0
        self.ttl = RESOLVE_TTL
        self.users = 0
        self.retired = False
        self.retired_at = 0.0
        self.residency = MEMORY

    def acquire(self) -> "Page":
        self.users += 1
        return self

    def release(self) -> None:
        self.users -= 1

    def retire(self, now: float) -> None:
        """Out of the cache; ``Listings`` closes it once no reply holds it and
        ``GRACE`` has passed (a reply handed to a connection is only taken
        up, ``acquire``, in that connection's next turn)."""
        if not self.retired:
            self.retired = True
            self.retired_at = now

    def closable(self, now: float) -> bool:
        return self.users == 0 and now - self.retired_at >= GRACE

    def forget_folder(self) -> None:
        if self.dir_fd >= 0:
            os.close(self.dir_fd)
            self.dir_fd = -1

    def _close(self) -> None:
        self.forget_folder()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


#: The HTML page's default view: (sort column, order, write controls shown).
VIEW = ("name", "asc", False)


def build(scan, url_path: str, as_json: bool, view: tuple | None = None, keep=None) -> Page:
    """Scan (``scan(url_path)`` -> folder label, an fd of the folder, entries:
    the responder's, from ROOT's fd), render in pieces into a memfd (off the loop).
    ``view``: the HTML page's (sort, order, writable), see ``http.listing_html_pieces``.
    ``keep(name)``: the entries a signed-in account may see (None: all).
    The cyclic collector waits meanwhile (``executor.collector_paused``): a big
    folder's entries are tens of thousands of tuples, which would set off full
    collections, the GIL held, in the middle of the build."""
    with collector_paused():
        return _build(scan, url_path, as_json, view, keep)


def _build(scan, url_path: str, as_json: bool, view: tuple | None, keep) -> Page:
    folder, dir_fd, entries = scan(url_path)
    if keep is not None:
        entries = [e for e in entries if keep(e.name)]
    if as_json:
        pieces, ctype = http.listing_json_pieces(url_path, entries), "application/json"
    else:
        sort, order, writable = view or VIEW
        pieces = http.listing_html_pieces(url_path, entries, sort=sort, order=order, writable=writable,
                                          assets=ui.URLS)
        ctype = "text/html; charset=utf-8"
    try:
        fd = os.memfd_create("zcopy-listing", os.MFD_CLOEXEC)
    except BaseException:
        os.close(dir_fd)
        raise
    try:
        digest = hashlib.blake2b(digest_size=8)
        size = 0
        out: list[bytes] = []
        held = 0
        for piece in pieces:
            data = piece.encode("utf-8")
            out.append(data)
            held += len(data)
            if held >= FLUSH:
                size += _write(fd, out, digest)
                out, held = [], 0
        size += _write(fd, out, digest)
    except BaseException:
        os.close(fd)
        os.close(dir_fd)
        raise
    # A weak validator from the page itself (the folder's mtime misses a file
    # that grew), so a browser revalidating a listing gets a 304.
    return Page(fd, size, f'W/"{digest.hexdigest()}"', ctype, folder, dir_fd)


def _write(fd: int, pieces: list[bytes], digest) -> int:
    data = b"".join(pieces)
    digest.update(data)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    return len(data)


class Listings:
    """One per worker: the page cache and the builds in flight (loop thread)."""

    def __init__(self, cache, scan, executor=None, *, max_bytes: int = MAX_BYTES, ttl: float = TTL,
                 build=build) -> None:
        self.cache = cache
        self.scan = scan                # url path -> (folder label, folder fd, entries); off the loop
        #: (scan, url path, as_json, view, keep) -> Page, off the loop: ``build`` here; WebDAV's
        #: PROPFIND keeps its Multi-Status pages in a Listings of its own (zcopy.server.propfind)
        self.build = build
        self.executor = executor
        self.max_bytes = max_bytes
        self.ttl = ttl
        self._pages: collections.OrderedDict[tuple, Page] = collections.OrderedDict()
        self.bytes = 0
        self._building: dict[tuple, list] = {}    # key -> [(then, refuse, pending)]
        self._epoch = 0                            # bumped by every invalidation
        self.built = 0
        self.hits = 0
        self._retired: list[Page] = []             # out of the cache, not closed yet (see GRACE)
        if hasattr(cache, "listeners"):
            cache.listeners.append(self.changed)

    def serve(self, url_path: str, as_json: bool, then, refuse, view: tuple | None = None, viewer=None):
        """``then(page)`` (a Reply) for the folder's listing: at once from the
        cache, else a Pending settled when the page is built (one build per
        page however many requests wait for it). ``view``: the HTML page's
        (sort, order, writable); each view is a page of its own. ``viewer``:
        (key, keep) for a listing filtered per account (``keep(name)``, run
        off the loop); the key says whose it is, so it is a page of its own too."""
        view = None if as_json else (view or VIEW)
        key = (url_path, as_json, view) if viewer is None else (url_path, as_json, view, viewer[0])
        keep = None if viewer is None else viewer[1]
        now = time.monotonic()
        if self._retired:
            self.sweep(now)
        page = self._pages.get(key)
        if page is not None:
            if now - page.built_at < page.ttl:
                self._pages.move_to_end(key)
                self.hits += 1
                return then(page)
            self._drop(key)
        if self.executor is None:
            return defer(None, lambda: self.build(self.scan, url_path, as_json, view, keep), self._keep_then(key, then),
                         refuse)
        from zcopy.server.reply import Pending

        pending = Pending()
        waiters = self._building.get(key)
        if waiters is None:
            waiters = self._building[key] = []
            epoch = self._epoch
            self.executor.submit(self.build, self.scan, url_path, as_json, view, keep, cpu=True).then(
                lambda task: self._built(key, epoch, task))
        waiters.append((then, refuse, pending))
        return pending

    def _keep_then(self, key, then):
        def keep(page: Page):
            self._keep(key, page)
            try:
                return then(page)
            finally:
                if key not in self._pages:
                    self._retire(page)
        return keep

    def _built(self, key: tuple, epoch: int, task) -> None:
        if self._retired:
            self.sweep(time.monotonic())
        waiters = self._building.pop(key, [])
        page = task.result
        if page is not None:
            self.built += 1
            if epoch == self._epoch:       # nothing changed while it was built
                self._keep(key, page)
            else:
                page.forget_folder()
        for then, refuse, pending in waiters:
            try:
                if task.error is not None:
                    raise task.error
                reply = then(page)
            except Exception as exc:
                reply = refused(refuse, exc)
            pending.done(reply)            # the connection takes its reference now
        if page is not None and key not in self._pages:
            self._retire(page)             # not kept: closes when its replies end

    def _keep(self, key: tuple, page: Page) -> None:
        if page.size > self.max_bytes // 4 or getattr(page, "volatile", False):
            page.forget_folder()
            return
        watch = self.cache.watch
        page.built_at = time.monotonic()
        watched = watch is not None and page.dir_fd >= 0 and watch.watch(page.folder, page.dir_fd)
        page.forget_folder()
        page.ttl = self.ttl if watched else RESOLVE_TTL
        self._drop(key)
        self._pages[key] = page
        self.bytes += page.size
        while self.bytes > self.max_bytes:
            self._drop(next(iter(self._pages)))

    def _drop(self, key: tuple) -> None:
        page = self._pages.pop(key, None)
        if page is not None:
            self.bytes -= page.size
            self._retire(page)

    def _retire(self, page: Page) -> None:
        if not page.retired:
            page.retire(time.monotonic())
            self._retired.append(page)

    def sweep(self, now: float) -> None:
        """Close the retired pages no reply holds any more (after GRACE)."""
        keep = []
        for page in self._retired:
            if page.closable(now):
                page._close()
            else:
                keep.append(page)
        self._retired = keep

    def changed(self, fs_path: str | None) -> None:
        """The file cache's change notice (an inotify event or a write of this
        worker): drop the pages of the folder that holds ``fs_path``, of the
        folder itself and of everything under it; None: drop every page."""
        self._epoch += 1
        if fs_path is None:
            for key in list(self._pages):
                self._drop(key)
            return
        path = fs_path.rstrip(os.sep) or os.sep
        parent = os.path.dirname(path)
        under = path + os.sep
        for key, page in list(self._pages.items()):
            folder = page.folder
            if folder == parent or folder == path or folder.startswith(under):
                self._drop(key)

    def close(self) -> None:
        """The worker stops: every page closes (its connections are closed already)."""
        self.changed(None)
        for page in self._retired:
            page._close()
        self._retired = []

    def snapshot(self) -> dict:
        return {"pages": len(self._pages), "bytes": self.bytes, "built": self.built, "hits": self.hits}
