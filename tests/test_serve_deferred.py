"""The seams a responder has besides a plain Reply: a deferred reply
(``Pending``) and a request body kept in memory (``MemorySink``).

A real forked worker (the production loop, sockets and files) whose
responder is extended for three paths: ``/slow`` answers with a Pending,
``/release`` resolves every outstanding Pending on the loop thread (as the
executor's wake-up will) and answers itself, and ``POST /echo`` takes its
body into a bounded MemorySink and sends it back.
"""

from __future__ import annotations

import os
import select

from serverutil import connect, read_response, worker_with

ECHO_LIMIT = 64


def extended_worker(root, **config):
    def extend(respond):
        from zcopy import http
        from zcopy.server.body import MemorySink
        from zcopy.server.reply import Pending, whole

        waiting = []
        ok = http.parse_head(b"GET /ok.txt HTTP/1.1\r\nHost: t\r\n\r\n")

        def echo(sink, req, closing):
            body = bytes(sink.data)
            return whole(200, b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body), closing)

        def extended(req, *args, **kwargs):
            if req.path == "/slow":
                pending = Pending()
                waiting.append(pending)
                return pending
            if req.path == "/release":
                for pending in waiting:
                    pending.done(respond(ok))     # on the loop thread, as the executor's wake-up
                waiting.clear()
            if req.path == "/echo" and req.method == "POST":
                return MemorySink(ECHO_LIMIT, echo)
            return respond(req, *args, **kwargs)
        return extended

    return worker_with(root, extend, **config)


def nothing_arrives(sock, seconds: float = 0.3) -> bool:
    return not select.select([sock], [], [], seconds)[0]


def test_a_pending_reply_holds_the_connection_until_done(tmp_path):
    """The connection waits (its pipelined next request unread), then sends
    the deferred reply and carries on; other connections are served meanwhile."""
    (tmp_path / "ok.txt").write_text("fine")
    with extended_worker(tmp_path) as (port, pid):
        a = connect(port)
        a.sendall(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\nGET /ok.txt HTTP/1.1\r\nHost: t\r\n\r\n")
        b = connect(port)
        b.sendall(b"GET /ok.txt HTTP/1.1\r\nHost: t\r\n\r\n")
        assert read_response(b)[2] == b"fine"          # the worker serves others meanwhile
        assert nothing_arrives(a)                      # ... but not a's next request
        b.sendall(b"GET /release HTTP/1.1\r\nHost: t\r\n\r\n")
        assert read_response(b)[0] == 404              # /release itself is no file
        status, _, body, _ = read_response(a)          # the deferred reply
        assert (status, body) == (200, b"fine")
        assert read_response(a)[2] == b"fine"          # then the pipelined one
        a.sendall(b"GET /ok.txt HTTP/1.1\r\nHost: t\r\n\r\n")
        assert read_response(a)[2] == b"fine"          # and the connection lives on
        a.close()
        b.close()


def test_a_pending_whose_connection_closed_goes_nowhere(tmp_path):
    (tmp_path / "ok.txt").write_text("fine")
    with extended_worker(tmp_path) as (port, pid):
        a = connect(port)
        a.sendall(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
        b = connect(port)
        b.sendall(b"GET /ok.txt HTTP/1.1\r\nHost: t\r\n\r\n")
        assert read_response(b)[2] == b"fine"          # a's request was taken
        a.close()
        b.sendall(b"GET /release HTTP/1.1\r\nHost: t\r\n\r\n")
        assert read_response(b)[0] == 404
        b.sendall(b"GET /ok.txt HTTP/1.1\r\nHost: t\r\n\r\n")
        assert read_response(b)[2] == b"fine"
        os.kill(pid, 0)                                # the worker is alive
        b.close()


def test_a_small_body_into_memory_with_either_framing(tmp_path):
    with extended_worker(tmp_path) as (port, pid):
        with connect(port) as s:
            s.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"
                      b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                      b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
            assert read_response(s)[2] == b"hello"
            assert read_response(s)[2] == b"abcde"
        with connect(port) as s:                       # Expect: the interim, then the body
            s.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
            assert read_response(s)[0] == 100
            s.sendall(b"xyz")
            assert read_response(s)[2] == b"xyz"


def test_a_memory_body_over_its_limit_is_refused_and_the_connection_closes(tmp_path):
    with extended_worker(tmp_path) as (port, pid):
        with connect(port) as s:
            chunk = b"%x\r\n%s\r\n" % (40, b"x" * 40)
            s.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk * 2)
            status, headers, _, _ = read_response(s)
            assert status == 413 and headers["connection"] == "close"
            assert s.recv(10) == b""


def test_an_announced_length_over_the_limit_is_refused_before_the_body(tmp_path):
    with extended_worker(tmp_path) as (port, pid):
        with connect(port) as s:
            s.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n"
                      % (ECHO_LIMIT + 1))
            status, headers, _, _ = read_response(s)        # no 100 Continue first
            assert status == 413 and headers["connection"] == "close"


def test_a_pending_never_done_ends_at_the_send_timeout(tmp_path):
    """While a Pending is outstanding the connection's deadline is the send
    timeout: a reply that never comes costs that connection, nothing else."""
    (tmp_path / "ok.txt").write_text("fine")
    with extended_worker(tmp_path, send_timeout=1.0) as (port, pid):
        a = connect(port)
        a.sendall(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
        a.settimeout(10)
        assert a.recv(10) == b""                       # closed, with nothing sent
        b = connect(port)
        b.sendall(b"GET /ok.txt HTTP/1.1\r\nHost: t\r\n\r\n")
        assert read_response(b)[2] == b"fine"
        a.close()
        b.close()
