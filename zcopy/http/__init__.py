"""The sans-I/O HTTP/1.1 layer of ``zcopy serve``.

Pure functions over bytes, strings and stat results: parsing (httptools),
ranges, conditionals, negotiation, URL path checks, listings and response
heads. Nothing here owns a socket; the connection state machine in
``zcopy.server`` calls these and does the I/O. Refusals are ``HttpError``
exceptions that carry their status and whether the connection must close.
See docs/http.md for the decisions (limits, methods, symlinks, range caps).
"""

from zcopy.http.chunked import ChunkedDecoder
from zcopy.http.conditional import etag_matches, evaluate_preconditions, parse_http_date
from zcopy.http.errors import HttpError, RangeNotSatisfiable
from zcopy.http.headers import (
    DateHeader,
    content_type,
    error_response,
    http_date,
    make_etag,
    make_etags,
    redirect_response,
    response_head,
    static_headers,
    guard_headers,
    status_line,
)
from zcopy.http.listing import (Entry, listing_html_pieces, listing_json_pieces, render_listing_html,
                                render_listing_json, sort_request)
from zcopy.http.negotiate import choose_encoding, wants_json
from zcopy.http.paths import RESERVED, normalised, url_segments
from zcopy.http.ranges import MAX_RANGES, MultipartPlan, if_range_ok, multipart_plan, parse_range
from zcopy.http.request import (KNOWN_METHODS, MAX_HEAD, MAX_TARGET, HeadCache, HeadReader, Request, add_field,
                                parse_head, split_head)

__all__ = [
    "ChunkedDecoder", "DateHeader", "add_field", "Entry", "HttpError", "KNOWN_METHODS", "MAX_HEAD", "MAX_RANGES",
    "MAX_TARGET", "MultipartPlan", "RangeNotSatisfiable", "Request", "choose_encoding", "content_type",
    "error_response", "etag_matches", "evaluate_preconditions", "http_date", "if_range_ok", "make_etag",
    "make_etags",
    "multipart_plan", "HeadCache", "HeadReader", "parse_head", "parse_http_date", "parse_range", "redirect_response",
    "listing_html_pieces", "listing_json_pieces", "render_listing_html", "render_listing_json", "sort_request",
    "RESERVED", "normalised", "response_head", "split_head",
    "static_headers", "guard_headers", "status_line", "url_segments", "wants_json",
]
