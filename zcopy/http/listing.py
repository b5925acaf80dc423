"""Directory listings as HTML (for browsers) and JSON (for programs).

Names come from the disk and may contain anything a file name can: ``<``,
quotes, ``%``, ``#``, ``?``, newlines, non-UTF-8 bytes. Each name is therefore
written twice, differently escaped: as text (HTML-escaped; undecodable bytes
shown as U+FFFD) and as a link (the raw bytes percent-encoded, so the link
names exactly that file).

The page (docs/ui.md) is plain HTML that works without script: breadcrumbs,
column headers that are links (``?sort=name|size|mtime&order=asc|desc``, sorted
here by the one rule of ``zcopy.http.natural``, folders first), sizes and dates
a person reads, a total line, a link to the folder as a tar, a find box (a GET form to
``?search=``, answered by ``zcopy.server.search``). The page's script
and style are the package's own (``zcopy.ui``, linked by content-hashed URL,
no inline script: the page's CSP forbids it); the script sorts and filters in
place by the same rule, searches below the folder in place, previews files and,
where ``data-write`` says the visitor may write, shows the upload (resumable by
tus for large files), make-folder, rename, move and delete controls.
"""

from __future__ import annotations

import html
import json
import math
import operator
import os
import time
from typing import NamedTuple
from urllib.parse import parse_qs, quote

from zcopy.http.natural import fold as natural_fold, key as natural_key
from zcopy.units import format_size


class Entry(NamedTuple):
    """A tuple of atoms, which the garbage collector stops tracking: a listing
    of 50,000 entries built on a thread then adds nothing to the full
    collections that hold the GIL against the event loop (a dataclass did:
    one collection took 84 ms)."""

    name: str          # as os.scandir returns it (surrogate-escaped if not UTF-8)
    is_dir: bool
    size: int
    mtime: float


SORTS = ("name", "size", "mtime")
_LABELS = {"name": "Name", "size": "Size", "mtime": "Modified (UTC)"}


def _href(name: str, is_dir: bool) -> str:
    return quote(os.fsencode(name), safe="") + ("/" if is_dir else "")


def _display(name: str) -> str:
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


display = _display


def _attr(text: str) -> str:
    """``text`` for an attribute value that the page's script reads back as it is: HTML turns a raw
    CR (and CR LF) into LF before it parses, so a name holding CR is written as ``&#13;``."""
    return html.escape(text).replace("\r", "&#13;")


def find_form(term: str = "") -> str:
    """The find box: with the page's script it filters the folder as one types, and Enter (or the
    button) searches the subtree in place; without script it is a plain GET form to ``?search=``
    (``zcopy.server.search``), which answers with a result page."""
    value = f' value="{html.escape(term)}"' if term else ""
    return ('<form id="filter-box" class="find" role="search" method="get" action="">'
            '<label for="filter">Find</label> <input id="filter" name="search" type="search" autocomplete="off" '
            f'maxlength="200" placeholder="name contains&#8230;"{value}> '
            '<button type="submit" id="search-go">Search subfolders</button></form>')


def sort_request(query: str) -> tuple[str, str]:
    """(column, order) from a query such as ``sort=size&order=desc``; unknown values give the default."""
    q = parse_qs(query, keep_blank_values=True) if query else {}
    column = (q.get("sort") or ["name"])[0]
    order = (q.get("order") or ["asc"])[0]
    return (column if column in SORTS else "name"), (order if order in ("asc", "desc") else "asc")


def ordered(entries: list[Entry], column: str = "name", order: str = "asc") -> list[Entry]:
    """Folders first, always; within each group by ``column`` (ties and names by the natural rule,
    on the name as shown), reversed for ``desc``. The page's script implements the same, on what
    the rows carry: times in whole seconds (``data-mtime``), names as shown (``data-name``); names
    shown alike (not UTF-8) keep the order of their names on the disk both ways, as the script's
    stable sort keeps them."""
    rev = order == "desc"

    def group(members: list[Entry]) -> list[Entry]:
        shown_alike = False

        def by(e: Entry):
            # One string per name (zcopy.http.natural.key): the sort then compares strings in C,
            # a few hundredths of a second for 50,000 names.
            nonlocal shown_alike
            shown = _display(e.name)
            if shown != e.name:                     # not UTF-8: another name may show alike
                shown_alike = True
            name = natural_key(shown)
            if column == "size":
                return (e.size, name)
            if column == "mtime":
                return (_second(e.mtime), name)
            return name
        out = sorted(members, key=by, reverse=rev)
        if shown_alike:         # ties by the name on the disk, ascending both ways (reverse keeps them)
            members.sort(key=_RAW_NAME)
            out = sorted(members, key=by, reverse=rev)
        return out
    return group([e for e in entries if e.is_dir]) + group([e for e in entries if not e.is_dir])


_RAW_NAME = operator.attrgetter("name")


def _second(mtime: float) -> int:
    """The whole second a row's ``data-mtime`` shows (the script sorts by it): JavaScript's
    ``Math.round``, as the rows the script builds from the JSON listing carry (a half up, not
    to even as ``round``; ``mtime - whole`` is exact)."""
    whole = math.floor(mtime)
    return whole + 1 if mtime - whole >= 0.5 else whole


def _when(mtime: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(mtime))


def _crumbs(url_path: str) -> str:
    parts = [p for p in url_path.split("/") if p]
    links = ['<a href="/">Home</a>' if parts else '<span aria-current="page">Home</span>']
    href = "/"
    for i, part in enumerate(parts):
        href += quote(os.fsencode(part), safe="") + "/"
        text = html.escape(_display(part))
        links.append(f'<span aria-current="page">{text}</span>' if i == len(parts) - 1
                     else f'<a href="{html.escape(href)}">{text}</a>')
    return '<nav aria-label="Breadcrumb" class="crumbs">' + '<span aria-hidden="true"> / </span>'.join(links) + "</nav>"


def _header(column: str, sort: str, order: str) -> str:
    active = column == sort
    next_order = "desc" if active and order == "asc" else "asc"
    aria = f' aria-sort="{"ascending" if order == "asc" else "descending"}"' if active else ""
    mark = ("&#9650;" if order == "asc" else "&#9660;") if active else ""
    cls = ' class="n"' if column == "size" else ""
    return (f'<th scope="col" data-col="{column}"{aria}{cls}><a href="?sort={column}&amp;order={next_order}">'
            f'{_LABELS[column]}<span class="mark" aria-hidden="true">{mark}</span></a></th>')


#: Rows rendered per piece: what a streamed page holds in memory at a time. Each full piece of the
#: folder page is also one ``<tbody class="c">``: a chunk the browser may skip laying out while it is
#: off screen (app.css, ``content-visibility``; docs/ui.md "Measurements"). app.js reads the number
#: from ``data-chunk`` and keeps its own re-sorted rows in chunks of the same size.
ROWS_PER_PIECE = 256


def render_listing_html(url_path: str, entries: list[Entry], **view) -> bytes:
    """The folder page of ``listing_html_pieces``, whole."""
    return "".join(listing_html_pieces(url_path, entries, **view)).encode("utf-8")


def listing_html_pieces(url_path: str, entries: list[Entry], *, sort: str = "name", order: str = "asc",
                        writable: bool = False, assets: dict | None = None):
    """The folder page for ``entries`` of ``url_path``, sorted by ``sort``/``order``, in pieces of
    ``ROWS_PER_PIECE`` rows (str), so that a big folder's page is written out as it is made.
    ``writable``: the visitor may write here (the page then offers its write controls).
    ``assets``: name -> URL of the UI's CSS and JS (``zcopy.ui``); without them, plain HTML."""
    title = html.escape(_display(url_path))
    files = total = 0
    for e in entries:
        if not e.is_dir:
            files += 1
            total += e.size
    folders = len(entries) - files
    summary = (f'{folders} folder{"" if folders == 1 else "s"}, {files} file{"" if files == 1 else "s"}, '
               f'{format_size(total)}')
    assets = assets or {}
    css = f'<link rel="stylesheet" href="{assets["app.css"]}">' if "app.css" in assets else ""
    js = f'<script src="{assets["app.js"]}" defer></script>' if "app.js" in assets else ""
    tools = ""
    if writable:
        tools = ('<section id="tools" class="tools" hidden aria-label="Upload and edit">'
                 '<div id="drop" class="drop"><span>Drop files or folders here, or</span> '
                 '<label class="button">Choose files<input id="pick-files" type="file" multiple></label> '
                 '<label class="button">Choose a folder<input id="pick-folder" type="file" webkitdirectory>'
                 '</label> <button type="button" id="mkdir">New folder</button></div>'
                 '<div id="progress" class="progress" hidden><p><label for="total">Total</label> '
                 '<progress id="total" max="1" value="0"></progress> <span id="total-text"></span></p>'
                 '<ul id="queue" aria-live="polite"></ul></div></section>\n')
    yield ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
           "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
           f"<title>{title} - zcopy</title>{css}{_account_assets(assets)}{js}</head>\n"
           f'<body data-write="{int(writable)}" data-sort="{sort}" data-order="{order}">\n'
           f"<header>{_crumbs(url_path)}\n<h1>Index of {title}</h1></header>\n<main>\n"
           f'<div class="bar">{find_form()} '
           '<a class="button" href="?download=tar" download>Download folder (.tar)</a></div>\n'
           + tools
           + f'<table id="listing" data-chunk="{ROWS_PER_PIECE}"><caption class="sr">Contents of this folder; column headers sort</caption>'
           "<thead><tr>" + "".join(_header(c, sort, order) for c in SORTS) + "</tr></thead>\n")
    rows_in_order = ordered(entries, sort, order)
    if not rows_in_order:
        yield "<tbody>\n"
    for at in range(0, len(rows_in_order), ROWS_PER_PIECE):
        rows = []
        for e in rows_in_order[at:at + ROWS_PER_PIECE]:
            shown = _display(e.name)
            text = html.escape(shown + ("/" if e.is_dir else ""))
            href = html.escape(_href(e.name, e.is_dir))
            size = "&#8212;" if e.is_dir else format_size(e.size)
            fold = "" if shown.isascii() else f' data-fold="{_attr(natural_fold(shown))}"'
            rows.append(f'<tr data-name="{_attr(shown)}"{fold} data-dir="{int(e.is_dir)}" data-size="{e.size}" '
                        f'data-mtime="{_second(e.mtime)}"><td class="name"><a href="{href}">{text}</a></td>'
                        f'<td class="n">{size}</td><td>{_when(e.mtime)}</td></tr>')
        full = len(rows) == ROWS_PER_PIECE
        yield ("\n</tbody>" if at else "") + ('<tbody class="c">\n' if full else "<tbody>\n") + "\n".join(rows)
    yield (f'\n</tbody></table>\n<p id="total-line" class="total" role="status">{summary}</p>\n'
           "</main>\n</body></html>\n")


def _account_assets(assets: dict) -> str:
    """The sign-in, CSRF and share pieces of the page (zcopy/ui/static/account.*), before app.js:
    account.js puts the CSRF header on the write requests app.js makes."""
    out = ""
    if "account.css" in assets:
        out += f'<link rel="stylesheet" href="{assets["account.css"]}">'
    if "account.js" in assets:
        out += f'<script src="{assets["account.js"]}" defer></script>'
    return out


def render_listing_json(url_path: str, entries: list[Entry]) -> bytes:
    """``{"path": ..., "entries": [{"name", "href", "type", "size", "mtime"}]}``;
    ``href`` is the percent-encoded link, exact even for non-UTF-8 names."""
    return "".join(listing_json_pieces(url_path, entries)).encode("utf-8")


def listing_json_pieces(url_path: str, entries: list[Entry]):
    """The JSON document of ``render_listing_json`` in pieces (str), in the default order."""
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    yield '{"path":' + dumps(_display(url_path)) + ',"entries":['
    in_order = ordered(entries)
    for at in range(0, len(in_order), ROWS_PER_PIECE):
        yield ("," if at else "") + ",".join(
            dumps(_json_entry(e)) for e in in_order[at:at + ROWS_PER_PIECE])
    yield "]}"


def _json_entry(e: Entry) -> dict:
    shown = _display(e.name)
    out = {"name": shown, "href": _href(e.name, e.is_dir), "type": "dir" if e.is_dir else "file",
           "size": e.size, "mtime": e.mtime}
    if not shown.isascii():
        out["fold"] = natural_fold(shown)      # the sort's lower-cased text (zcopy.http.natural)
    return out
