"""A bug in request handling costs one connection, never the worker.

The fault is injected for real in a forked worker: its responder raises for
one path (as a programming error would). Everything else is the production
loop, sockets and files.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket

from serverutil import connect, get, read_response
from zcopy.server.config import ServeConfig


@contextlib.contextmanager
def buggy_worker(root):
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    port = listener.getsockname()[1]
    pid = os.fork()
    if pid == 0:                                     # the child: never returns
        code = 1
        try:
            os.environ["ZCOPY_STATS"] = "off"
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)                      # the traceback is expected
            from zcopy.server.worker import Worker

            worker = Worker(ServeConfig(root=str(root), prefetch=False), listener)
            respond = worker.responder.respond

            def respond_with_a_bug(req, *args, **kwargs):
                if req.path == "/boom":
                    raise RuntimeError("a bug in request handling")
                return respond(req, *args, **kwargs)

            worker.responder.respond = respond_with_a_bug
            code = worker.run()
        finally:
            os._exit(code)
    listener.close()
    try:
        yield port, pid
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def test_a_bug_costs_one_connection_not_the_worker(tmp_path):
    (tmp_path / "ok.txt").write_text("fine")
    with buggy_worker(tmp_path) as (port, pid):
        bystander = connect(port)                    # an open keep-alive connection
        bystander.sendall(b"GET /ok.txt HTTP/1.1\r\nHost: t\r\n\r\n")
        assert read_response(bystander)[2] == b"fine"

        status, headers, _ = get(port, "/boom")
        assert status == 500 and headers["connection"] == "close"

        os.kill(pid, 0)                              # the worker is still alive
        bystander.sendall(b"GET /ok.txt HTTP/1.1\r\nHost: t\r\n\r\n")
        assert read_response(bystander)[2] == b"fine"
        assert get(port, "/ok.txt")[2] == b"fine"
        bystander.close()
