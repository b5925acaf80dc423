"""The browser session's pieces without a socket: the Secure attribute follows the connection's
transport (``transport.secure``, which the TLS transport sets), CSRF tokens per session, and the
cross-site rule by table. Over real sockets and in Chromium: tests/test_serve_share.py and
tests/test_ui_accounts_browser.py."""

from __future__ import annotations

import base64
import socket

import pytest

from zcopy import http
from zcopy.accounts import passwords
from zcopy.accounts.rules import Rules, parse_rule
from zcopy.accounts.users import Account
from zcopy.server.access import Access
from zcopy.server.routes import Routes
from zcopy.server.session import Sessions, cross_site, request_is_secure
from zcopy.server.signed import Signer
from zcopy.transport import PlainTransport

HASH = passwords.make("pw", time_cost=1, memory_kib=passwords.MIN_MEMORY_KIB)


def parse(raw: bytes) -> http.Request:
    return http.HeadCache().parse(raw)


class Conn:
    """What a route handler may ask of the connection: its transport."""

    def __init__(self, transport) -> None:
        self.transport = transport


class SecureTransport(PlainTransport):
    """A transport that says its bytes are encrypted, as the TLS transport will."""

    __slots__ = ()
    secure = True


@pytest.fixture
def routes():
    access = Access(accounts={"alice": Account("alice", HASH, Rules([parse_rule("/:rw")]))})
    sessions = Sessions(access, Signer(b"k" * 32))
    table = Routes(http.DateHeader())
    sessions.add_routes(table, ("WWW-Authenticate", 'Basic realm="zcopy"'))
    who = access.settle(access.identify("Basic " + base64.b64encode(b"alice:pw").decode(), "a", 0.0).run(), "a", 0.0)
    return table, sessions, who


def test_the_cookie_is_secure_when_the_transport_is(routes):
    table, sessions, who = routes
    req = parse(b"GET /.zcopy/login HTTP/1.1\r\nHost: h\r\nAuthorization: Basic x\r\n\r\n")
    a, b = socket.socketpair()
    try:
        for transport, secure in ((PlainTransport(a), False), (SecureTransport(a), True)):
            assert request_is_secure(Conn(transport)) is secure
            head = table.respond(req, False, True, who, Conn(transport)).head
            cookie = [line for line in head.split(b"\r\n") if line.startswith(b"Set-Cookie:")][0]
            assert (b"; Secure" in cookie) is secure
            assert b"HttpOnly" in cookie and b"SameSite=Strict" in cookie
    finally:
        a.close()
        b.close()
    assert request_is_secure(None) is False


def test_csrf_token_per_session_and_checked_for_writes(routes):
    table, sessions, who = routes
    req = parse(b"GET /.zcopy/login HTTP/1.1\r\nHost: h\r\nAuthorization: Basic x\r\n\r\n")
    head = table.respond(req, False, True, who).head
    token = head.split(b"zcopy_session=")[1].split(b";")[0].decode()
    csrf = sessions.csrf(token)
    cookie = f"zcopy_session={token}"
    assert sessions.identify(cookie, parse(f"GET / HTTP/1.1\r\nHost: h\r\nCookie: {cookie}\r\n\r\n".encode())).name == "alice"
    put = f"PUT /f HTTP/1.1\r\nHost: h\r\nCookie: {cookie}\r\nContent-Length: 0\r\n"
    assert sessions.identify(cookie, parse(f"{put}X-Zcopy-Csrf: {csrf}\r\n\r\n".encode())).name == "alice"
    for bad in ("", "X-Zcopy-Csrf: \r\n", f"X-Zcopy-Csrf: {csrf}x\r\n", f"X-Zcopy-Csrf: {sessions.csrf(token + 'x')}\r\n"):
        with pytest.raises(http.HttpError) as exc:
            sessions.identify(cookie, parse(f"{put}{bad}\r\n".encode()))
        assert exc.value.status == 403
    assert csrf != sessions.csrf(token[:-1] + ("A" if token[-1] != "A" else "B"))


@pytest.mark.parametrize("headers, refused", [
    ("", False),                                                    # curl, WebDAV clients
    ("Sec-Fetch-Site: same-origin\r\n", False),
    ("Sec-Fetch-Site: none\r\n", False),                             # typed in the address bar
    ("Sec-Fetch-Site: same-site\r\n", True),
    ("Sec-Fetch-Site: cross-site\r\n", True),
    ("Origin: http://h\r\n", False),
    ("Origin: http://H\r\n", False),
    ("Origin: http://h:81\r\n", True),
    ("Origin: http://evil\r\n", True),
    ("Origin: null\r\n", True),
    ("Origin: http://h\r\nSec-Fetch-Site: cross-site\r\n", True),
])
def test_cross_site_by_table(headers, refused):
    req = parse(f"DELETE /f HTTP/1.1\r\nHost: h\r\n{headers}\r\n".encode())
    assert (cross_site(req) is not None) is refused


def test_behind_a_trusted_proxy_the_forwarded_host_counts_as_the_origin():
    req = parse(b"PUT /f HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nOrigin: https://files.example\r\n"
                b"X-Forwarded-Host: files.example\r\n\r\n")
    assert cross_site(req) is not None                       # not told by a trusted proxy: refused
    assert cross_site(req, "files.example") is None
    assert cross_site(req, "other.example") is not None
