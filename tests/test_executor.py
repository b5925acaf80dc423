"""The off-loop executor with real threads and its real eventfd: results and
errors come back to the loop thread through callbacks, CPU-bound tasks get a
short GIL switch interval only while they run, and the deferred-reply seam."""

from __future__ import annotations

import os
import select
import sys
import threading
import time

import pytest

from zcopy.server.executor import SWITCH_INTERVAL, Executor, defer
from zcopy.server.reply import Pending


def drain(ex: Executor, want: int, timeout: float = 10.0) -> None:
    """The loop's part: wait on the eventfd, run callbacks, until ``want`` ran."""
    deadline = time.monotonic() + timeout
    ran = 0
    while ran < want:
        r, _, _ = select.select([ex.fileno()], [], [], max(0.0, deadline - time.monotonic()))
        assert r, "the executor never signalled its eventfd"
        ran += ex.run_callbacks()


def test_results_and_errors_reach_callbacks_on_the_loop_thread(fd_guard):
    ex = Executor(max_threads=2)
    seen = []
    try:
        ok = ex.submit(lambda a, b: (a + b, threading.get_ident()), 2, 3)
        bad = ex.submit(lambda: 1 / 0)
        for task in (ok, bad):
            task.then(lambda t: seen.append((t, threading.get_ident())))
        drain(ex, 2)
    finally:
        ex.close()
    loop = threading.get_ident()
    assert {t for t, _ in seen} == {ok, bad} and all(tid == loop for _, tid in seen)
    assert ok.result[0] == 5 and ok.result[1] != loop          # computed on another thread
    assert isinstance(bad.error, ZeroDivisionError) and ex.failed == 1


def test_cpu_tasks_shorten_the_switch_interval_only_while_they_run(fd_guard):
    before = sys.getswitchinterval()
    assert before > SWITCH_INTERVAL
    ex = Executor()
    try:
        io = ex.submit(sys.getswitchinterval)
        cpu = ex.submit(sys.getswitchinterval, cpu=True)
        drain(ex, 2)
        assert io.result == before and cpu.result == SWITCH_INTERVAL
        assert sys.getswitchinterval() == before
    finally:
        ex.close()


def test_the_collector_is_paused_until_the_last_paused_block_on_any_thread_ends(fd_guard):
    """``collector_paused`` (a PROPFIND build's): overlapping blocks on two threads keep the cyclic
    collector off until the last one ends, and a collector that was off before stays off."""
    import gc

    from zcopy.server.executor import collector_paused

    assert gc.isenabled()
    inside, leave = threading.Event(), threading.Event()

    def other() -> None:
        with collector_paused():
            inside.set()
            leave.wait(10)
    t = threading.Thread(target=other)
    with collector_paused():
        assert not gc.isenabled()
        t.start()
        assert inside.wait(10)
    assert not gc.isenabled()            # the other thread's block still runs
    leave.set()
    t.join(10)
    assert gc.isenabled()
    gc.disable()
    try:
        with collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()        # it was off before: left off
    finally:
        gc.enable()


def test_close_joins_threads_and_discards_what_never_started(fd_guard):
    ex = Executor(max_threads=1)
    gate = threading.Event()
    started = ex.submit(gate.wait, 10)
    queued = [ex.submit(lambda: pytest.fail("ran after close")) for _ in range(3)]
    time.sleep(0.05)
    gate.set()
    ex.close()
    assert started.done and not any(t.done for t in queued)
    assert ex.size == 0 and ex.fileno() == -1


def test_defer_settles_a_pending_with_the_reply_or_the_refusal(fd_guard):
    ex = Executor()
    try:
        good, bad = [], []
        p1 = defer(ex, lambda: 21, lambda n: n * 2, lambda exc: f"refused {exc!r}")
        p2 = defer(ex, lambda: {}["x"], lambda n: n, lambda exc: f"refused {type(exc).__name__}")
        assert isinstance(p1, Pending) and isinstance(p2, Pending)
        p1.wait(good.append)
        p2.wait(bad.append)
        drain(ex, 2)
    finally:
        ex.close()
    assert good == [42] and bad == ["refused KeyError"]
    # Without an executor the work runs at once and the reply itself comes back.
    assert defer(None, lambda: 1, lambda n: n + 1, None) == 2


def test_a_refusal_that_raises_answers_500_instead_of_ending_the_worker(fd_guard, capsys):
    """A ``refuse`` re-raises what it does not know (a bug in the work, found by the attack on
    PROPFIND: a struct.error from a kept page's build). Raised on the loop, in the executor's
    callbacks, it would end the worker; the request gets a 500 instead, and the traceback is printed."""
    from zcopy import http

    def refuse(exc):
        if isinstance(exc, http.HttpError):
            return ("error", exc.status, exc.close)
        raise exc

    ex = Executor()
    try:
        got = []
        defer(ex, lambda: 1 / 0, lambda n: n, refuse).wait(got.append)
        defer(ex, lambda: 1, lambda n: [][n], refuse).wait(got.append)      # ``then`` raising too
        drain(ex, 2)
    finally:
        ex.close()
    assert got == [("error", 500, True), ("error", 500, True)]
    err = capsys.readouterr().err
    assert "ZeroDivisionError" in err and "IndexError" in err


def test_an_upload_that_nobody_waits_for_any_more_is_aborted(tmp_path, fd_guard):
    """A PUT's connection closed while its temp file was being made off the
    loop: the Upload that arrives after is aborted (its fds closed, no file)."""
    from zcopy import http
    from zcopy.server.files import OpenFileCache
    from zcopy.server.write_methods import Writer

    cache = OpenFileCache(str(tmp_path))
    try:
        writer = Writer(cache, http.DateHeader(), make_parents=True)      # the folder it makes goes too
        req = http.parse_head(b"PUT /d/f.bin HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\n")
        upload = writer.handle(req)                 # no executor: the Upload itself
        assert os.listdir(tmp_path) == ["d"]
        pending = Pending()
        pending.wait(lambda reply: None)
        pending.cancel()                            # the connection closed
        pending.done(upload)
        assert upload.temp.fd == -1 and os.listdir(tmp_path) == []   # and the folder it made went too
    finally:
        cache.close()
