"""tools/bench_serve.py runs end to end (quick mode, no speed bar) and leaves nothing behind."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

TOOL = os.path.join(os.path.dirname(__file__), "..", "tools", "bench_serve.py")
sys.path.insert(0, os.path.dirname(TOOL))
from bench_serve import median_interval, parse_strace_summary, verdict  # noqa: E402

needs = pytest.mark.skipif(
    len(os.sched_getaffinity(0)) < 2 or not all(shutil.which(t) for t in ("wrk", "nginx", "taskset")),
    reason="needs two CPUs, wrk, nginx and taskset")


def bench(*args: str, path: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if path is not None:
        env["PATH"] = path
    return subprocess.run([sys.executable, TOOL, *args], capture_output=True, text=True, timeout=300, env=env)


@pytest.fixture(autouse=True)
def private_tmpdir(monkeypatch):
    """The tool makes its folders (configs, pid files, the served tree) under TMPDIR: a folder of
    this test's own, so the leftover check sees this run's processes, not another benchmark's.
    Not under pytest's tmp_path: that is 0700, and nginx's workers (another user) must read it."""
    folder = tempfile.mkdtemp(prefix="zcopy-test-bench-")
    os.chmod(folder, 0o755)
    monkeypatch.setenv("TMPDIR", folder)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def leftovers() -> list[str]:
    """Live processes started from one of this test's tool temp folders."""
    mine = os.path.join(os.environ["TMPDIR"], "zcopy-bench-")
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if mine in cmd:
            found.append(cmd)
    return found


def only(tmp_path, *tools: str) -> str:
    """A PATH holding just these tools (the tool finds peers with `which`)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in tools:
        os.symlink(shutil.which(tool), bindir / tool)
    return str(bindir)


@needs
@pytest.mark.skipif(shutil.which("cc") is None, reason="needs cc (tools/discard_client.c)")
def test_quick_run_with_the_discarding_client_skips_a_missing_peer_and_says_who_bounded_the_rate(tmp_path):
    """One quick run (each costs ~12 s of the suite) for three things: a peer not installed is
    skipped with a message, the discarding client loads the servers, and the report says who bounded
    the rate and where the large pulls' CPU went."""
    out = bench("--quick", "--servers", "zcopy,nginx,lighttpd", "--client", "discard",
                path=only(tmp_path, "wrk", "nginx", "taskset", "cc", "as", "ld"))   # (cc runs as and ld)
    assert out.returncode == 0, out.stderr
    assert "skipping lighttpd: not installed (Debian: apt-get install lighttpd)" in out.stderr
    assert "tools/discard_client.c -c64" in out.stdout and "not a 200" not in out.stderr
    rates, rest = out.stdout.split("Who bounded the rate")
    rows = {line.split("|")[1].strip(): line for line in rates.splitlines() if line.startswith("| ")}
    assert {"zcopy", "nginx"} <= set(rows) and "lighttpd" not in rows
    for name in ("zcopy", "nginx"):
        cells = [c.strip() for c in rows[name].split("|")[2:-1]]
        assert float(cells[0].replace(",", "")) > 0 and float(cells[4].replace(",", "")) > 0, rows[name]
    assert "| best peer |" in out.stdout and "server pinned to CPU" in out.stdout
    # who bounded the rate: each server's busy share, the client's CPU per request and busy share
    shares = [line for line in rest.split("Where the large pulls' server CPU went")[0].splitlines()
              if line.startswith(("| zcopy |", "| nginx |"))]
    assert len(shares) == 2, rest
    for line in shares:
        cells = [float(c) for c in line.split("|")[2:-1]]
        server_busy, load_us, load_busy = cells[0], cells[1], cells[2]
        assert 0 < server_busy <= 1.2 and load_us > 0 and 0 < load_busy <= 1.2, line
    # where the large pulls' CPU went: the exact CPU time (CPU clocks) is above 0, and pinned, the
    # server's CPU took timer interrupts (at least the scheduler tick while it was busy). Its user and
    # system parts come in 10 ms ticks: nginx sends a quick run's 64 MiB in less than one (a CI run
    # saw user 0, system 0), so they are only sure not to be negative.
    costs = rest.split("Where the large pulls' server CPU went")[1].split("zcopy / peer")[0]
    cost_rows = [line for line in costs.splitlines() if line.startswith(("| zcopy |", "| nginx |"))]
    assert len(cost_rows) == 2, costs
    for line in cost_rows:
        cpu, user, system, timers = (float(c.replace(",", "")) for c in line.split("|")[2:-1])
        assert cpu > 0 and user >= 0 and system >= 0 and timers > 0, line
    assert leftovers() == []
    assert not [name for name in os.listdir(os.environ["TMPDIR"]) if name.startswith("zcopy-discard-")]


@needs
def test_quick_run_with_two_workers_unpinned():
    out = bench("--quick", "--workers", "2", "--servers", "zcopy,nginx")
    assert out.returncode == 0, out.stderr
    assert "2 workers per server, NOT pinned" in out.stdout and "wrk -t2" in out.stdout
    lines = out.stdout.splitlines()
    # the rates, who bounded them and where the large pulls' CPU went; nginx also in zcopy / peer
    assert sum(line.startswith("| zcopy |") for line in lines) == 3
    assert sum(line.startswith("| nginx |") for line in lines) == 4
    assert leftovers() == []


@needs
@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace")
def test_syscall_counts_per_request():
    out = bench("--syscalls", "200", "--servers", "zcopy,nginx", "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["requests"] == 200 and set(report["per_request"]) == {"zcopy", "nginx"}
    assert set(report["failed_per_request"]) == {"zcopy", "nginx"}
    for name, calls in report["per_request"].items():
        # every request is read and answered: at least one receive and one send each
        received = sum(n for call, n in calls.items() if call in ("read", "recvfrom", "recvmsg", "readv"))
        sent = sum(n for call, n in calls.items() if call in ("write", "writev", "sendto", "sendmsg", "sendfile"))
        assert received >= 0.99 and sent >= 0.99, (name, calls)
    assert leftovers() == []


@needs
def test_idle_connections_memory():
    """Every server holds the idle connections (the tool asks the first and the last again) and
    its resident memory is read before and while it holds them."""
    out = bench("--idle", "300", "--servers", "zcopy,nginx", "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["connections"] == 300 and set(report["rss_kib"]) == {"zcopy", "nginx"}
    for name, rss in report["rss_kib"].items():
        assert rss["before"] > 0 and rss["held"] > 0, (name, rss)
        assert rss["per_connection"] == pytest.approx((rss["held"] - rss["before"]) / 300)
        # the worker (the process that holds the connections) is one of the server's two processes
        assert rss["processes"] == 2, (name, rss)
        assert 0 < rss["worker_before"] < rss["before"] and 0 < rss["worker_held"] < rss["held"], (name, rss)
        assert rss["worker_per_connection"] == pytest.approx((rss["worker_held"] - rss["worker_before"]) / 300)
    assert leftovers() == []


@needs
def test_latency_beside_large_pulls():
    """--beside: every server answers the 64 KiB GETs while its large file is being pulled, and the
    table has a row of percentiles for each."""
    out = bench("--beside", "20", "--rounds", "1", "--large", "64MiB", "--servers", "zcopy,nginx")
    assert out.returncode == 0, out.stderr
    rows = {line.split("|")[1].strip(): line for line in out.stdout.splitlines() if line.startswith("| ")}
    for name in ("zcopy", "nginx"):
        p50, p90, p99, worst = (float(x.replace(",", "")) for x in rows[name].split("|")[2:6])
        assert 0 < p50 <= p90 <= p99 <= worst, rows[name]
    assert leftovers() == []


def test_parse_strace_summary_of_a_real_run(tmp_path):
    if shutil.which("strace") is None:
        pytest.skip("needs strace")
    out = tmp_path / "summary"
    subprocess.run(["strace", "-c", "-o", str(out), "true"], check=True)
    calls = parse_strace_summary(out.read_text())
    assert calls["execve"] == (1, 0) and "total" not in calls and all(n > 0 for n, _ in calls.values())
    subprocess.run(["strace", "-c", "-o", str(out), "cat", str(tmp_path / "missing")], capture_output=True)
    calls = parse_strace_summary(out.read_text())
    assert calls["openat"][1] >= 1            # the missing file: a failed call, counted as such


@pytest.mark.parametrize("flags", [["--servers", "apache"], ["--rounds", "0"], ["--syscalls", "0"], ["--idle", "0"],
                                   ["--idle", "100000"], ["--idle", "10", "--syscalls", "10"], ["--beside", "1"]])
def test_bad_flags_one_line_exit_2(flags):
    out = bench(*flags)
    assert out.returncode == 2 and out.stderr.strip().splitlines()[-1].startswith("bench_serve.py: error:"), out.stderr


@pytest.mark.parametrize("n", [6, 7, 10, 20, 25, 60, 100])
def test_the_median_interval_is_the_narrowest_pair_of_order_statistics_that_covers_95_percent(n):
    """The interval [x(k), x(n+1-k)] holds the median unless at most k-1 values fall on one side:
    its coverage is 1 - 2 P(Binomial(n, 1/2) <= k-1). It must reach 95%, and the next k must not."""
    values = list(range(n))
    low, high = median_interval(values)
    k = low + 1
    assert high == n - k

    def coverage(k):
        return 1 - 2 * sum(math.comb(n, i) for i in range(k)) / 2 ** n
    assert coverage(k) >= 0.95 and coverage(k + 1) < 0.95
    if n == 20:                 # the textbook case: x(6)..x(15) of 20
        assert (low, high) == (5, 14)


def test_the_verdict_says_above_below_or_not_distinguishable():
    assert median_interval([1.0] * 5) is None and verdict([1.0] * 5) == "too few rounds for a 95% interval"
    assert verdict(sorted([1.02, 1.05, 1.03, 1.08, 1.04, 1.06, 1.01, 1.07])).endswith(": above 1")
    assert verdict(sorted([0.92, 0.95, 0.93, 0.98, 0.94, 0.96, 0.91, 0.97])).endswith(": below 1")
    assert verdict(sorted([0.98, 1.01, 0.99, 1.03, 1.00, 1.02, 0.97, 1.04])).endswith(": not distinguishable from 1")
