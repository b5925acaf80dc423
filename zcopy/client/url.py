"""``http://host:port/path`` parsing: only what the client needs.

Paths are sent as the user typed them, percent-escapes kept; only characters
that may not appear raw in a request target are escaped, so a name with a
space works whether or not the user encoded it.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from zcopy.client.errors import ClientError
from zcopy.client.names import remote_file_name, shown_remote

_SAFE = "/%:@!$&'()*+,;=-._~"


@dataclass(frozen=True, slots=True)
class Remote:
    host: str
    port: int
    path: str     # request target path, percent-encoded, always starting with "/"
    query: str = ""

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
        """Same scheme (always http here), host and port: where credentials may go."""
        return (self.host.lower(), self.port) == (other.host.lower(), other.port)

    def with_path(self, path: str, query: str = "") -> "Remote":
        return Remote(self.host, self.port, quote(path, safe=_SAFE), query)

    def __str__(self) -> str:
        return f"http://{self.netloc}{self.target}"


def parse_url(text: str) -> Remote:
    """``http://host[:port]/path`` -> Remote; ClientError for anything else."""
    parts = urlsplit(text)
    if parts.scheme != "http" or not parts.hostname:
        raise ClientError(f"not an http:// URL: {text!r}")
    try:
        port = parts.port or 80
    except ValueError:
        raise ClientError(f"bad port in URL: {text!r}") from None
    return Remote(parts.hostname, port, quote(parts.path or "/", safe=_SAFE), parts.query)
