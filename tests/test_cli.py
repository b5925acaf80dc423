"""The command line contract: clear help, one-line errors with exit code 2."""

import subprocess
import sys

import pytest

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
    # argparse names a missing required argument before an unknown flag
    assert "--no-such-flag" in lines[0] or "required" in lines[0]
    assert lines[0].startswith(f"zcopy {command}: error:")


def test_no_command_prints_help_and_exits_2():
    out = zcopy()
    assert out.returncode == 2
    assert "COMMAND" in out.stdout
