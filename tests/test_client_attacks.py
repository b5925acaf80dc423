"""The client attacked: a local user racing in the folders it writes, a
malicious server, hostile names. Each test shows an attack that worked
against the client of issue 15 (items 1-7) and no longer does. Servers are
tiny raw ones on loopback (``RawServer``) or a real ``zcopy serve``; files
and races are real (a rename or symlink swap at the moment the client is
between two steps, pinned with strace's syscall delay where needed)."""

from __future__ import annotations

import os

import pyrage
import pytest

from test_client_safety import RawServer, ok, one_line, run
from zcopy.client.seal import seal_tree


# -- seal: a folder swapped for a symlink while the tree is walked -----------------------------

def test_seal_does_not_follow_a_folder_swapped_for_a_symlink_during_the_walk(tmp_path):
    """A user who can write in a sub-folder of the sealed tree lists a file
    named like one of the victim's, then swaps the folder for a symlink to
    the victim's folder once the walk has listed it: the old seal opened
    ``ROOT/sub/NAME`` by its path, so it encrypted and deleted the victim's
    file outside the tree."""
    identity = pyrage.x25519.Identity.generate()
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "id_ed25519").write_bytes(b"the victim's key")
    root = tmp_path / "pub"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "id_ed25519").write_bytes(b"bait")

    def swap(path):                          # the attacker, right after the walk listed sub/
        if path.endswith("id_ed25519") and not (root / "sub").is_symlink():
            os.rename(root / "sub", root / "sub.old")
            os.symlink(victim, root / "sub")

    report = seal_tree(str(root), {"recipients": [identity.to_public()]}, on_file=swap)
    assert (victim / "id_ed25519").read_bytes() == b"the victim's key"
    assert sorted(os.listdir(victim)) == ["id_ed25519"]
    assert sorted(os.listdir(root / "sub.old")) == ["id_ed25519.age"]       # the bait, sealed where it was
    assert pyrage.decrypt((root / "sub.old" / "id_ed25519.age").read_bytes(), [identity]) == b"bait"
    assert report.failed == []


# -- get: a partial file planted by someone else ------------------------------------------------

def test_get_does_not_resume_a_partial_file_owned_by_someone_else(tmp_path):
    """In a shared download folder another user plants ``f.part`` with their
    own first bytes and the remote file's ETag in ``user.zcopy.etag``: the
    old client resumed it, appended the real rest and saved a trojaned file
    (still owned, and writable, by that user) with exit 0."""
    if os.geteuid() != 0:
        pytest.skip("needs root to make a file owned by another user")
    body = os.urandom(64 << 10)
    dl = tmp_path / "dl"
    dl.mkdir(mode=0o777)
    part = dl / "f.part"
    part.write_bytes(b"#!/bin/sh evil" + b"\0" * (1000 - 14))
    try:
        os.setxattr(part, "user.zcopy.etag", b'"v1"')
    except OSError:
        pytest.skip("no user xattrs on this file system")
    os.chown(part, 65534, 65534)

    def answer(head):
        if b"Range: bytes=1000-" in head:
            rest = body[1000:]
            return (b"HTTP/1.1 206 Partial Content\r\nContent-Length: %d\r\nETag: \"v1\"\r\n"
                    b"Content-Range: bytes 1000-%d/%d\r\nConnection: close\r\n\r\n"
                    % (len(rest), len(body) - 1, len(body)) + rest)
        return ok(body)

    with RawServer(answer) as srv:
        out = run("get", f"{srv.url}/f", "-o", str(dl / "f"))
    assert out.returncode == 1 and one_line(out), out.stderr
    assert "owned by another user" in out.stderr
    assert not (dl / "f").exists()
    assert part.stat().st_uid == 65534                 # theirs, left alone
