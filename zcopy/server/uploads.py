"""Resumable uploads: tus 1.0.0 and the IETF draft, over one store.

docs/uploads.md is the design; in short:

- An upload resource is ``TARGET?upload=ID`` (the path of the file it becomes,
  so a balancer hashing on the path keeps one upload on one node). ``ID`` is
  128 random bits: a capability. The database and the disk only hold its
  SHA-256 (``key``).
- Its bytes live in ``ROOT/.zcopy/uploads/KEY`` (mode 0600), reached from
  ROOT's fd: ``/.zcopy`` is the server's reserved name, never served, listed,
  archived or written by a request, even with ``--show-hidden``. It is on
  ROOT's filesystem, so the commit is a link and a rename (a target folder on
  another mount gets a copy instead).
- Its state is a row of the ``uploads`` table (``zcopy.server.state``): the
  offset there is only ever what is durable in the file (fdatasync'ed first,
  at every ``CHECKPOINT`` bytes (at most once per ``CHECKPOINT_EVERY`` seconds), at the end of each append
  and on a cut;
  with ``--no-fsync`` written to the page cache: a process kill loses
  nothing, a power cut may).
- An append (PATCH, or the body of a creation) is a ``FileSink`` the
  connection fills through the upload engine (splice socket->pipe->file
  where the probe says so), writing at the upload's offset. It holds an
  exclusive ``flock`` on the partial file; a second append to the same
  upload asks the holder to let go (``claim`` in the row; every worker looks
  at its own appends once a second in ``tick``) and the holder's connection
  is closed, after which its durable offset is recorded and the lock drops.
- The commit is the PUT's (``fileops.TempFile.commit``: fsync, link, rename,
  fsync of the folder), with the PUT's rights (``w``; ``w`` and ``d`` to
  replace) and WebDAV locks checked on the request that completes it.

Every filesystem and database step runs on the worker's executor; the loop
only parses, decides and moves bytes.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import secrets
import threading
import time
from dataclasses import dataclass
from urllib.parse import quote

from zcopy import http
from zcopy.http import resumable as rs
from zcopy.server import fileops
from zcopy.server.body import FileSink
from zcopy.server.executor import defer
from zcopy.server.reply import Reply
from zcopy.server.uploadstore import Row, Store, key_of, owner_of

#: Appended bytes between two durable checkpoints (fdatasync + offset recorded) within one append.
CHECKPOINT = 16 << 20
#: ... and at most once a second: each checkpoint is a thread's sqlite write, whose GIL handoffs cost the
#: loop ~15% of a fast append's throughput at one per 16 MiB (measured: splice PATCH 0.84x PUT); a crash
#: then loses at most about a second of transfer, or 16 MiB on a slow one.
CHECKPOINT_EVERY = 1.0
#: Default life of an upload without activity (``serve --upload-expiry``).
DEFAULT_EXPIRY = 24 * 3600
#: How long a second append waits for the first to let go of the upload.
TAKEOVER_WAIT = 5.0
#: Seconds between expiry sweeps (each worker; any one of them may remove any expired upload); a quarter
#: of the expiry when that is shorter.
SWEEP_EVERY = 60.0
_ID_LEN = 32
_HEX = frozenset("0123456789abcdef")
_ALLOW = "HEAD, PATCH, DELETE, OPTIONS"


def upload_id(query: str) -> str | None:
    """The ``upload`` parameter of a query, or None."""
    if "upload=" not in query:
        return None
    for pair in query.split("&"):
        name, _, value = pair.partition("=")
        if name == "upload":
            return value
    return None


class Append(FileSink):
    """The body of one append (PATCH, or a creation's content) going into the partial file at the
    upload's offset. Holds ``fd`` exclusively (flock) until it ends."""

    interim: bytes | None = None

    def __init__(self, uploads: "Uploads", row: Row, fd: int, ctx: "Ctx") -> None:
        limit = row.length if row.length is not None else uploads.max_upload
        super().__init__(fd, limit, uploads.finish)
        self.uploads = uploads
        self.row = row
        self.ctx = ctx
        self.offset = self.taken = self.start = row.offset
        self.durable = row.offset       # recorded (or being recorded) in the row
        self.syncing = False
        self.checked_at = time.monotonic()     # the last checkpoint (or the start)
        self.conn = None
        self.ended = False
        self.lock = threading.Lock()    # the fd is closed under it; checkpoints use it under it

    def check_length(self, length: int | None) -> None:
        if length is not None and self.limit is not None and self.offset + length > self.limit:
            raise self._past(self.offset + length)

    def _past(self, end: int) -> rs.UploadError:
        if self.row.length is not None:
            return rs.UploadError(413 if self.ctx.tus else 400,
                                  f"the content would end at byte {end}, past the upload's length {self.row.length}",
                                  None if self.ctx.tus else "inconsistent-upload-length", close=True)
        return rs.UploadError(413, f"upload larger than {self.limit} bytes", close=True)

    def too_large(self, end: int) -> rs.UploadError:
        return self._past(end)

    def advanced(self, moved: int) -> None:
        self.offset += moved
        # Never a checkpoint at the full length: only the commit may make the offset say "all there"
        # (a tus client stops at that offset; were the commit refused, it would think it done).
        if self.offset - self.durable >= CHECKPOINT and self.offset != self.row.length:
            self._checkpoint()

    def _checkpoint(self) -> None:
        """Make what is written so far durable and record it, off the loop (the bytes keep coming)."""
        if self.syncing or self.ctx.checksum is not None:     # a checksummed append counts only whole
            return
        now = time.monotonic()
        if now - self.checked_at < CHECKPOINT_EVERY:
            return
        self.checked_at = now
        self.syncing = True
        offset = self.offset
        self.durable = offset

        def work():
            self._sync_record(offset)

        def done(task) -> None:
            self.syncing = False
        self.uploads.submit(work, done)

    def _sync_record(self, offset: int) -> bool:
        """(a thread) fdatasync up to now and record ``offset``; False once the fd is closed or taken over."""
        with self.lock:
            if self.fd < 0:
                return False
            if self.uploads.store.fsync:
                os.fdatasync(self.fd)
            return self.uploads.store.record(self.row.key, self.row.session, offset,
                                             expires=time.time() + self.uploads.expiry)

    def abort(self) -> None:
        """Cut, refused or taken over: what arrived stays (recorded once durable); the upload is kept."""
        if self.ended:
            return
        self.ended = True
        self.uploads.forget(self)
        self.keep()

    def keep(self) -> None:
        """(the loop; once ended) What arrived stays, recorded once durable, and the fd goes."""
        offset = self.start if self.ctx.checksum is not None else self.offset
        if self.ctx.tus and self.row.length is not None and offset >= self.row.length:
            offset = self.durable       # tus: the full length is only ever said by a commit

        def work():
            try:
                self._sync_record(offset)
            finally:
                self.release()
        self.uploads.submit(work, None)

    def release(self) -> None:
        with self.lock:
            if self.fd >= 0:
                os.close(self.fd)
                self.fd = -1


class _Refused(Exception):
    """(a thread) The check right before a commit (locks, If header) refused: ``error``, the 412
    or 423, answered by ``finish``'s refusal (the upload is kept where it was) on the loop."""

    def __init__(self, error: http.HttpError) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass
class Ctx:
    """What the request said that the reply depends on."""

    tus: bool
    version: int                # IETF interop version (0 for tus)
    complete: bool | None       # IETF: this content ends the upload
    checksum: tuple | None      # tus: (algorithm, digest)
    close: bool
    identity: object = None     # who asks (the commit's rights are theirs)
    creation: bool = False


class Uploads:
    """The resumable-upload responder of one worker (created by the worker when writes and a
    state folder exist; ``Responder.uploads``)."""

    def __init__(self, responder, expiry: float = DEFAULT_EXPIRY, max_pending: int = 0) -> None:
        self.responder = responder
        self.writer = responder.writer
        self.date = responder.date
        self.executor = responder.executor
        self.max_upload = self.writer.max_upload
        self.expiry = expiry
        self.store = Store(responder.cache.fs.fd, responder.routes.state, self.writer.fsync, max_pending)
        self.active: dict[str, Append] = {}
        self.next_sweep = 0.0
        self.checking = False

    # -- the loop side ---------------------------------------------------------

    def submit(self, work, done) -> None:
        if self.executor is None:
            task = type("T", (), {"error": None, "result": None})()
            try:
                task.result = work()
            except Exception as exc:
                task.error = exc
            if done is not None:
                done(task)
            return
        task = self.executor.submit(work)
        if done is not None:
            task.then(done)

    def forget(self, sink: Append) -> None:
        if self.active.get(sink.row.key) is sink:
            del self.active[sink.row.key]

    def tick(self, now: float) -> None:
        """Once a second from the worker: appends another worker asked to let go are closed; now
        and then, the expiry sweep."""
        if self.active and not self.checking:
            self.checking = True
            sessions = {k: s.row.session for k, s in self.active.items()}

            def done(task) -> None:
                self.checking = False
                for key in task.result or ():
                    sink = self.active.get(key)
                    if sink is not None and sink.row.session == sessions.get(key) and sink.conn is not None:
                        sink.conn.close()
            self.submit(lambda: self.store.claimed(sessions), done)
        if now >= self.next_sweep:
            self.next_sweep = now + min(SWEEP_EVERY, max(1.0, self.expiry / 4))   # short expiries: sooner
            self.submit(lambda: self.store.sweep(time.time()), None)

    def route(self, req: http.Request, identity, close: bool, conn):
        """The reply for a resumable-upload request; None for any other request."""
        headers = req.headers
        method = req.method
        uid = upload_id(req.query) if req.query else None
        tus = "tus-resumable" in headers
        if uid is None:
            if method == "OPTIONS" and tus:
                return self._options(req, close)
            if method == "POST" and tus:
                return self._guard(req, close, True, lambda: self._create_tus(req, identity, close, conn))
            if method in ("POST", "PUT") and rs.is_ietf(headers):
                return self._guard(req, close, False, lambda: self._create_ietf(req, identity, close, conn))
            return None
        if method == "OPTIONS":
            return self._options(req, close)
        return self._guard(req, close, tus, lambda: self._resource(req, identity, uid, close, conn, tus))

    def _guard(self, req, close, tus, fn):
        has_body = bool(req.content_length or req.chunked)
        try:
            return fn()
        except http.HttpError as exc:
            return self.error(exc, req, tus, close or has_body or exc.close)

    def _resource(self, req, identity, uid, close, conn, tus):
        method = req.method
        # The draft (-12): GET retrieves the offset as HEAD does (no content; HEAD is recommended).
        if method not in ("HEAD", "PATCH", "DELETE") and (tus or method != "GET"):
            raise http.HttpError(405, f"{method} is not allowed on an upload",
                                 headers=[("Allow", _ALLOW if tus else "GET, " + _ALLOW)])
        if tus:
            rs.check_tus_version(req.headers)
        if len(uid) != _ID_LEN or not set(uid) <= _HEX:
            raise rs.UploadError(404, "no such upload")
        key = key_of(uid)
        owner = owner_of(identity)
        version = 0 if tus else rs.interop_version(req.headers)
        if method == "PATCH":
            return self._patch(req, identity, key, owner, close, conn, tus, version)
        ctx = Ctx(tus, version, None, None, close)

        def work(row):
            # Both wait for an append under way to be closed and its bytes recorded (the draft's
            # concurrency rule: an offset we give out must be the one the next append is held to).
            fd = -1
            if not row.completed:
                try:
                    fd = self._takeover(key, row)
                except rs.UploadError as exc:
                    if exc.status != 404:       # 404: its file went, maybe committed just now (below)
                        raise
            try:
                # What held the file may have been the append that completed the upload: committed,
                # its row now says so. Never "deleted" (204) nor an old offset for an upload that is a
                # file now: HEAD says complete, DELETE is refused as completed (the file stays).
                fresh = self.store.get(key)
                if fresh is None or (fd < 0 and not fresh.completed):
                    raise rs.UploadError(404, "no such upload")
                if fresh.completed:
                    if method == "DELETE":
                        raise completed_error(fresh)
                    return fresh, False
                if method == "DELETE":
                    self.store.remove(key)
                    return fresh, True
                return fresh, False
            finally:
                if fd >= 0:
                    os.close(fd)

        def then(result) -> Reply:
            row, deleted = result
            if deleted:
                return self._empty(204, req, ctx, [])
            return self._status(req, ctx, row)
        return self._owned(key, owner, req.path, conn, None, work, then,
                           lambda exc: self.error(exc, req, tus, close))

    def _owned(self, key: str, owner: str, path: str, conn, check, work, then, refuse, guard=None):
        """Off the loop: the upload exists here, is not expired and is ``owner``'s (and ``check(row)``
        holds); then ``guard(row, go, refuse)`` when given (it calls ``go`` once it holds); then, on
        the loop, an append to it open in this worker is closed (only now: a stranger cannot cut
        someone's upload); then ``work(row)`` off the loop, ``then`` its result."""
        def first():
            row = self._row(key, owner, path)
            if check is not None:
                check(row)
            return row

        def second(row):
            def go(_=None):
                self._close_active(key, conn)
                return defer(self.executor, lambda: work(row), then, refuse)
            return go() if guard is None else guard(row, go, refuse)
        return defer(self.executor, first, second, refuse)

    def _row(self, key: str, owner: str, path: str) -> Row:
        row = self.store.get(key)
        if row is None or http.normalised(row.target) != http.normalised(path):
            raise rs.UploadError(404, "no such upload")
        if row.expires < time.time():
            raise rs.UploadError(410, "this upload has expired")
        if row.owner != owner:
            raise rs.UploadError(403, "this upload was started by someone else")
        return row

    # -- creation ------------------------------------------------------------------

    def _create_tus(self, req, identity, close, conn):
        headers = req.headers
        rs.check_tus_version(headers)
        length = rs.tus_integer(headers.get("upload-length"), "Upload-Length")
        defer_length = headers.get("upload-defer-length")
        if length is None:
            if defer_length is None or defer_length.strip() != "1":
                raise http.HttpError(400, "Upload-Length (or Upload-Defer-Length: 1) is needed")
        elif defer_length is not None:
            raise http.HttpError(400, "Upload-Length and Upload-Defer-Length exclude each other")
        raw_metadata = headers.get("upload-metadata", "")
        name = rs.filename_of(rs.parse_metadata(raw_metadata))
        folder = req.path if req.path.endswith("/") else req.path + "/"
        has_body = bool(req.content_length or req.chunked)
        if has_body and headers.get("content-type", "").split(";")[0].strip().lower() != rs.TUS_CONTENT_TYPE:
            raise http.HttpError(415, f"creation-with-upload content must be {rs.TUS_CONTENT_TYPE}")
        ctx = Ctx(True, 0, None, rs.parse_checksum(headers.get("upload-checksum")) if has_body else None,
                  close, identity, creation=True)
        return self._create(req, identity, conn, folder + name, length, raw_metadata.strip(), ctx, has_body)

    def _create_ietf(self, req, identity, close, conn):
        headers = req.headers
        version = rs.interop_version(headers)
        complete = rs.upload_complete(headers, version)
        if complete is None:
            raise rs.UploadError(400, "Upload-Complete is needed to create an upload")
        if req.path.endswith("/"):
            raise http.HttpError(400, "a file cannot be written to a folder path (ending in /)")
        length = rs.sf_integer(headers.get("upload-length"), "Upload-Length")
        if complete and req.content_length is not None:
            if length is not None and length != req.content_length:
                raise rs.UploadError(400, "Upload-Length and Content-Length disagree", "inconsistent-upload-length")
            length = req.content_length
        ctx = Ctx(False, version, complete, None, close, identity, creation=True)
        return self._create(req, identity, conn, req.path, length, "", ctx, True)

    def _create(self, req, identity, conn, target: str, length, metadata: str, ctx: Ctx, has_body: bool):
        responder = self.responder
        if self.max_upload is not None and length is not None and length > self.max_upload:
            raise rs.UploadError(413, f"upload larger than {self.max_upload} bytes", close=True)
        if b"#" in req.target:
            raise http.HttpError(400, "a request target cannot hold a fragment (#)")
        from zcopy.server.gate import Rights
        rights = Rights(responder.gate, identity)
        rights.need("PUT", target, False)
        responder.dav.check(req, (target, False), identity=identity)
        upload = secrets.token_hex(_ID_LEN // 2)
        now = time.time()
        row = Row(key_of(upload), target, "tus" if ctx.tus else "ietf", 0, length, metadata, owner_of(identity),
                  now, now + self.expiry, 1, 1)
        location = quote(target.encode("utf-8", "surrogateescape"), safe="/:@!$&'()*+,;=-._~") + "?upload=" + upload

        def work():
            with self.writer.target(target) as t:    # the walk: what a PUT there would meet
                if t.is_dir:
                    raise http.HttpError(409, "a folder exists at this path")
                if t.exists:
                    rights.need("PUT", target, True)
                if t.place.missing and not self.writer.make_parents:
                    raise http.HttpError(409, "the parent folder does not exist")
            self.store.create(row)
            if not has_body:
                return None
            return self._start(row)

        def then(fd):
            extra = [("Location", location)]
            if fd is None:
                return self._empty(201, req, ctx, extra + self._state_headers(row, ctx))
            sink = self._sink(row, fd, ctx, conn)
            sink.location = location
            # 104 to HTTP/1.1 only, and only to a request that names its interop version (the draft:
            # MUST NOT when it is missing or mismatching; we answer in the version it names).
            if not ctx.tus and req.version == (1, 1) and "upload-draft-interop-version" in req.headers:
                fields = [("Location", location), ("Upload-Draft-Interop-Version", str(ctx.version))]
                limit = self._limit()
                if limit:
                    fields.append(("Upload-Limit", limit))
                sink.interim = b"HTTP/1.1 104 Upload Resumption Supported\r\n" + b"".join(
                    f"{n}: {v}\r\n".encode() for n, v in fields) + b"\r\n"
            return sink
        return defer(self.executor, work, then, lambda exc: self.error(exc, req, ctx.tus, True))

    # -- appending -------------------------------------------------------------------

    def _patch(self, req, identity, key, owner, close, conn, tus, version):
        headers = req.headers
        ctype = headers.get("content-type", "").split(";")[0].strip().lower()
        offset = (rs.tus_integer if tus else rs.sf_integer)(headers.get("upload-offset"), "Upload-Offset")
        if offset is None:
            raise rs.UploadError(400, "Upload-Offset is needed")
        if req.content_length is None and not req.chunked:
            raise http.HttpError(411, "PATCH needs Content-Length or chunked encoding")
        if tus:
            if ctype != rs.TUS_CONTENT_TYPE:
                raise http.HttpError(415, f"PATCH content must be {rs.TUS_CONTENT_TYPE}")
            complete = None
            new_length = rs.tus_integer(headers.get("upload-length"), "Upload-Length")
            checksum = rs.parse_checksum(headers.get("upload-checksum"))
        else:
            if version >= 6 and ctype != rs.IETF_CONTENT_TYPE:
                raise http.HttpError(415, f"append content must be {rs.IETF_CONTENT_TYPE}")
            complete = rs.upload_complete(headers, version)
            if complete is None:
                raise rs.UploadError(400, "Upload-Complete is needed on an append")
            new_length = rs.sf_integer(headers.get("upload-length"), "Upload-Length")
            if complete and req.content_length is not None:
                end = offset + req.content_length
                if new_length is not None and new_length != end:
                    raise rs.UploadError(400, "Upload-Length and the content's end disagree",
                                         "inconsistent-upload-length")
                new_length = end
            checksum = None
        ctx = Ctx(tus, version, complete, checksum, close, identity)
        from zcopy.server.gate import Rights
        Rights(self.responder.gate, identity).need("PUT", req.path, False)    # still may write there (a reload)
        if new_length is not None and self.max_upload is not None and new_length > self.max_upload:
            raise rs.UploadError(413, f"upload larger than {self.max_upload} bytes", close=True)

        def check(row):
            if row.completed:
                raise completed_error(row)
            if new_length is not None and row.length is not None and new_length != row.length:
                raise rs.UploadError(400, f"the upload's length is {row.length}", "inconsistent-upload-length")

        def work(row):
            try:
                fd = self._start(row, takeover=True)
            except rs.UploadError as exc:
                fresh = self.store.get(key) if exc.status == 404 else None
                if fresh is not None and fresh.completed:   # its file went because it was committed
                    raise completed_error(fresh) from None
                raise
            try:
                row = self.store.get(key)
                if row is None:
                    raise rs.UploadError(404, "no such upload")
                if offset != row.offset:
                    raise rs.mismatch(row.offset, offset)
                if new_length is not None and row.length is None:
                    if new_length < row.offset:
                        raise rs.UploadError(400, "Upload-Length is below the offset", "inconsistent-upload-length")
                    with self.store.state.transaction() as db:
                        db.execute("UPDATE uploads SET length = ? WHERE key = ?", (new_length, key))
                    row.length = new_length
            except BaseException:
                os.close(fd)
                raise
            return row, fd

        def then(result):
            row, fd = result
            return self._sink(row, fd, ctx, conn)
        def locks(row, go, refuse):
            """An append that will complete the upload meets the target's WebDAV locks before its
            body is read (a refusal after it would leave bytes that say done without a file);
            checked off the loop (``Dav.check_off_loop``)."""
            length = row.length if row.length is not None else new_length
            if (complete or (length is not None and req.content_length is not None
                             and offset + req.content_length == length)):
                return self.responder.dav.check_off_loop(req, [(row.target, False)], ctx.identity, go, refuse)
            return go()
        return self._owned(key, owner, req.path, conn, check, work, then, lambda exc: self.error(exc, req, tus, True),
                           guard=locks)

    def _close_active(self, key: str, conn) -> None:
        """An append to ``key`` under way in this worker is closed at once (its abort records what
        arrived and lets go of the file); one in another worker is asked through the table."""
        old = self.active.get(key)
        if old is not None and old.conn is not None and old.conn is not conn:
            old.conn.close()

    def _takeover(self, key: str, row: Row) -> int:
        """(a thread) An fd of the partial file, held exclusively: when another append holds it, ask
        it to let go (every worker looks once a second) and wait up to TAKEOVER_WAIT."""
        fd = self.store.open(key)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                pass
            self.store.claim(key)
            deadline = time.monotonic() + TAKEOVER_WAIT
            while True:
                time.sleep(0.05)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    return fd
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise rs.UploadError(409, "another request is still writing this upload; try again",
                                             headers=[("Retry-After", "1")]) from None
        except BaseException:
            os.close(fd)
            raise

    def _start(self, row: Row, takeover: bool = False) -> int:
        """(a thread) Hold the partial file for a new append: its fd, locked, cut back to the durable offset."""
        fd = self._takeover(row.key, row) if takeover else self.store.open(row.key)
        if not takeover:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)      # just made: nobody else has it
        try:
            fresh = self.store.begin(row.key)
            if fresh is None:
                raise rs.UploadError(404, "no such upload")
            if fresh.completed:                 # committed while we waited: its fd is the target's file now
                raise completed_error(fresh)
            row.session, row.claim, row.offset, row.length = fresh.session, fresh.claim, fresh.offset, fresh.length
            os.ftruncate(fd, row.offset)        # what a cut left past the durable offset goes
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _sink(self, row: Row, fd: int, ctx: Ctx, conn) -> Append:
        sink = Append(self, row, fd, ctx)
        sink.conn = conn
        if conn is not None and _closed(conn):
            # The client left while the append was being set up (two steps off the loop: the Pending
            # it waited on is not the one that brings this sink): let go of the file now.
            sink.abort()
            return sink
        old = self.active.get(row.key)
        if old is not None and old is not sink and old.conn is not None:
            old.conn.close()
        self.active[row.key] = sink
        return sink

    def finish(self, sink: Append, req: http.Request, closing: bool = False):
        """The append's content is all in: durable, checked, recorded, and committed when complete."""
        ctx = sink.ctx
        close = closing or not req.keep_alive
        row = sink.row
        end = sink.offset
        if not ctx.tus and ctx.complete and row.length is None:
            row.length = end
        if not ctx.tus and ctx.complete and row.length != end:
            sink.abort()
            return self.error(rs.UploadError(400, f"the upload ended at {end}, not at its length {row.length}",
                                             "inconsistent-upload-length"), req, False, close)
        completes = row.length is not None and end == row.length and (ctx.tus or bool(ctx.complete))
        if not completes:
            sink.ended = True
            self.forget(sink)
            return self._finish(sink, req, close, end, False, None)

        def refuse(exc):
            sink.offset = min(sink.offset, max(sink.durable, sink.start))   # never "all there" unsaved
            sink.keep()
            return self.error(exc, req, ctx.tus, close)

        dav = self.responder.dav

        def commit(known):
            from zcopy.server.gate import Rights
            # Locks and the If header, at commit too: on the thread that commits, after the
            # fdatasync (seconds for a big upload) and right before the rename, so that a LOCK
            # granted meanwhile is met; the If header's entries were found first (off the loop).
            return self._finish(sink, req, close, end, True, Rights(self.responder.gate, ctx.identity),
                                lambda: dav.check(req, (row.target, False), identity=ctx.identity, known=known),
                                refuse)
        # Out of ``active`` meanwhile (as during the commit): no other request cuts it.
        sink.ended = True
        self.forget(sink)
        return dav.with_if_entries(req, ctx.identity, commit, refuse)

    def _finish(self, sink: Append, req: http.Request, close: bool, end: int, completes: bool, rights,
                check=None, refuse=None):
        """``finish`` for an append that completes the upload (``completes``: ``check()``, the
        locks and If header, runs right before the commit; its refusal is ``refuse(exc)``), or
        for one that does not: durable, checked, recorded, and committed when complete."""
        ctx = sink.ctx
        row = sink.row

        def work():
            try:
                with sink.lock:
                    fd = sink.fd
                    if self.store.fsync:
                        os.fdatasync(fd)
                    if ctx.checksum is not None:
                        algo, digest = ctx.checksum
                        if _digest(fd, algo, sink.start, end) != digest:
                            os.ftruncate(fd, sink.start)
                            raise rs.UploadError(rs.CHECKSUM_MISMATCH, "Checksum Mismatch")
                    if not completes:
                        expires = time.time() + self.expiry
                        if not self.store.record(row.key, row.session, end, row.length, expires):
                            raise rs.UploadError(409, "a newer request took this upload over")
                        row.expires = expires       # what Upload-Expires / Upload-Limit say now
                        return None
                    # Complete: commit first, then forget the row (a crash between the two leaves a
                    # row without data: 404 to a resume; never an offset saying done with no file).
                    fresh = self.store.get(row.key)
                    if fresh is None or fresh.session != row.session:
                        raise rs.UploadError(409, "a newer request took this upload over")
                    if check is not None:
                        try:
                            check()
                        except http.HttpError as exc:
                            raise _Refused(exc) from None
                    return self._commit(row, fd, rights)
            finally:
                sink.release()

        def then(status):
            if status is None:
                if ctx.creation:
                    fields = [("Location", sink.location)] + self._state_headers(row, ctx, end)
                    return self._empty(201, req, ctx, fields, close)
                return self._status(req, ctx, row, end, 204)
            self.responder.cache.written()
            extra = [("Upload-Offset", str(end)), ("Zcopy-Commit", str(status))]    # 201 created, 204 replaced
            if not ctx.tus:
                extra.append(rs.complete_header(True, ctx.version))
            if ctx.creation:
                extra.append(("Location", sink.location))
                status = 201 if ctx.tus else status
            else:
                status = 204 if ctx.tus else status
            return self._empty(status, req, ctx, extra, close)
        def failed(exc):
            if isinstance(exc, _Refused):
                return refuse(exc.error)
            return self.error(exc, req, ctx.tus, True)
        return defer(self.executor, work, then, failed)

    def _commit(self, row: Row, fd: int, rights) -> int:
        """(a thread) The PUT's commit (fileops.TempFile.commit: fsync, rename or link, fsync of the
        folder) of the partial file as ``row.target``. The partial is first renamed into the
        target's folder under a temp name (on another filesystem than ROOT: copied into a PUT's
        temp file), so no name of it stays behind to be truncated by a later append.
        Returns 201 (created) or 204 (replaced)."""
        from zcopy.server.write_methods import serialized

        writer = self.writer
        target = writer.target(row.target)
        try:
            if target.is_dir:
                raise http.HttpError(409, "a folder exists at this path")
            replace = True
            if target.exists:
                rights.need("PUT", row.target, True)
            else:
                replace = rights.has("PUT", row.target, True)
            writer.parents(target)
            os.fchmod(fd, 0o644)
            name = f"{fileops.TEMP_PREFIX}{secrets.token_hex(16)}"
            try:
                os.rename(row.key, name, src_dir_fd=self.store.folder(), dst_dir_fd=target.place.dir_fd)
                temp = fileops.TempFile.adopt(target.place.dir_fd, os.dup(fd), name)
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
                temp = fileops.TempFile(target.place.dir_fd)
                try:
                    _copy(fd, temp.fd, row.length or 0)
                except BaseException:
                    temp.abort()
                    raise
            with serialized(target.path):
                replaced = temp.commit(target.place.name, fsync=self.store.fsync, replace=replace)
        finally:
            self.responder.cache.invalidate(target.path)
            target.close()
        # Remembered as completed until it expires (a crash before this leaves the row without its
        # file: 404 to a resume, never an offset saying done with no file).
        self.store.completed(row.key, row.session, row.length or 0, time.time() + self.expiry)
        return 204 if replaced else 201

    # -- replies ---------------------------------------------------------------------

    def _limit(self, row: Row | None = None) -> str:
        """Upload-Limit: max-size (--max-upload) and max-age (the resource's remaining life)."""
        age = self.expiry if row is None else max(0, int(row.expires - time.time()))
        return rs.upload_limit(self.max_upload, age)

    def _state_headers(self, row: Row, ctx: Ctx, offset: int | None = None) -> list:
        offset = row.offset if offset is None else offset
        fields = [("Upload-Offset", str(offset))]
        if ctx.tus:
            if row.length is not None:
                fields.append(("Upload-Length", str(row.length)))
            else:
                fields.append(("Upload-Defer-Length", "1"))
            if row.metadata:
                fields.append(("Upload-Metadata", row.metadata))
            fields.append(("Upload-Expires", rs.http_date(row.expires)))
        else:
            fields.append(rs.complete_header(bool(row.completed), ctx.version))
            if row.length is not None:
                fields.append(("Upload-Length", str(row.length)))
            limit = self._limit(row)
            if limit and ctx.version >= 6:
                fields.append(("Upload-Limit", limit))
        return fields

    def _status(self, req, ctx: Ctx, row: Row, offset: int | None = None, status: int | None = None) -> Reply:
        fields = self._state_headers(row, ctx, offset) + [("Cache-Control", "no-store")]
        if status is None:
            status = 200 if ctx.tus else 204
        return self._empty(status, req, ctx, fields)

    def _empty(self, status: int, req, ctx: Ctx, fields, close: bool | None = None) -> Reply:
        if ctx.tus:
            fields = [("Tus-Resumable", rs.TUS_VERSION), *fields]
        elif ctx.version:
            fields = [*fields, ("Upload-Draft-Interop-Version", str(ctx.version))]
        close = ctx.close if close is None else close
        extra = "".join(f"{n}: {v}\r\n" for n, v in fields).encode("latin-1", "replace")
        length = None if status == 204 else 0
        head = http.response_head(status, self.date.get(), b"", length, extra=extra, close=close,
                                  version=req.version)
        return Reply(status, head, [], 0, close)

    def options_headers(self) -> bytes:
        """What an OPTIONS of any URL says when uploads are on (the draft: Accept-Patch naming
        application/partial-upload, and the limits; tus: Tus-Version and its extensions)."""
        fields = [("Accept-Patch", rs.IETF_CONTENT_TYPE), ("Tus-Resumable", rs.TUS_VERSION),
                  ("Tus-Version", rs.TUS_VERSION), ("Tus-Extension", rs.TUS_EXTENSIONS),
                  ("Tus-Checksum-Algorithm", rs.TUS_CHECKSUMS)]
        if self.max_upload is not None:
            fields.append(("Tus-Max-Size", str(self.max_upload)))
        limit = self._limit()
        if limit:
            fields.append(("Upload-Limit", limit))
        return "".join(f"{n}: {v}\r\n" for n, v in fields).encode()

    def _options(self, req, close: bool) -> Reply:
        close = close or bool(req.content_length or req.chunked)
        extra = self.options_headers() + self.responder.dav.options_headers()
        head = http.response_head(204, self.date.get(), b"", None, extra=extra, close=close, version=req.version)
        return Reply(204, head, [], 0, close)

    def error(self, exc, req, tus: bool, close: bool) -> Reply:
        """An error reply: problem+json (RFC 9457) for the IETF flow, text for tus."""
        from zcopy.server.reply import refusal

        if not isinstance(exc, http.HttpError):
            return refusal(exc, self.date.get(), close=True, version=req.version)
        close = close or exc.close
        head_only = req.method == "HEAD"
        if tus:
            exc.headers = [*exc.headers, ("Tus-Resumable", rs.TUS_VERSION)]
            return refusal(exc, self.date.get(), close=close, head_only=head_only, version=req.version)
        members = getattr(exc, "members", {})
        kind = getattr(exc, "kind", None)
        body = rs.problem(exc.status, kind, exc.reason or "error", **members)
        fields = list(exc.headers)
        if kind in ("completed-upload", "mismatching-upload-offset"):
            # The draft (-12): a 409 offset mismatch MUST say Upload-Complete: ?0, and so may the answer
            # to an invalid operation on a completed upload (?1 would mean the target's own answer).
            try:
                fields.append(rs.complete_header(False, rs.interop_version(req.headers)))
            except http.HttpError:
                pass
        extra = "".join(f"{n}: {v}\r\n" for n, v in fields).encode("latin-1", "replace")
        extra += b"Content-Type: application/problem+json\r\nCache-Control: no-store\r\n"
        head = http.response_head(exc.status, self.date.get(), b"", len(body), extra=extra, close=close,
                                  version=req.version)
        return Reply(exc.status, head, [] if head_only else [body], 0 if head_only else len(body), close)


def completed_error(row: Row) -> rs.UploadError:
    """An append to (or a cancel of) an upload that is a file already: refused, nothing changes."""
    return rs.UploadError(400, "this upload is already complete", "completed-upload",
                          headers=[("Upload-Offset", str(row.offset))])


def _closed(conn) -> bool:
    from zcopy.server.connection import CLOSED

    return getattr(conn, "state", None) == CLOSED


def _digest(fd: int, algo: str, start: int, stop: int) -> bytes:
    h = hashlib.new(algo)
    at = start
    while at < stop:
        data = os.pread(fd, min(1 << 20, stop - at), at)
        if not data:
            break
        h.update(data)
        at += len(data)
    return h.digest()


def _copy(src: int, dst: int, length: int) -> None:
    """``length`` bytes of ``src`` into ``dst`` from offset 0 (another filesystem): copy_file_range,
    or sendfile(2) where the kernel refuses it across filesystems (EXDEV before 5.3 and since 5.19)."""
    at = 0
    while at < length:
        try:
            n = os.copy_file_range(src, dst, length - at, at, at)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOSYS):
                raise
            break
        if n == 0:
            raise OSError(errno.EIO, "the partial file is shorter than its upload")
        at += n
    if at < length:
        os.lseek(dst, at, os.SEEK_SET)
        while at < length:
            n = os.sendfile(dst, src, at, min(length - at, 1 << 30))
            if n == 0:
                raise OSError(errno.EIO, "the partial file is shorter than its upload")
            at += n
