"""Share links: ``POST /.zcopy/share`` mints one; ``FILE?share=TOKEN`` downloads with it,
``FOLDER/?share=TOKEN`` lists and downloads that folder, and a drop box link ``FOLDER/?share=TOKEN``
(rights ``w``) takes uploads with it.

Minting. ``POST /.zcopy/share?path=/a/b.iso&expires=SECONDS[&rights=r|w]`` (no body) by someone who
may share that path: for ``r`` (the default: download one file, or list and download one folder) who
may read it (for a folder: all of it, no narrower rule beneath without ``r``); for ``w`` (a drop box:
upload new files into a folder) who may create files there. That is an account with those rights, or
the write token; on a server without a users file, whoever may write (the write token, or anyone on
an open ``--allow-write`` server). Anonymous gets the sign-in challenge; the read token, or a share
link, gets 403. The rights are checked before the path is looked at, so a refusal says nothing about
what exists; then a ``w`` link needs a folder (400 otherwise; 404 for nothing there). A folder's path
ends with "/" in the token and the link. The answer (201, JSON) is the link as a path and query
(``/a/b.iso?share=TOKEN``: the client or the page puts its own origin in front), its expiry (Unix
time) and its rights. ``expires`` is 1 s to ``MAX_TTL`` (default ``DEFAULT_TTL``).

The token is a ``zcopy.server.signed.Share``: the path, the expiry, the rights and who minted it,
HMAC-signed with the state folder's secret. Nothing is stored per link.

Using. A request whose query carries ``share=TOKEN`` is answered as the link's own identity
(``share:<minter>`` in the access log and ``zcopy top``), whatever other credentials it carries, whose
only right is the link's on its path: an ``r`` link to a file answers GET and HEAD of exactly it
(ranges, conditionals, everything a download has; a folder that has replaced the file is 404, never
listed); an ``r`` link to a folder answers GET and HEAD beneath it, and is first turned into a cookie
scoped to the folder's path (``COOKIE``, SameSite=Lax: 303 to the URL without the query), so that the
listing's own links work without a query (``from_cookie``: a cookie that does not fit is ignored);
a ``w`` link answers PUT of a new file beneath its folder (replacing one needs ``d``, which a link
never gives: 403). Anything else is refused with the same 403 and the same words, before the file is
looked at, whatever the reason: a tampered, malformed or expired token (the MAC is compared in
constant time, ``hmac.compare_digest``), another path or method than the link's, or a revoked link.

Revoking. A link holds while the one who minted it still could: an account's links stop when the
account is removed, cannot sign in, or loses the right on the path (for a folder link, anywhere in
the subtree; checked at every use, against the users file as reloaded); links minted with the write
token stop when the server has no write token. ``zcopy share --revoke-all`` gives the state folder a
new secret: after a SIGHUP (new workers read it) or a restart, every link and every browser session
signed before is void. Single links are not stored, so they cannot be revoked one by one (a table of
revoked links would cost a database read per download).

``GET /.zcopy/qr?text=...`` draws a QR code of ``text`` (at most ``QR_MAX`` bytes) as SVG with segno,
on the executor (one at a time per worker: a drawing costs up to ~0.3 s of CPU under the GIL, so a
second one meanwhile gets 503 with ``Retry-After: 1``), under a CSP that allows nothing (no script, no
style, no fetch, sandboxed); the page shows it as an ``<img>`` beside the link.
"""

from __future__ import annotations

import io
import time
from urllib.parse import parse_qs, quote, unquote

from zcopy import http
from zcopy.accounts.rules import Rule, Rules, segments
from zcopy.server.access import Access, Identity
from zcopy.server.executor import defer
from zcopy.server.reply import Reply, refusal
from zcopy.server.routes import RESERVED, Routes, reserved
from zcopy.server.signed import BadToken, Share, Signer

PARAM = "share"
#: The cookie a folder link becomes (scoped to the folder's path).
COOKIE = "zcopy_share"
SHARE_ROUTE, QR_ROUTE = RESERVED + "/share", RESERVED + "/qr"
DEFAULT_TTL = 24 * 3600
MAX_TTL = 365 * 24 * 3600
QR_MAX = 2048
#: QR codes one worker draws at once (more: 503 with Retry-After).
QR_AT_ONCE = 1
#: What an unusable link gets, whatever the reason (nothing said about the file or the token).
INVALID = "this share link is not valid (expired, revoked or altered)"
_QR_HEADERS = (b"Content-Type: image/svg+xml\r\nCache-Control: private, max-age=3600\r\n"
               b"Content-Security-Policy: default-src 'none'; sandbox\r\nX-Content-Type-Options: nosniff\r\n")


def reads_whole_tree(rules: Rules, segs: tuple) -> bool:
    """``r`` on ``segs`` and no narrower rule beneath it without ``r``."""
    n = len(segs)
    return "r" in rules.perms(segs) and all("r" in rule.perms for rule in rules
                                            if len(rule.path) > n and rule.path[:n] == segs)


def token_in(query: str) -> str | None:
    """The ``share=`` value of a raw query, or None. Cheap: most queries have none."""
    if not query or PARAM + "=" not in query:
        return None
    for part in query.split("&"):
        if part.startswith(PARAM + "="):
            return unquote(part[len(PARAM) + 1:])
    return None


class Shares:
    def __init__(self, access: Access, signer: Signer, cache, executor=None, writes=None) -> None:
        self.access = access
        self.signer = signer
        self.cache = cache
        self.executor = executor
        self.writes = writes        # the server's Writer (None: read-only, no drop boxes)

    # -- using a link -------------------------------------------------------------

    def identify(self, req: http.Request, token: str, path: str) -> Identity:
        """The identity a link proves for this request (``path``: decoded, dot segments applied).
        Raises HttpError(403) for anything else, with one message whatever the reason."""
        try:
            share = self.signer.open_share(token, time.time())
        except BadToken:
            raise http.HttpError(403, INVALID) from None
        if not self._fits(share, req.method, path) or not self._still_valid(share):
            raise http.HttpError(403, INVALID)
        if share.rights == "r" and share.path.endswith("/"):
            # A folder: the link becomes a cookie for the folder's path, so that the listing's own
            # links (which carry no query) work too; then the same URL without the query.
            where = quote(share.path.encode("utf-8", "surrogateescape"), safe="/")
            here = quote(http.normalised(req.path).encode("utf-8", "surrogateescape"), safe="/")
            if req.path.endswith("/") and here != "/":
                here += "/"
            expires = max(1, share.expires - int(time.time()))
            raise http.HttpError(303, "opening the shared folder", headers=[
                ("Location", here), ("Cache-Control", "no-store"),
                ("Set-Cookie", f"{COOKIE}={token}; Path={where}; Max-Age={expires}; HttpOnly; SameSite=Lax")])
        return self._identity(share)

    def from_cookie(self, req: http.Request, cookie_header: str, path: str) -> Identity | None:
        """The identity of a folder link's cookie that covers this request (GET or HEAD beneath the
        folder), or None: a stale or foreign cookie is simply not used."""
        now = time.time()
        for part in cookie_header.split(";"):
            name, sep, token = part.strip().partition("=")
            if not sep or name != COOKIE:
                continue
            try:
                share = self.signer.open_share(token.strip(), now)
            except BadToken:
                continue
            if share.rights == "r" and share.path.endswith("/") and self._fits(share, req.method, path) \
                    and self._still_valid(share):
                return self._identity(share)
        return None

    @staticmethod
    def _fits(share: Share, method: str, path: str) -> bool:
        """Whether a request (method, decoded normalised path) is one the link answers."""
        if share.rights == "w":         # a drop box: PUT of a new file in the folder (or beneath it)
            return method == "PUT" and path.startswith(share.path.rstrip("/") + "/") and not path.endswith("/")
        if method not in ("GET", "HEAD"):
            return False
        if share.path.endswith("/"):    # a folder: it and everything beneath it
            return path == share.path.rstrip("/") or path.startswith(share.path) or share.path == "/"
        return path == share.path       # a file: exactly it

    @staticmethod
    def _identity(share: Share) -> Identity:
        kind = "share-folder" if share.rights == "r" and share.path.endswith("/") else "share"
        return Identity(f"share:{share.by}", Rules([Rule(segments(share.path), frozenset(share.rights))]), kind)

    def _still_valid(self, share: Share) -> bool:
        """Whoever minted the link could still mint it (see the module's "Revoking")."""
        access = self.access
        if share.by == "token":
            return access.token is not None
        if access.accounts is None:
            return share.by == "-" and access.allow_write and access.token is None
        account = access.accounts.get(share.by)
        if account is None or not account.can_sign_in:
            return False
        if share.rights == "r" and share.path.endswith("/"):
            return reads_whole_tree(account.rules, segments(share.path))
        return account.rules.allows(segments(share.path), share.rights)

    # -- minting one ----------------------------------------------------------------

    def minter(self, who: Identity, path: str, rights: str, entry) -> str | None:
        """Who the link will name as its minter, or None when ``who`` may not share ``path`` with
        ``rights`` (``r``: read the file; ``w``: create files in the folder). ``entry``: what
        the file cache found at ``path`` (None: a folder; an HttpError: nothing to share)."""
        access = self.access

        def may() -> bool:
            if rights == "w":
                return access.allows(who, "PUT", path.rstrip("/") + "/x", False)
            if not access.allows(who, "GET", path, True):
                return False
            if isinstance(entry, http.HttpError):   # (404 for nothing there: said once allowed)
                raise entry
            # A folder link reads everything beneath: only for who reads everything beneath.
            return who.rules is None or entry is not None or reads_whole_tree(who.rules, segments(path))
        if who.kind == "token":
            return "token"
        if who.kind == "user":
            return who.name if may() else None
        if who.kind == "anonymous" and access.accounts is None and access.token is None \
                and access.allow_write and may():
            return "-"                  # an open --allow-write server: anyone may write, so anyone may share
        return None

    def add_routes(self, routes: Routes, challenge: tuple[str, str]) -> None:
        date = routes.date

        def mint(req: http.Request, close: bool, who: Identity, conn=None) -> Reply:
            params = parse_qs(req.query, keep_blank_values=True, errors="surrogateescape")
            raw = params.get("path", [""])[-1]
            if not raw.startswith("/") or "\0" in raw:
                raise http.HttpError(400, "say which file: ?path=/the/file (a decoded URL path)")
            path = http.normalised(raw)
            try:
                ttl = int(params.get("expires", [str(DEFAULT_TTL)])[-1])
            except ValueError:
                ttl = 0
            if not 1 <= ttl <= MAX_TTL:
                raise http.HttpError(400, f"expires is a number of seconds from 1 to {MAX_TTL}")
            rights = params.get("rights", ["r"])[-1]
            if rights not in ("r", "w"):
                raise http.HttpError(400, "rights is r (download a file) or w (a drop box: upload into a folder)")
            if rights == "w" and self.writes is None:
                raise http.HttpError(403, "this server is read-only (start it with --allow-write)")
            if reserved(path):
                return minted(req, close, who, path, ttl, rights, {path: None})
            # The file (or folder) it names, found off the loop when not cached (the walk and the
            # open of an uncached file wait for the disk).
            return self.cache.with_entries(
                [path], lambda known: minted(req, close, who, path, ttl, rights, known),
                lambda exc: refusal(exc, date.get(), close=close, head_only=req.method == "HEAD",
                                    version=req.version))

        def minted(req: http.Request, close: bool, who: Identity, path: str, ttl: int, rights: str,
                   known: dict) -> Reply:
            entry = known[path]                     # an HttpError for nothing there, None for a folder
            by = None if reserved(path) else self.minter(who, path, rights, entry)
            if by is None:
                if who.kind == "anonymous":
                    raise http.HttpError(401, "sign in to share", headers=[challenge])
                raise http.HttpError(403, f"{who.name} may not share this")
            if isinstance(entry, http.HttpError):   # (404 for nothing there, 503 out of fds...)
                raise entry
            if rights == "w" and entry is not None:
                raise http.HttpError(400, "a drop box is a folder")
            if entry is None:                       # a folder: its path ends with "/" in the link
                path = path.rstrip("/") + "/"
            expires = int(time.time()) + ttl
            token = self.signer.share(Share(path, expires, rights, by))
            link = quote(path.encode("utf-8", "surrogateescape"), safe="/") + f"?{PARAM}={token}"
            return routes.json(req, 201, {"url": link, "path": path, "expires": expires, "rights": rights}, close)

        drawing = [0]       # QR codes being drawn by this worker (pure Python: it holds the GIL)

        def qr(req: http.Request, close: bool) -> Reply:
            text = parse_qs(req.query).get("text", [""])[-1]
            if not text or len(text.encode("utf-8", "surrogateescape")) > QR_MAX:
                raise http.HttpError(400, f"text is 1 to {QR_MAX} bytes")
            if drawing[0] >= QR_AT_ONCE:
                # Each costs up to ~0.3 s of CPU under the GIL the loop needs: a flood of them would
                # stall every other request of the worker. The page asks for one at a time.
                raise http.HttpError(503, "busy drawing another QR code; try again", headers=[("Retry-After", "1")])
            drawing[0] += 1
            held = [True]

            def release() -> None:
                if held[0]:
                    held[0] = False
                    drawing[0] -= 1

            def draw() -> bytes:
                import segno

                out = io.BytesIO()
                segno.make(text, error="m", micro=False).save(out, kind="svg", scale=4, border=2,
                                                              xmldecl=False, title="QR code of the link")
                return out.getvalue()

            def then(svg: bytes) -> Reply:
                release()
                head = http.response_head(200, date.get(), _QR_HEADERS, len(svg), close=close, version=req.version)
                if req.method == "HEAD":
                    return Reply(200, head, [], 0, close)
                return Reply(200, head, [svg], len(svg), close)

            def refuse(exc: Exception) -> Reply:
                release()
                if not isinstance(exc, http.HttpError):
                    exc = http.HttpError(400, "this text cannot be drawn as a QR code")
                return refusal(exc, date.get(), close=close, head_only=req.method == "HEAD", version=req.version)

            return defer(self.executor, draw, then, refuse, cpu=True)

        routes.add(SHARE_ROUTE, public=True, identity=True, POST=mint)
        routes.add(QR_ROUTE, GET=qr)
