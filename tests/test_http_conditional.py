"""Conditional requests in RFC 9110 13.2.2 order (zcopy.http.conditional)."""

from __future__ import annotations

import pytest

from zcopy.http import etag_matches, evaluate_preconditions, http_date, parse_http_date

ETAG = '"1f-400-17a"'
LM = 784111777
OLD, SAME, NEW = http_date(LM - 60), http_date(LM), http_date(LM + 60)


@pytest.mark.parametrize("method, headers, expected", [
    ("GET", {}, None),
    # If-Match (strong)
    ("GET", {"if-match": ETAG}, None),
    ("GET", {"if-match": "*"}, None),
    ("GET", {"if-match": f'"x", {ETAG}'}, None),
    ("GET", {"if-match": '"x"'}, 412),
    ("GET", {"if-match": "W/" + ETAG}, 412),            # weak never matches strongly
    ("GET", {"if-match": "garbage"}, 412),
    # If-Unmodified-Since, only without If-Match
    ("GET", {"if-unmodified-since": OLD}, 412),
    ("GET", {"if-unmodified-since": SAME}, None),
    ("GET", {"if-unmodified-since": NEW}, None),
    ("GET", {"if-unmodified-since": "bogus"}, None),    # invalid dates are ignored
    ("GET", {"if-match": ETAG, "if-unmodified-since": OLD}, None),
    # If-None-Match (weak)
    ("GET", {"if-none-match": ETAG}, 304),
    ("HEAD", {"if-none-match": ETAG}, 304),
    ("GET", {"if-none-match": "W/" + ETAG}, 304),
    ("GET", {"if-none-match": f'"a", "b", {ETAG}'}, 304),
    ("GET", {"if-none-match": "*"}, 304),
    ("GET", {"if-none-match": '"x"'}, None),
    ("PUT", {"if-none-match": "*"}, 412),               # other methods: 412
    ("DELETE", {"if-none-match": ETAG}, 412),
    # If-Modified-Since: GET/HEAD only, ignored when If-None-Match is present
    ("GET", {"if-modified-since": SAME}, 304),
    ("GET", {"if-modified-since": NEW}, 304),
    ("GET", {"if-modified-since": OLD}, None),
    ("HEAD", {"if-modified-since": SAME}, 304),
    ("PUT", {"if-modified-since": SAME}, None),
    ("GET", {"if-modified-since": "Sunday, 06-Nov-94 08:49:37 GMT"}, 304),   # RFC 850
    ("GET", {"if-modified-since": "Sun Nov  6 08:49:37 1994"}, 304),          # asctime
    ("GET", {"if-modified-since": "yesterday"}, None),
    ("GET", {"if-none-match": '"x"', "if-modified-since": SAME}, None),
    # order: If-Match failure beats a matching If-None-Match
    ("GET", {"if-match": '"x"', "if-none-match": ETAG}, 412),
    ("GET", {"if-unmodified-since": OLD, "if-modified-since": SAME}, 412),
])
def test_preconditions(method, headers, expected):
    assert evaluate_preconditions(method, headers, ETAG, LM) == expected


WEAK = 'W/"5a1e"'    # a listing's validator: weak, and no Last-Modified


@pytest.mark.parametrize("method, headers, expected", [
    ("GET", {"if-none-match": WEAK}, 304),
    ("GET", {"if-none-match": "*"}, 304),                # the listing exists
    ("GET", {"if-match": WEAK}, 412),                    # If-Match compares strongly
    ("GET", {"if-match": "*"}, None),
    ("GET", {"if-modified-since": NEW}, None),           # no date to compare: ignored
    ("GET", {"if-unmodified-since": OLD}, None),
])
def test_preconditions_without_a_modification_date(method, headers, expected):
    assert evaluate_preconditions(method, headers, WEAK, None) == expected


@pytest.mark.parametrize("value, etag, weak, expected", [
    ('"a,b"', '"a,b"', False, True),                    # commas inside an opaque tag
    ('"a,b", "c"', '"c"', False, True),
    ('W/"a"', 'W/"a"', True, True),
    ('W/"a"', 'W/"a"', False, False),
    ('"a"', 'W/"a"', True, True),
    ('"a" "b"', '"b"', True, False),                     # not a list: matches nothing
    ("", '"a"', True, False),
])
def test_etag_matches(value, etag, weak, expected):
    assert etag_matches(value, etag, weak=weak) is expected


@pytest.mark.parametrize("value, expected", [
    ("Sun, 06 Nov 1994 08:49:37 GMT", LM),
    ("Sunday, 06-Nov-94 08:49:37 GMT", LM),
    ("Sun Nov  6 08:49:37 1994", LM),
    ("", None), ("Sun, 06 Nov 1994", None), ("Sun, 99 Foo 1994 08:49:37 GMT", None),
])
def test_parse_http_date(value, expected):
    assert parse_http_date(value) == expected
