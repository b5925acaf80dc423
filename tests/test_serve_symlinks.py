"""Symlink policy end to end: refused by default, inside ROOT with
--follow-symlinks, and into named folders with --symlink-target."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from serverutil import Server, get, request


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "root"
    shared = tmp_path / "shared"
    secret = tmp_path / "secret"
    for folder in (root, shared, secret):
        folder.mkdir()
    (root / "real.txt").write_text("inside")
    (shared / "doc.txt").write_text("shared")
    (secret / "key.txt").write_text("secret")
    (root / "link_in.txt").symlink_to(root / "real.txt")
    (root / "link_shared.txt").symlink_to(shared / "doc.txt")
    (root / "link_secret.txt").symlink_to(secret / "key.txt")
    return root, shared


def names(port) -> set[str]:
    return {e["name"] for e in json.loads(get(port, "/", {"Accept": "application/json"})[2])["entries"]}


def test_links_refused_by_default(tree):
    root, _ = tree
    with Server(root) as s:
        for link in ("link_in.txt", "link_shared.txt", "link_secret.txt"):
            assert get(s.port, "/" + link)[0] == 404
        assert names(s.port) == {"real.txt"}


def test_follow_symlinks_stays_inside_root(tree):
    root, _ = tree
    with Server(root, "--follow-symlinks") as s:
        assert get(s.port, "/link_in.txt")[2] == b"inside"
        assert get(s.port, "/link_shared.txt")[0] == 404
        assert get(s.port, "/link_secret.txt")[0] == 404
        assert names(s.port) == {"real.txt", "link_in.txt"}


def test_symlink_target_allows_a_named_folder(tree):
    root, shared = tree
    with Server(root, "--follow-symlinks", "--symlink-target", str(shared)) as s:
        assert get(s.port, "/link_shared.txt")[2] == b"shared"
        status, _, body = get(s.port, "/link_secret.txt")
        assert status == 404 and b"secret" not in body
        assert names(s.port) == {"real.txt", "link_in.txt", "link_shared.txt"}


def test_symlink_target_needs_follow_symlinks(tree):
    root, shared = tree
    out = subprocess.run([sys.executable, "-m", "zcopy", "serve", str(root), "--symlink-target", str(shared)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
    assert "--follow-symlinks" in out.stderr


def test_writes_to_a_link_follow_the_read_rule(tree):
    # A link is replaced, moved or deleted only where the server would serve through it.
    root, _ = tree
    with Server(root, "--allow-write") as s:
        for link in ("link_in.txt", "link_secret.txt"):
            raw = f"DELETE /{link} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode()
            assert request(s.port, raw)[0] == 403
    with Server(root, "--allow-write", "--follow-symlinks") as s:
        raw = b"PUT /link_secret.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx"
        assert request(s.port, raw)[0] == 403
        raw = b"DELETE /link_in.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        assert request(s.port, raw)[0] == 204
    assert not (root / "link_in.txt").is_symlink() and (root / "real.txt").read_text() == "inside"
    assert (root / "link_secret.txt").is_symlink()
