"""``zcopy ls | rm | mv``: one small request each.

``ls`` asks for the folder listing as JSON (``Accept: application/json``),
following the server's redirect from ``/dir`` to ``/dir/`` once. Pointed at
a file, it reads the head only and closes the connection, so listing a big
file never downloads it. A redirect to another origin (host or port) is
followed without the token, as curl does: credentials never go to a server
the user did not name. The listing is checked before anyone uses it: a
malformed document (an entry without a name, a date out of range) is a
one-line error or shown as "?", never a traceback.
"""

from __future__ import annotations

import dataclasses
import email.utils
import json
import posixpath
from urllib.parse import unquote

from zcopy.client.connection import Connection, check
from zcopy.client.errors import ClientError, StatusError
from zcopy.client.names import shown_remote
from zcopy.client.options import auth_headers
from zcopy.client.url import Remote, parse_url

MAX_REDIRECTS = 3


def list_remote(remote: Remote, *, token: str | None = None, timeout: float = 60.0) -> dict:
    """The server's listing document ``{"path", "entries": [{"name", "href",
    "type", "size", "mtime"}]}``; for a file, the same shape with one entry."""
    first = remote
    for _ in range(MAX_REDIRECTS + 1):
        with Connection(remote, timeout) as conn:
            creds = auth_headers(token if remote.same_origin(first) else None)
            conn.send_head("GET", remote.target, creds | {"Accept": "application/json"})
            resp = conn.read_head()
            body = conn.body(resp)
            check(resp, remote.shown, body)
            if resp.status in (301, 302, 307, 308) and "location" in resp.headers:
                nxt = parse_url(resp.headers["location"], base=remote)
                if remote.scheme == "https" and nxt.scheme != "https":
                    raise ClientError(f"refusing a redirect from https to {nxt.scheme}: {nxt}")
                remote = nxt
                continue
            if resp.status != 200:
                raise ClientError(f"unexpected {resp.status} {resp.reason}: {remote.shown}")
            if resp.headers.get("content-type", "").startswith("application/json"):
                try:
                    doc = json.loads(body.drain(64 << 20))
                except (ValueError, RecursionError):
                    raise ClientError(f"the listing of {remote.shown} is not valid JSON") from None
                return checked_listing(doc, remote.shown)
            return _file_entry(remote, resp)
    raise ClientError(f"too many redirects: {remote.shown}")


def checked_listing(doc, where: str) -> dict:
    """``doc`` if it has the listing's shape: entries are objects with a
    string name. Other fields are shown as found (or "?"); they cannot
    break the table."""
    entries = doc.get("entries") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        raise ClientError(f"the listing of {where} is malformed: no list of entries")
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry["name"]:
            raise ClientError(f"the listing of {where} is malformed: entry {i + 1} has no name")
    return doc


def _file_entry(remote: Remote, resp) -> dict:
    modified = resp.headers.get("last-modified")
    try:
        when = email.utils.parsedate_to_datetime(modified).timestamp() if modified else 0.0
    except (TypeError, ValueError, OverflowError):
        when = None                                   # shown as "?"
    name = remote.name
    return {"path": remote.shown, "file": True, "entries": [
        {"name": name, "href": remote.path.rpartition("/")[2], "type": "file",
         "size": resp.length() or 0, "mtime": when}]}


def remove(remote: Remote, *, token: str | None = None, recursive: bool = False,
           timeout: float = 60.0) -> int:
    """DELETE; folders only when empty unless ``recursive``. Returns the status.

    A WebDAV server (zcopy serve among them) deletes a folder with everything
    in it (RFC 4918 9.6.1), so without ``recursive`` a folder's listing is
    read first and a non-empty one is refused here."""
    if not recursive and _non_empty_folder(remote, token, timeout):
        raise StatusError(409, "Conflict", remote.shown, "folder is not empty; use zcopy rm -r")
    target = dataclasses.replace(remote, query="recursive=1") if recursive else remote
    try:
        return _simple("DELETE", target, auth_headers(token), timeout)
    except StatusError as exc:
        if exc.status == 409 and not recursive:     # the server's detail names its query, not our flag
            raise StatusError(409, exc.reason, remote.shown, "folder is not empty; use zcopy rm -r") from None
        raise


def move(remote: Remote, destination: str, *, token: str | None = None, overwrite: bool = True,
         timeout: float = 60.0) -> tuple[int, str]:
    """MOVE to ``destination``: an absolute path, a path relative to the
    source's folder, or a URL on the same server; ending in "/" means "into
    that folder, same name". Missing folders on the way are made (MKCOL).
    Returns (status, destination path).

    The destination is built from decoded names and encoded once: a "%" in
    a folder's name stays part of the name, so a folder named
    ``victim%2F`` cannot send the file into /victim/."""
    dest_path = _destination(remote, destination)
    headers = auth_headers(token) | {"Destination": dest_path}
    if not overwrite:
        headers["Overwrite"] = "F"
    try:
        return _simple("MOVE", remote, headers, timeout), shown_remote(dest_path)
    except StatusError as exc:
        if exc.status != 409:
            raise
    make_folders(remote, dest_path, token=token, timeout=timeout)
    return _simple("MOVE", remote, headers, timeout), shown_remote(dest_path)


def make_folders(remote: Remote, path: str, *, token: str | None = None, timeout: float = 60.0) -> None:
    """MKCOL every folder above the last segment of ``path`` (percent-encoded)
    on ``remote``'s server, from the top; those that exist (405) are fine.
    WebDAV servers answer 409 to a PUT or MOVE into a missing folder."""
    here = ""
    for seg in [s for s in path.split("/")[:-1] if s]:
        here += "/" + seg
        try:
            _simple("MKCOL", dataclasses.replace(remote, path=here + "/", query=""), auth_headers(token), timeout)
        except StatusError as exc:
            if exc.status != 405:
                raise


def _non_empty_folder(remote: Remote, token: str | None, timeout: float) -> bool:
    """Whether ``remote`` is a folder with something listed in it."""
    try:
        doc = list_remote(remote, token=token, timeout=timeout)
    except StatusError:
        return False                    # gone, or not listable: the DELETE says what is wrong
    return not doc.get("file") and bool(doc["entries"])


def _destination(remote: Remote, destination: str) -> str:
    if destination.startswith(("http://", "https://")):
        other = parse_url(destination)
        if other.netloc != remote.netloc:
            raise ClientError(f"cannot move between servers ({remote.netloc} -> {other.netloc})")
        path = _decoded(other.path)
    elif destination.startswith("/"):
        path = destination
    else:
        path = posixpath.join(posixpath.dirname(_decoded(remote.path).rstrip("/")), destination)
    if path.endswith("/"):
        path += _decoded(remote.path.rstrip("/").rpartition("/")[2])
    return remote.with_path(posixpath.normpath(path) if path != "/" else path).path


def _decoded(encoded_path: str) -> str:
    """A request path decoded as NEWPATH is typed (bytes that are not UTF-8 kept)."""
    return unquote(encoded_path, errors="surrogateescape")


def _simple(method: str, remote: Remote, headers: dict, timeout: float) -> int:
    with Connection(remote, timeout) as conn:
        conn.send_head(method, remote.target, headers)
        resp = conn.read_head()
        check(resp, remote.shown, conn.body(resp))
        if not 200 <= resp.status < 300:
            raise ClientError(f"unexpected {resp.status} {resp.reason}: {remote.shown}")
        return resp.status
