"""copy_file_range(2): in-kernel file-to-file copies, within one filesystem
and across two (Linux 5.3 allowed cross-filesystem copies, 5.12 restricted
them to the same filesystem type, 5.19 relaxed that again: try, do not guess).
"""

from __future__ import annotations

import os
import tempfile
from typing import Iterator

from probes.finding import Finding, Status
from probes.kernel import errname
from probes.resources import Resources

SIZE = 64 * 1024
OTHER_FS = "/dev/shm"   # tmpfs: a filesystem other than the temp dir's, on most systems


def probe(ctx) -> Iterator[Finding]:
    base = tempfile.gettempdir()
    yield _copy("copy_file_range.same_fs", base, base)
    if not os.path.isdir(OTHER_FS) or os.stat(OTHER_FS).st_dev == os.stat(base).st_dev:
        yield Finding("copy_file_range.cross_fs", Status.SKIPPED, None,
                      f"{OTHER_FS} is missing or on the same filesystem as {base}")
    else:
        yield _copy("copy_file_range.cross_fs", base, OTHER_FS)


def _copy(fid: str, src_dir: str, dst_dir: str) -> Finding:
    where = f"{src_dir} -> {dst_dir}"
    with Resources() as res:
        src, _ = res.tmpfile(SIZE, dir=src_dir, fill=b"cfr")
        dst, _ = res.tmpfile(dir=dst_dir)
        try:
            moved = 0
            while moved < SIZE:
                n = os.copy_file_range(src, dst, SIZE - moved, moved, moved)
                if n == 0:
                    break
                moved += n
        except OSError as exc:
            return Finding(fid, Status.UNSUPPORTED, False, f"copy_file_range {where} failed: {errname(exc)}")
        same = os.pread(dst, SIZE + 1, 0) == os.pread(src, SIZE + 1, 0)
    if not same:
        return Finding(fid, Status.ERROR, False, f"copy_file_range {where} returned but the copy differs")
    return Finding(fid, Status.OK, True, f"copy_file_range copied {SIZE} bytes {where} intact")
