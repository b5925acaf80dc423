"""One relay worker: the shared loop (``zcopy.loop.ListenerLoop.run``) over
its SO_REUSEPORT listener, with sessions as its connections.

What is the relay's own: each socket's fd leads to its session's ``End``
(``conns``); a session that used up its byte budget goes on the ``ready``
queue; a rate-limited direction parks on a loop timer (``set_timer``), so a
parked direction wakes on time without anyone spinning; the once-a-second
``tick`` checks connect and idle timeouts and the drain; the turn's log
lines are written at its end. Signals: SIGTERM drains (no new connections;
open ones finish within ``drain_timeout``), a second SIGTERM stops at once;
``stop()`` asks the same from another thread.
"""

from __future__ import annotations

import os
import select
import socket
import sys

from zcopy import engines
from zcopy.loop import ListenerLoop, run_worker
from zcopy.relay.bucket import Limiter, TokenBucket
from zcopy.relay.config import RelayConfig
from zcopy.relay.session import CLOSED, Session
from zcopy.relay.stats import ConnLog, RelayStats, record

_SOCK_EVENTS = select.EPOLLIN | select.EPOLLOUT | select.EPOLLRDHUP | select.EPOLLET
#: Idle pipes a worker keeps for the next busy direction (the copy engine keeps as many buffers).
POOL_IDLE = 64


class RelayWorker(ListenerLoop):
    CLOSED = CLOSED

    def __init__(self, config: RelayConfig, listener: socket.socket, index: int = 0,
                 publish: bool = False) -> None:
        # No limit for the listener loop: past --max-connections the relay
        # turns clients away itself (admit), it does not leave them waiting.
        super().__init__(listener, sys.maxsize)
        self.config = config
        self.index = index
        self.sessions = 0                   # conns: fd -> session.End
        self.stats = RelayStats()
        self.pipe_pool = None
        if config.engine == "splice":
            from zcopy.pipes import PipePool
            self.pipe_pool = PipePool(config.pipe_size, max_idle=POOL_IDLE)
        #: Makes each direction's channel: a pipe (splice) or a buffer (copy) of pipe_size.
        self.engine = engines.create(config.engine, pipe_pool=self.pipe_pool, chunk=config.pipe_size)
        rate = config.worker_rate
        self.bucket = TokenBucket(rate, self.now) if rate else None
        self.log = ConnLog(config.log)
        self.end_of_turn = self.log.flush   # the turn's lines in one write
        #: ``publish``: write stats_snapshot() once a second where ``zcopy top`` reads it.
        self.publisher = None
        if publish:
            from zcopy.stats.publish import Publisher
            self.publisher = Publisher("relay", self.stats_snapshot, slot=index)

    # -- what sessions call ---------------------------------------------------

    def limiter_for_session(self) -> Limiter | None:
        buckets = [self.bucket] if self.bucket is not None else []
        if self.config.conn_rate:
            buckets.append(TokenBucket(self.config.conn_rate, self.now))
        return Limiter(buckets) if buckets else None

    def watch(self, end) -> None:
        self.conns[end.fd] = end
        self.ep.register(end.fd, _SOCK_EVENTS)

    def unwatch(self, end) -> None:
        """Forget ``end`` (its fd leaves epoll when the socket is closed)."""
        self.conns.pop(end.fd, None)

    def finished(self, session: Session) -> None:
        rec = record(session, self.now, self.config.engine, self.config.upstream_name)
        self.stats.connection(rec)
        self.log.log(rec)
        self.sessions -= 1
        self.connection_ended()

    # -- the loop (ListenerLoop.run) ----------------------------------------------

    def tick(self) -> None:
        now = self.now
        if self.publisher is not None:
            self.publisher.publish()
        for session in {e.session for e in self.conns.values() if e.session.deadline <= now}:
            session.on_timeout()
        self.resume_after_backoff()
        if self.drain_overdue(self.config.drain_timeout):
            for session in {e.session for e in self.conns.values()}:
                session.close("drain_timeout")

    # -- ListenerLoop hooks ----------------------------------------------------

    def admit(self, sock: socket.socket, addr) -> None:
        session = Session(self, sock, addr)
        self.sessions += 1
        self.stats.accepted += 1
        if self.sessions > self.config.max_connections:
            session.close_cleanly("max_connections")    # counted and logged like any ending
            return
        self.watch(session.client)
        session.start()

    def connection_count(self) -> int:
        return self.sessions

    def count_error(self, kind: str) -> None:
        self.stats.error(kind)

    def shutdown(self) -> None:
        for session in {e.session for e in self.conns.values()}:
            session.close("shutdown")
        self.log.close()
        if self.publisher is not None:
            self.publisher.close()
        self.engine.close()
        if self.pipe_pool is not None:
            self.pipe_pool.close()

    # -- stats ----------------------------------------------------------------

    def stats_snapshot(self) -> dict:
        """Live counters of this worker (shape: docs/relay.md)."""
        cfg = self.config
        sessions = {end.session for end in self.conns.values()}
        snap = self.stats.snapshot({self.engine.name: self.engine}, self._pipe_stats(), sessions, self.now,
                                   cfg.upstream_name)
        host = f"[{cfg.bind}]" if ":" in cfg.bind else cfg.bind
        snap.update(worker=self.index, pid=os.getpid(), upstream=cfg.upstream_name,
                    server={"address": f"{host}:{cfg.port} → {cfg.upstream_name}", "workers": cfg.workers,
                            "engine": cfg.engine})
        return snap

    def _pipe_stats(self) -> dict | None:
        pool = self.pipe_pool
        if pool is None:
            return None
        return {"size": pool.size, "created": pool.created, "reused": pool.reused, "idle": pool.idle,
                "shrunk": pool.shrunk, "discarded": pool.discarded}


def worker_main(config: RelayConfig, listener: socket.socket, index: int) -> int:
    """Entry point in the forked child; never returns into the supervisor's code."""
    return run_worker(lambda *a: RelayWorker(*a, publish=True), config, listener, index)
