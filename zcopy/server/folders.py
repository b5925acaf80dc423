"""What a request for a folder gets, other than its ``index.html``: the redirect to its
slash form, the listing page (HTML or JSON, built off the loop by ``zcopy.server.listings``,
filtered per account), ``?search=`` (``zcopy.server.search``) and ``?download=tar``
(``zcopy.server.archive``). The responder sends a folder request here after its rights are
checked; every folder is opened from ROOT's fd (``Root.open_folder``) and read by that fd.
"""

from __future__ import annotations

import os
import stat as stat_mod
from urllib.parse import quote

from zcopy import http, ui
from zcopy.accounts.rules import segments
from zcopy.server import archive
from zcopy.server.access import Access, Identity
from zcopy.server.executor import defer
from zcopy.server.gate import whole_tree_readable
from zcopy.server.listings import Listings
from zcopy.server.reply import Reply, refusal, whole
from zcopy.server.root import fs_error, listed
from zcopy.server.search import Searches, term_of

#: The folder page's own policy (zcopy.ui.PAGE_CSP) and no sniffing.
PAGE_HEADERS = (f"Content-Security-Policy: {ui.PAGE_CSP}\r\nX-Content-Type-Options: nosniff\r\n"
                "Referrer-Policy: same-origin\r\n").encode()


class Folders:
    """The folder answers of one worker; ``executor`` builds listings, searches and tar plans
    (None: on the caller's thread, unit tests)."""

    def __init__(self, cache, date: http.DateHeader, access: Access, executor=None) -> None:
        self.cache = cache
        self.date = date
        self.access = access
        self.executor = executor
        self.listings = Listings(cache, self._scan, executor)
        self.searches = Searches(cache, executor, date)

    def redirect(self, req: http.Request, close: bool, head_only: bool) -> Reply:
        """A folder named without its slash: 301 to the slash form."""
        # From the normalised path: "//host/.." must not become a Location
        # a browser takes for another host (scheme-relative).
        location = http.normalised(req.path).rstrip("/") + "/"
        location = quote(location.encode("utf-8", "surrogateescape"), safe="/:@!$&'()*+,;=-._~")
        if req.query:
            location += "?" + req.query
        data = http.redirect_response(location, self.date.get(), close=close, head_only=head_only,
                                      version=req.version)
        return whole(301, data, close)

    def asked(self, req: http.Request, identity: Identity, path: str, close: bool, head_only: bool):
        """What the query asks of the folder instead of its page: a tar, a search (a Reply or a
        Pending); None when it asks for the page (or its index.html). Raises HttpError."""
        query = req.query
        if not query:
            return None
        if "download=tar" in query.split("&"):
            keep = None
            if not whole_tree_readable(identity, path):
                rules = identity.rules      # not None here: before accounts, a reader reads the whole tree
                # Entry by entry (on the walk's thread): files it reads, folders that lead to one.
                def keep(segs: tuple, is_dir: bool) -> bool:
                    return rules.may_see(segs) if is_dir else rules.allows(segs, "r")
            return self._tar(req, close, head_only, keep)
        if "download=" in query:        # zip and others: not offered (docs/ui.md says why)
            raise http.HttpError(400, "the folder downloads as ?download=tar only")
        term = term_of(query)
        if term is not None:
            return self.searches.respond(req, identity, path, term, close, head_only)
        return None

    def page(self, req: http.Request, identity: Identity, path: str, close: bool, head_only: bool, writable: bool):
        """The listing: HTML (its order from ``?sort=&order=``, its write controls when
        ``writable``: the asker may create in ``path``) or JSON by Accept; a Reply or a Pending."""
        access = self.access
        as_json = http.wants_json(req.headers.get("accept"))
        view = None if as_json else (*http.sort_request(req.query), writable)

        def reply(page) -> Reply:
            return self._page(req, page, close, head_only)

        def refuse(exc: Exception) -> Reply:
            return refusal(exc, self.date.get(), close=close, head_only=head_only, version=req.version)
        viewer = None
        if identity.rules is not None:      # only what this account may read (or reach), a page per viewer
            def keep(name: str) -> bool:     # off the loop, with the listing's build
                return access.may_list(identity, path, name)
            viewer = ((access.generation, identity.kind, identity.name), keep)
        return self.listings.serve(req.path, as_json, reply, refuse, view, viewer)

    def _page(self, req: http.Request, page, close: bool, head_only: bool) -> Reply:
        """The reply for a built listing page (``listings.Page``): its body is
        the page's memfd, sent like a file."""
        # Vary, since Accept picks HTML or JSON; the 304 carries the same.
        extra = f"Cache-Control: no-cache\r\nETag: {page.etag}\r\nVary: Accept\r\n".encode()
        if not req.plain:
            verdict = http.evaluate_preconditions(req.method, req.headers, page.etag, None)
            if verdict == 304:
                head = http.response_head(304, self.date.get(), b"", None, extra=extra, close=close,
                                          version=req.version)
                return Reply(304, head, [], 0, close)
            if verdict is not None:
                raise http.HttpError(verdict, "precondition failed")
        extra = f"Content-Type: {page.content_type}\r\n".encode() + extra
        if page.content_type.startswith("text/html"):
            extra += PAGE_HEADERS
        head = http.response_head(200, self.date.get(), b"", page.size, extra=extra, close=close,
                                  version=req.version)
        if head_only:
            return Reply(200, head, [], 0, close)
        return Reply(200, head, [(page.fd, 0, page.size)], page.size, close, page)

    def _tar(self, req: http.Request, close: bool, head_only: bool, keep=None):
        """The folder as a tar (zcopy.server.archive): headers as bytes, file bodies as fd ranges.
        The walk runs on the executor (a Pending), the reply is made on the loop. ``keep``: which
        entries the account may see (None: all)."""
        url_path, show_hidden = req.path, self.cache.show_hidden

        def walk():
            _, dir_fd = self.cache.fs.open_folder(url_path)
            try:
                return archive.plan(dir_fd, show_hidden=show_hidden, at_top=http.normalised(url_path) == "/",
                                    keep=keep, segs=segments(http.normalised(url_path)))
            finally:
                os.close(dir_fd)

        def then(planned) -> Reply:
            body, length, fds = planned
            extra = (f"Content-Type: application/x-tar\r\nContent-Disposition: {archive.disposition(url_path)}\r\n"
                     "Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n").encode()
            head = http.response_head(200, self.date.get(), b"", length, extra=extra, close=close,
                                      version=req.version)
            if head_only:
                fds.close()
                return Reply(200, head, [], 0, close)
            return Reply(200, head, body, length, close, fds)

        def refuse(exc: Exception) -> Reply:
            return refusal(exc, self.date.get(), close=close, head_only=head_only, version=req.version)
        return defer(self.executor, walk, then, refuse)

    def _scan(self, url_path: str) -> tuple[str, int, list]:
        """The folder ``url_path`` names: its path label, an fd of it (the
        caller closes it) and its entries, read from that fd. Blocks on the
        disk: the listings run it off the loop."""
        folder, dir_fd = self.cache.fs.open_folder(url_path)   # EACCES 403, EMFILE 503, else 404
        try:
            return folder, dir_fd, list(self._entries(dir_fd, url_path))
        except BaseException as exc:
            os.close(dir_fd)
            if isinstance(exc, OSError):    # scandir's own fd
                raise fs_error(exc, False) from None
            raise

    def _entries(self, dir_fd: int, url_path: str):
        show_hidden = self.cache.show_hidden
        at_top = http.normalised(url_path) == "/"
        with os.scandir(dir_fd) as it:
            for d in it:
                name = d.name
                if not listed(name, show_hidden=show_hidden, at_top=at_top):
                    continue            # dotfiles, our temp files, /.zcopy (even with --show-hidden)
                if d.is_symlink():
                    if not self.cache.follow_symlinks:
                        continue
                    # Listed only where following it would be served: walked as a request would be.
                    st = self.cache.stat(url_path.rstrip("/") + "/" + name)
                else:
                    try:
                        st = d.stat(follow_symlinks=False)     # fstatat on the folder's fd
                    except OSError:
                        st = None
                if st is None:
                    continue
                is_dir = stat_mod.S_ISDIR(st.st_mode)
                if not is_dir and not stat_mod.S_ISREG(st.st_mode):
                    continue            # a FIFO, socket or device is refused (403): not listed either
                yield http.Entry(name, is_dir, 0 if is_dir else st.st_size, st.st_mtime)
