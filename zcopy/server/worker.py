"""One worker process: one epoll loop over its own SO_REUSEPORT listener.

The loop itself (poll, dispatch, the ready queue, the tick) is
``zcopy.loop.ListenerLoop.run``, shared with the relay; this module says
what is serve's own: connections (``conns``), the file watch applied before
each batch, the prefetch pool's wake-ups, and what the once-a-second
``tick`` does (timeouts, access log, stats, accept resumption, drain).
"""

from __future__ import annotations

import functools
import os
import select
import signal
import socket
import sys

from zcopy import engines, http
from zcopy.engines.buffers import BufferPool, BufferSlot
from zcopy.engines.recv_pwrite import DEFAULT_CHUNK as BODY_CHUNK
from zcopy.loop import ListenerLoop, run_worker
from zcopy.server.access import Access
from zcopy.server.accesslog import AccessLog
from zcopy.server.auth import CHALLENGE
from zcopy.server.config import ServeConfig
from zcopy.server.connection import CLOSED, Connection
from zcopy.server.digests import Digests
from zcopy.server.executor import Executor
from zcopy.server.files import OpenFileCache
from zcopy.server.held import HeldBodies
from zcopy.server.prefetch import Prefetcher
from zcopy.server.gate import BASIC_CHALLENGE
from zcopy.server.responder import Responder
from zcopy.server.routes import server_routes
from zcopy.server.session import Sessions, add_no_accounts_me
from zcopy.server.share import Shares
from zcopy.server.shared import generation, heartbeat
from zcopy.server.signed import Signer
from zcopy.server.state import State
from zcopy.server.stats import WorkerStats, server_info
from zcopy.server.throttle import SharedThrottle
from zcopy.server.verify import Verifier
from zcopy.server.watch import FileWatch
from zcopy.server.write_methods import Writer
from zcopy.stats import Publisher


class Worker(ListenerLoop):
    CONN_EVENTS = select.EPOLLIN | select.EPOLLOUT | select.EPOLLRDHUP | select.EPOLLET
    CLOSED = CLOSED
    SIGNALS = (signal.SIGTERM, signal.SIGUSR1)      # SIGUSR1: reopen the access log (logrotate)

    def __init__(self, config: ServeConfig, listener: socket.socket, index: int = 0) -> None:
        super().__init__(listener, config.max_connections)
        self.config = config
        self.index = index
        self.stats = WorkerStats()
        self.publisher = Publisher("serve", self.stats_snapshot, slot=index)
        self.date = http.DateHeader()
        self.heads = http.HeadCache(max_head=config.max_head, max_target=config.max_target)
        self.pipe_pool = None
        self.engine, self.upload_engine = self._make_engines()
        #: Buffers for body bytes that pass through the process on their way into a file (zcopy.server.spool).
        self.body_slot = functools.partial(BufferSlot, BufferPool(BODY_CHUNK), self.upload_engine.stats)
        #: Cold windows are read by its pool off the loop (None: --prefetch off).
        self.prefetch = Prefetcher(step=config.budget) if config.prefetch else None
        #: What may block on the disk or burn CPU (commits, DELETE/MOVE, listings) runs on its threads.
        self.executor = Executor()
        self.engines = {self.engine.name: self.engine, self.upload_engine.name: self.upload_engine}
        #: This process's handle on the state folder: its sqlite connection opens on first use, after the fork.
        self.state = State(config.state_dir).open() if config.state_dir else None
        self.cache = OpenFileCache(config.root, follow_symlinks=config.follow_symlinks,
                                   show_hidden=config.show_hidden, symlink_targets=config.symlink_targets,
                                   mac_files=getattr(config, "mac_files", False),
                                   watch=_file_watch(), generation=generation(),
                                   digests=Digests(self.executor.submit, self.state, max_size=config.digest_max,
                                                   cancelled=self.executor.stopping)
                                   if config.digest_max else None,
                                   held=HeldBodies(max_size=config.small_reply_max))
        #: Uncached files are walked and opened on threads of their own: never queued behind
        #: a digest, an fsync or a listing build on the executor (docs/serve.md, "Opening off the loop").
        self.opener = Executor(max_threads=4)
        self.cache.executor = self.opener
        #: Request bodies are written into their files on threads of their own (zcopy.server.spool): a
        #: stalled filesystem under uploads then holds only these, never the listings, commits and deletes.
        self.body_writer = Executor(max_threads=4)
        writes = config.allow_write or config.accounts is not None   # with accounts, the rules decide
        writer = Writer(self.cache, self.date, max_upload=config.max_upload,
                        fsync=config.fsync, executor=self.executor,
                        make_parents=config.make_parents) if writes else None
        #: Who asks and what they may: one Access per worker; the users file is re-read on change.
        self.access = Access(accounts=config.accounts, token=config.token, read_token=config.read_token,
                             allow_write=config.allow_write)
        self.users_stamp = _stamp(config.users) if config.users else None
        #: Password checks (argon2, slow by design) run on its threads, never on the loop.
        self.verifier = Verifier() if config.accounts is not None else None
        routes = server_routes(self.date, self.state)
        accounts_state = self.verifier is not None and self.state is not None
        #: Browsers sign in once (/.zcopy/login) and keep a signed session cookie (zcopy.server.session).
        signer = Signer(self.state.share_secret()) if self.state is not None else None
        sessions = Sessions(self.access, signer, secure=config.tls is not None) if accounts_state else None
        if sessions is not None:
            sessions.add_routes(routes, BASIC_CHALLENGE)
        else:
            add_no_accounts_me(routes)
        #: Share links (zcopy.server.share): minted at /.zcopy/share, signed with the same secret.
        shares = Shares(self.access, signer, self.cache, self.executor, writer) if signer is not None else None
        if shares is not None:
            shares.add_routes(routes, BASIC_CHALLENGE if config.accounts is not None else CHALLENGE)
        self.responder = Responder(self.cache, self.date, writer=writer, routes=routes, executor=self.executor,
                                   access=self.access, verifier=self.verifier, trusted_proxy=config.trusted_proxy,
                                   shared_throttle=SharedThrottle(self.state) if accounts_state else None,
                                   sessions=sessions, shares=shares)
        self.responder.loop = self
        if writer is not None and self.state is not None:      # resumable uploads (zcopy.server.uploads)
            from zcopy.server.uploads import Uploads
            self.responder.uploads = Uploads(self.responder, expiry=config.upload_expiry,
                                            max_pending=config.max_pending_uploads)
        self.access_log = AccessLog(config.access_log) if config.access_log else None
        self.reopen_log = False         # SIGUSR1 came: reopen the access log at the next tick
        #: one store per loop turn into the memory the supervisor watches (zcopy.server.shared)
        self.beat = heartbeat(index)
        #: HTTPS (--tls-cert): sockets are admitted into TLS handshakes (zcopy.server.tlsaccept)
        self.tls = None
        if config.tls is not None:
            from zcopy.server.tlsaccept import TlsServing

            self.tls = TlsServing(self, config.tls)

    def _make_engines(self):
        """The send and the upload engine; one engine object when both are splice,
        so they share one pipe pool. The send engine steps ``budget`` bytes a turn (2 MiB for
        sendfile, a pipe-full of at most 1 MiB for splice: ``profile.step_for``); a separate
        upload engine, and the TLS copy engine, ``copy_budget`` (1 MiB)."""
        cfg = self.config
        if "splice" in (cfg.engine, cfg.upload_engine):
            from zcopy.pipes import PipePool

            self.pipe_pool = PipePool(cfg.pipe_size)
        send = engines.create(cfg.engine, pipe_pool=self.pipe_pool, budget=cfg.budget)
        if cfg.upload_engine == cfg.engine:
            return send, send
        return send, engines.create(cfg.upload_engine, pipe_pool=self.pipe_pool, budget=cfg.copy_budget)

    def copy_engine(self):
        """The send engine for a transport that cannot take sendfile/splice
        (TLS without kTLS): read_send, which writes through the transport."""
        engine = self.engines.get("read_send")
        if engine is None:
            engine = self.engines["read_send"] = engines.create("read_send", budget=self.config.copy_budget)
        return engine

    # -- the loop (ListenerLoop.run) ----------------------------------------------

    def start(self, install_signals: bool = True):
        """Before the first poll: the prefetch pool's, the executor's and the file watch's fds
        join the epoll set (here, not at construction: what runs is what the
        worker holds by then)."""
        if self.prefetch is not None:
            self.add_fd(self.prefetch.fileno(), lambda events: self.prefetch.wake(self.ready, self.now))
        # Work done off the loop (commits, listings...): its callbacks run here.
        self.add_fd(self.executor.fileno(), lambda events: self.executor.run_callbacks())
        self.add_fd(self.opener.fileno(), lambda events: self.opener.run_callbacks())
        self.add_fd(self.body_writer.fileno(), lambda events: self.body_writer.run_callbacks())
        if self.cache.watch is not None:
            # File changes first: a change completed before a request was sent
            # must be applied before that request is read. (An inotify fd
            # reports EPOLLIN alone; anything else is applied in the dispatch.)
            self.add_fd(self.cache.watch.fileno(), self._on_watch, first=self.cache.apply_changes)
        if self.verifier is not None:       # password checks done: their requests carry on, on the loop
            self.add_fd(self.verifier.fileno(), lambda events: self.verifier.run_callbacks())
        if self.tls is not None:
            self.tls.start()
        return super().start(install_signals)

    def _on_watch(self, events: int) -> None:
        if events != select.EPOLLIN:
            self.cache.apply_changes()

    def tick(self) -> None:
        now = self.now
        for conn in [c for c in self.conns.values() if c.deadline <= now]:
            conn.on_timeout()
        if self.access_log is not None:
            self.access_log.flush()
            if self.reopen_log:
                self.reopen_log = False
                self.access_log.reopen()
        if self.config.users:
            self.reload_users()
        self.publisher.publish()
        if self.responder.uploads is not None:
            self.responder.uploads.tick(now)
        self.resume_after_backoff()
        if self.tls is not None:
            self.tls.tick()
        if self.drain_overdue(self.config.drain_timeout):
            for conn in list(self.conns.values()):
                conn.close()

    def reload_users(self) -> None:
        """The users file changed (its mtime, size or inode): take the new accounts; a malformed
        file keeps the old ones and says why, once per change."""
        path = self.config.users
        stamp = _stamp(path)
        if stamp == self.users_stamp:
            return
        self.users_stamp = stamp
        from zcopy.accounts.users import UsersFileError, load

        try:
            accounts = load(path)
        except (UsersFileError, OSError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else str(exc)
            print(f"zcopy serve: worker {self.index}: --users not reloaded ({why}); keeping the old accounts",
                  file=sys.stderr)
            return
        self.access.load(accounts)

    def on_signal(self, signum: int) -> None:
        if signum == signal.SIGUSR1:
            self.reopen_log = True

    # -- ListenerLoop hooks ----------------------------------------------------

    def admit(self, sock: socket.socket, addr) -> None:
        if self.cache.watch is not None:
            # An accept burst reads requests without a new poll: a file changed
            # just before this client connected must not be answered stale.
            self.cache.apply_changes()
        if self.tls is not None:
            self.tls.admit(sock, addr)
            return
        self.track(Connection(self, sock, addr))

    def track(self, conn) -> None:
        """A new connection (or a TLS handshake, zcopy.server.tlsaccept) joins the loop: counted,
        polled, and started on what it may already have."""
        self.conns[conn.fd] = conn
        self.stats.accepted += 1
        self.ep.register(conn.fd, self.CONN_EVENTS)
        conn.run()

    def connection_count(self) -> int:
        return len(self.conns)

    def give_back_fd(self) -> bool:
        return self.cache.give_back()

    def count_error(self, kind: str) -> None:
        self.stats.error(kind)

    def on_drain(self) -> None:
        if self.tls is not None:
            self.tls.drain()
        for conn in list(self.conns.values()):
            conn.drain()

    def forget(self, conn: Connection) -> None:
        """Called by a connection as it closes (the fd leaves epoll on close)."""
        del self.conns[conn.fd]
        self.stats.closed += 1
        self.connection_ended()

    # -- stats --------------------------------------------------------------

    def stats_snapshot(self) -> dict:
        """This worker's counters as plain data (published once a second)."""
        snap = self.stats.snapshot(self.engines, self.conns.values(), self.now)
        snap["server"] = server_info(self.config)
        r = self.responder
        snap["auth"] = {"failures": r.gate.failures, "throttled": r.gate.throttled, "busy": r.gate.busy}
        if self.prefetch is not None:
            snap["prefetch"] = self.prefetch.snapshot()
        snap["executor"] = self.executor.snapshot()
        snap["opener"] = self.opener.snapshot()
        snap["body_writer"] = self.body_writer.snapshot()
        snap["listings"] = self.responder.listings.snapshot()
        if self.tls is not None:
            snap["tls"] = self.tls.snapshot()
        return snap

    def shutdown(self) -> None:
        self.publisher.close()
        for conn in list(self.conns.values()):
            conn.close()
        if self.prefetch is not None:
            self.prefetch.close()     # joins its threads
        if self.verifier is not None:
            self.verifier.close()
        self.body_writer.close()      # a body's write under way finishes first
        self.executor.close()         # a commit under way finishes first
        self.opener.close()
        self.responder.listings.close()
        self.responder.dav.pages.close()
        self.cache.close()
        for engine in self.engines.values():
            engine.close()
        if self.pipe_pool is not None:
            self.pipe_pool.close()
        if self.access_log is not None:
            self.access_log.close()
        if self.state is not None:
            self.state.close()


def _stamp(path: str):
    """What says a file changed: (mtime_ns, size, inode), None when it cannot be stat'ed."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


def _file_watch() -> FileWatch | None:
    """inotify for the open-file cache; None (stat per request) where the
    process may not have one (fs.inotify.max_user_instances reached, EMFILE)."""
    try:
        return FileWatch()
    except OSError as exc:
        print(f"zcopy serve: no inotify ({exc.strerror}): cached files are stat'ed per request",
              file=sys.stderr)
        return None


def worker_main(config: ServeConfig, listener: socket.socket, index: int) -> int:
    """Entry point in the forked child; never returns into the supervisor's code."""
    return run_worker(Worker, config, listener, index)
