"""Probes run by an unprivileged user: each works where the kernel allows and
says "needs root" where it does not. The test forks and drops to a uid no
one else uses (its per-user pipe budget is then ours alone), after running
the probes once as root so every module is already imported (the child may
not be able to read the interpreter's library directory)."""

from __future__ import annotations

import fcntl
import json
import os
import traceback

import pytest

from conftest import needs_root
from probes import Context, Status, pipe_throughput, pipes, run_all
from probes.kernel import read_int
from zcopy.measure import PIPE_SIZES

#: A uid without a passwd entry, different per test process.
UID = 3_000_000 + os.getpid() % 100_000


def as_user(fn, uid: int = UID):
    """Run ``fn()`` in a forked child with uid/gid ``uid`` and no groups (so
    no capabilities); return its JSON-able result."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            try:
                out = {"result": fn()}
            except BaseException:
                out = {"error": traceback.format_exc()}
            os.write(w, json.dumps(out).encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        data = f.read()
    os.waitpid(pid, 0)
    out = json.loads(data)
    assert "error" not in out, out["error"]
    return out["result"]


pytestmark = needs_root  # dropping to another uid needs root


def test_quick_probe_as_an_unprivileged_user():
    run_all(Context(quick=True, path="/tmp"))  # as root first: every module imported

    found = {f["id"]: f for f in as_user(lambda: [f.to_json() for f in run_all(Context(quick=True, path="/tmp"))])}
    assert not [f for f in found if f.endswith(".probe")], found  # no probe crashed or hung
    for fid in ("sendfile.file_to_tcp", "splice.socket_to_pipe", "filesystem.sendfile", "tcp_cork.cork"):
        assert found[fid]["status"] == "ok", found[fid]
    setpipe = found["pipe.setpipe_sz"]["value"]
    assert setpipe["root_exempt"] is False
    assert setpipe["budget"]["applies"] is (bool(setpipe["user_pages_soft"]))
    ktls = found["ktls.ulp"]
    if not os.path.isdir("/sys/module/tls"):  # the module would have to be loaded on demand: root only
        assert ktls["status"] == "skipped" and "needs root" in ktls["detail"], ktls
    ring = found["io_uring.setup"]
    if read_int("/proc/sys/kernel/io_uring_disabled") == 1:
        assert ring["status"] == "skipped" and "needs root" in ring["detail"], ring


def test_unprivileged_budget_stops_at_the_soft_limit():
    """F_SETPIPE_SZ must refuse near the budget the probe computed."""
    if not read_int("/proc/sys/fs/pipe-user-pages-soft"):
        pytest.skip("pipe-user-pages-soft is 0: no per-user budget on this machine")
    value = as_user(lambda: pipes.measure().value)
    budget = value["budget"]
    assert value["root_exempt"] is False and budget["applies"] is True
    assert budget["stopped_by"] == "EPERM"
    assert 0 < budget["verified"] <= budget["computed"]


def _spend_the_budget() -> list[int]:
    """Hold pipes, largest first, until even a fresh pipe gets less than the
    default: this user's whole pipe-user-pages-soft is then in use."""
    held = []
    for size in (1 << 20, 256 << 10, 64 << 10, 4096):
        while len(held) < 4000:
            r, w = os.pipe()
            held += [r, w]
            if fcntl.fcntl(w, fcntl.F_GETPIPE_SZ) < pipes.DEFAULT_PIPE_PAGES * pipes.PAGE:
                return held
            try:
                fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, size)
            except PermissionError:
                break
    return held


def test_throughput_only_times_sizes_the_kernel_grants():
    """With the budget spent, F_SETPIPE_SZ refuses every size: the sweep must
    say so instead of timing pipes the pool quietly kept small."""
    if not read_int("/proc/sys/fs/pipe-user-pages-soft"):
        pytest.skip("pipe-user-pages-soft is 0: no per-user budget on this machine")

    def spent():
        held = _spend_the_budget()
        try:
            sizes, refused = pipe_throughput.granted(PIPE_SIZES)
            (finding,) = pipe_throughput.probe(Context())
            return {"sizes": sizes, "refused": refused, "finding": finding.to_json()}
        finally:
            for fd in held:
                os.close(fd)

    assert pipe_throughput.granted(PIPE_SIZES) == (list(PIPE_SIZES), {})  # as root: all granted
    got = as_user(spent)
    assert got["sizes"] == []
    assert set(got["refused"].values()) == {"EPERM"} and len(got["refused"]) == len(PIPE_SIZES)
    f = got["finding"]
    assert f["status"] == Status.DEGRADED.value and f["value"]["best_size"] is None
    assert set(f["value"]["refused"]) == {str(s) for s in PIPE_SIZES}
    assert "not granted (EPERM)" in f["detail"]
