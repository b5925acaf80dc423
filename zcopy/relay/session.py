"""One relayed connection: a client socket, an upstream socket, two pumps.

Life: CONNECTING (non-blocking connect to the upstream; the client's bytes
wait in its socket) -> RELAYING (both pumps run on every readiness edge) ->
CLOSED. How it ended is one word, logged with the byte counts:

- ``closed``: EOF came both ways and every byte was delivered.
- ``client_reset`` / ``upstream_reset``: that side reset (or broke the pipe);
  the other side is reset too (SO_LINGER 0), so it learns the stream was
  cut rather than seeing a clean EOF that would pass for a complete reply.
- ``upstream_refused`` / ``upstream_timeout`` / ``upstream_unreachable``:
  the connect failed; the client is closed cleanly (FIN, after discarding
  what it already sent, so the kernel does not answer it with a RST).
- ``max_connections``: the worker already had ``--max-connections``; the
  client is closed cleanly at once, no upstream is dialled.
- ``idle_timeout``: no byte moved either way for ``--idle-timeout``.
- ``drain_timeout``: still open when a graceful stop ran out of time.
- ``<side>_<errno>`` for any other socket error, ``no_pipe_<errno>`` when
  the worker ran out of fds for a pipe.
"""

from __future__ import annotations

import errno
import math
import select
import socket
import struct

from zcopy.engines import NoPipe
from zcopy.loop import EV_IN, EV_OUT
from zcopy.relay.pump import MORE, PARKED, Pump, SideFailed

CONNECTING, RELAYING, CLOSED = 0, 1, 2
_ABORT = struct.pack("ii", 1, 0)    # SO_LINGER on, 0 s: close() sends RST
_WORDS = {errno.ECONNRESET: "reset", errno.EPIPE: "reset", errno.ECONNABORTED: "reset",
          errno.ECONNREFUSED: "refused", errno.ETIMEDOUT: "timeout",
          errno.ENETUNREACH: "unreachable", errno.EHOSTUNREACH: "unreachable"}
#: At most this much already-sent client data is discarded before a clean close.
_DISCARD_LIMIT = 1 << 20


def ending(side: str, err: int) -> str:
    word = _WORDS.get(err) or errno.errorcode.get(err, str(err)).lower()
    return f"{side}_{word}"


class End:
    """One socket of a session and what the last syscall said about it."""

    __slots__ = ("session", "sock", "fd", "name", "readable", "writable")

    def __init__(self, session: "Session", sock: socket.socket, name: str) -> None:
        self.session = session
        self.sock = sock
        self.fd = sock.fileno()
        self.name = name
        self.readable = True     # bytes may be waiting from before we registered
        self.writable = False if name == "upstream" else True

    def on_event(self, events: int) -> None:
        """What the loop calls for this socket's fd."""
        self.session.on_event(self, events)


class Session:
    __slots__ = ("worker", "client", "upstream", "pumps", "addr", "state", "started", "deadline",
                 "queued", "wake_at", "how", "lead", "attempt")

    def __init__(self, worker, sock: socket.socket, addr) -> None:
        self.worker = worker
        self.addr = addr
        self.client = End(self, sock, "client")
        self.upstream = None
        self.pumps: tuple[Pump, Pump] | tuple = ()
        self.state = CONNECTING
        self.started = worker.now
        self.deadline = worker.now + worker.config.connect_timeout
        self.queued = False       # in the worker's ready list
        self.wake_at = 0.0        # a rate-limit timer is set for this time
        self.how = ""
        self.lead = 0             # which pump runs first (see run)
        self.attempt = 0          # index in config.addresses being dialled

    # -- connecting -----------------------------------------------------------

    def start(self, attempt: int = 0) -> None:
        """Dial the upstream: its ``attempt``-th address (a name's further
        addresses are tried in turn when one refuses or is unreachable)."""
        cfg = self.worker.config
        family, sockaddr = cfg.addresses[attempt]
        self.attempt = attempt
        try:
            up = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
        except OSError as exc:
            self.close_cleanly("no_socket_" + errno.errorcode.get(exc.errno, "error").lower())
            return
        up.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.upstream = End(self, up, "upstream")
        self.worker.watch(self.upstream)
        err = up.connect_ex(sockaddr)
        if err == 0:
            self._connected()
        elif err != errno.EINPROGRESS:
            self._dial_failed(err)

    def _check_connect(self) -> None:
        err = self.upstream.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self._dial_failed(err)
        else:
            self._connected()

    def _dial_failed(self, err: int) -> None:
        if self.attempt + 1 < len(self.worker.config.addresses):
            self.worker.unwatch(self.upstream)
            self.upstream.sock.close()
            self.upstream = None
            self.start(self.attempt + 1)
        else:
            self.close_cleanly(ending("upstream", err))

    def _connected(self) -> None:
        w = self.worker
        self.state = RELAYING
        self.deadline = w.now + w.config.idle_timeout
        limiter = w.limiter_for_session()
        c, u = self.client, self.upstream
        self.pumps = (Pump(c, u, w.engine, limiter, w, w.config.budget, self.park),
                      Pump(u, c, w.engine, limiter, w, w.config.budget, self.park))
        self.run()

    def close_cleanly(self, how: str) -> None:
        """Close the client cleanly (no upstream, or its connect failed): drop
        what it sent so close() sends FIN, not RST."""
        sock = self.client.sock
        dropped = 0
        try:
            while dropped < _DISCARD_LIMIT:
                data = sock.recv(65536)
                if not data:
                    break
                dropped += len(data)
        except OSError:
            pass
        self.close(how)

    # -- events ---------------------------------------------------------------

    def on_event(self, end: End, events: int) -> None:
        if events & EV_IN:
            end.readable = True
        if events & EV_OUT:
            end.writable = True
        if self.state == CONNECTING:
            if end is self.upstream and events & EV_OUT:
                self._check_connect()
            return
        if events & select.EPOLLERR:
            err = end.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self._failed(end, err)
                return
        self.run()

    def run(self) -> None:
        """Run both directions as far as they go without blocking."""
        self.queued = False       # (run from the ready queue, or earlier by an event)
        if self.state != RELAYING:
            return
        w = self.worker
        try:
            before = self.pumps[0].moved + self.pumps[1].moved
            # Both directions draw on the same buckets: when the one that ran
            # first took tokens, the other goes first next time (else it could
            # find them spent on every wakeup and never move).
            first = self.pumps[self.lead]
            taken = first.moved + first.chan.pending
            for pump in (first, self.pumps[1 - self.lead]):
                if pump.done:
                    continue
                state = pump.run()
                if state is MORE:
                    if not self.queued:
                        self.queued = True
                        w.ready.append(self)
                elif state is PARKED and pump.wake_at != math.inf:
                    self.park(pump.wake_at)
            if first.moved + first.chan.pending != taken:
                self.lead = 1 - self.lead
            if self.pumps[0].moved + self.pumps[1].moved != before:
                self.deadline = w.now + w.config.idle_timeout
        except SideFailed as exc:
            self._failed(exc.end, exc.exc.errno or errno.EIO)
            return
        except NoPipe as exc:
            self.close("no_pipe_" + errno.errorcode.get(exc.exc.errno, "error").lower())
            return
        if self.pumps[0].done and self.pumps[1].done:
            self.close("closed")

    def park(self, when: float) -> None:
        """Run again at ``when`` (a rate-limit timer; one at a time, the nearest)."""
        if not self.wake_at or when < self.wake_at:
            self.wake_at = when
            self.worker.stats.parked += 1
            self.worker.set_timer(when, self)

    def on_timer(self, at: float) -> None:
        """A rate-limit timer fired (ignored if closed or a nearer one replaced it)."""
        if self.wake_at == at and self.state != CLOSED:
            self.wake_at = 0.0
            self.run()

    def on_timeout(self) -> None:
        if self.state == CONNECTING:
            self.close_cleanly("upstream_timeout")
        else:
            self.close("idle_timeout")

    # -- ending ---------------------------------------------------------------

    def _failed(self, end: End, err: int) -> None:
        """A socket error on ``end``: reset the other side too."""
        other = self.upstream if end is self.client else self.client
        if other is not None:
            try:
                other.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _ABORT)
            except OSError:
                pass
        self.close(ending(end.name, err))

    def close(self, how: str) -> None:
        """Release channels, close both sockets, report. Idempotent."""
        if self.state == CLOSED:
            return
        self.state = CLOSED
        self.how = how
        for pump in self.pumps:
            pump.chan.close()
            if pump.limiter is not None:
                pump.limiter.forget(pump, self.worker.now)
        for end in (self.client, self.upstream):
            if end is not None:
                self.worker.unwatch(end)
                end.sock.close()
        self.worker.finished(self)

    @property
    def sent_up(self) -> int:
        return self.pumps[0].moved if self.pumps else 0

    @property
    def sent_down(self) -> int:
        return self.pumps[1].moved if self.pumps else 0
