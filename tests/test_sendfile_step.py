"""zcopy serve's sendfile step is 2 MiB (nginx's sendfile_max_chunk; profile.step_for): strace on the
worker shows each sendfile(2) of a large body asking for at most 2 MiB, and asking for 2 MiB, while
another connection is open on the worker. (Alone on it, a transfer's steps may take 8 MiB:
tests/test_loop_alone.py.)"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from serverutil import Server, connect, read_response

pytestmark = pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
MiB = 1 << 20


@pytest.mark.parametrize("flags", [[], ["--auto", "--workers", "1"]])
def test_a_large_body_leaves_in_sendfile_calls_of_at_most_2_mib(tmp_path, flags):
    root = tmp_path / "root"
    root.mkdir()
    data = os.urandom(9 * MiB + 123)
    (root / "big.bin").write_bytes(data)
    log = tmp_path / "strace.log"
    with Server(root, *flags, env={"COLUMNS": "400"}) as s:
        if s.panel().get("send engine") != "sendfile":
            pytest.skip("the probe chose another engine than sendfile here")
        assert s.panel()["step"] == "2.0 MiB a turn (8.0 MiB alone)"
        worker = s.worker_pids()[0]
        with connect(s.port) as neighbour:     # an idle keep-alive connection: the pull is never alone
            neighbour.sendall(b"GET /nothing HTTP/1.1\r\nHost: t\r\n\r\n")
            assert read_response(neighbour)[0] == 404
            tracer = subprocess.Popen(["strace", "-f", "-p", str(worker), "-o", str(log), "-e", "trace=sendfile"],
                                      stderr=subprocess.PIPE, text=True)
            try:
                assert "attached" in tracer.stderr.readline()            # strace holds the worker now
                with connect(s.port) as c:
                    c.sendall(b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n")
                    status, _, body = read_response(c)[:3]
            finally:
                tracer.terminate()
                tracer.wait(timeout=10)                # (its log is complete once it has exited)
    assert status == 200 and body == data
    asked = [int(m.group(1)) for line in log.read_text().splitlines()
             if (m := re.search(r"sendfile\(\d+, \d+, \[\d+\](?: => \[\d+\])?, (\d+)\)", line))]
    assert asked and max(asked) == 2 * MiB and sum(1 for n in asked if n == 2 * MiB) >= 4, log.read_text()


@pytest.mark.parametrize("upload", ["splice", "recv_pwrite"])
def test_the_copying_engines_keep_1_mib_a_turn_beside_2_mib_sendfile_steps(tmp_path, upload):
    """An upload engine apart from the send engine, and the TLS copy engine (read_send), move
    ``copy_budget`` a turn, not the sendfile step."""
    import socket

    from zcopy.profile import step_for
    from zcopy.server.config import ServeConfig
    from zcopy.server.worker import Worker

    budget, _ = step_for("sendfile", MiB)
    listener = socket.create_server(("127.0.0.1", 0))
    worker = Worker(ServeConfig(root=str(tmp_path), engine="sendfile", upload_engine=upload, budget=budget,
                                pipe_size=64 << 10), listener)
    try:
        assert worker.engine.budget == 2 * MiB
        assert worker.upload_engine.budget == MiB and worker.copy_engine().budget == MiB
    finally:
        worker.shutdown()
        worker.finish(None)
        listener.close()


def test_only_sendfile_takes_a_longer_step_alone():
    """``profile.lone_step_for``: 8 MiB for sendfile; 0 (no longer step) for splice, whose step is a
    pipe-full, and for the copying engines, which spend CPU per byte."""
    from zcopy.profile import LONE_STEP, lone_step_for, step_for

    assert LONE_STEP == 8 * MiB
    assert lone_step_for("sendfile", step_for("sendfile", MiB)[0]) == 8 * MiB
    for engine in ("splice", "read_send", "mmap_send"):
        assert lone_step_for(engine, step_for(engine, MiB)[0]) == 0
