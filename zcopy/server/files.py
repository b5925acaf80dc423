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
import sys
import time
import traceback
from dataclasses import dataclass, field

from zcopy import http
from zcopy.server.held import HeldBodies
from zcopy.server.prefetch import NOT_KNOWN
from zcopy.server.root import Place, Root
from zcopy.server.watch import EVERYTHING

#: Precompressed siblings we look for, in our order of preference.
ENCODINGS = {"br": ".br", "zstd": ".zst", "gzip": ".gz"}
RESOLVE_TTL = 1.0
#: An entry this old is walked again off the loop in the background (``find``).
REFRESH_AT = RESOLVE_TTL / 2
_NEVER = float("-inf")   # a Trust's resolved_at that makes its next use re-resolve it
#: O_NONBLOCK: nothing opened here may wait (a FIFO would wait for a writer); it
#: changes nothing for a regular file's reads.
_OPEN_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK
_NO_FDS = (errno.EMFILE, errno.ENFILE)


def file_key(st: os.stat_result) -> tuple:
    """What "the same file, unchanged" means for a cached entry: device, inode, size, mtime and ctime
    (ns). The ctime too: a rewrite that keeps the size and puts the old mtime back (``touch -r``,
    ``cp -p``, rsync) moves only the ctime, and the ETag (``http.make_etag``) names it."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
_SEEN_MAX = 64          # changed paths noted per lookup off the loop; past it, "everything"


def _no_change() -> bool:
    return False


def _ignore(entry, exc) -> None:
    """A background refresh's waiter: nobody waits for it."""


_YEAR_1 = -62135596800   # 0001-01-01T00:00:00Z: the earliest moment an HTTP-date can name


def last_modified(st: os.stat_result) -> int:
    """The modification time a file is served with (Last-Modified, and what conditionals compare):
    its mtime in whole seconds, but not later than now, as RFC 9110 8.8.2.1 says of a modification
    time in the future (one after the year 9999 has no HTTP-date at all: it answered 500), nor
    before the year 1. Taken once per file, when its entry is built."""
    return max(_YEAR_1, min(int(st.st_mtime), int(time.time())))


#: ``OpenFileCache.find``: not answerable from memory, ``resolve`` it off the loop.
LATER = object()
_FOLDER = object()      # what ``_prepare`` found: a folder (the caller lists it) ...
_GONE = object()        # ... or nothing to serve (404)


def _refusal(exc: OSError) -> http.HttpError:
    """What a request is answered when its file's open failed: 503 out of fds, else 404."""
    if exc.errno in _NO_FDS:
        return http.HttpError(503, "out of file descriptors", headers=[("Retry-After", "1")])
    return http.HttpError(404, "not found")


class _Found:
    """What an executor thread found for a URL path: the walk's Place, the
    file's stat and, once opened, its fd and its siblings' (coding -> (fd,
    stat)). The loop takes what it keeps; ``close`` closes the rest, so a
    lookup nobody waits for any more leaks no fd."""

    __slots__ = ("place", "st", "fd", "siblings")

    def __init__(self, place: Place, st: os.stat_result) -> None:
        self.place = place
        self.st = st
        self.fd = -1
        self.siblings: dict = {}

    def open(self) -> None:
        """openat of the file and its precompressed siblings in the walked
        folder, never following a symlink, and their fstats (on the thread)."""
        place = self.place
        try:
            fd = os.open(place.name, _OPEN_FLAGS | os.O_NOFOLLOW, dir_fd=place.dir_fd)
        except PermissionError:
            raise http.HttpError(403, "permission denied") from None
        except OSError as exc:
            if exc.errno in _NO_FDS:
                raise
            raise http.HttpError(404, "not found") from None
        self.fd = fd
        # Stat the fd: the file may have changed since the walk's stat
        # (O_NONBLOCK above: had it become a FIFO, the open must not wait for a writer).
        st = os.fstat(fd)
        if not stat_mod.S_ISREG(st.st_mode):
            raise http.HttpError(403, "not a regular file")
        self.st = st
        for coding, suffix in ENCODINGS.items():
            try:
                sfd = os.open(place.name + suffix, _OPEN_FLAGS | os.O_NOFOLLOW, dir_fd=place.dir_fd)
            except OSError:
                continue
            sst = os.fstat(sfd)
            if not stat_mod.S_ISREG(sst.st_mode):
                os.close(sfd)
                continue
            self.siblings[coding] = (sfd, sst)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        for fd, _ in self.siblings.values():
            os.close(fd)
        self.siblings = {}
        self.place.close()


class Trust:
    """How far ``OpenFileCache`` trusts one of its entries without a syscall: its record, written by
    the cache alone and hung on the entry (``FileEntry.trust``). The responder's answer memo keeps
    it next to a memoized answer and asks ``trusted`` before reusing that answer."""

    __slots__ = ("watched", "resolved_at", "dropped")

    def __init__(self, watched: bool, resolved_at: float) -> None:
        self.watched = watched          # its folder's changes arrive as events: no stat per request
        self.resolved_at = resolved_at  # when the walk from ROOT last found this file (_NEVER: walk again)
        self.dropped = False            # out of the cache (changed, evicted): never trusted again

    def trusted(self, now: float) -> bool:
        """Still what its URL serves, with no syscall to check: in the cache,
        its folder watched, resolved less than RESOLVE_TTL ago."""
        return not self.dropped and self.watched and now - self.resolved_at < RESOLVE_TTL


@dataclass(slots=True, eq=False)
class FileEntry:
    """One open regular file: its facts, and its fd's shared lifetime (``users``,
    ``retire``: transfers may still read the fd after the cache let go of it).

    Three slots hold records that other modules own and write, hung here so that
    they live and go with the entry, each one attribute load away on the hot
    path (docs/architecture.md, "The file entry"): ``trust`` (``Trust``, the
    cache's), ``memo`` (the responder's 200 head and reply, ``responder._ReplyMemo``;
    cleared at ``retire``) and ``residency`` (the connection's page-cache memo,
    ``prefetch.Residency``; ``NOT_KNOWN`` at first)."""

    path: str
    fd: int
    size: int
    mtime: int                 # whole seconds, as Last-Modified shows it
    key: tuple                 # file_key: (dev, ino, size, mtime_ns, ctime_ns), what "unchanged" means
    etag: str
    content_type: str
    static: bytes              # prebuilt header block (see http.static_headers)
    variants: dict = field(default_factory=dict)   # coding -> FileEntry of the sibling
    encoding: str | None = None                    # content-coding of a precompressed sibling
    also: tuple = ()           # other strong ETags naming the same bytes (this node's, once the digest is known)
    link: str | None = None    # the followed symlink the URL names (its folder is watched too)
    data: bytes | None = None  # the whole body, when held in memory (zcopy.server.held)
    #: Where a request checks the name again (unwatched, or with siblings): the
    #: folder fd the walk opened, and the file's name in it; -1 when not kept.
    folder_fd: int = -1
    name: str = ""
    # -- its fd's lifetime --
    users: int = 0
    retired: bool = False
    # -- records other modules own (see above) --
    trust: Trust | None = None     # None: not an entry of the cache's table (a sibling)
    memo: object = None
    residency: object = NOT_KNOWN

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
        self.memo = None            # (its reply refers to the entry: no cycle left behind)
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
        #: ``writes[0]``: a value that moves with every worker's write (one word of shared
        #: memory): while it stays, ``sync`` has nothing to do (the responder's memo reads it)
        self.writes = generation.last if generation is not None else (0,)
        #: where ``resolve`` runs the walks and opens (the worker's); None: on the caller's thread
        self.executor = None
        #: url path -> the callbacks waiting for its off-loop lookup (one open for them all)
        self._pending: dict[str, list] = {}
        #: url path -> the filesystem paths events named since its lookup left the loop
        self._seen: dict[str, set] = {}
        self._closed = False

    def stat(self, url_path: str, suffix: str = "") -> os.stat_result | None:
        """What ``url_path`` (or its sibling with ``suffix``) is now, walked
        afresh from ROOT; None when it is not there (or not to be served)."""
        try:
            with self.fs.locate(url_path) as place:
                return os.stat(place.name + suffix, dir_fd=place.dir_fd, follow_symlinks=False)
        except (OSError, http.HttpError):
            return None

    def find(self, url_path: str):
        """On the loop, from memory: the entry when it may be answered at
        once, raising HttpError(404) when its per-request stat says it is
        gone; ``LATER`` when it must be resolved off the loop first
        (``resolve``): not cached (folders never are), changed, or after
        another worker's write, or walked ``RESOLVE_TTL`` ago. A watched
        entry costs no syscall; an unwatched one an fstatat in its kept
        folder. One walked ``REFRESH_AT`` ago is answered and walked again
        off the loop meanwhile."""
        entry = self._entries.get(url_path)
        if entry is not None:
            trust = entry.trust
            age = time.monotonic() - trust.resolved_at
            if age >= RESOLVE_TTL:          # (or another worker wrote: _NEVER)
                return LATER
            if age >= REFRESH_AT and self.executor is not None and url_path not in self._pending:
                # Walked half a TTL ago: walk again off the loop while the
                # entry answers, so that a file asked for often never waits.
                self.resolve(url_path, _ignore)
            if trust.watched:       # trusted(now): the events would have dropped it
                return entry
            if entry.folder_fd < 0:     # no folder kept to check its name in: never a walk here
                return LATER
            st = entry.stat_name()
            if st is None:
                self._drop(url_path)
                raise http.HttpError(404, "not found")
            if file_key(st) == entry.key:
                return entry
        return LATER

    def lookup(self, url_path: str) -> FileEntry | None:
        """The current entry for a regular file, or None when the path is a
        directory (the caller lists it). Raises HttpError(404/403) otherwise.
        Synchronous: the walk and the opens run on the calling thread (only
        without an executor, as unit tests run); requests use ``find`` and
        ``resolve`` (or ``with_entries``)."""
        entry = self.find(url_path)
        if entry is not LATER:
            return entry
        out: list = []
        executor, self.executor = self.executor, None
        try:
            self.resolve(url_path, lambda e, exc: out.append((e, exc)))
        finally:
            self.executor = executor
        if not out:         # shared a lookup already running off the loop: do it here
            try:
                return self._install(url_path, self._prepare(url_path, None), {}, 2)
            except OSError as exc:      # the open's EMFILE: an answer (503), never a dropped connection
                raise _refusal(exc) from None
        entry, exc = out[0]
        if exc is not None:
            raise exc
        return entry

    def _found(self, url_path: str):
        """``find``'s answer, or the HttpError it raised."""
        try:
            return self.find(url_path)
        except http.HttpError as exc:
            return exc

    def with_entries(self, url_paths, then, refuse):
        """``then(known)``, where ``known`` maps each of ``url_paths`` to its entry (None: a
        folder) or the HttpError its lookup raised, without the disk on the loop: what ``find``
        answers from memory is used at once, the rest is resolved off the loop first (the same
        shared lookups as a GET's). Returns ``then``'s result, or a ``Pending`` done with it
        (``refuse(exc)`` for an exception it raised) once the lookups are back. For the
        requests that need a file's entry besides the one they name (share links)."""
        known: dict = {}
        left = []
        for url_path in dict.fromkeys(url_paths):
            entry = self._found(url_path)
            if entry is LATER:
                left.append(url_path)
            else:
                known[url_path] = entry
        if not left:
            return then(known)
        if self.executor is None:           # (no worker around it: unit tests)
            for url_path in left:
                try:
                    known[url_path] = self.lookup(url_path)
                except http.HttpError as exc:
                    known[url_path] = exc
            return then(known)
        from zcopy.server.reply import Pending

        pending = Pending()
        waiting = [len(left)]

        def one(url_path, entry, exc) -> None:
            known[url_path] = exc if exc is not None else entry
            waiting[0] -= 1
            if waiting[0]:
                return
            # An entry found before the wait (from memory, or by a lookup back earlier) may have
            # been dropped since (its file changed): its ETag is no longer the file's. Find it
            # again, from memory or off the loop, before anything is compared with it.
            again = []
            for url, got in known.items():
                if isinstance(got, FileEntry) and got.retired:
                    got = self._found(url)
                    if got is LATER:
                        again.append(url)
                    else:
                        known[url] = got
            if again:
                waiting[0] = len(again)
                for url in again:
                    self.resolve(url, lambda entry, exc, url=url: one(url, entry, exc))
                return
            try:
                reply = then(known)
            except http.HttpError as err:
                reply = refuse(err)
            except OSError as err:
                reply = refuse(_refusal(err))
            except Exception:               # a bug: this request's 500, never the worker
                traceback.print_exc(file=sys.stderr)
                reply = refuse(http.HttpError(500, "internal error", close=True))
            pending.done(reply)
        for url_path in left:
            self.resolve(url_path, lambda entry, exc, url_path=url_path: one(url_path, entry, exc))
        return pending

    # -- resolving off the loop ------------------------------------------------
    #
    # The walk from ROOT, the stat, the opens of the file and its siblings and
    # their fstats run on the executor (``_prepare``); on the loop, the watch
    # is added and the entry stored (``_install``). Today's ordering
    # guarantee (a change made after the open is an event) is kept by
    # comparing the folder's watch token (zcopy.server.watch) from before the
    # open with the one after: equal, the watch was up all along and lost
    # nothing; not equal (the folder was not watched yet, or the watch
    # changed), the open is done again now that the watch is up. Events that
    # named the entry's paths while it was off the loop make it be done again
    # too (they may be older than the open, or not).

    def resolve(self, url_path: str, done) -> None:
        """Resolve ``url_path`` off the loop, then call ``done(entry, exc)``
        on the loop: the entry, or None for a folder, or ``exc`` an
        HttpError. Requests for one path share one open (``_pending``)."""
        waiting = self._pending.get(url_path)
        if waiting is not None:
            waiting.append(done)
            return
        self._pending[url_path] = [done]
        old = self._entries.get(url_path)
        guess = self._folder_guess(url_path)
        expect = {guess: self.watch.token(guess)} if self.watch is not None else {}
        self._submit(url_path, old.key if old is not None else None, expect, 0)

    def _submit(self, url_path: str, key, expect: dict, tries: int) -> None:
        self._seen[url_path] = set()
        if self.executor is None:
            try:
                found, error = self._prepare(url_path, key), None
            except Exception as exc:
                found, error = None, exc
            self._settle(url_path, found, error, expect, tries)
            return
        task = self.executor.submit(self._prepare, url_path, key)
        task.then(lambda t: self._settle(url_path, t.result, t.error, expect, tries))

    def _folder_guess(self, url_path: str) -> str:
        """The folder label (``Place.folder``) the walk will likely give: a guess, checked later."""
        parts = http.paths.normalised_parts(url_path.split("/"))[:-1]
        return "/".join([self.fs.path.rstrip("/")] + parts) or "/"

    def _prepare(self, url_path: str, key):
        """On an executor thread: walk, stat, and open the file and its
        siblings (nothing here touches the cache). ``key``: the cached
        entry's; the file is not opened again when it still matches."""
        place = self.fs.locate(url_path)     # raises HttpError
        try:
            try:
                st = place.stat()
            except OSError:
                return _GONE
            if stat_mod.S_ISDIR(st.st_mode):
                return _FOLDER
            if stat_mod.S_ISLNK(st.st_mode):        # not followed (see Root.locate)
                return _GONE
            if not stat_mod.S_ISREG(st.st_mode):
                raise http.HttpError(403, "not a regular file")
            found = _Found(place, st)
            place = None                            # the found owns it
            if key is not None and file_key(st) == key:
                return found
            try:
                found.open()
            except BaseException:
                found.close()
                raise
            return found
        finally:
            if place is not None:
                place.close()

    def _settle(self, url_path: str, found, error, expect: dict, tries: int) -> None:
        """On the loop: the off-loop part finished; install it and answer the waiters."""
        if self._closed:
            if isinstance(found, _Found):
                found.close()
            found, error = None, http.HttpError(503, "shutting down", close=True)
        elif (isinstance(error, OSError) and error.errno in _NO_FDS
              or isinstance(error, http.HttpError) and error.status == 503) and self.give_back():
            # Out of fds (the open's EMFILE, or the walk's: Root says 503): the cache gave
            # back one of its own, oldest first; try again, until it holds none it may close.
            self._submit(url_path, None, expect, tries)
            return
        entry = None
        if error is None:
            try:
                entry = self._install(url_path, found, expect, tries)
            except Exception as exc:        # an HttpError; anything else is a bug, answered 500
                if isinstance(found, _Found):
                    found.close()
                error = exc
            if entry is LATER:                  # done again: the watch was not up all along
                return
        if error is not None:
            self._drop(url_path)            # (an entry refreshed in the background: no longer served)
        if isinstance(error, OSError):
            error = _refusal(error)
        self._seen.pop(url_path, None)
        for done in self._pending.pop(url_path, ()):
            try:
                done(entry, error)
            except Exception:       # a bug in one waiter: the others are still answered, the worker lives
                traceback.print_exc(file=sys.stderr)

    def _install(self, url_path: str, found, expect: dict, tries: int):
        """On the loop: store what ``_prepare`` found (LATER: submitted again)."""
        if found is _FOLDER or found is _GONE:
            self._drop(url_path)
            if found is _GONE:
                raise http.HttpError(404, "not found")
            return None
        place, st = found.place, found.st
        entry = self._entries.get(url_path)
        if found.fd < 0:                # the cached entry's file, unchanged
            if entry is None or file_key(st) != entry.key:
                found.close()           # it went meanwhile: open it
                self._submit(url_path, None, expect, tries + 1)
                return LATER
            trust = entry.trust
            trust.resolved_at = time.monotonic()
            if trust.watched and st.st_nlink != 1:     # a link made since: no longer watched
                trust.watched = False
                self.held.forget(entry)
                entry.memo = None       # (a reply may hold the bytes just forgotten)
            if entry.folder_fd >= 0 or not trust.watched:   # the folder as walked now
                # (an entry no longer watched checks its name there per request: ``find``)
                if entry.folder_fd >= 0:
                    os.close(entry.folder_fd)
                entry.folder_fd, place.dir_fd = place.dir_fd, -1
                entry.name = place.name
            found.close()
            return entry
        # Not a file with other hard links: a write through one of them raises
        # its event in that link's folder, not here.
        watched = st.st_nlink == 1 and self.watch is not None and self.watch.watch(place.folder, place.dir_fd)
        folders = [place.folder]
        if place.link is not None and watched:
            # A followed link pointed elsewhere is an event in the link's folder only.
            folders.append(os.path.dirname(place.link))
            watched = self.watch.watch(folders[1], place.link_fd)
        if watched:
            tokens = {f: self.watch.token(f) for f in folders}
            if any(expect.get(f) != tokens[f] for f in folders) or self._stale(url_path, found):
                if tries < 2:           # the watch is up now: open again, under it
                    found.close()
                    self._submit(url_path, None, tokens, tries + 1)
                    return LATER
                watched = False         # still racing (rare): a stat of its name per request instead
        fresh = self._build(url_path, found)
        fresh.trust = Trust(watched, time.monotonic())
        fresh.link = place.link
        if not watched or fresh.variants:
            # Checked per request: keep the folder (the walk is redone once a
            # second as for every entry; the fd is beneath ROOT as walked).
            fresh.folder_fd, fresh.name = place.dir_fd, place.name
            place.dir_fd = -1
        found.close()
        self._drop(url_path)
        if len(self._entries) >= self.max_entries:
            oldest = next(iter(self._entries))
            self._drop(oldest)
        self._store(url_path, fresh)
        return fresh

    def _stale(self, url_path: str, found: "_Found") -> bool:
        """Whether an event named what ``found`` stands for while it was off the loop."""
        seen = self._seen.get(url_path)
        if not seen:
            return False
        if EVERYTHING in seen:
            return True
        path = found.place.path
        paths = [path] + [path + suffix for suffix in ENCODINGS.values()]
        if found.place.link is not None:
            paths.append(found.place.link)
        return any(p in seen for p in paths) or any(s.endswith(os.sep) and path.startswith(s) for s in seen)

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
            for seen in self._seen.values():         # opens off the loop now: they may be older
                seen.add(fs_path if len(seen) < _SEEN_MAX else EVERYTHING)
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

    def _build(self, url_path: str, found: "_Found") -> FileEntry:
        """The entry for an opened file and its siblings (on the loop: the
        ETags may ask for a digest); takes their fds from ``found``."""
        fd, st, siblings = found.fd, found.st, found.siblings
        found.fd, found.siblings = -1, {}
        return self._entry(url_path, found.place.path, fd, st, siblings)

    def _entry(self, url_path: str, path: str, fd: int, st: os.stat_result, siblings: dict) -> FileEntry:
        """The FileEntry for open ``fd`` (its ``st``) and its siblings (coding -> (fd, stat)); no disk work."""
        ctype = http.content_type(path)
        variants = {}
        for coding, (sfd, sst) in siblings.items():
            # The sibling's own ETag differs from the original's: a cache must not
            # mix up the gzip and identity representations.
            etag, also = self._etags(sfd, sst, url_path)
            mtime = last_modified(sst)
            variants[coding] = FileEntry(
                path + ENCODINGS[coding], sfd, sst.st_size, mtime,
                file_key(sst),
                etag, ctype, http.static_headers(ctype, mtime, etag, encoding=coding, vary=True)
                + http.guard_headers(ctype), {}, coding, also=also)
        etag, also = self._etags(fd, st, url_path)
        mtime = last_modified(st)
        return FileEntry(path, fd, st.st_size, mtime, file_key(st),
                         etag, ctype,
                         http.static_headers(ctype, mtime, etag, vary=bool(variants)) + http.guard_headers(ctype),
                         variants, None, also=also)

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
            try:
                self.digests.want(fd, st, lambda ok: ok and self._digest_known(url_path, st))
            except OSError:         # no fd for its dup (EMFILE): asked again when the entry is next built
                pass
        return etag, also

    def _digest_known(self, url_path: str, st: os.stat_result) -> None:
        """On the loop: a digest for the file ``url_path`` named is remembered; rebuild its entry
        (if it is still that file) so the next request shows the content ETag."""
        entry = self._entries.get(url_path)
        key = file_key(st)
        if entry is not None and (entry.key == key or any(v.key == key for v in entry.variants.values())):
            # Rebuilt here, on the loop, from the open fds: its headers change, its file does
            # not, so no walk, no open. This runs whenever a digest happens to finish, so it
            # takes no new fd unless it must: out of fds (EMFILE) it raised out of the
            # executor's callback and killed the worker with every connection on it, and a
            # dup that succeeded could take the one fd the next accept needed.
            fresh = self._rebuilt(url_path, entry)
            self._drop(url_path)
            if fresh is not None:
                self._store(url_path, fresh)

    def _rebuilt(self, url_path: str, entry: FileEntry) -> FileEntry | None:
        """``entry`` built again (new ETags) on its own fds, or None: no fd for
        it (the next request opens the file again, off the loop). The fds pass
        to the new entry; only those a transfer is using (``users``) are
        dup'd, since its retirement closes them when the transfer ends."""
        parts = [entry, *entry.variants.values()]
        dups: dict[int, int] = {}
        try:
            for e in parts:
                if e.users:
                    dups[id(e)] = os.dup(e.fd)
        except OSError:                     # EMFILE: drop it (the old behaviour), never raise here
            for fd in dups.values():
                os.close(fd)
            return None

        def take(e: FileEntry) -> tuple:
            fd = dups.get(id(e))
            if fd is None:                  # nobody sends from it: its fd moves over
                fd, e.fd = e.fd, -1
            return fd, os.fstat(fd)
        fd, st_now = take(entry)
        siblings = {coding: take(v) for coding, v in entry.variants.items()}
        fresh = self._entry(url_path, entry.path, fd, st_now, siblings)
        fresh.trust = Trust(entry.trust.watched, entry.trust.resolved_at)
        fresh.link, fresh.name = entry.link, entry.name
        # The folder fd is the cache's alone (requests check the name with it): it moves too.
        fresh.folder_fd, entry.folder_fd = entry.folder_fd, -1
        return fresh

    def give_back(self) -> bool:
        """The process is out of fds (an open or a walk found none): close
        the oldest entry no transfer is using. False: none to close."""
        for url_path, entry in self._entries.items():
            if not entry.users and not any(v.users for v in entry.variants.values()):
                self._drop(url_path)
                return True
        return False

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
            entry.trust.dropped = True
            entry.retire()

    def sync(self) -> None:
        """Before any entry is trusted, whenever ``writes`` moved (the responder
        checks per request): another worker's write makes every entry re-validate."""
        if self._foreign_write():
            self.revalidate()

    def revalidate(self) -> None:
        """Re-resolve and re-stat every entry at its next use (kept when the
        file is still the same, rebuilt otherwise): another worker wrote."""
        for listener in self.listeners:
            listener(None)
        for entry in self._entries.values():
            entry.trust.resolved_at = _NEVER

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
        self._closed = True
        self.invalidate()
        if self.watch is not None:
            self.watch.close()
        if self.digests is not None:
            self.digests.close()
        self.fs.close()

    def __len__(self) -> int:
        return len(self._entries)
