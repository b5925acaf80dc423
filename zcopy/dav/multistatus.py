"""207 Multi-Status bodies (RFC 4918 13), rendered piece by piece so a Depth 1 listing can be written
out as it is scanned (one ``response`` per entry), never built whole in memory.

Live properties come from a stat result and what the file cache already knows (ETag, content type).
Dead properties arrive as the serialized XML elements PROPPATCH stored, and go out verbatim.
"""

from __future__ import annotations

import stat as stat_mod
import time
from urllib.parse import quote
from xml.sax.saxutils import escape

from zcopy.dav.xmlbody import DAV

HEAD = b'<?xml version="1.0" encoding="utf-8"?>\n<D:multistatus xmlns:D="DAV:">\n'
TAIL = b"</D:multistatus>\n"
REASONS = {200: "OK", 403: "Forbidden", 404: "Not Found", 409: "Conflict", 423: "Locked",
           424: "Failed Dependency", 507: "Insufficient Storage", 500: "Internal Server Error"}

#: The live properties allprop returns, in this order (lockdiscovery/supportedlock included, as
#: clients such as davfs2 and Finder expect them without asking).
LIVE = ("resourcetype", "getcontentlength", "getlastmodified", "getetag", "creationdate", "displayname",
        "getcontenttype", "supportedlock", "lockdiscovery")
#: Asked for by name only (RFC 4331: not part of allprop).
QUOTA = ("quota-available-bytes", "quota-used-bytes")
SUPPORTED_LOCK = ("<D:supportedlock><D:lockentry><D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/>"
                  "</D:locktype></D:lockentry><D:lockentry><D:lockscope><D:shared/></D:lockscope><D:locktype>"
                  "<D:write/></D:locktype></D:lockentry></D:supportedlock>")


def status_line(status: int) -> str:
    return f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}"


def href(url_path: str, is_dir: bool) -> str:
    path = url_path if not is_dir or url_path.endswith("/") else url_path + "/"
    return escape(quote(path.encode("utf-8", "surrogateescape"), safe="/:@!$&'()*+,;=-._~"))


def rfc1123(ts: float) -> str:
    return time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(ts))


def rfc3339(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def live_value(name: str, *, st, url_path: str, etag: str | None, content_type: str | None,
               lockdiscovery: str = "", quota: tuple[int, int] | None = None) -> str | None:
    """The XML of one live property of this resource, or None when it has none (a folder's
    getcontentlength, say): then the property is 404 in its propstat."""
    is_dir = stat_mod.S_ISDIR(st.st_mode)
    if name == "resourcetype":
        return "<D:resourcetype><D:collection/></D:resourcetype>" if is_dir else "<D:resourcetype/>"
    if name == "getcontentlength":
        return None if is_dir else f"<D:getcontentlength>{st.st_size}</D:getcontentlength>"
    if name == "getlastmodified":
        return f"<D:getlastmodified>{rfc1123(st.st_mtime)}</D:getlastmodified>"
    if name == "getetag":
        return None if etag is None else f"<D:getetag>{escape(etag)}</D:getetag>"
    if name == "creationdate":
        # Linux's stat has no birth time in os.stat: the earlier of ctime and mtime stands in.
        return f"<D:creationdate>{rfc3339(min(st.st_ctime, st.st_mtime))}</D:creationdate>"
    if name == "displayname":
        base = url_path.rstrip("/").rsplit("/", 1)[-1]
        return f"<D:displayname>{escape(base)}</D:displayname>"
    if name == "getcontenttype":
        return None if is_dir or not content_type else f"<D:getcontenttype>{escape(content_type)}</D:getcontenttype>"
    if name == "supportedlock":
        return SUPPORTED_LOCK
    if name == "lockdiscovery":
        return f"<D:lockdiscovery>{lockdiscovery}</D:lockdiscovery>"
    if name in QUOTA and quota is not None:
        available, used = quota
        value = available if name == "quota-available-bytes" else used
        return f"<D:{name}>{value}</D:{name}>"
    return None


def empty_element(ns: str, local: str) -> str:
    if ns == DAV:
        return f"<D:{local}/>"
    if ns:
        return f'<X:{local} xmlns:X="{escape(ns, {chr(34): "&quot;"})}"/>'
    return f'<{local} xmlns=""/>'


def response(url_path: str, is_dir: bool, groups: dict[int, list[str]]) -> bytes:
    """One ``<D:response>``: property XML grouped by status (200 found, 404 not found, 403 ...)."""
    parts = [f"<D:response><D:href>{href(url_path, is_dir)}</D:href>"]
    for status in sorted(groups):
        props = groups[status]
        if props:
            parts.append(f"<D:propstat><D:prop>{''.join(props)}</D:prop>"
                         f"<D:status>{status_line(status)}</D:status></D:propstat>")
    parts.append("</D:response>\n")
    return "".join(parts).encode("utf-8", "surrogateescape")


def status_response(url_path: str, is_dir: bool, status: int, error: str = "") -> bytes:
    """A ``<D:response>`` with one status for the whole resource (a failed member of a COPY/DELETE)."""
    err = f"<D:error>{error}</D:error>" if error else ""
    return (f"<D:response><D:href>{href(url_path, is_dir)}</D:href><D:status>{status_line(status)}</D:status>"
            f"{err}</D:response>\n").encode("utf-8", "surrogateescape")
