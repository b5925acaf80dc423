"""``zcopy relay``: a TCP proxy that moves bytes socket -> pipe -> socket.

Each accepted client gets an upstream connection and a ``Session`` with two
``Pump``s, one per direction. A pump moves bytes through a ``Channel``: a
pooled pipe (``splice``, the bytes never enter user space) or a reused
buffer (``copy``, recv_into + send). Workers run one edge-triggered epoll
loop each on an SO_REUSEPORT listener, like ``zcopy serve``; the serve
supervisor forks and drains them.

Modules, in reading order: ``config`` (what a worker is told), ``bucket``
(token-bucket rate limits), ``channels`` (where bytes wait), ``pump`` (one
direction's state machine), ``session`` (two pumps, two sockets, how a
connection ends), ``stats`` (counters and the per-connection log),
``worker`` (the loop); forking workers is ``zcopy.server.supervisor``'s job.
"""

from zcopy.relay.config import RelayConfig
from zcopy.relay.worker import RelayWorker

__all__ = ["RelayConfig", "RelayWorker"]
