"""Content digests for ETags that every node serving the same bytes agrees on.

An ETag built from the inode (as before) differs between two nodes holding ``cp -a`` copies of a file,
so a download resumed through a balancer on another node fails its If-Range and restarts. One built
from size and mtime alone (nginx's) is the same on both but also the same for different bytes: a
same-size rewrite within one timestamp tick, or a client-set mtime (WebDAV's X-OC-Mtime, Win32 times),
would let an If-Range resume splice wrong bytes. So the strong ETag is a digest of the content:
SHA-256 of the bytes (hashlib, OpenSSL's, SHA-NI where the CPU has it), truncated to 128 bits and
written in base64url: ``"z1-<22 chars>"``.

Cost and when it is known. Hashing reads the whole file, so it never runs on the event loop: the first
request for a file whose digest is unknown gets a **weak** ETag (``W/"<size>-<mtime_ns>"``, enough for
If-None-Match revalidation, never for If-Range, RFC 9110 13.1.5) and the digest is computed by the
executor; the file's cache entry is then rebuilt with the strong ETag. Measured cost: see docs/http.md.

Bounds. A digest reads the whole file, so hashing is bounded three ways: a file larger than
``--digest-max`` (default ``DEFAULT_MAX``, about six seconds of one core) is never hashed and keeps
this node's tag (a resume across nodes then restarts, as with a tag of nginx's kind where the copies'
mtimes differ); at most ``RUNNING`` digests run at once per worker, the rest wait here, in order (the
executor's threads stay free for listings, commits and deletes: a few huge files requested together
took all of them for minutes); and at most ``QUEUED`` files wait, past which a file keeps its tag
until its entry is next built. A digest under way stops within one chunk when the worker shuts down
(``cancelled``): a hash of a huge sparse file held a stopping worker until the supervisor killed it.

Validity. A digest is remembered with the file's (dev, ino) and the (size, mtime_ns, ctime_ns) it was
computed for, and only if the file had been quiet (ctime at least ``QUIET`` seconds old) when hashing
began and was unchanged when it ended. Any later change to the file moves its ctime past the recorded
one (ctime cannot be set by a client; a same-tick rewrite cannot happen after a quiet second), so a
remembered digest is never used for other bytes. Files that changed within the last ``QUIET`` seconds
keep the weak ETag until they are quiet. Where the digests are remembered: ``DigestMemo`` below (per
process, bounded), backed by the state database when one is given, so a restart does not rehash.
"""

from __future__ import annotations

import base64
import hashlib
import operator
import os
import time
from collections import OrderedDict, deque
from functools import partial

#: Seconds a file must have been unchanged before its digest is remembered: ten times the coarsest
#: kernel timestamp tick in use (HZ=100), so a rewrite after it gets another ctime.
QUIET = 0.1
CHUNK = 1 << 20
#: Files larger than this are not hashed (``--digest-max``): SHA-256 runs at about 1.3 GiB/s per core
#: here (SHA-NI), so this is some six seconds of one core, plus reading the file.
DEFAULT_MAX = 8 << 30
#: Digests computed at once by one worker; the others wait in ``Digests``, in order.
RUNNING = 2
#: Files that may wait for a digest; past it ``want`` takes no more until some finish.
QUEUED = 1024
PREFIX = "z1-"              # the scheme's version: a future change of hash changes every ETag once
CONTENT_TAG = '"' + PREFIX  # how a content ETag starts


_CTIME_NS = operator.attrgetter("st_ctime_ns")
_IDENT = operator.attrgetter("st_dev", "st_ino")


def key_of(st: os.stat_result) -> tuple[int, int, int]:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def weak_etag(st: os.stat_result) -> str:
    return f'W/"{st.st_size:x}-{st.st_mtime_ns:x}"'


def strong_etag(digest: bytes) -> str:
    return f'"{PREFIX}{base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode()}"'


def quiet(st: os.stat_result, now: float | None = None) -> bool:
    """Whether the file has been unchanged long enough for a digest of it to be remembered."""
    now = time.time() if now is None else now
    return st.st_ctime_ns <= (now - QUIET) * 1e9


def compute(fd: int, now: float | None = None, *, wait: bool = False,
            cancelled=None) -> tuple[tuple[int, int, int], bytes] | None:
    """(key, digest) of the open file ``fd``, or None when it was not quiet (and ``wait`` is false),
    changed while being read, or ``cancelled()`` (asked between chunks) turned true. Blocks on the
    disk for the whole file: call it off the loop. The GIL is released while hashing large chunks and
    while reading, so the loop keeps running. With ``wait`` a file that changed less than QUIET ago is
    waited for (at most QUIET, on this thread)."""
    before = os.fstat(fd)
    if not quiet(before, now):
        if not wait or now is not None:
            return None
        time.sleep(max(0.0, before.st_ctime_ns / 1e9 + QUIET - time.time()) + 0.005)
        before = os.fstat(fd)
        if not quiet(before):
            return None
    h = hashlib.sha256()
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    offset, size = 0, before.st_size
    while offset < size:
        if cancelled is not None and cancelled():
            return None
        n = os.preadv(fd, [view], offset)
        if n <= 0:
            return None                     # shrank while being read
        h.update(view[:n])
        offset += n
    after = os.fstat(fd)
    if key_of(after) != key_of(before) or os.preadv(fd, [view[:1]], size) != 0:
        return None                         # changed (or grew) while being read
    return key_of(before), h.digest()


class DigestMemo:
    """Digests remembered by (dev, ino) with the key they are valid for; least recently used first out.
    ``store`` (optional) is the persistent layer: an object with ``get_digest(dev, ino)`` ->
    (key, digest) | None and ``put_digest(dev, ino, key, digest)``, called off the loop only."""

    def __init__(self, capacity: int = 65536, store=None) -> None:
        self.capacity = capacity
        self.store = store
        self._memo: OrderedDict[tuple[int, int], tuple[tuple, bytes]] = OrderedDict()

    def peek(self, st: os.stat_result) -> bytes | None:
        """``known`` without touching the order (any thread: a dict read is atomic)."""
        hit = self._memo.get((st.st_dev, st.st_ino))
        return hit[1] if hit is not None and hit[0] == key_of(st) else None

    def known(self, st: os.stat_result) -> bytes | None:
        """The digest for this stat, if remembered and still valid (cheap: on the loop)."""
        ident = (st.st_dev, st.st_ino)
        hit = self._memo.get(ident)
        if hit is None:
            return None
        key, digest = hit
        if key != key_of(st):
            del self._memo[ident]
            return None
        self._memo.move_to_end(ident)
        return digest

    def remember(self, st_ident: tuple[int, int], key: tuple, digest: bytes) -> None:
        self._memo[st_ident] = (key, digest)
        self._memo.move_to_end(st_ident)
        while len(self._memo) > self.capacity:
            self._memo.popitem(last=False)

    def find_or_compute(self, fd: int, cancelled=None) -> tuple[tuple[int, int], tuple, bytes] | None:
        """Off the loop: the stored digest if valid, else compute (and store) it.
        Returns ((dev, ino), key, digest) for ``remember`` on the loop, or None."""
        st = os.fstat(fd)
        ident = (st.st_dev, st.st_ino)
        if self.store is not None:
            stored = self.store.get_digest(*ident)
            if stored is not None and tuple(stored[0]) == key_of(st):
                return ident, key_of(st), stored[1]
        got = compute(fd, wait=True, cancelled=cancelled)
        if got is None:
            return None
        key, digest = got
        if self.store is not None:
            self.store.put_digest(*ident, key, digest)
        return ident, key, digest


class Digests:
    """The open-file cache's side of content ETags: what a file's ETag is now, and the off-loop job
    that makes it strong. ``submit(fn, *args)`` is the worker's executor (returns a task with
    ``then(callback)``); ``store`` the state database (optional); ``max_size``: larger files are not
    hashed; ``cancelled()``: true once the worker is shutting down (a digest under way stops)."""

    def __init__(self, submit, store=None, capacity: int = 65536, max_size: int = DEFAULT_MAX,
                 cancelled=None) -> None:
        self.memo = DigestMemo(capacity, store)
        self.submit = submit
        self.max_size = max_size
        self.cancelled = cancelled
        self._wanted: dict[tuple[int, int], list] = {}     # file -> callbacks waiting for its digest
        self._waiting: deque[tuple[tuple[int, int], int]] = deque()   # (file, dup of its fd) not started
        self._running = 0

    def shown(self, st: os.stat_result, local: str) -> str:
        """The ETag a GET of this file shows now, read-only and from any thread (a WebDAV listing's
        getetag, built off the loop); asks for no digest."""
        digest = self.memo.peek(st)
        if digest is not None:
            return strong_etag(digest)
        return local if quiet(st) else weak_etag(st)

    def overrides(self, stats: list, newest: int | None = None) -> dict[int, bytes]:
        """Where ``shown`` is not the local tag, for a list of stats: index -> the ETag shown (ASCII
        bytes). One C-level pass for the quiet test (none when the caller knows ``newest``, the
        largest ``st_ctime_ns``) and, when digests are known, one for the digests (a dict read each);
        a Python step only for the few members that have a digest or changed within ``QUIET`` (a
        Depth 1 PROPFIND's members)."""
        out: dict[int, bytes] = {}
        if not stats:
            return out
        settled = (time.time() - QUIET) * 1e9
        if (max(map(_CTIME_NS, stats)) if newest is None else newest) > settled:
            for j in [j for j, c in enumerate(map(_CTIME_NS, stats)) if c > settled]:
                out[j] = weak_etag(stats[j]).encode()
        memo = self.memo._memo
        if memo:
            hits = list(map(memo.get, map(_IDENT, stats)))
            for j in [j for j, hit in enumerate(hits) if hit is not None]:
                if hits[j][0] == key_of(stats[j]):
                    out[j] = strong_etag(hits[j][1]).encode()
        return out

    def etags(self, st: os.stat_result, local: str) -> tuple[str, tuple[str, ...], bool]:
        """(the ETag to show, other strong ETags that name the same bytes, whether a digest is wanted).
        ``local`` is this node's own strong tag for the file (inode, size, mtime)."""
        digest = self.memo.known(st)
        if digest is not None:
            return strong_etag(digest), (local,), False
        wanted = st.st_size <= self.max_size
        return (local if quiet(st) else weak_etag(st)), (), wanted

    def want(self, fd: int, st: os.stat_result, done) -> bool:
        """Compute the digest of ``fd`` off the loop (on a dup of it: the caller's fd may be closed
        meanwhile), then call ``done(ok)`` on the loop, once it is remembered (ok) or could not be
        had (the file changed, or is gone, or the worker stopped). Several callers for one file share
        one computation. False (``done`` is never called): not taken, the file is over
        ``--digest-max`` or ``QUEUED`` files already wait. OSError: no fd for the dup (EMFILE)."""
        if st.st_size > self.max_size:
            return False
        ident = (st.st_dev, st.st_ino)
        waiting = self._wanted.get(ident)
        if waiting is not None:
            waiting.append(done)
            return True
        if len(self._wanted) >= QUEUED:
            return False
        dup = os.dup(fd)                    # (first: out of fds, nothing is left waiting)
        self._wanted[ident] = [done]
        self._waiting.append((ident, dup))
        self._start()
        return True

    def _start(self) -> None:
        while self._running < RUNNING and self._waiting:
            ident, dup = self._waiting.popleft()
            self._running += 1
            self.submit(self._job, dup).then(partial(self._finished, ident))

    def _job(self, dup: int):
        try:
            return self.memo.find_or_compute(dup, self.cancelled)
        finally:
            os.close(dup)

    def _finished(self, ident: tuple[int, int], task) -> None:
        self._running -= 1
        callbacks = self._wanted.pop(ident, [])
        got = task.result if task.error is None else None
        if got is not None:
            self.memo.remember(*got)
        try:
            for callback in callbacks:
                callback(got is not None)
        finally:
            self._start()

    def close(self) -> None:
        """The fds of the files still waiting (the worker is stopping)."""
        while self._waiting:
            os.close(self._waiting.popleft()[1])
        self._wanted.clear()


def names_content_tag(headers) -> bool:
    """Whether a conditional request names a content ETag (``"z1-..."``): one a node that has not yet
    hashed the file should wait for rather than answer as a mismatch."""
    for name in ("if-range", "if-match", "if-none-match"):
        value = headers.get(name)
        if value is not None and CONTENT_TAG in value:
            return True
    return False
