"""No escape from ROOT under a concurrent symlink swap of an ancestor folder (issue 13, item 3).

A local user who can write inside the served folder exchanges a folder with a
symlink to a folder outside ROOT (renameat2 RENAME_EXCHANGE, in a tight loop
in another process) while GET, HEAD, listings, PUT (also with new parents),
DELETE (also recursive), MOVE (as source and as Destination) and MKCOL run
against a real server. The outside folder holds the same names as the inside
one, with other contents: nothing outside may ever be read, listed, created,
moved or deleted. Checked by what the replies carry and by comparing the
outside tree before and after, byte for byte.

The swap runs for ``ZCOPY_ESCAPE_SECONDS`` (3 by default; ``tools/escape_soak.sh SECONDS``
runs it for longer).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import time

import pytest

from serverutil import Server, request

SECONDS = float(os.environ.get("ZCOPY_ESCAPE_SECONDS", "3"))
N = 400                  # names of each kind, inside and outside
INSIDE, SECRET = b"inside", b"SECRET-outside-contents"
MARKER = "outside-marker"

_SWAPPER = r"""
import ctypes, os, signal, sys
libc = ctypes.CDLL(None, use_errno=True)
a, b = (os.fsencode(p) for p in sys.argv[1:3])
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
swaps = 0
print("ready", flush=True)
while not stop:
    if libc.renameat2(-100, a, -100, b, 2) != 0:        # AT_FDCWD, RENAME_EXCHANGE
        sys.exit(f"renameat2: {os.strerror(ctypes.get_errno())}")
    swaps += 1
if swaps % 2:                                             # leave the real folder at its name
    libc.renameat2(-100, a, -100, b, 2)
print(swaps, flush=True)
"""


def _populate(folder, content: bytes, marker: bool) -> None:
    (folder / "d").mkdir(parents=True)
    (folder / "f.txt").write_bytes(content)
    (folder / "d" / "g.txt").write_bytes(content)
    for i in range(N):
        for kind in ("del", "mv"):
            (folder / f"{kind}-{i}").write_bytes(content)
        (folder / f"tree-{i}" / "sub").mkdir(parents=True)
        (folder / f"tree-{i}" / "sub" / "x").write_bytes(content)
    if marker:
        (folder / MARKER).write_bytes(content)
        (folder / "d" / MARKER).write_bytes(content)


def _snapshot(top) -> dict:
    """Every entry below ``top``: type, inode and a hash of a file's bytes."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            digest = None
            if os.path.isfile(path) and not os.path.islink(path):
                with open(path, "rb") as f:
                    digest = hashlib.blake2b(f.read(), digest_size=8).hexdigest()
            out[os.path.relpath(path, top)] = (st.st_mode, st.st_ino, digest)
    return out


def _call(port: int, method: str, path: str, headers: str = "", body: bytes = b""):
    if body or method == "PUT":
        headers += f"Content-Length: {len(body)}\r\n"
    raw = f"{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{headers}\r\n".encode() + body
    return request(port, raw, head_only=method == "HEAD")


@pytest.mark.parametrize("follow", [False, True], ids=["no-links", "follow-symlinks"])
def test_an_ancestor_swapped_for_a_symlink_never_lets_a_request_out(tmp_path, follow):
    root, out = tmp_path / "root", tmp_path / "out"
    _populate(root / "a", INSIDE, marker=False)
    _populate(out, SECRET, marker=True)
    for i in range(N):
        (root / f"src-{i}").write_bytes(INSIDE)
    os.symlink(out, root / "swap")          # absolute: refused even with --follow-symlinks (outside ROOT)
    before = _snapshot(out)
    args = ["--allow-write", "--workers", "1"] + (["--follow-symlinks"] if follow else [])
    problems: list[str] = []
    counts: dict[str, int] = {}
    with Server(root, *args) as server:
        port = server.port
        swapper = subprocess.Popen([sys.executable, "-c", _SWAPPER, str(root / "a"), str(root / "swap")],
                                   stdout=subprocess.PIPE, text=True)
        assert swapper.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + SECONDS
        lock = threading.Lock()

        def note(kind: str, problem: str | None = None) -> None:
            with lock:
                counts[kind] = counts.get(kind, 0) + 1
                if problem:
                    problems.append(problem)

        def client(k: int) -> None:
            i = k
            while time.monotonic() < deadline:     # names repeat after N: gone inside, still there outside
                n = i % N
                status, h, body = _call(port, "GET", "/a/f.txt")
                note("GET", f"GET served the outside file ({status})" if SECRET in body else None)
                if body == INSIDE:
                    note("GET inside")
                status, h, _ = _call(port, "HEAD", "/a/d/g.txt")
                note("HEAD", "HEAD described the outside file"
                     if h.get("content-length") == str(len(SECRET)) else None)
                for listing in ("/a/", "/a/d/"):
                    status, h, body = _call(port, "GET", listing, "Accept: application/json\r\n")
                    note("list", f"listing {listing} showed the outside folder" if MARKER.encode() in body else None)
                if _call(port, "PUT", f"/a/put-{n}", body=INSIDE)[0] == 201:
                    note("PUT inside")
                _call(port, "PUT", f"/a/newdir-{n}/deeper/x", body=INSIDE)
                note("PUT")
                _call(port, "DELETE", f"/a/del-{n}")
                _call(port, "DELETE", f"/a/tree-{n}?recursive=1")
                note("DELETE")
                _call(port, "MOVE", f"/a/mv-{n}", f"Destination: /moved-{n}\r\n")
                _call(port, "MOVE", f"/src-{n}", f"Destination: /a/dst-{n}\r\n")
                note("MOVE")
                _call(port, "MKCOL", f"/a/col-{n}")
                note("MKCOL")
                i += 8

        threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        swapper.terminate()
        swaps = int(swapper.communicate(timeout=10)[0].strip())
    assert not os.path.islink(root / "a")
    after = _snapshot(out)
    changed = sorted(set(before) ^ set(after) | {k for k in before.keys() & after.keys() if before[k] != after[k]})
    assert not problems and not changed, (f"{len(problems)} replies from outside ROOT, e.g. {problems[:3]}; "
                                          f"{len(changed)} changes outside ROOT, e.g. {changed[:10]}")
    assert swaps > 1000, swaps
    assert sum(counts.values()) >= 300, counts
    # The server kept answering from inside while the folder came and went.
    assert counts.get("GET inside", 0) and counts.get("PUT inside", 0), counts
    print(swaps, counts)
