"""What a connection sends for one request: a head and body segments."""

from __future__ import annotations

from dataclasses import dataclass, field

from zcopy.server.files import FileEntry


@dataclass(slots=True)
class Reply:
    """Never changed once built: a file's 200 reply is shared by every request
    answered with it within the second its Date line names (``FileEntry.reply``).
    The connection that sends it holds ``entry`` (acquire/release) meanwhile."""

    status: int
    head: bytes
    body: list = field(default_factory=list)   # bytes | (fd, start, stop)
    length: int = 0                            # body bytes, for the access log
    close: bool = False
    entry: FileEntry | None = None             # the file the body is read from


def whole(status: int, data: bytes, close: bool) -> Reply:
    """A reply whose bytes are all in ``data`` (an error page, a redirect); its
    length is the body's after the head, as the access log's size field wants."""
    return Reply(status, data, [], len(data) - data.index(b"\r\n\r\n") - 4, close)
