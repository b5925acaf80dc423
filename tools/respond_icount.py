"""Instructions per ``Responder.respond`` call of a zcopy source tree, counted by callgrind.

    python tools/respond_icount.py /work/main /work/wt/core13

For each tree and case, a child process (``python`` with the tree first on ``sys.path``) builds
an ``OpenFileCache`` and a ``Responder`` over a temporary folder, answers the request once to
warm every memo, then answers it N more times; callgrind counts the whole child's instructions.
The figure is (count with 2N - count with N) / N: the start-up and the warm-up cancel, what is
left is one request's own cost in the responder and below (no socket, no loop). Deterministic
to a few instructions, so two trees' figures can be compared on a loaded machine.

Cases: ``watched``: a plain GET of a watched 1 KiB file (the answer memo: ``_Answers`` and the
cache's ``Trust``); ``unwatched``: the same without a file watch (``find``'s fstatat, then
``_file`` and the reply memo on the entry); ``range``: a watched file with a ``Range`` header
(``_file`` without the reply memo).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile

CHILD = r'''
import os, sys
from zcopy import http
from zcopy.server.files import OpenFileCache
from zcopy.server.responder import Responder
from zcopy.server.watch import FileWatch
root, case, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
cache = OpenFileCache(root, watch=None if case == "unwatched" else FileWatch())
responder = Responder(cache, http.DateHeader(lambda: 1_800_000_000.0))
head = b"GET /f.bin HTTP/1.1\r\nHost: t\r\n" + (b"Range: bytes=0-99\r\n" if case == "range" else b"") + b"\r\n"
req = http.HeadCache().parse(head)
reply = responder.respond(req)
assert reply.status in (200, 206), reply.status
respond = responder.respond
for _ in range(n):
    respond(req)
cache.close()
'''


def count(tree: str, root: str, case: str, n: int) -> int:
    env = dict(os.environ, PYTHONPATH=tree, PYTHONHASHSEED="0")
    out = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
                          sys.executable, "-c", CHILD, root, case, str(n)],
                         capture_output=True, text=True, env=env)
    found = re.search(r"Collected : (\d+)", out.stderr)
    if out.returncode != 0 or found is None:
        raise SystemExit(f"{tree} {case}: {out.stderr[-2000:]}")
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("trees", nargs="+", help="zcopy source checkouts (folders holding zcopy/)")
    parser.add_argument("-n", type=int, default=20_000, help="requests of the shorter run")
    parser.add_argument("--cases", default="watched,unwatched,range")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        with open(os.path.join(root, "f.bin"), "wb") as f:
            f.write(os.urandom(1024))
        print("| case | " + " | ".join(args.trees) + " |")
        print("|---|" + "---|" * len(args.trees))
        for case in args.cases.split(","):
            cells = []
            for tree in args.trees:
                a, b = count(tree, root, case, args.n), count(tree, root, case, 2 * args.n)
                cells.append(f"{(b - a) / args.n:,.0f}")
            print(f"| {case} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
