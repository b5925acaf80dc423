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


@pytest.mark.skipif(shutil.which("cadaver") is None, reason="cadaver is not installed")
def test_cadaver_script(tmp_path):
    """cadaver (neon) does ls, mkcol, put, get, move, delete and rmcol in a script (credentials from .netrc)."""
    home = tmp_path / "home"
    home.mkdir()
    netrc = home / ".netrc"
    netrc.write_text("machine 127.0.0.1\nlogin u\npassword pass\n")
    netrc.chmod(0o600)
    (home / "local.txt").write_bytes(b"local data\n")
    root = tmp_path / "root"
    (root / "dav").mkdir(parents=True)
    state = tmp_path / "state"
    state.mkdir()
    script = ("ls\nmkcol sub\nput local.txt sub/up.txt\nget sub/up.txt back.txt\nmove sub/up.txt sub/moved.txt\n"
              "ls sub\ncopy sub/moved.txt copied.txt\ndelete sub/moved.txt\nquit\n")
    with Server(root, "--allow-write", "--token", "pass", "--state-dir", str(state)) as s:
        run = subprocess.run(["cadaver", f"http://127.0.0.1:{s.port}/dav/"], input=script, cwd=home,
                             env={"PATH": "/usr/bin:/bin", "HOME": str(home)}, capture_output=True, text=True,
                             timeout=60)
    out = run.stdout + run.stderr
    assert "failed" not in out and out.count("succeeded") >= 7, out
    assert (home / "back.txt").read_bytes() == b"local data\n"
    assert "moved.txt" in out
    assert sorted(os.listdir(root / "dav")) == ["copied.txt", "sub"] and os.listdir(root / "dav" / "sub") == []
    assert (root / "dav" / "copied.txt").read_bytes() == b"local data\n"


def _davfs2_usable() -> str:
    if shutil.which("mount.davfs") is None:
        return "davfs2 is not installed"
    if os.geteuid() != 0:
        return "mounting davfs2 needs root"
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse"
    return ""


@pytest.mark.skipif(bool(_davfs2_usable()), reason=_davfs2_usable() or "usable")
def test_davfs2_mount_copy_rename_delete(tmp_path):
    """davfs2 mounts the server (a private conf and cache, credentials on stdin), a tree copied in
    arrives byte for byte after unmount, and a rename and a delete through the mount take effect.
    (Listing the mount's folders fails on these machines with EINVAL whatever the server: rclone's
    own WebDAV server gives the same; lookups, reads and writes work.)"""
    import grp
    import tempfile

    root = tmp_path / "root"
    (root / "dav").mkdir(parents=True)
    (root / "dav" / "old.txt").write_bytes(b"old")
    (root / "dav" / "doomed.txt").write_bytes(b"doomed")
    state = tmp_path / "state"
    state.mkdir()
    src = tmp_path / "src"
    (src / "a dir").mkdir(parents=True)
    (src / "a dir" / "big é.bin").write_bytes(os.urandom(3_000_000))
    (src / "small.txt").write_bytes(b"small")
    # davfs2 drops to its own user: its cache and mount point must be reachable by it (pytest's are 0700).
    base = tempfile.mkdtemp(prefix="zcopy-davfs2-", dir="/tmp")
    try:
        os.chmod(base, 0o755)
        cache, mnt = os.path.join(base, "cache"), os.path.join(base, "mnt")
        os.mkdir(cache)
        os.mkdir(mnt)
        os.chown(cache, 0, grp.getgrnam("davfs2").gr_gid)
        os.chmod(cache, 0o775)
        conf = os.path.join(base, "davfs2.conf")
        with open(conf, "w") as f:
            f.write(f"cache_dir {cache}\nuse_locks 1\n")
        with Server(root, "--allow-write", "--token", "pass", "--state-dir", str(state)) as s:
            mounted = subprocess.run(["mount.davfs", f"http://127.0.0.1:{s.port}/dav/", mnt, "-o", f"conf={conf}"],
                                     input="u\npass\n", capture_output=True, text=True, timeout=60)
            assert mounted.returncode == 0, mounted.stderr
            try:
                assert open(os.path.join(mnt, "old.txt"), "rb").read() == b"old"
                shutil.copytree(src, os.path.join(mnt, "tree"))
                os.rename(os.path.join(mnt, "old.txt"), os.path.join(mnt, "renamed.txt"))
                os.unlink(os.path.join(mnt, "doomed.txt"))
            finally:
                unmounted = subprocess.run(["umount", mnt], capture_output=True, text=True, timeout=120)
            assert unmounted.returncode == 0, unmounted.stderr
    finally:
        subprocess.run(["umount", os.path.join(base, "mnt")], capture_output=True, timeout=60)
        shutil.rmtree(base, ignore_errors=True)
    dav = root / "dav"
    assert (dav / "tree" / "a dir" / "big é.bin").read_bytes() == (src / "a dir" / "big é.bin").read_bytes()
    assert (dav / "tree" / "small.txt").read_bytes() == b"small"
    assert (dav / "renamed.txt").read_bytes() == b"old" and not (dav / "old.txt").exists()
    assert not (dav / "doomed.txt").exists()
