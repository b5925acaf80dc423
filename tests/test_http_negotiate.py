"""Accept-Encoding and Accept negotiation (zcopy.http.negotiate)."""

from __future__ import annotations

import pytest

from zcopy.http import choose_encoding, wants_json

ALL = {"br": ".br", "zstd": ".zst", "gzip": ".gz"}


@pytest.mark.parametrize("header, available, expected", [
    (None, ALL, None),
    ("", ALL, None),
    ("gzip", ALL, "gzip"),
    ("gzip, deflate, br, zstd", ALL, "br"),                # tie: server's order
    ("gzip, deflate, br, zstd", {"gzip": ".gz"}, "gzip"),
    ("gzip;q=1.0, br;q=0.5", ALL, "gzip"),
    ("br;q=0, gzip", ALL, "gzip"),
    ("br;q=0, gzip;q=0", ALL, None),
    ("*", ALL, "br"),
    ("*;q=0.5, gzip;q=0.1", ALL, "br"),
    ("*;q=0", ALL, None),
    ("identity", ALL, None),
    ("gzip;q=0.5, identity", ALL, None),                   # identity preferred
    ("gzip, identity;q=0", ALL, "gzip"),
    ("x-gzip", ALL, "gzip"),
    ("GZIP", ALL, "gzip"),
    ("gzip;q=2", ALL, None),                                # invalid q: member ignored
    ("gzip;q=abc, br", ALL, "br"),
    ("deflate", ALL, None),
    ("gzip", {}, None),
    (" , ;q=1, gzip ; q=0.8 ", ALL, "gzip"),
])
def test_choose_encoding(header, available, expected):
    assert choose_encoding(header, available) == expected


@pytest.mark.parametrize("accept, expected", [
    (None, False),
    ("*/*", False),
    ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", False),   # a browser
    ("application/json", True),
    ("application/json, text/plain, */*", True),              # axios
    ("text/html, application/json", False),                  # tie: first named wins
    ("application/json, text/html", True),
    ("text/html;q=0.5, application/json", True),
    ("application/json;q=0", False),
    ("text/*, application/json;q=0.9", False),
    ("application/json;q=0.9, text/*;q=0.1, text/html", False),   # text/html beats text/*
])
def test_wants_json(accept, expected):
    assert wants_json(accept) is expected
