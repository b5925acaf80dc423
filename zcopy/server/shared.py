"""Memory the supervisor shares with the processes it forks.

One anonymous ``MAP_SHARED`` mapping, created by the supervisor before its
first fork and inherited by every worker and the metrics process. It holds
three plain arrays, each word written by one process only (no locks, and a
process killed mid-write cannot leave anything held):

- ``phase``: written by the supervisor: serving, or draining (``/readyz``
  answers 503 from the first SIGTERM on, through the lame-duck delay and the
  drain).
- ``beats[slot]``: the monotonic time of the slot's worker's last loop turn,
  written by that worker once per turn (one float store); the supervisor
  replaces a worker whose beat is older than ``--worker-timeout``.
- ``lock_until``: WebDAV's lock horizon, a time after which no lock in the
  state database is live (0: none at all; inf: not known yet). It is
  written inside each write transaction of the lock table, which sqlite
  runs one at a time across processes, so the stores come in the order of
  the changes they describe (``zcopy.dav.locks``). A write whose time is
  past it is decided with no sqlite read. ``lock_generation``, stored the
  same way, is the table's generation after that change: a worker keeps
  the live locks in memory while it has not moved.
- ``generations[g]``: how many successful writes (PUT, DELETE, MOVE, MKCOL)
  the worker holding generation slot ``g`` has answered, and ``last_write``,
  a value no write has used before, set by each write. Every worker reads
  ``last_write`` once per request; when it moved, and the array shows that
  another worker wrote, the cached resolutions are re-validated before they
  are trusted again (see ``Generation``). Each live process has its own slot
  (the supervisor hands them out), so no increment is lost to a concurrent
  writer and no two writes set ``last_write`` to the same value.

``CLOCK_MONOTONIC`` is one clock for the whole machine, so a beat written by
one process can be compared with the time read in another.
"""

from __future__ import annotations

import functools
import math
import mmap
import operator

SERVING = 0
DRAINING = 1


class SharedState:
    """The supervisor's handle; forked children use the same object."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        #: a worker per slot, the ones retiring after a reload, and spares
        self.generation_slots = 4 * workers + 4
        end = 16 + 8 * workers + 8 * self.generation_slots
        self._mm = mmap.mmap(-1, end + 16)  # anonymous: MAP_SHARED, survives fork
        view = memoryview(self._mm)
        self._phase = view[0:8].cast("Q")
        self.last_write = view[8:16].cast("Q")
        self.beats = view[16:16 + 8 * workers].cast("d")
        self.generation_span = (16 + 8 * workers, end)
        self.generations = view[16 + 8 * workers:end].cast("Q")
        #: WebDAV: no lock lives after this time (see ``lock_horizon``); inf until a worker has read the table.
        self.lock_until = view[end:end + 8].cast("d")
        self.lock_until[0] = math.inf
        #: WebDAV: the lock table's generation as of its last change (``lock_horizon``).
        self.lock_generation = view[end + 8:end + 16].cast("Q")
        self._free = list(range(self.generation_slots))
        self._held: dict[int, int] = {}    # pid -> generation slot

    @property
    def phase(self) -> int:
        return self._phase[0]

    @phase.setter
    def phase(self, value: int) -> None:
        self._phase[0] = value

    # -- supervisor side ---------------------------------------------------------

    def take_generation_slot(self) -> int:
        """A generation slot no live process writes (the supervisor, before a
        fork). A reaped child gives its slot back before its replacement is
        forked, and a reload waits while too few are free (``free_slots``)."""
        return self._free.pop()

    def free_slots(self) -> int:
        return len(self._free)

    def hold(self, pid: int, slot: int) -> None:
        self._held[pid] = slot

    def release(self, pid: int) -> None:
        """A child was reaped: its generation slot (with its count) can be reused."""
        slot = self._held.pop(pid, None)
        if slot is not None and slot not in self._free:
            self._free.append(slot)


class Generation:
    """A worker's view of the write generations.

    ``bump()`` after each successful write; ``changed()`` once per request:
    True when another worker wrote since the last call (a worker's own writes
    do not count: it invalidated precisely what it wrote).

    The common case reads one word: ``last``, which every writer sets to a
    value never used before (its slot's new count and its slot number) after
    bumping its slot. (The responder reads ``last[0]`` itself, and calls
    ``changed`` only when it moved: ``Responder.respond``.) Only when ``last`` moved is the per-slot array compared
    with the copy seen before, to tell another worker's write from our own.
    A writer bumps its slot before it sets ``last`` (x86 and the kernel's
    memory model keep plain stores in order across processes), so whoever
    sees the new ``last`` sees the bumped slot.
    """

    __slots__ = ("last", "_mm", "_span", "_mine", "_slot", "_seen", "_snap", "_own")

    def __init__(self, shared: SharedState | None = None, slot: int = 0) -> None:
        if shared is None:                 # a worker built without a supervisor (tests, tools)
            shared = SharedState(1)
        self.last = shared.last_write
        self._mm = shared._mm
        self._span = slice(*shared.generation_span)
        self._mine = shared.generations
        self._slot = slot
        self._seen = self.last[0]
        self._snap = self._mm[self._span]
        self._own = slice(8 * slot, 8 * slot + 8)

    def changed(self) -> bool:
        last = self.last[0]
        if last == self._seen:
            return False
        self._seen = last
        snap, self._snap = self._snap, self._mm[self._span]
        own = self._own
        return snap[:own.start] != self._snap[:own.start] or snap[own.stop:] != self._snap[own.stop:]

    def bump(self) -> None:
        """This worker answered a write: the others must re-validate."""
        count = self._mine[self._slot] + 1
        self._mine[self._slot] = count
        self.last[0] = (count << 16) | self._slot


#: Set in a forked child by the supervisor (``enter``): the shared state and this
#: process's worker slot and generation slot. None in a process not forked by it.
_inherited: tuple[SharedState, int, int] | None = None


def enter(shared: SharedState, slot: int, generation_slot: int) -> None:
    global _inherited
    _inherited = (shared, slot, generation_slot)


def inherited() -> tuple[SharedState, int, int] | None:
    return _inherited


def heartbeat(slot: int):
    """``beat(now)`` for this process's worker slot: one store into shared
    memory (a private no-op array when there is no supervisor). The loop
    calls it every turn: a ``partial`` of ``operator.setitem`` runs no Python
    frame."""
    state = _inherited
    beats = state[0].beats if state is not None else memoryview(bytearray(8 * (slot + 1))).cast("d")
    index = state[1] if state is not None else slot
    return functools.partial(operator.setitem, beats, index)


def generation() -> Generation:
    state = _inherited
    if state is None:
        return Generation()
    return Generation(state[0], state[2])


def lock_horizon():
    """(``lock_until``, ``lock_generation``): the shared words (one-element arrays), or the
    process's own in a process not forked by the supervisor."""
    global _private_horizon
    state = _inherited
    if state is not None:
        return state[0].lock_until, state[0].lock_generation
    if _private_horizon is None:          # one per process: every lock table in it shares them
        until = memoryview(bytearray(8)).cast("d")
        until[0] = math.inf
        _private_horizon = until, memoryview(bytearray(8)).cast("Q")
    return _private_horizon


_private_horizon = None
