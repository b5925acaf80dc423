"""A probe's client side in a child process, on another CPU than the probe's when it can be.

A server's clients run elsewhere than the server, and where the receiving side of a loopback
measurement runs changes what the sender pays (pages freed on another CPU, wakeups across
CPUs), so the probes that time a sender put the receiver in a child process on another CPU of
the machine: outside this process's affinity if need be (a server started under
``taskset -c 0`` still has its clients elsewhere), unless a cpuset forbids it. The sender then
stays on one CPU of its own for the scope's life.

``Child`` forks it, with two pipes: orders to the child, answers from it. The child runs
``body(ask_read_fd, answer_write_fd, moved)`` (``moved``: it runs on another CPU) and exits with
what it returns; the first byte it answers (before ``body`` runs) says where it landed. The scope's end closes the order pipe and kills
and reaps the child (a time bound may have struck mid-order).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
from typing import Callable

from probes.resources import Resources, uninterrupted

TIMEOUT_MS = 10000


class Child:
    """``ask`` writes to the child's order pipe, ``answer`` is the read end of its answers, and
    ``where`` is "other_cpu" or "same_cpu" (no other CPU, or a cpuset forbade it). ``close`` (a
    socket or fd object of the parent's) is closed in the child first; ``handed`` (one the child
    now owns) is closed in the parent once the child runs."""

    def __init__(self, res: Resources, body: Callable[[int, int, bool], int], close=(), handed=()) -> None:
        mine = min(os.sched_getaffinity(0))
        others = [cpu for cpu in range(os.cpu_count() or 1) if cpu != mine]
        with uninterrupted():
            ask_r, self.ask = os.pipe2(os.O_CLOEXEC)
            self.answer, answer_w = os.pipe2(os.O_CLOEXEC)
            res.fd(self.answer)
            try:
                pid = os.fork()
            except BaseException:
                for fd in (ask_r, self.ask, answer_w):
                    os.close(fd)
                raise
            if pid == 0:                                    # the child: never returns
                code = 1
                try:
                    for obj in close:
                        obj.close()
                    os.close(self.ask)
                    os.close(self.answer)
                    moved = False
                    for cpu in others:
                        try:
                            os.sched_setaffinity(0, {cpu})
                        except OSError:
                            continue
                        moved = True
                        break
                    os.write(answer_w, b"o" if moved else b"s")
                    code = body(ask_r, answer_w, moved)
                finally:
                    os._exit(code)
            os.close(ask_r)
            os.close(answer_w)
            res.callback(_stop, self.ask, pid)
        for obj in handed:
            obj.close()
        if not wait_for(self.answer, select.POLLIN):
            raise ChildGone("the receiver did not start")
        self.where = "other_cpu" if os.read(self.answer, 1) == b"o" else "same_cpu"
        if self.where == "other_cpu":                       # the sender on one CPU of its own
            res.callback(os.sched_setaffinity, 0, os.sched_getaffinity(0))
            os.sched_setaffinity(0, {mine})


class ChildGone(Exception):
    """The child did not start or stopped answering."""


def wait_for(fd: int, events: int, timeout_ms: int = TIMEOUT_MS) -> bool:
    """Whether ``fd`` became ready for ``events`` within ``timeout_ms``."""
    p = select.poll()
    p.register(fd, events)
    return bool(p.poll(timeout_ms))


def _stop(ask: int, pid: int) -> None:
    """Close the child's order pipe and end it (it holds nothing to finish)."""
    os.close(ask)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
