"""The command line contract: clear help, one-line errors with exit code 2."""

import subprocess
import sys

import pytest

from serverutil import serve_refused
from zcopy.cli import COMMANDS


def zcopy(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "zcopy", *args], capture_output=True, text=True, timeout=60)


def test_help_lists_every_command():
    out = zcopy("--help")
    assert out.returncode == 0
    for name in COMMANDS:
        assert name in out.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_subcommand_help(command):
    out = zcopy(command, "--help")
    assert out.returncode == 0
    assert out.stdout.startswith("usage: zcopy " + command)


@pytest.mark.parametrize("command", COMMANDS)
def test_bad_flag_is_one_line_and_exit_2(command):
    out = zcopy(command, "--no-such-flag")
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    # named even where a required argument is missing too (argparse would blame that first)
    assert lines[0].startswith(f"zcopy {command}: error: unrecognized arguments: --no-such-flag")


@pytest.mark.parametrize("args, says", [
    (["serve", "--port", "abc"], "argument --port: not a port number"),
    (["bench", "--size", "lots"], "argument --size"),
    (["get", "--out"], "argument -o/--output: expected one argument"),   # an abbreviation, not unknown
    (["put", "-rX"], "required: file, url"),                            # -r with value X
    (["get", "-Z", "http://127.0.0.1:9/"], "unrecognized arguments: -Z"),
    (["probe", "--path"], "argument --path: expected one argument"),
    (["serve", "--pipe-size", "0"], "argument --pipe-size: must be between 1 B and 1 GiB"),
    (["serve", "--pipe-size", "-4KiB"], "argument --pipe-size"),
    (["serve", "--pipe-size", "2GiB"], "argument --pipe-size: must be between 1 B and 1 GiB"),
    (["relay", "--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:9", "--pipe-size", "0"],
     "argument --pipe-size: must be between 1 B and 1 GiB"),
    (["relay", "--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:9", "--idle-timeout", "inf"],
     "argument --idle-timeout: must be a finite number"),
    (["top", "--interval", "inf"], "argument --interval: must be a finite number"),
])
def test_bad_usage_is_one_line_and_exit_2(args, says):
    out = zcopy(*args)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], out.stderr


@pytest.mark.parametrize("flag, value, says", [
    ("--header-timeout", "inf", "must be a finite number"),
    ("--drain-timeout", "inf", "must be a finite number"),
    ("--idle-timeout", "nan", "must be a finite number"),
    ("--send-timeout", "-infinity", "must be a finite number"),
    ("--header-timeout", "0", "must be positive"),
    ("--send-timeout", "-1", "must be positive"),
    ("--idle-timeout", "1e9", "must be at most 604800 seconds"),
    ("--drain-timeout", "ten", "not a number"),
    ("--max-upload", "0", "must be at least 1 byte"),
    ("--max-upload", "0KiB", "must be at least 1 byte"),
    ("--max-upload", "-5", "not a size"),
    ("--max-upload", "1.5", "not a whole number of bytes"),
    ("--max-connections", "0", "must be positive"),
    ("--max-connections", "1e3", "not a whole number"),
    ("--workers", "0", "must be positive"),
    ("--workers", "100000", "at most 1024 workers"),
    ("--port", "65536", "port out of range"),
    ("--port", "-1", "port out of range"),
    ("--pipe-size", "0", "must be between 1 B and 1 GiB"),
    ("--metrics", "127.0.0.1:99999", "expected HOST:PORT"),
])
def test_serve_numeric_flags_are_validated(tmp_path, flag, value, says):
    """Every numeric `zcopy serve` flag: a bad value is one line and exit 2, before anything binds."""
    out = serve_refused(str(tmp_path), "--port", "0", f"{flag}={value}")
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"zcopy serve: error: argument {flag}") \
        and says in lines[0], out.stderr


def test_no_command_prints_help_and_exits_2():
    out = zcopy()
    assert out.returncode == 2
    assert "COMMAND" in out.stdout
