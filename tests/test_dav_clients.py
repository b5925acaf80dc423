"""Real WebDAV clients against `zcopy serve --allow-write` (issue 17's bars): rclone's webdav backend
copies a tree with odd names in, `rclone check` finds no difference, and with the owncloud vendor
setting (X-OC-Mtime) the modification times are kept."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from serverutil import Server

pytestmark = pytest.mark.skipif(shutil.which("rclone") is None, reason="rclone is not installed")


def rclone(*args: str, cwd) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(cwd), "RCLONE_CONFIG": os.devnull}
    return subprocess.run(["rclone", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_rclone_copies_odd_names_in_and_keeps_times(tmp_path):
    src = tmp_path / "src"
    (src / "sub dir" / "ünï").mkdir(parents=True)
    (src / "a b.txt").write_bytes(b"hello")
    (src / "sub dir" / "ünï" / "bin é.dat").write_bytes(os.urandom(300_000))
    (src / "sub dir" / "100% [x].txt").write_bytes(b"odd")
    os.utime(src / "a b.txt", (1577934245, 1577934245))
    root = tmp_path / "root"
    (root / "dav").mkdir(parents=True)
    state = tmp_path / "state"
    state.mkdir()
    with Server(root, "--allow-write", "--token", "pass", "--state-dir", str(state)) as s:
        secret = rclone("obscure", "pass", cwd=tmp_path).stdout.strip()
        remote = f":webdav,url='http://127.0.0.1:{s.port}/dav',vendor=owncloud,user=u,pass={secret}:"
        copied = rclone("copy", str(src), remote, cwd=tmp_path)
        assert copied.returncode == 0, copied.stderr
        checked = rclone("check", str(src), remote, cwd=tmp_path)
        assert checked.returncode == 0 and "0 differences found" in checked.stderr, checked.stderr
        listed = rclone("lsl", remote, cwd=tmp_path)
    for path in ("a b.txt", "sub dir/ünï/bin é.dat", "sub dir/100% [x].txt"):
        assert (root / "dav" / path).read_bytes() == (src / path).read_bytes()
    assert "2020-01-02" in [line for line in listed.stdout.splitlines() if line.endswith("a b.txt")][0]
    assert int((root / "dav" / "a b.txt").stat().st_mtime) == 1577934245
