"""Off-loop work: what may block on the disk or burn CPU runs on threads here.

A worker's event loop must never wait for the disk: an ``fsync`` of a large
upload, a ``rename`` on a busy journal, ``scandir`` + ``stat`` of a folder of
50,000 entries, a recursive delete. Each of those is a ``Task`` submitted to
an ``Executor``; a thread runs it, and the loop learns that it finished
through an eventfd in its epoll set, then runs the task's callback *on the
loop thread*. Threads never touch a connection, the file cache or anything
else the loop owns: they compute a result (or an error) and hand it back.

    task = executor.submit(fn, *args)       # loop thread
    task.then(callback)                     # loop thread; callback(task) runs on it later
    ...                                     # thread: task.result = fn(*args) or task.error = exc
    executor.run_callbacks()                # loop thread, when epoll saw fileno() readable

The pool sizes itself by queue depth (up to ``max_threads``; idle threads
retire after ``idle_timeout`` down to ``min_threads``), as the prefetch pool
that it was grown from (``zcopy.server.prefetch.Pool`` is this class with
page-cache reads as its tasks). ``defer`` wraps the common case of a request
whose reply is computed off the loop: it returns a ``Pending`` (the seam of
``zcopy.server.reply``) that the connection waits on.

The GIL: a thread that computes in Python (rendering a listing) holds the GIL
while the loop thread waits for it at each syscall return, up to the
interpreter's switch interval each time (5 ms by default: a hot request
makes about four syscalls, so 20 ms a request while a listing is built). A
task submitted with ``cpu=True`` therefore lowers the process's switch
interval to ``SWITCH_INTERVAL`` while it runs, and the default comes back
when no such task is running. Not for every task: threads that mostly wait
in syscalls (fsync, prefetch reads) hardly hold the GIL (measured: a
prefetch thread used 10 ms of CPU per 512 MiB read), and a shorter interval
means more GIL hand-overs, each a wake-up that a loaded machine delays
(docs/serve.md, "Off the loop").
"""

from __future__ import annotations

import collections
import contextlib
import gc
import os
import sys
import threading
import traceback

MIN_THREADS = 1
MAX_THREADS = 8
IDLE_TIMEOUT = 10.0
#: Seconds the loop thread may wait for the GIL that a busy pool thread holds.
SWITCH_INTERVAL = 0.0005


class Task:
    """One piece of off-loop work. ``done``, ``result`` and ``error`` are set by
    the thread before the loop hears of it; ``callback`` runs on the loop."""

    __slots__ = ("fn", "args", "result", "error", "done", "cancelled", "callback", "cpu")

    def __init__(self, fn=None, args: tuple = (), cpu: bool = False) -> None:
        self.fn = fn
        self.args = args
        self.cpu = cpu              # computes in Python for long: see the module's GIL note
        self.result = None
        self.error: BaseException | None = None
        self.done = False           # set by the thread, read by the loop
        self.cancelled = False      # set by the loop: skip the work if not started
        self.callback = None

    def then(self, callback) -> "Task":
        """Call ``callback(task)`` on the loop thread once the task finished
        (set it before the loop next drains the executor: the loop runs it)."""
        self.callback = callback
        return self

    # The thread side; subclasses (prefetch.Job) add to these.
    def run(self) -> None:
        self.result = self.fn(*self.args)

    def fail(self, exc: Exception) -> None:
        self.error = exc

    def finish(self) -> None:
        """After ``run`` or ``fail``, on the thread: release what the task owns."""

    def discard(self) -> None:
        """Never ran: the executor closed first."""


class Executor:
    """Threads running ``Task``s; completions reach the loop through ``fileno()``."""

    THREAD_NAME = "zcopy-exec"

    def __init__(self, *, min_threads: int = MIN_THREADS, max_threads: int = MAX_THREADS,
                 idle_timeout: float = IDLE_TIMEOUT) -> None:
        self.min_threads = min_threads
        self.max_threads = max(1, max_threads)
        self.idle_timeout = idle_timeout
        self.efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._cv = threading.Condition()
        self._queue: collections.deque[Task] = collections.deque()
        self._threads: set[threading.Thread] = set()
        self._idle = 0
        self._stopping = False
        self._completed: collections.deque[Task] = collections.deque()
        self.peak = 0
        self.failed = 0
        self.submitted = 0

    def fileno(self) -> int:
        return self.efd

    @property
    def size(self) -> int:
        return len(self._threads)

    def submit(self, fn, *args, cpu: bool = False) -> Task:
        """Run ``fn(*args)`` on a thread; the Task says when and how it ended.
        ``cpu``: it computes in Python for long (a listing), not in syscalls."""
        return self.put(Task(fn, args, cpu))

    def put(self, task: Task) -> Task:
        with self._cv:
            self._queue.append(task)
            self.submitted += 1
            if len(self._queue) > self._idle and len(self._threads) < self.max_threads:
                t = threading.Thread(target=self._run, name=self.THREAD_NAME, daemon=True)
                self._threads.add(t)
                self.peak = max(self.peak, len(self._threads))
                t.start()
            else:
                self._cv.notify()
        return task

    def completed(self) -> list[Task]:
        """Tasks finished since the last call (loop thread; after epoll saw the eventfd)."""
        try:
            os.eventfd_read(self.efd)
        except BlockingIOError:
            pass
        done = self._completed
        return [done.popleft() for _ in range(len(done))]

    def run_callbacks(self) -> int:
        """Drain the finished tasks and run their callbacks (loop thread)."""
        tasks = self.completed()
        for task in tasks:
            if task.callback is not None:
                task.callback(task)
        return len(tasks)

    def _run(self) -> None:
        me = threading.current_thread()
        cv, queue = self._cv, self._queue
        while True:
            with cv:
                while not queue and not self._stopping:
                    self._idle += 1
                    woke = cv.wait(self.idle_timeout)
                    self._idle -= 1
                    if not woke and not queue and len(self._threads) > self.min_threads:
                        self._threads.discard(me)
                        return
                if self._stopping:
                    return
                task = queue.popleft()
            try:
                if not task.cancelled:
                    if task.cpu:
                        with _short_switches():
                            task.run()
                    else:
                        task.run()
            except Exception as exc:   # the task's own error (and a bug must still wake the loop)
                task.fail(exc)
                with cv:
                    self.failed += 1
            finally:
                task.finish()
                task.done = True
                self._completed.append(task)
                os.eventfd_write(self.efd, 1)

    def stopping(self) -> bool:
        """Whether ``close`` has begun: a long task may ask between steps and stop early."""
        return self._stopping

    def close(self) -> None:
        """Stop and join every thread (a task in progress finishes first),
        discard the tasks never started, close the eventfd."""
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
            threads = list(self._threads)
        for t in threads:
            t.join()
        self._threads.clear()
        while self._queue:
            self._queue.popleft().discard()
        self._completed.clear()
        if self.efd >= 0:
            os.close(self.efd)
            self.efd = -1

    def snapshot(self) -> dict:
        return {"submitted": self.submitted, "pool_size": self.size, "pool_peak": self.peak,
                "pool_max": self.max_threads, "failed": self.failed}


_switch_lock = threading.Lock()
_switch_users = 0
_switch_default = sys.getswitchinterval()


@contextlib.contextmanager
def _short_switches():
    """The process's GIL switch interval is SWITCH_INTERVAL while at least one
    CPU-bound task runs (any executor), the default otherwise."""
    global _switch_users, _switch_default
    with _switch_lock:
        if _switch_users == 0:
            _switch_default = sys.getswitchinterval()
            sys.setswitchinterval(min(SWITCH_INTERVAL, _switch_default))
        _switch_users += 1
    try:
        yield
    finally:
        with _switch_lock:
            _switch_users -= 1
            if _switch_users == 0:
                sys.setswitchinterval(_switch_default)


_gc_lock = threading.Lock()
_gc_users = 0
_gc_was_enabled = True


@contextlib.contextmanager
def collector_paused():
    """Python's cyclic garbage collector paused while at least one such block runs (any thread), for a
    build that makes tens of thousands of short-lived container objects and no cycle (a PROPFIND of
    a big folder: a stat result and a few tuples per member). Left running, those allocations
    trigger a young collection every 700 of them and, every few builds, a full collection of the
    worker's heap (20-35 ms measured in a worker, on the build's thread: docs/benchmarks.md). Cycles
    the loop makes meanwhile wait for the next collection after the block."""
    global _gc_users, _gc_was_enabled
    with _gc_lock:
        if _gc_users == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_users += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_users -= 1
            if _gc_users == 0 and _gc_was_enabled:
                gc.enable()


def refused(refuse, exc: Exception):
    """``refuse(exc)``, the error reply for what off-loop work (or its ``then``) raised. A ``refuse``
    that raises in turn (it re-raises what it does not know: a bug) answers this request a 500, as
    ``Connection.run`` does, instead of ending the worker and every connection on it: this runs on the
    loop, in the executor's callbacks."""
    try:
        return refuse(exc)
    except Exception:
        traceback.print_exc(file=sys.stderr)
        from zcopy import http

        return refuse(http.HttpError(500, "internal error", close=True))


def defer(executor: Executor | None, work, then, refuse, *, cpu: bool = False):
    """The reply of a request computed off the loop.

    ``work()`` runs on a thread (or at once without an executor; ``cpu``: it is
    CPU-bound, as ``Executor.submit`` says); on the loop,
    ``then(result)`` makes the Reply, or ``refuse(exc)`` makes the error reply
    for an exception raised by either. Returns a ``Pending`` that the
    connection waits on (or, without an executor, the Reply itself)."""
    from zcopy.server.reply import Pending

    if executor is None:
        try:
            return then(work())
        except Exception as exc:
            return refuse(exc)
    pending = Pending()

    def settle(task: Task) -> None:
        try:
            if task.error is not None:
                raise task.error
            reply = then(task.result)
        except Exception as exc:
            reply = refused(refuse, exc)
        pending.done(reply)

    executor.submit(work, cpu=cpu).then(settle)
    return pending
