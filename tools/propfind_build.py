#!/usr/bin/env python3
"""A PROPFIND Depth 1 page build in a process of its own: thread CPU per build, or instructions.

Makes a folder of N files as tools/bench_propfind.py does, and calls the worker's kept-page build
(``Dav._page``: scan, render, memo, memfd; no socket, no loop, no executor) for each case, a
body and a mode: `full` renames the folder to a name never built before (nothing kept), `restat`
builds the same folder again (every member stat'ed, the kept responses reused). After each build
``gc.collect(0)`` runs, as the first allocation after the build's collector pause does in a worker.
It prints the median and best thread CPU time per build. The figures move with the machine's load;
for A/B comparisons on a shared machine count instructions instead, with callgrind, which counts
only what runs inside ``operator.call`` (the timed builds, not the set-up):

    python tools/propfind_build.py                                  # every case, 15 builds each
    valgrind --tool=callgrind --collect-atstart=no --toggle-collect=_operator_call \\
        --callgrind-out-file=/tmp/cg.out python3.11 tools/propfind_build.py --cases named:full --builds 3
    # instructions per build: callgrind's "Collected" / 3; callgrind_annotate /tmp/cg.out for where

(``python3.11``: the interpreter itself, not a shell shim, or valgrind follows the shim.)
"""

from __future__ import annotations

import argparse
import gc
import operator
import os
import shutil
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from bench_propfind import BODIES, make_folder  # noqa: E402
from zcopy import http  # noqa: E402
from zcopy.dav import xmlbody  # noqa: E402
from zcopy.server.dav import Dav  # noqa: E402
from zcopy.server.digests import Digests  # noqa: E402
from zcopy.server.files import OpenFileCache  # noqa: E402

CASES = "named:full,named:restat,rclone:full,rclone:restat,allprop:full,allprop:restat"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entries", type=int, default=10_000)
    ap.add_argument("--builds", type=int, default=15, help="timed builds per case (after two untimed)")
    ap.add_argument("--cases", default=CASES, help="comma-separated body:mode (bodies: named, rclone, "
                    "allprop; modes: full, restat)")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="zcopy-propfind-build-")
    try:
        root = make_folder(tmp, args.entries)
        cache = OpenFileCache(root, digests=Digests(lambda *a, **k: None, None))
        dav = Dav(cache, http.DateHeader(), None, None, None)

        def build(url: str, view: tuple):
            page = dav._page(None, url, False, view, None)
            gc.collect(0)
            return page

        renamed = 0
        for case in args.cases.split(","):
            body, mode = case.split(":")
            asked = xmlbody.propfind(BODIES[body])
            view = ("propfind", asked.kind, tuple(asked.names))
            times = []
            for i in range(args.builds + 2):
                url = "/big/"
                if mode == "full":
                    renamed += 1
                    os.rename(os.path.join(root, "big"), os.path.join(root, f"big-{renamed}"))
                    url = f"/big-{renamed}/"
                t0 = time.thread_time()
                page = operator.call(build, url, view) if i >= 2 else build(url, view)
                times.append(time.thread_time() - t0)
                size = page.size
                page._close()
                if mode == "full":
                    os.rename(os.path.join(root, f"big-{renamed}"), os.path.join(root, "big"))
            times = times[2:]
            print(f"{case:16} median {statistics.median(times) * 1000:6.1f} ms  best {min(times) * 1000:6.1f} ms  "
                  f"{size} bytes", flush=True)
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
