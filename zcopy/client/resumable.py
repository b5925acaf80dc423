"""``zcopy put`` over tus 1.0.0, when the server offers it: an upload that a cut does not restart.

The flow (docs/client.md, "Resumable uploads"):

1. ``OPTIONS`` the target with ``Tus-Resumable``: a server that answers ``Tus-Version`` with 1.0.0 and
   the ``creation`` extension takes resumable uploads; any other answer means a plain PUT.
2. A record in the client's state folder (``$XDG_STATE_HOME/zcopy/put/``, 0700; one file per upload,
   0600, JSON) keyed by the target URL and the local file's identity (device, inode, size, mtime):
   when one is there, ``HEAD`` its upload URL gives the server's offset; an upload the server no longer
   has (404, 410, 403) or of another length is forgotten and a new one made.
3. Else ``POST`` to the target's folder with ``Upload-Length`` and ``Upload-Metadata: filename`` (the
   server answers ``Location``), and the record is written.
4. ``PATCH`` the rest of the file from that offset in one request, with sendfile(2); the progress bar
   starts at the offset, so the resumed part shows.
   A recorded upload whose offset is already the whole file completed on an earlier attempt whose
   answer was lost (the server keeps a completed upload's record until it expires and never
   records the full length before the commit): nothing is sent again.
5. Done: the record goes. Cut (connection lost, timeout, 5xx, a 409 offset mismatch): with
   ``--retries N``, wait (0.5 s, doubling, at most 30 s) and go back to 2; without, the error is reported
   and the same command later continues where the server is.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import time
from urllib.parse import unquote_to_bytes

from zcopy.client.connection import Connection, check
from zcopy.client.errors import ClientError, StatusError
from zcopy.client.names import shown
from zcopy.client.options import auth_headers
from zcopy.client.progress import transfer_bar
from zcopy.client.pump import send_file
from zcopy.client.url import Remote, parse_url

TUS = {"Tus-Resumable": "1.0.0"}
#: Smaller files go by plain PUT: three round trips buy nothing for them.
MIN_SIZE = 4 << 20
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0


def state_folder() -> str:
    """$XDG_STATE_HOME/zcopy/put (or ~/.local/state/zcopy/put, zcopy.xdg's rule), made 0700."""
    from zcopy.xdg import folder as xdg_folder

    folder = os.path.join(xdg_folder("XDG_STATE_HOME"), "put")
    os.makedirs(folder, mode=0o700, exist_ok=True)
    return folder


class Record:
    """The client's note of one upload under way: where the server keeps it."""

    def __init__(self, remote: Remote, st: os.stat_result) -> None:
        identity = f"{remote}\0{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"
        self.name = hashlib.sha256(identity.encode("utf-8", "surrogateescape")).hexdigest() + ".json"
        self.folder = state_folder()

    def load(self) -> str | None:
        try:
            fd = os.open(os.path.join(self.folder, self.name), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        with os.fdopen(fd, "rb") as f:
            try:
                return str(json.loads(f.read(65536))["location"])
            except (ValueError, KeyError, TypeError):
                return None

    def save(self, location: str, remote: Remote, size: int) -> None:
        """Written whole under a temp name (0600), then renamed into place."""
        tmp = os.path.join(self.folder, f".{self.name}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"url": str(remote), "location": location, "size": size, "created": int(time.time())}, f)
        os.replace(tmp, os.path.join(self.folder, self.name))

    def remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self.folder, self.name))


def offered(remote: Remote, token: str | None, timeout: float) -> bool:
    """Whether the server takes tus 1.0.0 uploads with creation (an OPTIONS round trip)."""
    try:
        with Connection(remote, timeout) as conn:
            conn.send_head("OPTIONS", remote.target, auth_headers(token) | TUS)
            resp = conn.read_head()
    except ClientError:
        return False
    versions = [v.strip() for v in resp.headers.get("tus-version", "").split(",")]
    extensions = [v.strip() for v in resp.headers.get("tus-extension", "").split(",")]
    return resp.status in (200, 204) and "1.0.0" in versions and "creation" in extensions


def upload(path: str, fd: int, st: os.stat_result, remote: Remote, *, token: str | None, quiet: bool,
           timeout: float, retries: int):
    """Upload the open file ``fd`` to ``remote`` resumably; returns (status, bytes sent this time)."""
    record = Record(remote, st)
    delay = BACKOFF_FIRST
    attempt = 0
    sent_total = 0
    while True:
        try:
            status, sent = _attempt(path, fd, st, remote, record, token, quiet, timeout)
            sent_total += sent
            record.remove()
            return status, sent_total
        except _Cut as cut:
            sent_total += cut.sent
            if attempt >= retries:
                raise ClientError(f"{cut.why}; run the same command again to continue the upload") from None
            attempt += 1
            if not quiet:
                import sys
                sys.stderr.write(f"put: {cut.why}; retrying in {delay:g} s ({attempt}/{retries})\n")
            time.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)


class _Cut(Exception):
    """A failure the next attempt may get past (connection lost, timeout, 5xx, offset mismatch)."""

    def __init__(self, why: str, sent: int = 0) -> None:
        super().__init__(why)
        self.why = why
        self.sent = sent


def _attempt(path, fd, st, remote: Remote, record: Record, token, quiet, timeout) -> tuple[int, int]:
    size = st.st_size
    location = record.load()
    offset = None
    if location is not None:
        offset = _offset(remote, location, size, token, timeout)
        if offset is None:
            record.remove()
    if offset is None:
        location = _create(remote, size, token, timeout)
        record.save(location, remote, size)
        offset = 0
    if offset == size and location is not None and size:
        return 200, 0               # completed by an earlier attempt whose answer was lost
    target = _resolve(remote, location)
    headers = auth_headers(token) | TUS | {"Upload-Offset": str(offset), "Content-Length": str(size - offset),
                                           "Content-Type": "application/offset+octet-stream"}
    with transfer_bar(f"put {shown(os.path.basename(path))}", size, quiet=quiet, completed=offset) as shown_bar:
        bar = _Counting(shown_bar)
        try:
            with Connection(target, timeout) as conn:
                conn.send_head("PATCH", target.target, headers)
                try:
                    send_file(conn.sock, fd, offset, size - offset, bar, timeout)
                except (OSError, ClientError) as exc:
                    if not conn.head_ready(0.5):
                        raise _Cut(f"connection lost during the upload ({exc})", bar.sent) from None
                resp = conn.read_head()
                body = conn.body(resp)
                if resp.status == 409 or resp.status >= 500:
                    raise _Cut(f"the server answered {resp.status} {resp.reason}", size - offset)
                check(resp, remote.shown, body)
        except StatusError:
            raise                       # refused (4xx): another attempt would be refused too
        except ClientError as exc:
            raise _Cut(str(exc), bar.sent) from None
    commit = resp.headers.get("zcopy-commit", "")
    return (int(commit) if commit.isdigit() else 204), size - offset


class _Counting:
    """The progress bar, counting what this attempt sent."""

    def __init__(self, bar) -> None:
        self.bar = bar
        self.sent = 0

    def advance(self, n: int) -> None:
        self.sent += n
        self.bar.advance(n)


def _resolve(remote: Remote, location: str) -> Remote:
    target = parse_url(location, base=remote)
    if not target.same_origin(remote):
        raise ClientError(f"the server put the upload on another origin ({target.netloc}): not following it")
    return target


def _offset(remote: Remote, location: str, size: int, token, timeout) -> int | None:
    """The server's offset of a recorded upload; None when it is gone (start a new one)."""
    target = _resolve(remote, location)
    try:
        with Connection(target, timeout) as conn:
            conn.send_head("HEAD", target.target, auth_headers(token) | TUS)
            resp = conn.read_head()
    except ClientError as exc:
        raise _Cut(str(exc)) from None
    if resp.status >= 500:
        raise _Cut(f"the server answered {resp.status} {resp.reason}")
    if resp.status != 200 or resp.headers.get("upload-length") != str(size):
        return None
    value = resp.headers.get("upload-offset", "")
    return int(value) if value.isdigit() and int(value) <= size else None


def _create(remote: Remote, size: int, token, timeout) -> str:
    folder, _, segment = remote.path.rpartition("/")
    name = base64.b64encode(unquote_to_bytes(segment)).decode()
    headers = auth_headers(token) | TUS | {"Upload-Length": str(size), "Upload-Metadata": f"filename {name}",
                                           "Content-Length": "0"}
    target = Remote(remote.host, remote.port, folder + "/", scheme=remote.scheme)
    try:
        with Connection(target, timeout) as conn:
            conn.send_head("POST", target.target, headers)
            resp = conn.read_head()
            body = conn.body(resp)
            if resp.status >= 500:
                raise _Cut(f"the server answered {resp.status} {resp.reason}")
            check(resp, remote.shown, body)
    except StatusError:
        raise
    except ClientError as exc:
        raise _Cut(str(exc)) from None
    location = resp.headers.get("location")
    if resp.status != 201 or not location:
        raise ClientError(f"the server did not create the upload ({resp.status} {resp.reason}): {remote.shown}")
    return location
