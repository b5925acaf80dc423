"""How fast splice(2) moves a file through a pipe into a socket, per pipe size.

A bigger pipe means fewer splice calls per byte, but pipe pages are charged to
the user (fcntl(2) F_SETPIPE_SZ, /proc/sys/fs/pipe-user-pages-soft), and every
pooled pipe holds them. So the probe times the real splice engine copying a
file into a Unix socket whose reader is a separate process (the same
measurement ``zcopy bench`` uses, from ``zcopy.measure``) at each size, and
recommends the smallest size within 5% of the best.

Finding ``pipe.throughput``: value ``{"sizes": {"<bytes>": GB/s, ...},
"best_size": bytes}``; ``skipped`` with ``--quick``.
"""

from __future__ import annotations

import os
from typing import Iterator

from probes.finding import Finding, Status
from zcopy.measure import PIPE_SIZES, pick_pipe_size, pipe_size_sweep, temp_file
from zcopy.units import format_size

#: Small enough to stay well inside the probe's time bound on a slow VM.
FILE_SIZE = 64 << 20
RUNS = 5
TOLERANCE = 0.05


def probe(ctx) -> Iterator[Finding]:
    if ctx.quick:
        yield Finding("pipe.throughput", Status.SKIPPED, None, "throughput measurement skipped (--quick)")
        return
    directory = ctx.path if os.path.isdir(ctx.path) and os.access(ctx.path, os.W_OK) else None
    with temp_file(FILE_SIZE, dir=directory) as fd:
        gbps = pipe_size_sweep(fd, FILE_SIZE, RUNS, PIPE_SIZES)
    best = pick_pipe_size(gbps, TOLERANCE)
    rates = ", ".join(f"{format_size(size)} {rate:.2f} GB/s" for size, rate in gbps.items())
    yield Finding(
        "pipe.throughput", Status.OK,
        {"sizes": {str(size): round(rate, 3) for size, rate in gbps.items()}, "best_size": best},
        f"splice file->pipe->Unix socket, {format_size(FILE_SIZE)} x {RUNS} runs per size (median): "
        f"{rates}; {format_size(best)} is the smallest within {TOLERANCE:.0%} of the best")
