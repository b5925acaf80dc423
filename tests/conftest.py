"""Shared test helpers. Everything here uses the real kernel: no mocks."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import warnings

import pytest


def open_fds() -> set[int]:
    """The fds this process holds right now (from /proc/self/fd)."""
    fds = set()
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            os.fstat(fd)
        except OSError:  # the fd listdir itself used
            continue
        fds.add(fd)
    return fds


@pytest.fixture
def fd_guard():
    """Fail the test if it leaves fds open that it did not have at the start."""
    before = open_fds()
    yield
    leaked = open_fds() - before
    details = {fd: _fd_target(fd) for fd in leaked}
    assert not leaked, f"leaked fds: {details}"


def _fd_target(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return "?"


def is_root() -> bool:
    return os.geteuid() == 0


needs_root = pytest.mark.skipif(not is_root(), reason="needs root (network namespaces / caches)")


def needs_tool(name: str):
    return pytest.mark.skipif(shutil.which(name) is None, reason=f"{name} is not installed "
                              f"(.ci/run installs it with apt-get)")


@pytest.fixture
def runtime(tmp_path, monkeypatch):
    """A private XDG_RUNTIME_DIR, so live-stats files of other servers of this
    user stay invisible to the test (and the test's stay out of theirs)."""
    path = tmp_path / "run"
    path.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(path))
    return path


@pytest.fixture(scope="session", autouse=True)
def isolated_runtime():
    """Every server a test starts keeps its live-stats files (zcopy.stats.location) in a folder of
    this session's, removed at its end: a server a test SIGKILLs cannot clean its own, and they must
    not stay in /dev/shm/zcopy-<uid> (the fallback without XDG_RUNTIME_DIR). In memory, like that
    fallback: the stats publish runs on the event loop."""
    folder = tempfile.mkdtemp(prefix="zcopy-test-run-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("XDG_RUNTIME_DIR", folder)
        yield folder
    # A process ending just now (a server's last stats publish, a browser's helper) may add a file
    # while the tree is removed, and the last rmdir then fails: remove again until it is gone.
    deadline = time.monotonic() + 10
    while True:
        shutil.rmtree(folder, ignore_errors=True)
        if not os.path.exists(folder) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    if os.path.exists(folder):
        left = [os.path.join(d, n) for d, _, names in os.walk(folder) for n in names]
        warnings.warn(f"{folder} could not be removed; still in it: {left[:10]}")


@pytest.fixture(scope="session", autouse=True)
def isolated_state(tmp_path_factory):
    """Every server a test starts (they inherit this environment) keeps its
    state (zcopy.server.state) in a temp folder, never in ~/.local/state."""
    folder = tmp_path_factory.mktemp("xdg-state")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("XDG_STATE_HOME", str(folder))
        yield folder


@pytest.fixture(scope="session", autouse=True)
def bytecode_cache():
    """The Python processes the tests start (servers, `zcopy get/put`, helpers) keep their
    compiled bytecode in a folder of this session's, removed at its end. With
    PYTHONDONTWRITEBYTECODE set (as on the machines we run on) each of them otherwise compiled
    its ~100 modules from source: 0.2 s of the 0.6 s a server took to start, some hundreds of
    times a run. The checkout itself stays free of __pycache__ folders."""
    folder = tempfile.mkdtemp(prefix="zcopy-test-pyc-")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PYTHONPYCACHEPREFIX", folder)
        env.delenv("PYTHONDONTWRITEBYTECODE", raising=False)
        yield folder
    shutil.rmtree(folder, ignore_errors=True)
