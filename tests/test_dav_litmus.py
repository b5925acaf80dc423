"""litmus 0.13 (the WebDAV test suite, Debian's package) run as a user runs it: all five suites in one
run, `litmus URL USER PASS` with no -k, against `zcopy serve --allow-write` with a state folder
(class 2: the lock tests run). Issue 17's bar: 0 failures and, here, 0 warnings."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from serverutil import Server

SUITES = ("basic", "copymove", "props", "locks", "http")

pytestmark = pytest.mark.skipif(shutil.which("litmus") is None,
                                reason="litmus is not installed (Debian/Ubuntu: apt-get install litmus)")


def test_litmus_all_suites_pass(tmp_path):
    root = tmp_path / "root"
    (root / "dav").mkdir(parents=True)
    state = tmp_path / "state"
    state.mkdir()
    with Server(root, "--allow-write", "--token", "pass", "--state-dir", str(state)) as s:
        run = subprocess.run(["litmus", f"http://127.0.0.1:{s.port}/dav/", "user", "pass"],
                             cwd=tmp_path, capture_output=True, text=True, timeout=300,
                             env={"PATH": "/usr/bin:/bin", "TESTS": " ".join(SUITES)})
    out = run.stdout + run.stderr
    summaries = dict(re.findall(r"summary for `(\w+)': of \d+ tests run: \d+ passed, (\d+) failed", out))
    assert set(summaries) == set(SUITES), out          # every suite ran (a failing suite stops the run)
    assert all(failed == "0" for failed in summaries.values()), out
    assert "warning" not in out.lower(), out
    assert run.returncode == 0, out
