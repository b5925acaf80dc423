"""Run a small Python script under strace and read back what the kernel saw.

The script writes ``START`` to fd 1 where the interesting part begins; only
the traced calls after that marker are returned, one raw strace line each
(``name(args) = result``), with strace's pid prefixes removed.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

START = 'os.write(1, b"START\\n")'
_LINE = re.compile(r"^(?:\[pid\s+\d+\]\s+|\d+\s+)?(\w+\(.*)$")


def strace_lines(tmp_path: Path, script: str, trace: str) -> list[str]:
    """Lines for the syscalls in ``trace`` (comma list; ``write`` is added for
    the marker) that ``script`` made after its START marker."""
    path = tmp_path / "traced.py"
    path.write_text(script)
    log = tmp_path / "strace.log"
    proc = subprocess.run(["strace", "-f", "-o", str(log), "-e", f"trace=write,{trace}", sys.executable, str(path)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = [m.group(1) for line in log.read_text().splitlines() if (m := _LINE.match(line))]
    start = next(i for i, line in enumerate(lines) if line.startswith('write(1, "START'))
    return lines[start + 1:]


def call_name(line: str) -> str:
    return line.split("(", 1)[0]
