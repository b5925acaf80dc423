"""One relay worker: one edge-triggered epoll loop over its SO_REUSEPORT listener.

The loop has the shape of ``zcopy.server.worker``: poll, dispatch events to
the socket's session, run sessions that used up their byte budget
(``ready``), fire rate-limit timers, and once a second ``tick`` (connect and
idle timeouts, accept resumption, drain progress). The poll timeout is the
nearer of the next tick and the next timer, so a parked direction wakes on
time without anyone spinning. Signals arrive through a wakeup pipe: SIGTERM
drains (no new connections; open ones finish within ``drain_timeout``), a
second SIGTERM stops at once. ``stop()`` asks the same from another thread.
"""

from __future__ import annotations

import errno
import heapq
import itertools
import os
import select
import signal
import socket
import sys
import time

from zcopy.engines.base import EngineStats
from zcopy.relay.bucket import Limiter, TokenBucket
from zcopy.relay.config import RelayConfig
from zcopy.relay.session import CLOSED, Session
from zcopy.relay.stats import ConnLog, RelayStats, record

TICK = 1.0
ACCEPT_BURST = 64
#: After EMFILE/ENFILE, stop polling the listener this long instead of spinning.
ACCEPT_BACKOFF = 0.25
_FD_EXHAUSTED = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
_SOCK_EVENTS = select.EPOLLIN | select.EPOLLOUT | select.EPOLLRDHUP | select.EPOLLET
#: Idle pipes (or buffers) a worker keeps for the next busy direction.
POOL_IDLE = 64


class RelayWorker:
    def __init__(self, config: RelayConfig, listener: socket.socket, index: int = 0,
                 publish: bool = False) -> None:
        self.config = config
        self.listener = listener
        self.index = index
        self.now = time.monotonic()
        self.ends: dict = {}                # fd -> session.End
        self.sessions = 0
        self.ready: list[Session] = []
        self.timers: list = []              # heap of (when, seq, session)
        self._seq = itertools.count()
        self.stats = RelayStats()
        self.engine_stats = EngineStats()
        self.pipe_pool = self.buffer_pool = None
        if config.engine == "splice":
            from zcopy.pipes import PipePool
            self.pipe_pool = PipePool(config.pipe_size, max_idle=POOL_IDLE)
        else:
            from zcopy.engines.buffers import BufferPool
            self.buffer_pool = BufferPool(config.pipe_size, max_idle=POOL_IDLE)
        rate = config.worker_rate
        self.bucket = TokenBucket(rate, self.now) if rate else None
        self.log = ConnLog(config.log)
        #: ``publish``: write stats_snapshot() once a second where ``zcopy top`` reads it.
        self.publisher = None
        if publish:
            from zcopy.stats.publish import Publisher
            self.publisher = Publisher("relay", self.stats_snapshot, slot=index)
        self.accepting = False
        self.accept_resume_at = 0.0
        self.draining_since: float | None = None
        self.signals: list[int] = []
        self.ep = select.epoll()
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.ep.register(self.wake_r, select.EPOLLIN)

    # -- what sessions call ---------------------------------------------------

    def new_channel(self):
        if self.pipe_pool is not None:
            from zcopy.relay.channels import SpliceChannel
            return SpliceChannel(self.pipe_pool)
        from zcopy.relay.channels import CopyChannel
        return CopyChannel(self.buffer_pool)

    def limiter_for_session(self) -> Limiter | None:
        buckets = [self.bucket] if self.bucket is not None else []
        if self.config.conn_rate:
            buckets.append(TokenBucket(self.config.conn_rate, self.now))
        return Limiter(buckets) if buckets else None

    def watch(self, end) -> None:
        self.ends[end.fd] = end
        self.ep.register(end.fd, _SOCK_EVENTS)

    def unwatch(self, end) -> None:
        """Forget ``end`` (its fd leaves epoll when the socket is closed)."""
        self.ends.pop(end.fd, None)

    def set_timer(self, when: float, session: Session) -> None:
        self.stats.parked += 1
        heapq.heappush(self.timers, (when, next(self._seq), session))

    def finished(self, session: Session) -> None:
        rec = record(session, self.now, self.config.engine, self.config.upstream_name)
        self.stats.connection(rec)
        self.log.log(rec)
        self.sessions -= 1
        if not self.accepting and self.draining_since is None and not self.accept_resume_at:
            self._resume_accept()

    # -- the loop -------------------------------------------------------------

    def run(self, install_signals: bool = True) -> int:
        """Serve until drained. ``install_signals=False`` runs in a non-main
        thread (tests); stop it with ``stop()``."""
        old_wakeup = None
        if install_signals:
            old_wakeup = signal.set_wakeup_fd(self.wake_w)
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        self.listener.setblocking(False)
        self._resume_accept()
        next_tick = self.now + TICK
        ends, ready, timers = self.ends, self.ready, self.timers
        try:
            while True:
                if ready:
                    timeout = 0
                else:
                    timeout = next_tick - self.now
                    if timers:
                        timeout = min(timeout, timers[0][0] - self.now)
                    timeout = max(timeout, 0)
                events = self.ep.poll(timeout)
                self.now = time.monotonic()
                for fd, ev in events:
                    end = ends.get(fd)
                    if end is not None:
                        end.session.on_event(end, ev)
                    elif fd == self.wake_r:
                        self._drain_wakeups()
                    else:
                        self._accept()
                while timers and timers[0][0] <= self.now:
                    when, _, session = heapq.heappop(timers)
                    if session.state != CLOSED:
                        session.on_wake(when)
                if ready:
                    batch = ready[:]
                    ready.clear()
                    for session in batch:
                        session.queued = False
                        session.run()
                if self.now >= next_tick:
                    next_tick = self.now + TICK
                    self.tick()
                self.log.flush()
                if self.draining_since is not None and not self.sessions:
                    return 0
        finally:
            if install_signals:
                signal.set_wakeup_fd(old_wakeup)
            self.shutdown()

    def tick(self) -> None:
        now = self.now
        if self.publisher is not None:
            self.publisher.publish()
        for session in {e.session for e in self.ends.values() if e.session.deadline <= now}:
            session.on_timeout()
        if not self.accepting and self.draining_since is None and self.accept_resume_at and \
                now >= self.accept_resume_at:
            self._resume_accept()
        if self.draining_since is not None and now - self.draining_since > self.config.drain_timeout:
            for session in {e.session for e in self.ends.values()}:
                session.close("drain_timeout")

    # -- accepting ------------------------------------------------------------

    def _accept(self) -> None:
        for _ in range(ACCEPT_BURST):
            if self.sessions >= self.config.max_connections:
                self._pause_accept(None)    # resumes when a connection ends
                return
            try:
                sock, addr = self.listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in _FD_EXHAUSTED:
                    self.stats.error("accept_" + errno.errorcode[exc.errno].lower())
                    self._pause_accept(ACCEPT_BACKOFF)
                    return
                if exc.errno == errno.ECONNABORTED:
                    continue
                raise
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            session = Session(self, sock, addr)
            self.sessions += 1
            self.stats.accepted += 1
            self.watch(session.client)
            session.start()

    def _pause_accept(self, seconds: float | None) -> None:
        if self.accepting:
            self.ep.unregister(self.listener.fileno())
            self.accepting = False
        self.accept_resume_at = self.now + seconds if seconds else 0.0

    def _resume_accept(self) -> None:
        if not self.accepting and self.listener.fileno() >= 0:
            self.ep.register(self.listener.fileno(), select.EPOLLIN)
            self.accepting = True
            self.accept_resume_at = 0.0

    # -- stopping -------------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to drain, from any thread (a SIGTERM does the same)."""
        self.signals.append(signal.SIGTERM)
        try:
            os.write(self.wake_w, b"\0")
        except OSError:
            pass

    def _on_signal(self, signum, frame) -> None:
        self.signals.append(signum)

    def _drain_wakeups(self) -> None:
        try:
            while os.read(self.wake_r, 512):
                pass
        except BlockingIOError:
            pass
        if self.signals:
            count = len(self.signals)
            self.signals.clear()
            if self.draining_since is not None or count > 1:
                raise SystemExit(1)         # second signal: stop now
            self.start_drain()

    def start_drain(self) -> None:
        self.draining_since = self.now
        if self.accepting:
            self.ep.unregister(self.listener.fileno())
            self.accepting = False
        self.listener.close()

    def shutdown(self) -> None:
        for session in {e.session for e in self.ends.values()}:
            session.close("shutdown")
        self.log.close()
        if self.publisher is not None:
            self.publisher.close()
        if self.pipe_pool is not None:
            self.pipe_pool.close()
        if self.buffer_pool is not None:
            self.buffer_pool.close()
        if self.listener.fileno() >= 0:
            self.listener.close()
        os.close(self.wake_r)
        os.close(self.wake_w)
        self.ep.close()

    # -- stats ----------------------------------------------------------------

    def stats_snapshot(self) -> dict:
        """Live counters of this worker (shape: docs/relay.md)."""
        snap = self.stats.snapshot({self.config.engine: self.engine_stats}, self._pipe_stats())
        snap.update(worker=self.index, pid=os.getpid(), upstream=self.config.upstream_name)
        return snap

    def _pipe_stats(self) -> dict | None:
        pool = self.pipe_pool
        if pool is None:
            return None
        return {"size": pool.size, "created": pool.created, "reused": pool.reused, "idle": pool.idle,
                "shrunk": pool.shrunk, "discarded": pool.discarded}


def worker_main(config: RelayConfig, listener: socket.socket, index: int) -> int:
    """Entry point in the forked child; never returns into the supervisor's code."""
    try:
        return RelayWorker(config, listener, index, publish=True).run()
    except SystemExit as exc:
        return int(exc.code or 0)
    except Exception:
        import traceback

        traceback.print_exc(file=sys.stderr)
        return 1
