"""zcopy: a Linux zero-copy file transfer toolkit.

The package is organised by the path bytes take (see docs/architecture.md):
``probes`` (a sibling package) measures the kernel, ``zcopy.profile`` turns
findings into decisions, ``zcopy.engines`` move bytes, ``zcopy.http`` is the
sans-I/O protocol layer and ``zcopy.server`` owns sockets and processes.
"""

__version__ = "0.1.0"

from zcopy import hotpath as _hotpath

_hotpath.install()      # before any compiled module is imported: a stale one runs from its .py
