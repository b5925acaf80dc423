#!/usr/bin/env python3
"""The parts of a PROPFIND first build that no rendering design avoids, timed apart (thread CPU).

On a folder of 10,000 files made as tools/bench_propfind.py makes it: ``os.listdir``, one
``os.stat(name, dir_fd=..., follow_symlinks=False)`` a member (the build's scan), freeing the stat
results, and beside them what the build does with them today: the ETag fields and their formatting,
the size column, the memo's two dict updates, and ``writev`` of 10,000 responses (447 bytes, the named
body's size) into a memfd and its close. Median of 15 passes, collector off:

    python tools/propfind_stages.py
"""

from __future__ import annotations

import gc
import operator
import os
import shutil
import statistics
import sys
import tempfile
import time
from itertools import repeat

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from bench_propfind import make_folder  # noqa: E402
from zcopy.http.headers import ETAG_FIELDS, etags_of_fields  # noqa: E402
from zcopy.server import propfind  # noqa: E402


def main() -> int:
    tmp = tempfile.mkdtemp(prefix="zcopy-propfind-stages-")
    fd = -1
    try:
        root = make_folder(tmp, 10_000)
        fd = os.open(os.path.join(root, "big"), os.O_RDONLY)
        gc.disable()
        times: dict[str, list[float]] = {}

        def timed(label, work):
            t0 = time.thread_time()
            out = work()
            times.setdefault(label, []).append(time.thread_time() - t0)
            return out
        stat = os.stat
        for _ in range(15):
            names = timed("listdir", lambda: os.listdir(fd))
            stats = timed("stat", lambda: [stat(n, dir_fd=fd, follow_symlinks=False) for n in names])
            fields = timed("etag fields", lambda: list(map(ETAG_FIELDS, stats)))
            etags = timed("etag format", lambda: etags_of_fields(fields))
            timed("size format", lambda: list(map(operator.mod, repeat(b"%d"), map(operator.itemgetter(6), stats))))
            keys: dict = {}
            responses: dict = {}
            timed("memo dicts", lambda: (keys.update(zip(names, etags)), responses.update(zip(names, etags))))
            out = propfind.new_body()
            piece = [b"x" * 447] * 1024
            timed("memfd writev", lambda: [propfind._writev(out, piece) for _ in range(10)])
            timed("memfd close", lambda: os.close(out))
            timed("free stats", lambda: (fields.clear(), stats.clear()))
        for label, values in times.items():
            median = statistics.median(values)
            print(f"{label:13} {median * 1e3:6.2f} ms  {median * 1e6 / 10_000:5.3f} us a member")
        return 0
    finally:
        if fd >= 0:
            os.close(fd)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
