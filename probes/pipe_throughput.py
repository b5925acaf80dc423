"""How fast splice(2) moves a file through a pipe into a socket, per pipe size.

A bigger pipe means fewer splice calls per byte, but pipe pages are charged to
the user (fcntl(2) F_SETPIPE_SZ, /proc/sys/fs/pipe-user-pages-soft), and every
pooled pipe holds them. So the probe times the real splice engine copying a
file into a Unix socket whose reader is a separate process (the same
measurement ``zcopy bench`` uses, from ``zcopy.measure``) at each size, and
recommends the smallest size within 5% of the best.

Only sizes F_SETPIPE_SZ really grants are timed: past pipe-max-size or the
per-user budget the kernel refuses (EPERM) and the pool would quietly keep a
smaller pipe, so a "1 MiB" sample would measure a 64 KiB pipe. Sizes the
kernel refused are listed with the reason instead.

Finding ``pipe.throughput``: value ``{"sizes": {"<bytes>": GB/s, ...},
"best_size": bytes, "refused": {"<bytes>": why}}``; ``skipped`` with
``--quick``, ``degraded`` when no size could be granted at all.
"""

from __future__ import annotations

import fcntl
import os
from typing import Iterable, Iterator

from probes.finding import Finding, Status
from probes.kernel import errname
from probes.resources import Resources
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
    sizes, refused = granted(PIPE_SIZES)
    refused_json = {str(size): why for size, why in refused.items()}
    not_granted = "; ".join(f"{format_size(size)} not granted ({why})" for size, why in refused.items())
    if not sizes:
        yield Finding("pipe.throughput", Status.DEGRADED, {"sizes": {}, "best_size": None, "refused": refused_json},
                      f"F_SETPIPE_SZ granted none of the sizes to measure: {not_granted}")
        return
    directory = ctx.path if os.path.isdir(ctx.path) and os.access(ctx.path, os.W_OK) else None
    with temp_file(FILE_SIZE, dir=directory) as fd:
        gbps = pipe_size_sweep(fd, FILE_SIZE, RUNS, tuple(sizes))
    best = pick_pipe_size(gbps, TOLERANCE)
    rates = ", ".join(f"{format_size(size)} {rate:.2f} GB/s" for size, rate in gbps.items())
    yield Finding(
        "pipe.throughput", Status.OK,
        {"sizes": {str(size): round(rate, 3) for size, rate in gbps.items()}, "best_size": best,
         "refused": refused_json},
        f"splice file->pipe->Unix socket, {format_size(FILE_SIZE)} x {RUNS} runs per size (median): "
        f"{rates}; {format_size(best)} is the smallest within {TOLERANCE:.0%} of the best"
        + (f"; {not_granted}" if refused else ""))


def granted(sizes: Iterable[int]) -> tuple[list[int], dict[int, str]]:
    """The sizes F_SETPIPE_SZ grants this process in full right now, and why
    each other one was refused (errno, or what was granted instead)."""
    ok: list[int] = []
    refused: dict[int, str] = {}
    for size in sizes:
        with Resources() as res:
            r, w = res.pipe()
            try:
                got = fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, size)
            except OSError as exc:
                refused[size] = errname(exc)
                continue
        if got < size:
            refused[size] = f"granted only {got}"
        else:
            ok.append(size)
    return ok, refused
