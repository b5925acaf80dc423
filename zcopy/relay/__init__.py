"""``zcopy relay``: a TCP proxy that moves bytes socket -> pipe -> socket.

Each accepted client gets an upstream connection and a ``Session`` with two
``Pump``s, one per direction. A pump moves bytes through a channel of the
worker's relay engine (``zcopy.engines``: ``splice``, a pooled pipe, the
bytes never enter user space; or ``copy``, a reused buffer, recv_into +
send). Workers run the shared loop (``zcopy.loop``) on an SO_REUSEPORT
listener, like ``zcopy serve``; the serve supervisor forks and drains them.

Modules, in reading order: ``config`` (what a worker is told), ``bucket``
(token-bucket rate limits), ``pump`` (one direction's state machine),
``session`` (two pumps, two sockets, how a connection ends), ``stats``
(counters and the per-connection log), ``worker`` (what the loop runs);
forking workers is ``zcopy.server.supervisor``'s job.
"""

from zcopy.relay.config import RelayConfig
from zcopy.relay.worker import RelayWorker

__all__ = ["RelayConfig", "RelayWorker"]
