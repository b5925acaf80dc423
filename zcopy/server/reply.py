"""What a connection sends for one request: a head and body segments."""

from __future__ import annotations

from dataclasses import dataclass, field

from zcopy.server.files import FileEntry


@dataclass(slots=True)
class Reply:
    status: int
    head: bytes
    body: list = field(default_factory=list)   # bytes | (fd, start, stop)
    length: int = 0                            # body bytes, for the access log
    close: bool = False
    entry: FileEntry | None = None             # acquired; released by the connection
