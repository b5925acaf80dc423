"""Dead properties in real user.* xattrs: set, removed, kept by rename, copied, all or nothing."""

from __future__ import annotations

import os

import pytest

from zcopy.dav import deadprops
from zcopy.dav.xmlbody import PropChange

NS = "http://example.com/ns"


def opened(path):
    return os.open(path, os.O_RDONLY | os.O_CLOEXEC)


def test_set_remove_and_rename(tmp_path):
    f = tmp_path / "a"
    f.write_bytes(b"x")
    fd = opened(f)
    try:
        deadprops.apply(fd, [PropChange(False, (NS, "color"), b'<color xmlns="http://example.com/ns">red</color>'),
                             PropChange(False, ("", "plain"), b"<plain>1</plain>")])
        assert deadprops.get_all(fd)[(NS, "color")].endswith(b">red</color>")
        deadprops.apply(fd, [PropChange(True, ("", "plain"), b""), PropChange(True, (NS, "never-set"), b"")])
        assert list(deadprops.get_all(fd)) == [(NS, "color")]
    finally:
        os.close(fd)
    os.rename(f, tmp_path / "b")                     # MOVE keeps the inode, so the properties
    fd = opened(tmp_path / "b")
    try:
        assert (NS, "color") in deadprops.get_all(fd)
    finally:
        os.close(fd)


def test_all_or_nothing_when_the_attribute_space_runs_out(tmp_path):
    f = tmp_path / "a"
    f.write_bytes(b"x")
    fd = opened(f)
    try:
        deadprops.apply(fd, [PropChange(False, (NS, "keep"), b"<keep>old</keep>")])
        big = [PropChange(False, (NS, "keep"), b"<keep>new</keep>")] + [
            PropChange(False, (NS, f"p{i}"), b"<p>" + b"v" * 3000 + b"</p>") for i in range(8)]
        with pytest.raises(deadprops.DeadPropError) as exc:     # ext4: one 4 KiB block for all of them
            deadprops.apply(fd, big)
        assert exc.value.status == 507
        assert deadprops.get_all(fd) == {(NS, "keep"): b"<keep>old</keep>"}
    finally:
        os.close(fd)


def test_copy(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"1")
    b.write_bytes(b"2")
    fa, fb = opened(a), opened(b)
    try:
        deadprops.apply(fa, [PropChange(False, (NS, "x"), b"<x/>")])
        deadprops.apply(fb, [PropChange(False, (NS, "old"), b"<old/>")])
        deadprops.copy(fa, fb)
        assert deadprops.get_all(fb) == {(NS, "x"): b"<x/>"}
        assert deadprops.supported(fa)
    finally:
        os.close(fa)
        os.close(fb)
