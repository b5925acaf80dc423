"""Transfer engines: the only code in zcopy that moves file bytes.

See ``zcopy.engines.base`` for the interface and docs/engines.md for the
design of each engine. ``create(name)`` is how everything else gets one, so
the rest of zcopy refers to engines by the names the profile and the flags
use, never by class.
"""

from __future__ import annotations

from zcopy.engines.base import (Channel, Engine, EngineStats, FileShrank, NoPipe, PeerClosed, Progress,
                                ReceiveEngine, RelayEngine, Transfer)

#: Engines with ``start_send`` (file -> socket), fastest first on a typical kernel.
SEND_ENGINES = ("sendfile", "splice", "mmap_send", "read_send")
#: Engines with ``start_recv`` (socket -> file).
RECV_ENGINES = ("splice", "recv_pwrite")
#: Engines with ``start_relay`` (socket -> socket, ``zcopy relay``).
RELAY_ENGINES = ("splice", "copy")
ENGINES = ("sendfile", "splice", "mmap_send", "read_send", "recv_pwrite", "copy")


def create(name: str, *, pipe_pool=None, budget: int = 1 << 20,
           chunk: int | None = None) -> "Engine | ReceiveEngine | RelayEngine":
    """A new engine by name. ``pipe_pool`` (a ``zcopy.pipes.PipePool``) is
    used by ``splice`` only; without one the engine makes and owns a pool of
    ``splice.DEFAULT_PIPE_SIZE`` pipes. ``budget`` caps the bytes one ``step``
    moves; ``chunk`` is the buffer size of ``copy``. Call ``close()`` on the
    engine when done with it."""
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
    if name == "copy":
        from zcopy.engines.copy import DEFAULT_CHUNK, CopyEngine
        return CopyEngine(chunk=chunk or DEFAULT_CHUNK)
    raise ValueError(f"unknown engine {name!r} (choose from {', '.join(ENGINES)})")


__all__ = ["Channel", "Engine", "EngineStats", "FileShrank", "NoPipe", "PeerClosed", "Progress", "ReceiveEngine",
           "RelayEngine", "Transfer", "create", "SEND_ENGINES", "RECV_ENGINES", "RELAY_ENGINES", "ENGINES"]
