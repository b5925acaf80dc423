"""Transfer engines: the only code in zcopy that moves file bytes.

See ``zcopy.engines.base`` for the interface and docs/engines.md for the
design of each engine.
"""

from zcopy.engines.base import Engine, EngineStats, FileShrank, PeerClosed, Progress, Transfer

__all__ = ["Engine", "EngineStats", "FileShrank", "PeerClosed", "Progress", "Transfer"]
