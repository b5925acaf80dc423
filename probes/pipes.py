"""Pipes: how big the kernel lets them get, and how many a user may hold.

fcntl(2) F_SETPIPE_SZ rounds a request up to a power-of-two number of
pages, refuses sizes above /proc/sys/fs/pipe-max-size (EPERM) unless the
caller has CAP_SYS_RESOURCE, and stops growing pipes once the user's pipes
together exceed /proc/sys/fs/pipe-user-pages-soft (pipe(7)): past that,
F_SETPIPE_SZ fails with EPERM and new pipes shrink to 2 pages. A splice
server holds one pipe per busy connection, so that per-user budget bounds
how many connections can splice with big pipes at once. Root (CAP_SYS_RESOURCE)
is exempt from the soft limit.
"""

from __future__ import annotations

import fcntl
import os
import resource
from typing import Iterator

from probes.finding import Finding, Status
from probes.kernel import errname, is_root, read_int
from probes.resources import Resources

PAGE = os.sysconf("SC_PAGE_SIZE")
ODD_REQUEST = 100_000          # not a power of two: shows the kernel's rounding
SIZE_CAP = 1024 * 1024         # the largest pipe zcopy will ask for
VERIFY_MAX = 128               # pipes created at most when verifying the budget
DEFAULT_PIPE_PAGES = 16        # PIPE_DEF_BUFFERS: what a fresh pipe gets


def probe(ctx) -> Iterator[Finding]:
    yield measure()


def measure() -> Finding:
    max_size = read_int("/proc/sys/fs/pipe-max-size")
    soft = read_int("/proc/sys/fs/pipe-user-pages-soft")
    hard = read_int("/proc/sys/fs/pipe-user-pages-hard")
    root = is_root()
    with Resources() as res:
        r, w = res.pipe()
        default = fcntl.fcntl(w, fcntl.F_GETPIPE_SZ)
        rounded = fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, ODD_REQUEST)
        largest, refused = _largest(res, max_size or SIZE_CAP)
    chosen = min(SIZE_CAP, largest or default)
    budget = verify_budget(chosen, soft, root)
    value = {
        "default_size": default, "max_size": max_size, "largest_granted": largest,
        "rounding": {"asked": ODD_REQUEST, "got": rounded}, "page_size": PAGE,
        "user_pages_soft": soft, "user_pages_hard": hard, "root_exempt": root,
        "budget": budget,
    }
    problems = []
    if default < DEFAULT_PIPE_PAGES * PAGE:
        problems.append(f"new pipes already get only {default} bytes: this user is over pipe-user-pages-soft")
    if refused:
        problems.append(f"F_SETPIPE_SZ({max_size}) was refused ({refused})")
    if budget["applies"] and budget["computed"] and budget["verified"] < 0.9 * budget["computed"]:
        problems.append(f"only {budget['verified']} of the ~{budget['computed']} pipes of {chosen} B the soft limit "
                        "allows could be made: this user's other pipes already use the budget")
    elif not budget["applies"] and budget["verified"] < budget["checked"]:
        problems.append(f"F_SETPIPE_SZ stopped after {budget['verified']} pipes ({budget['stopped_by']})")
    root_note = ("running as root: CAP_SYS_RESOURCE lifts pipe-user-pages-soft and pipe-max-size, "
                 "an unprivileged server would get " + _soft_sentence(chosen, soft)) if root else \
        "unprivileged: " + _soft_sentence(chosen, soft)
    detail = (f"default {default} B; asked {ODD_REQUEST} got {rounded} (page-power-of-two rounding); "
              f"largest granted {largest} B (pipe-max-size {max_size}); {root_note}; "
              f"verified {budget['verified']}/{budget['checked']} pipes of {chosen} B")
    if problems:
        detail = "; ".join(problems) + ". " + detail
    return Finding("pipe.setpipe_sz", Status.DEGRADED if problems else Status.OK, value, detail)


def budget_pipes(size: int, soft_pages: int | None) -> int | None:
    """How many pipes of ``size`` bytes fit in the per-user soft page budget
    (None: no limit). The kernel rounds sizes up to a power of two pages."""
    if not soft_pages:
        return None
    pages = 1
    while pages * PAGE < size:
        pages *= 2
    return soft_pages // pages


def _soft_sentence(size: int, soft: int | None) -> str:
    n = budget_pipes(size, soft)
    if n is None:
        return "pipe-user-pages-soft is 0, so no per-user pipe budget applies"
    return f"pipe-user-pages-soft {soft} pages allows about {n} pipes of {size} B (including ones already open)"


def _largest(res: Resources, max_size: int) -> tuple[int | None, str]:
    """The size a fresh pipe actually gets when asked for pipe-max-size."""
    r, w = res.pipe()
    try:
        return fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, max_size), ""
    except OSError as exc:
        return None, errname(exc)


def verify_budget(size: int, soft: int | None, root: bool) -> dict:
    """Create pipes of ``size`` until F_SETPIPE_SZ refuses or a bound is hit,
    then close them all. The bound keeps the probe cheap and inside the fd limit."""
    computed = budget_pipes(size, soft)
    fd_room = (resource.getrlimit(resource.RLIMIT_NOFILE)[0] - len(os.listdir("/proc/self/fd")) - 64) // 2
    checked = max(0, min(VERIFY_MAX, fd_room, (computed + 2) if computed is not None and not root else VERIFY_MAX))
    verified, stopped = 0, ""
    with Resources() as res:
        for _ in range(checked):
            r, w = res.pipe()
            try:
                got = fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, size)
            except OSError as exc:
                stopped = errname(exc)
                break
            if got < size:
                stopped = f"granted only {got}"
                break
            verified += 1
    return {"size": size, "computed": computed, "checked": checked, "verified": verified,
            "stopped_by": stopped or None, "applies": computed is not None and not root}
