"""What a connection sends for one request: a head and body segments
(``Reply``), now or once work off the loop is done (``Pending``)."""

from __future__ import annotations

from zcopy.server.files import FileEntry


class Reply:
    """Never changed once built: a file's 200 reply is shared by every request
    answered with it within the second its Date line names (``responder._ReplyMemo``).
    The connection that sends it holds ``entry`` (acquire/release) meanwhile.
    (A plain class, not a dataclass: compiled, ``reply.pxd`` makes it a C struct.)"""

    __slots__ = ("status", "head", "body", "length", "close", "entry")

    def __init__(self, status: int, head: bytes, body: list | None = None, length: int = 0, close: bool = False,
                 entry: FileEntry | None = None) -> None:
        self.status = status
        self.head = head
        self.body = [] if body is None else body    # bytes | (fd, start, stop)
        self.length = length                        # body bytes, for the access log
        self.close = close
        self.entry = entry                          # the file the body is read from

    def __repr__(self) -> str:
        return (f"Reply({self.status}, {self.head[:40]!r}..., body={len(self.body)} items, length={self.length}, "
                f"close={self.close}, entry={self.entry!r})")


def whole(status: int, data: bytes, close: bool) -> Reply:
    """A reply whose bytes are all in ``data`` (an error page, a redirect); its
    length is the body's after the head, as the access log's size field wants."""
    return Reply(status, data, [], len(data) - data.index(b"\r\n\r\n") - 4, close)


class Pending:
    """A reply that is not ready yet: its work runs off the loop (the
    executor), and ``done(reply)``, called on the loop thread, hands the
    ``Reply`` to the connection waiting for it. A responder (or a body
    sink's ``complete``) may return one instead of a Reply; the connection
    then reads no further request until it resumes, and its deadline is the
    send timeout. ``done`` may come before the connection waits (the work
    was quick): then it resumes at once."""

    __slots__ = ("reply", "_waiter", "_cancelled", "_held")

    def __init__(self) -> None:
        self.reply: Reply | None = None
        self._waiter = None
        self._cancelled = False
        self._held: FileEntry | None = None

    def wait(self, waiter) -> None:
        """``waiter(reply)`` once the reply is done (the connection's hook)."""
        if self.reply is not None:
            waiter(self.reply)
        else:
            self._waiter = waiter

    def done(self, reply: Reply) -> None:
        """The work finished with ``reply`` (loop thread only). A reply read
        from a file holds its entry until the connection takes it over
        (``release``): the connection sends it in its own turn, and a change
        applied meanwhile must not close the fd (or let its number be reused)."""
        self.reply = reply
        entry = getattr(reply, "entry", None)
        if entry is not None and not self._cancelled:
            self._held = entry.acquire()
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            waiter(reply)
        elif self._cancelled and hasattr(reply, "abort"):
            reply.abort()           # an Upload for a PUT whose connection is gone: no temp file left

    def cancel(self) -> None:
        """The waiting connection closed: a later ``done`` goes nowhere (an
        upload it brings is aborted)."""
        self._waiter = None
        self._cancelled = True
        self.release()

    def release(self) -> None:
        """Let go of the reply's entry (the connection holds it now, or nobody will)."""
        held, self._held = self._held, None
        if held is not None:
            held.release()


def refusal(exc: Exception, date: bytes, *, close: bool = True, head_only: bool = False,
            version: tuple = (1, 1)) -> Reply:
    """The error Reply for an ``http.HttpError``; for an OSError from work done
    off the loop, the status a write failure gets (``write_methods.http_error_for``);
    anything else is a bug: its traceback goes to stderr and the client gets 500."""
    from zcopy import http

    if isinstance(exc, OSError):
        from zcopy.server.write_methods import http_error_for

        exc = http_error_for(exc)
    elif getattr(exc, "sqlite_errorcode", None) == 13:     # SQLITE_FULL: the state folder's disk is full
        exc = http.HttpError(507, "no space left on the server for its state", close=True)
    elif not isinstance(exc, http.HttpError):
        import sys
        import traceback

        traceback.print_exception(exc, file=sys.stderr)
        exc = http.HttpError(500, "internal error", close=True)
    close = close or exc.close
    data = http.error_response(exc.status, date, reason=exc.reason, headers=exc.headers,
                               close=close, head_only=head_only, version=version)
    return whole(exc.status, data, close)
