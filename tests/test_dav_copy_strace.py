"""COPY of a file is a server-side copy (issue 17): strace on the worker shows copy_file_range moving
every byte, and no read/write of the file's content through user space."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time

import pytest

from serverutil import Server, connect, read_response

pytestmark = pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
SIZE = 64 << 20


def test_copy_of_a_file_is_copy_file_range(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    with open(root / "big.bin", "wb") as f:
        f.write(os.urandom(1 << 20) * (SIZE >> 20))
    state = tmp_path / "state"
    state.mkdir()
    log = tmp_path / "strace.log"
    with Server(root, "--allow-write", "--state-dir", str(state)) as s:
        worker = s.worker_pids()[0]
        tracer = subprocess.Popen(["strace", "-f", "-p", str(worker), "-o", str(log), "-e",
                                   "trace=copy_file_range,read,write,pread64,pwrite64,sendfile,splice,recvfrom"],
                                  stderr=subprocess.PIPE, text=True)
        try:
            assert "attached" in tracer.stderr.readline()            # strace says so once it holds the worker
            with connect(s.port) as c:
                c.sendall(b"COPY /big.bin HTTP/1.1\r\nHost: t\r\nDestination: /copy.bin\r\n\r\n")
                status = read_response(c)[0]
            time.sleep(0.2)                        # strace writes its log as the calls return
        finally:
            tracer.terminate()
            tracer.wait(timeout=10)
    assert status == 201
    assert (root / "copy.bin").read_bytes() == (root / "big.bin").read_bytes()
    lines = log.read_text().splitlines()
    copied = sum(int(m.group(1)) for line in lines if (m := re.search(r"copy_file_range\(.*\) = (\d+)", line)))
    assert copied == SIZE, lines
    moved = [line for line in lines if (m := re.search(r"^\S+\s+(read|write|pread64|pwrite64|sendfile|splice)"
                                                        r"\(.*\) = (\d+)", line)) and int(m.group(2)) >= 1 << 20]
    assert moved == [], moved                      # nothing of the content passed through the process
