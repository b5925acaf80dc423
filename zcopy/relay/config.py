"""Everything a relay worker needs to know, decided once at start."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field


@dataclass
class RelayConfig:
    upstream: tuple                    # resolved sockaddr, e.g. ("127.0.0.1", 5201)
    upstream_family: int = socket.AF_INET
    upstream_name: str = ""            # "host:port" as given, for logs
    more_upstreams: list = field(default_factory=list)   # the name's other (family, sockaddr), in order
    bind: str = "127.0.0.1"            # listen address (``bind``/``port``/``workers``/
    port: int = 0                      # ``drain_timeout`` are what the serve supervisor reads)
    workers: int = 1
    engine: str = "splice"             # "splice" | "copy"
    pipe_size: int = 1 << 20           # splice: pipe capacity; copy: buffer size
    budget: int = 4 << 20              # bytes one direction may read per loop turn
    rate: float | None = None          # bytes/s for all connections of the relay (split over workers)
    conn_rate: float | None = None     # bytes/s per connection
    max_connections: int = 10000       # per worker
    idle_timeout: float = 300.0        # no byte moved either way for this long: close
    connect_timeout: float = 10.0      # upstream connect must finish within this
    drain_timeout: float = 30.0        # SIGTERM: let connections finish this long
    log: str | None = None             # per-connection log path; None: stderr
    reasons: dict[str, str] = field(default_factory=dict)

    @property
    def worker_rate(self) -> float | None:
        """Each worker enforces its share of ``--rate`` on its own (no shared
        state between processes on the hot path)."""
        return self.rate / self.workers if self.rate else None

    @property
    def addresses(self) -> list[tuple[int, tuple]]:
        """(family, sockaddr) to dial, in order: a connection tries the next
        when one refuses or is unreachable (``localhost`` may be ::1 first
        while the upstream listens on 127.0.0.1 only)."""
        return [(self.upstream_family, self.upstream), *self.more_upstreams]
