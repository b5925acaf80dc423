"""Conditional requests (RFC 9110 13): validators in, a verdict out.

``evaluate_preconditions`` applies the four preconditions in the order RFC
9110 13.2.2 prescribes, because the order is what makes them compose: a
failed If-Match must win over a matching If-None-Match, and If-Modified-Since
means nothing once an ETag comparison was asked for (ETags are more precise
than one-second dates).

Validators are the ones the server built once per file: a strong quoted ETag
and Last-Modified in whole seconds.
"""

from __future__ import annotations

import email.utils
import re
from functools import lru_cache

#: An entity-tag in a list. Splitting on commas would be wrong: an opaque-tag
#: may itself contain commas (RFC 9110 8.8.3).
_ETAG = re.compile(r'\s*(W/)?("[^"]*")\s*(?:,|$)')


@lru_cache(maxsize=256)
def parse_http_date(value: str) -> int | None:
    """Seconds since the epoch for any of the three HTTP date formats (RFC
    9110 5.6.7: IMF-fixdate, obsolete RFC 850, asctime), or None if invalid.

    Cached: browsers revalidate with the very strings we sent them, so the
    same few dates come back again and again.
    """
    try:
        parts = email.utils.parsedate_tz(value)
        return None if parts is None else int(email.utils.mktime_tz(parts))
    except (ValueError, OverflowError, TypeError, IndexError):
        return None


def _etags(value: str) -> list[tuple[bool, str]] | None:
    """[(weak, "tag")] of an entity-tag list, or None if it is malformed."""
    out = []
    pos = 0
    value = value.strip()
    while pos < len(value):
        m = _ETAG.match(value, pos)
        if m is None:
            return None
        out.append((m.group(1) is not None, m.group(2)))
        pos = m.end()
    return out


def etag_matches(value: str, etag: str, *, weak: bool, also: tuple = ()) -> bool:
    """Does an If-Match / If-None-Match field match ``etag`` (or one of ``also``:
    other strong tags the server knows for the same bytes, see docs/http.md)?

    ``*`` matches any current representation. Strong comparison (If-Match,
    If-Range) refuses weak tags on either side; weak comparison (If-None-Match)
    compares the opaque tags only (RFC 9110 8.8.3.2). A malformed list matches
    nothing.
    """
    value = value.strip()
    if value == "*":
        return True
    tags = _etags(value)
    if not tags:
        return False
    for mine in (etag, *also):
        our_weak = mine.startswith("W/")
        ours = mine[2:] if our_weak else mine
        for their_weak, tag in tags:
            if tag == ours and (weak or not (their_weak or our_weak)):
                return True
    return False


def evaluate_preconditions(method: str, headers: dict, etag: str, last_modified: int | None,
                           also: tuple = ()) -> int | None:
    """412, 304 or None (go on and answer normally), per RFC 9110 13.2.2.

    1. If-Match fails -> 412; else if absent, If-Unmodified-Since fails -> 412.
    2. If-None-Match matches -> 304 for GET/HEAD, 412 otherwise; else if
       absent, If-Modified-Since (GET/HEAD only) not modified -> 304.
    Invalid dates are ignored, as the RFC requires, and so are both date
    conditions when the resource has no modification date
    (``last_modified=None``: a directory listing, which changes when a file in
    it grows, and the folder's mtime does not).
    """
    if_match = headers.get("if-match")
    if if_match is not None:
        if not etag_matches(if_match, etag, weak=False, also=also):
            return 412
    else:
        since = headers.get("if-unmodified-since")
        if since is not None:
            date = parse_http_date(since)
            if date is not None and last_modified is not None and last_modified > date:
                return 412
    if_none_match = headers.get("if-none-match")
    if if_none_match is not None:
        if etag_matches(if_none_match, etag, weak=True, also=also):
            return 304 if method in ("GET", "HEAD") else 412
    elif method in ("GET", "HEAD"):
        since = headers.get("if-modified-since")
        if since is not None:
            date = parse_http_date(since)
            if date is not None and last_modified is not None and last_modified <= date:
                return 304
    return None
