"""tools/bench_uring.py runs end to end (one short round, no speed bar), its servers answer
every request with the held reply, and it leaves nothing behind."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

TOOL = os.path.join(os.path.dirname(__file__), "..", "tools", "bench_uring.py")

needs = pytest.mark.skipif(
    len(os.sched_getaffinity(0)) < 2 or not all(shutil.which(t) for t in ("wrk", "taskset")),
    reason="needs two CPUs, wrk and taskset")


def has_liburing() -> bool:
    return subprocess.run([sys.executable, "-c", "import liburing"], capture_output=True,
                          check=False).returncode == 0


def leftovers() -> list[str]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "bench_uring.py serve" in cmd:
            found.append(cmd)
    return found


@needs
def test_one_round_of_every_mode_this_interpreter_has():
    """The tool checks each server's replies before measuring (three whole replies for one
    request and two pipelined ones) and fails if they differ; the io_uring modes run only where
    liburing imports, else the tool says so and measures epoll alone."""
    modes = ["epoll", "uring", "uring-multishot"] if has_liburing() else ["epoll"]
    out = subprocess.run([sys.executable, TOOL, "--modes", ",".join(modes + ["uring"]), "--rounds", "1",
                          "--duration", "1", "--connections", "8", "--json"],
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    if modes == ["epoll"]:
        assert "cannot import liburing" in out.stderr
    report = json.loads(out.stdout)
    assert set(report["raw"]) == set(modes)
    for mode in modes:
        raw = report["raw"][mode]
        assert raw["rps"][0] > 0 and raw["user"][0] + raw["sys"][0] > 0, (mode, raw)
        served = report["server"][mode]
        assert served["mode"] == mode and served["requests"] > 0 and served["turns"] > 0, served
    assert leftovers() == []


def test_unknown_mode_is_a_usage_error():
    out = subprocess.run([sys.executable, TOOL, "--modes", "kqueue"], capture_output=True, text=True,
                         timeout=60, check=False)
    assert out.returncode == 2 and "unknown mode" in out.stderr
