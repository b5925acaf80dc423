"""Relay counters, the per-connection log, and the snapshot ``zcopy top`` reads.

Byte counts live in the engine's ``EngineStats`` (bumped by the pumps); the
rest is bumped here once per connection, when it ends. A connection's record
is written whatever way it ended, a failed side included, so the bytes that
did move are never lost with it. ``snapshot`` is the only reader; its shape
is documented in docs/relay.md.
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter, deque

from zcopy.stats.inflight import TransferRates, busiest, unsent

#: Closed connections kept in the snapshot, newest last.
RECENT = 32


class RelayStats:
    __slots__ = ("started", "accepted", "closed", "errors", "ended", "up", "down", "recent", "parked", "_rates")

    def __init__(self) -> None:
        self.started = time.time()
        self.accepted = 0
        self.closed = 0
        self.errors: Counter = Counter()   # every ending but "closed", plus accept failures
        self.ended: Counter = Counter()    # every ending, "closed" included
        self.up = 0                        # bytes client -> upstream, closed connections
        self.down = 0                      # bytes upstream -> client, closed connections
        self.recent: deque = deque(maxlen=RECENT)
        self.parked = 0                    # times a direction waited for rate-limit tokens
        self._rates = TransferRates()

    def error(self, kind: str) -> None:
        self.errors[kind] += 1

    def connection(self, record: dict) -> None:
        self.closed += 1
        how = record["end"]
        self.ended[how] += 1
        if how != "closed":
            self.errors[how] += 1
        self.up += record["up"]
        self.down += record["down"]
        self.recent.append(record)

    def snapshot(self, engines: dict, pipes: dict | None = None, sessions=(), now: float = 0.0,
                 upstream: str = "") -> dict:
        """Plain data (JSON-ready). ``engines``: name -> engine (``.stats``,
        ``.zero_copy``); ``sessions``: the open connections, listed in ``inflight``."""
        by_engine = {name: {**e.stats.snapshot(), "zero_copy": e.zero_copy} for name, e in engines.items()}
        inflight = self._inflight(sessions, now, upstream)
        return {
            "kind": "relay",
            "started": self.started,
            "connections": {"accepted": self.accepted, "active": self.accepted - self.closed,
                            "closed": self.closed},
            "bytes": {"client_to_upstream": self.up, "upstream_to_client": self.down},
            "bytes_sent": sum(e["bytes_sent"] for e in by_engine.values()),
            "bytes_received": sum(e["bytes_received"] for e in by_engine.values()),
            "engines": by_engine,
            "errors": dict(self.errors),
            "ended": dict(self.ended),
            "rate_limit_waits": self.parked,
            "pipes": pipes,
            "recent": list(self.recent),
            "inflight": busiest(inflight),
            "inflight_count": len(inflight),
        }

    def _inflight(self, sessions, now: float, upstream: str) -> list[dict]:
        """Open connections: client, bytes moved both ways, rate since the previous snapshot."""
        sessions = list(sessions)
        moved = [s.sent_up + s.sent_down for s in sessions]
        # what the peers took, not what the sockets' send queues still hold
        rates = self._rates.measure([((id(s), s.started), n - _unsent(s), s.started)
                                     for s, n in zip(sessions, moved)], now)
        out = []
        for s, n, rate in zip(sessions, moved, rates):
            out.append({"client": address(*s.addr[:2]), "path": f"→ {upstream}", "done": n, "total": 0,
                        "up": s.sent_up, "down": s.sent_down, "rate": round(rate, 1),
                        "seconds": round(now - s.started, 3), "direction": "both"})
        return out


def _unsent(session) -> int:
    return sum(unsent(end.fd) for end in (session.client, session.upstream) if end is not None)


def address(host: str, port: int) -> str:
    """host:port, [v6]:port."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def record(session, now: float, engine: str, upstream: str) -> dict:
    """What one connection did, as logged and as kept in ``recent``."""
    return {"client": address(*session.addr[:2]), "upstream": upstream, "engine": engine,
            "up": session.sent_up, "down": session.sent_down,
            "duration": round(now - session.started, 6), "end": session.how}


class ConnLog:
    """One line per connection, to a file (O_APPEND, so workers can share
    it) or stderr. Lines are gathered during a loop turn and written with
    one ``write`` at its end."""

    def __init__(self, path: str | None) -> None:
        if path is None or path == "-":
            self.fd, self.own = sys.stderr.fileno(), False
        else:
            self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
            self.own = True
        self.lines: list[str] = []

    def log(self, rec: dict) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime())
        self.lines.append(f"{stamp} relay client={rec['client']} upstream={rec['upstream']} "
                          f"engine={rec['engine']} up={rec['up']} down={rec['down']} "
                          f"duration={rec['duration']:.3f}s end={rec['end']}\n")

    def flush(self) -> None:
        if self.lines:
            data = "".join(self.lines).encode()
            self.lines.clear()
            try:
                while data:
                    data = data[os.write(self.fd, data):]
            except OSError:
                pass   # a closed stderr must not stop the relay

    def close(self) -> None:
        self.flush()
        if self.own:
            os.close(self.fd)
            self.own = False
