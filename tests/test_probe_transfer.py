"""sendfile, splice and copy_file_range probes against the real kernel."""

import os

import pytest

from probes import Context, Status
from probes import copy_file_range, sendfile, splice


def by_id(module, ctx=None):
    return {f.id: f for f in module.probe(ctx or Context())}


@pytest.fixture(scope="module")
def sf():
    return by_id(sendfile)


@pytest.mark.parametrize("dest", ["tcp", "unix", "pipe", "file"])
def test_sendfile_destinations_deliver_intact_bytes(sf, dest):
    f = sf[f"sendfile.file_to_{dest}"]
    assert f.status is Status.OK, f.detail
    assert f.value is True


def test_sendfile_call_cap_is_the_man_page_value(sf):
    f = sf["sendfile.call_cap"]
    assert f.status is Status.OK
    assert f.value == 0x7FFFF000


def test_sendfile_short_count_then_eagain(sf):
    v = sf["sendfile.short_count"].value
    assert 0 < v["accepted"] < v["asked"]
    assert v["then"] == "EAGAIN"


def test_sendfile_at_and_past_eof_return_zero(sf):
    assert sf["sendfile.eof"].value == {"at_eof": 0, "past_eof": 0, "count_past_eof": 10}


def test_sendfile_proc_file_reports_zero_st_size(sf):
    f = sf["sendfile.proc_file"]
    assert f.value["st_size"] == 0
    # Either the kernel refuses (EINVAL) or it moves real content despite st_size 0.
    assert (f.status is Status.UNSUPPORTED and f.value["sent"] is None) or \
           (f.status is Status.OK and f.value["sent"] > 0)


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="no /dev/shm tmpfs here")
def test_sendfile_from_tmpfs(sf):
    assert sf["sendfile.tmpfs"].status is Status.OK


def test_splice_legs_and_flags():
    found = by_id(splice)
    for leg in ("file_to_pipe", "pipe_to_socket", "socket_to_pipe", "pipe_to_file"):
        assert found[f"splice.{leg}"].status is Status.OK, found[f"splice.{leg}"].detail
    assert found["splice.flags"].value == {"SPLICE_F_NONBLOCK": True, "SPLICE_F_MORE": True, "SPLICE_F_MOVE": True}


def test_splice_all_stops_at_end_of_source(tmp_path):
    data = b"abc" * 1000
    path = tmp_path / "src"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    r, w = os.pipe()
    try:
        assert splice.splice_all(fd, w, 10 * len(data), offset_src=0) == len(data)
        assert os.read(r, 10 * len(data)) == data
    finally:
        for x in (fd, r, w):
            os.close(x)


def test_copy_file_range_same_fs_and_cross_fs_is_decided():
    found = by_id(copy_file_range)
    assert found["copy_file_range.same_fs"].status is Status.OK
    cross = found["copy_file_range.cross_fs"]
    # 5.12-5.18 refuse with EXDEV, others copy: either way a definite answer, never "error".
    assert cross.status in (Status.OK, Status.UNSUPPORTED, Status.SKIPPED), cross.detail
    if cross.status is Status.UNSUPPORTED:
        assert "EXDEV" in cross.detail or "EOPNOTSUPP" in cross.detail or "EINVAL" in cross.detail
