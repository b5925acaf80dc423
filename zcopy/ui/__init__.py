"""The web UI's own files: small CSS and JS shipped in the package (zcopy/ui/static/), no framework,
nothing fetched from anywhere else.

Each asset is read once per process and served from ``/.zcopy/ui/<hash>/<name>``: the content hash is
in the URL, so the reply may be cached for a year (``immutable``) and a new release simply links new
URLs. ``url(name)`` is what the listing page links; ``register(routes)`` adds one exact route per asset
to the reserved route table (zcopy.server.routes), so they can never collide with a user's file.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

from zcopy import http

#: The UI pages' policy: our own script and style only, no inline script, nothing from elsewhere.
PAGE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "media-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}
_NAMES = ("app.css", "app.js", "account.css", "account.js")     # account.*: sign-in, CSRF, share (docs/ui.md)


@dataclass(frozen=True, slots=True)
class Asset:
    url: str
    body: bytes
    etag: str
    static: bytes          # the header block, built once


def _load() -> dict[str, Asset]:
    out = {}
    folder = resources.files(__package__) / "static"
    for name in _NAMES:
        body = (folder / name).read_bytes()
        digest = hashlib.blake2b(body, digest_size=8).hexdigest()
        ctype = _TYPES[name[name.rindex("."):]]
        etag = f'"{digest}"'
        static = (f"Content-Type: {ctype}\r\nETag: {etag}\r\n"
                  "Cache-Control: public, max-age=31536000, immutable\r\n"
                  "X-Content-Type-Options: nosniff\r\n").encode()
        out[name] = Asset(f"/.zcopy/ui/{digest}/{name}", body, etag, static)
    return out


ASSETS = _load()
#: name -> URL, what the folder page links.
URLS = {name: asset.url for name, asset in ASSETS.items()}


def url(name: str) -> str:
    return ASSETS[name].url


def register(routes) -> None:
    """One GET route per asset (HEAD and OPTIONS come with it); public: the page's look is no secret."""
    from zcopy.server.reply import Reply

    for asset in ASSETS.values():
        def serve(req: http.Request, close: bool, asset: Asset = asset) -> Reply:
            if http.evaluate_preconditions(req.method, req.headers, asset.etag, None) == 304:
                head = http.response_head(304, routes.date.get(), asset.static, None, close=close,
                                          version=req.version)
                return Reply(304, head, [], 0, close)
            head = http.response_head(200, routes.date.get(), asset.static, len(asset.body), close=close,
                                      version=req.version)
            if req.method == "HEAD":
                return Reply(200, head, [], 0, close)
            return Reply(200, head, [asset.body], len(asset.body), close)

        routes.add(asset.url, public=True, GET=serve)
