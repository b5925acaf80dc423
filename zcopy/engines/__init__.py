"""Transfer engines: the only code in zcopy that moves file bytes.

See ``zcopy.engines.base`` for the interface and docs/engines.md for the
design of each engine. ``create(name)`` is how everything else gets one, so
the rest of zcopy refers to engines by the names the profile and the flags
use, never by class.
"""

from __future__ import annotations

from zcopy.engines.base import (Engine, EngineStats, FileShrank, PeerClosed, Progress, ReceiveEngine,
                                Transfer)

#: Engines with ``start_send`` (file -> socket), fastest first on a typical kernel.
SEND_ENGINES = ("sendfile", "splice", "mmap_send", "read_send")
#: Engines with ``start_recv`` (socket -> file).
RECV_ENGINES = ("splice", "recv_pwrite")
ENGINES = ("sendfile", "splice", "mmap_send", "read_send", "recv_pwrite")


def create(name: str, *, pipe_pool=None, budget: int = 1 << 20) -> "Engine | ReceiveEngine":
    """A new engine by name. ``pipe_pool`` (a ``zcopy.pipes.PipePool``) is
    used by ``splice`` only; without one the engine makes and owns a pool of
    ``splice.DEFAULT_PIPE_SIZE`` pipes. ``budget`` caps the bytes one ``step``
    moves. Call ``close()`` on the engine when done with it."""
    if budget <= 0:
        raise ValueError(f"budget must be positive, not {budget}")
    if name == "sendfile":
        from zcopy.engines.sendfile import SendfileEngine
        return SendfileEngine(budget=budget)
    if name == "splice":
        from zcopy.engines.splice import SpliceEngine
        return SpliceEngine(pipe_pool=pipe_pool, budget=budget)
    if name == "mmap_send":
        from zcopy.engines.mmap_send import MmapSendEngine
        return MmapSendEngine(budget=budget)
    if name == "read_send":
        from zcopy.engines.read_send import ReadSendEngine
        return ReadSendEngine(budget=budget)
    if name == "recv_pwrite":
        from zcopy.engines.recv_pwrite import RecvPwriteEngine
        return RecvPwriteEngine(budget=budget)
    raise ValueError(f"unknown engine {name!r} (choose from {', '.join(ENGINES)})")


__all__ = ["Engine", "EngineStats", "FileShrank", "PeerClosed", "Progress", "ReceiveEngine", "Transfer",
           "create", "SEND_ENGINES", "RECV_ENGINES", "ENGINES"]
