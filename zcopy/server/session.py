"""The browser's sign-in: ``/.zcopy/login``, ``/.zcopy/logout``, ``/.zcopy/me``, the session cookie and
what keeps other sites from riding on it (CSRF).

A browser that wants the web UI's write controls visits ``/.zcopy/login`` (the page's "Sign in" link,
``?next=/the/folder/``): without credentials it gets the Basic challenge (401), the browser asks for a
name and password, and the signed-in request gets a session cookie (``zcopy_session``: ``HttpOnly;
SameSite=Strict; Path=/``, plus ``Secure`` when the request came over TLS, see ``request_is_secure``)
and a 303 back to ``next`` (a path on this server only), or 204 without one. The cookie is a
``Session`` signed with the server secret (``zcopy.server.signed``): the account, an expiry
(``SESSION_TTL``) and a fingerprint of the account's password hash. A request with the cookie and no
Authorization is that account's, while the account exists with the same password hash (a changed
password, a removed account or a rotated secret ends every session); a tampered, expired or stale
cookie is simply anonymous. ``/.zcopy/logout`` (POST from the page) clears the cookie (the token
itself stays valid until it expires: it is not stored anywhere to revoke). A browser remembers the
Basic password itself until it is closed, so signing in again after signing out may not ask for it.

``GET /.zcopy/me`` tells the page who the cookie says is signed in (``{"user": NAME or null, "csrf":
TOKEN or null}``), from the cookie alone (not from an Authorization header the browser may add).

CSRF. Every state-changing request (any method but GET, HEAD, OPTIONS and PROPFIND) is refused with
403 when a browser says it comes from another site: ``Sec-Fetch-Site`` other than ``same-origin`` or
``none``, or an ``Origin`` whose host is not the request's Host (``cross_site``). This holds whatever
the credentials (a browser adds a remembered Basic password or the cookie on its own); clients that
are not browsers (curl, WebDAV clients, ``zcopy``) send neither header and are not affected. A request
that is signed in by the cookie must also carry ``X-Zcopy-Csrf`` with the session's CSRF token (an
HMAC of the cookie under the secret, compared with ``hmac.compare_digest``), which only a page of this
origin can read (from ``/.zcopy/me``). SameSite=Strict keeps other sites' requests from carrying the
cookie in the first place; the token and the origin checks hold where SameSite does not (old browsers,
a sibling subdomain being "same site").
"""

from __future__ import annotations

import hmac
import time
from urllib.parse import parse_qs, quote, urlsplit

from zcopy import http
from zcopy.server.access import Access, Identity
from zcopy.server.reply import Reply
from zcopy.server.routes import RESERVED, Routes
from zcopy.server.signed import BadToken, Session, Signer, fingerprint

COOKIE = "zcopy_session"
CSRF_HEADER = "x-zcopy-csrf"
SESSION_TTL = 12 * 3600
LOGIN, LOGOUT, ME = RESERVED + "/login", RESERVED + "/logout", RESERVED + "/me"
#: Methods that change nothing: no CSRF checks.
SAFE = frozenset({"GET", "HEAD", "OPTIONS", "PROPFIND"})


def cookie_value(header: str | None) -> str | None:
    """The session token in a Cookie header, or None."""
    if not header or COOKIE not in header:
        return None
    for part in header.split(";"):
        name, sep, value = part.strip().partition("=")
        if sep and name == COOKIE:
            return value.strip().strip('"')
    return None


def request_is_secure(conn) -> bool:
    """Whether the request came over TLS: the hook the ``Secure`` cookie attribute asks. A transport
    says it with its ``secure`` attribute (``PlainTransport.secure`` is False; a TLS transport sets
    True). ``conn`` is None in unit tests."""
    return conn is not None and bool(getattr(conn.transport, "secure", False))


def cross_site(req: http.Request, forwarded_host: str | None = None) -> str | None:
    """Why a state-changing request is refused as coming from another site, or None. Browsers send
    ``Sec-Fetch-Site`` and ``Origin``; other clients send neither and pass. ``forwarded_host``: the
    host the browser asked for, as a trusted proxy says it (``X-Forwarded-Host``), when the proxy
    sends its own Host upstream."""
    headers = req.headers
    site = headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return f"a {site} request may not change anything here"
    origin = headers.get("origin")
    if origin is not None:
        host = headers.get("host", "")
        try:
            netloc = urlsplit(origin).netloc
        except ValueError:
            netloc = ""
        netloc = netloc.lower()
        if not netloc or (netloc != host.strip().lower()
                          and (forwarded_host is None or netloc != forwarded_host.strip().lower())):
            return "a request from another origin may not change anything here"
    return None


class Sessions:
    def __init__(self, access: Access, signer: Signer, *, secure: bool = False, ttl: int = SESSION_TTL) -> None:
        self.access = access
        self.signer = signer
        self.secure = secure        # always Secure (e.g. behind a TLS-terminating proxy); else per request
        self.ttl = ttl

    def _session(self, token: str | None) -> Identity | None:
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

    def identify(self, cookie_header: str | None, req: http.Request | None = None) -> Identity | None:
        """The account a valid session cookie names; None (anonymous) for anything else. For a
        state-changing ``req`` the cookie counts only with the session's CSRF token in
        ``X-Zcopy-Csrf``: without it (or with another) the request is refused (HttpError 403). Signing
        out needs no token (it destroys nothing, and the origin checks still hold)."""
        token = cookie_value(cookie_header)
        identity = self._session(token)
        if identity is not None and req is not None and req.method not in SAFE and req.path != LOGOUT:
            given = req.headers.get(CSRF_HEADER, "")
            if not hmac.compare_digest(given.encode("utf-8", "surrogateescape"), self.csrf(token).encode()):
                raise http.HttpError(403, "this request needs the page's CSRF token (X-Zcopy-Csrf)")
        return identity

    def csrf(self, token: str) -> str:
        """The CSRF token of the session whose cookie is ``token``."""
        return self.signer.tag("csrf", token)

    def _cookie(self, value: str, max_age: int, secure: bool) -> bytes:
        attrs = f"{COOKIE}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict"
        if secure or self.secure:
            attrs += "; Secure"
        return f"Set-Cookie: {attrs}\r\nCache-Control: no-store\r\n".encode()

    def add_routes(self, routes: Routes, challenge: tuple[str, str]) -> None:
        date = routes.date

        def back(req: http.Request, extra: bytes, close: bool) -> Reply:
            """303 to ``?next=`` (a path on this server, never another origin), else 204."""
            target = parse_qs(req.query).get("next", [""])[-1]
            if target.startswith("/") and not target.startswith("//") and "\\" not in target:
                location = quote(target, safe="/:@!$&'()*+,;=-._~%?")
                extra += f"Location: {location}\r\n".encode("ascii")
                head = http.response_head(303, date.get(), b"", 0, close=close, extra=extra, version=req.version)
                return Reply(303, head, [], 0, close)
            head = http.response_head(204, date.get(), b"", None, close=close, extra=extra, version=req.version)
            return Reply(204, head, [], 0, close)

        def login(req: http.Request, close: bool, who: Identity, conn=None) -> Reply:
            account = (self.access.accounts or {}).get(who.name) if who.kind == "user" else None
            if account is None or "authorization" not in req.headers:
                raise http.HttpError(401, "sign in with your user name and password", headers=[challenge])
            token = self.signer.session(Session(account.name, int(time.time()) + self.ttl,
                                                fingerprint(account.hash)))
            return back(req, self._cookie(token, self.ttl, request_is_secure(conn)), close)

        def logout(req: http.Request, close: bool, who: Identity, conn=None) -> Reply:
            return back(req, self._cookie("", 0, request_is_secure(conn)), close)

        def me(req: http.Request, close: bool, who: Identity, conn=None) -> Reply:
            token = cookie_value(req.headers.get("cookie"))
            identity = self._session(token)
            return routes.json(req, 200, {"user": identity.name if identity else None,
                                          "csrf": self.csrf(token) if identity else None,
                                          "login": LOGIN, "logout": LOGOUT}, close)

        routes.add(LOGIN, public=True, identity=True, GET=login)
        routes.add(LOGOUT, public=True, identity=True, POST=logout)   # never GET: a link on another site must not sign out
        routes.add(ME, public=True, identity=True, GET=me)


def add_no_accounts_me(routes: Routes) -> None:
    """``/.zcopy/me`` on a server without sessions (no users file, or no state folder): nobody can sign
    in, so the page shows no sign-in link (rather than asking a route that is not there)."""
    def me(req: http.Request, close: bool) -> Reply:
        return routes.json(req, 200, {"user": None, "csrf": None, "login": None, "logout": None}, close)

    routes.add(ME, public=True, GET=me)
