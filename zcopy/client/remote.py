"""``zcopy ls | rm | mv``: one small request each.

``ls`` asks for the folder listing as JSON (``Accept: application/json``),
following the server's redirect from ``/dir`` to ``/dir/`` once. Pointed at
a file, it reads the head only and closes the connection, so listing a big
file never downloads it.
"""

from __future__ import annotations

import dataclasses
import email.utils
import json
import posixpath
from urllib.parse import unquote, urljoin

from zcopy.client.connection import Connection, check
from zcopy.client.errors import ClientError
from zcopy.client.options import auth_headers
from zcopy.client.url import Remote, parse_url

MAX_REDIRECTS = 3


def list_remote(remote: Remote, *, token: str | None = None, timeout: float = 60.0) -> dict:
    """The server's listing document ``{"path", "entries": [{"name", "href",
    "type", "size", "mtime"}]}``; for a file, the same shape with one entry."""
    for _ in range(MAX_REDIRECTS + 1):
        with Connection(remote, timeout) as conn:
            conn.send_head("GET", remote.target, auth_headers(token) | {"Accept": "application/json"})
            resp = conn.read_head()
            body = conn.body(resp)
            check(resp, remote.path, body)
            if resp.status in (301, 302, 307, 308) and "location" in resp.headers:
                remote = parse_url(urljoin(str(remote), resp.headers["location"]))
                continue
            if resp.status != 200:
                raise ClientError(f"unexpected {resp.status} {resp.reason}: {remote.path}")
            if resp.headers.get("content-type", "").startswith("application/json"):
                try:
                    return json.loads(body.drain(64 << 20))
                except ValueError:
                    raise ClientError(f"the listing of {remote.path} is not valid JSON") from None
            return _file_entry(remote, resp)
    raise ClientError(f"too many redirects: {remote.path}")


def _file_entry(remote: Remote, resp) -> dict:
    modified = resp.headers.get("last-modified")
    when = email.utils.parsedate_to_datetime(modified).timestamp() if modified else 0.0
    name = remote.name
    return {"path": unquote(remote.path), "entries": [
        {"name": name, "href": remote.path.rpartition("/")[2], "type": "file",
         "size": resp.length() or 0, "mtime": when}]}


def remove(remote: Remote, *, token: str | None = None, recursive: bool = False,
           timeout: float = 60.0) -> int:
    """DELETE; folders only when empty unless ``recursive``. Returns the status."""
    target = dataclasses.replace(remote, query="recursive=1") if recursive else remote
    return _simple("DELETE", target, auth_headers(token), timeout)


def move(remote: Remote, destination: str, *, token: str | None = None, overwrite: bool = True,
         timeout: float = 60.0) -> tuple[int, str]:
    """MOVE to ``destination``: an absolute path, a path relative to the
    source's folder, or a URL on the same server; ending in "/" means "into
    that folder, same name". Returns (status, destination path)."""
    dest_path = _destination(remote, destination)
    headers = auth_headers(token) | {"Destination": dest_path}
    if not overwrite:
        headers["Overwrite"] = "F"
    return _simple("MOVE", remote, headers, timeout), unquote(dest_path)


def _destination(remote: Remote, destination: str) -> str:
    if destination.startswith(("http://", "https://")):
        other = parse_url(destination)
        if other.netloc != remote.netloc:
            raise ClientError(f"cannot move between servers ({remote.netloc} -> {other.netloc})")
        path = unquote(other.path)
    elif destination.startswith("/"):
        path = destination
    else:
        path = posixpath.join(posixpath.dirname(unquote(remote.path).rstrip("/")), destination)
    if path.endswith("/"):
        path += unquote(remote.path.rstrip("/").rpartition("/")[2])
    return remote.with_path(posixpath.normpath(path) if path != "/" else path).path


def _simple(method: str, remote: Remote, headers: dict, timeout: float) -> int:
    with Connection(remote, timeout) as conn:
        conn.send_head(method, remote.target, headers)
        resp = conn.read_head()
        check(resp, remote.path, conn.body(resp))
        if not 200 <= resp.status < 300:
            raise ClientError(f"unexpected {resp.status} {resp.reason}: {remote.path}")
        return resp.status
