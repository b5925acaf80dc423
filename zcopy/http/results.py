"""The answer to ``FOLDER/?search=TERM`` (found by ``zcopy.server.search``): an HTML page for a
browser without script, JSON for the folder page's script and for programs.

Each hit is a path below the searched folder, a tuple of names as ``scandir`` gave them; its link is
relative to the folder, every name percent-encoded from its raw bytes (exact for non-UTF-8 names), its
text HTML-escaped, as in listings (``zcopy.http.listing``). Hits come in tree order: name by name, by
the natural rule of ``zcopy.http.natural``, folders first at each level.
"""

from __future__ import annotations

import html
import json
import os
from typing import NamedTuple
from urllib.parse import quote

from zcopy.http.listing import _crumbs, _when, display, find_form
from zcopy.http.natural import key as natural_key
from zcopy.units import format_size


class Hit(NamedTuple):
    rel: tuple            # names below the searched folder
    is_dir: bool
    size: int
    mtime: float


class Info(NamedTuple):
    term: str
    visited: int          # entries read
    stopped: str | None   # None: the whole tree; "results", "entries", "time": which bound stopped it
    max_results: int
    max_visited: int
    max_seconds: float


def tree_key(hit: Hit) -> tuple:
    """Tree order, as listings show each level: folders first, then by the natural rule."""
    last = len(hit.rel) - 1
    return tuple(natural_key(display(name), i < last or hit.is_dir) for i, name in enumerate(hit.rel))


def href(hit: Hit) -> str:
    return "/".join(quote(os.fsencode(n), safe="") for n in hit.rel) + ("/" if hit.is_dir else "")


def shown_path(hit: Hit) -> str:
    return "/".join(display(n) for n in hit.rel) + ("/" if hit.is_dir else "")


def stopped_text(info: Info) -> str:
    """Why the search ended early, in words ("" when it searched everything)."""
    if info.stopped == "results":
        return f"Stopped at {info.max_results} results: make the search narrower."
    if info.stopped == "entries":
        return f"Stopped after {info.max_visited:,} entries: search a smaller folder."
    if info.stopped == "time":
        return f"Stopped after {info.max_seconds:g} s: search a smaller folder."
    return ""


def render_json(url_path: str, hits: list[Hit], info: Info) -> bytes:
    """``{"path", "search", "results": [{"name", "path", "href", "type", "size", "mtime"}], "visited",
    "complete", "stopped"}``: ``path`` and ``href`` relative to the searched folder."""
    doc = {"path": display(url_path), "search": info.term,
           "results": [{"name": display(h.rel[-1]), "path": shown_path(h), "href": href(h),
                        "type": "dir" if h.is_dir else "file", "size": h.size, "mtime": h.mtime} for h in hits],
           "visited": info.visited, "complete": info.stopped is None, "stopped": info.stopped}
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def render_html(url_path: str, hits: list[Hit], info: Info, *, assets: dict | None = None) -> bytes:
    """The result page: breadcrumbs, the search form (filled in), a table of hits, a status line and a
    link back to the folder. Plain HTML: it needs no script."""
    title = html.escape(display(url_path))
    term = html.escape(info.term)
    assets = assets or {}
    css = f'<link rel="stylesheet" href="{assets["app.css"]}">' if "app.css" in assets else ""
    n = len(hits)
    status = f'{n} result{"" if n == 1 else "s"} for &#8220;{term}&#8221; ({info.visited:,} entries searched)'
    note = stopped_text(info)
    if note:
        status += ". " + html.escape(note)
    rows = []
    for h in hits:
        size = "&#8212;" if h.is_dir else format_size(h.size)
        rows.append(f'<tr><td class="name"><a href="{html.escape(href(h))}">{html.escape(shown_path(h))}</a></td>'
                    f'<td class="n">{size}</td><td>{_when(h.mtime)}</td></tr>')
    body = "\n".join(rows) if rows else '<tr><td colspan="3">Nothing found.</td></tr>'
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{term} in {title} - zcopy</title>{css}</head>\n"
            f"<body class=\"search\">\n<header>{_crumbs(url_path)}\n<h1>Search in {title}</h1></header>\n<main>\n"
            f'<div class="bar">{find_form(info.term)} <a class="button" href="./">Back to the folder</a></div>\n'
            f'<p id="search-status" class="total" role="status">{status}</p>\n'
            '<table id="results"><caption class="sr">Names found in this folder and below</caption>'
            '<thead><tr><th scope="col">Path</th><th scope="col" class="n size">Size</th>'
            '<th scope="col" class="mtime">Modified (UTC)</th></tr></thead>\n<tbody>\n'
            f"{body}\n</tbody></table>\n</main>\n</body></html>\n").encode()
