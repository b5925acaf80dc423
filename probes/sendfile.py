"""sendfile(2): which destinations take it, and the edges the man page names.

Each check sends a small real file and reads the bytes back on the far side,
so "ok" means the data arrived intact, not merely that the call returned.
Edges checked: the per-call cap (MAX_RW_COUNT, 0x7ffff000), short counts on
a non-blocking socket whose buffer is full, offsets at and past EOF, files
whose st_size lies (/proc), and files on tmpfs.
"""

from __future__ import annotations

import os
import socket
from typing import Callable, Iterator

from probes.finding import Finding, Status
from probes.kernel import errname
from probes.resources import Resources

SIZE = 64 * 1024          # fits in every default socket/pipe buffer: no reader thread needed
PATTERN = b"zcopy-sendfile-probe:"
MAN_PAGE_CAP = 0x7FFFF000


def probe(ctx) -> Iterator[Finding]:
    yield _dest("sendfile.file_to_tcp", "a TCP socket on 127.0.0.1", _to_tcp)
    yield _dest("sendfile.file_to_unix", "an AF_UNIX stream socket", _to_unix)
    yield _dest("sendfile.file_to_pipe", "a pipe", _to_pipe)
    yield _dest("sendfile.file_to_file", "a regular file", _to_file)
    yield _call_cap()
    yield _short_count()
    yield _eof()
    yield _proc_file()
    yield _tmpfs()


def expected() -> bytes:
    return (PATTERN * (SIZE // len(PATTERN) + 1))[:SIZE]


def _dest(fid: str, what: str, check: Callable[[Resources, int], bytes]) -> Finding:
    """Send SIZE bytes from a temp file to ``what`` and compare what arrives."""
    with Resources() as res:
        src, _ = res.tmpfile(SIZE, fill=PATTERN)
        try:
            got = check(res, src)
        except OSError as exc:
            return Finding(fid, Status.UNSUPPORTED, False, f"sendfile to {what} failed: {errname(exc)} ({exc.strerror})")
        if got != expected():
            return Finding(fid, Status.ERROR, False, f"sendfile to {what} delivered {len(got)} bytes, "
                           f"not the {SIZE} written (or they differ)")
        return Finding(fid, Status.OK, True, f"sendfile moved {SIZE} bytes from a file to {what} intact")


def send_all(out_fd: int, in_fd: int, count: int) -> int:
    """sendfile in a loop with explicit offsets; returns bytes sent (short only at EOF)."""
    offset = 0
    while offset < count:
        n = os.sendfile(out_fd, in_fd, offset, count - offset)
        if n == 0:
            break
        offset += n
    return offset


def recv_exactly(sock: socket.socket, count: int) -> bytes:
    chunks, got = [], 0
    while got < count:
        data = sock.recv(count - got)
        if not data:
            break
        chunks.append(data)
        got += len(data)
    return b"".join(chunks)


def _to_tcp(res: Resources, src: int) -> bytes:
    client, server = res.tcp_pair()
    send_all(client.fileno(), src, SIZE)
    return recv_exactly(server, SIZE)


def _to_unix(res: Resources, src: int) -> bytes:
    a, b = res.unix_pair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * SIZE)
    send_all(a.fileno(), src, SIZE)
    return recv_exactly(b, SIZE)


def _to_pipe(res: Resources, src: int) -> bytes:
    r, w = res.pipe(4 * SIZE)
    send_all(w, src, SIZE)
    return os.read(r, 4 * SIZE)


def _to_file(res: Resources, src: int) -> bytes:
    dst, _ = res.tmpfile()
    send_all(dst, src, SIZE)
    return os.pread(dst, 4 * SIZE, 0)


def _call_cap() -> Finding:
    """Ask for 2 GiB in one call from an endless source (/dev/zero) to a sink
    that takes everything (/dev/null): the return value is the per-call cap."""
    fid = "sendfile.call_cap"
    with Resources() as res:
        try:
            zero = res.open("/dev/zero")
            null = res.open("/dev/null", os.O_WRONLY)
            got = os.sendfile(null, zero, None, 0x80000000)
        except OSError as exc:
            return Finding(fid, Status.SKIPPED, MAN_PAGE_CAP, f"could not measure (/dev/zero -> /dev/null: "
                           f"{errname(exc)}); the man page cap is {MAN_PAGE_CAP:#x}")
    status = Status.OK if got == MAN_PAGE_CAP else Status.DEGRADED
    return Finding(fid, status, got, f"one sendfile call asked for 0x80000000 bytes moved {got:#x}; "
                   f"callers must loop on larger ranges (man page: {MAN_PAGE_CAP:#x})")


def _short_count() -> Finding:
    """A non-blocking socket whose peer does not read: sendfile returns a
    short count once the buffer fills, then EAGAIN. Engines must handle both."""
    fid = "sendfile.short_count"
    size = 1024 * 1024
    with Resources() as res:
        src, _ = res.tmpfile(size)
        client, server = res.tcp_pair()
        for s in (client, server):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF if s is client else socket.SO_RCVBUF, 16384)
        client.setblocking(False)
        first = os.sendfile(client.fileno(), src, 0, size)
        then = "no error"
        try:
            while True:  # the buffer may drain into the peer's receive queue a few times
                n = os.sendfile(client.fileno(), src, first, size - first)
                if n == 0:
                    break
                first += n
        except BlockingIOError:
            then = "EAGAIN"
    value = {"asked": size, "accepted": first, "then": then}
    ok = first < size and then == "EAGAIN"
    return Finding(fid, Status.OK if ok else Status.DEGRADED, value,
                   f"non-blocking TCP socket with a full buffer: sendfile of {size} bytes returned short "
                   f"({first} accepted) then {then}" if ok else
                   f"expected a short count then EAGAIN, saw {first} accepted then {then}")


def _eof() -> Finding:
    """Offsets at and past EOF return 0 (not an error); a count past EOF is
    cut to what is left. A file that shrinks mid-transfer therefore shows up
    as a 0 return, which engines must treat as 'file shrank'."""
    fid = "sendfile.eof"
    with Resources() as res:
        src, _ = res.tmpfile(SIZE)
        r, w = res.pipe(4 * SIZE)
        past_end = os.sendfile(w, src, SIZE + 4096, 100)
        at_end = os.sendfile(w, src, SIZE, 100)
        beyond = os.sendfile(w, src, SIZE - 10, 100)
    value = {"at_eof": at_end, "past_eof": past_end, "count_past_eof": beyond}
    ok = at_end == 0 and past_end == 0 and beyond == 10
    return Finding(fid, Status.OK if ok else Status.DEGRADED, value,
                   f"offset at EOF returned {at_end}, past EOF {past_end}, 100 bytes asked 10 before EOF "
                   f"returned {beyond}: a 0 return means end of file")


def _proc_file() -> Finding:
    """/proc files report st_size 0 yet have content: a server that trusts
    st_size serves them empty. Record what sendfile does with one."""
    fid = "sendfile.proc_file"
    path = "/proc/self/status"
    with Resources() as res:
        src = res.open(path)
        st_size = os.fstat(src).st_size
        r, w = res.pipe(65536)
        try:
            sent = os.sendfile(w, src, 0, 65536)
        except OSError as exc:
            return Finding(fid, Status.UNSUPPORTED, {"st_size": st_size, "sent": None},
                           f"sendfile from {path} (st_size {st_size}) failed: {errname(exc)}; "
                           f"/proc files need read+send")
    return Finding(fid, Status.OK, {"st_size": st_size, "sent": sent},
                   f"sendfile from {path} moved {sent} bytes although st_size is {st_size}: "
                   f"never size a response from st_size on /proc")


def _tmpfs() -> Finding:
    fid = "sendfile.tmpfs"
    if not os.path.isdir("/dev/shm"):
        return Finding(fid, Status.SKIPPED, None, "/dev/shm (tmpfs) is not mounted here")
    with Resources() as res:
        src, _ = res.tmpfile(SIZE, dir="/dev/shm", fill=PATTERN)
        client, server = res.tcp_pair()
        try:
            send_all(client.fileno(), src, SIZE)
        except OSError as exc:
            return Finding(fid, Status.UNSUPPORTED, False, f"sendfile from tmpfs failed: {errname(exc)}")
        got = recv_exactly(server, SIZE)
    ok = got == expected()
    return Finding(fid, Status.OK if ok else Status.ERROR, ok,
                   f"sendfile from a tmpfs file (/dev/shm) to TCP moved {len(got)} of {SIZE} bytes"
                   + (" intact" if ok else " with differences"))
