"""Errors as types: every refusal of the HTTP layer is an ``HttpError``.

The layer never writes a response itself. It raises an ``HttpError`` that
carries everything the caller needs to answer (status, a short reason for the
body and the log, extra headers such as ``Allow``) and whether the connection
can survive. ``close`` is True when the byte stream can no longer be trusted
to be framed correctly (a malformed head, a conflicting length): answering and
reading the next request would mean guessing where it starts, which is how
request smuggling happens.
"""

from __future__ import annotations


class HttpError(Exception):
    """A request the layer refuses, and how to say so."""

    def __init__(self, status: int, reason: str = "", headers=(), close: bool = False) -> None:
        super().__init__(status, reason)
        self.status = status
        self.reason = reason
        self.headers: list[tuple[str, str]] = list(headers)
        self.close = close

    def __str__(self) -> str:
        return f"{self.status} {self.reason}" if self.reason else str(self.status)


class RangeNotSatisfiable(HttpError):
    """No range of a Range header overlaps the representation (RFC 9110 15.5.17).

    The 416 must say how long the representation is, so a client can retry
    with a range that fits: ``Content-Range: bytes */SIZE``.
    """

    def __init__(self, size: int) -> None:
        super().__init__(416, "range not satisfiable", [("Content-Range", f"bytes */{size}")])
        self.size = size
