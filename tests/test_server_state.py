"""The server's state folder (zcopy.server.state): a real sqlite database in
WAL mode and the share secret in a temp folder, used from real processes."""

from __future__ import annotations

import os
import sqlite3
import stat

import pytest

import fuseutil
from serverutil import Server, get, serve_refused
from zcopy.server import state
from zcopy.server.state import MIGRATIONS, State, StateError


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_prepare_makes_a_private_folder_with_a_wal_database_and_a_secret(tmp_path):
    folder = state.prepare(str(tmp_path / "a" / "zcopy"))
    assert folder == str(tmp_path / "a" / "zcopy")
    assert mode(folder) == 0o700
    assert mode(f"{folder}/state.db") == 0o600 and mode(f"{folder}/secret") == 0o600
    secret = (tmp_path / "a" / "zcopy" / "secret").read_bytes()
    assert len(secret) == 32 and secret != bytes(32)
    with sqlite3.connect(f"{folder}/state.db") as db:      # WAL is a property of the file: any opener sees it
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        assert dict(db.execute("SELECT key, value FROM meta"))["opened_by"]
    db.close()
    assert state.prepare(folder) == folder                 # again: same secret, nothing re-applied
    assert (tmp_path / "a" / "zcopy" / "secret").read_bytes() == secret
    s = State(folder)
    try:
        assert s.share_secret() == secret and s.version() == len(MIGRATIONS)
        assert int(s.meta("created")) > 0
    finally:
        s.close()


def test_a_database_from_a_newer_zcopy_is_refused(tmp_path):
    folder = state.prepare(str(tmp_path / "s"))
    with sqlite3.connect(f"{folder}/state.db") as db:
        db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 5}")
    db.close()
    with pytest.raises(StateError, match="written by a newer zcopy"):
        state.prepare(folder)


@pytest.mark.parametrize("spoil, says", [
    (lambda f: os.chmod(f / "secret", 0o644), "open to other users (mode 644): chmod 600"),
    (lambda f: os.chmod(f / "state.db", 0o640), "open to other users (mode 640)"),
    (lambda f: (f / "secret").write_bytes(b"short"), "holds 5 bytes, not 32"),
    (lambda f: ((f / "secret").unlink(), (f / "secret").symlink_to("/etc/hostname")), "cannot open"),
    (lambda f: os.chmod(f, 0o777), "writable by others (mode 777)"),
])
def test_a_state_folder_others_could_read_or_change_is_refused(tmp_path, spoil, says):
    folder = tmp_path / "s"
    state.prepare(str(folder))
    spoil(folder)
    with pytest.raises(StateError, match=says.replace("(", r"\(").replace(")", r"\)")):
        state.prepare(str(folder))


def test_transaction_rolls_back_on_an_exception(tmp_path):
    s = State(state.prepare(str(tmp_path / "s")))
    try:
        s.set_meta("k", "kept")
        with pytest.raises(ZeroDivisionError), s.transaction() as db:
            db.execute("UPDATE meta SET value = 'lost' WHERE key = 'k'")
            1 / 0
        assert s.meta("k") == "kept"
        with s.transaction() as db:                   # the same thread may read inside its transaction
            db.execute("UPDATE meta SET value = 'changed' WHERE key = 'k'")
            assert s.meta("k") == "changed"
        assert s.meta("k") == "changed"
    finally:
        s.close()


def test_each_process_opens_its_own_connection_after_fork(tmp_path):
    """A connection inherited through fork is refused; a State made in the child
    works, and the parent sees the child's committed write (WAL across processes)."""
    folder = state.prepare(str(tmp_path / "s"))
    parent = State(folder)
    try:
        parent.set_meta("who", "parent")                 # the parent's connection is open
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                try:
                    parent.meta("who")
                    os.write(w, b"inherited connection was used")
                except RuntimeError:
                    child = State(folder)
                    child.set_meta("who", "child")
                    child.close()
                    os.write(w, b"ok")
                    code = 0
            finally:
                os._exit(code)
        os.close(w)
        said = os.read(r, 100)
        os.close(r)
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0 and said == b"ok", said
        assert parent.meta("who") == "child"
    finally:
        parent.close()


def test_server_keeps_its_state_in_the_isolated_xdg_folder(tmp_path, isolated_state):
    root = tmp_path / "root"
    root.mkdir()
    with Server(root, env={"COLUMNS": "400"}) as s:
        assert s.panel()["state"] == str(isolated_state / "zcopy")
    assert (isolated_state / "zcopy" / "state.db").exists()
    assert (isolated_state / "zcopy" / "secret").stat().st_size == 32


def test_server_with_state_dir_flag(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    with Server(root, "--state-dir", str(tmp_path / "st"), env={"COLUMNS": "400"}) as s:
        assert s.panel()["state"] == str(tmp_path / "st") and "--state-dir flag" in s.stderr.decode()
    assert mode(tmp_path / "st") == 0o700 and mode(tmp_path / "st" / "state.db") == 0o600


def test_unusable_state_dir_flag_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "root").mkdir()
    (tmp_path / "file").write_text("x")
    out = serve_refused(str(tmp_path / "root"), "--port", "0", "--state-dir", str(tmp_path / "file"))
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert out.stderr.startswith(f"zcopy serve: error: cannot create the state folder {tmp_path}/file")
    (tmp_path / "open").mkdir(mode=0o777)
    os.chmod(tmp_path / "open", 0o777)
    out = serve_refused(str(tmp_path / "root"), "--port", "0", "--state-dir", str(tmp_path / "open"))
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "writable by others" in out.stderr


def test_unusable_default_state_folder_names_the_flag(tmp_path):
    (tmp_path / "root").mkdir()
    (tmp_path / "xdg").write_text("a file where the XDG state folder should be")
    out = serve_refused(str(tmp_path / "root"), "--port", "0", env={"XDG_STATE_HOME": str(tmp_path / "xdg")})
    assert out.returncode == 1 and out.stderr.count("\n") == 1, out.stderr
    assert "cannot create the state folder" in out.stderr and "with --state-dir" in out.stderr


@pytest.mark.skipif(not fuseutil.available(), reason="needs root and /dev/fuse for a real FUSE mount")
def test_state_folder_on_fuse_is_refused(tmp_path):
    """sqlite's WAL needs local locks and shared memory: a state folder on a
    FUSE (or network) filesystem is refused by its statfs magic, through the CLI."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with fuseutil.fuse_mount(str(mnt)):
        with pytest.raises(StateError, match=r"is on fuse \(statfs magic 0x65735546\)"):
            state.prepare(str(mnt))
        (tmp_path / "root").mkdir()
        out = serve_refused(str(tmp_path / "root"), "--port", "0", "--state-dir", str(mnt))
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert out.stderr.startswith(f"zcopy serve: error: the state folder {mnt} is on fuse")
    assert "choose one on a local filesystem with --state-dir" in out.stderr
    assert str(mnt) not in open("/proc/self/mountinfo").read()
    assert os.listdir(mnt) == []


@pytest.mark.parametrize("state_dir, flags, refused", [
    ("st", [], "inside the served folder"),                           # plainly reachable
    (".st", [], None),                                                # a dot segment hides it
    (".st", ["--show-hidden"], "inside the served folder"),
    ("sub/.st", ["--follow-symlinks"], "inside the served folder"),   # a link could lead there
    (".", [], "inside the served folder"),                            # ROOT itself
    ("..", [], "is inside the state folder"),                         # ROOT inside it
])
def test_state_folder_is_never_reachable_through_the_server(tmp_path, state_dir, flags, refused):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    args = [str(root), "--port", "0", "--state-dir", str(root / state_dir), *flags]
    if refused is None:
        with Server(*args[:1], *args[3:]) as s:
            assert (root / state_dir / "secret").exists()
            assert get(s.port, f"/{state_dir}/secret")[0] == 404
            assert get(s.port, f"/{state_dir}/state.db")[0] == 404
        return
    out = serve_refused(*args)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and refused in out.stderr, out.stderr
    assert not (root / state_dir / "secret").exists() and not (root / "st").exists()


def test_processes_write_at_once_without_losing_a_commit(tmp_path):
    """Four processes (as four workers would) each commit 50 counter increments
    at the same time: WAL plus BEGIN IMMEDIATE and the busy timeout serialise
    them, and none is lost or refused as "database is locked"."""
    folder = state.prepare(str(tmp_path / "s"))
    s = State(folder)
    s.set_meta("n", "0")
    s.close()
    pids = []
    for _ in range(4):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                mine = State(folder)
                for _ in range(50):
                    with mine.transaction() as db:
                        n = int(db.execute("SELECT value FROM meta WHERE key = 'n'").fetchone()[0])
                        db.execute("UPDATE meta SET value = ? WHERE key = 'n'", (str(n + 1),))
                mine.close()
                code = 0
            finally:
                os._exit(code)
        pids.append(pid)
    assert [os.waitstatus_to_exitcode(os.waitpid(p, 0)[1]) for p in pids] == [0] * 4
    s = State(folder)
    try:
        assert s.meta("n") == "200"
    finally:
        s.close()


def test_a_database_that_cannot_be_migrated_is_one_line(tmp_path):
    """A schema this zcopy did not write (here: a table a later migration makes, already there) is a
    StateError naming the file, never an sqlite traceback."""
    import sqlite3

    path = state.prepare(str(tmp_path / "s"))
    db = sqlite3.connect(os.path.join(path, state.DB_NAME))
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    with pytest.raises(state.StateError, match="cannot be brought up to date"):
        state.prepare(path)
