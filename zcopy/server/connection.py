"""One client connection: the driver of its protocol, transport and engines.

What HTTP/1.1 says - where a head ends, whether a body follows and how it is
framed, 100-continue, keep-alive or close, every framing error - is decided
by ``zcopy.http.protocol.ServerProtocol``; this module moves bytes between
the transport (``zcopy.transport``), that protocol, the responder, the body
sinks (``zcopy.server.body``) and the engines, and owns the deadlines.

The socket is registered once, edge-triggered, for EPOLLIN|EPOLLOUT|EPOLLRDHUP;
the connection remembers whether the last read/write hit EAGAIN
(``readable``/``writable``) instead of re-arming epoll on every state change.

States (the driver's; the protocol's own are in its module):
  READING   - waiting for a request head (deadline: header or idle timeout)
  RECEIVING - a request body going into a sink: bytes already received
              through ``write``, the rest of a fixed-length body taken from
              the socket by the upload engine's slots, chunked bodies through
              the protocol's decoder; a file sink's bytes are written by a
              pool thread (``zcopy.server.spool``), and the reply waits for
              the last write (deadline: send timeout, pushed forward on every
              progress; none while the body waits for the server's disk)
  WAITING   - the responder returned a ``Pending``: nothing is read until it
              is done (deadline: send timeout)
  WRITING   - sending the reply: head bytes, then body segments through the
              engine (deadline: send timeout, pushed forward on every progress)
  LINGERING - reply sent with "Connection: close": write side shut, reading and
              discarding until the client closes or LINGER_SECONDS pass
  CLOSED
"""

from __future__ import annotations

import errno
import math
import socket
import sys
import traceback

from zcopy import http
from zcopy.engines import FileShrank, PeerClosed, Progress
from zcopy.http.protocol import BODY, CLOSE, HEAD, LINGER_SECONDS, ServerProtocol
from zcopy.loop import EV_HUP, EV_IN, EV_OUT
from zcopy.server.body import BodySink
from zcopy.server.prefetch import Residency
from zcopy.server.reply import Pending, Reply
from zcopy.server.spool import Spool
from zcopy.server.write_methods import http_error_for
from zcopy.transport import PlainTransport

READING, RECEIVING, WRITING, LINGERING, CLOSED, WAITING = 0, 1, 2, 3, 4, 5
#: How long a file found resident in the page cache is trusted to stay so
#: (ranges up to one prefetch window); a file evicted meanwhile costs one
#: blocking read, as it would without prefetch.
RESIDENT_MEMO = 1.0
RECV_SIZE = 65536
#: Pipelined requests answered per loop turn before yielding to other sockets.
PIPELINE_BURST = 16
#: A drain (SIGTERM, or a SIGHUP that replaces the workers) lets a connection that has not sent its
#: first request yet (accepted moments before the drain: its request is on the way) this long to
#: send it; it is answered with ``Connection: close``. An idle keep-alive connection closes at once.
FIRST_REQUEST_GRACE = 1.0
_MSG_MORE = int(socket.MSG_MORE)     # a plain int: a transport may test it (``&`` on the IntFlag runs enum.py)
DONE, BLOCKED, MORE = Progress.DONE, Progress.BLOCKED, Progress.MORE


class Connection:
    __slots__ = ("worker", "transport", "fd", "wire", "recv", "send", "proto", "addr", "state", "readable", "writable",
                 "deadline", "out", "at", "xfer", "reply", "started", "sent", "draining", "upload", "pending", "user", "auth",
                 "hup", "ahead", "stats", "config", "engine", "once", "head_at", "owed", "responder", "header_timeout",
                 "idle_timeout", "send_timeout", "budget", "lone_budget", "prefetch", "corked", "spool", "access_log", "held",
                 "io", "sendfile")

    def __init__(self, worker, sock, addr, transport=None) -> None:
        self.worker = worker
        self.stats = worker.stats          # what every request touches, one attribute away
        self.responder = worker.responder
        self.config = config = worker.config
        self.header_timeout = config.header_timeout     # the deadlines every reply's end sets
        self.idle_timeout = config.idle_timeout
        self.send_timeout = config.send_timeout         # ... every send that moved bytes sets
        self.budget = config.budget                     # bytes a turn may send (an engine step)
        self.prefetch = worker.prefetch                 # None: no residency check before a send
        self.access_log = worker.access_log             # None: no access log
        # A longer step while alone: plain TCP only (kTLS encrypts as it sends: CPU per byte)
        self.lone_budget = config.lone_budget if transport is None else 0
        self.transport = transport = transport or PlainTransport(sock)
        self.fd = transport.fd             # epoll's key
        self.recv = transport.recv
        self.send = transport.send
        #: ``recv`` and ``send`` as C calls when compiled over plain TCP (``zcopy.sockio.SocketIO``:
        #: no argument parsing, no int objects); None otherwise, and the bound methods above serve.
        io = getattr(transport, "io", None)
        self.io = io if io is not None and transport.recv == io.recv and transport.send == io.send else None
        self.proto = ServerProtocol(worker.heads)
        if transport.zero_copy:            # the engines move file bytes to the socket itself
            self.wire = transport.fd
            self.engine = worker.engine
        else:                              # every byte passes through the transport's send
            self.wire = transport
            self.engine = worker.copy_engine()
        # None: every range goes through a transfer (a copying transport may offer its own)
        self.once = self.engine.send_once if transport.zero_copy else getattr(transport, "send_once", None)
        #: ``once`` as a C call when it is the compiled sendfile engine's (``zcopy.sockio.Sendfile``), else None.
        sendfile = getattr(self.engine, "sendfile", None) if transport.zero_copy else None
        self.sendfile = sendfile if sendfile is not None and self.once == sendfile.send_once else None
        self.addr = addr
        self.state = READING
        self.readable = True      # data may have arrived before we registered
        self.writable = True
        self.deadline = worker.now + worker.config.idle_timeout
        self.out = None           # WRITING: bytes to send before reply.body[at]
        self.at = 0
        self.xfer = None
        self.reply = None
        self.started = 0.0        # worker.now when the request head was complete
        self.head_at = 0.0        # ... and when the reply's head was queued
        self.sent = 0
        self.draining = False
        self.upload: BodySink | None = None    # RECEIVING: where the body goes
        self.spool: Spool | None = None        # ... and, for a file, how it gets there (off the loop)
        self.pending: Pending | None = None    # WAITING: the reply being made off the loop
        self.user = "-"           # who the request being answered is from (the access log's user field)
        self.auth = None          # (Authorization, rules generation, Identity): the last sign-in here
        self.hup = False          # EPOLLRDHUP/HUP seen: the peer's EOF is pending, keep reading
        self.ahead = None         # prefetch.Readahead of the file range being sent
        #: The FileEntry the reply being sent reads, acquired (its fd stays open) when the reply
        #: outlives ``_start_reply``; a reply that leaves whole in that call holds none.
        self.held = None
        self.corked = False       # the transport is corked for the transfer under way (_transfer)
        #: Replies finished but not sent yet: pipelined requests' all-bytes replies,
        #: gathered into one send (``_start_reply``), sent before the connection
        #: reads again, waits, lingers or yields its turn.
        self.owed: list[bytes] = []

    @property
    def request(self):
        """The request being answered (None between requests)."""
        return self.proto.request

    # -- events ---------------------------------------------------------------

    def run(self, events: int = 0) -> None:
        """Advance as far as possible without blocking; first note what epoll
        said (``events``: the loop calls this as ``on_event``; the ready queue
        and the worker with none)."""
        if events:
            if events & EV_IN:
                self.readable = True
                if events & EV_HUP:
                    self.hup = True
            if events & EV_OUT:
                self.writable = True
        try:
            burst = PIPELINE_BURST
            while True:
                # (self.state each time: compiled, a C int against a C constant)
                if self.state == READING:
                    if not self._read_request():
                        return
                    if self.state != READING:
                        continue            # a reply under way, a body, a wait, a linger
                    # (still READING: the reply went out at once, see _start_reply)
                elif self.state == WRITING:
                    progress = self._pump()
                    if progress is not DONE:
                        if progress is MORE:
                            self.worker.ready.append(self)
                        return
                    self._finish_reply()
                    if self.state != READING:
                        continue
                elif self.state == RECEIVING:
                    if not self._receive():
                        return
                    continue
                elif self.state == WAITING:
                    pending = self.pending
                    if pending.reply is None:
                        return
                    self.pending = None
                    try:
                        self._answer(pending.reply)
                    finally:                # (a reset in its first send: close() no longer sees it)
                        pending.release()   # (the reply's entry: the connection holds it now)
                    continue
                elif self.state == LINGERING:
                    self._linger()
                    return
                else:
                    return
                # A reply is complete and the connection reads again.
                if not self.readable and not self.proto.buf:
                    return                  # the usual end of a turn: wait for the next request
                burst -= 1
                if burst == 0:
                    if self.owed:       # (every other way out has sent them, or waits to)
                        self._flush_owed()
                    self.worker.ready.append(self)
                    return
        except http.HttpError as exc:       # a body refused midway (413, 507, bad chunk)
            self._abort_upload()
            self.proto.body_failed()
            self._start_reply(self.responder.error(exc, close=True))
            self.run()
        except PeerClosed:
            self.worker.stats.error("upload_cut")
            self.close()
        except FileShrank:
            self.worker.stats.error("file_changed")
            self.close()
        except (ConnectionResetError, BrokenPipeError):
            self.worker.stats.error("client_reset")
            self.close()
        except OSError as exc:
            self.worker.stats.error(errno.errorcode.get(exc.errno, "oserror"))
            self.close()
        except Exception:
            # A bug. It costs this one connection, not the worker and every other
            # connection on it (and six in ten seconds would stop the server).
            self.worker.stats.error("internal")
            traceback.print_exc(file=sys.stderr)
            if self.reply is None and self.state != CLOSED:   # nothing of a reply sent yet
                self._send_quietly(http.error_response(500, self.worker.date.get(),
                                                       reason="internal error", close=True))
            self.close()

    on_event = run      # (one frame per wakeup, not two)

    # -- reading --------------------------------------------------------------

    def _read_request(self) -> bool:
        """Get one complete request head (from what was received, then the
        transport) and start answering it. False: wait for more bytes."""
        proto = self.proto
        try:
            req = proto.next_request() if proto.buf else None     # pipelined first
            while req is None:
                if self.owed:           # nothing more is read while replies wait to be sent
                    self._flush_owed()
                    if self.owed or self.state == CLOSED:
                        return False
                if self.draining and not proto.buf and self.started != 0.0:    # (see drain)
                    self.close()
                    return False
                data = self._read()
                if not data:
                    if data is not None:        # the peer's EOF
                        self.close()
                    return False
                req = proto.receive(data)
                if req is None and len(proto.buf) == len(data):
                    # The head clock starts with its first byte (slowloris bound); a drain's
                    # grace (see drain) bounds the whole head, so a first byte never extends it.
                    deadline = self.worker.now + self.header_timeout
                    self.deadline = min(self.deadline, deadline) if self.draining else deadline
        except http.HttpError as exc:           # 400/414/431/501/505: answer, then close
            self._start_reply(self.responder.error(exc, close=True))
            return True
        worker = self.worker
        self.started = worker.now
        reply = self.responder.respond(req, self.draining, self)
        if type(reply) is Reply:           # (compiled: a pointer compare; __class__ is an attribute lookup)
            self._start_reply(reply)
        else:
            self._answer(reply)
        return True

    def _recv(self) -> bytes:
        """Up to RECV_SIZE bytes from the transport (``recv``; compiled over plain TCP, ``io``'s in C)."""
        io = self.io
        return io.recv(RECV_SIZE) if io is not None else self.recv(RECV_SIZE)

    def _send(self, data, flags: int = 0) -> int:
        """The transport's ``send`` (compiled over plain TCP, ``io``'s in C): the count sent."""
        io = self.io
        return io.send(data, flags) if io is not None else self.send(data, flags)

    def _read(self) -> bytes | None:
        """What the transport has: bytes (counted), b"" at the peer's EOF (the
        protocol is told), or None when nothing is there now."""
        if not self.readable:
            return None
        try:
            data = self._recv()
        except BlockingIOError:
            self.readable = False
            return None
        n = len(data)
        if not n:
            self.proto.eof_received()
        elif n < RECV_SIZE and not self.hup:
            # A short read drained the socket; with edge-triggered epoll any later
            # byte raises a new EPOLLIN edge, so the next read waits for it instead
            # of paying a recv -> EAGAIN round trip per request (nginx does the same,
            # and likewise keeps reading once the peer's FIN is pending).
            self.readable = False
        self.stats.copy_received += n
        return data

    def _answer(self, reply) -> None:
        """What the responder (or a completed body) said: a Reply to send, a
        sink that wants the request's body, or a Pending to wait for."""
        cls = reply.__class__
        if cls is Reply:
            self._start_reply(reply)
        elif cls is Pending:
            if self.owed:               # earlier replies do not wait for this one
                self._flush_owed()
                if self.state == CLOSED:    # the flush found the client gone (reset): close() ran
                    reply.cancel()
                    return
            self.pending = reply
            self.state = WAITING
            self.deadline = self.worker.now + self.send_timeout
            reply.wait(self._resumed)
        elif isinstance(reply, BodySink):
            if self.owed:
                self._flush_owed()
                if self.state == CLOSED:    # as above: nothing will receive this body
                    reply.abort()
                    return
            self.upload = reply
            if self.proto.body_left > 0:
                reply.check_length(self.proto.body_left)    # 413 before any byte (or 100) moves
            if reply.fd is not None:    # a file: its bytes are written off the loop
                worker = self.worker
                reply.spool = self.spool = Spool(reply, worker.body_writer, worker.upload_engine.new_slot,
                                                 worker.body_slot, worker.upload_engine.stats, self._written)
            self.state = RECEIVING
            self.deadline = self.worker.now + self.send_timeout
            if reply.interim is not None:
                self._send_quietly(reply.interim)
            interim = self.proto.accept_body()
            if interim is not None:
                self._send_quietly(interim)
        else:
            self._start_reply(reply)

    def _resumed(self, reply) -> None:
        """A Pending is done (on the loop thread, perhaps inside another
        connection's turn): carry on in this connection's own turn."""
        if self.state == WAITING:
            self.worker.ready.append(self)

    # -- receiving a body -------------------------------------------------------

    def _receive(self) -> bool:
        """Move body bytes into the sink. False: wait for more."""
        try:
            return self._receive_body()
        except (PeerClosed, ConnectionError):
            raise
        except OSError as exc:   # the file side failed: ENOSPC, EDQUOT, EIO...
            if exc.errno in (errno.EAGAIN, errno.ECONNRESET, errno.EPIPE):
                raise
            raise http_error_for(exc) from None

    def _receive_body(self) -> bool:
        """The body's bytes are taken here, on the loop, and written into a file sink's file on a
        thread (its ``Spool``); the reply is asked for once every byte is in. False: wait (for the
        socket, or, with a full spool, for a write: the readiness noted in ``readable`` stays)."""
        sink = self.upload
        proto = self.proto
        stats = self.stats
        spool = self.spool
        if spool is not None:
            if spool.error is not None:
                raise spool.error           # a write failed (ENOSPC, EIO...): as if ours had (_receive)
            if spool.full:
                return self._wait_for_disk()
        if proto.buf and proto.state == BODY:
            stats.body_buffered += len(proto.buf)
            for piece in proto.body_from_buffer():
                sink.write(piece)
        budget = self.worker.upload_engine.budget
        while proto.state == BODY:
            if spool is not None and spool.full:
                return self._wait_for_disk()
            if proto.decoder is not None or spool is None or not self.transport.recv_zero_copy:
                # Through the process: a chunked body (the decoder must see
                # it), a sink that is not a file, a transport that must copy.
                data = self._read()
                if not data:
                    if data is None:
                        if spool is not None:
                            spool.flush()
                        return False
                    raise PeerClosed("client closed during a request body")
                stats.body_buffered += len(data)
                self.deadline = self.worker.now + self.send_timeout
                for piece in proto.body_received(data):
                    sink.write(piece)
                continue
            if not self.readable:       # (woken by a write that came back: the socket said EAGAIN)
                spool.flush()
                return False
            if budget <= 0:
                spool.flush()
                self.worker.ready.append(self)
                return False
            try:
                moved = spool.recv(self.fd, min(proto.body_left, budget))     # (PeerClosed at EOF)
            except BlockingIOError:
                self.readable = False
                spool.flush()
                return False
            if moved:
                sink.taken += moved
                proto.body_consumed(moved)
                budget -= moved
                self.deadline = self.worker.now + self.send_timeout
        if spool is not None:
            if not spool.settled:
                spool.flush(end=True)
                return self._wait_for_disk()
            spool.finish()
            self.spool = sink.spool = None
        self.upload = None
        try:
            reply = sink.complete(proto.request, self.draining)
        except http.HttpError as exc:
            reply = self.responder.error(exc, close=True)
        self._answer(reply)
        return True

    def _wait_for_disk(self) -> bool:
        """The body waits for its own writes (a full spool, or the last ones): the server's disk,
        not the client, so no deadline runs meanwhile; each write that comes back restarts the
        client's (``_written``)."""
        self.deadline = math.inf
        return False

    def _written(self) -> None:
        """(loop, from the executor's callbacks) A write of the body came back: go on in this
        connection's own turn, with the client's clock restarted."""
        if self.state == RECEIVING:
            self.deadline = self.worker.now + self.send_timeout
            self.worker.ready.append(self)

    def _abort_upload(self) -> None:
        if self.spool is not None:
            self.spool.close()      # the sink's abort follows once no write is in flight
            self.spool = self.upload.spool = None
            self.upload = None
        elif self.upload is not None:
            self.upload.abort()
            self.upload = None

    def _send_quietly(self, data: bytes) -> None:
        if self.owed:                   # earlier replies first
            data = b"".join((*self.owed, data))
            self.owed.clear()
        try:
            self.stats.copy_sent += self._send(data)
        except OSError:
            pass

    # -- writing --------------------------------------------------------------

    def _start_reply(self, reply) -> None:
        """Send ``reply``: through WRITING and ``_pump``, or, when the socket
        takes it whole (most replies of a busy server), at once: one send for
        a reply that is all bytes (a small file held in memory, an error
        page), two syscalls for a head and one hot file range, and
        ``_finish_reply`` before this returns, the connection READING again."""
        self.reply = reply
        self.sent = 0
        entry = reply.entry
        head = reply.head
        body = reply.body
        owed = self.owed
        if not body and self.writable and self.proto.buf and not reply.close:
            # Another request is already here (pipelined): this reply leaves with
            # the next one's, in one send (``owed``; sent at the latest when the turn ends).
            owed.append(head)
            self.head_at = self.worker.now
            self._finish_reply()
            return
        if owed:                        # what earlier replies owe goes first, in the same send
            head = b"".join((*owed, head))
            owed.clear()
        self.head_at = now = self.worker.now
        self.state = WRITING            # (before any send: a reset midway counts this reply as cut)
        if not body and self.writable:
            # All bytes (a small file held in memory, an error page): one send, and
            # the connection READING again at once when the socket takes it whole.
            try:
                n = self._send(head)
            except BlockingIOError:
                self.writable = False
            else:
                self.stats.copy_sent += n
                if n == len(head):
                    self._finish_reply()
                    return
                head = memoryview(head)[n:]
        self.out = head                 # bytes; a memoryview only if a send came up short
        self.at = 0
        self.deadline = now + self.send_timeout
        if body and self.writable and len(body) == 1 and self.once is not None and type(body[0]) is tuple \
                and self._hot(entry):
            # (one file range; a bytes segment, e.g. a UI asset, goes through _pump)
            self._send_at_once(head, body[0])
            if self.reply is None:      # it left whole (``_finish_reply``)
                return
        if entry is not None:           # its fd stays open while this reply reads it, after this call
            self.held = entry.acquire()

    def _flush_owed(self) -> None:
        """Send the replies gathered for pipelined requests (``owed``). What the
        socket does not take stays owed: it leaves on the next writable edge, or
        first in the next reply's send."""
        owed = self.owed
        if not self.writable:
            return
        data = owed[0] if len(owed) == 1 else b"".join(owed)
        owed.clear()
        try:
            n = self._send(data)
        except BlockingIOError:
            n = 0
        except OSError as exc:
            self.worker.stats.error("client_reset" if exc.errno in (errno.ECONNRESET, errno.EPIPE)
                                    else errno.errorcode.get(exc.errno, "oserror"))
            self.close()
            return
        self.stats.copy_sent += n
        if n < len(data):
            owed.append(data[n:])
            self.writable = False
            self.deadline = self.worker.now + self.send_timeout

    def _send_at_once(self, head: bytes, item: tuple) -> None:
        """The head (MSG_MORE), then the range in one engine call; what the
        socket did not take stays for ``_pump``, as if it had sent it."""
        try:
            n = self._send(head, _MSG_MORE)
        except BlockingIOError:
            self.writable = False
            return
        self.stats.copy_sent += n
        if n < len(head):
            self.out = memoryview(head)[n:]
            return
        self.out = None
        fd, start, stop = item
        if self._send_range_once(fd, start, stop):
            self.at = 1
            self._finish_reply()

    def _hot(self, entry) -> bool:
        """Nothing to wait for before sending this file's bytes: no prefetch,
        or the file was found resident moments ago (``entry.residency``)."""
        if self.prefetch is None:
            return True
        if entry is None:
            return False
        residency = entry.residency      # (compiled: its ``until`` is a C field)
        return residency.until > self.worker.now

    def _send_range_once(self, fd: int, start: int, stop: int) -> bool:
        """A hot range through one ``engine.send_once`` (most small ranges
        leave whole: no transfer object). True when all of it left; else the
        rest is ``self.xfer``, or the socket was full and nothing left."""
        count = stop - start
        sendfile = self.sendfile
        step = min(count, self.budget)
        n = sendfile.send_once(self.fd, fd, start, step) if sendfile is not None else self.once(self.fd, fd, start, step)
        self.sent += n
        if n == count:
            return True
        if n:
            self.xfer = self._transfer(fd, start + n, count - n)
        else:
            self.writable = False
        return False

    def _transfer(self, fd: int, start: int, count: int):
        """The engine's transfer of a range that does not leave in one call.
        One longer than a step (``config.budget``) leaves in several calls,
        and each call would push its last, short segment out on its own: one
        more packet per call, which cost a 1 GiB pull over loopback 11-18%
        more system time (docs/benchmarks.md, "Corked"). So the socket is
        corked (TCP_CORK, what nginx's ``tcp_nopush`` does) until the range
        has left (``_pump``); a connection that parks for the disk flushes
        first (``transport.flush``)."""
        if count > self.budget:
            self.transport.cork()
            self.corked = True
        return self.engine.start_send(fd, start, count)

    def _pump(self) -> Progress:
        """Send the head, then the body's items in order (the Reply is shared:
        ``at`` walks it, nothing is copied), until done, blocked or out of
        budget. Progress pushes the send deadline forward (once per call, not
        per syscall)."""
        body = self.reply.body
        sent, copied = self.sent, 0
        done = False
        lone = 0        # a step's bytes when longer than the budget: alone, see below
        try:
            while True:
                out = self.out
                if out is not None:
                    # bytes: a head, part header or small body. MSG_MORE when more
                    # follows, so a small file leaves in one segment with its header.
                    if not self.writable:
                        return BLOCKED
                    try:
                        n = self._send(out, _MSG_MORE if self.at < len(body) else 0)
                    except BlockingIOError:
                        self.writable = False
                        return BLOCKED
                    copied += n
                    if n < len(out):
                        self.out = out[n:] if out.__class__ is memoryview else memoryview(out)[n:]
                        if copied >= self.budget:
                            return MORE
                        continue
                    self.out = None
                at = self.at
                if at == len(body):
                    done = True
                    return DONE
                item = body[at]
                if item.__class__ is not tuple:
                    self.out = item
                    self.at = at + 1
                    continue
                if not self.writable:
                    return BLOCKED
                xfer = self.xfer
                if xfer is None:
                    fd, start, stop = item
                    entry = self.reply.entry
                    if not self._hot(entry):
                        xfer = self.xfer = self._transfer(fd, start, stop - start)
                        self._start_readahead(fd, start, stop, entry)
                    elif self.once is None:
                        xfer = self.xfer = self._transfer(fd, start, stop - start)
                    elif self._send_range_once(fd, start, stop):
                        self.at = at + 1
                        continue
                    elif not self.writable:
                        return BLOCKED
                    else:
                        xfer = self.xfer
                ahead = self.ahead
                # A window not in the page cache would block the loop in the engine:
                # park until the prefetch pool has read it (the worker wakes us).
                if ahead is not None and not ahead.admit(xfer.offset, self, lone):
                    # Push out what MSG_MORE corked (the head, a part header): the
                    # client should not wait for the window to see them.
                    self.transport.flush()
                    return BLOCKED
                before = xfer.remaining
                try:
                    progress = xfer.step(self.wire, lone) if lone else xfer.step(self.wire)
                finally:    # a reset after some chunks left: they count (access log, stats)
                    self.sent += before - xfer.remaining
                if progress is not DONE:
                    if progress is BLOCKED:
                        self.writable = False
                    elif self.worker.alone():
                        # MORE (a whole step left), and nothing else waits on the worker: the next
                        # step goes in this turn, not after a turn of the loop (docs/benchmarks.md,
                        # "Alone"). A neighbour that comes meanwhile waits at most this one step.
                        # With no other connection on the worker at all, that step may be longer
                        # (``lone_budget``, sendfile's 8 MiB): only a newcomer can wait for it,
                        # once; with another connection open the steps stay ``budget``.
                        if self.lone_budget and len(self.worker.conns) == 1:
                            lone = self.lone_budget
                        continue
                    return progress
                xfer.close()
                self.xfer = None
                if self.corked:     # the range's last, short segment leaves now
                    self.corked = False
                    self.transport.uncork()
                if ahead is not None:
                    self._end_readahead()
                self.at = at + 1
        finally:
            if copied:
                self.stats.copy_sent += copied
            if not done and (copied or self.sent != sent):     # done: _finish_reply sets it
                self.deadline = self.worker.now + self.send_timeout

    def _finish_reply(self) -> None:
        reply = self.reply
        worker = self.worker
        self._count(reply, True)
        held = self.held
        if held is not None:
            self.held = None
            held.release()
        self.reply = None
        if self.proto.reply_finished(reply.close or self.draining and not self.proto.buf) is CLOSE:
            self._start_linger()
            return
        self.state = READING
        self.deadline = worker.now + (self.header_timeout if self.proto.buf else self.idle_timeout)

    def _count(self, reply, complete: bool) -> None:
        """A reply ended: stats and the access log. One that did not complete
        (client gone, timeout, file shrank) is logged, as nginx logs a cut
        download, with the body bytes that did leave (file bytes; not the head)."""
        req = self.proto.request
        if req is None:
            self.stats.reply(None, reply.status)
        else:
            started = self.started
            now = self.worker.now
            if complete and now == started:     # (most: the turn that read it answered it whole)
                self.stats.reply_at_once(req.method, reply.status)
            else:
                self.stats.reply(req.method, reply.status, self.head_at - started, now - started if complete else None)
            if self.user != "-":            # requests by user (zcopy top); anonymous ones cost one compare
                self.stats.user(self.user)
        if self.access_log is not None:
            # A complete reply's whole body left, listings and multipart part
            # headers included (self.sent counts file bytes only).
            self.access_log.log(self.addr, req, reply.status, reply.length if complete else self.sent, self.user)

    # -- ending ---------------------------------------------------------------

    def _start_linger(self) -> None:
        if self.owed:
            self._send_quietly(b"")
        try:
            self.transport.shutdown_write()
        except OSError:
            self.close()
            return
        self.state = LINGERING
        self.deadline = self.worker.now + LINGER_SECONDS

    def _linger(self) -> None:
        while self.readable:
            try:
                data = self._recv()
            except BlockingIOError:
                self.readable = False
                return
            if not data:
                break
            self.worker.stats.copy_received += len(data)
        # EOF; or drained over plain TCP. Over TLS a drained socket waits (for the client's EOF or
        # the deadline): the client's close_notify is data, and arriving at a closed socket it
        # would reset the connection, maybe before the client read the reply.
        if self.readable or not self.transport.linger_for_peer:
            self.close()

    def on_timeout(self) -> None:
        """The deadline passed: what the protocol says to send (408 for a
        half-received head or body), then close."""
        state = self.state
        if state == WRITING or state == WAITING:
            self.worker.stats.error("send_timeout")
        elif self.proto.state == HEAD:
            self.worker.stats.error("header_timeout")
        elif state == RECEIVING:
            self.worker.stats.error("upload_timeout")
        refusal = self.proto.timed_out() if state == READING or state == RECEIVING else None
        if refusal is not None:
            status, reason = refusal
            self._send_quietly(http.error_response(status, self.worker.date.get(), reason=reason, close=True))
        self.close()

    def drain(self) -> None:
        """Graceful stop: finish what is in flight, then close. Between requests an idle
        keep-alive connection closes at once (its client retries such a request: RFC 9112
        9.3.1); one that has had no request yet was accepted moments ago and its client's
        first request is on the way (closing it would reset a client that did nothing wrong,
        the race a reload's new workers would otherwise lose): it gets ``FIRST_REQUEST_GRACE``
        to send it."""
        self.draining = True
        if self.state == READING and not self.proto.buf and not self.owed:
            if self.started == 0.0:     # no request yet
                self.deadline = min(self.deadline, self.worker.now + FIRST_REQUEST_GRACE)
            else:
                self.close()

    def _start_readahead(self, fd: int, start: int, stop: int, entry) -> None:
        """Track residency for this range, unless its file is on a memory
        filesystem. Not called for a file found resident moments ago
        (``entry.residency``): a hot file costs no residency syscall per
        request."""
        prefetch = self.prefetch
        if prefetch is None:
            return
        now = self.worker.now
        if entry is not None:
            if not prefetch.may_be_cold(fd, entry.key[0]):
                entry.residency = Residency(math.inf)     # tmpfs/ramfs: never cold
                return
        ahead = prefetch.track(fd, start, stop)
        if (entry is not None and entry.size <= prefetch.window and stop - start == entry.size
                and ahead.admit(start, self)):
            # The whole (small) file was resident at once: trust that for a moment.
            # Only the whole file: one resident range says nothing of another.
            entry.residency = Residency(now + RESIDENT_MEMO)
            return
        self.ahead = ahead

    def _end_readahead(self) -> None:
        if self.ahead is not None:
            self.ahead.close()
            self.ahead = None

    def close(self) -> None:
        if self.state == CLOSED:
            return
        state, self.state = self.state, CLOSED
        if self.xfer is not None:       # a reply's transfer under way (its pipe, its buffer)
            self.xfer.close()
            self.xfer = None
        self._abort_upload()
        self._end_readahead()
        if self.pending is not None:
            self.pending.cancel()
            self.pending = None
        if self.reply is not None and state == WRITING:
            self._count(self.reply, False)
        held = self.held
        if held is not None:
            self.held = None
            held.release()
        self.reply = None
        self.out = None
        self.owed.clear()
        self.proto.close()
        self.worker.forget(self)
        self.transport.close()
