"""The route table: the server's own resources under ``/.zcopy/``, in front
of the file responder.

A request whose path is in the reserved namespace (``/.zcopy`` and below,
after dot segments are resolved, so ``/a/../.zcopy/x`` is reserved too) never
reaches the files: it is answered here, by the handler registered for its
exact path and method, or 404 (no such route) or 405 with ``Allow`` (a route
without that method). Methods dispatch in this one place: HEAD is answered by
the GET handler without the body, OPTIONS lists ``Allow``. Files named
``.zcopy`` in ROOT are never served, listed or written (see zcopy.http.paths).

A handler is ``handler(req, close) -> Reply | Pending`` (``close``: the reply
must say ``Connection: close``), or ``handler(req, close, identity)`` when
registered with ``identity=True`` (the sign-in and share routes, zcopy.server.session and
zcopy.server.share: ``handler(req, close, identity, conn)``); ``Routes.json`` builds a small reply.
Handlers that touch the disk or the state database return a ``Pending`` run on
the executor. Access: a route needs what a file read needs (the read token,
when the server has one) unless it is registered ``public=True``.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass, field
from typing import Callable

from zcopy import __version__, http
from zcopy.server.reply import Reply

#: The reserved prefix. No user file lives under it.
RESERVED = "/.zcopy"

Handler = Callable[[http.Request, bool], object]    # -> Reply | Pending


def reserved(path: str) -> bool:
    """Is this (percent-decoded) URL path ours rather than a file's?"""
    if ".zcopy" not in path:        # the common case, in C: no normalising per request
        return False
    norm = posixpath.normpath("/" + path.lstrip("/"))   # normpath keeps a leading "//"
    return norm == RESERVED or norm.startswith(RESERVED + "/")


@dataclass
class Route:
    handlers: dict[str, Handler]
    public: bool = False
    identity: bool = False      # the handler takes who is asking: handler(req, close, identity)
    allow: str = field(init=False)

    def __post_init__(self) -> None:
        methods = list(self.handlers)
        if "GET" in methods and "HEAD" not in methods:
            methods.insert(methods.index("GET") + 1, "HEAD")
        self.allow = ", ".join([*methods, "OPTIONS"])


class Routes:
    """Path -> route. One table per worker, filled at start."""

    def __init__(self, date: http.DateHeader, state=None) -> None:
        self.date = date
        self.state = state          # this process's zcopy.server.state.State (None: no state folder)
        self._table: dict[str, Route] = {}

    def add(self, path: str, *, public: bool = False, identity: bool = False, **handlers: Handler) -> None:
        """``routes.add("/.zcopy/ping", GET=ping)``: one route, its methods."""
        if not path.startswith(RESERVED + "/") or posixpath.normpath(path) != path.rstrip("/") or not handlers:
            raise ValueError(f"a route is a normalised path under {RESERVED}/ with methods: {path!r}")
        self._table[path] = Route(handlers, public, identity)

    def respond(self, req: http.Request, close: bool, may_read: bool, identity=None, conn=None):
        """The answer to a request for a reserved path. ``may_read``: the
        request carries what a file read would need; ``identity``: who is
        asking (``zcopy.server.access``), for the routes registered with
        ``identity=True``, which also get ``conn`` (the connection, or None).
        Raises HttpError."""
        route = self._table.get(req.path)
        if route is None:
            raise http.HttpError(404, "not found")
        if not (route.public or may_read):
            from zcopy.server.auth import CHALLENGE

            raise http.HttpError(401, "this server needs a token to read", headers=[CHALLENGE])
        method = req.method
        if method == "OPTIONS":
            head = http.response_head(204, self.date.get(), b"", None, close=close,
                                      extra=f"Allow: {route.allow}\r\n".encode(), version=req.version)
            return Reply(204, head, [], 0, close)
        handler = route.handlers.get(method)
        if handler is None and method == "HEAD":
            handler = route.handlers.get("GET")
        if handler is None:
            raise http.HttpError(405, f"{method} is not allowed here", headers=[("Allow", route.allow)])
        if route.identity:
            return handler(req, close, identity, conn)
        return handler(req, close)

    def json(self, req: http.Request, status: int, value, close: bool) -> Reply:
        """A small JSON reply, not stored by caches; HEAD gets the head alone."""
        body = json.dumps(value, separators=(",", ":")).encode()
        extra = b"Content-Type: application/json\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n"
        head = http.response_head(status, self.date.get(), b"", len(body), extra=extra, close=close,
                                  version=req.version)
        if req.method == "HEAD":
            return Reply(status, head, [], 0, close)
        return Reply(status, head, [body], len(body), close)


def server_routes(date: http.DateHeader, state=None) -> Routes:
    """The routes every server has."""
    routes = Routes(date, state)

    def ping(req: http.Request, close: bool) -> Reply:
        return routes.json(req, 200, {"server": "zcopy", "version": __version__}, close)

    routes.add(RESERVED + "/ping", GET=ping)
    from zcopy import ui

    ui.register(routes)         # the folder page's CSS and JS, /.zcopy/ui/<hash>/<name>
    return routes
