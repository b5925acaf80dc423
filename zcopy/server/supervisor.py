"""The supervisor: bind, fork workers, restart the ones that die, drain on stop.

It is the only process that decides anything about the group. Signals are
blocked and taken synchronously with ``sigtimedwait`` so there is no handler
re-entrancy to reason about:

- SIGCHLD: reap; a worker that died while we were not stopping is restarted
  on its own listener (connections queued there wait for the new worker). A
  slot that crashes more than ``MAX_RESTARTS`` times in ``RESTART_WINDOW``
  seconds stops the server with an error instead of looping.
- SIGHUP: run the reload hooks (``zcopy.server.reload``); when one of them
  changed something, the workers are replaced gracefully (new ones are forked
  with the new config on the same listeners, the old ones drain). The log
  says what was reloaded, or that nothing was.
- SIGUSR1: forwarded to the workers, which reopen their access log (logrotate).
- first SIGTERM/SIGINT (or any other signal whose default would kill us:
  SIGQUIT, SIGUSR2, SIGALRM, ...): ``/readyz`` turns 503; after
  ``--drain-delay`` seconds (the lame-duck phase, listeners still accepting)
  close the listeners, forward SIGTERM (workers drain in-flight transfers),
  wait up to the drain timeout, then SIGKILL stragglers.
- second such signal: SIGKILL every worker and exit at once.

Every child dies with the supervisor, whatever kills it (even SIGKILL):
``prctl(PR_SET_PDEATHSIG, SIGTERM)`` right after the fork, then a check that
the parent is still the pid that forked it (it may have died in between).
A worker whose heartbeat (``zcopy.server.shared``) is older than
``--worker-timeout`` seconds (stuck in a loop turn, or stopped) is killed
with SIGKILL and replaced, as gunicorn does. ``--metrics`` is served by a
small forked process of its own (``zcopy.stats.metrics``), restarted like a
worker.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import sys
import time

from typing import TYPE_CHECKING

if TYPE_CHECKING:   # annotations only: importing the config would cost every `zcopy --help`
    from zcopy.server.config import ServeConfig

MAX_RESTARTS = 5
RESTART_WINDOW = 10.0
#: Signals that stop the server: SIGTERM/SIGINT and every other one whose
#: default action would kill the supervisor and orphan its workers.
_STOP = {signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGUSR2, signal.SIGALRM,
         signal.SIGVTALRM, signal.SIGPROF, signal.SIGXCPU, signal.SIGXFSZ, signal.SIGIO,
         *[getattr(signal, name) for name in ("SIGPWR", "SIGSTKFLT") if hasattr(signal, name)]}
_WATCHED = _STOP | {signal.SIGCHLD, signal.SIGHUP, signal.SIGUSR1}
_PR_SET_PDEATHSIG = 1
_PR_SET_NAME = 15
#: How often the supervisor looks at heartbeats and deadlines when no signal comes.
_POLL = 0.5
_METRICS = -1     # the metrics process's "slot" in restart bookkeeping


class StartupError(Exception):
    """A problem that stops the server before it serves: one clear line, and
    the exit code (2 for bad arguments, as for a bad flag; 1 otherwise)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def start(build_config, args):
    """Config and bound listeners for ``zcopy serve`` or ``zcopy relay``:
    build the config from the flags, lift the fd limit, bind one SO_REUSEPORT
    listener per worker. Raises StartupError."""
    from zcopy.loop import raise_fd_limit

    config = build_config(args)
    raise_fd_limit()
    return config, make_listeners(config)


def make_listeners(config: ServeConfig) -> list[socket.socket]:
    """One SO_REUSEPORT listener per worker, all on the same port. ``config.notsent_lowat`` (a
    serve config's; the relay has none) is set on each: accepted connections inherit it, so it
    costs no call per connection."""
    family = socket.AF_INET6 if ":" in config.bind else socket.AF_INET
    port = config.port
    if port:
        _check_port_free(family, config.bind, port)
    listeners: list[socket.socket] = []
    try:
        for _ in range(config.workers):
            s = socket.socket(family, socket.SOCK_STREAM)
            listeners.append(s)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if getattr(config, "notsent_lowat", 0):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT, config.notsent_lowat)
            s.bind((config.bind, port))
            s.listen(1024)
            port = s.getsockname()[1]   # --port 0: the others join the first one's port
    except OSError as exc:
        for s in listeners:
            s.close()
        raise StartupError(f"cannot listen on {config.bind}:{config.port}: {exc.strerror}") from None
    config.port = port
    return listeners


def _check_port_free(family: int, host: str, port: int) -> None:
    """SO_REUSEPORT would let us silently share a port with another server
    of the same user; a plain bind first tells us the port is taken."""
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise StartupError(f"port {port} on {host} is already in use") from None
            raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


class Supervisor:
    """Runs ``worker_main(config, listener, slot) -> exit code`` in each forked
    worker: the HTTP worker by default; ``zcopy relay`` passes its own and
    ``stats_kind="relay"`` (the folder of live snapshots, see zcopy.stats).
    ``metrics``: a bound, listening socket for ``--metrics``, served by a
    forked process; ``reloader``: the SIGHUP hooks (``zcopy.server.reload``)."""

    def __init__(self, config: ServeConfig, listeners: list[socket.socket], worker_main=None,
                 stats_kind: str = "serve", metrics: socket.socket | None = None, reloader=None) -> None:
        if worker_main is None:
            from zcopy.server.worker import worker_main
        from zcopy.server.shared import SharedState

        self.worker_main = worker_main
        self.stats_kind = stats_kind
        self.config = config
        self.listeners = listeners
        self.metrics = metrics
        self.reloader = reloader
        self.shared = SharedState(len(listeners))
        self.worker_timeout = getattr(config, "worker_timeout", 0.0)
        self.drain_delay = getattr(config, "drain_delay", 0.0)
        self.pids: dict[int, int] = {}        # pid -> slot, the current worker of each slot
        self.retiring: dict[int, float] = {}  # pid -> kill time: replaced by a reload, draining
        self.metrics_pid = 0
        self.crashes: dict[int, list[float]] = {}
        self.lame_duck_until = 0.0            # a stop signal came: /readyz says 503 until we drain
        self.stopping = False
        self.kill_at = 0.0
        self.failed = False
        self._checked = time.monotonic()      # when _check_time last ran
        self._prctl = _load_prctl()
        # From now on the signals we act on wait for ``run`` instead of killing us.
        signal.pthread_sigmask(signal.SIG_BLOCK, _WATCHED)

    def run(self) -> int:
        signal.pthread_sigmask(signal.SIG_BLOCK, _WATCHED)
        try:
            if self.metrics is not None:
                self._spawn_metrics()
            for slot in range(len(self.listeners)):
                self._spawn(slot)
            while self.pids or self.retiring or not self.stopping:
                info = signal.sigtimedwait(_WATCHED, self._timeout())
                # None: the timeout. A signo we did not ask for: CPython 3.11 returns
                # an uninitialised siginfo when the wait was interrupted (EINTR: a
                # stop and SIGCONT, Ctrl-Z then fg) after its deadline had passed
                # (signalmodule.c breaks out of its retry loop and fills si anyway):
                # a wake-up like the timeout, never a stop.
                signo = info.si_signo if info is not None else 0
                if signo == signal.SIGCHLD or signo not in _WATCHED:
                    self._reap()   # a SIGCHLD may have coalesced with another
                elif signo == signal.SIGHUP:
                    self._reload()
                elif signo == signal.SIGUSR1:
                    self._reopen_logs()
                elif self.stopping or self.lame_duck_until:
                    self._kill_all()
                    return 1
                else:
                    self.request_stop(signo)
                self._check_time()
            return 1 if self.failed else 0
        finally:
            self._kill_all()
            self._stop_metrics()
            for s in self.listeners:
                s.close()
            if self.metrics is not None:
                self.metrics.close()
            from zcopy.stats import remove_group

            remove_group(self.stats_kind)   # also the files of workers killed before they could close
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _WATCHED)

    def _timeout(self) -> float:
        if self.lame_duck_until:
            return max(0.01, min(_POLL, self.lame_duck_until - time.monotonic()))
        return _POLL

    def _check_time(self) -> None:
        """Deadlines and heartbeats, after every wake-up."""
        now = time.monotonic()
        if self.lame_duck_until and now >= self.lame_duck_until:
            self.stop()
        if self.stopping:
            if (self.pids or self.retiring) and now > self.kill_at:
                self._kill_all()
            return
        for pid, kill_at in list(self.retiring.items()):
            if now > kill_at:
                _signal(pid, signal.SIGKILL)
        gap, self._checked = now - self._checked, now
        if self.worker_timeout:
            beats = self.shared.beats
            if gap > _POLL + 1.0:
                # We did not run for a while ourselves: stopped with the whole
                # group (Ctrl-Z) or starved. Stale beats then say nothing about
                # the workers: they start counting again from now.
                for slot in self.pids.values():
                    beats[slot] = max(beats[slot], now)
                return
            for pid, slot in list(self.pids.items()):
                if now - beats[slot] > self.worker_timeout:
                    print(f"zcopy: worker {slot} (pid {pid}) made no progress for {now - beats[slot]:.1f}s; "
                          "replacing it", file=sys.stderr)
                    beats[slot] = now          # one kill per timeout, not one per poll until it is reaped
                    _signal(pid, signal.SIGKILL)

    def request_stop(self, signo: int = signal.SIGTERM) -> None:
        """A stop signal: /readyz turns 503 at once; the listeners close after
        the drain delay (the lame-duck phase), then the drain runs."""
        from zcopy.server.shared import DRAINING

        self.shared.phase = DRAINING
        if self.drain_delay > 0:
            print(f"zcopy: {signal.Signals(signo).name}: not ready (/readyz 503); draining in "
                  f"{self.drain_delay:g}s", file=sys.stderr)
            self.lame_duck_until = time.monotonic() + self.drain_delay
        else:
            self.stop()

    def stop(self) -> None:
        """Graceful: no new connections, workers finish what is in flight."""
        from zcopy.server.shared import DRAINING

        self.shared.phase = DRAINING
        self.lame_duck_until = 0.0
        self.stopping = True
        self.kill_at = time.monotonic() + self.config.drain_timeout + 2
        for s in self.listeners:
            s.close()
        for pid in [*self.pids, *self.retiring]:
            _signal(pid, signal.SIGTERM)

    # -- SIGHUP and SIGUSR1 ----------------------------------------------------------

    def _reload(self) -> None:
        if self.stopping or self.lame_duck_until:
            return
        if self.reloader is None:
            from zcopy.server.reload import Reloader

            self.reloader = Reloader()
        if self.shared.free_slots() < len(self.pids):
            print("zcopy: SIGHUP: workers replaced by earlier reloads are still draining; try again later",
                  file=sys.stderr)
            return
        changed, messages = self.reloader.run(self.config)
        for line in messages:
            print(f"zcopy: SIGHUP: {line}", file=sys.stderr)
        if not changed:
            return
        print(f"zcopy: SIGHUP: replacing {len(self.pids)} worker(s); the old ones finish what they serve",
              file=sys.stderr)
        kill_at = time.monotonic() + self.config.drain_timeout + 2
        for pid, slot in list(self.pids.items()):
            del self.pids[pid]
            self.retiring[pid] = kill_at
            _signal(pid, signal.SIGTERM)
            self._spawn(slot)

    def _reopen_logs(self) -> None:
        for pid in [*self.pids, *self.retiring]:
            _signal(pid, signal.SIGUSR1)

    # -- children ------------------------------------------------------------------

    def _fork(self) -> int:
        """fork; in the child: default signal mask, die with us."""
        sys.stdout.flush()
        sys.stderr.flush()
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:
            signal.pthread_sigmask(signal.SIG_SETMASK, set())
            # A terminal's hangup reaches the whole process group; only the
            # supervisor acts on it (and forwards SIGUSR1 where it means something).
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
            signal.signal(signal.SIGUSR1, signal.SIG_IGN)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            if self._prctl is not None:
                self._prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
            if os.getppid() != parent:     # we died before the prctl: nobody would tell
                os._exit(1)
        return pid

    def _spawn(self, slot: int) -> None:
        from zcopy.server import shared

        generation_slot = self.shared.take_generation_slot()
        self.shared.beats[slot] = time.monotonic()    # the timeout counts from the fork
        pid = self._fork()
        if pid == 0:  # the worker
            code = 1
            try:
                for i, s in enumerate(self.listeners):
                    if i != slot:
                        s.close()
                if self.metrics is not None:
                    self.metrics.close()
                shared.enter(self.shared, slot, generation_slot)
                code = self.worker_main(self.config, self.listeners[slot], slot)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        self.shared.hold(pid, generation_slot)
        self.pids[pid] = slot

    def _spawn_metrics(self) -> None:
        pid = self._fork()
        if pid == 0:
            code = 1
            try:
                for s in self.listeners:
                    s.close()
                if self._prctl is not None:     # `ps -o comm` / /proc/PID/comm tell it from the workers
                    import ctypes

                    name = ctypes.create_string_buffer(b"zcopy-metrics")
                    self._prctl(_PR_SET_NAME, ctypes.addressof(name), 0, 0, 0)
                from zcopy.stats.metrics import serve_metrics

                code = serve_metrics(self.metrics, self.stats_kind, os.getppid(), self._health)
            finally:
                sys.stderr.flush()
                os._exit(code)
        self.metrics_pid = pid

    def _health(self) -> tuple[bool, bool]:
        """(live, ready) for /healthz and /readyz, read in the metrics process:
        live while some worker's heartbeat is recent; ready while live and
        no stop signal has come."""
        from zcopy.server.shared import SERVING

        limit = self.worker_timeout or 30.0
        now = time.monotonic()
        live = any(now - beat <= limit for beat in self.shared.beats)
        return live, live and self.shared.phase == SERVING

    def _stop_metrics(self) -> None:
        if self.metrics_pid:
            _signal(self.metrics_pid, signal.SIGKILL)
            try:
                os.waitpid(self.metrics_pid, 0)
            except ChildProcessError:
                pass
            self.metrics_pid = 0

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.pids.clear()
                self.retiring.clear()
                self.metrics_pid = 0
                return
            if pid == 0:
                return
            self.shared.release(pid)
            if pid == self.metrics_pid:
                self.metrics_pid = 0
                if not self.stopping and self._may_restart(_METRICS, "metrics process", status):
                    self._spawn_metrics()
                continue
            self.retiring.pop(pid, None)
            slot = self.pids.pop(pid, None)
            if slot is None or self.stopping:
                continue
            if self._may_restart(slot, f"worker {slot}", status):
                self._spawn(slot)

    def _may_restart(self, key: int, name: str, status: int) -> bool:
        now = time.monotonic()
        recent = [t for t in self.crashes.get(key, []) if now - t < RESTART_WINDOW] + [now]
        self.crashes[key] = recent
        how = (f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status)
               else f"exit code {os.waitstatus_to_exitcode(status)}")
        if len(recent) > MAX_RESTARTS:
            print(f"zcopy: {name} died {len(recent)} times in {RESTART_WINDOW:g}s ({how}); stopping",
                  file=sys.stderr)
            self.failed = True
            self.stop()
            return False
        print(f"zcopy: {name} died ({how}); restarting", file=sys.stderr)
        return True

    def _kill_all(self) -> None:
        for pid in [*self.pids, *self.retiring]:
            _signal(pid, signal.SIGKILL)
        for pid in [*self.pids, *self.retiring]:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
            self.pids.pop(pid, None)
            self.retiring.pop(pid, None)


def _load_prctl():
    """libc's prctl, or None where it cannot be had (then children only check
    their parent at start)."""
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    return prctl


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
