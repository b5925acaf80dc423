"""Which Python APIs reach a zero-copy path, checked with strace.

Each case runs a tiny script under ``strace -e trace=...`` and asserts the
syscalls the kernel actually saw after a start marker: the zero-copy call
(sendfile, splice, copy_file_range) or the plain read/write pair that copies
through user space, or the errno the kernel refuses with. docs/zero-copy.md
records the same table with the strace lines.
"""

from __future__ import annotations

import textwrap

import pytest

from tests.conftest import needs_tool
from tests.stracing import START, call_name, strace_lines

TRACED = "sendfile,splice,copy_file_range,read,pread64,readv,sendto,sendmsg"
COPY_THROUGH_USER = {"read", "pread64", "readv", "write", "sendto", "sendmsg"}

PREAMBLE = """\
import os, shutil, socket, sys
data = os.urandom(60000)           # fits in a Unix socket's buffer: nobody reads the far end
with open("src", "wb") as f:
    f.write(data)
a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
src = os.open("src", os.O_RDONLY)
dst = os.open("dst", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
r, w = os.pipe()
""" + START + "\n"

# name -> (script body, syscalls that must appear, syscalls that must not appear)
CASES = {
    "socket.sendfile file->socket": ("with open('src', 'rb') as f: a.sendfile(f)",
                                     {"sendfile"}, COPY_THROUGH_USER),
    # A pipe's st_size is 0, which socket.sendfile takes for an empty file.
    "socket.sendfile pipe->socket silently sends nothing": (
        "os.write(w, b'x' * 100); os.close(w)\n"
        "with os.fdopen(r, 'rb') as f: assert a.sendfile(f) == 0",
        set(), {"sendfile", "splice", "read", "sendto"}),
    "socket.sendfile refuses a non-blocking socket": (
        "a.setblocking(False)\n"
        "with open('src', 'rb') as f:\n"
        "    try: a.sendfile(f)\n"
        "    except ValueError as e: assert 'non-blocking' in str(e)\n"
        "    else: sys.exit('sendfile on a non-blocking socket worked')",
        set(), {"sendfile", "read", "sendto"}),
    "shutil.copyfile file->file": ("shutil.copyfile('src', 'copy')", {"sendfile"}, COPY_THROUGH_USER),
    "shutil.copyfileobj file->socket": (
        "with open('src', 'rb') as f, a.makefile('wb') as g: shutil.copyfileobj(f, g)",
        {"read", "sendto"}, {"sendfile", "splice", "copy_file_range"}),
    "shutil.copyfileobj file->file": (
        "with open('src', 'rb') as f, open('copy', 'wb') as g: shutil.copyfileobj(f, g)",
        {"read", "write"}, {"sendfile", "splice", "copy_file_range"}),
    "os.copy_file_range file->file": ("assert os.copy_file_range(src, dst, 60000) == 60000",
                                      {"copy_file_range"}, COPY_THROUGH_USER),
    "os.copy_file_range file->socket is EINVAL": (
        "try: os.copy_file_range(src, a.fileno(), 4096)\n"
        "except OSError as e: assert e.errno == 22, e\n"
        "else: sys.exit('copy_file_range to a socket worked')",
        {"copy_file_range"}, COPY_THROUGH_USER),
    "os.splice file->pipe->socket": ("n = os.splice(src, w, 4096)\nassert os.splice(r, a.fileno(), n) == n",
                                     {"splice"}, COPY_THROUGH_USER),
    "os.splice file->socket without a pipe is EINVAL": (
        "try: os.splice(src, a.fileno(), 4096)\n"
        "except OSError as e: assert e.errno == 22, e\n"
        "else: sys.exit('splice without a pipe worked')",
        {"splice"}, COPY_THROUGH_USER),
    "os.sendfile file->file": ("assert os.sendfile(dst, src, 0, 60000) == 60000",
                               {"sendfile"}, COPY_THROUGH_USER),
    # The upload direction (socket -> file). b.sendall feeds the socket (a sendto of its own).
    "os.splice socket->pipe->file": (
        "b.sendall(data[:4096])\nn = os.splice(a.fileno(), w, 4096)\nassert os.splice(r, dst, n) == n == 4096",
        {"splice"}, COPY_THROUGH_USER - {"sendto"}),
    "os.sendfile socket->file is EINVAL": (
        "b.sendall(data[:4096])\n"
        "try: os.sendfile(dst, a.fileno(), None, 4096)\n"
        "except OSError as e: assert e.errno == 22, e\n"
        "else: sys.exit('sendfile from a socket worked')",
        {"sendfile"}, COPY_THROUGH_USER - {"sendto"}),
    "os.copy_file_range socket->file is EINVAL": (
        "b.sendall(data[:4096])\n"
        "try: os.copy_file_range(a.fileno(), dst, 4096)\n"
        "except OSError as e: assert e.errno == 22, e\n"
        "else: sys.exit('copy_file_range from a socket worked')",
        {"copy_file_range"}, COPY_THROUGH_USER - {"sendto"}),
}

def traced_calls(tmp_path, body: str) -> list[str]:
    """Run PREAMBLE + body under strace; the syscalls made after START."""
    return [call_name(line) for line in strace_lines(tmp_path, PREAMBLE + textwrap.dedent(body) + "\n", TRACED)]


@needs_tool("strace")
@pytest.mark.parametrize("case", CASES)
def test_python_api_syscalls(case, tmp_path):
    body, must, must_not = CASES[case]
    calls = set(traced_calls(tmp_path, body))
    assert must <= calls, f"{case}: expected {sorted(must)}, saw {sorted(calls)}"
    assert not (must_not & calls), f"{case}: unexpected {sorted(must_not & calls)}"
