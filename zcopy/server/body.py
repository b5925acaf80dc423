"""Where a request body goes: one path for every method that reads one.

A responder that wants a request's body returns a ``BodySink`` instead of a
``Reply``. The connection then moves the body into it - the framing (length,
chunked decoding, what lies beyond the body) is the protocol's
(``zcopy.http.protocol``), so a sink only ever sees body bytes - and, when
the body is complete, asks the sink for the reply (``complete``: a ``Reply``
or a ``Pending``).

- ``FileSink``: a file. The connection gives it a ``Spool``
  (``zcopy.server.spool``): body bytes that pass through the process are
  ``put`` into it, the rest of a fixed-length body is taken from the socket
  by the upload engine's slots (a pipe for splice), and a pool thread writes
  them at their offset into ``fd``, never the loop; ``advanced`` says how far
  the file holds the body. Uploads (``zcopy.server.write_methods.Upload``, an
  O_TMPFILE named at commit) and resumable appends are these.
- ``MemorySink``: a bounded buffer for small bodies a responder parses
  (PROPFIND/PROPPATCH XML, JSON for POST/PATCH): ``data`` once complete.

Both refuse a body over their ``limit`` with 413, whether the client
announced its length or it grows chunk by chunk.
"""

from __future__ import annotations

from zcopy.http.errors import HttpError


class BodySink:
    """The interface; see the module docstring."""

    #: A file the upload engine may write into straight from the socket (None:
    #: every byte passes through ``write``).
    fd: int | None = None
    #: An interim response to send when the body is accepted, before any 100 Continue (104 Upload
    #: Resumption Supported, zcopy.server.uploads); None: nothing.
    interim: bytes | None = None

    def __init__(self, limit: int | None, on_complete) -> None:
        self.limit = limit
        self.offset = 0                 # body bytes stored (a file sink: written into the file) so far
        self.taken = 0                  # ... taken from the connection (a file sink: perhaps not written yet)
        self.on_complete = on_complete  # (sink, request, closing) -> Reply | Pending

    def check_length(self, length: int | None) -> None:
        """Refuse an announced length over the limit before any byte is read."""
        if self.limit is not None and length is not None and length > self.limit:
            raise HttpError(413, f"body larger than {self.limit} bytes", close=True)

    def write(self, data) -> None:
        """Take body bytes (already decoded); HttpError(413) past the limit."""
        end = self.taken + len(data)
        if self.limit is not None and end > self.limit:
            raise self.too_large(end)
        self._store(data)
        self.taken = end

    def too_large(self, end: int) -> HttpError:
        """The refusal of a body that would end at ``end``."""
        return HttpError(413, f"body larger than {self.limit} bytes", close=True)

    def _store(self, data) -> None:
        raise NotImplementedError

    def advanced(self, moved: int) -> None:
        """``moved`` more bytes are stored (a file sink: written at ``offset`` into ``fd``, by a thread)."""
        self.offset += moved

    def complete(self, req, closing: bool):
        """The whole body is here: the reply (``Reply`` or ``Pending``)."""
        return self.on_complete(self, req, closing)

    def abort(self) -> None:
        """The body will not complete (cut, refused, timed out): drop it."""


class MemorySink(BodySink):
    """A small body kept in memory, at most ``limit`` bytes."""

    def __init__(self, limit: int, on_complete) -> None:
        super().__init__(limit, on_complete)
        self.data = bytearray()

    def _store(self, data) -> None:
        self.data += data
        self.offset += len(data)

    def abort(self) -> None:
        self.data = bytearray()


class FileSink(BodySink):
    """A body written into the file ``fd`` from ``offset`` on, through ``spool`` (off the loop)."""

    def __init__(self, fd: int, limit: int | None, on_complete) -> None:
        super().__init__(limit, on_complete)
        self.fd = fd
        self.spool = None               # the connection's zcopy.server.spool.Spool, while it receives

    def _store(self, data) -> None:
        self.spool.put(data)
