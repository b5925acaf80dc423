"""The tar body plan, read back by Python's tarfile (a real, independent reader) and by GNU tar."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zcopy.http import tar


def materialise(body) -> bytes:
    out = bytearray()
    for seg in body:
        if isinstance(seg, bytes):
            out += seg
        else:
            fd, start, stop = seg
            out += os.pread(fd, stop - start, start)
    return bytes(out)


def build(tmp_path, tree: dict[bytes, bytes | None]):
    """tree: relative name -> content (None: a folder). Returns the archive bytes and opened fds."""
    members, fds = [], []
    for name, content in tree.items():
        if content is None:
            members.append((tar.Member(name, True, 0, 1700000000, 0o755), None))
            continue
        path = os.path.join(os.fsencode(tmp_path), b"f%d" % len(fds))
        with open(path, "wb") as f:
            f.write(content)
        fd = os.open(path, os.O_RDONLY)
        fds.append(fd)
        members.append((tar.Member(name, False, len(content), 1700000000, 0o644), fd))
    body, length = tar.plan(members)
    data = materialise(body)
    for fd in fds:
        os.close(fd)
    assert len(data) == length and length % tar.BLOCK == 0
    return data


ODD = {
    b"docs": None,
    b"docs/a b.txt": b"hello\n",
    b"docs/\xc3\xa9t\xc3\xa9 \xe2\x9c\x93.txt": b"unicode name",
    b"docs/" + b"long" * 40 + b".bin": os.urandom(1000),           # > 100 bytes: pax path
    b"deep/" + b"/".join([b"d%02d" % i for i in range(40)]) + b"/f": b"x" * 513,
    b"latin1-\xe9.txt": b"not utf-8 name",                          # pax hdrcharset=BINARY
    b"empty": b"",
    b"exact": b"y" * 512,
}


def test_tarfile_reads_every_member(tmp_path):
    data = build(tmp_path, ODD)
    with tarfile.open(fileobj=io.BytesIO(data), encoding="utf-8", errors="surrogateescape") as t:
        got = {os.fsencode(m.name): (None if m.isdir() else t.extractfile(m).read()) for m in t.getmembers()}
    assert got == ODD


@pytest.mark.skipif(shutil.which("tar") is None, reason="no tar")
def test_gnu_tar_extracts_byte_identical(tmp_path):
    data = build(tmp_path, ODD)
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(["tar", "-x", "-C", str(out)], input=data, check=True, capture_output=True)
    for name, content in ODD.items():
        path = os.path.join(os.fsencode(out), name)
        if content is None:
            assert os.path.isdir(path)
        else:
            with open(path, "rb") as f:
                assert f.read() == content


def test_header_of_a_huge_file_uses_pax_size():
    h = tar.header(tar.Member(b"big", False, 10 * 2**30, 0, 0o644))
    assert b"size=10737418240\n" in h
    hdr = tarfile.TarInfo.frombuf(h[-512:], "utf-8", "surrogateescape")
    assert hdr.name == "big"


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(
    st.lists(st.binary(min_size=1, max_size=30).filter(lambda b: b"/" not in b and b"\0" not in b
                                                        and b not in (b".", b"..")), min_size=1, max_size=6)
    .map(lambda parts: b"/".join(parts)),
    st.binary(max_size=700), max_size=5))
def test_any_names_round_trip(tmp_path_factory, files):
    tmp = tmp_path_factory.mktemp("t")
    data = build(tmp, files)
    with tarfile.open(fileobj=io.BytesIO(data), encoding="utf-8", errors="surrogateescape") as t:
        got = {os.fsencode(m.name): t.extractfile(m).read() for m in t.getmembers() if m.isfile()}
    assert got == files
