"""The open-file cache: fd, stat and prebuilt headers per served path.

Per-file work happens once per file (whitenoise's lesson): opening, the
content type, the ETag, the header block and the precompressed siblings are
computed when a path is first served and reused until the file changes.

Revalidation: where the file's folder is watched (``zcopy.server.watch``,
inotify), a change drops the entry when its event arrives and a request for
an unchanged file costs no syscall; elsewhere it costs one ``stat(2)`` per
request. Either way, when the inode, size or mtime differ from what the entry
was built from, the entry is rebuilt, so a changed or replaced file is never
served with a stale length. The walk from ROOT's fd (``zcopy.server.root``)
and a stat are redone at most once per ``RESOLVE_TTL`` seconds per path,
watched or not: that catches what no folder event reports (an ancestor folder
swapped for a link, a write through mmap). Files and their precompressed
siblings are opened relative to the folder fd the walk returns, never by path.
A write answered by another worker (a MOVE of an ancestor raises no event in
our folders) makes every entry re-resolve at its next use at once: ``sync``
reads the shared write generation once per request (zcopy.server.shared).

An entry's fd may be in use by transfers when the entry is replaced or
evicted; entries are reference-counted and the fd is closed only when the
last user releases it.
"""

from __future__ import annotations

import errno
import os
import resource
import stat as stat_mod
import time
from dataclasses import dataclass, field

from zcopy import http
from zcopy.server.held import HeldBodies
from zcopy.server.root import Place, Root
from zcopy.server.watch import EVERYTHING

#: Precompressed siblings we look for, in our order of preference.
ENCODINGS = {"br": ".br", "zstd": ".zst", "gzip": ".gz"}
RESOLVE_TTL = 1.0
_NEVER = float("-inf")   # an entry's resolved_at that makes its next use re-resolve it
#: O_NONBLOCK: nothing opened here may wait (a FIFO would wait for a writer); it
#: changes nothing for a regular file's reads.
_OPEN_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK
_NO_FDS = (errno.EMFILE, errno.ENFILE)


def _no_change() -> bool:
    return False


@dataclass(slots=True, eq=False)
class FileEntry:
    """One open regular file and everything needed to answer for it."""

    path: str
    fd: int
    size: int
    mtime: int                 # whole seconds, as Last-Modified shows it
    key: tuple                 # (dev, ino, size, mtime_ns): what "unchanged" means
    etag: str
    content_type: str
    static: bytes              # prebuilt header block (see http.static_headers)
    variants: dict = field(default_factory=dict)   # coding -> FileEntry of the sibling
    encoding: str | None = None                    # content-coding of a precompressed sibling
    resolved_at: float = 0.0
    resident_until: float = 0.0    # monotonic time until which the page cache is trusted to hold it
    users: int = 0
    retired: bool = False
    also: tuple = ()           # other strong ETags naming the same bytes (this node's, once the digest is known)
    watched: bool = False      # its folder's changes arrive as events: no stat per request
    link: str | None = None    # the followed symlink the URL names (its folder is watched too)
    whole: list = field(default_factory=list)      # body plan of a 200: [(fd, 0, size)]
    _head_for: tuple = ()                          # (Date line, close, version) the memo is for
    _head: bytes = b""
    reply: object = None       # the responder's memo of its 200 Reply (built on ``head_200``'s bytes) ...
    reply_head: bytes = b""    # ... and the head it was built on
    data: bytes | None = None  # the whole body, when held in memory (zcopy.server.held)
    #: Where a request checks the name again (unwatched, or with siblings): the
    #: folder fd the walk opened, and the file's name in it; -1 when not kept.
    folder_fd: int = -1
    name: str = ""

    def __post_init__(self) -> None:
        if self.size:
            self.whole = [(self.fd, 0, self.size)]

    def head_200(self, date: bytes, close: bool, version: tuple) -> bytes:
        """The whole 200 head; rebuilt only when the Date line (once a second)
        or the connection's framing differs from the last request's."""
        key = (date, close, version)
        if key != self._head_for:
            self._head = http.response_head(200, date, self.static, self.size, close=close, version=version)
            self._head_for = key
        return self._head

    def trusted(self, now: float) -> bool:
        """Still what its URL serves, with no syscall to check: in the cache
        (not retired), its folder watched, resolved less than RESOLVE_TTL ago."""
        return not self.retired and self.watched and now - self.resolved_at < RESOLVE_TTL

    def acquire(self) -> "FileEntry":
        self.users += 1
        return self

    def release(self) -> None:
        self.users -= 1
        if self.retired and self.users == 0:
            self._close()

    def retire(self) -> None:
        """Drop from the cache; the fd closes when the last transfer ends."""
        if self.retired:
            return
        self.retired = True
        for v in self.variants.values():
            v.retire()
        if self.users == 0:
            self._close()

    def _close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self.folder_fd >= 0:
            os.close(self.folder_fd)
            self.folder_fd = -1

    def stat_name(self, suffix: str = "") -> os.stat_result | None:
        """fstatat of the name this entry (or its sibling with ``suffix``) was
        opened by, in the folder the walk opened: one syscall, no path string.
        None when it is gone or when no folder fd is kept."""
        if self.folder_fd < 0:
            return None
        try:
            return os.stat(self.name + suffix, dir_fd=self.folder_fd, follow_symlinks=False)
        except OSError:
            return None


class OpenFileCache:
    """url path -> FileEntry, bounded; the request path is a lookup + one stat."""

    def __init__(self, root: str, *, follow_symlinks: bool = False, show_hidden: bool = False, mac_files: bool = False,
                 symlink_targets: tuple[str, ...] = (), max_entries: int = 1024, watch=None,
                 generation=None, digests=None, held: HeldBodies | None = None) -> None:
        self.root = root
        #: the bodies of small watched files, kept in memory (one send per reply)
        self.held = held if held is not None else HeldBodies(max_size=0)
        #: content-digest ETags (zcopy.server.digests.Digests), or None: this node's tags only
        self.digests = digests
        #: every file operation of the server goes through it (reads here, writes in ``fileops``)
        self.fs = Root(root, follow_symlinks=follow_symlinks, show_hidden=show_hidden, mac_files=mac_files,
                       allowed=symlink_targets)
        self.follow_symlinks = follow_symlinks
        self.show_hidden = show_hidden
        # Each entry holds an fd: leave most of RLIMIT_NOFILE to connections.
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        self.max_entries = max_entries if soft == resource.RLIM_INFINITY else max(16, min(max_entries, soft // 4))
        self._entries: dict[str, FileEntry] = {}
        self.watch = watch             # a FileWatch, or None: stat per request
        #: filesystem path (the file's or a sibling's) -> url paths whose entry it feeds
        self._users_of: dict[str, set[str]] = {}
        #: called with each changed filesystem path (None: everything), as the
        #: cache learns of it: the listing cache (``zcopy.server.listings``)
        self.listeners: list = []
        #: the write generations of all workers (zcopy.server.shared.Generation): when
        #: another worker wrote, every entry is re-resolved before it is trusted again
        #: (a moved ancestor raises no event in the folders we watch). Checked once
        #: per request by ``sync`` (the responder, before its memo).
        self.generation = generation
        self._foreign_write = generation.changed if generation is not None else _no_change

    def stat(self, url_path: str, suffix: str = "") -> os.stat_result | None:
        """What ``url_path`` (or its sibling with ``suffix``) is now, walked
        afresh from ROOT; None when it is not there (or not to be served)."""
        try:
            with self.fs.locate(url_path) as place:
                return os.stat(place.name + suffix, dir_fd=place.dir_fd, follow_symlinks=False)
        except (OSError, http.HttpError):
            return None

    def lookup(self, url_path: str) -> FileEntry | None:
        """The current entry for a regular file, or None when the path is a
        directory (the caller lists it). Raises HttpError(404/403) otherwise."""
        entry = self._entries.get(url_path)
        now = time.monotonic()
        if entry is not None and now - entry.resolved_at < RESOLVE_TTL:
            if entry.watched:       # trusted(now): the events would have dropped it
                return entry
            st = entry.stat_name() if entry.folder_fd >= 0 else self.stat(url_path)
            if st is None:
                self._drop(url_path)
                raise http.HttpError(404, "not found")
            if (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) == entry.key:
                return entry
        with self.fs.locate(url_path) as place:
            return self._lookup(url_path, place, entry, now)

    def _lookup(self, url_path: str, place: Place, entry: FileEntry | None, now: float) -> FileEntry | None:
        try:
            st = place.stat()
        except OSError:
            self._drop(url_path)
            raise http.HttpError(404, "not found") from None
        if stat_mod.S_ISDIR(st.st_mode):
            self._drop(url_path)
            return None
        if stat_mod.S_ISLNK(st.st_mode):        # not followed (see Root.locate)
            self._drop(url_path)
            raise http.HttpError(404, "not found")
        if not stat_mod.S_ISREG(st.st_mode):
            raise http.HttpError(403, "not a regular file")
        if entry is not None and (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) == entry.key:
            entry.resolved_at = now
            if entry.watched and st.st_nlink != 1:     # a link made since: no longer watched
                entry.watched = False
                self.held.forget(entry)
                entry.reply = None
            if entry.folder_fd >= 0:                    # the folder as walked now
                os.close(entry.folder_fd)
                entry.folder_fd = os.dup(place.dir_fd)
            return entry
        # Watch before opening: a change after the open's fstat is then an event.
        # Not a file with other hard links: a write through one of them raises
        # its event in that link's folder, not here.
        watched = (st.st_nlink == 1 and self.watch is not None
                   and self.watch.watch(place.folder, place.dir_fd))
        if place.link is not None and watched:
            # A followed link pointed elsewhere is an event in the link's folder only.
            watched = self.watch.watch(os.path.dirname(place.link), place.link_fd)
        fresh = self._open(url_path, place, now)
        fresh.watched = watched
        fresh.link = place.link
        if not watched or fresh.variants:
            # Checked per request: keep the folder (the walk is redone once a
            # second as for every entry; the fd is beneath ROOT as walked).
            fresh.folder_fd, fresh.name = os.dup(place.dir_fd), place.name
        self._drop(url_path)
        if len(self._entries) >= self.max_entries:
            oldest = next(iter(self._entries))
            self._drop(oldest)
        self._store(url_path, fresh)
        return fresh

    def _store(self, url_path: str, entry: FileEntry) -> None:
        if self.watch is not None:
            for fs_path in self._fed_by(entry):
                self._users_of.setdefault(fs_path, set()).add(url_path)
        self._entries[url_path] = entry

    @staticmethod
    def _fed_by(entry: FileEntry) -> list[str]:
        """The filesystem paths whose change makes ``entry`` stale: the file
        and every sibling it could be served as, existing or not (a new .gz
        must be offered too), and the symlink that led to it."""
        paths = [entry.path] + [entry.path + suffix for suffix in ENCODINGS.values()]
        if entry.link is not None:
            paths.append(entry.link)
        return paths

    def apply_changes(self) -> None:
        """Drop the entries that the watch's pending events make stale."""
        for fs_path in self.watch.changes():
            for listener in self.listeners:
                listener(fs_path)
            if fs_path is EVERYTHING:                # overflow: trust nothing
                self.invalidate()
                return
            if fs_path.endswith(os.sep):             # a folder came, went or moved
                self.invalidate(fs_path.rstrip(os.sep))
                continue
            users = self._users_of.get(fs_path)
            if users is not None:
                for url_path in list(users):
                    self._drop(url_path)

    def _open(self, url_path: str, place: Place, now: float) -> FileEntry:
        path = place.path
        try:
            fd = self._open_fd(place, "", _OPEN_FLAGS)
        except PermissionError:
            raise http.HttpError(403, "permission denied") from None
        except OSError as exc:
            if exc.errno in _NO_FDS:
                raise http.HttpError(503, "out of file descriptors", headers=[("Retry-After", "1")]) from None
            raise http.HttpError(404, "not found") from None
        # Stat the fd: the file may have changed since the walk's stat
        # (O_NONBLOCK above: had it become a FIFO, the open must not wait for a writer).
        st = os.fstat(fd)
        if not stat_mod.S_ISREG(st.st_mode):
            os.close(fd)
            raise http.HttpError(403, "not a regular file")
        ctype = http.content_type(path)
        variants = {}
        for coding, suffix in ENCODINGS.items():
            sibling = self._open_variant(url_path, place, suffix, coding, ctype, now)
            if sibling is not None:
                variants[coding] = sibling
        etag, also = self._etags(fd, st, url_path)
        mtime = int(st.st_mtime)
        return FileEntry(path, fd, st.st_size, mtime, (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns),
                         etag, ctype,
                         http.static_headers(ctype, mtime, etag, vary=bool(variants)) + http.guard_headers(ctype),
                         variants, None, now, also=also)

    def _open_variant(self, url_path: str, place: Place, suffix: str, coding: str, ctype: str,
                      now: float) -> FileEntry | None:
        path = place.path + suffix
        try:
            fd = self._open_fd(place, suffix, _OPEN_FLAGS)
        except OSError:
            return None
        st = os.fstat(fd)
        if not stat_mod.S_ISREG(st.st_mode):
            os.close(fd)
            return None
        # The sibling's own ETag differs from the original's: a cache must not
        # mix up the gzip and identity representations.
        etag, also = self._etags(fd, st, url_path)
        mtime = int(st.st_mtime)
        return FileEntry(path, fd, st.st_size, mtime, (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns),
                         etag, ctype, http.static_headers(ctype, mtime, etag, encoding=coding, vary=True)
                         + http.guard_headers(ctype),
                         {}, coding, now, also=also)

    def _etags(self, fd: int, st: os.stat_result, url_path: str) -> tuple[str, tuple]:
        """The ETag to show for this open file and the other strong tags that name its bytes
        (docs/http.md, "ETags"): a content digest once known, identical on every node; until
        then this node's tag (or a weak one for a file that just changed), and the digest is
        computed off the loop, after which the entry is rebuilt with it."""
        local = http.make_etag(st)
        if self.digests is None:
            return local, ()
        etag, also, wanted = self.digests.etags(st, local)
        if wanted:
            self.digests.want(fd, st, lambda ok: ok and self._digest_known(url_path, st))
        return etag, also

    def _digest_known(self, url_path: str, st: os.stat_result) -> None:
        """On the loop: a digest for the file ``url_path`` named is remembered; rebuild its entry
        (if it is still that file) so the next request shows the content ETag."""
        entry = self._entries.get(url_path)
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        if entry is not None and (entry.key == key or any(v.key == key for v in entry.variants.values())):
            self._drop(url_path)

    def _open_fd(self, place: Place, suffix: str, flags: int) -> int:
        """openat of the place's entry (+ ``suffix``: a sibling) in its folder,
        never following a symlink; out of fds (EMFILE/ENFILE), give back the
        cache's own, oldest first, and try again: a file that exists is never
        "not found" because the cache holds the fds."""
        while True:
            try:
                return os.open(place.name + suffix, flags | os.O_NOFOLLOW, dir_fd=place.dir_fd)
            except OSError as exc:
                if exc.errno not in _NO_FDS or not self._entries:
                    raise
                self._drop(next(iter(self._entries)))

    def _drop(self, url_path: str) -> None:
        entry = self._entries.pop(url_path, None)
        if entry is not None:
            if self.watch is not None:
                for fs_path in self._fed_by(entry):
                    users = self._users_of.get(fs_path)
                    if users is not None:
                        users.discard(url_path)
                        if not users:
                            del self._users_of[fs_path]
            self.held.forget(entry)
            entry.retire()

    def sync(self) -> None:
        """Once per request, before any entry is trusted: another worker's write
        since the last request makes every entry re-validate."""
        if self._foreign_write():
            self.revalidate()

    def revalidate(self) -> None:
        """Re-resolve and re-stat every entry at its next use (kept when the
        file is still the same, rebuilt otherwise): another worker wrote."""
        for listener in self.listeners:
            listener(None)
        for entry in self._entries.values():
            entry.resolved_at = _NEVER

    def written(self) -> None:
        """This worker answered a write: the other workers must revalidate."""
        if self.generation is not None:
            self.generation.bump()

    def invalidate(self, fs_path: str | None = None) -> None:
        """Forget entries (all, or those for one filesystem path): called by writes."""
        for listener in self.listeners:
            listener(fs_path)
        for url_path, entry in list(self._entries.items()):
            if fs_path is None or entry.path == fs_path or entry.path.startswith(fs_path + os.sep):
                self._drop(url_path)

    def close(self) -> None:
        self.invalidate()
        if self.watch is not None:
            self.watch.close()
        self.fs.close()

    def __len__(self) -> int:
        return len(self._entries)
