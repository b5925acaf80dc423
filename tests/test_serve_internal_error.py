"""A bug in request handling costs one connection, never the worker.

The fault is injected for real in a forked worker: its responder raises for
one path (as a programming error would). Everything else is the production
loop, sockets and files.
"""

from __future__ import annotations

import os

from serverutil import connect, get, read_response, worker_with


def buggy_worker(root):
    def with_a_bug(respond):
        def respond_with_a_bug(req, *args, **kwargs):
            if req.path == "/boom":
                raise RuntimeError("a bug in request handling")
            return respond(req, *args, **kwargs)
        return respond_with_a_bug

    return worker_with(root, with_a_bug, quiet=True)      # the traceback is expected


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
