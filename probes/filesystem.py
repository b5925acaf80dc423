"""The filesystem zcopy will serve from (--path): what it is, and whether
sendfile, splice and mmap work from files on it.

statfs(2) gives the filesystem magic (f_type); the table below names the
common ones. The transfer checks use a temp file created in the path's
directory; if the path is read-only, an existing regular file there is read
instead (nothing is ever written to it).
"""

from __future__ import annotations

import mmap
import os
from typing import Iterator

from probes.finding import Finding, Status
from probes.kernel import errname
from probes.resources import Resources
from probes.sendfile import recv_exactly, send_all
from probes.splice import splice_all
from zcopy.fsinfo import IN_MEMORY, MAGIC, fs_type, mounts_below  # noqa: F401  (MAGIC, IN_MEMORY: re-exported)

SIZE = 64 * 1024


def probe(ctx) -> Iterator[Finding]:
    path = os.path.abspath(ctx.path)
    try:
        name, magic = fs_type(path)
        dev = os.stat(path).st_dev
    except OSError as exc:
        yield Finding("filesystem.type", Status.ERROR, {"path": path, "type": None, "magic": None, "dev": None},
                      f"statfs({path}) failed: {errname(exc)} ({exc.strerror})")
        return
    below = mounts_below(path)
    yield Finding("filesystem.type", Status.OK, {"path": path, "type": name, "magic": f"{magic:#x}", "dev": dev,
                                                 "mounts_below": [list(m) for m in below]},
                  f"{path} is on {name} (statfs magic {magic:#x})"
                  + (f"; {len(below)} filesystem(s) mounted below it" if below else ""))
    with Resources() as res:
        src, origin = _source(res, path)
        if src is None:
            for fid in ("filesystem.sendfile", "filesystem.splice", "filesystem.mmap"):
                yield Finding(fid, Status.SKIPPED, None, f"{path} is neither a regular file nor a directory "
                              "where a temp file can be made or a readable file found")
            return
        yield _try(res, "filesystem.sendfile", f"sendfile from {origin} to TCP", src, _sendfile)
        yield _try(res, "filesystem.splice", f"splice from {origin} into a pipe", src, _splice)
        yield _try(res, "filesystem.mmap", f"mmap of {origin}", src, _mmap)


def _source(res: Resources, path: str) -> tuple[int | None, str]:
    """A readable fd with data on ``path``'s filesystem, and how it was found."""
    if os.path.isfile(path):
        return res.open(path), path
    if not os.path.isdir(path):
        return None, ""
    try:
        fd, _ = res.tmpfile(SIZE, dir=path)
        return fd, f"a temp file in {path}"
    except OSError:
        pass
    with os.scandir(path) as entries:
        for entry in entries:
            if entry.is_file() and entry.stat().st_size > 0:
                try:
                    return res.open(entry.path), entry.path
                except OSError:
                    continue
    return None, ""


def _try(res: Resources, fid: str, what: str, src: int, check) -> Finding:
    count = min(SIZE, os.fstat(src).st_size)
    if count == 0:
        return Finding(fid, Status.SKIPPED, None, f"{what}: the file reports st_size 0 (nothing to compare)")
    try:
        moved = check(res, src, count)
    except OSError as exc:
        return Finding(fid, Status.UNSUPPORTED, False, f"{what} failed: {errname(exc)} ({exc.strerror})")
    if moved != os.pread(src, count, 0):
        return Finding(fid, Status.ERROR, False, f"{what} returned bytes that differ from read()")
    return Finding(fid, Status.OK, True, f"{what} moved {count} bytes intact")


def _sendfile(res: Resources, src: int, count: int) -> bytes:
    client, server = res.tcp_pair()
    send_all(client.fileno(), src, count)
    return recv_exactly(server, count)


def _splice(res: Resources, src: int, count: int) -> bytes:
    r, w = res.pipe(4 * SIZE)
    splice_all(src, w, count, offset_src=0)
    return os.read(r, 4 * SIZE)


def _mmap(res: Resources, src: int, count: int) -> bytes:
    with mmap.mmap(src, count, prot=mmap.PROT_READ) as m:
        return bytes(m[:count])
