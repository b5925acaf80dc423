"""ETags across nodes (issue 21): two servers over `cp -a` copies agree on a file's ETag (a content
digest), a download begun on one node resumes on the other (Range + If-Range: 206), and different bytes
never share a strong ETag, even with the same size and a restored mtime."""

from __future__ import annotations

import os
import shutil
import time

import pytest

from serverutil import Server, get, wait_for


def strong_etag(server: Server, path: str, timeout: float = 20.0) -> str:
    """The ETag once the node knows the file's content digest (computed off the loop after the first
    request): a state waited for, bounded."""
    deadline = time.monotonic() + timeout
    while True:
        status, headers, _ = get(server.port, path, method="HEAD")
        assert status == 200
        etag = headers["etag"]
        if etag.startswith('"z1-'):
            return etag
        assert time.monotonic() < deadline, f"no content ETag after {timeout} s (last: {etag})"
        time.sleep(0.05)


@pytest.fixture
def two_nodes(tmp_path):
    a = tmp_path / "a"
    a.mkdir()
    (a / "data.bin").write_bytes(os.urandom(3 << 20))
    (a / "small.txt").write_bytes(b"hello, nodes\n")
    b = tmp_path / "b"
    shutil.copytree(a, b, copy_function=shutil.copy2)          # cp -a: other inodes, same bytes and mtimes
    assert os.stat(a / "data.bin").st_ino != os.stat(b / "data.bin").st_ino
    with Server(a) as node_a, Server(b) as node_b:
        yield node_a, node_b, a, b


def test_same_etag_on_two_nodes_and_a_resume_across_them(two_nodes):
    node_a, node_b, root_a, _ = two_nodes
    for path in ("/data.bin", "/small.txt"):
        assert strong_etag(node_a, path) == strong_etag(node_b, path)
    etag = strong_etag(node_a, "/data.bin")
    data = (root_a / "data.bin").read_bytes()
    status, headers, body = get(node_b.port, "/data.bin", {"Range": "bytes=1000000-", "If-Range": etag})
    assert status == 206 and body == data[1000000:]
    assert headers["content-range"] == f"bytes 1000000-{len(data) - 1}/{len(data)}"
    status, _, body = get(node_b.port, "/data.bin", {"If-None-Match": etag})
    assert status == 304


def test_a_node_that_never_hashed_the_file_answers_a_resume_with_206(two_nodes):
    """Node B is asked first with node A's content tag (its own digest unknown yet): it hashes the
    file before answering, so the resume gets its 206 (a node failure moves a file's requests to a
    node that may never have served it)."""
    node_a, node_b, root_a, _ = two_nodes
    etag = strong_etag(node_a, "/data.bin")
    data = (root_a / "data.bin").read_bytes()
    status, _, body = get(node_b.port, "/data.bin", {"Range": "bytes=2000000-", "If-Range": etag})
    assert status == 206 and body == data[2000000:]
    status, _, body = get(node_b.port, "/small.txt", {"Range": "bytes=0-4", "If-Range": '"z1-AAAAAAAAAAAAAAAAAAAAAA"'})
    assert status == 200 and body == b"hello, nodes\n"          # another file's tag: the whole file


def test_this_nodes_tag_keeps_working_after_the_digest_arrives(tmp_path):
    """A client that got this node's own tag before the digest was known still resumes."""
    (tmp_path / "f.bin").write_bytes(os.urandom(1 << 20))
    old = os.stat(tmp_path / "f.bin")
    os.utime(tmp_path / "f.bin", ns=(old.st_atime_ns, old.st_mtime_ns))      # ctime moves: let it go quiet
    with Server(tmp_path) as server:
        first = get(server.port, "/f.bin", method="HEAD")[1]["etag"]
        content = strong_etag(server, "/f.bin")
        if first != content:                 # the node's tag was shown first: it still names the same bytes
            assert not first.startswith("W/")
            status, _, body = get(server.port, "/f.bin", {"Range": "bytes=10-19", "If-Range": first})
            assert status == 206 and body == (tmp_path / "f.bin").read_bytes()[10:20]


def test_same_size_same_mtime_rewrite_gets_a_new_etag(tmp_path):
    f = tmp_path / "f.bin"
    f.write_bytes(b"A" * 65536)
    with Server(tmp_path) as server:
        before = strong_etag(server, "/f.bin")
        st = os.stat(f)
        with open(f, "r+b") as w:                       # same size, other bytes, old mtime put back
            w.write(b"B" * 65536)
        os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
        assert os.stat(f).st_mtime_ns == st.st_mtime_ns and os.stat(f).st_size == st.st_size
        # The resume a client would try with the old tag: never the new bytes under the old tag.
        status, _, body = get(server.port, "/f.bin", {"Range": "bytes=0-9", "If-Range": before})
        assert status == 200 and body == b"B" * 65536
        after = strong_etag(server, "/f.bin")
        assert after != before


def _sparse(path, size: int) -> None:
    with open(path, "wb") as f:
        f.truncate(size)


def test_a_file_over_digest_max_keeps_this_nodes_tag_and_a_resume_does_not_wait(tmp_path):
    """A file larger than ``--digest-max`` is never hashed: its ETag stays this node's strong tag, and a
    request naming another node's content tag is answered at once (as a mismatch), not after a read of
    the whole file. Smaller files still get their content tag."""
    _sparse(tmp_path / "huge.bin", 64 << 30)                    # 64 GiB of holes: minutes to hash
    (tmp_path / "small.txt").write_bytes(b"hello, cap\n")
    with Server(tmp_path, "--digest-max", "1MiB") as server:
        assert strong_etag(server, "/small.txt").startswith('"z1-')
        started = time.monotonic()
        status, headers, body = get(server.port, "/huge.bin", {"Range": "bytes=0-9",
                                                              "If-Range": '"z1-AAAAAAAAAAAAAAAAAAAAAA"'},
                                    method="HEAD")
        assert status == 200 and time.monotonic() - started < 5
        assert not headers["etag"].startswith(('"z1-', "W/"))
        status, headers, body = get(server.port, "/huge.bin", {"Range": "bytes=0-9", "If-Range": headers["etag"]})
        assert (status, body) == (206, bytes(10))
    with Server(tmp_path, "--digest-max", "0") as server:          # none at all: every tag is this node's
        for _ in range(3):
            assert not get(server.port, "/small.txt", method="HEAD")[1]["etag"].startswith('"z1-')


def _read_chars(pid: int) -> int:
    with open(f"/proc/{pid}/io") as f:
        return int(next(line for line in f if line.startswith("rchar:")).split()[1])


def test_huge_digests_leave_the_executor_free_and_stop_with_the_worker(tmp_path):
    """Ten files of 64 GiB (sparse) asked for at once: at most two digests run, so a folder listing
    (built on the same executor) is still answered promptly; a SIGTERM then ends the worker within a
    chunk of each digest, not after the drain timeout (the supervisor's SIGKILL)."""
    (tmp_path / "big").mkdir()
    for i in range(10):
        _sparse(tmp_path / "big" / f"{i}.bin", 64 << 30)
    with Server(tmp_path, "--digest-max", "1TiB", "--drain-timeout", "60") as server:
        [worker] = server.worker_pids(1)
        for i in range(10):
            assert get(server.port, f"/big/{i}.bin", {"Range": "bytes=0-0"})[0] == 206
        before = _read_chars(worker)
        wait_for(lambda: _read_chars(worker) > before + (2 << 30), what="the digests to be under way")
        started = time.monotonic()
        status, _, body = get(server.port, "/big/")
        assert status == 200 and b"9.bin" in body
        assert time.monotonic() - started < 5
        started = time.monotonic()
        assert server.stop() == 0
        assert time.monotonic() - started < 10
