"""Directory listings: escaping, links, JSON (zcopy.http.listing)."""

from __future__ import annotations

import json
import os
import re
from html.parser import HTMLParser
from urllib.parse import unquote_to_bytes

from zcopy.http import Entry, render_listing_html, render_listing_json, sort_request

NASTY = ["<script>alert(1)</script>", 'a"b', "100%", "déjà vu.txt", "日本.txt", "a#b?c", "a&amp;b",
         "x'y", "sp ace", "new\nline", "c:d", os.fsdecode(b"bad\xffname")]
ENTRIES = [Entry(n, False, 1536, 784111777.0) for n in NASTY] + [Entry("dir", True, 0, 0.0)]


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.hrefs, self.scripts, self.text = [], 0, []

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            self.hrefs.append(dict(attrs)["href"])
        if tag == "script":
            self.scripts += 1

    def handle_data(self, data):
        self.text.append(data)


def test_html_escapes_and_links():
    page = render_listing_html("/sub/<b>/", ENTRIES, assets={"app.js": "/.zcopy/ui/x/app.js"})
    text = page.decode("utf-8")
    assert "<script>alert" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "<b>" not in text.split("<body")[1].split("<table")[0].replace("<h1>", "")
    parser = _Links()
    parser.feed(text)
    assert parser.scripts == 1                                   # only our own script, by URL
    assert '<script src="/.zcopy/ui/x/app.js" defer></script>' in text
    hrefs = parser.hrefs
    assert hrefs[:3] == ["/", "/sub/", "?download=tar"]          # breadcrumbs (the last is the page itself)
    assert "dir/" in hrefs
    for name in NASTY:
        href = [h for h in hrefs if unquote_to_bytes(h) == os.fsencode(name)]
        assert len(href) == 1, name                              # each link names exactly that file
        assert re.fullmatch(r"[A-Za-z0-9%._~-]+", href[0]), href[0]
    shown = "".join(parser.text)
    for name in NASTY[:-1]:
        assert name in shown                                     # text shows the real name
    assert "bad\ufffdname" in shown


def test_html_layout():
    page = render_listing_html("/", [Entry("b.txt", False, 10, 0.0), Entry("a", True, 0, 0.0),
                                     Entry("big.iso", False, 3 * 1024**3, 0.0)]).decode()
    assert page.startswith("<!DOCTYPE html>") and 'charset="utf-8"' in page
    assert 'href="../"' not in page and '<span aria-current="page">Home</span>' in page
    assert page.index(">a/<") < page.index(">b.txt<")            # directories first
    assert "3.0 GiB" in page and "10 B" in page and "1970-01-01 00:00" in page
    assert "http" not in page.replace("http-equiv", "")         # no external assets
    assert "<script" not in page and "<style" not in page and " on" not in page.split("<body")[1].split(">")[0]
    assert '1 folder, 2 files, 3.0 GiB' in page                  # the total line
    assert 'aria-sort="ascending"' in page and 'href="?sort=name&amp;order=desc"' in page
    assert 'href="?sort=size&amp;order=asc"' in page
    assert 'data-write="0"' in page and 'id="tools"' not in page    # read-only: no write controls at all


def test_html_sort_query_and_natural_order():
    entries = [Entry(n, False, s, t) for n, s, t in [("file_10", 5, 3.0), ("File_2", 50, 1.0), ("file_1", 1, 2.0)]]
    entries.append(Entry("z", True, 0, 0.0))
    names = lambda page: re.findall(r'data-name="([^"]*)"', page.decode())   # noqa: E731
    assert names(render_listing_html("/", entries)) == ["z", "file_1", "File_2", "file_10"]
    assert names(render_listing_html("/", entries, order="desc")) == ["z", "file_10", "File_2", "file_1"]
    by_size = render_listing_html("/", entries, sort="size", order="desc")
    assert names(by_size) == ["z", "File_2", "file_10", "file_1"]             # folders first in either order
    assert 'data-col="size" aria-sort="descending"' in by_size.decode()
    assert names(render_listing_html("/", entries, sort="mtime")) == ["z", "File_2", "file_1", "file_10"]
    assert sort_request("sort=size&order=desc") == ("size", "desc")
    assert sort_request("sort=%3Cx&order=up") == ("name", "asc")              # unknown: the default
    assert sort_request("") == ("name", "asc")


def test_html_write_controls_only_when_writable():
    page = render_listing_html("/d/", [], writable=True).decode()
    assert 'data-write="1"' in page
    for control in ('id="pick-files"', 'webkitdirectory', 'id="mkdir"', 'id="drop"'):
        assert control in page


def test_json():
    doc = json.loads(render_listing_json("/sub/", ENTRIES))
    assert doc["path"] == "/sub/"
    by_name = {e["name"]: e for e in doc["entries"]}
    assert by_name["dir"] == {"name": "dir", "href": "dir/", "type": "dir", "size": 0, "mtime": 0.0}
    e = by_name['a"b']
    assert (e["type"], e["size"], e["href"]) == ("file", 1536, "a%22b")
    assert unquote_to_bytes(by_name["bad\ufffdname"]["href"]) == b"bad\xffname"
    assert doc["entries"][0]["name"] == "dir"


def test_empty_directory():
    assert json.loads(render_listing_json("/e/", [])) == {"path": "/e/", "entries": []}
    assert b"<tbody>\n\n</tbody>" in render_listing_html("/e/", [])
    assert b"0 folders, 0 files, 0 B" in render_listing_html("/e/", [])


def test_rows_come_in_chunks_of_a_piece():
    """Each full piece of ROWS_PER_PIECE rows is one <tbody class="c"> (app.css lets the browser skip
    laying out those off screen); the rest is a plain <tbody>; the table says the size for app.js."""
    import re

    from zcopy.http.listing import ROWS_PER_PIECE

    n = 2 * ROWS_PER_PIECE + 5
    page = render_listing_html("/", [Entry(f"f{i:04}", False, i, 0.0) for i in range(n)]).decode()
    assert f'<table id="listing" data-chunk="{ROWS_PER_PIECE}">' in page
    bodies = re.findall(r"<tbody([^>]*)>(.*?)</tbody>", page, re.S)
    assert [(attrs, body.count("<tr ")) for attrs, body in bodies] == \
        [(' class="c"', ROWS_PER_PIECE), (' class="c"', ROWS_PER_PIECE), ("", 5)]
    assert re.findall(r'<tr data-name="([^"]+)"', page) == [f"f{i:04}" for i in range(n)]
    exact = render_listing_html("/", [Entry(f"f{i:04}", False, i, 0.0) for i in range(ROWS_PER_PIECE)]).decode()
    assert re.findall(r"<tbody[^>]*>", exact) == ['<tbody class="c">']
