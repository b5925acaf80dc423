"""``ListenerLoop.solo`` and ``alone()``: when the turn's only work is one object of the ready queue,
that object may go on in the same turn while nothing else waits (serve: a transfer's next step,
``Connection._pump``), for ``SOLO_TURN`` at most. Nothing that waits may be passed over: another
object of the queue, an event of the turn's batch, an event epoll holds (edge-triggered ones
included: asking must not take them), an object queued meanwhile.

The loop here is the one the suite runs (compiled when built); test_hotpath's plain-Python run
covers the serve suites that go through it. A strace of a real pull is at the end."""

from __future__ import annotations

import os
import re
import select
import shutil
import socket
import subprocess
import time

import pytest

from zcopy import loop

from serverutil import Server, connect, read_response

MiB = 1 << 20


class Loop(loop.ListenerLoop):
    def admit(self, sock, addr):
        sock.close()

    def connection_count(self):
        return 0

    def count_error(self, kind):
        pass

    def on_drain(self):
        pass

    def shutdown(self):
        pass


class Item:
    """A ready-queue object that runs ``work(self)`` once and records what the loop said."""

    def __init__(self, work):
        self.state = 1
        self.work = work
        self.seen = []

    def run(self):
        self.work(self)


@pytest.fixture
def worker():
    listener = socket.create_server(("127.0.0.1", 0))
    w = Loop(listener, 16)
    yield w
    listener.close()


def run(worker):
    assert worker.run(install_signals=False) == 0


def test_a_lone_ready_object_runs_solo_and_is_alone(worker):
    def work(item):
        item.seen.append((worker.solo, worker.alone()))
        worker.stop()

    item = Item(work)
    worker.ready.append(item)
    assert not worker.solo and not worker.alone()       # outside a turn: never
    run(worker)
    assert item.seen == [(True, True)]
    assert not worker.solo


def test_a_solo_turn_is_alone_for_solo_turn_seconds_at_most(worker):
    """Timers, the tick and the beat wait while a solo object goes on: ``alone()`` says no once the
    turn is ``SOLO_TURN`` old. Each answer is checked against the turn's age read around it (a
    thread descheduled for longer makes the first answer no, which is right too)."""
    answers = []

    def work(item):
        while len(answers) < 100000:
            before = time.monotonic() - worker.now
            yes = worker.alone()
            after = time.monotonic() - worker.now
            answers.append((before, yes, after))
            if not yes:
                break
        worker.stop()

    worker.ready.append(Item(work))
    run(worker)
    before, yes, after = answers[-1]
    assert not yes and after >= loop.SOLO_TURN            # it ended, and for its age
    assert all(b < loop.SOLO_TURN for b, yes, a in answers if yes)


def test_two_ready_objects_run_neither_solo(worker):
    def work(item):
        item.seen.append((worker.solo, worker.alone()))
        if len(a.seen) and len(b.seen):
            worker.stop()

    a, b = Item(work), Item(work)
    worker.ready += [a, b]
    run(worker)
    assert a.seen == [(False, False)] and b.seen == [(False, False)]


def test_an_object_run_from_an_event_is_not_solo_and_a_queued_one_beside_an_event_is_not(worker):
    """An event of the turn's batch waits for its dispatch: neither the handler nor a queued object
    of that turn may go on alone."""
    r, w = socket.socketpair()
    seen = []
    queued = Item(lambda item: item.seen.append((worker.solo, worker.alone())))

    def on_event(events):
        r.recv(64)
        seen.append((worker.solo, worker.alone()))
        worker.ready.append(queued)             # runs in this turn's queue, beside the event

    with r, w:
        worker.add_fd(r.fileno(), on_event)
        w.send(b"x")
        stopper = Item(lambda item: worker.stop() if queued.seen else worker.ready.append(item))
        worker.ready.append(stopper)
        run(worker)
    assert seen == [(False, False)]
    assert queued.seen == [(False, False)]


def test_an_event_epoll_holds_makes_the_object_not_alone_and_the_loop_still_gets_it(worker):
    """The edge-triggered case: asking whether an event waits (a poll of the epoll fd) does not take
    it, so the loop's next poll delivers it. Here the solo object itself makes the socket readable
    (as a neighbour's request would, arriving during a step)."""
    r, w = socket.socketpair()
    got = []

    def on_event(events):
        got.append(r.recv(64))
        worker.stop()

    def work(item):
        item.seen.append(worker.alone())
        w.send(b"request")
        item.seen.append(worker.alone())
        item.seen.append(worker.alone())       # asking again takes nothing either

    with r, w:
        r.setblocking(False)
        worker.ep.register(r.fileno(), select.EPOLLIN | select.EPOLLET)
        worker.handlers[r.fileno()] = on_event
        item = Item(work)
        worker.ready.append(item)
        run(worker)
    assert item.seen == [True, False, False]
    assert got == [b"request"]


def test_an_object_queued_meanwhile_ends_being_alone(worker):
    other = Item(lambda item: worker.stop())

    def work(item):
        item.seen.append(worker.alone())
        worker.ready.append(other)
        item.seen.append(worker.alone())

    item = Item(work)
    worker.ready.append(item)
    run(worker)
    assert item.seen == [True, False]


# -- a real pull, under strace ---------------------------------------------------------------------

PULLS = 6
CALL = re.compile(r"^(sendfile|poll|epoll_wait)\(.*= (-?\d+)")
ASKED = re.compile(r"^sendfile\(\d+, \d+, \[\d+\](?: => \[\d+\])?, (\d+)\)")


def pull_discarding(port: int, path: str) -> tuple[int, int]:
    """(status, body bytes) of one GET whose body the kernel drops as it comes (recv with
    MSG_TRUNC: no copy, one call for up to 64 MiB), so that the client outpaces the worker even on
    a busy machine: a client slower than the worker fills the socket at every step, and no turn
    then has a second one."""
    sink = bytearray(64 * MiB)                  # never written: MSG_TRUNC only counts
    with connect(port) as c:
        c.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += c.recv(1)                   # (byte by byte: the body's first bytes stay queued)
        status = int(head.split()[1])
        length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
        got = 0
        while got < length:
            n = c.recv_into(sink, len(sink), socket.MSG_TRUNC)
            if not n:
                break
            got += n
    return status, got


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
def test_a_lone_pull_takes_several_steps_a_turn_asking_epoll_before_each(tmp_path):
    """A client pulls 64 MiB six times, nothing else connected. A loop turn (from one epoll_wait to
    the next) that had no event runs the ready queue's one connection solo: a first step of at most
    2 MiB of sendfile calls (more than one when one is cut short), then, the connection being the
    worker's only one, steps of at most 8 MiB (``profile.LONE_STEP``), and before each step but the
    first the worker asked the epoll fd whether anything waits (poll). (How long it goes on is
    ``SOLO_TURN``'s, tested above.) A turn that had an event asks nothing. Some turn has more than
    one step, and some call asks for more than 2 MiB. (With another connection open every step
    stays at 2 MiB: tests/test_sendfile_step.py.)"""
    root = tmp_path / "root"
    root.mkdir()
    data = os.urandom(1 << 20) * 64
    (root / "big.bin").write_bytes(data)
    log = tmp_path / "strace.log"
    with Server(root, "--workers", "1", env={"COLUMNS": "400"}) as s:
        if s.panel().get("send engine") != "sendfile":
            pytest.skip("the probe chose another engine than sendfile here")
        step, lone = 2 * MiB, 8 * MiB
        assert s.panel()["step"] == "2.0 MiB a turn (8.0 MiB alone)"
        worker = s.worker_pids()[0]
        with connect(s.port) as c:                      # the file opened and hashed before the trace
            c.sendall(b"GET /big.bin HTTP/1.1\r\nHost: t\r\nRange: bytes=0-0\r\n\r\n")
            assert read_response(c)[0] == 206
        # (-ff: a file a thread, so that no other thread's call splits a line of the loop's)
        tracer = subprocess.Popen(["strace", "-ff", "-p", str(worker), "-o", str(log),
                                   "-e", "trace=sendfile,poll,epoll_wait"], stderr=subprocess.PIPE, text=True)
        try:
            assert "attached" in tracer.stderr.readline()
            pulled = [pull_discarding(s.port, "/big.bin") for _ in range(PULLS)]
        finally:
            tracer.terminate()
            tracer.wait(timeout=10)
    assert pulled == [(200, len(data))] * PULLS
    text = (tmp_path / f"strace.log.{worker}").read_text()       # the loop's thread
    # Per turn: (events epoll_wait returned, bytes of each step). The first turn's epoll_wait was
    # under way when strace attached: it returned the request (an event), unseen or as "resumed".
    turns = [(1, [0])]
    asked = []
    for line in text.splitlines():
        m = CALL.match(line)
        if m is None:
            continue
        name, result = m.group(1), int(m.group(2))
        if name == "sendfile":
            asked.append(int(ASKED.match(line).group(1)))
        if name == "epoll_wait":
            turns.append((result, [0]))
        elif name == "poll":
            turns[-1][1].append(0)
        elif result > 0:
            turns[-1][1][-1] += result
    assert sum(sum(steps) for _, steps in turns) == PULLS * len(data), text     # every sendfile seen
    for events, steps in turns:
        if events:                  # the event's dispatch, then the ready queue: neither solo
            assert len(steps) == 1, text
        elif len(steps) > 1:        # the ready queue's one connection, solo: step, ask, step, ...
            assert steps[0] <= step and all(n <= lone for n in steps), text
        # (else no poll: a queue that held the connection twice, not solo. An EPOLLOUT edge that
        # comes while it is queued runs it from the event and queues it again: docs/benchmarks.md.)
    assert max(len(steps) for _, steps in turns) > 1, text
    assert max(asked) == lone, text
