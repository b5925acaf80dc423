"""An adversarial review of the serve core (issues 13 and 15): each test is
an attack that found a defect, tried against a real server over real sockets
(raw bytes), with real filesystem faults (RLIMIT_NOFILE on the worker)."""

from __future__ import annotations

import os
import resource
import socket
import struct
import subprocess

import pytest

from serverutil import Server, read_response, request
from serverutil import wait_for
from test_serve_supervision import free_port, status_of


@pytest.fixture(scope="module")
def wserver(tmp_path_factory):
    root = tmp_path_factory.mktemp("attack")
    (root / "a.txt").write_bytes(b"alpha")
    (root / "dir").mkdir()
    with Server(root, "--allow-write", "--no-fsync") as s:
        yield s


def _call(port, method: str, target: bytes, headers: bytes = b"", body: bytes = b""):
    return request(port, method.encode() + b" " + target + b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n" +
                   headers + b"\r\n" + body)


@pytest.mark.parametrize("destination", [b"//evil.example/b.txt", b"//evil.example:80/dir/b.txt"])
def test_move_to_a_network_path_reference_on_another_host_is_502(wserver, destination):
    """``Destination: //other-host/path`` (no scheme) names another server as
    surely as ``http://other-host/path`` does; it used to move the file to
    /path on this server."""
    status, _, _ = _call(wserver.port, "MOVE", b"/a.txt", b"Destination: " + destination + b"\r\n")
    assert status == 502
    assert _call(wserver.port, "GET", b"/a.txt")[2] == b"alpha"
    assert sorted(os.listdir(wserver.root)) == ["a.txt", "dir"]


def test_move_to_a_network_path_reference_on_this_host_moves(wserver):
    assert _call(wserver.port, "MOVE", b"/a.txt", b"Destination: //t/dir/a.txt\r\n")[0] == 201
    assert _call(wserver.port, "MOVE", b"/dir/a.txt", b"Destination: //T:80/a.txt\r\n")[0] == 201
    assert _call(wserver.port, "GET", b"/a.txt")[2] == b"alpha"


def _leave_fds(pid: int, spare: int, soft: int, hard: int) -> None:
    """Lower the worker's soft RLIMIT_NOFILE so that ``spare`` fd numbers are
    left free (the first one goes to the test's connection)."""
    used = {int(fd) for fd in os.listdir(f"/proc/{pid}/fd")}
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (min(n for n in range(soft) if n not in used) + spare, hard))


def test_a_write_out_of_file_descriptors_is_503_and_leaves_no_folder(tmp_path):
    """With the worker's RLIMIT_NOFILE nearly reached, a PUT whose folders
    are missing runs out of fds somewhere between its walk and its temp file.
    Wherever that is, the answer is 503 (as a walk that runs out says, not
    500) and no folder it made is left behind: one made by mkdirat and not
    yet opened used to stay (undo_parents did not know it)."""
    (tmp_path / "keep.txt").write_bytes(b"keep")
    with Server(tmp_path, "--allow-write", "--no-fsync", "--make-parents") as s:
        assert _call(s.port, "GET", b"/keep.txt")[2] == b"keep"    # the worker is up, its own fds open
        pid = s.worker_pids()[0]
        soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
        statuses = []
        try:
            for extra in range(1, 9):
                _leave_fds(pid, extra, soft, hard)
                status, _, body = _call(s.port, "PUT", f"/d{extra}/e/f.txt".encode(), b"Content-Length: 2\r\n", b"hi")
                statuses.append(status)
                resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))
                assert status in (201, 503), body
                if status == 503:
                    assert not (tmp_path / f"d{extra}").exists(), f"d{extra} left behind with {extra} fds to spare"
        finally:
            resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))
        assert 503 in statuses and 201 in statuses     # the limit was reached, and then not
        assert _call(s.port, "GET", b"/keep.txt")[2] == b"keep"


def test_the_metrics_port_answers_the_first_of_pipelined_requests(tmp_path):
    """Every metrics answer closes the connection, so only the first request
    of a segment counts. httptools parses all of them in one feed, and the
    second's URL used to be appended to the first's (``/healthz/readyz``:
    404), its method taken for the first's."""
    mport = free_port()
    with Server(tmp_path, "--metrics", f"127.0.0.1:{mport}") as srv:
        wait_for(lambda: status_of(mport, "/healthz") == 200, what="a live worker")
        for second in (b"GET /readyz HTTP/1.1\r\n\r\n", b"POST /x HTTP/1.1\r\nContent-Length: 0\r\n\r\n"):
            status, _, body = request(mport, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n" + second)
            assert (status, body) == (200, b"ok\n")
        status, _, body = request(mport, b"GET /readyz HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\n"
                                         b"Connection: upgrade\r\n\r\n")
        assert (status, body) == (200, b"ready\n")
        assert srv.stop() == 0


def _metrics_pid(srv: Server) -> int:
    with open(f"/proc/{srv.proc.pid}/task/{srv.proc.pid}/children") as f:
        pids = [int(p) for p in f.read().split()]
    return next(p for p in pids if open(f"/proc/{p}/comm").read().strip() == "zcopy-metrics")


def test_the_metrics_process_out_of_fds_backs_off_instead_of_spinning(tmp_path):
    """With RLIMIT_NOFILE reached, accept fails with EMFILE while the
    listener stays readable: the metrics loop called accept again on every
    select, thousands of times a second (a core spent), until a client left.
    Like the workers, it now leaves the listener alone for ACCEPT_BACKOFF,
    and answers once an fd is free again."""
    mport = free_port()
    with Server(tmp_path, "--metrics", f"127.0.0.1:{mport}") as srv:
        wait_for(lambda: status_of(mport, "/healthz") == 200, what="a live worker")
        pid = _metrics_pid(srv)
        soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
        # Below every fd it holds (0-2 are stdio): no number left for accept,
        # whichever of its client sockets close meanwhile.
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (3, hard))
        waiting = socket.create_connection(("127.0.0.1", mport))
        try:
            # three seconds of the process's accept calls (strace detaches on SIGINT;
            # attaching may take a while on a loaded machine): a spin makes thousands
            trace = subprocess.run(["timeout", "-s", "INT", "3", "strace", "-p", str(pid), "-e", "trace=accept4,accept"],
                                   capture_output=True, text=True, timeout=30, check=False)
            refused = trace.stderr.count("EMFILE")
            assert 1 <= refused <= 30, f"{refused} accept calls refused in three seconds"
            resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))
            waiting.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            waiting.settimeout(5)
            assert read_response(waiting)[0] == 200
        finally:
            waiting.close()
            resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))
        assert srv.stop() == 0


def test_a_listing_out_of_file_descriptors_is_503_not_404(tmp_path):
    """A folder that cannot be opened for want of an fd is there: its
    listing used to say 404 Not Found (even for /), which a client or a
    cache takes for an answer about the folder; now 503 with Retry-After,
    as a file read out of fds says."""
    (tmp_path / "d" / "e").mkdir(parents=True)
    with Server(tmp_path) as s:
        assert _call(s.port, "GET", b"/d/e/")[0] == 200       # the worker is up, its own fds open
        pid = s.worker_pids()[0]
        soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
        answers = []
        try:
            for extra in range(1, 6):      # fd numbers left: the connection's, then the walk's, then the listing's
                _leave_fds(pid, extra, soft, hard)
                for path in (b"/", b"/d/e/"):
                    status, headers, _ = _call(s.port, "GET", path)
                    answers.append(status)
                    assert status in (200, 503), (extra, path, status)
                    if status == 503:
                        assert headers["retry-after"] == "1"
                resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))
        finally:
            resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))
        assert 503 in answers and answers[-1] == 200


def _uploads_in(pid: int, folder: str) -> int:
    """The O_TMPFILE inodes (upload bodies under way) a worker holds in ``folder``."""
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith(folder + "/#"):
                count += 1
        except FileNotFoundError:
            pass
    return count


@pytest.mark.parametrize("ending", ["refused", "cut"])
def test_an_upload_that_ends_badly_leaves_the_folder_another_upload_is_writing_into(tmp_path, ending):
    """PUT /new/a.txt makes /new; PUT /new/b.txt starts in it; then a's body
    goes over --max-upload (or its client goes away). a's undo removed /new,
    which looked empty (b's body is an unnamed O_TMPFILE), and b, a good
    upload, ended in 409. A parallel copy of a new folder lost every file
    that was in flight when one of them was refused."""
    new = tmp_path / "new"
    with Server(tmp_path, "--allow-write", "--no-fsync", "--max-upload", "1000", "--make-parents") as s:
        pid = s.worker_pids()[0]
        a = socket.create_connection(("127.0.0.1", s.port), timeout=10)
        b = socket.create_connection(("127.0.0.1", s.port), timeout=10)
        try:
            a.sendall(b"PUT /new/a.txt HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
            wait_for(lambda: _uploads_in(pid, str(new)) == 1)
            b.sendall(b"PUT /new/b.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nhello")
            wait_for(lambda: _uploads_in(pid, str(new)) == 2)
            if ending == "refused":
                a.sendall(b"7d0\r\n" + b"x" * 2000 + b"\r\n0\r\n\r\n")
                assert read_response(a)[0] == 413
            else:
                a.close()
            wait_for(lambda: _uploads_in(pid, str(new)) == 1)     # a's is gone
            b.sendall(b"world")
            assert read_response(b)[0] == 201
        finally:
            a.close()
            b.close()
    assert os.listdir(new) == ["b.txt"] and (new / "b.txt").read_bytes() == b"helloworld"


def test_move_onto_a_hard_link_of_the_same_file_removes_the_source(wserver):
    """rename(2) between two hard links of one file does nothing and
    succeeds: MOVE said 204 and the source stayed where it was."""
    root = wserver.root
    with open(os.path.join(root, "h1.txt"), "wb") as f:
        f.write(b"same")
    os.link(os.path.join(root, "h1.txt"), os.path.join(root, "h2.txt"))
    try:
        assert _call(wserver.port, "MOVE", b"/h1.txt", b"Destination: /h2.txt\r\n")[0] == 204
        assert _call(wserver.port, "GET", b"/h1.txt")[0] == 404
        assert _call(wserver.port, "GET", b"/h2.txt")[2] == b"same"
        assert not os.path.exists(os.path.join(root, "h1.txt"))
    finally:
        for name in ("h1.txt", "h2.txt"):
            if os.path.exists(os.path.join(root, name)):
                os.unlink(os.path.join(root, name))


def _reset(sock: socket.socket) -> None:
    """Close with a reset (SO_LINGER 0), as a client that drops pipelined replies unread does."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def _open_in(pid: int, folder: str, deleted: bool) -> set[str]:
    """The files of ``folder`` the worker holds open (with ``deleted``: only those replaced since)."""
    names = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:
            continue
        if target.startswith(folder + "/") and target.endswith(" (deleted)") == deleted:
            names.add(target.removesuffix(" (deleted)").rsplit("/", 1)[1])
    return names


def test_a_reset_with_replies_owed_and_a_lookup_under_way_costs_only_its_connection(tmp_path):
    """A HEAD of a cached file pipelined with a GET of one not cached yet: the HEAD's reply waits
    (owed) while the GET's file is opened off the loop, and sending it finds the client gone
    (reset). The connection closed there, then went on to wait for the lookup as if open; when
    the lookup came back it sent on its forgotten socket, closed a second time, and ``forget``'s
    KeyError ended the worker: six such clients in ten seconds stopped the server."""
    (tmp_path / "warm").write_bytes(b"w" * 100)
    for i in range(20):
        (tmp_path / f"cold{i}").write_bytes(b"c" * 100)
    with Server(tmp_path) as s:
        assert request(s.port, b"HEAD /warm HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                       head_only=True)[0] == 200
        workers = s.worker_pids()
        for i in range(20):
            with socket.create_connection(("127.0.0.1", s.port)) as c:
                c.sendall(b"HEAD /warm HTTP/1.1\r\nHost: t\r\n\r\nGET /cold%d HTTP/1.1\r\nHost: t\r\n\r\n" % i)
                _reset(c)
        # each GET's file ends up in the cache (its lookup came back), and the same worker serves on
        wait_for(lambda: len(_open_in(workers[0], str(tmp_path), False)) >= 20, what="the 20 lookups")
        for i in range(20):
            assert request(s.port, b"GET /cold%d HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n" % i)[0] == 200
        assert s.worker_pids() == workers


def test_a_reset_in_the_first_send_after_a_lookup_leaks_no_fd(tmp_path):
    """A GET whose file is opened off the loop, its client reset before the answer: the first send
    of the answer fails, and the connection closes. The lookup's hold on the file entry was let go of
    only after that send, so it never was: the fd stayed open after the file was replaced, for good."""
    (tmp_path / "warm").write_bytes(b"w" * 100)
    for i in range(30):
        (tmp_path / f"cold{i}").write_bytes(b"c" * (256 << 10))    # sent from the file, not held in memory
    with Server(tmp_path, "--prefetch", "off") as s:
        pid = s.worker_pids()[0]
        for i in range(30):
            with socket.create_connection(("127.0.0.1", s.port)) as c:
                c.sendall(b"GET /warm HTTP/1.1\r\nHost: t\r\n\r\n")
                assert read_response(c)[0] == 200
                c.sendall(b"GET /cold%d HTTP/1.1\r\nHost: t\r\n\r\n" % i)
                _reset(c)
        folder = str(tmp_path)
        wait_for(lambda: {f"cold{i}" for i in range(30)} <= _open_in(pid, folder, False), what="the 30 lookups")
        for i in range(30):                             # replaced: the cache lets go of each entry
            (tmp_path / f"cold{i}.new").write_bytes(b"n" * (256 << 10))
            os.rename(tmp_path / f"cold{i}.new", tmp_path / f"cold{i}")
        wait_for(lambda: not _open_in(pid, folder, True), timeout=10, what="no replaced file held open")
