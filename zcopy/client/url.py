"""``http://host:port/path`` and ``https://...`` parsing: only what the client needs.

Paths are sent as the user typed them, percent-escapes kept; only characters
that may not appear raw in a request target are escaped, so a name with a
space works whether or not the user encoded it. A name typed with bytes that
are not UTF-8 (argv decodes them to surrogates) is sent with those bytes, and
so is the query. A URL that cannot be parsed (the user's, or a server's
``Location``) is a ClientError like any other.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, urljoin, urlsplit

from zcopy.client.errors import ClientError
from zcopy.client.names import remote_file_name, shown, shown_remote

_SAFE = "/%:@!$&'()*+,;=-._~"


def _quote(text: str, safe: str = _SAFE) -> str:
    """``text`` as it may appear in a request target; surrogates from argv
    are the bytes they stand for."""
    return quote(text.encode("utf-8", "surrogateescape"), safe=safe)


@dataclass(frozen=True, slots=True)
class Remote:
    host: str
    port: int
    path: str     # request target path, percent-encoded, always starting with "/"
    query: str = ""
    scheme: str = "http"    # or "https"

    @property
    def netloc(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def target(self) -> str:
        return self.path + (f"?{self.query}" if self.query else "")

    @property
    def name(self) -> str:
        """The last path segment, decoded for display."""
        return shown_remote(self.path.rstrip("/").rpartition("/")[2])

    @property
    def file_name(self) -> str:
        """The last path segment decoded to its bytes (for default output
        names; check it with ``names.plain_file_name`` before use)."""
        return remote_file_name(self.path.rstrip("/").rpartition("/")[2])

    @property
    def shown(self) -> str:
        """The path decoded, as messages show it."""
        return shown_remote(self.path)

    def same_origin(self, other: "Remote") -> bool:
        """Same scheme, host and port (RFC 6454): where credentials may go. ``http://h`` and
        ``https://h`` are different origins."""
        return (self.scheme, self.host.lower(), self.port) == (other.scheme, other.host.lower(), other.port)

    def with_path(self, path: str, query: str = "") -> "Remote":
        """This origin with a decoded ``path`` (a "%" in it is a name's, and is encoded)."""
        return Remote(self.host, self.port, _quote(path, _SAFE.replace("%", "")), query, self.scheme)

    def __str__(self) -> str:
        return f"{self.scheme}://{self.netloc}{self.target}"


def parse_url(text: str, base: "Remote | None" = None) -> Remote:
    """``http(s)://host[:port]/path`` (or a reference relative to ``base``, as
    in a Location) -> Remote; ClientError for anything else."""
    try:
        parts = urlsplit(urljoin(str(base), text) if base else text)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:              # "Invalid IPv6 URL", a port out of range...
        raise ClientError(f"bad URL ({exc}): {shown(text)}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ClientError(f"not an http:// or https:// URL: {shown(text)}")
    return Remote(parts.hostname, port, _quote(parts.path or "/"), _quote(parts.query, _SAFE + "?"), parts.scheme)
