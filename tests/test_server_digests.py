"""Content-digest ETags: equal for equal bytes on different inodes (cp -a copies), different for a
same-size same-mtime rewrite, never remembered for a file that is not quiet or changes while hashed."""

from __future__ import annotations

import hashlib
import os
import shutil
import time

from zcopy.server import digests


def _next_tick(folder, ctime_ns):
    """Wait until the kernel's file timestamp clock has moved past ``ctime_ns`` (a state, not a sleep)."""
    probe = folder / ".tick"
    while True:
        probe.write_bytes(b"")
        if os.stat(probe).st_ctime_ns > ctime_ns:
            probe.unlink()
            return


def _opened(path):
    return os.open(path, os.O_RDONLY | os.O_CLOEXEC)


#: A clock far enough ahead that the files made by a test count as quiet.
LATER = time.time() + 3600


def test_same_bytes_same_etag_across_copies(tmp_path):
    a = tmp_path / "a.bin"
    a.write_bytes(os.urandom(3 * digests.CHUNK + 17))
    b = tmp_path / "b.bin"
    shutil.copy2(a, b)                         # cp -a: another inode, same bytes and mtime
    assert os.stat(a).st_ino != os.stat(b).st_ino
    fa, fb = _opened(a), _opened(b)
    try:
        (_, da), (_, db) = digests.compute(fa, LATER), digests.compute(fb, LATER)
    finally:
        os.close(fa)
        os.close(fb)
    assert da == db == hashlib.sha256(a.read_bytes()).digest()
    assert digests.strong_etag(da) == digests.strong_etag(db)
    assert digests.strong_etag(da).startswith('"z1-') and len(digests.strong_etag(da)) == 27


def test_same_size_same_mtime_rewrite_gets_another_etag(tmp_path):
    f = tmp_path / "f"
    f.write_bytes(b"A" * 4096)
    st = os.stat(f)
    fd = _opened(f)
    try:
        key1, d1 = digests.compute(fd, LATER)
        f.write_bytes(b"B" * 4096)
        os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))      # a client sets the old mtime back
        key2, d2 = digests.compute(fd, LATER)
    finally:
        os.close(fd)
    assert os.stat(f).st_mtime_ns == st.st_mtime_ns and os.stat(f).st_size == st.st_size
    assert d1 != d2 and key1 != key2                           # ctime moved: the memo key differs too
    assert digests.weak_etag(st) == digests.weak_etag(os.stat(f))  # what size+mtime alone would have said


def test_a_file_that_just_changed_is_not_hashed(tmp_path):
    f = tmp_path / "new"
    f.write_bytes(b"x" * 100)
    fd = _opened(f)
    try:
        assert not digests.quiet(os.fstat(fd))
        assert digests.compute(fd) is None
        assert digests.quiet(os.fstat(fd), now=time.time() + digests.QUIET + 1)
    finally:
        os.close(fd)


def test_a_file_changed_while_hashed_is_not_remembered(tmp_path, monkeypatch):
    """A real write lands between two chunk reads (the hook only says when): no digest comes out."""
    f = tmp_path / "big"
    f.write_bytes(b"\0" * (4 * digests.CHUNK))
    _next_tick(tmp_path, os.stat(f).st_ctime_ns)   # so the write below cannot share the file's timestamp
    fd = _opened(f)
    real_preadv = os.preadv

    def preadv_then_write(fd_, bufs, off):
        if off == digests.CHUNK:
            with open(f, "r+b") as w:
                w.write(b"changed")          # bytes already hashed change under the reader
        return real_preadv(fd_, bufs, off)

    monkeypatch.setattr(os, "preadv", preadv_then_write)
    try:
        assert digests.compute(fd, LATER) is None
        monkeypatch.setattr(os, "preadv", real_preadv)
        key, digest = digests.compute(fd, LATER)
        assert key == digests.key_of(os.fstat(fd)) and digest == hashlib.sha256(f.read_bytes()).digest()
    finally:
        os.close(fd)


def test_memo_is_keyed_by_the_stat_it_was_made_for(tmp_path):
    f = tmp_path / "f"
    f.write_bytes(b"abc")
    st = os.stat(f)
    memo = digests.DigestMemo(capacity=2)
    memo.remember((st.st_dev, st.st_ino), digests.key_of(st), b"d" * 32)
    assert memo.known(st) == b"d" * 32
    f.write_bytes(b"abd")
    assert memo.known(os.stat(f)) is None
    for i in range(3):
        memo.remember((0, i), (0, 0, 0), b"x")
    assert len(memo._memo) == 2
