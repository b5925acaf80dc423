"""The hot path compiled (setup.py, Cython) or not: what runs is always the code in the .py files.

These run ``python`` in subprocesses: which file a module is imported from is decided once per
process, when ``zcopy`` is first imported (``zcopy.hotpath.install``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import pytest
from serverutil import python_json

import zcopy
from zcopy import hotpath

PACKAGE = os.path.dirname(zcopy.__file__)
try:
    from zcopy._hotpath_sources import SOURCES
except ImportError:
    SOURCES = {}

_, _RUNS_FROM_SOURCE = hotpath.state()
compiled_only = pytest.mark.skipif(
    not SOURCES or bool(_RUNS_FROM_SOURCE),
    reason="this install compiled nothing (no C compiler or Cython)" if not SOURCES else
    f"the compiled modules run from their .py here: {next(iter(_RUNS_FROM_SOURCE.values()), '')}"
    + (" (`pip install -e .` rebuilds them)" if "changed" in str(_RUNS_FROM_SOURCE) else ""))

REPORT = textwrap.dedent("""
    import json, sys
    import zcopy.server.connection, zcopy.http.protocol
    from zcopy import hotpath
    print(json.dumps({"summary": hotpath.summary(), "state": hotpath.state(),
                      "connection": zcopy.server.connection.__file__,
                      "protocol": zcopy.http.protocol.__file__}))
""")


def report(pythonpath: str, **env) -> dict:
    return python_json(REPORT, pythonpath, **env)


@compiled_only
def test_the_built_modules_run_compiled_and_the_serve_panel_says_so():
    got = report(os.path.dirname(PACKAGE))
    assert got["connection"].endswith(".so") and got["protocol"].endswith(".so")
    assert sorted(got["state"][0]) == sorted(SOURCES) and got["state"][1] == {}
    assert got["summary"] == f"compiled ({len(SOURCES)} modules, Cython)"
    # (every compiled module has its declarations beside it, or is written in Cython (zcopy.sockio),
    # and only those are compiled)
    for name in SOURCES:
        base = os.path.join(os.path.dirname(PACKAGE), *name.split("."))
        assert os.path.exists(base + ".pxd") or os.path.exists(base + ".pyx"), name


@compiled_only
def test_zcopy_pure_runs_every_module_from_its_py():
    got = report(os.path.dirname(PACKAGE), ZCOPY_PURE="1")
    assert got["connection"].endswith("connection.py") and got["protocol"].endswith("protocol.py")
    assert got["state"][0] == [] and set(got["state"][1]) == set(SOURCES)
    assert got["summary"] == "Python: ZCOPY_PURE=1"


@compiled_only
def test_a_source_changed_since_the_build_sends_every_compiled_module_to_its_py(tmp_path):
    """An edited editable install must not run the old extension: one changed .py, and all of them run
    as Python (they cimport each other's classes, so a mix cannot load)."""
    copy = tmp_path / "tree"
    shutil.copytree(PACKAGE, copy / "zcopy", ignore=shutil.ignore_patterns("__pycache__"))
    assert report(str(copy))["connection"].endswith(".so")        # the copy, as built, runs compiled
    stats = copy / "zcopy" / "server" / "stats.py"
    stats.write_text(stats.read_text() + "\n# changed after the build\n")
    got = report(str(copy))
    assert got["connection"] == str(copy / "zcopy" / "server" / "connection.py")
    assert got["summary"] == "Python: zcopy.server.stats changed since the build"


def test_the_serve_panel_names_the_hot_path():
    from zcopy.cmd.serve import panel_rows
    from zcopy.server.config import ServeConfig

    rows = {name: value for name, value, _ in panel_rows(ServeConfig(root="/"))}
    assert rows["hot path"] == hotpath.summary()


@compiled_only
def test_the_core_suites_pass_as_plain_python(tmp_path):
    """CI runs the suite against the compiled modules; these core suites run again as plain Python
    (what an install without a compiler runs)."""
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          f"--basetemp={tmp_path}/pt", "tests/test_http_protocol.py", "tests/test_serve_answers.py",
                          "tests/test_serve_http.py", "tests/test_loop_alone.py", "-k", "not slow"],
                         cwd=os.path.dirname(PACKAGE), env={**os.environ, "ZCOPY_PURE": "1"},
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert " passed" in out.stdout and " failed" not in out.stdout


def test_a_reply_holds_a_multipart_length_past_64_bits():
    """A multi-range 206 of a (sparse) file near 2**63 bytes: its body length counts the part
    headers too and passes 2**63 - 1. The pure build answers 206; with ``Reply.length`` a C
    ``long long`` the compiled one raised OverflowError in ``Reply.__init__`` (a 500 and a
    traceback): ``GET /huge.bin`` with ``Range: bytes=0-0,82-`` of a 2**63 - 1 byte file on tmpfs."""
    from zcopy import http
    from zcopy.server.reply import Reply

    size = 2**63 - 1
    plan = http.multipart_plan([(0, 1), (82, size)], size, "application/octet-stream")
    assert plan.length > size
    reply = Reply(206, b"HTTP/1.1 206 Partial Content\r\n\r\n", [], plan.length, False)
    assert reply.length == plan.length
