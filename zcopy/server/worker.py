"""One worker process: one epoll loop over its own SO_REUSEPORT listener.

The loop is readable top to bottom in ``run``: poll, dispatch events, run
connections that yielded (``ready``), and once a second ``tick`` (timeouts,
access log, accept resumption, drain progress). Signals arrive through a
wakeup pipe registered in epoll: SIGTERM starts a graceful drain, a second
SIGTERM ends the process at once; SIGINT is ignored because the supervisor,
which the terminal also signals, forwards it as SIGTERM.
"""

from __future__ import annotations

import errno
import os
import select
import signal
import socket
import sys
import time

from zcopy import engines, http
from zcopy.server.accesslog import AccessLog
from zcopy.server.config import ServeConfig
from zcopy.server.connection import CLOSED, Connection
from zcopy.server.files import OpenFileCache
from zcopy.server.prefetch import Prefetcher
from zcopy.server.responder import Responder
from zcopy.server.stats import WorkerStats, server_info
from zcopy.server.writer import Writer
from zcopy.stats import Publisher

TICK = 1.0
ACCEPT_BURST = 64
#: After EMFILE/ENFILE, stop polling the listener this long instead of spinning.
ACCEPT_BACKOFF = 0.25
_FD_EXHAUSTED = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


class Worker:
    EV_IN = select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLHUP | select.EPOLLERR
    EV_OUT = select.EPOLLOUT | select.EPOLLHUP | select.EPOLLERR
    CONN_EVENTS = select.EPOLLIN | select.EPOLLOUT | select.EPOLLRDHUP | select.EPOLLET

    def __init__(self, config: ServeConfig, listener: socket.socket, index: int = 0) -> None:
        self.config = config
        self.listener = listener
        self.index = index
        self.now = time.monotonic()
        self.conns: dict[int, Connection] = {}
        self.ready: list[Connection] = []
        self.stats = WorkerStats()
        self.publisher = Publisher("serve", self.stats_snapshot, slot=index)
        self.date = http.DateHeader()
        self.pipe_pool = None
        self.engine, self.upload_engine = self._make_engines()
        #: Cold windows are read by its pool off the loop (None: --prefetch off).
        self.prefetch = Prefetcher(step=config.budget) if config.prefetch else None
        self.engines = {self.engine.name: self.engine, self.upload_engine.name: self.upload_engine}
        self.cache = OpenFileCache(config.root, follow_symlinks=config.follow_symlinks,
                                   show_hidden=config.show_hidden)
        writer = Writer(self.cache, self.date, max_upload=config.max_upload,
                        fsync=config.fsync) if config.allow_write else None
        self.responder = Responder(self.cache, self.date, writer=writer, token=config.token,
                                   read_token=config.read_token)
        self.access_log = AccessLog(config.access_log) if config.access_log else None
        self.accepting = False
        self.accept_resume_at = 0.0
        self.draining_since: float | None = None
        self.signals: list[int] = []

    def _make_engines(self):
        """The send and the upload engine; one engine object when both are splice,
        so they share one pipe pool."""
        cfg = self.config
        if "splice" in (cfg.engine, cfg.upload_engine):
            from zcopy.pipes import PipePool

            self.pipe_pool = PipePool(cfg.pipe_size)
        send = engines.create(cfg.engine, pipe_pool=self.pipe_pool, budget=cfg.budget)
        if cfg.upload_engine == cfg.engine:
            return send, send
        return send, engines.create(cfg.upload_engine, pipe_pool=self.pipe_pool, budget=cfg.budget)

    # -- the loop -------------------------------------------------------------

    def run(self) -> int:
        self.ep = select.epoll()
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.ep.register(wake_r, select.EPOLLIN)
        prefetch_fd = self.prefetch.fileno() if self.prefetch is not None else -1
        if prefetch_fd >= 0:
            self.ep.register(prefetch_fd, select.EPOLLIN)
        old_wakeup = signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        self.listener.setblocking(False)
        self._resume_accept()
        self.publisher.publish()
        next_tick = self.now + TICK
        conns, ready = self.conns, self.ready
        try:
            while True:
                events = self.ep.poll(0 if self.ready else TICK)
                self.now = time.monotonic()
                for fd, ev in events:
                    conn = conns.get(fd)
                    if conn is not None:
                        conn.on_event(ev)
                    elif fd == wake_r:
                        self._drain_wakeups(wake_r)
                    elif fd == prefetch_fd:
                        self.prefetch.wake(ready, self.now)
                    else:
                        self._accept()
                if ready:
                    batch = ready[:]
                    ready.clear()
                    for conn in batch:
                        if conn.state != CLOSED:
                            conn.run()
                if self.now >= next_tick:
                    next_tick = self.now + TICK
                    self.tick()
                if self.draining_since is not None and not conns:
                    return 0
        finally:
            signal.set_wakeup_fd(old_wakeup)
            self.shutdown()
            os.close(wake_r)
            os.close(wake_w)
            self.ep.close()

    def tick(self) -> None:
        now = self.now
        for conn in [c for c in self.conns.values() if c.deadline <= now]:
            conn.on_timeout()
        if self.access_log is not None:
            self.access_log.flush()
        self.publisher.publish()
        if not self.accepting and self.draining_since is None and self.accept_resume_at and \
                now >= self.accept_resume_at:
            self._resume_accept()
        if self.draining_since is not None and now - self.draining_since > self.config.drain_timeout:
            for conn in list(self.conns.values()):
                conn.close()

    # -- accepting ------------------------------------------------------------

    def _accept(self) -> None:
        conns = self.conns
        for _ in range(ACCEPT_BURST):
            if len(conns) >= self.config.max_connections:
                self._pause_accept(None)   # resumes when a connection closes
                return
            try:
                sock, addr = self.listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in _FD_EXHAUSTED:
                    self.stats.error(errno.errorcode[exc.errno])
                    self._pause_accept(ACCEPT_BACKOFF)
                    return
                if exc.errno == errno.ECONNABORTED:
                    continue
                raise
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = Connection(self, sock, addr)
            conns[conn.fd] = conn
            self.stats.accepted += 1
            self.ep.register(conn.fd, self.CONN_EVENTS)
            conn.run()

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

    def forget(self, conn: Connection) -> None:
        """Called by a connection as it closes (the fd leaves epoll on close)."""
        del self.conns[conn.fd]
        self.stats.closed += 1
        if not self.accepting and self.draining_since is None and not self.accept_resume_at:
            self._resume_accept()

    # -- replies and signals --------------------------------------------------

    def on_reply(self, conn: Connection, reply) -> None:
        req = conn.request
        if req is not None:
            self.stats.reply(req.method, reply.status)
            self.stats.latency(self.stats.ttlb, self.now - conn.started)
        else:
            self.stats.reply(None, reply.status)
        if self.access_log is not None:
            self.access_log.log(conn.addr, req, reply.status, conn.sent)

    def stats_snapshot(self) -> dict:
        """This worker's counters as plain data (published once a second)."""
        snap = self.stats.snapshot(self.engines, self.conns.values(), self.now)
        snap["server"] = server_info(self.config)
        if self.prefetch is not None:
            snap["prefetch"] = self.prefetch.snapshot()
        return snap

    def _on_signal(self, signum, frame) -> None:
        self.signals.append(signum)

    def _drain_wakeups(self, fd: int) -> None:
        try:
            while os.read(fd, 512):
                pass
        except BlockingIOError:
            pass
        if self.signals:
            count = len(self.signals)
            self.signals.clear()
            if self.draining_since is not None or count > 1:
                raise SystemExit(1)        # second signal: stop now
            self.start_drain()

    def start_drain(self) -> None:
        self.draining_since = self.now
        if self.accepting:
            self.ep.unregister(self.listener.fileno())
            self.accepting = False
        self.listener.close()
        for conn in list(self.conns.values()):
            conn.drain()

    def shutdown(self) -> None:
        self.publisher.close()
        for conn in list(self.conns.values()):
            conn.close()
        if self.prefetch is not None:
            self.prefetch.close()     # joins its threads
        self.cache.close()
        for engine in self.engines.values():
            engine.close()
        if self.pipe_pool is not None:
            self.pipe_pool.close()
        if self.access_log is not None:
            self.access_log.close()
        if self.listener.fileno() >= 0:
            self.listener.close()


def worker_main(config: ServeConfig, listener: socket.socket, index: int) -> int:
    """Entry point in the forked child; never returns into the supervisor's code."""
    try:
        return Worker(config, listener, index).run()
    except SystemExit as exc:
        return int(exc.code or 0)
    except Exception:
        import traceback

        traceback.print_exc(file=sys.stderr)
        return 1
