"""The supervisor: bind, fork workers, restart the ones that die, drain on stop.

It is the only process that decides anything about the group. Signals are
blocked and taken synchronously with ``sigtimedwait`` so there is no handler
re-entrancy to reason about:

- SIGCHLD: reap; a worker that died while we were not stopping is restarted
  on its own listener (connections queued there wait for the new worker). A
  slot that crashes more than ``MAX_RESTARTS`` times in ``RESTART_WINDOW``
  seconds stops the server with an error instead of looping.
- first SIGTERM/SIGINT: close the listeners, forward SIGTERM (workers drain
  in-flight transfers), wait up to the drain timeout, then SIGKILL stragglers.
- second SIGTERM/SIGINT: SIGKILL every worker and exit at once.
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
_STOP = {signal.SIGTERM, signal.SIGINT}
_WATCHED = _STOP | {signal.SIGCHLD}


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
    """One SO_REUSEPORT listener per worker, all on the same port."""
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
    ``stats_kind="relay"`` (the folder of live snapshots, see zcopy.stats)."""

    def __init__(self, config: ServeConfig, listeners: list[socket.socket], worker_main=None,
                 stats_kind: str = "serve") -> None:
        if worker_main is None:
            from zcopy.server.worker import worker_main
        self.worker_main = worker_main
        self.stats_kind = stats_kind
        self.config = config
        self.listeners = listeners
        self.pids: dict[int, int] = {}        # pid -> slot
        self.crashes: dict[int, list[float]] = {}
        self.stopping = False
        self.kill_at = 0.0
        self.failed = False

    def run(self) -> int:
        signal.pthread_sigmask(signal.SIG_BLOCK, _WATCHED)
        try:
            for slot in range(len(self.listeners)):
                self._spawn(slot)
            while self.pids or not self.stopping:
                info = signal.sigtimedwait(_WATCHED, 0.5)
                if info is not None:
                    if info.si_signo == signal.SIGCHLD:
                        self._reap()
                    elif self.stopping:
                        self._kill_all()
                        return 1
                    else:
                        self.stop()
                else:
                    self._reap()   # a SIGCHLD may have coalesced with another
                if self.stopping and self.pids and time.monotonic() > self.kill_at:
                    self._kill_all()
            return 1 if self.failed else 0
        finally:
            self._kill_all()
            for s in self.listeners:
                s.close()
            from zcopy.stats import remove_group

            remove_group(self.stats_kind)   # also the files of workers killed before they could close
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _WATCHED)

    def stop(self) -> None:
        """Graceful: no new connections, workers finish what is in flight."""
        self.stopping = True
        self.kill_at = time.monotonic() + self.config.drain_timeout + 2
        for s in self.listeners:
            s.close()
        for pid in self.pids:
            _signal(pid, signal.SIGTERM)

    def _spawn(self, slot: int) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                signal.pthread_sigmask(signal.SIG_SETMASK, set())
                for i, s in enumerate(self.listeners):
                    if i != slot:
                        s.close()
                code = self.worker_main(self.config, self.listeners[slot], slot)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        self.pids[pid] = slot

    def _reap(self) -> None:
        while self.pids:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.pids.clear()
                return
            if pid == 0:
                return
            slot = self.pids.pop(pid, None)
            if slot is None or self.stopping:
                continue
            self._restart(slot, status)

    def _restart(self, slot: int, status: int) -> None:
        now = time.monotonic()
        recent = [t for t in self.crashes.get(slot, []) if now - t < RESTART_WINDOW] + [now]
        self.crashes[slot] = recent
        how = (f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status)
               else f"exit code {os.waitstatus_to_exitcode(status)}")
        if len(recent) > MAX_RESTARTS:
            print(f"zcopy: worker {slot} died {len(recent)} times in {RESTART_WINDOW:g}s ({how}); stopping",
                  file=sys.stderr)
            self.failed = True
            self.stop()
            return
        print(f"zcopy: worker {slot} died ({how}); restarting", file=sys.stderr)
        self._spawn(slot)

    def _kill_all(self) -> None:
        for pid in list(self.pids):
            _signal(pid, signal.SIGKILL)
        for pid in list(self.pids):
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
            self.pids.pop(pid, None)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
