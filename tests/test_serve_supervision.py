"""The supervisor as a process among processes: signals (SIGKILL, SIGHUP,
SIGUSR1, SIGTERM with a lame-duck delay), stuck workers, the metrics process
(/metrics, /healthz, /readyz), and the write generation shared by workers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from serverutil import Server, connect, curl, get, owner, read_response, server_inode, sockets_of, wait_for


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]



def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except OSError:
        return False


def replaced(srv: Server, old: list[int], count: int = 2) -> list[int] | None:
    """The workers, once there are ``count`` and none of ``old`` is among them."""
    now = srv.worker_pids(0)
    return now if len(now) == count and not set(now) & set(old) else None


def status_of(port: int, path: str) -> int:
    out = curl("-o", "/dev/null", "-w", "%{http_code}", f"http://127.0.0.1:{port}{path}", timeout=5)
    return int(out.stdout or 0)


@pytest.fixture
def root(tmp_path):
    www = tmp_path / "www"
    www.mkdir()
    (www / "f.txt").write_bytes(b"hello\n")
    return www


# -- signals -------------------------------------------------------------------------


def test_sigkill_of_the_supervisor_leaves_no_worker_and_frees_the_port(root):
    srv = Server(root, "--workers", "2").start()
    try:
        port = srv.port
        workers = srv.worker_pids(2)
        assert len(workers) == 2
        srv.proc.kill()
        srv.proc.wait(10)
        wait_for(lambda: not any(alive(p) for p in workers), what="workers to exit")
        with Server(root, "--port", str(port)) as again:
            assert again.port == port
            assert get(port, "/f.txt")[2] == b"hello\n"
            assert again.stop() == 0
    finally:
        srv.kill()


@pytest.mark.parametrize("sig", [signal.SIGQUIT, signal.SIGUSR2, signal.SIGALRM])
def test_other_fatal_signals_stop_the_workers(root, sig):
    with Server(root, "--workers", "2") as srv:
        workers = srv.worker_pids(2)
        srv.proc.send_signal(sig)
        assert srv.proc.wait(20) == 0
        assert not any(alive(p) for p in workers)


def test_sighup_reloads_the_token_file_and_keeps_serving(root, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("old-secret\n")
    with Server(root, "--allow-write", "--token-file", str(token_file), "--workers", "2") as srv:
        def put(token: str) -> int:
            out = curl("-o", "/dev/null", "-w", "%{http_code}", "-T", "-", "-H", f"Authorization: Bearer {token}",
                       f"{srv.url}/up.txt")
            return int(out.stdout)

        assert put("old-secret") in (201, 204)
        before = srv.worker_pids(2)
        srv.proc.send_signal(signal.SIGHUP)      # nothing changed: same workers, still serving
        assert get(srv.port, "/f.txt", {"Authorization": "Bearer old-secret"})[0] == 200
        token_file.write_text("new-secret\n")
        srv.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: put("new-secret") in (201, 204), what="the new token to be accepted")
        assert put("old-secret") == 401
        now = wait_for(lambda: replaced(srv, before), what="the old workers to be replaced")
        assert len(now) == 2
        assert srv.stop() == 0


def test_a_reload_answers_the_client_that_had_just_connected(root, tmp_path):
    """A SIGHUP that replaces the workers drains the old ones. A connection the old worker had
    accepted before its drain began, whose first request had not arrived yet, is still answered
    (with Connection: close) instead of being reset (a CI run lost such a request); a keep-alive
    connection idle between requests closes at once, and one that never sends a request holds
    the old worker for about ``FIRST_REQUEST_GRACE`` only, not the 30 s drain timeout."""
    token_file = tmp_path / "token"
    token_file.write_text("one\n")
    with Server(root, "--allow-write", "--token-file", str(token_file)) as srv:
        [old] = srv.worker_pids(1)
        kept = connect(srv.port)
        kept.sendall(b"GET /f.txt HTTP/1.1\r\nHost: t\r\n\r\n")
        assert read_response(kept)[0] == 200                        # now idle between requests
        fresh, silent = connect(srv.port), connect(srv.port)
        wait_for(lambda: owner(fresh, [old]) and owner(silent, [old]), what="the old worker to accept both")
        listeners = sockets_of(old) - {server_inode(c) for c in (kept, fresh, silent)}
        token_file.write_text("two\n")
        srv.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: not sockets_of(old) & listeners, what="the old worker to close its listener (its drain)")
        assert kept.recv(10) == b""                                  # idle keep-alive: closed at once
        fresh.sendall(b"GET /f.txt HTTP/1.1\r\nHost: t\r\n\r\n")
        status, headers, body, _ = read_response(fresh)
        assert (status, headers.get("connection"), body) == (200, "close", b"hello\n")
        assert fresh.recv(10) == b""
        started = time.monotonic()
        wait_for(lambda: not alive(old), timeout=15, what="the old worker to end its drain")
        assert time.monotonic() - started < 10                        # the grace, not the drain timeout
        silent.settimeout(5)
        assert silent.recv(10) == b""
        for c in (kept, fresh, silent):
            c.close()
        assert srv.stop() == 0


def test_a_drain_grace_is_not_extended_by_a_dribbled_first_request(root, tmp_path):
    """The grace a draining worker gives a connection with no request yet bounds its whole first
    head: one byte sent within it must not restart the head clock (``--header-timeout``, 10 s)
    and let a client that dribbles the rest hold the old worker ten times longer."""
    token_file = tmp_path / "token"
    token_file.write_text("one\n")
    with Server(root, "--allow-write", "--token-file", str(token_file)) as srv:
        [old] = srv.worker_pids(1)
        slow = connect(srv.port)
        wait_for(lambda: owner(slow, [old]), what="the old worker to accept it")
        listeners = sockets_of(old) - {server_inode(slow)}
        token_file.write_text("two\n")
        srv.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: not sockets_of(old) & listeners, what="the old worker to close its listener (its drain)")
        started = time.monotonic()
        slow.sendall(b"G")                                           # within the grace
        for byte in b"ET /f.txt HTTP/1.1\r\nHost: t\r\n":         # then one byte a quarter second
            if not alive(old):
                break
            try:
                slow.sendall(bytes([byte]))
            except OSError:
                break
            time.sleep(0.25)
        wait_for(lambda: not alive(old), timeout=15, what="the old worker to end its drain")
        assert time.monotonic() - started < 4                        # the grace, not the head timeout
        slow.close()
        assert srv.stop() == 0


def _line_with(proc: subprocess.Popen, text: str, timeout: float = 15.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if text in line:
            return line
        assert line, f"stderr ended before {text!r}"
    raise AssertionError(f"no line with {text!r}")


def test_sighup_logs_what_was_reloaded(root, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("one\n")
    proc = subprocess.Popen([sys.executable, "-m", "zcopy", "serve", str(root), "--port", "0", "--allow-write",
                             "--token-file", str(token_file)], stderr=subprocess.PIPE, text=True)
    try:
        _line_with(proc, "http://127.0.0.1:")
        proc.send_signal(signal.SIGHUP)
        assert "unchanged" in _line_with(proc, "SIGHUP: --token-file:")
        token_file.write_text("two\n")
        proc.send_signal(signal.SIGHUP)
        line = _line_with(proc, "SIGHUP: --token-file:")
        assert "reloaded" in line and "two" not in line   # never the secret
        assert "replacing 1 worker" in _line_with(proc, "SIGHUP:")
        token_file.write_text("")
        proc.send_signal(signal.SIGHUP)
        line = _line_with(proc, "SIGHUP: --token-file:")
        assert "not reloaded" in line and "keeping the old one" in line
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()


def test_sigusr1_reopens_the_access_log_after_a_rename(root, tmp_path):
    log = tmp_path / "access.log"
    with Server(root, "--access-log", str(log), "--workers", "2") as srv:
        assert get(srv.port, "/f.txt")[0] == 200
        wait_for(lambda: log.exists() and b"GET /f.txt" in log.read_bytes(), what="the first line")
        rotated = tmp_path / "access.log.1"
        log.rename(rotated)                       # what logrotate does, then it signals
        srv.proc.send_signal(signal.SIGUSR1)
        wait_for(lambda: log.exists(), what="a new log file")   # every worker reopens at its next tick

        def logged() -> bool:
            get(srv.port, "/f.txt?after")
            return log.exists() and b"GET /f.txt?after" in log.read_bytes()
        wait_for(logged, what="lines in the new file")
        assert b"GET /f.txt HTTP" in rotated.read_bytes()      # the old lines stay where they were
        assert get(srv.port, "/f.txt")[0] == 200
        assert srv.stop() == 0


def other_thread(pid: int) -> int:
    """A thread of ``pid`` other than its main thread (the listing's executor threads)."""
    return wait_for(lambda: next((int(t) for t in os.listdir(f"/proc/{pid}/task") if int(t) != pid), None),
                    what="a second thread in the worker")


def test_signals_delivered_on_a_workers_other_thread_are_acted_on(root, tmp_path):
    """kill(2) of a thread id makes the kernel deliver the signal on that thread. The
    interpreter then runs the Python handler on the main thread only at a bytecode
    boundary, which the compiled loop may not reach before it has read the wakeup
    pipe; the loop acts on the signal number the pipe carries (it once lost the
    signal, and SIGTERM never stopped the worker)."""
    log = tmp_path / "access.log"
    with Server(root, "--access-log", str(log), "--workers", "1") as srv:
        (worker,) = srv.worker_pids(1)
        assert get(srv.port, "/")[0] == 200          # a listing: executor threads start
        thread = other_thread(worker)
        wait_for(lambda: log.exists() and b"GET / " in log.read_bytes(), what="the first line")
        log.rename(tmp_path / "access.log.1")
        os.kill(thread, signal.SIGUSR1)
        wait_for(lambda: log.exists(), what="the log reopened")
        os.kill(thread, signal.SIGTERM)
        wait_for(lambda: not alive(worker), timeout=10, what="the worker to drain and exit")
        assert get(srv.port, "/f.txt")[2] == b"hello\n"   # its replacement serves
        assert srv.stop() == 0


def test_a_stopped_worker_is_replaced(root):
    with Server(root, "--workers", "2", "--worker-timeout", "3") as srv:
        workers = srv.worker_pids(2)
        os.kill(workers[0], signal.SIGSTOP)
        try:
            wait_for(lambda: not alive(workers[0]), what="the stuck worker to be killed")
        finally:
            if alive(workers[0]):
                os.kill(workers[0], signal.SIGCONT)
        now = wait_for(lambda: replaced(srv, workers[:1]), what="a replacement")
        assert workers[1] in now
        for _ in range(20):
            assert get(srv.port, "/f.txt")[2] == b"hello\n"
        assert srv.stop() == 0


def test_stopping_the_whole_server_does_not_replace_its_workers(root):
    """Ctrl-Z stops the supervisor with its workers: after SIGCONT their old
    beats are not taken for stuck loops."""
    with Server(root, "--workers", "2", "--worker-timeout", "2") as srv:
        workers = srv.worker_pids(2)
        group = [srv.proc.pid, *workers]
        for pid in group:
            os.kill(pid, signal.SIGSTOP)
        time.sleep(3.5)              # the condition itself: stopped for longer than --worker-timeout
        for pid in reversed(group):
            os.kill(pid, signal.SIGCONT)
        deadline = time.monotonic() + 3  # a few of the supervisor's checks (every 0.5 s)
        while time.monotonic() < deadline:
            assert sorted(srv.worker_pids(2)) == sorted(workers)
            time.sleep(0.1)
        assert get(srv.port, "/f.txt")[2] == b"hello\n"
        assert srv.stop() == 0


# -- the metrics process ---------------------------------------------------------------


def test_idle_connections_to_the_metrics_port_do_not_block_a_scrape(root):
    mport = free_port()
    with Server(root, "--metrics", f"127.0.0.1:{mport}") as srv:
        wait_for(lambda: status_of(mport, "/metrics") == 200, what="a first snapshot")
        idle = [socket.create_connection(("127.0.0.1", mport)) for _ in range(3)]
        half = socket.create_connection(("127.0.0.1", mport))
        half.sendall(b"GET /metrics HTTP/1.1\r\nHost")
        try:
            started = time.monotonic()
            out = curl(f"http://127.0.0.1:{mport}/metrics", timeout=3)
            assert out.returncode == 0 and b"zcopy_requests_total" in out.stdout
            assert time.monotonic() - started < 3
            # the half request still gets its answer once it is complete
            half.sendall(b": t\r\n\r\n")
            half.settimeout(5)
            assert read_response(half)[0] == 200
        finally:
            for s in idle + [half]:
                s.close()
        assert srv.stop() == 0


def test_healthz_and_readyz_with_a_drain_delay(root):
    mport = free_port()
    with Server(root, "--metrics", f"127.0.0.1:{mport}", "--drain-delay", "30") as srv:
        assert status_of(mport, "/healthz") == 200
        assert status_of(mport, "/readyz") == 200
        keep = connect(srv.port)
        srv.proc.send_signal(signal.SIGTERM)
        wait_for(lambda: status_of(mport, "/readyz") == 503, what="/readyz to turn 503")
        assert status_of(mport, "/healthz") == 200
        # the lame duck still accepts new connections and answers them, and open ones
        assert get(srv.port, "/f.txt")[0] == 200
        keep.sendall(b"GET /f.txt HTTP/1.1\r\nHost: t\r\n\r\n")
        assert read_response(keep)[0] == 200
        keep.close()
        assert srv.proc.poll() is None
        srv.proc.send_signal(signal.SIGTERM)     # a second signal ends the wait at once
        assert srv.proc.wait(10) == 1


def test_the_drain_proceeds_after_the_delay(root):
    mport = free_port()
    with Server(root, "--metrics", f"127.0.0.1:{mport}", "--drain-delay", "1") as srv:
        assert status_of(mport, "/readyz") == 200
        started = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        wait_for(lambda: status_of(mport, "/readyz") == 503, what="/readyz to turn 503")
        assert srv.proc.wait(20) == 0
        assert time.monotonic() - started >= 1
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", srv.port)) != 0


@pytest.mark.parametrize("flag,value", [("--drain-delay", "-1"), ("--drain-delay", "nan"), ("--drain-delay", "inf"),
                                        ("--drain-delay", "soon"), ("--worker-timeout", "1"),
                                        ("--worker-timeout", "inf")])
def test_a_bad_delay_or_timeout_is_a_usage_error(tmp_path, flag, value):
    out = subprocess.run([sys.executable, "-m", "zcopy", "serve", str(tmp_path), f"{flag}={value}"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert flag in out.stderr and len(out.stderr.strip().splitlines()) <= 2, out.stderr


# -- the write generation --------------------------------------------------------------


def _one_connection_per_worker(port: int, workers: list[int]) -> dict[int, socket.socket]:
    """Keep-alive connections, one answered by each worker (SO_REUSEPORT spreads
    new connections by hash; we connect until each worker holds one)."""
    held: dict[int, socket.socket] = {}
    spare = []
    for _ in range(200):
        c = connect(port)
        c.sendall(b"GET /f.txt HTTP/1.1\r\nHost: t\r\n\r\n")
        assert read_response(c)[0] == 200          # accepted: the worker holds its fd now
        pid = owner(c, workers)
        if pid is not None and pid not in held:
            held[pid] = c
        else:
            spare.append(c)
        if len(held) == len(workers):
            break
    for c in spare:
        c.close()
    assert len(held) == len(workers), "SO_REUSEPORT never gave a connection to every worker"
    return held


def _ask(c: socket.socket, method: str, path: str, extra: str = "", body: bytes = b"") -> tuple[int, bytes]:
    c.sendall(f"{method} {path} HTTP/1.1\r\nHost: t\r\n{extra}\r\n".encode() + body)
    status, _, body, _ = read_response(c, head_only=method == "HEAD")
    return status, body


def test_a_move_on_one_worker_is_seen_by_the_next_request_on_another(root):
    # The moved folder is neither the file's folder nor its parent, and the
    # reader has nothing cached in the folder that holds it: no folder it
    # watches reports the move (only RESOLVE_TTL would, up to a second later).
    deep = root / "x" / "a" / "b"
    deep.mkdir(parents=True)
    (deep / "f.txt").write_bytes(b"old place\n")
    with Server(root, "--workers", "2", "--allow-write") as srv:
        workers = srv.worker_pids(2)
        conns = _one_connection_per_worker(srv.port, workers)
        writer, reader = (conns[p] for p in workers)
        try:
            for round in range(6):
                src, dst = ("a", "c") if round % 2 == 0 else ("c", "a")
                assert _ask(reader, "GET", f"/x/{src}/b/f.txt") == (200, b"old place\n")   # cached there now
                status, _ = _ask(writer, "MOVE", f"/x/{src}", f"Destination: /x/{dst}\r\n")
                assert status in (201, 204)
                assert _ask(reader, "GET", f"/x/{src}/b/f.txt")[0] == 404
                assert _ask(reader, "GET", f"/x/{dst}/b/f.txt") == (200, b"old place\n")
        finally:
            for c in conns.values():
                c.close()
        assert srv.stop() == 0


def test_a_put_and_delete_on_one_worker_are_seen_on_another(root):
    (root / "d").mkdir()
    (root / "d" / "g.txt").write_bytes(b"first\n")
    with Server(root, "--workers", "2", "--allow-write", "--make-parents") as srv:
        workers = srv.worker_pids(2)
        conns = _one_connection_per_worker(srv.port, workers)
        writer, reader = (conns[p] for p in workers)
        try:
            assert _ask(reader, "GET", "/d/g.txt") == (200, b"first\n")
            assert _ask(writer, "DELETE", "/d?recursive=1")[0] == 204
            assert _ask(reader, "GET", "/d/g.txt")[0] == 404
            assert _ask(writer, "PUT", "/d/g.txt", "Content-Length: 7\r\n", b"second\n")[0] == 201
            assert _ask(reader, "GET", "/d/g.txt") == (200, b"second\n")
        finally:
            for c in conns.values():
                c.close()
        assert srv.stop() == 0
