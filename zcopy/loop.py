"""What every worker loop shares: a listener, an epoll set, a signal wakeup
pipe, and the accept rules. ``zcopy.server.worker`` and ``zcopy.relay.worker``
build their own ``run`` on top of it; only the connection type differs.

Accept rules (both workers, tested in both):
- at most ``ACCEPT_BURST`` accepts per readiness event, so a flood of
  connections cannot starve the ones already open;
- at ``max_connections`` the listener leaves epoll until a connection ends
  (further clients wait in the kernel's backlog; the relay passes no limit
  and turns the excess away itself);
- on EMFILE/ENFILE/ENOBUFS/ENOMEM it leaves epoll for ``ACCEPT_BACKOFF``
  seconds instead of spinning on a listener that stays readable.

Signals: SIGTERM (or ``stop()`` from another thread) starts a graceful drain,
a second one raises SystemExit(1); SIGINT is ignored because the supervisor,
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

TICK = 1.0
#: What a connection's epoll events mean: readable (or an EOF/error to read),
#: writable (or an error a write will report), the peer's EOF pending.
EV_IN = select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLHUP | select.EPOLLERR
EV_OUT = select.EPOLLOUT | select.EPOLLHUP | select.EPOLLERR
EV_HUP = select.EPOLLRDHUP | select.EPOLLHUP | select.EPOLLERR
ACCEPT_BURST = 64
#: After EMFILE/ENFILE, stop polling the listener this long instead of spinning.
ACCEPT_BACKOFF = 0.25
_FD_EXHAUSTED = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


class ListenerLoop:
    """Subclasses implement ``admit(sock, addr)``, ``connection_count()``,
    ``count_error(kind)`` and ``on_drain()``, and write their own ``run``."""

    def __init__(self, listener: socket.socket, max_connections: int) -> None:
        self.listener = listener
        self.max_connections = max_connections
        self.now = time.monotonic()
        self.accepting = False
        self.accept_resume_at = 0.0
        self.draining_since: float | None = None
        self.signals: list[int] = []
        self.ep = select.epoll()
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.ep.register(self.wake_r, select.EPOLLIN)

    # -- what subclasses provide ----------------------------------------------

    def admit(self, sock: socket.socket, addr) -> None:
        raise NotImplementedError

    def connection_count(self) -> int:
        raise NotImplementedError

    def count_error(self, kind: str) -> None:
        raise NotImplementedError

    def on_drain(self) -> None:
        """The listener is closed: tell idle connections to go."""

    # -- starting and stopping ------------------------------------------------

    def start(self, install_signals: bool = True):
        """Begin accepting; returns what ``finish`` needs to restore."""
        old_wakeup = None
        if install_signals:
            old_wakeup = signal.set_wakeup_fd(self.wake_w)
            signal.signal(signal.SIGTERM, self._on_signal)
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
        self.signals.append(signal.SIGTERM)
        try:
            os.write(self.wake_w, b"\0")
        except OSError:
            pass

    def _on_signal(self, signum, frame) -> None:
        self.signals.append(signum)

    def drain_wakeups(self) -> None:
        """The wakeup pipe is readable: act on the signals that arrived."""
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
