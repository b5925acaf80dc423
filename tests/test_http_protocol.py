"""The server protocol (zcopy.http.protocol) by tables, with no socket.

Each row is a conversation: events in, and after each one what the protocol
said (its return value) and the state it is in. The rows together must walk
every transition of the state diagram in the module's docstring; the last
test checks that they do.
"""

from __future__ import annotations

import pytest

from zcopy.http import HeadCache, HttpError
from zcopy.http.protocol import (BODY, CLOSE, CLOSED, CONTINUE, HEAD, IDLE, KEEP_ALIVE, LINGER, REPLY,
                                 ServerProtocol)

GET = b"GET /a HTTP/1.1\r\nHost: t\r\n\r\n"
GET_B = b"GET /b HTTP/1.1\r\nHost: t\r\n\r\n"
GET10 = b"GET /a HTTP/1.0\r\n\r\n"
GET10_KA = b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
GET_CLOSE = b"GET /a HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
PUT5 = b"PUT /u HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\n"
PUT0 = b"PUT /u HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n"
PUT5_EXPECT = b"PUT /u HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
PUT10_EXPECT = b"PUT /u HTTP/1.0\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
PUT_CHUNKED = b"PUT /u HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
PUT10_CHUNKED = b"PUT /u HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n"
CHUNKS = b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"

def req(target: str):
    """Expect a request for ``target``."""
    return lambda r: r is not None and r.path == target


def pieces(data: bytes):
    """Expect body pieces that join to ``data``."""
    return lambda out: b"".join(bytes(p) for p in out) == data


def refused(status: int):
    return ("raises", status)


ANY = object()

# Rows: name, then steps (event, argument, what it returns or raises, state after).
ROWS = [
    ("one known head, fast path", [
        ("receive", GET, req("/a"), REPLY),          # first time: parsed, then memoized
        ("reply_finished", False, KEEP_ALIVE, IDLE),
        ("receive", GET, req("/a"), REPLY),          # second time: the memo
        ("reply_finished", False, KEEP_ALIVE, IDLE),
    ]),
    ("head in pieces", [
        ("receive", GET[:5], None, HEAD),
        ("receive", GET[5:20], None, HEAD),
        ("receive", GET[20:], req("/a"), REPLY),
    ]),
    ("stray CRLF before a request (RFC 9112 2.2)", [
        ("receive", b"\r\n", None, HEAD),
        ("receive", GET, req("/a"), REPLY),
    ]),
    ("pipelined heads", [
        ("receive", GET + GET_B, req("/a"), REPLY),
        ("reply_finished", False, KEEP_ALIVE, HEAD),
        ("next_request", None, req("/b"), REPLY),
        ("reply_finished", False, KEEP_ALIVE, IDLE),
        ("next_request", None, None, IDLE),
    ]),
    ("pipelined, the second head incomplete", [
        ("receive", GET + GET_B[:10], req("/a"), REPLY),
        ("reply_finished", False, KEEP_ALIVE, HEAD),
        ("next_request", None, None, HEAD),
        ("receive", GET_B[10:], req("/b"), REPLY),
    ]),
    ("Connection: close", [
        ("receive", GET_CLOSE, req("/a"), REPLY),
        ("reply_finished", False, CLOSE, LINGER),
        ("close", None, None, CLOSED),
    ]),
    ("the reply says close", [
        ("receive", GET, req("/a"), REPLY),
        ("reply_finished", True, CLOSE, LINGER),
    ]),
    ("HTTP/1.0 closes by default", [
        ("receive", GET10, req("/a"), REPLY),
        ("reply_finished", False, CLOSE, LINGER),
    ]),
    ("HTTP/1.0 keep-alive", [
        ("receive", GET10_KA, req("/a"), REPLY),
        ("reply_finished", False, KEEP_ALIVE, IDLE),
    ]),
    ("fixed-length body, all with the head", [
        ("receive", PUT5 + b"hello", req("/u"), BODY),
        ("accept_body", None, None, BODY),            # body bytes came: no 100 Continue
        ("body_from_buffer", None, pieces(b"hello"), REPLY),
        ("reply_finished", False, KEEP_ALIVE, IDLE),
    ]),
    ("fixed-length body, then a pipelined request", [
        ("receive", PUT5 + b"hel", req("/u"), BODY),
        ("body_from_buffer", None, pieces(b"hel"), BODY),
        ("body_received", b"lo" + GET, pieces(b"lo"), REPLY),
        ("reply_finished", False, KEEP_ALIVE, HEAD),
        ("next_request", None, req("/a"), REPLY),
    ]),
    ("fixed-length body moved by an engine", [
        ("receive", PUT5, req("/u"), BODY),
        ("body_from_buffer", None, pieces(b""), BODY),
        ("body_consumed", 2, None, BODY),
        ("body_consumed", 3, None, REPLY),
        ("reply_finished", False, KEEP_ALIVE, IDLE),
    ]),
    ("more consumed than announced is a bug", [
        ("receive", PUT5, req("/u"), BODY),
        ("body_consumed", 6, ("raises", RuntimeError), BODY),
    ]),
    ("Content-Length: 0 has no body", [
        ("receive", PUT0, req("/u"), REPLY),
        ("accept_body", None, None, REPLY),
    ]),
    ("Expect: 100-continue before the body", [
        ("receive", PUT5_EXPECT, req("/u"), BODY),
        ("accept_body", None, CONTINUE, BODY),
        ("accept_body", None, None, BODY),            # once
        ("body_received", b"hello", pieces(b"hello"), REPLY),
        ("reply_finished", False, KEEP_ALIVE, IDLE),
    ]),
    ("Expect refused: the reply comes before the body, then close", [
        ("receive", PUT5_EXPECT, req("/u"), BODY),
        ("reply_finished", False, CLOSE, LINGER),
    ]),
    ("Expect from HTTP/1.0 is ignored (RFC 9110 10.1.1)", [
        ("receive", PUT10_EXPECT, req("/u"), BODY),
        ("accept_body", None, None, BODY),
    ]),
    ("chunked body, then a pipelined request", [
        ("receive", PUT_CHUNKED + CHUNKS[:8], req("/u"), BODY),
        ("body_from_buffer", None, pieces(b"abc"), BODY),
        ("body_received", CHUNKS[8:] + GET, pieces(b"de"), REPLY),
        ("reply_finished", False, KEEP_ALIVE, HEAD),
        ("next_request", None, req("/a"), REPLY),
    ]),
    ("bad chunk", [
        ("receive", PUT_CHUNKED, req("/u"), BODY),
        ("body_received", b"zz\r\n", refused(400), BODY),
        ("reply_finished", True, CLOSE, LINGER),
    ]),
    ("body refused midway (413, disk full)", [
        ("receive", PUT5, req("/u"), BODY),
        ("body_received", b"he", pieces(b"he"), BODY),
        ("body_failed", None, None, BODY),
        ("reply_finished", False, CLOSE, LINGER),
    ]),
    ("HTTP/1.0 with Transfer-Encoding closes after the reply (RFC 9112 6.1)", [
        ("receive", PUT10_CHUNKED + CHUNKS, req("/u"), BODY),
        ("body_from_buffer", None, pieces(b"abcde"), REPLY),
        ("reply_finished", False, CLOSE, LINGER),
    ]),
    ("malformed head", [
        ("receive", b"GET / HTTP/1.1\r\nHost t\r\n\r\n", refused(400), REPLY),
        ("reply_finished", True, CLOSE, LINGER),
    ]),
    ("head refused while still incomplete: target too long", [
        ("receive", b"GET /" + b"a" * 9000, refused(414), REPLY),
    ]),
    ("head too large", [
        ("receive", b"GET / HTTP/1.1\r\nHost: t\r\nX: " + b"a" * 17000, refused(431), REPLY),
    ]),
    ("unknown method", [
        ("receive", b"BREW /pot HTTP/1.1\r\nHost: t\r\n\r\n", refused(501), REPLY),
    ]),
    ("unsupported version", [
        ("receive", b"GET / HTTP/2.0\r\nHost: t\r\n\r\n", refused(505), REPLY),
    ]),
    ("Content-Length with Transfer-Encoding (smuggling)", [
        ("receive", b"PUT / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
         refused(400), REPLY),
    ]),
    ("a refused head after a good one drops what follows", [
        ("receive", GET + b"GET / HTTP/1.1\r\nHost t\r\n\r\n" + GET, req("/a"), REPLY),
        ("reply_finished", False, KEEP_ALIVE, HEAD),
        ("next_request", None, refused(400), REPLY),
        ("reply_finished", True, CLOSE, LINGER),
    ]),
    ("EOF between requests", [
        ("eof_received", None, None, CLOSED),
    ]),
    ("EOF inside a head", [
        ("receive", GET[:7], None, HEAD),
        ("eof_received", None, None, CLOSED),
    ]),
    ("EOF inside a body", [
        ("receive", PUT5 + b"he", req("/u"), BODY),
        ("eof_received", None, None, CLOSED),
    ]),
    ("EOF after a complete request: answer it, then close", [
        ("receive", GET, req("/a"), REPLY),
        ("eof_received", None, None, REPLY),
        ("reply_finished", False, CLOSE, LINGER),
    ]),
    ("idle timeout: close silently", [
        ("timed_out", None, None, CLOSED),
    ]),
    ("head timeout: 408", [
        ("receive", GET[:7], None, HEAD),
        ("timed_out", None, (408, "request head too slow"), CLOSED),
    ]),
    ("body timeout: 408", [
        ("receive", PUT5, req("/u"), BODY),
        ("timed_out", None, (408, "upload body too slow"), CLOSED),
    ]),
    ("send timeout: close silently", [
        ("receive", GET, req("/a"), REPLY),
        ("timed_out", None, None, CLOSED),
    ]),
    ("linger timeout", [
        ("receive", GET_CLOSE, req("/a"), REPLY),
        ("reply_finished", False, CLOSE, LINGER),
        ("timed_out", None, None, CLOSED),
    ]),
    ("body bytes outside a body are a bug", [
        ("receive", GET, req("/a"), REPLY),
        ("body_received", b"x", ("raises", RuntimeError), REPLY),
    ]),
]

_NO_ARG = {"next_request", "accept_body", "body_from_buffer", "body_failed", "eof_received", "timed_out", "close"}


def run_row(steps) -> set[tuple[str, str, str]]:
    """Play one row, checking each step; the transitions it took."""
    proto = ServerProtocol(HeadCache())
    seen = set()
    for event, arg, expected, state in steps:
        before = proto.state
        call = getattr(proto, event)
        if isinstance(expected, tuple) and expected[:1] == ("raises",):
            kind = expected[1]
            with pytest.raises(HttpError if isinstance(kind, int) else kind) as info:
                call() if event in _NO_ARG else call(arg)
            if isinstance(kind, int):
                assert info.value.status == kind and info.value.close
        else:
            got = call() if event in _NO_ARG else call(arg)
            if callable(expected):
                assert expected(got), (event, got)
            else:
                assert got == expected, (event, got)
        assert proto.state == state, (event, proto.state)
        seen.add((before, event, proto.state))
    return seen


@pytest.mark.parametrize("name, steps", ROWS, ids=[r[0] for r in ROWS])
def test_protocol_table(name, steps):
    run_row(steps)


def test_a_request_is_the_current_one_until_its_reply_finished():
    proto = ServerProtocol(HeadCache())
    r = proto.receive(GET)
    assert proto.request is r
    proto.reply_finished()
    assert proto.request is None


def test_heads_are_memoized_across_connections():
    heads = HeadCache()
    first = ServerProtocol(heads).receive(GET)
    assert ServerProtocol(heads).receive(GET) is first     # one Request per distinct head


#: The diagram in zcopy/http/protocol.py, edge by edge.
TRANSITIONS = {
    (IDLE, "receive", HEAD), (IDLE, "receive", REPLY), (IDLE, "receive", BODY),
    (HEAD, "receive", HEAD), (HEAD, "receive", REPLY), (HEAD, "next_request", REPLY),
    (HEAD, "next_request", HEAD), (IDLE, "next_request", IDLE),
    (BODY, "body_received", BODY), (BODY, "body_received", REPLY),
    (BODY, "body_from_buffer", BODY), (BODY, "body_from_buffer", REPLY),
    (BODY, "body_consumed", BODY), (BODY, "body_consumed", REPLY),
    (REPLY, "reply_finished", IDLE), (REPLY, "reply_finished", HEAD), (REPLY, "reply_finished", LINGER),
    (BODY, "reply_finished", LINGER),
    (IDLE, "eof_received", CLOSED), (HEAD, "eof_received", CLOSED), (BODY, "eof_received", CLOSED),
    (REPLY, "eof_received", REPLY),
    (IDLE, "timed_out", CLOSED), (HEAD, "timed_out", CLOSED), (BODY, "timed_out", CLOSED),
    (REPLY, "timed_out", CLOSED), (LINGER, "timed_out", CLOSED), (LINGER, "close", CLOSED),
}


def test_the_tables_walk_every_transition():
    """Every edge of the diagram is taken by some row."""
    seen = set().union(*(run_row(steps) for _, steps in ROWS))
    missing = TRANSITIONS - seen
    assert not missing, sorted(missing)
