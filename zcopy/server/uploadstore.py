"""The resumable uploads' store: partial files under ROOT's reserved ``.zcopy/uploads`` folder and
their rows in the state database (``uploads``, migrations 5 and 6 of zcopy.server.state). A completed
upload keeps its row (``completed`` = 1, no file) until it expires. See docs/uploads.md.

Every method of ``Store`` blocks on the disk or the database: callers (zcopy.server.uploads) run them
on the worker's executor, never on the loop.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import threading
import time
from dataclasses import dataclass

from zcopy import http
from zcopy.http import resumable as rs

#: A partial file without a row (a crash between the two) is removed after this long.
ORPHAN_AFTER = 3600.0
FOLDER = ".zcopy"
SUBFOLDER = "uploads"


def key_of(upload_id: str) -> str:
    """The SHA-256 of an upload's id: its row's key and its partial file's name (the id itself is a
    capability, kept out of the table and off the disk)."""
    return hashlib.sha256(upload_id.encode()).hexdigest()


@dataclass
class Row:
    key: str
    target: str
    protocol: str
    offset: int
    length: int | None
    metadata: str
    owner: str
    created: float
    expires: float
    session: int
    claim: int
    completed: int = 0      # 1: committed as its target; the row only remembers it until it expires


_COLUMNS = "key, target, protocol, offset, length, metadata, owner, created, expires, session, claim, completed"


def owner_of(identity) -> str:
    return f"{identity.kind}:{identity.name}"


class Store:
    """The partial files and the table, for one process. Every method blocks on the disk or the
    database: callers run them off the loop."""

    def __init__(self, root_fd: int, state, fsync: bool, max_pending: int = 0) -> None:
        self.root_fd = root_fd
        self.state = state
        self.fsync = fsync
        #: unfinished uploads one owner may hold at once (0: no limit); each holds disk until it
        #: completes, is cancelled or expires
        self.max_pending = max_pending
        self._dir_fd = -1
        self._lock = threading.Lock()

    def folder(self, create: bool = True) -> int:
        """ROOT/.zcopy/uploads, made (0700) on first use; never through a symlink. Without
        ``create``: -1 when it does not exist (the sweep of a server that never had an upload)."""
        with self._lock:
            if self._dir_fd >= 0:
                return self._dir_fd
            if not create:
                try:
                    os.stat(FOLDER + "/" + SUBFOLDER, dir_fd=self.root_fd, follow_symlinks=False)
                except OSError:
                    return -1
            fd = self.root_fd
            opened = []
            try:
                for name in (FOLDER, SUBFOLDER):
                    try:
                        os.mkdir(name, 0o700, dir_fd=fd)
                    except FileExistsError:
                        pass
                    fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
                    opened.append(fd)
            except OSError as exc:
                for f in opened:
                    os.close(f)
                raise http.HttpError(503, f"resumable uploads are unavailable: {FOLDER}/{SUBFOLDER} in the "
                                          f"served folder cannot be used ({exc.strerror})") from None
            for f in opened[:-1]:
                os.close(f)
            self._dir_fd = opened[-1]
            return self._dir_fd

    def close(self) -> None:
        if self._dir_fd >= 0:
            os.close(self._dir_fd)
            self._dir_fd = -1

    # -- rows ----------------------------------------------------------------

    def get(self, key: str) -> Row | None:
        rows = self.state.query(f"SELECT {_COLUMNS} FROM uploads WHERE key = ?", (key,))
        return Row(*rows[0]) if rows else None

    def create(self, row: Row) -> None:
        """The row first, then the file (a crash between leaves a row whose file is missing: its
        appends answer 404 and the sweep removes it; never a file nobody knows)."""
        with self.state.transaction() as db:
            if self.max_pending:
                (held,), = db.execute("SELECT COUNT(*) FROM uploads WHERE owner = ? AND expires > ? "
                                      "AND completed = 0",
                                      (row.owner, row.created)).fetchall()
                if held >= self.max_pending:
                    raise rs.UploadError(429, f"{held} unfinished uploads already: complete or cancel one "
                                              f"(--max-pending-uploads)", "too-many-uploads")
            db.execute(f"INSERT INTO uploads ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                       (row.key, row.target, row.protocol, row.offset, row.length, row.metadata, row.owner,
                        row.created, row.expires, row.session, row.claim, row.completed))
        folder = self.folder()
        fd = os.open(row.key, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                     dir_fd=folder)
        os.close(fd)
        if self.fsync:
            os.fsync(folder)

    def open(self, key: str) -> int:
        try:
            return os.open(key, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self.folder())
        except FileNotFoundError:
            raise rs.UploadError(404, "this upload's data is gone") from None

    def record(self, key: str, session: int, offset: int, length: int | None = None,
               expires: float | None = None) -> bool:
        """The durable offset of the append ``session``; False when a newer append took over. Never
        lowered within a session (a checkpoint's thread may run after the cut's)."""
        with self.state.transaction() as db:
            cur = db.execute("UPDATE uploads SET offset = MAX(offset, ?), length = COALESCE(?, length), "
                             "expires = COALESCE(?, expires) WHERE key = ? AND session = ? AND completed = 0",
                             (offset, length, expires, key, session))
            return cur.rowcount == 1

    def claim(self, key: str) -> None:
        with self.state.transaction() as db:
            db.execute("UPDATE uploads SET claim = session + 1 WHERE key = ? AND completed = 0", (key,))

    def begin(self, key: str) -> Row | None:
        """A new append holds the upload: its session (a completed upload's row is returned as it is:
        the caller refuses it)."""
        with self.state.transaction() as db:
            db.execute("UPDATE uploads SET session = session + 1, claim = session + 1 "
                       "WHERE key = ? AND completed = 0", (key,))
        return self.get(key)

    def _unlink(self, key: str) -> None:
        """The partial file of ``key`` gone from the uploads folder (if it is there)."""
        folder = self.folder(create=False)
        if folder >= 0:
            try:
                os.unlink(key, dir_fd=folder)
            except FileNotFoundError:
                pass

    def completed(self, key: str, session: int, length: int, expires: float) -> None:
        """The upload ``key`` was committed as its target (by the append ``session``): its partial file
        is gone (renamed into place, or copied and removed here) and its row says so until ``expires``.
        The file goes first: a row saying completed never has a partial file behind it."""
        self._unlink(key)
        with self.state.transaction() as db:
            db.execute("UPDATE uploads SET completed = 1, offset = ?, length = ?, expires = ?, "
                       "claim = session WHERE key = ? AND session = ?",
                       (length, length, expires, key, session))

    def remove(self, key: str) -> None:
        self._unlink(key)
        with self.state.transaction() as db:
            db.execute("DELETE FROM uploads WHERE key = ?", (key,))

    def claimed(self, sessions: dict[str, int]) -> list[str]:
        """Of these (key -> session) appends, those a newer append asked to let go."""
        if not sessions:
            return []
        keys = list(sessions)
        marks = ",".join("?" * len(keys))
        rows = self.state.query(f"SELECT key, claim FROM uploads WHERE key IN ({marks})", tuple(keys))
        found = dict(rows)
        return [k for k, s in sessions.items() if k not in found or found[k] > s]

    def sweep(self, now: float) -> list[str]:
        """Remove expired uploads (unless an append holds one right now), the records of completed
        ones once they expire, and orphan partial files."""
        removed = []
        folder = self.folder(create=False)
        for (key, completed) in self.state.query("SELECT key, completed FROM uploads WHERE expires < ?", (now,)):
            if completed:
                with self.state.transaction() as db:
                    db.execute("DELETE FROM uploads WHERE key = ? AND completed = 1", (key,))
                removed.append(key)
                continue
            try:
                fd = self.open(key) if folder >= 0 else -1
            except http.HttpError:
                fd = -1
            try:
                if fd >= 0:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        continue            # being written to right now: not expired after all
                self.remove(key)
                removed.append(key)
            finally:
                if fd >= 0:
                    os.close(fd)
        if folder < 0:
            return removed
        known = {k for (k,) in self.state.query("SELECT key FROM uploads WHERE completed = 0")}
        with os.scandir(folder) as it:
            names = [d.name for d in it if d.name not in known]
        for name in names:
            try:
                st = os.stat(name, dir_fd=folder, follow_symlinks=False)
                if time.time() - st.st_mtime > ORPHAN_AFTER:
                    os.unlink(name, dir_fd=folder)
                    removed.append(name)
            except OSError:
                pass
        return removed
