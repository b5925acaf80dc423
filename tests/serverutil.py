"""Start a real `zcopy serve` subprocess for black-box tests, and talk to it
with raw sockets (exact bytes) or curl (a real client).

``Server(root, ..., tls=True)`` serves HTTPS with a certificate made for it (``make_cert``:
``openssl req -x509``, for ``localhost`` and 127.0.0.1); its port is remembered, so ``connect``,
``request``, ``get`` and ``read_response`` speak TLS to it (``TlsClient``: the exact bytes, as
over TCP) and ``curl`` trusts its certificate. Tests written for plain HTTP run over both
transports by parametrising their server fixture (tests/test_serve_http.py)."""

from __future__ import annotations

import contextlib
import os
import re
import select
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time

_ADDR = re.compile(rb"https?://127\.0\.0\.1:(\d+)/")
_PANEL_END = "╰".encode()


#: TLS servers' ports -> the certificate their clients trust
_TLS_PORTS: dict[int, str] = {}


def make_cert(directory, name: str = "localhost", days: int = 2) -> tuple[str, str]:
    """A self-signed P-256 certificate for ``name`` and 127.0.0.1 (cert.pem, key.pem in
    ``directory``), made with ``openssl req -x509``."""
    cert, key = os.path.join(str(directory), "cert.pem"), os.path.join(str(directory), "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-keyout", key, "-out", cert, "-days", str(days), "-subj", f"/CN={name}",
                    "-addext", f"subjectAltName=DNS:{name},IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=30)
    return cert, key


class Server:
    def __init__(self, root, *args: str, env: dict | None = None, own_session: bool = False,
                 tls: bool | tuple[str, str] = False) -> None:
        self.root = str(root)
        self.tls = tls                   # True: a certificate made at start; or (cert, key)
        self.cert_dir: str | None = None
        self.args = args
        self.env = env
        self.own_session = own_session   # its own process group: ``kill_node`` takes it whole
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.stderr = b""

    def start(self, timeout: float = 20.0) -> "Server":
        if self.proc is not None:        # `with Server(...).start()` would start (and leak) a second one
            raise RuntimeError("this Server is already started")
        tls_args: tuple[str, ...] = ()
        if self.tls is True:
            self.cert_dir = tempfile.mkdtemp(prefix="zcopy-cert-")
            self.tls = make_cert(self.cert_dir)
        if self.tls:
            tls_args = ("--tls-cert", self.tls[0], "--tls-key", self.tls[1])
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "zcopy", "serve", self.root, "--port", "0", *tls_args, *self.args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, **(self.env or {})},
            start_new_session=self.own_session)
        deadline = time.monotonic() + timeout
        buf = b""
        while time.monotonic() < deadline:
            r, _, _ = select.select([self.proc.stderr], [], [], 0.2)
            if r:
                chunk = os.read(self.proc.stderr.fileno(), 65536)
                if not chunk:
                    break
                buf += chunk
                m = _ADDR.search(buf)
                if m and _PANEL_END in buf[m.end():]:   # the whole start-up panel
                    self.port = int(m.group(1))
                    self.stderr = buf
                    if self.tls:
                        _TLS_PORTS[self.port] = self.tls[0]
                    self._wait_listening(deadline)
                    return self
        self.kill()
        raise RuntimeError(f"server did not start: {buf.decode(errors='replace')}")

    def _wait_listening(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            time.sleep(0.05)

    def panel(self) -> dict[str, str]:
        """The start-up panel's rows: setting -> value (start the server with a
        wide COLUMNS, or rich cuts long values)."""
        rows = {}
        for line in self.stderr.decode().splitlines():
            cells = [c.strip() for c in line.strip("│ ").split("  ") if c.strip()]
            if len(cells) >= 2 and line.startswith("│ ") and not line.startswith("│  "):
                rows[cells[0]] = cells[1]
        return rows

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        finally:
            self.kill()
        return code

    def kill_node(self) -> None:
        """SIGKILL to the whole node at once, supervisor and workers (needs ``own_session``):
        a machine that dies, not a server that stops."""
        assert self.own_session and self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def kill(self) -> None:
        try:
            self._kill()
        finally:
            _TLS_PORTS.pop(self.port, None)
            if self.cert_dir is not None:
                shutil.rmtree(self.cert_dir, ignore_errors=True)
                self.cert_dir = None

    def _kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            # The supervisor kills its workers when it gets a second signal.
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(0.2)
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(5)
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None:
            for stream in (self.proc.stdout, self.proc.stderr):
                if stream:
                    stream.close()

    def worker_pids(self, at_least: int = 1, timeout: float = 10.0) -> list[int]:
        """The supervisor's children that are workers (not its metrics process),
        waiting until there are ``at_least``."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while True:
            with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as f:
                pids = [int(p) for p in f.read().split() if _comm(int(p)) != "zcopy-metrics"]
            if len(pids) >= at_least or time.monotonic() > deadline:
                return pids
            time.sleep(0.02)

    def __enter__(self) -> "Server":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.kill()


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def wait_for(predicate, timeout: float = 20.0, what: str = "a state"):
    """Poll ``predicate`` until it returns something true (returned), or fail after ``timeout``
    seconds naming ``what`` was waited for."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def server_inode(client: socket.socket) -> int:
    """The inode of the server side of a loopback TCP connection, from /proc/net/tcp."""
    cport = client.getsockname()[1]
    sport = client.getpeername()[1]
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            local, remote = fields[1], fields[2]
            if int(local.split(":")[1], 16) == sport and int(remote.split(":")[1], 16) == cport:
                return int(fields[9])
    raise AssertionError("no server side for this connection")


def sockets_of(pid: int) -> set[int]:
    """The inodes of the sockets ``pid`` holds (its listener and its connections); none once it has ended."""
    inodes = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except FileNotFoundError:
        return inodes
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def owner(client: socket.socket, workers: list[int]) -> int | None:
    inode = server_inode(client)
    for pid in workers:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                    return pid
            except OSError:
                continue
    return None


def connect(port: int, timeout: float = 10.0) -> socket.socket:
    """A connected client socket; a ``TlsClient`` to a TLS server's port."""
    cafile = _TLS_PORTS.get(port)
    if cafile is not None:
        return TlsClient(port, timeout, cafile)
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


class TlsClient:
    """A TLS client with a socket's face (``recv`` with ``MSG_PEEK``, ``sendall``, ``shutdown``),
    over memory BIOs so that ``shutdown(SHUT_WR)`` can send close_notify and keep reading, as a
    TCP half-close does. Verifies the server's certificate against ``cafile``. ``raw``: a TCP
    connection made earlier to do the handshake on (``port`` and ``timeout`` then unused)."""

    def __init__(self, port: int, timeout: float, cafile: str, server_hostname: str = "localhost",
                 alpn: tuple[str, ...] = ("http/1.1",), raw: socket.socket | None = None) -> None:
        ctx = ssl.create_default_context(cafile=cafile)
        ctx.set_alpn_protocols(list(alpn))
        self.raw = raw or socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.incoming, self.outgoing, server_hostname=server_hostname)
        self.plain = bytearray()          # decrypted and not taken yet
        self.eof = False
        try:
            while True:
                try:
                    self.obj.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    self._flush()
                    self._fill()
            self._flush()
        except BaseException:
            self.raw.close()
            raise

    def _flush(self) -> None:
        data = self.outgoing.read()
        if data:
            self.raw.sendall(data)

    def _fill(self) -> None:
        data = self.raw.recv(65536)
        if data:
            self.incoming.write(data)
        else:
            self.incoming.write_eof()

    def _decrypt(self, block: bool) -> None:
        while not self.eof:
            try:
                chunk = self.obj.read(65536)
            except ssl.SSLWantReadError:
                self._flush()
                if not block and not select.select([self.raw], [], [], 0)[0]:
                    return
                self._fill()
                continue
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                self.eof = True
                return
            if not chunk:
                self.eof = True
                return
            self.plain += chunk
            return

    def recv(self, n: int, flags: int = 0) -> bytes:
        if not self.plain:
            self._decrypt(block=True)
        elif flags & socket.MSG_PEEK:
            self._decrypt(block=False)        # the peeker waits for more: take what has come
        data = bytes(self.plain[:n])
        if not flags & socket.MSG_PEEK:
            del self.plain[:n]
        return data

    def recv_into(self, buf, n: int = 0) -> int:
        view = memoryview(buf)
        data = self.recv(n or len(view))
        view[:len(data)] = data
        return len(data)

    def sendall(self, data) -> None:
        self.obj.write(data)
        self._flush()

    def send(self, data) -> int:
        self.sendall(data)
        return len(data)

    def shutdown(self, how: int) -> None:
        if how in (socket.SHUT_WR, socket.SHUT_RDWR):
            try:
                self.obj.unwrap()                 # close_notify into the outgoing BIO
            except ssl.SSLError:
                pass
            self._flush()
        self.raw.shutdown(how)

    def version(self) -> str | None:
        return self.obj.version()

    def selected_alpn_protocol(self) -> str | None:
        return self.obj.selected_alpn_protocol()

    def getpeercert(self):
        return self.obj.getpeercert()

    def __getattr__(self, name):                  # settimeout, setsockopt, fileno, getsockname...
        return getattr(self.raw, name)

    def close(self) -> None:
        self.raw.close()

    def __enter__(self) -> "TlsClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_response(sock: socket.socket, *, head_only: bool = False) -> tuple[int, dict, bytes, bytes]:
    """Read exactly one response: (status, headers lower-cased, body, raw head).

    The head is found with MSG_PEEK and only its own bytes are consumed, so a
    pipelined next response that arrived in the same segment stays in the
    socket for the next call. A head that has come only in part is consumed
    as far as it came (every byte of it is this response's), as a real client
    does, and the next peek waits for more within the socket's timeout. (The
    old loop peeked and slept while a part stayed unconsumed in the socket;
    once in CI it spun so for 280 s at a part that never grew, past every
    socket timeout, and said nothing about why.) The body is framed by
    Content-Length (or read to EOF without one)."""
    got = b""                   # this head's bytes consumed so far
    while True:
        peeked = sock.recv(65536, socket.MSG_PEEK)
        if not peeked:
            raise ConnectionError(f"closed before a full head (got {got[:200]!r})")
        tail = got[-3:]         # the blank line may straddle what was consumed and what came
        end = (tail + peeked).find(b"\r\n\r\n")
        if end >= 0:
            got += _recv_exactly(sock, end + 4 - len(tail))
            break
        if len(got) + len(peeked) >= 65536:
            raise ConnectionError("head larger than 64 KiB")
        got += _recv_exactly(sock, len(peeked))
    head = got[:-4]
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if head_only or status in (204, 304) or 100 <= status < 200:
        return status, headers, b"", head
    if "content-length" in headers:
        return status, headers, _recv_exactly(sock, int(headers["content-length"])), head
    rest = b""
    while True:
        chunk = sock.recv(1 << 20)
        if not chunk:
            return status, headers, rest, head
        rest += chunk


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    parts = []
    while n:
        chunk = sock.recv(min(n, 1 << 20))
        if not chunk:
            raise ConnectionError(f"closed with {n} bytes still expected")
        parts.append(chunk)
        n -= len(chunk)
    return b"".join(parts)


def request(port: int, raw: bytes, *, head_only: bool = False) -> tuple[int, dict, bytes]:
    with connect(port) as s:
        s.sendall(raw)
        status, headers, body, _ = read_response(s, head_only=head_only)
        return status, headers, body


def get(port: int, path: str, headers: dict | None = None, method: str = "GET"):
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    raw = f"{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{extra}\r\n".encode()
    return request(port, raw, head_only=method == "HEAD")


def curl(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    """curl; a URL of a TLS server (``Server(tls=...)``) is verified against its certificate."""
    trust: list[str] = []
    for port, cafile in _TLS_PORTS.items():
        if any(f"https://127.0.0.1:{port}" in a or f"https://localhost:{port}" in a for a in args):
            trust = ["--cacert", cafile]
    return subprocess.run(["curl", "-sS", "--max-time", str(int(timeout)), *trust, *args],
                          capture_output=True, timeout=timeout + 5)


def file_fds(pid: int) -> list[str]:
    """What a process's fds that are not sockets or pipes point to (connections come and go)."""
    found = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:
            continue
        if not target.startswith(("socket:", "pipe:")):
            found.append(target)
    return sorted(found)


def serve_refused(*args: str, env: dict | None = None, timeout: float = 20.0) -> subprocess.CompletedProcess:
    """Run `zcopy serve ARGS` that is expected to refuse to start. One that
    starts anyway is stopped with SIGTERM (its workers go with it: a killed
    supervisor would leave them serving), so a failing test leaks nothing."""
    proc = subprocess.Popen([sys.executable, "-m", "zcopy", "serve", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@contextlib.contextmanager
def worker_with(root, extend, *, quiet: bool = False, **config):
    """A real serve worker (the production loop, sockets and files) in a
    forked child, whose responder's ``respond`` is ``extend(respond)``: a
    fault to inject or a seam to drive. Yields (port, pid); the child is
    killed on exit. ``quiet``: its stderr goes to /dev/null (an expected
    traceback)."""
    from zcopy.server.config import ServeConfig

    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    port = listener.getsockname()[1]
    pid = os.fork()
    if pid == 0:                                     # the child: never returns
        code = 1
        try:
            os.environ["ZCOPY_STATS"] = "off"
            if quiet:
                os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
            from zcopy.server.worker import Worker

            worker = Worker(ServeConfig(root=str(root), prefetch=False, **config), listener)
            worker.responder.respond = extend(worker.responder.respond)
            code = worker.run()
        finally:
            os._exit(code)
    listener.close()
    try:
        yield port, pid
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def python_json(script: str, pythonpath: str, **env) -> dict:
    """What ``script``, run by a fresh ``python -c`` with ``PYTHONPATH=pythonpath`` (and ``env``)
    from ``/``, printed as JSON: for what is decided once per process (which files a module is
    imported from: zcopy.hotpath)."""
    import json

    out = subprocess.run([sys.executable, "-c", script], env={**os.environ, "PYTHONPATH": pythonpath, **env},
                         cwd="/", capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)
