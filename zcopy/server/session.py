"""The browser's sign-in: ``/.zcopy/login``, ``/.zcopy/logout`` and the session cookie.

A browser that wants the web UI's write controls visits ``/.zcopy/login``: without credentials it gets
the Basic challenge (401), the browser asks for a name and password, and the signed-in request gets
204 with a session cookie (``zcopy_session``: ``HttpOnly; SameSite=Strict; Path=/``, plus ``Secure``
when the server speaks TLS). The cookie is a ``Session`` signed with the server secret
(``zcopy.server.signed``): the account, an expiry (``SESSION_TTL``) and a fingerprint of the account's
password hash. A request with the cookie and no Authorization is that account's, while the account
exists with the same password hash (a changed password, a removed account or a rotated secret ends
every session); a tampered, expired or stale cookie is simply anonymous. ``/.zcopy/logout`` clears
the cookie (the token itself stays valid until it expires: it is not stored anywhere to revoke).
SameSite=Strict keeps other sites' pages from riding on the cookie.
"""

from __future__ import annotations

import time

from zcopy import http
from zcopy.server.access import Access, Identity
from zcopy.server.reply import Reply
from zcopy.server.routes import RESERVED, Routes
from zcopy.server.signed import BadToken, Session, Signer, fingerprint

COOKIE = "zcopy_session"
SESSION_TTL = 12 * 3600
LOGIN, LOGOUT = RESERVED + "/login", RESERVED + "/logout"


def cookie_value(header: str | None) -> str | None:
    """The session token in a Cookie header, or None."""
    if not header or COOKIE not in header:
        return None
    for part in header.split(";"):
        name, sep, value = part.strip().partition("=")
        if sep and name == COOKIE:
            return value.strip().strip('"')
    return None


class Sessions:
    def __init__(self, access: Access, signer: Signer, *, secure: bool = False, ttl: int = SESSION_TTL) -> None:
        self.access = access
        self.signer = signer
        self.secure = secure
        self.ttl = ttl

    def identify(self, cookie_header: str | None) -> Identity | None:
        """The account a valid session cookie names; None (anonymous) for anything else."""
        token = cookie_value(cookie_header)
        accounts = self.access.accounts
        if token is None or accounts is None:
            return None
        try:
            session = self.signer.open_session(token, time.time())
        except BadToken:
            return None
        account = accounts.get(session.user)
        if account is None or not account.can_sign_in or fingerprint(account.hash) != session.fingerprint:
            return None
        return Identity(account.name, account.rules, "user")

    def _cookie(self, value: str, max_age: int) -> bytes:
        attrs = f"{COOKIE}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict"
        if self.secure:
            attrs += "; Secure"
        return f"Set-Cookie: {attrs}\r\nCache-Control: no-store\r\n".encode()

    def add_routes(self, routes: Routes, challenge: tuple[str, str]) -> None:
        date = routes.date

        def login(req: http.Request, close: bool, who: Identity) -> Reply:
            account = (self.access.accounts or {}).get(who.name) if who.kind == "user" else None
            if account is None or "authorization" not in req.headers:
                raise http.HttpError(401, "sign in with your user name and password", headers=[challenge])
            token = self.signer.session(Session(account.name, int(time.time()) + self.ttl,
                                                fingerprint(account.hash)))
            head = http.response_head(204, date.get(), b"", None, close=close,
                                      extra=self._cookie(token, self.ttl), version=req.version)
            return Reply(204, head, [], 0, close)

        def logout(req: http.Request, close: bool, who: Identity) -> Reply:
            head = http.response_head(204, date.get(), b"", None, close=close, extra=self._cookie("", 0),
                                      version=req.version)
            return Reply(204, head, [], 0, close)

        routes.add(LOGIN, public=True, identity=True, GET=login)
        routes.add(LOGOUT, public=True, identity=True, POST=logout, GET=logout)
