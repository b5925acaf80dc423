"""``FOLDER/?search=TERM``: names matching TERM anywhere below a folder, found off the loop.

The walk goes breadth first (nearer matches first), each folder opened below the searched folder's
fd by ``root.open_below`` (one ``openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)``, or ``O_NOFOLLOW``
per name), so it never leaves the tree and never follows a link into another one. It skips what a
listing skips (temp files, hidden names unless --show-hidden, ``/.zcopy``, FIFOs, sockets, devices);
symlinks are not descended, and are reported only with --follow-symlinks and only where following
them would be served (walked afresh from ROOT, as a request would be). With a users file, a match is
reported only where its reader has ``r``, and a folder is entered only where a listing would show it
(``r`` there, or a rule beneath it gives ``r``).

A name matches when it holds every word of TERM, lower-cased (``report 2024`` finds
``2024 Q1 Report.pdf``). The work is bounded three ways, and the answer says which bound stopped it:
``MAX_VISITED`` entries read, ``MAX_RESULTS`` matches, ``MAX_SECONDS`` of walking. Each worker runs at
most ``MAX_RUNNING`` searches at once (more: 503 with Retry-After), on its executor (``cpu=True``: it is
Python work per entry, see the executor's GIL note). Results are never cached: a search is a fresh walk.
"""

from __future__ import annotations

import collections
import errno
import os
import stat as stat_mod
import time
from typing import NamedTuple
from urllib.parse import parse_qs

from zcopy import http
from zcopy.accounts.rules import segments
from zcopy.http import results
from zcopy.server.root import listed, open_below

MAX_VISITED = 200_000
MAX_RESULTS = 500
MAX_SECONDS = 3.0
MAX_RUNNING = 2
#: Characters of a search term at most.
MAX_TERM = 200
#: Entries between two looks at the clock.
_CLOCK_EVERY = 512


class Found(NamedTuple):
    hits: list            # results.Hit, in tree order
    visited: int          # entries read
    stopped: str | None   # None (the whole tree was searched), "results", "entries" or "time"


def term_of(query: str) -> str | None:
    """The ``search`` parameter of a query string, stripped; None when absent or blank."""
    if "search=" not in query:
        return None
    values = parse_qs(query, keep_blank_values=True).get("search")
    term = values[0].strip() if values else ""
    return term or None


def words_of(term: str) -> list[str]:
    return sorted(set(term.lower().split()), key=len, reverse=True)     # longest first: rejects soonest


def walk(dir_fd: int, words: list[str], *, show_hidden: bool, at_top: bool, show=None, descend=None,
         link_stat=None, max_visited: int = MAX_VISITED, max_results: int = MAX_RESULTS,
         max_seconds: float = MAX_SECONDS) -> Found:
    """The matches below the folder ``dir_fd`` (not closed here). ``show(rel)``/``descend(rel)``: whether
    a match at ``rel`` (a tuple of names) is reported / a folder there entered (None: always).
    ``link_stat(rel)``: the stat a symlink at ``rel`` is served as, or None (None: links are skipped)."""
    deadline = time.monotonic() + max_seconds
    hits: list[results.Hit] = []
    visited = 0
    queue: collections.deque[tuple[str, ...]] = collections.deque([()])
    display = results.display
    while queue:
        rel = queue.popleft()
        try:
            fd = open_below(dir_fd, list(rel))
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE):
                raise http.HttpError(503, "out of file descriptors", headers=[("Retry-After", "1")]) from None
            continue                    # gone, unreadable, or swapped for a link or a file since it was read
        try:
            with os.scandir(fd) as it:
                for d in it:
                    visited += 1
                    if visited > max_visited:
                        return _found(hits, visited - 1, "entries")
                    if not visited % _CLOCK_EVERY and time.monotonic() > deadline:
                        return _found(hits, visited, "time")
                    name = d.name
                    if not listed(name, show_hidden=show_hidden, at_top=at_top and not rel):
                        continue                # the listings' one hidden-name rule
                    child = rel + (name,)
                    try:
                        if d.is_symlink():
                            if link_stat is None:
                                continue
                            st = None           # stat'ed only if it matches
                            is_dir = None
                        else:
                            is_dir = d.is_dir(follow_symlinks=False)
                            if not is_dir and not d.is_file(follow_symlinks=False):
                                continue        # FIFO, socket, device: not served, not found
                    except OSError:
                        continue
                    if is_dir and (descend is None or descend(child)):
                        queue.append(child)
                    lowered = display(name).lower()
                    if not all(w in lowered for w in words):
                        continue
                    if show is not None and not show(child):
                        continue
                    if is_dir is None:
                        st = link_stat(child)
                        if st is None:
                            continue
                        if not (stat_mod.S_ISDIR(st.st_mode) or stat_mod.S_ISREG(st.st_mode)):
                            continue
                        is_dir = stat_mod.S_ISDIR(st.st_mode)
                    else:
                        try:
                            st = d.stat(follow_symlinks=False)      # fstatat on the folder's fd
                        except OSError:
                            continue
                    hits.append(results.Hit(child, is_dir, 0 if is_dir else st.st_size, st.st_mtime))
                    if len(hits) >= max_results:
                        return _found(hits, visited, "results")
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE):
                raise http.HttpError(503, "out of file descriptors", headers=[("Retry-After", "1")]) from None
        finally:
            os.close(fd)
        if time.monotonic() > deadline and queue:
            return _found(hits, visited, "time")
    return _found(hits, visited, None)


def _found(hits: list, visited: int, stopped: str | None) -> Found:
    hits.sort(key=results.tree_key)
    return Found(hits, visited, stopped)


class Searches:
    """One per worker: starts searches on the executor, at most ``MAX_RUNNING`` at a time (loop thread)."""

    def __init__(self, cache, executor, date, *, max_running: int = MAX_RUNNING) -> None:
        self.cache = cache
        self.executor = executor
        self.date = date
        self.max_running = max_running
        self.running = 0
        self.done = 0

    def respond(self, req: http.Request, identity, folder: str, term: str, close: bool, head_only: bool):
        """The reply (a Pending, or a Reply without an executor) for ``term`` below the folder
        ``req.path`` (``folder``: its decoded path for the rules). Raises HttpError."""
        from zcopy.server.executor import Task
        from zcopy.server.reply import Pending, Reply, refusal

        if len(term) > MAX_TERM:
            raise http.HttpError(400, f"a search term is at most {MAX_TERM} characters")
        if self.running >= self.max_running:
            raise http.HttpError(503, "too many searches at once; try again", headers=[("Retry-After", "1")])
        words = words_of(term)
        as_json = http.wants_json(req.headers.get("accept"))
        url_path, cache = req.path, self.cache
        show = descend = None
        rules = identity.rules
        if rules is not None:
            base = segments(folder)
            show = lambda rel: rules.allows(base + rel, "r")
            descend = lambda rel: rules.may_see(base + rel) 
        link_stat = None
        if cache.follow_symlinks:
            prefix = url_path if url_path.endswith("/") else url_path + "/"
            link_stat = lambda rel: cache.stat(prefix + "/".join(rel))

        def work() -> bytes:
            _, dir_fd = cache.fs.open_folder(url_path)
            try:
                found = walk(dir_fd, words, show_hidden=cache.show_hidden, at_top=http.normalised(url_path) == "/",
                             show=show, descend=descend, link_stat=link_stat)
            finally:
                os.close(dir_fd)
            info = results.Info(term, found.visited, found.stopped, MAX_RESULTS, MAX_VISITED, MAX_SECONDS)
            if as_json:
                return results.render_json(url_path, found.hits, info)
            from zcopy import ui
            return results.render_html(url_path, found.hits, info, assets=ui.URLS)

        def reply(body: bytes) -> Reply:
            ctype = "application/json" if as_json else "text/html; charset=utf-8"
            extra = f"Content-Type: {ctype}\r\nCache-Control: no-store\r\nVary: Accept\r\n".encode()
            if not as_json:
                from zcopy.server.folders import PAGE_HEADERS
                extra += PAGE_HEADERS
            head = http.response_head(200, self.date.get(), b"", len(body), extra=extra, close=close,
                                      version=req.version)
            if head_only:
                return Reply(200, head, [], 0, close)
            return Reply(200, head, [body], len(body), close)

        def refuse(exc: Exception) -> Reply:
            return refusal(exc, self.date.get(), close=close, head_only=head_only, version=req.version)

        if self.executor is None:
            try:
                return reply(work())
            except Exception as exc:
                return refuse(exc)
        pending = Pending()
        self.running += 1

        def settle(task: Task) -> None:
            self.running -= 1
            self.done += 1
            try:
                if task.error is not None:
                    raise task.error
                out = reply(task.result)
            except Exception as exc:
                out = refuse(exc)
            pending.done(out)

        self.executor.submit(work, cpu=True).then(settle)
        return pending
