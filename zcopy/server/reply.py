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
    entry: FileEntry | None = None             # the file the body is read from (or a listings.Page)


def whole(status: int, data: bytes, close: bool) -> Reply:
    """A reply whose bytes are all in ``data`` (an error page, a redirect); its
    length is the body's after the head, as the access log's size field wants."""
    return Reply(status, data, [], len(data) - data.index(b"\r\n\r\n") - 4, close)


class Pending:
    """A reply still being computed off the loop (``zcopy.server.executor``).

    The responder (or the writer's upload commit) returns one instead of a
    Reply; the connection then reads no further request, its deadline is the
    send timeout, and it calls ``wait(self)`` to be told. When the work is
    over, the loop thread calls ``done(reply)`` and the connection sends that
    Reply as if the responder had returned it. A connection that closed
    meanwhile is simply not told (the work itself is not undone: an upload
    whose body arrived whole is committed)."""

    __slots__ = ("reply", "waiter")

    def __init__(self) -> None:
        self.reply: Reply | None = None
        self.waiter = None          # the Connection; its resume(pending) is called on done

    def wait(self, waiter) -> None:
        """``waiter.resume(self)`` will run on ``done`` (a reply already done is
        the waiter's to see in ``reply``: it is not called back from here)."""
        self.waiter = waiter

    def done(self, reply) -> None:
        """Loop thread only. ``reply``: a Reply, or for a PUT the ``Upload``
        whose body the connection then receives (an upload nobody waits for
        any more is aborted: its temp file goes)."""
        self.reply = reply
        waiter, self.waiter = self.waiter, None
        if waiter is not None:
            waiter.resume(self)
        elif hasattr(reply, "abort"):
            reply.abort()


def refusal(exc: Exception, date: bytes, *, close: bool = True, head_only: bool = False,
            version: tuple = (1, 1)) -> Reply:
    """The error Reply for an ``http.HttpError``; for an OSError from work done
    off the loop, the status a write failure gets (``writer.http_error_for``);
    anything else is a bug: its traceback goes to stderr and the client gets 500."""
    from zcopy import http

    if isinstance(exc, OSError):
        from zcopy.server.writer import http_error_for

        exc = http_error_for(exc)
    elif not isinstance(exc, http.HttpError):
        import sys
        import traceback

        traceback.print_exception(exc, file=sys.stderr)
        exc = http.HttpError(500, "internal error", close=True)
    close = close or exc.close
    data = http.error_response(exc.status, date, reason=exc.reason, headers=exc.headers,
                               close=close, head_only=head_only, version=version)
    return whole(exc.status, data, close)
