"""Access log in the combined log format, buffered off the hot path.

Lines are appended to a list and written once per loop tick (about once a
second) and at exit, so logging costs one string format per request.
"""

from __future__ import annotations

import os
import re
import sys
import time


class AccessLog:
    def __init__(self, target: str) -> None:
        self.target = target
        self._fd = sys.stdout.fileno() if target == "-" else _open(target)
        self._own = target != "-"
        self._lines: list[str] = []
        self._pending = bytearray()       # encoded, not yet accepted by the fd
        self.dropped = 0                  # lines lost to a reader that stopped reading
        self._stamp_second = -1
        self._stamp = ""

    def log(self, addr, request, status: int, length: int, user: str = "-") -> None:
        """One combined-format line; ``user`` (the signed-in account, or ``-``) is its third field."""
        now = int(time.time())
        if now != self._stamp_second:
            self._stamp_second = now
            self._stamp = time.strftime("%d/%b/%Y:%H:%M:%S %z", time.localtime(now))
        host = addr[0] if isinstance(addr, tuple) else "-"
        if request is None:
            line, referer, agent = "-", "-", "-"
        else:
            target = request.target.decode("latin-1")
            if "=" in target:
                target = _redact(target)
            line = f"{request.method} {target} HTTP/{request.version[0]}.{request.version[1]}"
            referer = request.headers.get("referer", "-")
            if "=" in referer:
                referer = _redact(referer)
            agent = request.headers.get("user-agent", "-")
        if user != "-":
            user = _USER_BAD.sub("?", user) or "-"
        self._lines.append(f'{host} - {user} [{self._stamp}] "{_esc(line)}" {status} {length or "-"} '
                           f'"{_esc(referer)}" "{_esc(agent)}"\n')

    def flush(self) -> None:
        """Write what is buffered. Never blocks the loop for long and never
        raises: a full non-blocking pipe keeps the rest for the next tick (up
        to ``MAX_PENDING`` bytes, then lines are dropped and counted); a closed
        one (``--access-log - | head``) turns the log off with one message."""
        if self._fd < 0:
            self._lines.clear()
            return
        if self._lines:
            self._pending += "".join(self._lines).encode("utf-8", "backslashreplace")
            self._lines.clear()
        while self._pending:
            try:
                n = os.write(self._fd, self._pending)
            except BlockingIOError:
                if len(self._pending) > MAX_PENDING:
                    self.dropped += self._pending.count(b"\n")
                    self._pending.clear()
                return
            except OSError as exc:
                sys.stderr.write(f"zcopy: access log off: {exc.strerror}\n")
                self._pending.clear()
                self._fd = -1
                return
            del self._pending[:n]

    def reopen(self) -> None:
        """SIGUSR1 (logrotate renamed the file): continue in a new file at the
        configured path. Buffered lines are written first, to the old one. If
        the path cannot be opened, the old file stays in use and one line says why."""
        if not self._own:
            return
        self.flush()
        try:
            fd = _open(self.target)
        except OSError as exc:
            sys.stderr.write(f"zcopy: cannot reopen the access log {self.target}: {exc.strerror}\n")
            return
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = fd

    def close(self) -> None:
        self.flush()
        if self._own and self._fd >= 0:
            os.close(self._fd)


#: Query parameters that are credentials (a share link's token, a resumable upload's id: both are
#: capabilities): never written to the log, whose lines keep ``share=-`` / ``upload=-``.
_SECRET_PARAM = re.compile(r"([?&;](?:share|upload)=)[^&#\s]*", re.IGNORECASE)


def _redact(target: str) -> str:
    return _SECRET_PARAM.sub(r"\1-", target)


#: What the unquoted user field cannot hold (a Basic user name is anything but ":").
_USER_BAD = re.compile(r"[^\x21-\x7e]|\"")


def _open(path: str) -> int:
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)


#: Bytes kept for a log reader that is not reading before lines are dropped.
MAX_PENDING = 4 << 20
_UNSAFE = re.compile(r'[\x00-\x1f\x7f"\\]')


def _esc(text: str) -> str:
    """Quotes and control characters would let a client forge log lines."""
    return _UNSAFE.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
