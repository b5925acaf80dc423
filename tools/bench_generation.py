"""What the cross-worker write generation costs a request, and a write.

Every request runs ``OpenFileCache.sync()`` once (the responder, before its
answer memo): one copy and compare of the shared generation array
(``zcopy.server.shared``), 8 bytes per generation slot (4 x workers + 4
slots). A write runs ``written()`` (one bump). Measured with timeit, best of
5 x 1,000,000, minus an empty method call, for several worker counts; the
revalidation a foreign write triggers (all entries re-resolved at their next
use) is measured per cached entry.

    python tools/bench_generation.py
"""

from __future__ import annotations

import os
import sys
import tempfile
import timeit

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from zcopy.server.files import OpenFileCache  # noqa: E402
from zcopy.server.shared import Generation, SharedState  # noqa: E402

N = 1_000_000


class _Empty:
    def sync(self) -> None:
        pass


def best(fn, number: int = N) -> float:
    return min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e9


def main() -> None:
    baseline = best(_Empty().sync)
    print(f"empty method call: {baseline:.0f} ns (subtracted below)")
    with tempfile.TemporaryDirectory() as root:
        for workers in (1, 2, 8, 32):
            shared = SharedState(workers)
            cache = OpenFileCache(root, generation=Generation(shared, 0))
            other = Generation(shared, 1)
            sync = best(cache.sync) - baseline
            bump = best(cache.written, 200_000) - baseline
            cache.sync()
            print(f"workers {workers:2}: sync (no foreign write) {sync:5.0f} ns/request; "
                  f"bump {bump:5.0f} ns/write; array {8 * shared.generation_slots} bytes")
            del other
        # a foreign write: every entry is marked for re-resolution
        for i in range(1000):
            with open(os.path.join(root, f"f{i}"), "wb") as f:
                f.write(b"x")
        shared = SharedState(2)
        cache = OpenFileCache(root, generation=Generation(shared, 0), max_entries=1000)
        for i in range(1000):
            cache.lookup(f"/f{i}")
        per = best(cache.revalidate, 2000) / len(cache)
        print(f"revalidate after a foreign write: {per:.0f} ns per cached entry ({len(cache)} entries), "
              "then one resolve + stat per entry at its next use")
        cache.close()


if __name__ == "__main__":
    main()
