"""Run probe modules with a time bound, turning any failure into a Finding.

A probe module exposes ``probe(ctx: Context) -> Iterable[Finding]``. The
runner gives each module ``ctx.timeout`` seconds (an interval timer raises
``ProbeTimeout`` inside whatever syscall is blocking) and converts an
unexpected exception into an ``error`` Finding, so one broken probe never
hides the others. Cleanup is the probe's own ``Resources`` scope.
"""

from __future__ import annotations

import contextlib
import importlib
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

from probes import resources
from probes.finding import Finding, Status

#: Probe modules in report order. Each is ``probes.<name>``. pipe_throughput
#: is last: it is the slow one, and it measures with the pipe sizes ``pipes`` found.
MODULES: list[str] = ["sendfile", "splice", "pipes", "copy_file_range", "ktls", "io_uring",
                      "msg_zerocopy", "cork", "small_reply", "notsent_lowat", "filesystem", "nics", "pipe_throughput"]


class ProbeTimeout(Exception):
    """Raised inside a probe that overran its time bound."""


@dataclass
class Context:
    """What a probe may be told by the caller."""

    path: str = "."            # --path: the filesystem to test sendfile/splice from
    to: str | None = None      # --to: an address whose egress NIC is reported
    quick: bool = False        # serve --auto: skip the slow throughput measurements
    timeout: float = 10.0      # seconds per probe module
    extra: dict = field(default_factory=dict)


@contextlib.contextmanager
def time_bound(seconds: float) -> Iterator[None]:
    """Raise ProbeTimeout in the main thread after ``seconds``.

    Outside the main thread (where signals cannot be used) this is a no-op and
    probes rely on their own non-blocking fds and socket timeouts.
    """
    if threading.current_thread() is not threading.main_thread() or seconds <= 0:
        yield
        return
    armed = True

    def _expire(signum, frame):
        # It strikes at most once, never inside an ``uninterrupted`` block (it is put
        # off a millisecond instead: the signal may have come just before the block
        # blocked it), and never once the bound has ended.
        nonlocal armed
        if not armed:
            return
        if resources.held():
            signal.setitimer(signal.ITIMER_REAL, 0.001)
            return
        armed = False
        raise ProbeTimeout(f"did not finish within {seconds:g}s")

    old = signal.signal(signal.SIGALRM, _expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        armed = False       # first: no call (where a pending handler could run) comes before it
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def run_module(name: str, ctx: Context) -> list[Finding]:
    """Run ``probes.<name>.probe(ctx)``; never raises."""
    started = time.monotonic()
    findings: list[Finding] = []
    results = None
    mark = resources.open_scopes()
    try:
        module = importlib.import_module(f"probes.{name}")
        with time_bound(ctx.timeout):
            results = module.probe(ctx)
            for finding in results:
                findings.append(finding)
    except ProbeTimeout as exc:
        findings.append(Finding(f"{name}.probe", Status.ERROR, None, f"probe timed out: {exc}"))
    except Exception as exc:  # a probe bug must not hide the other probes
        findings.append(Finding(f"{name}.probe", Status.ERROR, None, f"probe failed: {type(exc).__name__}: {exc}"))
    finally:
        # A generator probe interrupted between two findings still holds its
        # Resources scope open: close it now, not whenever GC gets to it.
        close = getattr(results, "close", None)
        if close:
            close()
        resources.close_left_open(mark)     # a bound that struck on a scope's way out
    elapsed = time.monotonic() - started
    for f in findings:
        f.seconds = f.seconds or elapsed
    return findings


def run_all(ctx: Context, modules: Iterable[str] | None = None,
            on_progress: Callable[[str], None] | None = None) -> list[Finding]:
    findings: list[Finding] = []
    for name in modules if modules is not None else MODULES:
        if on_progress:
            on_progress(name)
        findings.extend(run_module(name, ctx))
    return findings
