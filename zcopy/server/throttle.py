"""Failed sign-ins per client address, shared by every worker through the state database.

``Access`` keeps a ``Throttle`` per process: a fast first check on the loop. With several workers a
guesser spread over their connections would get ``FAILURES_ALLOWED`` tries per worker, so the counts
also live in the ``throttle`` table of the state database (``zcopy.server.state``, migration 4),
which every worker shares. That table is read and written only inside the verification job, on a
verifier thread (``zcopy.server.verify``), never on the loop: ``SharedThrottle.job`` wraps a password
check with "is this address held?" before it and "count the failure / clear the count" after it.

The rule is the per-process one: ``allowed`` failures within ``window`` seconds hold the address until
the window ends; a success clears its count. Times are Unix time (the workers share no monotonic
clock). A database error (busy beyond its timeout, a full disk) is not a reason to refuse a sign-in:
the check runs and the per-process throttle still holds.
"""

from __future__ import annotations

import sqlite3
import time

from zcopy.server.access import FAILURE_WINDOW, FAILURES_ALLOWED


class Held:
    """The job's answer when the address is held: no password was checked."""

    __slots__ = ("retry_after",)

    def __init__(self, retry_after: float) -> None:
        self.retry_after = retry_after


class SharedThrottle:
    def __init__(self, state, allowed: int = FAILURES_ALLOWED, window: float = FAILURE_WINDOW) -> None:
        self.state = state
        self.allowed = allowed
        self.window = window

    def job(self, check, addr: str):
        """Run on a verifier thread: ``Held`` when ``addr`` is held, else the finished ``check``."""
        now = time.time()
        try:
            wait = self.blocked_for(addr, now)
        except sqlite3.Error:
            wait = 0.0
        if wait:
            return Held(wait)
        check.run()
        try:
            if check.ok:
                self.succeeded(addr)
            else:
                self.failed(addr, now)
        except sqlite3.Error:
            pass
        return check

    def blocked_for(self, addr: str, now: float) -> float:
        rows = self.state.query("SELECT failures, since FROM throttle WHERE addr = ?", (addr,))
        if rows:
            failures, since = rows[0]
            if failures >= self.allowed and now - since < self.window:
                return self.window - (now - since)
        return 0.0

    def failed(self, addr: str, now: float) -> None:
        with self.state.transaction() as db:
            db.execute("DELETE FROM throttle WHERE since < ?", (now - self.window,))   # windows that ended
            db.execute("INSERT INTO throttle (addr, failures, since) VALUES (?, 1, ?) "
                       "ON CONFLICT(addr) DO UPDATE SET failures = failures + 1", (addr, now))

    def succeeded(self, addr: str) -> None:
        with self.state.transaction() as db:
            db.execute("DELETE FROM throttle WHERE addr = ?", (addr,))
