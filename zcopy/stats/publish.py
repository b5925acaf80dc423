"""Publishing: a worker's snapshot, written to its file once a second.

``Publisher`` is the whole writer side, and is the same for every kind of
server (``serve``, ``relay``): give it the kind and a function returning the
worker's snapshot as plain data, and call ``publish()`` from the loop's
once-a-second tick. A write is ``json.dumps`` plus write-to-temp + rename in a
tmpfs folder, so readers never see half a file and the hot path never sees
the publisher at all.

Publishing is best effort: a full or missing runtime folder must not stop a
server, so failures are remembered (``failures``) and retried next tick.
A worker out of file descriptors (EMFILE) is exactly when its snapshot
matters most, so the publisher holds one spare fd (``/dev/null``) and gives
it up for the moment of a write that finds none left.
``ZCOPY_STATS=off`` in the environment turns publishing off (the stats-cost
benchmark compares both).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import time
from typing import Callable

from zcopy.stats.location import ensure_runtime_dir, group_dir


def enabled() -> bool:
    return os.environ.get("ZCOPY_STATS", "on").lower() not in ("off", "0", "no")


class Publisher:
    """Writes ``snapshot_fn()`` to ``<runtime>/<kind>-<group_pid>/worker-<slot>.json``.

    ``group_pid`` is the supervisor's pid (default: our parent, since workers
    are forked by it); a replacement worker for the same slot takes the file
    over. ``close()`` removes the file (and the folder once it is empty).
    """

    def __init__(self, kind: str, snapshot_fn: Callable[[], dict], *, slot: int = 0,
                 group_pid: int | None = None) -> None:
        self.kind = kind
        self.snapshot_fn = snapshot_fn
        self.slot = slot
        self.group_pid = os.getppid() if group_pid is None else group_pid
        self.dir = group_dir(kind, self.group_pid)
        self.path = os.path.join(self.dir, f"worker-{slot}.json")
        self.enabled = enabled()
        self.failures = 0
        self.closed = False
        self._spare = self._reserve() if self.enabled else -1

    def publish(self) -> bool:
        """Write a fresh snapshot now. False if it could not be written."""
        if not self.enabled or self.closed:
            return False
        snap = self.snapshot_fn()
        snap.update(kind=self.kind, slot=self.slot, pid=os.getpid(), group=self.group_pid,
                    published=time.time())
        data = json.dumps(snap, separators=(",", ":")).encode()
        try:
            self._write(data)
        except FileNotFoundError:       # folder removed under us (a sibling closed last): once more
            try:
                self._write(data)
            except OSError:
                self.failures += 1
                return False
        except OSError:
            self.failures += 1
            return False
        return True

    def _write(self, data: bytes) -> None:
        if not os.path.isdir(self.dir):
            ensure_runtime_dir()
            os.makedirs(self.dir, 0o700, exist_ok=True)
        tmp = f"{self.path}.{os.getpid()}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
        try:
            fd = os.open(tmp, flags, 0o600)
        except OSError as exc:
            if exc.errno not in (errno.EMFILE, errno.ENFILE) or self._spare < 0:
                raise
            os.close(self._spare)       # reopened once this write's own fd is closed again
            try:
                fd = os.open(tmp, flags, 0o600)
            finally:
                self._spare = -1
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        if self._spare < 0:
            self._spare = self._reserve()

    @staticmethod
    def _reserve() -> int:
        try:
            return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return -1

    def close(self) -> None:
        """Withdraw this worker's snapshot; remove the folder if it was the last."""
        if self.closed:
            return
        self.closed = True
        if self._spare >= 0:
            os.close(self._spare)
            self._spare = -1
        if not self.enabled:
            return
        for path in (self.path, f"{self.path}.{os.getpid()}.tmp"):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        try:
            os.rmdir(self.dir)
        except OSError:
            pass   # siblings still publishing, or already gone


def remove_group(kind: str, pid: int | None = None) -> None:
    """For a supervisor on its way out: remove its whole folder, including
    the files of workers that were killed before they could close."""
    shutil.rmtree(group_dir(kind, os.getpid() if pid is None else pid), ignore_errors=True)
