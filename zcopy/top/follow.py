"""Which server the dashboard shows, and what to say when there is none.

With an explicit target (``--pid``, ``--socket``) we follow that one; with
none we follow the only live server of this user, and after it goes away,
the next one that appears alone. Every outcome is a line of text for the
screen, never an exception: a server stopping under ``zcopy top`` is news,
not an error.
"""

from __future__ import annotations

import os
import time

from zcopy.stats import Target, discover, read_all, target_from_path


class Several(Exception):
    """More than one server runs and none was named."""

    def __init__(self, targets: list[Target]) -> None:
        super().__init__(f"{len(targets)} zcopy servers are running")
        self.targets = targets


class Follow:
    def __init__(self, pid: int | None = None, path: str | None = None) -> None:
        self.pid = pid
        self.fixed = target_from_path(path) if path else None
        self.target: Target | None = self.fixed
        self.lost_at: float | None = None
        self.generation = 0        # bumped on every (re)attach: history must restart

    def read(self) -> tuple[dict | None, str]:
        """(aggregated snapshot or None, notice for the screen)."""
        if self.target is None or (self.fixed is None and self.lost_at is not None):
            found = self._find()
            if found is None:
                return None, self._waiting()
            if found != self.target or self.lost_at is not None:
                self.generation += 1
            self.target, self.lost_at = found, None
        snap = read_all(self.target)
        if snap is None:
            if self.lost_at is None:
                self.lost_at = time.time()
            return None, self._waiting()
        if self.lost_at is not None:
            self.generation += 1
        self.lost_at = None
        return snap, ""

    def _find(self) -> Target | None:
        if self.fixed is not None:
            return self.fixed
        live = discover()
        if self.pid is not None:
            return next((t for t in live if t.pid == self.pid), None)
        if len(live) > 1:
            raise Several(live)
        return live[0] if live else None

    def _waiting(self) -> str:
        return f"{self.absent()}; waiting for {'it' if self.fixed or self.pid else 'one'}..."

    def absent(self) -> str:
        """One line: why there is nothing to show."""
        if self.lost_at is not None and self.target is not None:
            when = time.strftime("%H:%M:%S", time.localtime(self.lost_at))
            return f"server {self.target.name} went away at {when}"
        if self.fixed is not None:
            return f"nothing is published at {self.fixed.path}"
        if self.pid is not None:
            return f"no zcopy server with pid {self.pid} is running"
        return f"no zcopy server of uid {os.getuid()} is running"
