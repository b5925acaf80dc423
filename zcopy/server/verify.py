"""Password checks off the event loop: a few threads, a bounded queue, an eventfd.

An argon2 check takes 0.1-0.2 s of CPU by design (docs/accounts.md); run on the loop it would stall
every connection of the worker for that long. ``Verifier.submit(fn, then)`` queues ``fn`` for one of
``threads`` threads; when it has run, the worker's loop (woken through ``fileno()``, an eventfd in its
epoll set) calls ``run_callbacks()``, which calls ``then(result, error)`` on the loop thread. At most
``threads`` checks run at once and ``queue`` wait; beyond that ``submit`` returns False and the caller
answers 503 with Retry-After: a flood of sign-ins costs bounded CPU and memory, and never the loop.

argon2-cffi releases the GIL while it hashes, so the loop keeps serving meanwhile. The shape is the
executor's (``submit`` then a callback on the loop), so these jobs can move onto it; the cap stays.
"""

from __future__ import annotations

import collections
import os
import threading

THREADS = 2
QUEUE = 16


class Verifier:
    def __init__(self, threads: int = THREADS, queue: int = QUEUE) -> None:
        self.limit = threads + queue
        self._efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._lock = threading.Condition()
        self._todo: collections.deque = collections.deque()
        self._done: list = []
        self._busy = 0              # jobs queued or running (loop thread only)
        self._closing = False
        self._threads = [threading.Thread(target=self._run, name=f"zcopy-verify-{i}", daemon=True)
                         for i in range(threads)]
        for t in self._threads:
            t.start()

    def fileno(self) -> int:
        return self._efd

    def submit(self, fn, then) -> bool:
        """Queue ``fn()``; ``then(result, error)`` runs on the loop once it has. False: full."""
        if self._busy >= self.limit:
            return False
        self._busy += 1
        with self._lock:
            self._todo.append((fn, then))
            self._lock.notify()
        return True

    def run_callbacks(self) -> None:
        """On the loop thread, when ``fileno()`` is readable."""
        try:
            os.eventfd_read(self._efd)
        except BlockingIOError:
            pass
        with self._lock:
            done, self._done = self._done, []
        for then, result, error in done:
            self._busy -= 1
            then(result, error)

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._todo and not self._closing:
                    self._lock.wait()
                if self._closing:
                    return
                fn, then = self._todo.popleft()
            result = error = None
            try:
                result = fn()
            except Exception as exc:       # handed to the loop, which answers 500 for it
                error = exc
            with self._lock:
                self._done.append((then, result, error))
            os.eventfd_write(self._efd, 1)

    def close(self) -> None:
        with self._lock:
            self._closing = True
            self._todo.clear()
            self._lock.notify_all()
        for t in self._threads:
            t.join(timeout=5)
        os.close(self._efd)
