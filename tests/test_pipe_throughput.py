"""The pipe.throughput probe: shape of the finding, quick mode, cleanup."""

from __future__ import annotations

import os

from probes.finding import Status
from probes.runner import Context, run_module


def test_finding_shape_and_cleanup(fd_guard, tmp_path):
    findings = run_module("pipe_throughput", Context(path=str(tmp_path)))
    assert [f.id for f in findings] == ["pipe.throughput"], findings
    f = findings[0]
    assert f.status is Status.OK, f.detail
    sizes = {int(k): v for k, v in f.value["sizes"].items()}
    assert sorted(sizes) == [64 << 10, 128 << 10, 256 << 10, 512 << 10, 1 << 20]
    assert all(v > 0 for v in sizes.values())
    assert f.value["best_size"] in sizes
    best = max(sizes.values())
    assert sizes[f.value["best_size"]] >= best * 0.95
    assert all(size >= f.value["best_size"] or rate < best * 0.95 for size, rate in sizes.items())
    assert "GB/s" in f.detail
    assert os.listdir(tmp_path) == []


def test_quick_skips():
    (f,) = run_module("pipe_throughput", Context(quick=True))
    assert f.id == "pipe.throughput" and f.status is Status.SKIPPED and f.value is None
