"""Profile: the report schema, the decisions, the cache, and `zcopy probe` itself."""

import json
import os
import re
import subprocess
import sys

import pytest

from probes import Context
from zcopy import profile

FINDING_KEYS = {"id", "status", "value", "detail"}
NIC_KEYS = {"name", "driver", "mtu", "features", "zero_copy_tx", "reason"}
PIPE_KEYS = {"default_size", "max_size", "best_size", "user_pages_soft", "user_pages_hard", "largest_granted",
             "rounding", "budget"}
REC_KEYS = {"download_engine", "upload_engine", "relay_engine", "pipe_size", "chunk_size", "workers", "prefetch",
            "small_reply_max", "notsent_lowat", "https", "reasons", "source"}


@pytest.fixture(scope="module")
def report():
    return profile.build_report(Context(quick=True))


def test_report_schema(report):
    assert list(report) == ["kernel", "findings", "nics", "pipes", "recommendation"]
    assert report["kernel"]["release"] == os.uname().release
    assert all(set(f) == FINDING_KEYS for f in report["findings"])
    assert all(f["status"] in ("ok", "unsupported", "degraded", "error", "skipped") for f in report["findings"])
    ids = {f["id"] for f in report["findings"]}
    assert {"sendfile.file_to_tcp", "splice.socket_to_pipe", "pipe.setpipe_sz", "nic.lo"} <= ids
    assert all(NIC_KEYS <= set(n) for n in report["nics"]) and report["nics"]
    assert PIPE_KEYS <= set(report["pipes"])
    rec = report["recommendation"]
    assert set(rec) == REC_KEYS
    assert set(rec["reasons"]) == REC_KEYS - {"reasons", "source"}
    json.dumps(report)  # plain JSON all the way down


def test_recommendation_on_this_kernel(report):
    rec = report["recommendation"]
    assert rec["download_engine"] == "sendfile"  # sendfile to TCP works on every kernel we run on
    assert rec["upload_engine"] == "splice"
    assert rec["relay_engine"] == "splice" and "socket -> pipe" in rec["reasons"]["relay_engine"]
    assert rec["workers"] == len(os.sched_getaffinity(0))
    assert rec["pipe_size"] <= report["pipes"]["max_size"] or report["pipes"]["root_exempt"]
    assert "pipe.throughput" in rec["reasons"]["pipe_size"]  # quick: says why no measurement was used


def _with(report, fid, **changes):
    findings = [dict(f, **changes) if f["id"] == fid else f for f in report["findings"]]
    return dict(report, findings=findings)


def test_engines_fall_back_when_the_kernel_refuses(report):
    no_sendfile = _with(report, "sendfile.file_to_tcp", status="unsupported")
    assert profile.recommend(no_sendfile).download_engine == "splice"
    neither = _with(no_sendfile, "splice.pipe_to_socket", status="unsupported")
    assert profile.recommend(neither).download_engine == "mmap_send"
    nothing = _with(neither, "filesystem.mmap", status="unsupported")
    assert profile.recommend(nothing).download_engine == "read_send"
    no_up = _with(report, "splice.socket_to_pipe", status="unsupported")
    p = profile.recommend(no_up)
    assert p.upload_engine == "recv_pwrite" and "splice.socket_to_pipe" in p.reasons["upload_engine"]
    assert p.relay_engine == "copy" and "splice.socket_to_pipe" in p.reasons["relay_engine"]
    no_out = _with(report, "splice.pipe_to_socket", status="error", detail="EINVAL")
    p = profile.recommend(no_out)
    assert p.relay_engine == "copy" and "splice.pipe_to_socket: EINVAL" in p.reasons["relay_engine"]


def test_pipe_size_uses_measured_best_size(report):
    measured = dict(report, findings=report["findings"] + [
        {"id": "pipe.throughput", "status": "ok", "value": {"sizes": {"65536": 5.0, "262144": 9.9}, "best_size": 262144},
         "detail": ""}])
    measured = _with(measured, "pipe_throughput.probe", status="ok")
    p = profile.recommend(measured)
    assert p.pipe_size == 262144 and "measured" in p.reasons["pipe_size"]


def test_small_reply_max_is_the_measured_crossover(report):
    finding = next(f for f in report["findings"] if f["id"] == "small_reply.crossover")
    assert finding["status"] == "ok", finding["detail"]
    rec = report["recommendation"]
    assert rec["small_reply_max"] == finding["value"]["small_reply_max"]
    assert "small_reply.crossover" in rec["reasons"]["small_reply_max"]


def _crossover(report, limit, largest, **sizes):
    value = {"sizes": {k.lstrip("_"): {"copy_us": c, "sendfile_us": f} for k, (c, f) in sizes.items()},
             "small_reply_max": limit, "largest_measured": largest, "held_back": [], "iterations": 10}
    return _with(report, "small_reply.crossover", status="ok", value=value)


@pytest.mark.parametrize("limit, largest, words", [
    (16384, 65536, "up to 16.0 KiB (2.0 against 3.0 µs per reply there); above 16.0 KiB sendfile was faster"),
    (65536, 65536, "it still won at 64.0 KiB, the largest size measured"),
    (0, 65536, "never faster than send(head, MSG_MORE) + sendfile here (at 256 B: 5.0 against 4.0 µs)"),
])
def test_small_reply_max_reason_in_words(report, limit, largest, words):
    sizes = {"_256": (5.0, 4.0)} if limit == 0 else {"_256": (1.0, 2.0), f"_{limit}": (2.0, 3.0)}
    p = profile.recommend(_crossover(report, limit, largest, **sizes))
    assert p.small_reply_max == limit and words in p.reasons["small_reply_max"], p.reasons["small_reply_max"]


@pytest.mark.parametrize("status", ["error", None])
def test_small_reply_max_is_0_when_not_measured(report, status):
    if status is None:       # the probe module never ran (an old cached report)
        broken = dict(report, findings=[f for f in report["findings"] if f["id"] != "small_reply.crossover"])
    else:
        broken = _with(report, "small_reply.crossover", status=status, value=None, detail="it overran")
    p = profile.recommend(broken)
    assert p.small_reply_max == 0 and "measured nothing" in p.reasons["small_reply_max"]
    assert "head + sendfile" in p.reasons["small_reply_max"]


def test_notsent_lowat_is_the_measured_choice(report):
    finding = next(f for f in report["findings"] if f["id"] == "notsent_lowat.rates")
    assert finding["status"] == "ok", finding["detail"]
    rec = report["recommendation"]
    assert rec["notsent_lowat"] == finding["value"]["notsent_lowat"]
    assert "notsent_lowat.rates" in rec["reasons"]["notsent_lowat"] or "kernel's default" in rec["reasons"]["notsent_lowat"]


def _lowat(report, chosen, **rates):
    value = {"rates": {k.lstrip("_"): r for k, r in rates.items()}, "notsent_lowat": chosen, "transfer": 1 << 27,
             "rounds": 5, "sysctl": "4294967295", "receiver": "other_cpu"}
    return _with(report, "notsent_lowat.rates", status="ok", value=value)


@pytest.mark.parametrize("chosen, rates, words", [
    (262144, {"_0": 3.1, "_262144": 15.0}, "with at most 256.0 KiB unsent, large loopback transfers ran 15.00 GB/s "
                                           "against 3.10 with the kernel's default"),
    (0, {"_0": 3.1, "_262144": 3.2}, "no cap on unsent bytes made large loopback transfers clearly faster "
                                     "(best 256.0 KiB: 3.20 against 3.10 GB/s), so the kernel's default holds"),
])
def test_notsent_lowat_reason_in_words(report, chosen, rates, words):
    p = profile.recommend(_lowat(report, chosen, **rates))
    assert p.notsent_lowat == chosen and words in p.reasons["notsent_lowat"], p.reasons["notsent_lowat"]


@pytest.mark.parametrize("status", ["error", None])
def test_notsent_lowat_is_0_when_not_measured(report, status):
    if status is None:       # the probe module never ran
        broken = dict(report, findings=[f for f in report["findings"] if f["id"] != "notsent_lowat.rates"])
    else:
        broken = _with(report, "notsent_lowat.rates", status=status, value=None, detail="it overran")
    p = profile.recommend(broken)
    assert p.notsent_lowat == 0 and "measured nothing (it" in p.reasons["notsent_lowat"]


def test_cache_key_changes_with_the_probe_modules(monkeypatch):
    """A report cached by a zcopy with fewer probes lacks their findings: a new module means a new key."""
    from probes import runner

    before = profile.cache_key()
    monkeypatch.setattr(runner, "MODULES", [*runner.MODULES, "a_new_probe"])
    assert profile.cache_key() != before


def test_pipe_size_fits_the_unprivileged_budget(report):
    facts = next(f for f in report["findings"] if f["id"] == "pipe.setpipe_sz")["value"]
    unpriv = _with(report, "pipe.setpipe_sz", value=dict(facts, root_exempt=False, user_pages_soft=16384))
    p = profile.recommend(unpriv)
    from probes.pipes import budget_pipes
    assert budget_pipes(p.pipe_size, 16384) >= profile.EXPECTED_CONNECTIONS
    assert "16384 pages" in p.reasons["pipe_size"]


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="no /dev/shm tmpfs here")
def test_prefetch_off_for_tmpfs_and_on_for_disk(tmp_path):
    assert profile.load_or_probe("/dev/shm").prefetch is False
    from probes.filesystem import fs_type
    on_disk = fs_type(str(tmp_path))[0] not in ("tmpfs", "ramfs")
    assert profile.load_or_probe(str(tmp_path)).prefetch is on_disk


def test_load_or_probe_without_a_cache_probes_quickly(tmp_path, monkeypatch):
    """No cached profile: ``serve --auto`` probes now, in quick mode (fewer iterations; how long
    that takes is a figure in docs/probe.md, not a timed test)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    from probes import small_reply

    reports = []
    real = profile.build_report
    monkeypatch.setattr(profile, "build_report", lambda ctx, **kw: reports.append(real(ctx, **kw)) or reports[-1])
    p = profile.load_or_probe(".")
    assert p.source == "probed now" and len(reports) == 1
    crossover = {f["id"]: f for f in reports[0]["findings"]}["small_reply.crossover"]
    assert crossover["value"]["iterations"] == small_reply.QUICK_ITERATIONS < small_reply.ITERATIONS


def test_save_then_load_round_trips(report, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert profile.load_cached() is None
    path = profile.save(report)
    assert path.parent == tmp_path / "zcopy"
    assert profile.load_cached() == report
    p = profile.load_or_probe(".")
    assert p.source == f"cache {path}"
    assert p.download_engine == report["recommendation"]["download_engine"]


def test_cached_report_for_another_filesystem_reprobes_it(report, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    profile.save(report)
    if not os.path.isdir("/dev/shm") or os.stat("/dev/shm").st_dev == os.stat(".").st_dev:
        pytest.skip("needs /dev/shm on its own filesystem")
    assert profile.load_or_probe("/dev/shm").prefetch is False


def test_corrupt_cache_is_ignored(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    path = profile.cache_path()
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    assert profile.load_cached() is None


def zcopy(*args, env=None):
    return subprocess.run([sys.executable, "-m", "zcopy", "probe", *args], capture_output=True, text=True,
                          timeout=60, env=env)


def test_cli_json_is_one_object(tmp_path):
    out = zcopy("--quick", "--json", "--path", str(tmp_path), "--to", "127.0.0.1")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert list(data) == ["kernel", "findings", "nics", "pipes", "recommendation"]
    assert any(f["id"] == "nic.egress" and f["value"]["name"] == "lo" for f in data["findings"])


def test_cli_save_writes_the_cache(tmp_path):
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path))
    out = zcopy("--quick", "--save", "--json", env=env)
    assert out.returncode == 0, out.stderr
    files = list((tmp_path / "zcopy").glob("probe-*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text()) == json.loads(out.stdout)
    assert "saved to" in out.stderr


def test_cli_save_to_an_unusable_cache_is_one_line_and_exit_1(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache folder would go")
    out = zcopy("--quick", "--save", "--json", env=dict(os.environ, XDG_CACHE_HOME=str(blocker)))
    assert out.returncode == 1
    assert list(json.loads(out.stdout)) == ["kernel", "findings", "nics", "pipes", "recommendation"]  # still printed
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("zcopy probe: error: cannot save the report under"), out.stderr


def test_relative_xdg_cache_home_is_ignored(monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")
    assert profile.cache_dir() == profile.Path(os.path.expanduser("~")) / ".cache" / "zcopy"


def test_cli_tables_and_recommendation_panel(tmp_path):
    out = zcopy("--quick", "--path", str(tmp_path))
    assert out.returncode == 0, out.stderr
    for word in ("sendfile(2)", "splice(2)", "pipes", "NICs", "Recommendation", "download_engine", "pipe_size"):
        assert word in out.stdout
    # each NIC row names its offloads and the verdict; sizes read in KiB/MiB as well as bytes
    assert "sg on" in out.stdout and "zero-copy tx" in out.stdout
    pipe_line = next(line for line in out.stdout.splitlines() if "pipe_size" in line)
    assert "KiB" in pipe_line or "MiB" in pipe_line


def test_cli_missing_path_is_exit_2():
    out = zcopy("--path", "/no/such/zcopy/dir")
    assert out.returncode == 2
    assert len(out.stderr.strip().splitlines()) == 1


def test_serve_auto_runs_with_the_saved_profile(report, tmp_path, monkeypatch):
    """`serve --auto` takes its engines from the --save cache (not a fresh probe): a cached report in
    which sendfile failed makes it serve with splice, and say the choice came from the cache."""
    from serverutil import Server, curl

    cache = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))   # for save() here and the server below
    saved = profile.save(_with(report, "sendfile.file_to_tcp", status="unsupported"))
    root = tmp_path / "root"
    root.mkdir()
    (root / "hello.txt").write_bytes(b"hello from the cache\n")
    with Server(root, "--auto") as server:
        out = curl("-sS", f"{server.url}/hello.txt")
        assert out.returncode == 0 and out.stdout == b"hello from the cache\n"
        banner = server.stderr.decode()
    assert re.search(r"send engine +splice +probe \(cache", banner), banner
    assert list((cache / "zcopy").iterdir()) == [saved]  # read, not re-probed and rewritten
