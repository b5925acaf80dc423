"""The server's own state: one folder (``--state-dir``) holding an sqlite
database in WAL mode and the share secret.

Layout (every file mode 0600, the folder 0700 when we create it)::

    STATE_DIR/state.db         sqlite, WAL (state.db-wal and state.db-shm beside it)
    STATE_DIR/secret           32 random bytes: the key share links are signed with

The secret lives in its own file rather than in the database so that a copy
of the database (a backup, a bug report) never carries it, and so that an
operator can rotate it by deleting the file (the next start makes a new one,
and every link signed with the old one stops working).

Lifecycle. ``prepare`` runs once in the supervisor, before any worker is
forked: it creates the folder, refuses a network filesystem (WAL needs local
locks and shared memory), brings the schema up to date and makes the secret;
it closes its connection before returning, so no sqlite handle crosses a
fork. Each process then makes its own ``State``, which opens its connection
on first use. Every call may block on the disk: callers on an event loop run
them on the executor, never on the loop.

Schema versioning: ``MIGRATIONS[i]`` takes the schema from version i to i + 1
(``PRAGMA user_version``), each in its own transaction with its version bump,
so a crash leaves a whole version. A database written by a newer zcopy (a
higher version than this code knows) is refused rather than misread. Later
features (locks, uploads, throttles) append their tables as new migrations.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
import threading
import time

from zcopy import __version__
from zcopy.fsinfo import fs_type

DB_NAME = "state.db"
SECRET_NAME = "secret"
SECRET_BYTES = 32
#: How long a writer waits for another process's write transaction (ms).
BUSY_TIMEOUT_MS = 5000
#: Filesystems (statfs names) refused for the state folder: sqlite's WAL needs locks and a shared-memory
#: file that every process sees alike, which network filesystems and FUSE (statfs cannot tell sshfs or
#: ceph-fuse from a local FUSE filesystem) do not promise. Unknown magics are let through.
NOT_LOCAL = frozenset({"nfs", "cifs", "smb2", "ceph", "9p", "fuse"})

MIGRATIONS: list[str] = [
    # 1: facts about this state folder (when it was made, which zcopy last opened it).
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    # 2: WebDAV locks (zcopy/dav/locks.py). Migrations are never edited once released: a change is a new one.
    """CREATE TABLE locks (
        token TEXT PRIMARY KEY,
        root TEXT NOT NULL,          -- decoded URL path, '/' or without a trailing slash
        depth INTEGER NOT NULL,      -- 0 or -1 (infinity)
        exclusive INTEGER NOT NULL,
        owner BLOB NOT NULL,         -- the DAV:owner element as the client sent it
        principal TEXT NOT NULL,     -- who took it (account name, 'token', or '-')
        timeout INTEGER NOT NULL,    -- seconds, as granted
        expires REAL NOT NULL        -- Unix time
    );
    CREATE INDEX locks_root ON locks(root)""",
    # 3: content digests for ETags (zcopy/server/digests.py), valid while size, mtime and ctime hold.
    """CREATE TABLE digests (
        dev INTEGER NOT NULL,
        ino INTEGER NOT NULL,
        size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        ctime_ns INTEGER NOT NULL,
        digest BLOB NOT NULL,
        PRIMARY KEY (dev, ino)
    )""",
    # 4: failed sign-ins per client address, shared by the workers (zcopy/server/throttle.py).
    """CREATE TABLE throttle (
        addr TEXT PRIMARY KEY,       -- the client address (from X-Forwarded-For behind --trusted-proxy)
        failures INTEGER NOT NULL,   -- failed sign-ins since ``since``
        since REAL NOT NULL          -- Unix time the window started
    )""",
    # 5: resumable uploads (zcopy/server/uploads.py, docs/uploads.md). ``key`` is the SHA-256 of the upload's
    # id (the id is a capability in its URL: the table and the partial file's name never hold it).
    """CREATE TABLE uploads (
        key TEXT PRIMARY KEY,        -- hex SHA-256 of the id, also the partial file's name in ROOT/.zcopy/uploads
        target TEXT NOT NULL,        -- decoded URL path of the file it becomes
        protocol TEXT NOT NULL,      -- 'tus' or 'ietf'
        offset INTEGER NOT NULL,     -- bytes durable (fsynced, or written with --no-fsync) in the partial file
        length INTEGER,              -- declared length, NULL while deferred / not yet known
        metadata TEXT NOT NULL,      -- tus Upload-Metadata as sent ('' for none)
        owner TEXT NOT NULL,         -- who created it: 'kind:name' of the identity (zcopy.server.access)
        created REAL NOT NULL,       -- Unix time
        expires REAL NOT NULL,       -- Unix time, pushed forward by every append
        session INTEGER NOT NULL,    -- bumped by each append that takes the upload over
        claim INTEGER NOT NULL,      -- > session: a newer append waits for the current one to be closed
        checksum TEXT                -- reserved: running digest state of a whole-upload checksum (unused)
    );
    CREATE INDEX uploads_expires ON uploads(expires)""",
    # 6: a completed upload is remembered until it expires (its file is the target now; the row keeps
    # only what HEAD says of it, so a client that lost the final response learns it completed, and an
    # append to it is refused as completed rather than 404; docs/uploads.md "Completed uploads").
    "ALTER TABLE uploads ADD COLUMN completed INTEGER NOT NULL DEFAULT 0",
]


class StateError(Exception):
    """The state folder cannot be used: one line that says why and what to do."""


def default_dir() -> str:
    """$XDG_STATE_HOME/zcopy, or ~/.local/state/zcopy."""
    from zcopy.xdg import folder

    return folder("XDG_STATE_HOME")


def _open_folder(path: str) -> int:
    """An fd of the state folder at the real path ``path``. Raises StateError."""
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise StateError(f"cannot open the state folder {path}: {exc.strerror}") from None


def prepare(path: str) -> str:
    """Make ``path`` a usable state folder (created if missing); returns its
    real path. Raises StateError. Run before forking: leaves nothing open."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise StateError(f"cannot create the state folder {path}: {exc.strerror}") from None
    path = os.path.realpath(path)
    dir_fd = _open_folder(path)
    try:
        _check_folder(path, dir_fd)
        os.close(_open_private(path, dir_fd, DB_NAME, create=True)[0])   # 0600 before sqlite makes it
        _make_secret(path, dir_fd)
    finally:
        os.close(dir_fd)
    state = State(path)
    try:
        state.migrate()
    except sqlite3.Error as exc:        # damaged, or not a schema this zcopy wrote: one line, not a traceback
        raise StateError(f"{path}/{DB_NAME} cannot be brought up to date ({exc}): move it aside, or use "
                         "another --state-dir") from None
    finally:
        state.close()
    return path


class State:
    """One process's handle on the state folder. The sqlite connection opens
    on first use, in the process that uses it (never inherited through a
    fork); calls are serialised by a lock, so executor threads may share it."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._pid = 0
        self._lock = threading.RLock()     # a transaction body may call query()
        self._secret: bytes | None = None

    # -- the connection -------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        if self._db is not None:
            if self._pid != os.getpid():
                raise RuntimeError("a State was inherited through fork: make a new one in this process")
            return self._db
        db = sqlite3.connect(os.path.join(self.path, DB_NAME), isolation_level=None,
                             check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000)
        try:
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal":
                raise StateError(f"{self.path}/{DB_NAME}: sqlite would not use WAL here (journal mode {mode})")
            db.execute("PRAGMA synchronous=NORMAL")    # WAL: a power cut may lose the last commits, never corrupts
            db.execute("PRAGMA foreign_keys=ON")
        except BaseException:
            db.close()
            raise
        self._db, self._pid = db, os.getpid()
        return db

    @contextlib.contextmanager
    def transaction(self):
        """``with state.transaction() as db:`` one write transaction (BEGIN
        IMMEDIATE: takes the write lock at once, so it cannot fail half way
        on a lock another process holds); rolled back on an exception."""
        with self._lock:
            db = self._connect()
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        """All rows of one read statement."""
        with self._lock:
            return self._connect().execute(sql, params).fetchall()

    def open(self) -> "State":
        """Open the connection now (a worker does it once at start, after the fork, so its fds are
        there from the first request on instead of appearing at the first off-loop use)."""
        with self._lock:
            self._connect()
        return self

    def close(self) -> None:
        with self._lock:
            if self._db is not None and self._pid == os.getpid():
                self._db.close()
            self._db = None

    # -- schema ---------------------------------------------------------------

    def version(self) -> int:
        return self.query("PRAGMA user_version")[0][0]

    def migrate(self) -> None:
        """Apply the migrations this database lacks, one transaction each."""
        while True:
            with self.transaction() as db:
                have = db.execute("PRAGMA user_version").fetchone()[0]
                if have > len(MIGRATIONS):
                    raise StateError(f"{self.path}/{DB_NAME} has schema version {have}, written by a newer "
                                     f"zcopy (this one knows up to {len(MIGRATIONS)}): upgrade, or use "
                                     "another --state-dir")
                if have == len(MIGRATIONS):
                    db.execute("INSERT INTO meta VALUES ('opened_by', ?) ON CONFLICT(key) DO UPDATE "
                               "SET value = excluded.value", (__version__,))
                    return
                for statement in _statements(MIGRATIONS[have]):
                    db.execute(statement)
                if have == 0:
                    db.execute("INSERT INTO meta VALUES ('created', ?)", (str(int(time.time())),))
                db.execute(f"PRAGMA user_version = {have + 1}")

    # -- small API for the features that keep state --------------------------

    def meta(self, key: str) -> str | None:
        rows = self.query("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0][0] if rows else None

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction() as db:
            db.execute("INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                       (key, value))

    def get_digest(self, dev: int, ino: int):
        """((size, mtime_ns, ctime_ns), digest) remembered for a file, or None (zcopy.server.digests)."""
        rows = self.query("SELECT size, mtime_ns, ctime_ns, digest FROM digests WHERE dev = ? AND ino = ?", (dev, ino))
        return ((rows[0][0], rows[0][1], rows[0][2]), bytes(rows[0][3])) if rows else None

    def put_digest(self, dev: int, ino: int, key: tuple, digest: bytes) -> None:
        with self.transaction() as db:
            db.execute("INSERT INTO digests VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(dev, ino) DO UPDATE SET "
                       "size = excluded.size, mtime_ns = excluded.mtime_ns, ctime_ns = excluded.ctime_ns, "
                       "digest = excluded.digest", (dev, ino, *key, digest))

    def share_secret(self) -> bytes:
        """The 32-byte key share links are signed with (read once per process)."""
        if self._secret is None:
            dir_fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                self._secret = _read_secret(self.path, dir_fd)
            finally:
                os.close(dir_fd)
        return self._secret


def _statements(migration: str) -> list[str]:
    """A migration's SQL statements (separated by ';'; none of ours holds one in a literal)."""
    return [s for s in migration.split(";") if s.strip()]


# -- files in the folder ------------------------------------------------------

def _check_folder(path: str, dir_fd: int) -> None:
    try:
        name, magic = fs_type(dir_fd)
    except OSError as exc:
        raise StateError(f"cannot statfs the state folder {path}: {exc.strerror}") from None
    if name in NOT_LOCAL:
        raise StateError(f"the state folder {path} is on {name} (statfs magic {magic:#x}): sqlite's WAL needs "
                         "local locks and shared memory; choose one on a local filesystem with --state-dir")
    st = os.fstat(dir_fd)
    if st.st_uid != os.geteuid():
        raise StateError(f"the state folder {path} belongs to uid {st.st_uid}, not to this user")
    if st.st_mode & 0o022:
        raise StateError(f"the state folder {path} is writable by others (mode {stat.S_IMODE(st.st_mode):o}): "
                         f"chmod go-w {path}")


def _open_private(folder: str, dir_fd: int, name: str, *, create: bool = False) -> tuple[int, int]:
    """(fd, size) of ``name`` in the folder, checked on the fd itself: a regular
    file of ours that only we can read or write (mode 0600). With ``create``,
    a missing file is made (empty, 0600) and the fd is open for writing."""
    flags = os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_WRONLY | os.O_CREAT if create else os.O_RDONLY)
    try:
        fd = os.open(name, flags, 0o600, dir_fd=dir_fd)
    except OSError as exc:
        raise StateError(f"cannot open {folder}/{name}: {exc.strerror}") from None
    st = os.fstat(fd)
    problem = None
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
        problem = f"{folder}/{name} is not a regular file of this user"
    elif st.st_mode & 0o077:
        problem = (f"{folder}/{name} is open to other users (mode {stat.S_IMODE(st.st_mode):o}): "
                   f"chmod 600 {folder}/{name}")
    if problem:
        os.close(fd)
        raise StateError(problem)
    return fd, st.st_size


def _new_secret_file(dir_fd: int) -> str:
    """New random secret bytes, written whole and fsync'ed (mode 0600) under a temporary name in the
    folder ``dir_fd``; returns that name, for the caller to link or rename into place."""
    tmp = f".{SECRET_NAME}.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
    try:
        os.write(fd, os.urandom(SECRET_BYTES))
        os.fsync(fd)
    finally:
        os.close(fd)
    return tmp


def _make_secret(folder: str, dir_fd: int) -> None:
    """Create the secret once: written whole under a temporary name, then
    linked into place (a crash leaves no short secret; two servers starting
    together keep whichever linked first)."""
    try:
        os.stat(SECRET_NAME, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        tmp = _new_secret_file(dir_fd)
        try:
            os.link(tmp, SECRET_NAME, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp, dir_fd=dir_fd)
        os.fsync(dir_fd)
    _read_secret(folder, dir_fd)


def rotate_secret(path: str) -> None:
    """Replace the secret of the state folder ``path`` with new random bytes (written whole under a
    temporary name, fsync'ed, renamed over the old one): every share link and session signed with
    the old one stops working once the server's workers read the new one (SIGHUP or a restart).
    Raises StateError."""
    path = os.path.realpath(path)
    dir_fd = _open_folder(path)
    try:
        _check_folder(path, dir_fd)
        _read_secret(path, dir_fd)          # a folder zcopy made: refuse to rotate anything else
        os.rename(_new_secret_file(dir_fd), SECRET_NAME, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _read_secret(folder: str, dir_fd: int) -> bytes:
    fd, size = _open_private(folder, dir_fd, SECRET_NAME)
    try:
        if size != SECRET_BYTES:
            raise StateError(f"{folder}/{SECRET_NAME} holds {size} bytes, not {SECRET_BYTES}: delete it and a "
                             "new one is made at the next start (share links made with the old one stop working)")
        return os.pread(fd, SECRET_BYTES, 0)
    finally:
        os.close(fd)
