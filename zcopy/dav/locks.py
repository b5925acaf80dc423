"""The WebDAV lock table (RFC 4918 class 2), kept in the state database so that every worker sees the
same locks and they survive a worker restart.

A lock covers its root path, and with depth infinity everything beneath it (whole segments). Two locks
conflict when one covers the other's root (or, for depth infinity, anything beneath it) and either is
exclusive; shared locks stack. A lock that has expired is as good as gone: every query ignores it and
``sweep`` deletes it.

Writes (PUT, DELETE, MOVE, COPY's destination, PROPPATCH, MKCOL, LOCK itself) must submit, in their If
header, the token of every lock that covers the resource they change (``missing_tokens``) and, for the
recursive ones (DELETE and MOVE of a folder), of every lock beneath it as well. A token only counts for
the principal that took the lock (RFC 4918 6.4: the server checks that the submitter owns it), so one
user cannot use another's lock token.

Every call may wait on the disk (sqlite). ``horizon`` (a shared one-element array of doubles,
``zcopy.server.shared.lock_horizon``) holds the latest expiry of any live lock: every change stores it
inside its own write transaction (sqlite runs those one at a time, across processes), so it only
ever lags a change that has not committed yet. A request at a time past it needs no lock lookup at
all (``may_exist``): the common case, a server where nobody holds a lock, reads no sqlite.
``generation_word``, stored the same way, is the table's generation after the change; ``live`` keeps
the live locks in memory, read again (one query) only when the word moved, so the checks before a
write read no sqlite either while the table does not change (``covering_in``, ``beneath_in``).
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass

INFINITY = -1
DEFAULT_TIMEOUT = 3600
MAX_TIMEOUT = 7 * 24 * 3600
TOKEN_PREFIX = "urn:uuid:"

# The table is made by migration 2 in zcopy/server/state.py (its columns are described there).


class LockError(Exception):
    """A lock request that cannot be granted: ``status`` is what to answer (423 Locked, 409, 412)."""

    def __init__(self, status: int, message: str, conflicts: tuple = ()) -> None:
        super().__init__(message)
        self.status = status
        self.conflicts = conflicts


@dataclass(frozen=True, slots=True)
class Lock:
    token: str
    root: str
    depth: int
    exclusive: bool
    owner: bytes
    principal: str
    timeout: int
    expires: float

    def covers(self, path: str) -> bool:
        return path == self.root or (self.depth == INFINITY and _beneath(path, self.root))

    def remaining(self, now: float) -> int:
        return max(0, int(self.expires - now))


def normalise(path: str) -> str:
    return "/" + "/".join(s for s in path.split("/") if s)


def _beneath(path: str, root: str) -> bool:
    return root == "/" or path.startswith(root + "/")


def parse_timeout(value: str | None) -> int:
    """The Timeout header (``Second-N`` or ``Infinite``, a list: the first we understand), capped."""
    if not value:
        return DEFAULT_TIMEOUT
    for item in value.split(","):
        item = item.strip()
        if item.lower() == "infinite":
            return MAX_TIMEOUT
        if item.lower().startswith("second-") and item[7:].isdigit():
            return max(1, min(int(item[7:]), MAX_TIMEOUT))
    return DEFAULT_TIMEOUT


def _row(r) -> Lock:
    return Lock(r[0], r[1], r[2], bool(r[3]), bytes(r[4]), r[5], r[6], r[7])


_COLUMNS = "token, root, depth, exclusive, owner, principal, timeout, expires"


class LockTable:
    def __init__(self, state, horizon=None, generation_word=None) -> None:
        self.state = state
        if horizon is None:
            horizon = memoryview(bytearray(8)).cast("d")
            horizon[0] = float("inf")
        self.horizon = horizon
        self.generation_word = generation_word if generation_word is not None else \
            memoryview(bytearray(8)).cast("Q")
        #: (the table's generation, every lock by root) as last read: one tuple, replaced whole, so a
        #: reader on another thread (a check off the loop) never pairs a generation with older locks
        self._live: tuple[int, dict[str, list[Lock]]] = (-1, {})

    def live(self) -> dict[str, list[Lock]]:
        """Every lock in the table by root (expired ones too: ``covering_in`` and ``beneath_in`` drop them), from
        memory while the shared generation word has not moved since they were read; else read again,
        with the generation, in one statement (one consistent snapshot). A snapshot read before a
        change committed carries the older generation, so it is read again until it has caught up.
        Safe on any thread (the loop, or an executor thread checking a resumable upload's commit)."""
        generation, live = self._live
        if generation != self.generation_word[0]:
            rows = self.state.query(
                f"SELECT m.value, {', '.join('l.' + c.strip() for c in _COLUMNS.split(','))} FROM "
                "(SELECT value FROM meta WHERE key = 'lock_generation') AS m LEFT JOIN locks AS l")
            live = {}
            for r in rows:
                if r[1] is not None:
                    lk = _row(r[1:])
                    live.setdefault(lk.root, []).append(lk)
            self._live = (int(rows[0][0]) if rows else 0, live)
        return live

    def may_exist(self, now: float) -> bool:
        """False when no lock can be live at ``now`` (one read of shared memory, no sqlite)."""
        return now < self.horizon[0]

    def _settle(self, db) -> None:
        """Store the horizon (inside a write transaction, after its changes)."""
        latest = db.execute("SELECT max(expires) FROM locks").fetchone()[0]
        generation = db.execute("SELECT value FROM meta WHERE key = 'lock_generation'").fetchone()
        self.generation_word[0] = int(generation[0]) if generation else 0
        self.horizon[0] = float(latest) if latest is not None else 0.0

    # -- reading --------------------------------------------------------------

    def generation(self) -> int:
        value = self.state.meta("lock_generation")
        return int(value) if value else 0

    def covering(self, path: str, now: float) -> list[Lock]:
        """Live locks that cover ``path``: on it, or depth infinity on an ancestor."""
        path = normalise(path)
        ancestors = _ancestors(path)
        marks = ",".join("?" * len(ancestors))
        rows = self.state.query(f"SELECT {_COLUMNS} FROM locks WHERE expires > ? AND (root = ? OR "
                                f"(depth = -1 AND root IN ({marks})))", (now, path, *ancestors))
        return [_row(r) for r in rows]

    def beneath(self, path: str, now: float) -> list[Lock]:
        """Live locks rooted strictly beneath ``path``."""
        path = normalise(path)
        prefix = "/" if path == "/" else path + "/"
        rows = self.state.query(f"SELECT {_COLUMNS} FROM locks WHERE expires > ? AND substr(root, 1, ?) = ? "
                                "AND root != ?", (now, len(prefix), prefix, path))
        return [_row(r) for r in rows]

    def missing_tokens(self, path: str, submitted: set[str], principal: str, now: float, *,
                       recursive: bool = False) -> list[Lock]:
        """Locks that stop a write to ``path``: those covering it (and, when ``recursive``, those beneath
        it) whose token was not submitted by the principal that owns them."""
        locks = self.covering(path, now) + (self.beneath(path, now) if recursive else [])
        return [lk for lk in locks if lk.token not in submitted or lk.principal != principal]

    # -- changing -------------------------------------------------------------

    def lock(self, path: str, *, depth: int, exclusive: bool, owner: bytes, principal: str, timeout: int,
             now: float) -> Lock:
        path = normalise(path)
        with self.state.transaction() as db:
            ancestors = _ancestors(path)
            marks = ",".join("?" * len(ancestors))
            rows = db.execute(f"SELECT {_COLUMNS} FROM locks WHERE expires > ? AND (root = ? OR "
                              f"(depth = -1 AND root IN ({marks})))", (now, path, *ancestors)).fetchall()
            if depth == INFINITY:
                prefix = "/" if path == "/" else path + "/"
                rows += db.execute(f"SELECT {_COLUMNS} FROM locks WHERE expires > ? AND substr(root, 1, ?) = ? "
                                   "AND root != ?", (now, len(prefix), prefix, path)).fetchall()
            conflicts = tuple(lk for lk in map(_row, rows) if lk.exclusive or exclusive)
            if conflicts:
                raise LockError(423, "the resource is locked", conflicts)
            token = TOKEN_PREFIX + str(uuid.UUID(bytes=os.urandom(16), version=4))
            lk = Lock(token, path, depth, exclusive, owner, principal, timeout, now + timeout)
            db.execute(f"INSERT INTO locks ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (lk.token, lk.root, lk.depth, int(lk.exclusive), lk.owner, lk.principal, lk.timeout,
                        lk.expires))
            _bump(db)
            self._settle(db)
        return lk

    def refresh(self, path: str, submitted: set[str], principal: str, timeout: int, now: float) -> Lock:
        """RFC 4918 9.10.2: a LOCK without a body renews the lock whose token the If header names."""
        for lk in self.covering(path, now):
            if lk.token in submitted and lk.principal == principal:
                with self.state.transaction() as db:
                    db.execute("UPDATE locks SET timeout = ?, expires = ? WHERE token = ?",
                               (timeout, now + timeout, lk.token))
                    _bump(db)
                    self._settle(db)
                return Lock(lk.token, lk.root, lk.depth, lk.exclusive, lk.owner, lk.principal, timeout,
                            now + timeout)
        raise LockError(412, "no lock of yours on this resource is named in the If header")

    def unlock(self, path: str, token: str, principal: str, now: float) -> None:
        """RFC 4918 9.11: the Request-URI must be in the lock's scope; 409 otherwise."""
        for lk in self.covering(path, now):
            if lk.token == token:
                if lk.principal != principal:
                    raise LockError(403, "this lock belongs to someone else")
                with self.state.transaction() as db:
                    db.execute("DELETE FROM locks WHERE token = ?", (token,))
                    _bump(db)
                    self._settle(db)
                return
        raise LockError(409, "no such lock on this resource")

    def removed(self, path: str) -> None:
        """The resource at ``path`` (and what was beneath it) is gone (DELETE, the source of a MOVE):
        its locks go with it (RFC 4918 9.6, 9.9.2: locks do not move)."""
        path = normalise(path)
        prefix = "/" if path == "/" else path + "/"
        with self.state.transaction() as db:
            db.execute("DELETE FROM locks WHERE root = ? OR substr(root, 1, ?) = ?", (path, len(prefix), prefix))
            _bump(db)
            self._settle(db)

    def sweep(self, now: float) -> int:
        with self.state.transaction() as db:
            n = db.execute("DELETE FROM locks WHERE expires <= ?", (now,)).rowcount
            if n:
                _bump(db)
            self._settle(db)
        return n


def covering_in(live: dict[str, list[Lock]], path: str, now: float) -> list[Lock]:
    """``LockTable.covering`` over the locks in memory (``LockTable.live``): a dict lookup per
    ancestor."""
    path = normalise(path)
    found = [lk for lk in live.get(path, ()) if lk.expires > now]
    for root in _ancestors(path):
        found += [lk for lk in live.get(root, ()) if lk.depth == INFINITY and lk.expires > now]
    return found


def beneath_in(live: dict[str, list[Lock]], path: str, now: float) -> list[Lock]:
    """``LockTable.beneath`` over the locks in memory."""
    path = normalise(path)
    return [lk for root, locks in live.items() if root != path and _beneath(root, path)
            for lk in locks if lk.expires > now]


def _ancestors(path: str) -> list[str]:
    """Every proper ancestor of a normalised path: '/a/b/c' -> ['/', '/a', '/a/b']."""
    segs = [s for s in path.split("/") if s]
    return ["/"] + ["/" + "/".join(segs[:i]) for i in range(1, len(segs))] if segs else []


def _bump(db) -> None:
    db.execute("INSERT INTO meta VALUES ('lock_generation', '1') ON CONFLICT(key) DO UPDATE "
               "SET value = CAST(value AS INTEGER) + 1")
