"""Who is asking: the identity a request proves (a token, an account's password, a browser's
session cookie, a share link), before the responder decides what it may do.

``Gate.identify`` is the one place a request's credentials are read. It answers at once for
tokens, cookies, share links and a connection's remembered sign-in; a password (argon2id, slow by
design) is checked off the loop by the verifier (``zcopy.server.verify``), and the request goes
on, on the loop, through ``answer`` once it is settled. What an identity may do is
``zcopy.server.access``'s; the refusal (401 with the right challenge, or 403) is ``refuse``.
"""

from __future__ import annotations

import hmac
import time

from zcopy import http
from zcopy.accounts.rules import segments
from zcopy.server.access import Access, Check, Denied, Identity
from zcopy.server.auth import CHALLENGE
from zcopy.server.reply import Pending
from zcopy.server.session import SAFE as SAFE_METHODS, cross_site
from zcopy.server.share import token_in as share_token
from zcopy.server.throttle import Held

#: The challenge with a users file: accounts sign in with HTTP Basic (tokens still work as Bearer).
BASIC_CHALLENGE = ("WWW-Authenticate", 'Basic realm="zcopy", charset="UTF-8"')


class Gate:
    """Identifies requests for one worker. ``answer(req, identity, closing, conn)`` carries on a
    request whose password was checked off the loop; ``error(exc, close=, head_only=, version=)``
    answers one that was refused there."""

    def __init__(self, access: Access, answer, error, *, verifier=None, shared_throttle=None, sessions=None,
                 shares=None, trusted_proxy: str | None = None) -> None:
        self.access = access
        self.answer = answer
        self.error = error
        #: Runs password checks off the loop (zcopy.server.verify); None: inline (unit tests).
        self.verifier = verifier
        #: Failed sign-ins counted across workers (zcopy.server.throttle), inside the verification job.
        self.shared_throttle = shared_throttle
        #: The browser's session cookie (zcopy.server.session); None: no users file or no state folder.
        self.sessions = sessions
        #: Share links (zcopy.server.share); None: no state folder to sign them with.
        self.shares = shares
        self.trusted_proxy = trusted_proxy
        #: Counted here, published by the worker's stats: failed sign-ins, throttled ones, overloads.
        self.failures = 0
        self.throttled = 0
        self.busy = 0

    def identify(self, req: http.Request, closing: bool, conn):
        """The request's Identity; or a Pending while its password is checked. Raises HttpError."""
        access = self.access
        if req.method not in SAFE_METHODS:              # another site's page may not change anything here
            why = cross_site(req, self.forwarded_host(req, conn))
            if why is not None:
                raise http.HttpError(403, why)
        if req.query and self.shares is not None:       # a share link: its own identity, whoever follows it
            token = share_token(req.query)
            if token is not None:
                return self.shares.identify(req, token, rules_path(req.path))
        auth = req.headers.get("authorization")
        if auth is None:
            cookie = req.headers.get("cookie")
            if cookie is None:
                return access.anonymous
            if self.shares is not None and "zcopy_share=" in cookie:        # inside a shared folder
                path = rules_path(req.path)
                shared = self.shares.from_cookie(req, cookie, path)
                if shared is not None:      # a signed-in account that reads here keeps its own rights
                    mine = self.sessions.identify(cookie, req) if self.sessions is not None else None
                    return mine if mine is not None and access.allows(mine, req.method, path, True) else shared
            if self.sessions is not None:                                   # a browser signed in before
                return self.sessions.identify(cookie, req) or access.anonymous
            return access.anonymous
        if conn is not None:
            known = conn.auth       # this connection's last sign-in: keep-alive requests skip the rest
            if known is not None and known[1] == access.generation and (
                    known[0] is auth or hmac.compare_digest(known[0].encode("utf-8", "surrogateescape"),
                                                            auth.encode("utf-8", "surrogateescape"))):
                return known[2]         # (the same head's Request shares its strings: ``is`` first)
        addr = self.client(req, conn)
        try:
            got = access.identify(auth, addr, time.monotonic())
        except Denied as exc:
            return self._denied(exc)
        if got.__class__ is Check:
            return self._verify(got, req, closing, conn, addr)
        if conn is not None:
            conn.auth = (auth, access.generation, got)
        return got

    def _denied(self, exc: Denied) -> Identity:
        """A refused sign-in: 401 (or 429 when throttled). Without a users file a wrong token
        leaves the request anonymous, as before accounts (an open server still serves it)."""
        if exc.status == 429:
            self.throttled += 1
            raise http.HttpError(429, str(exc), headers=[("Retry-After", str(exc.retry_after))])
        self.failures += 1
        if self.access.accounts is None:
            return self.access.anonymous
        raise http.HttpError(401, str(exc), headers=[BASIC_CHALLENGE])

    def client(self, req: http.Request, conn) -> str:
        """The client's address: the peer's; behind ``--trusted-proxy`` (only when the peer is
        that proxy) the last address of X-Forwarded-For, the one the proxy itself added."""
        addr = conn.addr[0] if conn is not None and isinstance(conn.addr, tuple) else "-"
        if self.trusted_proxy is not None and addr == self.trusted_proxy:
            forwarded = req.headers.get("x-forwarded-for")
            if forwarded:
                addr = forwarded.rsplit(",", 1)[-1].strip() or addr
        return addr

    def forwarded_host(self, req: http.Request, conn) -> str | None:
        """X-Forwarded-Host (its last value), only from the ``--trusted-proxy`` peer."""
        if self.trusted_proxy is None or conn is None or not isinstance(conn.addr, tuple) \
                or conn.addr[0] != self.trusted_proxy:
            return None
        forwarded = req.headers.get("x-forwarded-host")
        return forwarded.rsplit(",", 1)[-1].strip() if forwarded else None

    def _verify(self, check: Check, req: http.Request, closing: bool, conn, addr: str):
        """Check a password off the loop (``zcopy.server.verify``), then answer the request."""
        access = self.access

        def settle(check: Check) -> Identity:
            try:
                identity = access.settle(check, addr, time.monotonic())
            except Denied as exc:
                return self._denied(exc)
            if conn is not None:
                conn.auth = (req.headers.get("authorization"), access.generation, identity)
            return identity

        if self.verifier is None:       # no worker around it (unit tests): here and now
            return settle(check.run())
        pending = Pending()

        def then(result, error) -> None:
            if conn is not None and conn.pending is not pending:
                return                  # the connection closed meanwhile: nothing to answer
            close = closing or not req.keep_alive or bool(req.content_length or req.chunked)
            try:
                if error is not None:
                    raise http.HttpError(500, "the password check failed", close=True)
                if result.__class__ is Held:          # too many failures from this address, in any worker
                    self._denied(Denied(429, "too many failed sign-ins from this address",
                                        retry_after=int(result.retry_after) + 1))
                reply = self.answer(req, settle(result), closing, conn)
            except http.HttpError as exc:
                reply = self.error(exc, close=close, head_only=req.method == "HEAD", version=req.version)
            pending.done(reply)

        shared = self.shared_throttle
        job = check.run if shared is None else (lambda: shared.job(check, addr))
        if not self.verifier.submit(job, then):
            self.busy += 1
            raise http.HttpError(503, "too many sign-ins at once; try again", headers=[("Retry-After", "1")])
        return pending

    def refuse(self, identity: Identity, what: str, legacy: str) -> http.HttpError:
        """Not allowed: 401 with a challenge when not signed in, 403 when signed in. Without a
        users file, as before accounts: 401 with the token challenge (``legacy`` says why)."""
        if self.access.accounts is None:
            return http.HttpError(401, legacy, headers=[CHALLENGE])
        if identity.kind == "anonymous":
            return http.HttpError(401, f"sign in to {what}", headers=[BASIC_CHALLENGE])
        return http.HttpError(403, f"{identity.name} may not {what}")


class Rights:
    """What the writer asks before it changes anything: ``need`` raises the refusal (401/403),
    ``has`` only answers (a PUT without ``d`` must not replace what appears meanwhile)."""

    __slots__ = ("gate", "identity")

    def __init__(self, gate: Gate, identity: Identity) -> None:
        self.gate = gate
        self.identity = identity

    def has(self, method: str, url_path: str, exists: bool, destination: bool = False) -> bool:
        access = self.gate.access
        path = rules_path(url_path)
        if destination:
            return access.allows_destination(self.identity, method, path, exists)
        return access.allows(self.identity, method, path, exists)

    def whole_tree(self, url_path: str) -> bool:
        return whole_tree_readable(self.identity, rules_path(url_path))

    def need(self, method: str, url_path: str, exists: bool, destination: bool = False) -> None:
        if not self.has(method, url_path, exists, destination):
            what = "replace what is there" if exists and (method == "PUT" or destination) else f"{method} here"
            raise self.gate.refuse(self.identity, what, "a valid token is needed to write")


def whole_tree_readable(identity: Identity, folder: str) -> bool:
    """Whether ``identity`` reads everything under ``folder``: ``r`` on the folder and no narrower
    rule beneath it without ``r`` (then an archive needs no filter entry by entry)."""
    rules = identity.rules
    if rules is None:
        return True                     # before accounts: whoever reads the folder reads the tree
    segs = segments(folder)
    n = len(segs)
    if "r" not in rules.perms(segs):
        return False
    return all("r" in rule.perms for rule in rules if len(rule.path) > n and rule.path[:n] == segs)


def rules_path(url_path: str) -> str:
    """The path the rules judge: dot segments applied (the file walk applies them too)."""
    return http.normalised(url_path) if "/." in url_path else url_path
