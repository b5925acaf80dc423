"""The one event loop every worker runs (``zcopy serve`` and ``zcopy relay``):
poll, dispatch, the ready queue, timers and the once-a-second tick, written
once here. A worker subclasses ``ListenerLoop`` and says only what is its
own: what an fd's events go to, what ``tick`` does, how a connection is
admitted and how the worker shuts down.

One turn of ``run``:

1. ``epoll_wait``, for no longer than the next tick or the nearest timer
   (0 when something is ready to run); then ``beat`` if the worker has one
   (serve: its heartbeat, which the supervisor watches for a stuck loop).
2. The ``first`` fd (serve: the file watch), if it is in the batch or the
   batch is full: its changes are applied before any other event of the
   batch is read, since epoll's order within a batch is not the order
   things happened in.
3. Dispatch: a connection's fd (``conns``: fd -> object with
   ``on_event(events)``) first, the hot path; anything else the loop or the
   worker registered (``handlers``: fd -> callable(events): the signal
   wakeup pipe, the listener, the prefetch pool's eventfd, ...).
4. Timers that are due: ``set_timer(when, obj)`` calls ``obj.on_timer(when)``
   (the relay's rate limits park a direction on one; nothing polls).
5. The ready queue: objects that used up their per-turn budget and yielded
   (``ready``) run again, after everyone else had their events. A turn whose
   only work is one such object (no event, a queue of one) runs it ``solo``:
   it may then ask ``alone()`` whether anything else waits and, if nothing
   does, go on in the same turn (serve: the next step of a transfer).
6. Once a second ``tick`` (timeouts, publishing stats, accept resumption,
   drain progress); ``end_of_turn`` if the worker has one (the relay writes
   the turn's log lines in one write).
7. While draining: stop once no connection is left.

Accept rules (both workers, tested in both):
- at most ``ACCEPT_BURST`` accepts per readiness event, so a flood of
  connections cannot starve the ones already open;
- at ``max_connections`` the listener leaves epoll until a connection ends
  (further clients wait in the kernel's backlog; the relay passes no limit
  and turns the excess away itself);
- on EMFILE it first asks ``give_back_fd`` (serve: the open-file cache
  closes its oldest entry no transfer uses) and accepts again with that fd;
- on EMFILE with nothing to give back, and on ENFILE/ENOBUFS/ENOMEM, it
  leaves epoll for ``ACCEPT_BACKOFF`` seconds instead of spinning on a
  listener that stays readable.

Signals: SIGTERM (or ``stop()`` from another thread) starts a graceful drain,
a second one raises SystemExit(1); SIGINT is ignored because the supervisor,
which the terminal also signals, forwards it as SIGTERM. The loop learns of a
signal from the wakeup pipe, which holds its number (``signal.set_wakeup_fd``
writes one byte per signal), never from a Python-level handler: the kernel may
deliver the signal on any thread (a prefetch or executor thread, say), and the
interpreter then runs the main thread's handler only at its next bytecode
boundary. The compiled loop (docs/hotpath.md) can poll, read the pipe and poll
again without one, and a flag set by that handler afterwards would wait for a
wakeup that has already been read. The handlers are no-ops that keep the
default action (termination) away.
"""

from __future__ import annotations

import errno
import functools
import heapq
import itertools
import os
import select
import signal
import socket
import sys
import time

from zcopy import hotpath

TICK = 1.0
#: Events taken per epoll_wait (Python's default, FD_SETSIZE - 1, made explicit).
MAX_EVENTS = 1023
#: What a connection's epoll events mean: readable (or an EOF/error to read),
#: writable (or an error a write will report), the peer's EOF pending.
EV_IN = select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLHUP | select.EPOLLERR
EV_OUT = select.EPOLLOUT | select.EPOLLHUP | select.EPOLLERR
EV_HUP = select.EPOLLRDHUP | select.EPOLLHUP | select.EPOLLERR
ACCEPT_BURST = 64
#: How long a solo turn may go on while ``alone()`` (serve: a transfer's further steps, some 30 of
#: 2 MiB at loopback speed): as long as timers, the tick and the beat may wait for it. Nothing else
#: waits meanwhile: any event, a neighbour's request included, ends the turn at the next step.
SOLO_TURN = 0.01
#: After EMFILE/ENFILE, stop polling the listener this long instead of spinning.
ACCEPT_BACKOFF = 0.25
_FD_EXHAUSTED = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
_SIGTERM_BYTE = bytes((signal.SIGTERM,))


#: ``zcopy.sockio.Poller`` (``select.epoll.poll`` in C) when the hot path runs compiled, else None.
_Poller = getattr(hotpath.extension("zcopy.sockio"), "Poller", None)


#: ``zcopy.sockio.events_waiting(epfd)`` when compiled, else None (``alone`` polls through a poll object).
_events_waiting = getattr(hotpath.extension("zcopy.sockio"), "events_waiting", None)


def poller(ep: select.epoll, first: int = -1):
    """``poll(timeout)`` of ``ep``, at most ``MAX_EVENTS`` a call, the event of fd ``first`` (if
    any) first in the list: ``zcopy.sockio.Poller``'s when compiled (the same list of pairs, ~0.2 µs
    a turn cheaper), else the epoll object's own."""
    if _Poller is not None:
        return _Poller(ep, MAX_EVENTS, first).poll
    if first < 0:
        return functools.partial(ep.poll, maxevents=MAX_EVENTS)

    def poll(timeout):
        events = ep.poll(timeout, MAX_EVENTS)
        for i, (fd, _) in enumerate(events):
            if fd == first:
                events[0], events[i] = events[i], events[0]
                break
        return events
    return poll


def _wakeup_only(signum, frame) -> None:
    """The Python-level handler of the loop's signals: the wakeup pipe carries them."""


class ListenerLoop:
    """Subclasses implement ``admit(sock, addr)``, ``connection_count()``,
    ``count_error(kind)``, ``tick()``, ``on_drain()`` and ``shutdown()``, set
    ``CLOSED`` (the state of a closed member of ``ready``), and put their
    connections' fds in ``conns``."""

    #: ``state`` of an object in ``ready`` that closed meanwhile (it is skipped).
    CLOSED: object = None
    #: The signals ``run()`` takes through the wakeup pipe (``on_signal`` gets all but SIGTERM).
    SIGNALS: tuple = (signal.SIGTERM,)

    def __init__(self, listener: socket.socket, max_connections: int) -> None:
        self.listener = listener
        self.max_connections = max_connections
        self.now = time.monotonic()
        self.accepting = False
        self.accept_resume_at = 0.0
        self.draining_since: float | None = None
        #: fd -> connection (``on_event(events)``): the hot path of the dispatch.
        self.conns: dict = {}
        #: fd -> callable(events) for everything else in the epoll set.
        self.handlers: dict = {}
        #: Objects to ``run()`` again this turn, after the events (they yielded).
        self.ready: list = []
        #: Heap of (when, seq, obj): ``obj.on_timer(when)`` once ``when`` has come.
        self.timers: list = []
        self._seq = itertools.count()
        self.first: tuple[int, int] | None = None    # (fd, EPOLLIN) read before its batch
        self.first_apply = None
        #: Called with the loop's clock once per turn, right after the poll (serve:
        #: the heartbeat the supervisor watches, zcopy.server.shared).
        self.beat = None
        self.end_of_turn = None
        self.ep = select.epoll()
        #: True while the turn's only work is one object of the ready queue (``alone``).
        self.solo = False
        self.epfd = self.ep.fileno()
        self._ep_poll = select.poll()           # the epoll fd's own readiness (``alone``, plain Python)
        self._ep_poll.register(self.epfd, select.POLLIN)
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.add_fd(self.wake_r, lambda events: self.drain_wakeups())
        self.handlers[listener.fileno()] = lambda events: self.accept_ready()

    # -- what subclasses provide ----------------------------------------------

    def admit(self, sock: socket.socket, addr) -> None:
        raise NotImplementedError

    def connection_count(self) -> int:
        raise NotImplementedError

    def give_back_fd(self) -> bool:
        """Out of fds at accept (EMFILE): close one that a cache holds and no
        transfer uses, so that a new client is served rather than refused
        while idle cached files keep the fds. False: nothing to give back
        (the loop then backs off). The serve worker's cache overrides it."""
        return False

    def count_error(self, kind: str) -> None:
        raise NotImplementedError

    def tick(self) -> None:
        """Once a second (and once at start): timeouts, stats, accept resumption."""

    def on_drain(self) -> None:
        """The listener is closed: tell idle connections to go."""

    def shutdown(self) -> None:
        """The loop ended: close what is left."""

    # -- what subclasses use ----------------------------------------------------

    def add_fd(self, fd: int, handler, first=None) -> None:
        """Poll ``fd`` for input and call ``handler(events)`` when it is ready.
        ``first``: a callable applied before the rest of any batch the fd is
        in (and of any full batch, which may have left it for the next poll)."""
        self.ep.register(fd, select.EPOLLIN)
        self.handlers[fd] = handler
        if first is not None:
            self.first, self.first_apply = (fd, select.EPOLLIN), first

    def alone(self) -> bool:
        """Nothing else waits on this worker: the caller runs ``solo`` (the turn had no event and
        no other object in the ready queue), nothing joined the queue since, the turn is younger
        than ``SOLO_TURN`` (timers, the tick and the beat wait meanwhile), and epoll holds no ready
        event. The last is a poll(2) of the epoll fd, which is readable while an event is ready and
        takes none (epoll(7)). An object that used up its turn's budget may then go on in the same
        turn instead of going round the loop, which costs a poll, the beat and the dispatch (serve:
        ``Connection._pump``, a 1 GiB pull's 2 MiB steps)."""
        if not self.solo or self.ready or time.monotonic() - self.now >= SOLO_TURN:
            return False
        if _events_waiting is not None:
            return not _events_waiting(self.epfd)
        return not self._ep_poll.poll(0)

    def set_timer(self, when: float, obj) -> None:
        """Call ``obj.on_timer(when)`` once the loop's clock reaches ``when``."""
        heapq.heappush(self.timers, (when, next(self._seq), obj))

    # -- the loop -------------------------------------------------------------

    def run(self, install_signals: bool = True) -> int:
        """Serve until drained. ``install_signals=False`` runs in a non-main
        thread (tests); stop it with ``stop()``."""
        old_wakeup = self.start(install_signals)
        self.tick()                                 # publish at once, not a second later
        next_tick = self.now + TICK
        conns, handlers, ready, timers = self.conns, self.handlers, self.ready, self.timers
        first = self.first
        poll, monotonic, closed = poller(self.ep, -1 if first is None else first[0]), time.monotonic, self.CLOSED
        first_apply, beat, end_of_turn = self.first_apply, self.beat, self.end_of_turn
        try:
            while True:
                if ready:
                    timeout = 0
                else:
                    timeout = (min(next_tick, timers[0][0]) if timers else next_tick) - self.now
                    if timeout < 0:
                        timeout = 0
                events = poll(timeout)
                now = self.now = monotonic()
                if beat is not None:
                    beat(now)
                if first is not None and events and (events[0] == first or len(events) >= MAX_EVENTS):
                    first_apply()                   # (the poll puts its event first)
                for fd, ev in events:
                    conn = conns.get(fd)
                    if conn is not None:
                        conn.on_event(ev)
                    else:
                        handler = handlers.get(fd)
                        if handler is not None:     # else: an fd closed earlier in this batch
                            handler(ev)
                while timers and timers[0][0] <= now:
                    when, _, obj = heapq.heappop(timers)
                    obj.on_timer(when)
                if ready:
                    batch = ready[:]
                    ready.clear()
                    self.solo = not events and len(batch) == 1
                    try:
                        for obj in batch:
                            if obj.state != closed:
                                obj.run()
                    finally:
                        self.solo = False
                if now >= next_tick:
                    next_tick = now + TICK
                    self.tick()
                if end_of_turn is not None:
                    end_of_turn()
                if self.draining_since is not None and not self.connection_count():
                    return 0
        finally:
            self.shutdown()
            self.finish(old_wakeup)

    # -- starting and stopping ------------------------------------------------

    def start(self, install_signals: bool = True):
        """Begin accepting; returns what ``finish`` needs to restore."""
        old_wakeup = None
        if install_signals:
            old_wakeup = signal.set_wakeup_fd(self.wake_w)
            for signum in self.SIGNALS:
                signal.signal(signum, _wakeup_only)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        self.listener.setblocking(False)
        self.resume_accept()
        return old_wakeup

    def finish(self, old_wakeup) -> None:
        if old_wakeup is not None:
            signal.set_wakeup_fd(old_wakeup)
        if self.listener.fileno() >= 0:
            self.listener.close()
        os.close(self.wake_r)
        os.close(self.wake_w)
        self.ep.close()

    def stop(self) -> None:
        """Ask the loop to drain, from any thread (a SIGTERM does the same)."""
        try:
            os.write(self.wake_w, _SIGTERM_BYTE)
        except OSError:
            pass

    def drain_wakeups(self) -> None:
        """The wakeup pipe is readable: act on the signals it names, one byte each."""
        got = b""
        try:
            while chunk := os.read(self.wake_r, 512):
                got += chunk
        except BlockingIOError:
            pass
        for signum in set(got):
            if signum != signal.SIGTERM:
                self.on_signal(signum)
        terms = got.count(_SIGTERM_BYTE)
        if terms:
            if self.draining_since is not None or terms > 1:
                raise SystemExit(1)         # second signal: stop now
            self.start_drain()

    def on_signal(self, signum: int) -> None:
        """One of ``SIGNALS`` other than SIGTERM came (subclasses: the worker's SIGUSR1)."""

    def start_drain(self) -> None:
        self.draining_since = self.now
        if self.accepting:
            self.ep.unregister(self.listener.fileno())
            self.accepting = False
        self.handlers.pop(self.listener.fileno(), None)     # the fd number may be reused
        self.listener.close()
        self.on_drain()

    def drain_overdue(self, drain_timeout: float) -> bool:
        return self.draining_since is not None and self.now - self.draining_since > drain_timeout

    # -- accepting ------------------------------------------------------------

    def accept_ready(self) -> None:
        """The listener is readable: accept a bounded burst. Not when it has
        left epoll (a drain or the connection limit) earlier in this batch of
        events: its readiness is stale, and after a drain its fd is closed."""
        if not self.accepting:
            return
        for _ in range(ACCEPT_BURST):
            if self.connection_count() >= self.max_connections:
                self.pause_accept(None)     # resumes when a connection ends
                return
            try:
                sock, addr = self.listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in _FD_EXHAUSTED:
                    self.count_error("accept_" + errno.errorcode[exc.errno].lower())
                    if exc.errno == errno.EMFILE and self.give_back_fd():
                        continue                # an fd of a cache was closed: accept with it
                    self.pause_accept(ACCEPT_BACKOFF)
                    return
                if exc.errno == errno.ECONNABORTED:
                    continue
                raise
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.admit(sock, addr)

    def pause_accept(self, seconds: float | None) -> None:
        if self.accepting:
            self.ep.unregister(self.listener.fileno())
            self.accepting = False
        self.accept_resume_at = self.now + seconds if seconds else 0.0

    def resume_accept(self) -> None:
        if not self.accepting and self.listener.fileno() >= 0:
            self.ep.register(self.listener.fileno(), select.EPOLLIN)
            self.accepting = True
            self.accept_resume_at = 0.0

    def connection_ended(self) -> None:
        """A connection closed: accept again if the limit had paused us."""
        if not self.accepting and self.draining_since is None and not self.accept_resume_at:
            self.resume_accept()

    def resume_after_backoff(self) -> None:
        """From the tick: accept again once an EMFILE backoff has passed."""
        if not self.accepting and self.draining_since is None and self.accept_resume_at and \
                self.now >= self.accept_resume_at:
            self.resume_accept()


def raise_fd_limit() -> None:
    """Lift the soft RLIMIT_NOFILE to the hard one, as nginx's
    worker_rlimit_nofile would: every connection holds a socket (a relayed one
    two sockets and, while busy, two pipes) and the open-file cache holds fds
    too. A process that must not use more can run under a lower hard limit."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def run_worker(make, *args) -> int:
    """Entry point body in a forked child: build and run a worker, turning a
    crash into a traceback and exit code 1 (the supervisor restarts it)."""
    try:
        return make(*args).run()
    except SystemExit as exc:
        return int(exc.code or 0)
    except Exception:
        import traceback

        traceback.print_exc(file=sys.stderr)
        return 1
