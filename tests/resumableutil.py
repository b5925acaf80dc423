"""Raw-socket helpers for the resumable-upload tests: exact requests, interim responses seen."""

from __future__ import annotations

import socket


def send(port: int, head: str, body: bytes = b"", *, sock: socket.socket | None = None):
    s = sock or socket.create_connection(("127.0.0.1", port), timeout=20)
    s.sendall(head.encode("latin-1") + b"\r\n" + body)
    return s


def responses(sock: socket.socket) -> list[tuple[int, dict, bytes]]:
    """Read interim (1xx) responses and the final one: [(status, headers, body), ...]."""
    out = []
    buf = b""
    while True:
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed before a response: {buf!r}")
            buf += chunk
        head, _, buf = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if 100 <= status < 200:
            out.append((status, headers, b""))
            continue
        length = int(headers.get("content-length", "0"))
        while len(buf) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            buf += chunk
        out.append((status, headers, buf[:length]))
        return out


def exchange(port: int, head: str, body: bytes = b""):
    with send(port, head, body) as s:
        return responses(s)



def group_gone(pgid: int) -> bool:
    """No process of this process group is left (a killed node's workers are really gone: a dying
    worker's SO_REUSEPORT listener would still take connections meant for a restarted node)."""
    import os

    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False
