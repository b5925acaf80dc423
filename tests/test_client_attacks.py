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
