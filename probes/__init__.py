"""Probes: ask the running kernel what it really does.

Each module here opens real fds, makes the real syscall and records what
happened as ``Finding`` objects (see docs/probe.md for every id). A probe
never guesses from a kernel version when it can try the thing, is bounded in
time, and closes everything it opened even when it fails.
"""

from probes.finding import Finding, Status
from probes.resources import Resources
from probes.runner import Context, run_all, run_module

__all__ = ["Finding", "Status", "Resources", "Context", "run_all", "run_module"]
