"""The lock table on a real state database (sqlite, WAL), shared by two handles as two workers share it."""

from __future__ import annotations

import pytest

from zcopy.dav.locks import INFINITY, LockError, LockTable, parse_timeout
from zcopy.server import state as state_mod


@pytest.fixture
def tables(tmp_path):
    path = state_mod.prepare(str(tmp_path / "state"))
    a, b = state_mod.State(path), state_mod.State(path)
    yield LockTable(a), LockTable(b)
    a.close()
    b.close()


def lock(t, path, *, depth=0, exclusive=True, who="alice", now=0.0, timeout=60):
    return t.lock(path, depth=depth, exclusive=exclusive, owner=b"<D:owner/>", principal=who, timeout=timeout, now=now)


def test_exclusive_conflicts_and_shared_stack(tables):
    a, b = tables
    lk = lock(a, "/docs/a.txt")
    assert lk.token.startswith("urn:uuid:")
    with pytest.raises(LockError) as exc:
        lock(b, "/docs/a.txt", who="bob")                 # the other worker sees it
    assert exc.value.status == 423 and exc.value.conflicts[0].token == lk.token
    s1 = lock(a, "/shared", exclusive=False)
    s2 = lock(b, "/shared", exclusive=False, who="bob")
    assert {s1.token, s2.token} == {x.token for x in a.covering("/shared", 1)}
    with pytest.raises(LockError):
        lock(a, "/shared", exclusive=True)


def test_depth_infinity_covers_whole_segments(tables):
    a, _ = tables
    lock(a, "/tree", depth=INFINITY)
    assert [x.root for x in a.covering("/tree/x/y", 1)] == ["/tree"]
    assert a.covering("/tree2", 1) == []
    with pytest.raises(LockError):
        lock(a, "/tree/x")                                # under an exclusive infinity lock
    lock(a, "/other/deep/file")
    with pytest.raises(LockError):
        lock(a, "/other", depth=INFINITY)                 # would cover an existing lock beneath
    lock(a, "/other", depth=0)                            # depth 0 does not


def test_writes_need_the_owners_token(tables):
    a, _ = tables
    lk = lock(a, "/f", who="alice")
    assert [x.token for x in a.missing_tokens("/f", set(), "alice", 1)] == [lk.token]
    assert a.missing_tokens("/f", {lk.token}, "alice", 1) == []
    assert a.missing_tokens("/f", {lk.token}, "bob", 1) != []          # a token only counts for its owner
    deep = lock(a, "/dir/sub/x")
    assert a.missing_tokens("/dir", set(), "alice", 1) == []
    assert [x.token for x in a.missing_tokens("/dir", set(), "alice", 1, recursive=True)] == [deep.token]


def test_expiry_refresh_unlock_and_generation(tables):
    a, b = tables
    g0 = a.generation()
    lk = lock(a, "/f", now=0, timeout=10)
    assert b.generation() > g0
    assert a.covering("/f", 11) == []                                  # expired: as good as gone
    lk = lock(a, "/f", now=20, timeout=10)
    renewed = b.refresh("/f", {lk.token}, "alice", 100, now=25)
    assert renewed.expires == 125 and a.covering("/f", 100)
    with pytest.raises(LockError) as exc:
        b.refresh("/f", {"urn:uuid:nope"}, "alice", 100, now=25)
    assert exc.value.status == 412
    with pytest.raises(LockError) as exc:
        a.unlock("/f", lk.token, "bob", now=30)
    assert exc.value.status == 403
    with pytest.raises(LockError) as exc:
        a.unlock("/elsewhere", lk.token, "alice", now=30)
    assert exc.value.status == 409
    a.unlock("/f", lk.token, "alice", now=30)
    assert a.covering("/f", 31) == []
    lock(a, "/g", now=0, timeout=5)
    assert a.sweep(now=100) >= 1


def test_removed_takes_the_locks_beneath(tables):
    a, _ = tables
    lock(a, "/d/x")
    lock(a, "/d")
    lock(a, "/d2")
    a.removed("/d")
    assert a.covering("/d/x", 1) == [] and a.covering("/d", 1) == [] and a.covering("/d2", 1)


@pytest.mark.parametrize("value, seconds", [(None, 3600), ("Second-60", 60), ("Infinite, Second-4100000000", 604800),
                                            ("Second-0", 1), ("junk, Second-5", 5), ("junk", 3600)])
def test_timeout_header(value, seconds):
    assert parse_timeout(value) == seconds
