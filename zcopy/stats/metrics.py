"""``--metrics HOST:PORT``: the Prometheus text on a separate listener.

It runs as one thread of the supervisor, so the supervisor's loop stays
exactly as it was: the thread is started with every signal blocked (signals
stay with the supervisor's ``sigtimedwait``), it only reads the published
snapshot files on each scrape, and forked workers close their inherited copy
of its listening socket at once (``os.register_at_fork``).
"""

from __future__ import annotations

import os
import signal
import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

from zcopy.stats.location import Target, group_dir
from zcopy.stats.prometheus import render
from zcopy.stats.read import read_all

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def parse_hostport(text: str) -> tuple[str, int]:
    """``127.0.0.1:9100`` / ``[::1]:9100`` / ``:9100`` -> (host, port); ValueError otherwise."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


class _Handler(BaseHTTPRequestHandler):
    server_version = "zcopy-metrics"

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        if self.path.split("?")[0] not in ("/metrics", "/"):
            self.send_error(404)
            return
        snap = read_all(self.server.target)
        if snap is None:
            self.send_error(503, "no worker has published yet")
            return
        body = render(snap).encode()
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


class _HTTPServer(HTTPServer):
    def __init__(self, address: tuple[str, int], target: Target) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.target = target
        super().__init__(address, _Handler)


class MetricsServer:
    """Serves the aggregated snapshot of the ``kind`` group of this process."""

    def __init__(self, host: str, port: int, kind: str = "serve") -> None:
        self.httpd = _HTTPServer((host, port), Target(kind, os.getpid(), group_dir(kind, os.getpid())))
        self.address = self.httpd.server_address[:2]
        fd = self.httpd.fileno()
        os.register_at_fork(after_in_child=lambda: _close_quietly(fd))
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.5},
                                       name="zcopy-metrics", daemon=True)

    def start(self) -> "MetricsServer":
        old = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        try:
            self.thread.start()       # the thread inherits the all-blocked mask
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.thread.join(5)
        self.httpd.server_close()


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass
