"""`zcopy seal`: a folder's files become NAME.age in place, readable by the
age CLI, with nothing lost or doubled."""

from __future__ import annotations

import os
import subprocess

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
