"""Request bodies are written into their files on pool threads, never on the worker's loop thread
(zcopy/server/spool.py; docs/serve.md, "Off the loop").

Under strace of a real worker (``-ff``: one log a thread, the loop's is the worker's pid; ``-y``:
each fd with what it is), PUTs with each upload engine, fixed-length and chunked, and a tus append:
the loop thread makes no pwrite/pwritev/write/splice/fallocate into a file under the served
folder, and some other thread of the worker does. Then the lifetime cases: a client cut while a
write is in flight, and a worker that keeps answering while a write is slow.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import threading
import time

import pytest

from resumableutil import exchange
from serverutil import Server, connect, file_fds, read_response, request, wait_for

MiB = 1 << 20
TUS = "Tus-Resumable: 1.0.0\r\n"
#: A traced call that puts bytes into an fd; with -y the destination fd is printed as N<what>.
WRITES = "pwrite64,pwritev,pwritev2,write,writev,splice,fallocate"
_CALL = re.compile(r"^(\w+)\((.*)$")


def _dest(name: str, args: str) -> str:
    """What the call writes into (strace -y's <...> of its destination fd)."""
    fds = re.findall(r"\d+<([^>]*)>", args)
    if name == "splice":            # splice(fd_in, off_in, fd_out, off_out, ...)
        return fds[1] if len(fds) > 1 else ""
    return fds[0] if fds else ""


def writes_into(log: str, root: str) -> list[str]:
    """The calls of one thread's strace log that wrote into a file below ``root``."""
    out = []
    for line in log.splitlines():
        m = _CALL.match(line)
        if m is None or m.group(1) not in WRITES.split(","):
            continue
        if _dest(m.group(1), m.group(2)).startswith(root):
            out.append(line)
    return out


def put(port: int, path: str, body: bytes, chunked: bool = False) -> int:
    with connect(port, timeout=30) as c:
        if chunked:
            head = f"PUT {path} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
            piece = 100_000
            data = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + piece]), body[i:i + piece])
                            for i in range(0, len(body), piece)) + b"0\r\n\r\n"
            c.sendall(head + data)
        else:
            c.sendall(f"PUT {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        return read_response(c)[0]


def tus_upload(port: int, body: bytes) -> None:
    (status, headers, _), = exchange(port, f"POST /up/ HTTP/1.1\r\nHost: t\r\n{TUS}Upload-Length: {len(body)}\r\n"
                                           "Upload-Metadata: filename dHVzLmJpbg==\r\nContent-Length: 0\r\n")
    assert status == 201, headers
    loc = headers["location"]
    half = len(body) // 2
    for offset, part in ((0, body[:half]), (half, body[half:])):
        status = exchange(port, f"PATCH {loc} HTTP/1.1\r\nHost: t\r\n{TUS}Upload-Offset: {offset}\r\n"
                                f"Content-Type: application/offset+octet-stream\r\n"
                                f"Content-Length: {len(part)}\r\n", part)[-1][0]
        assert status == 204


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
@pytest.mark.parametrize("engine", ["splice", "recv"])
def test_the_loop_thread_writes_no_body_into_a_file(tmp_path, engine):
    root = tmp_path / "root"
    (root / "up").mkdir(parents=True)
    state = tmp_path / "state"
    log = tmp_path / "strace.log"
    body = os.urandom(MiB) * 8 + os.urandom(12345)
    with Server(root, "--workers", "1", "--allow-write", "--state-dir", str(state), "--no-fsync",
                "--upload-engine", engine) as s:
        worker = s.worker_pids()[0]
        assert put(s.port, "/up/warm.bin", b"x") == 201         # the executor's first thread exists
        tracer = subprocess.Popen(["strace", "-ff", "-y", "-p", str(worker), "-o", str(log), "-e", f"trace={WRITES}"],
                                  stderr=subprocess.PIPE, text=True)
        try:
            assert "attached" in tracer.stderr.readline()
            assert put(s.port, "/up/fixed.bin", body) == 201
            assert put(s.port, "/up/chunked.bin", body, chunked=True) == 201
            tus_upload(s.port, body)
        finally:
            tracer.terminate()
            tracer.wait(timeout=10)
        for name in ("fixed.bin", "chunked.bin", "tus.bin"):
            assert (root / "up" / name).read_bytes() == body, name
    logs = {int(p.name.rsplit(".", 1)[1]): p.read_text() for p in tmp_path.glob("strace.log.*")}
    assert worker in logs
    loop_writes = writes_into(logs.pop(worker), str(root))
    assert loop_writes == [], "\n".join(loop_writes[:20])
    thread_writes = [line for text in logs.values() for line in writes_into(text, str(root))]
    kind = "splice" if engine == "splice" else "pwrite64"
    assert any(line.startswith(kind + "(") for line in thread_writes), "\n".join(thread_writes[:20])
    assert any(line.startswith("pwrite64(") for line in thread_writes)     # the chunked body's pieces


def _temp_files(root) -> list[str]:
    """Names a cut upload could leave in the served folder (O_TMPFILE leaves none by design)."""
    return sorted(p.name for p in root.rglob("*") if p.is_file() and p.name != "keep.txt")


def _open_temp_files(pid: int, root) -> list[str]:
    """The worker's open fds of unnamed (O_TMPFILE) files below ``root``: uploads under way."""
    return [t for t in file_fds(pid) if t.startswith(str(root)) and t.endswith("(deleted)")]


def test_a_client_cut_while_writes_are_in_flight_leaves_nothing_and_the_server_serves_on(tmp_path):
    """Many uploads cut at once mid-body (RST: SO_LINGER 0), each while the worker's threads
    write its bytes: no file is left, the pipes and buffers came back (the worker still serves
    uploads and downloads), and the worker is the same process."""
    root = tmp_path / "root"
    root.mkdir()
    (root / "keep.txt").write_bytes(b"kept\n")
    with Server(root, "--workers", "1", "--allow-write", "--upload-engine", "splice") as s:
        worker = s.worker_pids()[0]
        chunk = os.urandom(MiB)
        for round_ in range(3):
            socks = []
            for i in range(8):
                c = connect(s.port, timeout=30)
                c.sendall(f"PUT /cut{i}.bin HTTP/1.1\r\nHost: t\r\nContent-Length: {64 * MiB}\r\n\r\n".encode())
                socks.append(c)
            for _ in range(6):
                for c in socks:
                    c.sendall(chunk)
            for c in socks:
                c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                c.close()
        # every temp file's fd closed (an O_TMPFILE is unnamed: an fd left open would be the leak)
        wait_for(lambda: _open_temp_files(worker, root) == [], what="the cut uploads' temp files closed")
        assert _temp_files(root) == []
        body = os.urandom(3 * MiB)
        assert put(s.port, "/after.bin", body) == 201
        assert (root / "after.bin").read_bytes() == body
        assert request(s.port, b"GET /keep.txt HTTP/1.1\r\nHost: t\r\n\r\n")[0] == 200
        assert s.worker_pids() == [worker]
        fds = len(os.listdir(f"/proc/{worker}/fd"))
    # (the fds: no pipe per cut upload kept; the pool keeps idle ones, at most its max_idle)
    assert fds < 200


@contextlib.contextmanager
def frozen_ext4(tmp_path):
    """A small ext4 mounted through a loop device; yields (mount point, freeze(), thaw())."""
    img, mnt = tmp_path / "img", tmp_path / "mnt"
    mnt.mkdir()
    with open(img, "wb") as f:
        f.truncate(96 * MiB)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(img)], check=True)
    done = subprocess.run(["mount", "-o", "loop", str(img), str(mnt)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount here: {done.stderr.strip()}")
    frozen = []

    def freeze():
        subprocess.run(["fsfreeze", "-f", str(mnt)], check=True)
        frozen.append(True)

    def thaw():
        if frozen:
            subprocess.run(["fsfreeze", "-u", str(mnt)], check=True)
            frozen.clear()
    try:
        yield mnt, freeze, thaw
    finally:
        thaw()
        subprocess.run(["umount", str(mnt)], check=True)


@pytest.mark.skipif(os.geteuid() != 0 or not all(shutil.which(t) for t in ("mkfs.ext4", "fsfreeze", "mount")),
                    reason="needs root, mkfs.ext4 and fsfreeze")
@pytest.mark.parametrize("engine", ["splice", "recv"])
def test_the_loop_answers_while_an_upload_write_blocks_and_the_disk_wait_is_not_the_clients(tmp_path, engine):
    """A real blocked write: the upload's filesystem frozen (FIFREEZE: every write into it waits
    until the thaw) while the body arrives. The pool thread's write waits, the connection stops
    reading (backpressure), and the loop answers GETs meanwhile; the freeze lasts longer than
    ``--send-timeout``, and the upload is still taken whole after the thaw (waiting for the
    server's own disk is not the client being slow)."""
    with frozen_ext4(tmp_path) as (root, freeze, thaw):
        (root / "small.txt").write_bytes(b"hello\n")
        # More than the kernel can hold for it while the disk is frozen: the server's receive buffer
        # (tcp_rmem grows to 32 MiB here), the client's send buffer and the spool's 4 MiB of slots.
        body = os.urandom(MiB) * 64
        with Server(root, "--workers", "1", "--allow-write", "--no-fsync", "--send-timeout", "1",
                    "--upload-engine", engine) as s:
            worker = s.worker_pids()[0]
            assert request(s.port, b"GET /small.txt HTTP/1.1\r\nHost: t\r\n\r\n")[2] == b"hello\n"
            c = connect(s.port, timeout=30)
            try:
                c.sendall(f"PUT /big.bin HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                          + body[:MiB])
                wait_for(lambda: _open_temp_files(worker, root), what="the upload's temp file")
                freeze()
                sender = threading.Thread(target=c.sendall, args=(body[MiB:],), daemon=True)
                sender.start()
                slowest = 0.0
                until = time.monotonic() + 2.5
                while time.monotonic() < until:
                    t0 = time.monotonic()
                    status, _, got = request(s.port, b"GET /small.txt HTTP/1.1\r\nHost: t\r\n\r\n")
                    slowest = max(slowest, time.monotonic() - t0)
                    assert (status, got) == (200, b"hello\n")
                    time.sleep(0.1)
                assert sender.is_alive()            # held back: the server stopped reading the body
            finally:
                thaw()          # (before the server stops: a worker in a frozen write cannot end)
            sender.join(30)
            status = read_response(c)[0]
            c.close()
            assert status == 201
            assert (root / "big.bin").read_bytes() == body
            assert s.worker_pids() == [worker]
    assert slowest < 0.5


def _blocked_threads(pid: int) -> int:
    """Threads of ``pid`` asleep in the kernel uninterruptibly (state D: a write into a frozen filesystem)."""
    count = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                count += f.read().rsplit(")", 1)[1].split()[0] == "D"
    return count


@pytest.mark.skipif(os.geteuid() != 0 or not all(shutil.which(t) for t in ("mkfs.ext4", "fsfreeze", "mount")),
                    reason="needs root, mkfs.ext4 and fsfreeze")
def test_uploads_stuck_on_a_frozen_disk_hold_only_the_body_writers_not_the_listings(tmp_path):
    """Ten uploads whose writes all wait on a frozen filesystem take every thread that writes bodies
    (four), and no other: a folder listing, built on the worker's executor, is still answered at
    once (when body writes shared that executor, its eight threads all waited and the listing's
    client was closed at the send timeout with no reply)."""
    with frozen_ext4(tmp_path) as (root, freeze, thaw):
        (root / "d").mkdir()
        (root / "d" / "a.txt").write_bytes(b"a\n")
        body = os.urandom(MiB) * 6      # (ten of them fit the 96 MiB filesystem)
        with Server(root, "--workers", "1", "--allow-write", "--no-fsync", "--send-timeout", "1",
                    "--upload-engine", "splice") as s:
            worker = s.worker_pids()[0]
            clients = [connect(s.port, timeout=30) for _ in range(10)]
            senders = []
            try:
                for i, c in enumerate(clients):
                    c.sendall(f"PUT /up{i}.bin HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                              + body[:100_000])
                wait_for(lambda: len(_open_temp_files(worker, root)) == 10, what="ten uploads' temp files")
                freeze()
                senders = [threading.Thread(target=c.sendall, args=(body[100_000:],), daemon=True) for c in clients]
                for t in senders:
                    t.start()
                wait_for(lambda: _blocked_threads(worker) >= 4, what="the body writers blocked in the frozen disk")
                t0 = time.monotonic()
                status, _, page = request(s.port, b"GET /d/ HTTP/1.1\r\nHost: t\r\n\r\n")
                took = time.monotonic() - t0
                assert status == 200 and b"a.txt" in page
                assert took < 0.5
            finally:
                thaw()
            for t in senders:
                t.join(30)
            assert [read_response(c)[0] for c in clients] == [201] * 10
            for c in clients:
                c.close()
            assert all((root / f"up{i}.bin").read_bytes() == body for i in range(10))
