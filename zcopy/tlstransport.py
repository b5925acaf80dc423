"""The TLS transport: what a connection sends and receives through once its handshake is done.

It has the shape of ``zcopy.transport.PlainTransport`` (``recv``, ``send``, ``flush``, ``cork``, ``uncork``,
``shutdown_write``, ``close``, ``fd``, ``zero_copy``), so the connection and the engines never
ask whether a request came over TLS; they ask the transport whether the kernel may move file
bytes itself (``zero_copy``).

Two paths, decided per socket after the handshake and never assumed:

- **kTLS TX** (``ktls=True``): OpenSSL installed the session keys in the kernel
  (``zcopy.tls.ktls_state`` read ``getsockopt(SOL_TLS, TLS_TX)`` on this very socket). Then
  whatever is written to the fd is encrypted by the kernel: ``zero_copy`` is True, the
  engines sendfile/splice to ``fd`` as over TCP, and ``send`` is the socket's own ``send``
  (``MSG_MORE`` works: the kernel holds the record open). Reads still go through OpenSSL,
  which reads records (and, with kTLS RX, plaintext) itself.
- **User-space TLS** (``ktls=False``): every byte passes through OpenSSL. ``zero_copy`` is
  False, so the connection sends file bytes with the copy engine (``read_send``: large
  ``preadv`` into a reused buffer, then this ``send``) and receives upload bodies through
  ``recv`` (no splice: the bytes on the wire are ciphertext).

OpenSSL's non-blocking rules, as Python exposes them: ``SSLWantReadError`` /
``SSLWantWriteError`` become ``BlockingIOError`` (what the connection and the engines expect
of a full or empty socket). A write that raised must be retried with the same bytes (CPython
sets ``SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER`` but not partial writes: a ``send`` returns the
whole length or raises), which is what the connection and ``read_send`` do anyway.

``send(data, MSG_MORE)`` cannot cork an OpenSSL write; instead a small head sent with
``MSG_MORE`` is held here (and counted as sent) and goes out in the same ``SSL_write`` as the
bytes that follow it, so a small reply is one TLS record and one ``write`` syscall, as
``send(head, MSG_MORE) + sendfile`` is one segment over TCP. The connection sends ``MSG_MORE``
only when more of the reply follows at once (or calls ``flush`` before it waits), so the
held bytes never wait.

Receiving. The connection reads edge-triggered and takes a short read as "the socket is
drained": ``recv`` must not return short while bytes that arrived before the edge being handled
are still in the kernel, or they wait for an edge that never comes (a pipelined request in its
own record, a head split over records). ``read``/``write`` are the ``_ssl`` object's own (the
``ssl.SSLSocket`` wrappers add only Python frames); a TCP FIN without close_notify reads as EOF,
as ``suppress_ragged_eofs`` makes it. Two ways, per connection:

- **Read-ahead** (user-space TLS, where it can be turned on; the usual case). Python's ``ssl``
  does not expose ``SSL_set_read_ahead``/``SSL_has_pending``; ``_ReadAhead`` reaches them with
  ctypes in the libssl ``_ssl`` is linked with, once the ``_ssl._SSLSocket``'s layout has been
  checked (its context field is ``obj.context``, and OpenSSL says the ``SSL`` reads this fd),
  and turns read-ahead on after the handshake. OpenSSL then reads what the kernel has (up to
  its 16.7 KiB buffer) in one ``read``, where it read a record's 5-byte header, then its body:
  per keep-alive request one ``SSL_read`` = one ``read`` syscall, then ``SSL_has_pending`` (no
  syscall). Drained: when OpenSSL holds nothing (``SSL_has_pending`` counts records read but
  not decrypted, which ``pending()`` does not) and its last ``read`` came back short (then
  anything that arrived later raised an edge of its own). A ``read`` comes back full in two
  cases: it filled the buffer, which then holds more than the record being decrypted (a record
  is smaller than the buffer), so ``SSL_has_pending`` is seen true after that ``SSL_read``; or
  it took exactly the rest of a record whose start OpenSSL already held (OpenSSL asks no more
  for a record's body), and that partial record was seen as ``SSL_has_pending`` when the
  previous ``SSL_read`` returned or stopped (``SSLWantReadError``). So ``SSL_has_pending`` seen
  true sets ``_deep``; while it is set, "drained" also needs ``FIONREAD`` to say the kernel's
  queue is empty, and only that, or a ``read`` that found the queue empty while OpenSSL holds
  nothing, clears it. A request in one record, read whole, never sets it.
- **Without read-ahead** (kTLS connections: not tried there, where OpenSSL may receive through
  the kernel's TLS and this kernel cannot show what read-ahead does to it; or a Python whose
  ``_ssl`` layout is not the one known here). One ``SSL_read`` costs two ``read`` syscalls
  (header, then record), and OpenSSL leaves the records after it in the kernel: after a short
  read one ``FIONREAD`` asks whether anything is left (a short ``SSL_read`` took its record
  whole, so ``pending()`` is 0), where another ``SSL_read`` on an empty socket would cost a
  ``read`` and an exception. ``recv`` reads until it has ``size`` bytes, or the kernel holds
  nothing, or OpenSSL would block.

``FIONREAD`` is asked with a ``bytearray`` (``fcntl.ioctl`` tries a writable buffer first; given
``bytes`` it formats and drops an error before taking the copy path), and ``MSG_MORE`` is tested
as a plain int (``flags & socket.MSG_MORE`` runs enum.py's ``Flag.__and__``, three Python calls).
"""

from __future__ import annotations

import fcntl
import os
import socket
import ssl
import sys
import termios

_WANT = (ssl.SSLWantReadError, ssl.SSLWantWriteError)
#: A plain int: ``socket.MSG_MORE`` is an ``IntFlag``, and ``flags & socket.MSG_MORE`` runs
#: enum.py's ``Flag.__and__`` (three Python calls, about 1.5 us) on every send.
_MSG_MORE = int(socket.MSG_MORE)
_ioctl = fcntl.ioctl
_FIONREAD = termios.FIONREAD
_NONE = bytes(4)          # FIONREAD's answer for an empty receive queue
#: FIONREAD's answer is written here. A writable buffer is what ``fcntl.ioctl`` tries first; given
#: ``bytes`` it fails that try (formatting an error message it then drops) before taking the copy
#: path: about half the call's cost. Only the loop's thread calls ``recv``, so one per process.
_QUEUED = bytearray(4)
#: Only bytes this small are held for MSG_MORE (a head, a multipart part header).
JOIN_LIMIT = 64 << 10


def _queued(fd: int) -> bool:
    """Bytes wait in the kernel's receive queue of ``fd`` (one ``ioctl(FIONREAD)``)."""
    _ioctl(fd, _FIONREAD, _QUEUED)
    return _QUEUED != _NONE


class _ReadAhead:
    """``SSL_set_read_ahead`` and ``SSL_has_pending``, which Python's ``ssl`` does not expose, reached
    with ctypes in the libssl that ``_ssl`` itself is linked with (see "Read-ahead" in the module
    docstring). ``functions()`` is None where they cannot be reached safely."""

    _found: object = None     # None: not looked for yet; False: unusable; else the instance

    def __init__(self, lib) -> None:
        import ctypes

        self.c_void_p = ctypes.c_void_p
        self.set_read_ahead = lib.SSL_set_read_ahead
        self.set_read_ahead.argtypes, self.set_read_ahead.restype = [ctypes.c_void_p, ctypes.c_int], None
        self.has_pending = lib.SSL_has_pending
        self.has_pending.argtypes, self.has_pending.restype = [ctypes.c_void_p], ctypes.c_int
        self.get_fd = lib.SSL_get_fd
        self.get_fd.argtypes, self.get_fd.restype = [ctypes.c_void_p], ctypes.c_int

    @classmethod
    def functions(cls) -> _ReadAhead | None:
        if cls._found is None:
            cls._found = False
            # CPython with the usual object header (16 bytes: not a free-threaded build), where id()
            # is the object's address.
            # ZCOPY_TLS_READ_AHEAD=off: the way without read-ahead (tests/test_tls_fastpath.py runs
            # both; kTLS connections always take it)
            if (sys.implementation.name == "cpython" and object.__basicsize__ == 16
                    and os.environ.get("ZCOPY_TLS_READ_AHEAD", "on").lower() not in ("off", "0", "no")):
                try:
                    import ctypes
                    import _ssl

                    # PyDLL: the calls keep the GIL (they return at once; releasing and taking it
                    # back would cost more than the call itself)
                    cls._found = cls(ctypes.PyDLL(_ssl.__file__))
                except (ImportError, OSError, AttributeError):
                    pass
        return cls._found or None

    def enable(self, obj, fd: int) -> int | None:
        """Turn read-ahead on for the ``_ssl._SSLSocket`` ``obj`` on ``fd``; its ``SSL *`` (for
        ``has_pending``), or None where its layout is not the one known here. CPython's
        ``PySSLSocket`` starts with the object header, then ``PyObject *Socket``, ``SSL *ssl``,
        ``PySSLContext *ctx`` (3.11's Modules/_ssl.c; later fields have changed since, not these):
        checked, not assumed: the ``ctx`` field must be ``obj.context`` and OpenSSL must say the
        ``SSL`` reads ``fd`` before anything is set."""
        if type(obj).__basicsize__ < 40:
            return None
        base = id(obj)
        if self.c_void_p.from_address(base + 32).value != id(obj.context):
            return None
        ssl_ptr = self.c_void_p.from_address(base + 24).value
        if not ssl_ptr or self.get_fd(ssl_ptr) != fd:
            return None
        self.set_read_ahead(ssl_ptr, 1)
        return ssl_ptr


class TlsStats:
    """Per-worker TLS counters (plain ints; read by the worker's snapshot once a second)."""

    __slots__ = ("handshakes", "failed", "timed_out", "plain_http", "ktls_conns", "user_conns",
                 "user_sent", "user_received", "ktls_sent", "protocols", "reason")

    def __init__(self) -> None:
        self.handshakes = 0       # completed
        self.failed = 0           # refused by OpenSSL (bad hello, no common cipher, ...)
        self.timed_out = 0        # not finished within the handshake timeout
        self.plain_http = 0       # plain HTTP sent to the TLS port: answered 400
        self.ktls_conns = 0       # connections whose TX was verified in the kernel
        self.user_conns = 0       # connections encrypting in user space
        self.user_sent = 0        # bytes encrypted by OpenSSL in this process
        self.user_received = 0    # bytes decrypted by OpenSSL in this process
        self.ktls_sent = 0        # bytes written to kTLS sockets by send() (heads, small bodies)
        self.protocols: dict[str, int] = {}
        self.reason = ""          # why the last connection used the path it used

    def snapshot(self, engines: dict) -> dict:
        # On a TLS server the zero-copy engines write only to sockets whose TX was verified
        # in the kernel (zero_copy is False otherwise), so their bytes are kTLS bytes.
        zero = sum(e.stats.bytes_sent for e in engines.values() if e.zero_copy)
        return {"handshakes": self.handshakes, "failed": self.failed, "timed_out": self.timed_out,
                "plain_http": self.plain_http, "ktls_connections": self.ktls_conns,
                "user_connections": self.user_conns, "ktls_bytes_sent": zero + self.ktls_sent,
                "user_bytes_sent": self.user_sent, "user_bytes_received": self.user_received,
                "protocols": dict(self.protocols), "path_reason": self.reason}


class TlsTransport:
    """A connected ``ssl.SSLSocket`` (non-blocking, handshake done)."""

    __slots__ = ("sock", "fd", "zero_copy", "ktls", "stats", "recv", "send", "send_once", "_more", "_obj",
                 "_ssl", "_has_pending", "_deep")
    #: Upload bodies always come through ``recv`` (OpenSSL reads the records, kTLS RX or not).
    recv_zero_copy = False
    #: A closing reply waits for the client's close_notify/EOF (see Connection._start_linger).
    linger_for_peer = True
    #: The bytes are encrypted: the session cookie says ``Secure`` (zcopy.server.session).
    secure = True

    def __init__(self, sock: ssl.SSLSocket, stats: TlsStats, ktls: bool) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.stats = stats
        self.ktls = ktls
        #: sendfile/splice may write to ``fd``: only when the kernel encrypts it.
        self.zero_copy = ktls
        self._more = b""          # a head held for MSG_MORE (user-space TLS only)
        #: The ``_ssl._SSLSocket`` under ``sock``: its read/write called straight, without the
        #: ``ssl.SSLSocket`` wrappers' Python frames (per request: recv -> read, send -> write).
        #: None once close_notify left (lingering: reads discard ciphertext).
        self._obj = sock._sslobj
        self.recv = self._recv
        #: user-space TLS: the ``SSL *`` once read-ahead is on (one ``read`` per request), else None
        self._ssl = None
        self._deep = False        # (read-ahead) OpenSSL may have left bytes in the kernel: see _more_ahead
        if not ktls and (ahead := _ReadAhead.functions()) is not None:
            self._ssl = ahead.enable(self._obj, self.fd)
            if self._ssl is not None:
                self._has_pending = ahead.has_pending
                self.recv = self._recv_ahead
        self.send = self._send_ktls if ktls else self._send
        #: user-space TLS: a small file range leaves in the same SSL_write as its head (see _send_once)
        self.send_once = None if ktls else self._send_once

    # -- receiving -------------------------------------------------------------

    def _recv(self, size: int) -> bytes:
        obj = self._obj
        if obj is None:           # lingering: discard the ciphertext, no TLS state needed
            return socket.socket.recv(self.sock, size)
        try:
            data = obj.read(size)
        except _WANT:
            raise BlockingIOError from None
        except ssl.SSLEOFError:
            data = b""            # a TCP FIN without close_notify: EOF (suppress_ragged_eofs)
        n = len(data)
        if n and n < size:
            # A short SSL_read took its record whole (SSL_pending counts only the unread rest of the
            # record being read: 0 here); the next record, if any, is in the kernel.
            _ioctl(self.fd, _FIONREAD, _QUEUED)
            if _QUEUED != _NONE:
                data, n = self._more_records(obj, data, size)
        if not self.ktls:
            self.stats.user_received += n
        return data

    def _recv_ahead(self, size: int) -> bytes:
        """``recv`` with OpenSSL reading ahead (see "Read-ahead" in the module docstring): one
        ``read`` per request, and no ``FIONREAD`` unless OpenSSL may have left bytes in the kernel."""
        obj = self._obj
        if obj is None:           # lingering: discard the ciphertext, no TLS state needed
            return socket.socket.recv(self.sock, size)
        try:
            data = obj.read(size)
        except _WANT:
            # OpenSSL's read() found the kernel's queue empty; a partial record it holds is
            # completed by the next SSL_read with a read of exactly its rest (see _more_ahead)
            self._deep = self._has_pending(self._ssl) != 0
            raise BlockingIOError from None
        except ssl.SSLEOFError:
            data = b""            # a TCP FIN without close_notify: EOF (suppress_ragged_eofs)
        n = len(data)
        if n < size:
            if n and (self._deep or self._has_pending(self._ssl)):
                data, n = self._more_ahead(obj, data, size)
        else:
            self._deep = True     # not drained, and nothing says how much OpenSSL read
        self.stats.user_received += n
        return data

    def _more_ahead(self, obj, data: bytes, size: int) -> tuple[bytes, int]:
        """After a short ``SSL_read``: the records OpenSSL holds, then, if one of its reads may
        have come back full (``_deep``: see "Read-ahead" in the module docstring), what the
        kernel holds, until both are empty, OpenSSL would block, or ``size`` bytes are here."""
        parts = [data]
        n = len(data)
        has_pending, ssl_ptr = self._has_pending, self._ssl
        while n < size:
            if has_pending(ssl_ptr):
                self._deep = True
            elif not self._deep or not _queued(self.fd):
                self._deep = False    # OpenSSL and the kernel both empty: drained
                break
            try:
                more = obj.read(size - n)
            except _WANT:
                # the kernel's queue was empty; OpenSSL holds a partial record (or nothing)
                self._deep = has_pending(ssl_ptr) != 0
                break
            except ssl.SSLEOFError:
                break             # the next call returns b""
            if not more:
                break             # EOF: the next call returns b""
            parts.append(more)
            n += len(more)
        else:
            self._deep = True
        return b"".join(parts), n

    def _more_records(self, obj, data: bytes, size: int) -> tuple[bytes, int]:
        """OpenSSL gives one record a read and, without read-ahead (Python's ``ssl`` cannot turn it
        on), leaves the records after it in the kernel: take what else is there now, so that a short
        return still means "drained" (the connection is edge-triggered)."""
        parts = [data]
        got = len(data)
        while got < size:
            try:
                more = obj.read(size - got)
            except _WANT:
                break
            except ssl.SSLEOFError:
                break             # the next call returns b""
            if not more:
                break             # EOF: the next call returns b""
            parts.append(more)
            got += len(more)
            if not _queued(self.fd):
                break             # (a short read emptied its record: nothing pending in OpenSSL)
        return b"".join(parts), got

    # -- sending ---------------------------------------------------------------

    def _send(self, data, flags: int = 0) -> int:
        """User-space TLS: OpenSSL encrypts ``data`` and writes the records."""
        more = self._more
        if more:
            # The held head leads; on BlockingIOError it stays held and the caller's retry
            # (same bytes) rebuilds the same buffer, as OpenSSL's retry rule asks.
            self._write(more + data)
            self._more = b""
            return len(data)
        if flags & _MSG_MORE and len(data) <= JOIN_LIMIT:
            self._more = bytes(data)   # goes out with what follows (see the module docstring)
            return len(data)
        try:                           # (_write, inlined: a whole small reply takes this way)
            n = self._obj.write(data)
        except _WANT:
            raise BlockingIOError from None
        self.stats.user_sent += n
        return n

    def _write(self, data) -> None:
        try:
            n = self._obj.write(data)
        except _WANT:
            raise BlockingIOError from None
        # Without SSL_MODE_ENABLE_PARTIAL_WRITE, OpenSSL writes all of it or asks again.
        self.stats.user_sent += n

    def _send_once(self, sock_fd, file_fd: int, offset: int, count: int) -> int:
        """The engine's ``send_once`` for user-space TLS: up to JOIN_LIMIT bytes of the file, read
        and sent (joined with a held head) in one SSL_write; 0 when the socket is full (the
        connection retries the same range, as OpenSSL wants). The rest of a larger range goes
        through the copy engine's transfer."""
        want = count if count <= JOIN_LIMIT else JOIN_LIMIT
        data = os.pread(file_fd, want, offset)
        if not data:
            from zcopy.engines import FileShrank

            raise FileShrank(f"file ended at offset {offset} with {count} bytes still promised")
        try:
            return self._send(data)
        except BlockingIOError:
            return 0

    def _send_ktls(self, data, flags: int = 0) -> int:
        """kTLS: the kernel encrypts what is written to the socket; MSG_MORE holds its record open."""
        n = socket.socket.send(self.sock, data, flags)
        self.stats.ktls_sent += n
        return n

    def flush(self) -> None:
        """Send what MSG_MORE held back (the connection is about to wait)."""
        if self.ktls:
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        elif self._more:
            try:
                self._write(self._more)
                self._more = b""
            except BlockingIOError:
                pass                  # still held: it leads the next send

    def cork(self) -> None:
        """kTLS: as ``PlainTransport.cork`` (TCP_CORK under the kernel's records). User-space TLS
        joins what it writes itself: nothing to do."""
        if self.ktls:
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)

    def uncork(self) -> None:
        if self.ktls:
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)

    # -- ending ----------------------------------------------------------------

    def shutdown_write(self) -> None:
        """Send TLS close_notify, then the TCP FIN; reads after this discard ciphertext."""
        self.flush()
        try:
            self.sock.unwrap()        # one SSL_shutdown: close_notify leaves
        except (ssl.SSLError, OSError, ValueError):
            pass                      # the peer's own close_notify is not waited for
        self._obj = None
        socket.socket.shutdown(self.sock, socket.SHUT_WR)

    def close(self) -> None:
        self.sock.close()
