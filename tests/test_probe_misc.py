"""kTLS, io_uring, MSG_ZEROCOPY, cork and filesystem probes on the real kernel."""

import os

import pytest

from probes import Context, Status
from probes import cork, filesystem, io_uring, ktls, msg_zerocopy
from probes.kernel import read_int


def one(module, ctx=None):
    return {f.id: f for f in module.probe(ctx or Context())}


def test_ktls_answer_is_consistent():
    f = one(ktls)["ktls.ulp"]
    assert f.status in (Status.OK, Status.UNSUPPORTED, Status.SKIPPED, Status.DEGRADED), f.detail
    if f.status is Status.OK:
        assert f.value == {"ulp": True, "tls_tx": True}
    else:
        assert f.value["tls_tx"] is False


def test_io_uring_matches_sysctl():
    f = one(io_uring)["io_uring.setup"]
    disabled = read_int("/proc/sys/kernel/io_uring_disabled")
    assert f.value["io_uring_disabled"] == disabled
    if disabled == 2:
        assert f.status is Status.UNSUPPORTED
    if f.status is Status.OK:
        assert f.value["setup"] is True and f.value["features"] > 0


def test_msg_zerocopy_completion_on_loopback_reports_copied():
    f = one(msg_zerocopy)["msg_zerocopy.completion"]
    assert f.status is Status.OK, f.detail
    assert f.value["so_zerocopy"] and f.value["completion"]
    assert f.value["copied"] is True  # loopback must copy for the receiver


def test_cork_and_msg_more_hold_then_release():
    found = one(cork)
    for fid in ("tcp_cork.cork", "tcp_cork.msg_more"):
        assert found[fid].status is Status.OK, found[fid].detail
        assert found[fid].value == {"held": True, "released": True}


def test_filesystem_of_a_temp_dir(tmp_path):
    found = one(filesystem, Context(path=str(tmp_path)))
    t = found["filesystem.type"].value
    assert t["path"] == str(tmp_path) and t["dev"] == os.stat(tmp_path).st_dev
    assert int(t["magic"], 16) in filesystem.MAGIC or t["type"] == "unknown"
    for fid in ("filesystem.sendfile", "filesystem.splice", "filesystem.mmap"):
        assert found[fid].status is Status.OK, found[fid].detail
    assert list(tmp_path.iterdir()) == []  # the temp file is gone


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="no /dev/shm here")
def test_filesystem_names_tmpfs():
    assert one(filesystem, Context(path="/dev/shm"))["filesystem.type"].value["type"] == "tmpfs"


def test_filesystem_read_only_path_reads_an_existing_file():
    found = one(filesystem, Context(path="/proc/self"))
    assert found["filesystem.type"].value["type"] == "proc"
    assert len(found) == 4  # a verdict for each check, whatever /proc allows


def test_filesystem_of_a_missing_path_is_an_error():
    found = one(filesystem, Context(path="/no/such/zcopy/path"))
    assert found["filesystem.type"].status is Status.ERROR
    assert "ENOENT" in found["filesystem.type"].detail
