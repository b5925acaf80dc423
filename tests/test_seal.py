"""`zcopy seal`: a folder's files become NAME.age in place, readable by the
age CLI, with nothing lost or doubled."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

import pyrage
import pytest

from conftest import needs_tool
from test_client import zcopy


@pytest.fixture
def key(tmp_path):
    identity = pyrage.x25519.Identity.generate()
    path = tmp_path / "key.txt"
    path.write_text(f"{identity}\n")
    return identity, str(path)


def make_tree(root):
    (root / "sub").mkdir(parents=True)
    files = {"a.txt": b"alpha", "sub/b.bin": os.urandom(200_000), "empty": b"", "done.age": b"not touched"}
    for name, data in files.items():
        (root / name).write_bytes(data)
    os.chmod(root / "a.txt", 0o640)
    os.symlink("a.txt", root / "link")
    return files


def test_seal_encrypts_each_file_in_place(tmp_path, key):
    identity, _ = key
    root = tmp_path / "pub"
    files = make_tree(root)
    out = zcopy("seal", str(root), "-r", str(identity.to_public()))
    assert out.returncode == 0, out.stderr
    assert "sealed 3 file(s)" in out.stderr and "skipped 2" in out.stderr and "failed 0" in out.stderr
    names = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    assert names == ["a.txt.age", "done.age", "empty.age", "link", "sub", "sub/b.bin.age"]
    for name in ("a.txt", "sub/b.bin", "empty"):
        assert pyrage.decrypt((root / f"{name}.age").read_bytes(), [identity]) == files[name]
    assert (root / "done.age").read_bytes() == b"not touched"
    assert (root / "a.txt.age").stat().st_mode & 0o777 == 0o640     # permissions kept
    again = zcopy("seal", str(root), "-r", str(identity.to_public()))
    assert again.returncode == 0 and "sealed 0 file(s)" in again.stderr


def test_seal_leaves_an_existing_age_file_alone(tmp_path, key):
    identity, _ = key
    root = tmp_path / "pub"
    root.mkdir()
    (root / "x").write_bytes(b"new")
    (root / "x.age").write_bytes(b"older sealed copy")
    out = zcopy("seal", str(root), "-r", str(identity.to_public()))
    assert out.returncode == 0
    assert (root / "x").read_bytes() == b"new" and (root / "x.age").read_bytes() == b"older sealed copy"
    assert "x.age exists" in out.stderr


def test_seal_failure_keeps_the_original_and_no_temp(tmp_path, key):
    if os.geteuid() == 0:
        pytest.skip("root ignores file permissions")
    identity, _ = key
    root = tmp_path / "pub"
    root.mkdir()
    (root / "locked").write_bytes(b"data")
    os.chmod(root / "locked", 0)
    try:
        out = zcopy("seal", str(root), "-r", str(identity.to_public()))
    finally:
        os.chmod(root / "locked", 0o600)
    assert out.returncode == 1 and "failed 1" in out.stderr
    assert sorted(os.listdir(root)) == ["locked"]


@needs_tool("age")
def test_sealed_files_open_with_age_cli(tmp_path, key):
    identity, keyfile = key
    root = tmp_path / "pub"
    root.mkdir()
    (root / "doc.txt").write_bytes(b"published\n" * 1000)
    assert zcopy("seal", str(root), "--encrypt-to", str(identity.to_public()), "-q").returncode == 0
    plain = subprocess.run(["age", "-d", "-i", keyfile, str(root / "doc.txt.age")], capture_output=True)
    assert plain.returncode == 0 and plain.stdout == b"published\n" * 1000


def test_seal_needs_a_recipient(tmp_path):
    out = zcopy("seal", str(tmp_path))
    assert out.returncode == 2 and "--encrypt-to" in out.stderr and out.stderr.count("\n") == 1
    missing = zcopy("seal", str(tmp_path / "nope"), "-r", str(pyrage.x25519.Identity.generate().to_public()))
    assert missing.returncode == 1 and "not a folder" in missing.stderr


@contextlib.contextmanager
def stopped_while_sealing(root, identity):
    """A real `zcopy seal ROOT` stopped (SIGSTOP) while its temp file exists,
    i.e. before it looks at the file's name again; yields the process, which
    runs on (SIGCONT) when the block ends."""
    proc = subprocess.Popen([sys.executable, "-m", "zcopy", "seal", str(root), "-r", str(identity.to_public()),
                             "-q"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not any(n.endswith(".sealing") for n in os.listdir(root)):
            assert time.monotonic() < deadline and proc.poll() is None, "no temp file appeared"
        os.kill(proc.pid, signal.SIGSTOP)
        if not any(n.endswith(".sealing") for n in os.listdir(root)):
            pytest.skip("the seal finished before it could be stopped (machine too fast for 96 MiB)")
        yield proc
    finally:
        os.kill(proc.pid, signal.SIGCONT)
        proc.err = proc.communicate(timeout=120)[1]


def test_seal_keeps_a_file_replaced_while_it_was_being_sealed(tmp_path, key):
    """An upload (or an editor) replaces NAME while seal encrypts the old
    inode: NAME must not be deleted; both are kept, and the exit status says so."""
    identity, _ = key
    root = tmp_path / "pub"
    root.mkdir()
    original = os.urandom(1 << 20) * 96                      # 96 MiB: encrypting it takes a while
    (root / "big").write_bytes(original)
    with stopped_while_sealing(root, identity) as proc:
        (root / "new").write_bytes(b"uploaded meanwhile")
        os.rename(root / "new", root / "big")
    assert proc.returncode == 1, proc.err
    assert "changed while it was being sealed; kept both big and big.age" in proc.err
    assert (root / "big").read_bytes() == b"uploaded meanwhile"
    assert pyrage.decrypt((root / "big.age").read_bytes(), [identity]) == original
    assert sorted(os.listdir(root)) == ["big", "big.age"]


def test_seal_keeps_a_file_changed_in_place_while_it_was_being_sealed(tmp_path, key):
    identity, _ = key
    root = tmp_path / "pub"
    root.mkdir()
    (root / "log").write_bytes(os.urandom(1 << 20) * 96)
    with stopped_while_sealing(root, identity) as proc:
        with open(root / "log", "ab") as f:                   # appended to: same inode, new size
            f.write(b"one more line\n")
    assert proc.returncode == 1 and "kept both log and log.age" in proc.err, proc.err
    assert (root / "log").read_bytes().endswith(b"one more line\n")
    assert sorted(os.listdir(root)) == ["log", "log.age"]
