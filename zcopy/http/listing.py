"""Directory listings as HTML (for browsers) and JSON (for programs).

Names come from the disk and may contain anything a file name can: ``<``,
quotes, ``%``, ``#``, ``?``, newlines, non-UTF-8 bytes. Each name is therefore
written twice, differently escaped: as text (HTML-escaped; undecodable bytes
shown as U+FFFD) and as a link (the raw bytes percent-encoded, so the link
names exactly that file). The page is self-contained - inline CSS and a few
lines of script to sort by clicking a column; without script it is sorted
directories first, then by name.
"""

from __future__ import annotations

import html
import json
import os
import time
from typing import NamedTuple
from urllib.parse import quote

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


def _href(name: str, is_dir: bool) -> str:
    return quote(os.fsencode(name), safe="") + ("/" if is_dir else "")


def _display(name: str) -> str:
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _ordered(entries: list[Entry]) -> list[Entry]:
    return sorted(entries, key=lambda e: (not e.is_dir, e.name))


_STYLE = """body{font:15px/1.4 system-ui,sans-serif;margin:2em auto;max-width:60em;padding:0 1em}
table{border-collapse:collapse;width:100%}th,td{padding:.25em .6em;text-align:left}
th{cursor:pointer;border-bottom:1px solid #888;user-select:none}td.n{text-align:right}
tr:nth-child(even) td{background:#8881}a{text-decoration:none}a:hover{text-decoration:underline}"""

_SCRIPT = """document.querySelectorAll('th').forEach(function(th,i){th.onclick=function(){
var tb=document.querySelector('tbody'),rows=[].slice.call(tb.rows),up=th.dataset.dir!=='asc';
rows.sort(function(a,b){var x=a.cells[i].dataset.k,y=b.cells[i].dataset.k;
if(i>0){x=+x;y=+y}var c=x<y?-1:x>y?1:0;return up?c:-c});
th.dataset.dir=up?'asc':'desc';rows.forEach(function(r){tb.appendChild(r)})}})"""


#: Rows rendered per piece: what a streamed page holds in memory at a time.
ROWS_PER_PIECE = 256


def render_listing_html(url_path: str, entries: list[Entry]) -> bytes:
    """A readable, sortable HTML page listing ``entries`` of ``url_path``."""
    return "".join(listing_html_pieces(url_path, entries)).encode("utf-8")


def listing_html_pieces(url_path: str, entries: list[Entry]):
    """The HTML page of ``render_listing_html`` in pieces of ``ROWS_PER_PIECE``
    rows (str), so that a big folder's page is written out as it is made."""
    title = html.escape(_display(url_path))
    parent = '<p><a href="../">&#8593; parent folder</a></p>\n' if url_path != "/" else ""
    yield ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
           "<meta name=\"viewport\" content=\"width=device-width\">"
           f"<title>Index of {title}</title><style>{_STYLE}</style></head>\n"
           f"<body><h1>Index of {title}</h1>\n"
           + parent
           + "<table><thead><tr><th>Name</th><th>Size</th><th>Modified (UTC)</th></tr></thead>\n<tbody>\n")
    ordered = _ordered(entries)
    for at in range(0, len(ordered), ROWS_PER_PIECE):
        rows = []
        for e in ordered[at:at + ROWS_PER_PIECE]:
            text = html.escape(_display(e.name) + ("/" if e.is_dir else ""))
            href = html.escape(_href(e.name, e.is_dir))
            size = "-" if e.is_dir else format_size(e.size)
            sort_key = html.escape(("0" if e.is_dir else "1") + _display(e.name).lower())
            when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(e.mtime))
            rows.append(f'<tr><td data-k="{sort_key}"><a href="{href}">{text}</a></td>'
                        f'<td class="n" data-k="{-1 if e.is_dir else e.size}">{size}</td>'
                        f'<td data-k="{e.mtime:.0f}">{when}</td></tr>')
        yield ("\n" if at else "") + "\n".join(rows)
    yield f"\n</tbody></table>\n<script>{_SCRIPT}</script>\n</body></html>\n"


def render_listing_json(url_path: str, entries: list[Entry]) -> bytes:
    """``{"path": ..., "entries": [{"name", "href", "type", "size", "mtime"}]}``;
    ``href`` is the percent-encoded link, exact even for non-UTF-8 names."""
    return "".join(listing_json_pieces(url_path, entries)).encode("utf-8")


def listing_json_pieces(url_path: str, entries: list[Entry]):
    """The JSON document of ``render_listing_json`` in pieces (str)."""
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    yield '{"path":' + dumps(_display(url_path)) + ',"entries":['
    ordered = _ordered(entries)
    for at in range(0, len(ordered), ROWS_PER_PIECE):
        yield ("," if at else "") + ",".join(
            dumps({"name": _display(e.name), "href": _href(e.name, e.is_dir),
                   "type": "dir" if e.is_dir else "file", "size": e.size, "mtime": e.mtime})
            for e in ordered[at:at + ROWS_PER_PIECE])
    yield "]}"
