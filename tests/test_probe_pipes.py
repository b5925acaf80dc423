"""pipe.setpipe_sz against the real kernel (as an unprivileged user: test_probe_unprivileged.py)."""

import pytest

from probes import Status
from probes import pipes
from probes.kernel import read_int
from conftest import needs_root


@pytest.fixture(scope="module")
def value():
    f = pipes.measure()
    assert f.status is Status.OK, f.detail
    return f.value


def test_max_size_is_proc_pipe_max_size(value):
    assert value["max_size"] == read_int("/proc/sys/fs/pipe-max-size")


def test_limits_are_read_from_proc(value):
    assert value["user_pages_soft"] == read_int("/proc/sys/fs/pipe-user-pages-soft")
    assert value["user_pages_hard"] == read_int("/proc/sys/fs/pipe-user-pages-hard")


def test_odd_request_is_rounded_up_to_power_of_two_pages(value):
    got = value["rounding"]["got"]
    pages = got // value["page_size"]
    assert got >= 100_000 and pages & (pages - 1) == 0
    assert got < 2 * 100_000 + value["page_size"]


def test_default_and_largest(value):
    assert value["default_size"] == 16 * value["page_size"]
    assert value["largest_granted"] == value["max_size"]


def test_budget_arithmetic():
    page = pipes.PAGE
    assert pipes.budget_pipes(1024 * 1024, 16384) == 16384 // (1024 * 1024 // page)
    assert pipes.budget_pipes(100_000, 1000) == 1000 // 32  # rounds up to 32 pages
    assert pipes.budget_pipes(65536, 0) is None


@needs_root
def test_root_is_exempt_and_detail_says_so(value):
    assert value["root_exempt"] is True
    assert value["budget"]["applies"] is False
    assert "CAP_SYS_RESOURCE" in pipes.measure().detail
