"""splice(2): each leg a zero-copy engine needs, and which flags are accepted.

A download through splice is file -> pipe -> socket; an upload is
socket -> pipe -> file. Each leg is tried on its own with real fds and the
bytes are checked at the far end. The flags check asks the kernel to accept
SPLICE_F_NONBLOCK, SPLICE_F_MORE and SPLICE_F_MOVE on a real file -> pipe
splice (EINVAL means refused); SPLICE_F_MOVE is a documented no-op since
Linux 2.6.21, so accepted does not mean pages move.
"""

from __future__ import annotations

import os
from typing import Callable, Iterator

from probes.finding import Finding, Status
from probes.kernel import errname
from probes.resources import Resources
from probes.sendfile import PATTERN, SIZE, expected, recv_exactly

FLAGS = {"SPLICE_F_NONBLOCK": os.SPLICE_F_NONBLOCK, "SPLICE_F_MORE": os.SPLICE_F_MORE,
         "SPLICE_F_MOVE": os.SPLICE_F_MOVE}


def probe(ctx) -> Iterator[Finding]:
    yield _leg("splice.file_to_pipe", "file -> pipe", _file_to_pipe)
    yield _leg("splice.pipe_to_socket", "pipe -> TCP socket", _pipe_to_socket)
    yield _leg("splice.socket_to_pipe", "TCP socket -> pipe", _socket_to_pipe)
    yield _leg("splice.pipe_to_file", "pipe -> file", _pipe_to_file)
    yield _flags()


def splice_all(src: int, dst: int, count: int, **offsets) -> int:
    """splice until ``count`` bytes moved or the source ends; offsets apply to
    whichever side is a file and advance as we go."""
    moved = 0
    while moved < count:
        kw = {k: v + moved for k, v in offsets.items()}
        n = os.splice(src, dst, count - moved, **kw)
        if n == 0:
            break
        moved += n
    return moved


def _leg(fid: str, what: str, check: Callable[[Resources], bytes]) -> Finding:
    with Resources() as res:
        try:
            got = check(res)
        except OSError as exc:
            return Finding(fid, Status.UNSUPPORTED, False, f"splice {what} failed: {errname(exc)} ({exc.strerror})")
    if got != expected():
        return Finding(fid, Status.ERROR, False, f"splice {what} delivered {len(got)} bytes, not the {SIZE} sent "
                       "(or they differ)")
    return Finding(fid, Status.OK, True, f"splice {what} moved {SIZE} bytes intact")


def _file_to_pipe(res: Resources) -> bytes:
    src, _ = res.tmpfile(SIZE, fill=PATTERN)
    r, w = res.pipe(4 * SIZE)
    splice_all(src, w, SIZE, offset_src=0)
    return os.read(r, 4 * SIZE)


def _pipe_to_socket(res: Resources) -> bytes:
    r, w = res.pipe(4 * SIZE)
    os.write(w, expected())
    client, server = res.tcp_pair()
    splice_all(r, client.fileno(), SIZE)
    return recv_exactly(server, SIZE)


def _socket_to_pipe(res: Resources) -> bytes:
    client, server = res.tcp_pair()
    client.sendall(expected())
    r, w = res.pipe(4 * SIZE)
    splice_all(server.fileno(), w, SIZE)
    return os.read(r, 4 * SIZE)


def _pipe_to_file(res: Resources) -> bytes:
    r, w = res.pipe(4 * SIZE)
    os.write(w, expected())
    dst, _ = res.tmpfile()
    splice_all(r, dst, SIZE, offset_dst=0)
    return os.pread(dst, 4 * SIZE, 0)


def _flags() -> Finding:
    accepted: dict[str, bool] = {}
    notes = []
    with Resources() as res:
        src, _ = res.tmpfile(4096)
        for name, flag in FLAGS.items():
            r, w = res.pipe()
            try:
                os.splice(src, w, 4096, offset_src=0, flags=flag)
                accepted[name] = True
            except OSError as exc:
                accepted[name] = False
                notes.append(f"{name}: {errname(exc)}")
    ok = all(accepted.values())
    detail = ("file -> pipe splice accepted " + ", ".join(FLAGS) + " (SPLICE_F_MOVE is a no-op since 2.6.21)"
              if ok else "refused: " + "; ".join(notes))
    return Finding("splice.flags", Status.OK if ok else Status.DEGRADED, accepted, detail)
