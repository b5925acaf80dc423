"""Content negotiation: which precompressed sibling, HTML or JSON listing.

Both parse a weighted list (``a;q=0.5, b``, RFC 9110 12.4.2) with one
helper. Parses are cached: browsers send the very same Accept-Encoding
string on every request, so the hot path pays one dict lookup.
"""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=128)
def _weights(value: str) -> tuple[tuple[str, float], ...]:
    """(lower-case name, q) pairs in the order sent; bad q-values drop the member."""
    out = []
    for member in value.split(","):
        name, *params = member.split(";")
        name = name.strip().lower()
        if not name:
            continue
        q = 1.0
        for param in params:
            key, _, val = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(val.strip())
                except ValueError:
                    q = -1.0
                if not 0.0 <= q <= 1.0:
                    q = -1.0
        if q >= 0.0:
            out.append((name, q))
    return tuple(out)


def choose_encoding(accept_encoding: str | None, available: dict[str, str]) -> str | None:
    """The content-coding to send, among ``available`` (coding -> sibling), or
    None for the identity file.

    Honours q-values, ``q=0`` (refusal), ``*`` (any coding not named) and
    ``identity``: when the client names identity with a higher weight than
    every available coding, the plain file wins. Unnamed, identity is only
    the fallback (``gzip;q=0.5`` still means "gzip, please", as nginx's
    gzip_static reads it). Ties go to the order of ``available`` (the
    server's preference, smallest first). No header means identity: RFC
    9110 12.5.3 allows any coding then, but a client that sends nothing
    often cannot decode anything.
    """
    if not accept_encoding or not available:
        return None
    weights = dict(reversed(_weights(accept_encoding)))   # first mention wins
    star = weights.get("*")
    if "x-gzip" in weights and "gzip" not in weights:
        weights["gzip"] = weights["x-gzip"]
    best, best_q = None, 0.0
    for coding in available:
        q = weights.get(coding, star if star is not None else 0.0)
        if q > best_q:
            best, best_q = coding, q
    if best is None:
        return None
    identity = weights.get("identity")
    return best if identity is None or best_q >= identity else None


def wants_json(accept: str | None) -> bool:
    """True when ``Accept`` prefers application/json to text/html.

    ``*/*`` alone means HTML (a browser or curl's default); JSON must be asked
    for by name. On a tie the type named first wins.
    """
    if not accept or "json" not in accept:
        return False
    q_json = q_html = -1.0
    json_first = None
    for name, q in _weights(accept):
        if name == "application/json" and q_json < 0:
            q_json = q
            json_first = json_first if json_first is not None else True
        elif name in ("text/html", "text/*") and (q_html < 0 or name == "text/html"):
            q_html = q
            json_first = json_first if json_first is not None else False
    if q_json <= 0:
        return False
    return q_json > q_html or (q_json == q_html and bool(json_first))
