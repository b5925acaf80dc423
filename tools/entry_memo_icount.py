"""Where the memos around a FileEntry should live: the exact lookup sequences, in instructions.

    python tools/entry_memo_icount.py            # callgrind; about 2.5 minutes
    python tools/entry_memo_icount.py --timeit   # the same sequences with timeit (noisy on a busy machine)

Each sequence is what the hot path runs per request in one design (docs/architecture.md, "The file
entry"): the answer memo's trust check (a plain GET of a watched file) and the residency check before
sendfile (``Connection._hot``). With callgrind, each sequence runs N and 2N times in a child
``python -c`` (a loop in a function, the same in every case); the figure is the difference less that
of an empty loop, divided by N: that sequence's own instructions, start-up cancelled (PYTHONHASHSEED=0:
the same dict layouts in every run; with random seeds the figures move by about 100).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import timeit

SETUP = r'''
import time
from dataclasses import dataclass
RESOLVE_TTL = 1.0

@dataclass(slots=True, eq=False)
class Entry:
    key: tuple
    retired: bool = False
    watched: bool = True
    resolved_at: float = 0.0
    resident_until: float = 0.0
    trust: object = None
    residency: object = None
    def trusted(self, now):
        return not self.retired and self.watched and now - self.resolved_at < RESOLVE_TTL

class Trust:
    __slots__ = ("watched", "resolved_at", "dropped")
    def __init__(self):
        self.watched = True; self.resolved_at = 0.0; self.dropped = False
    def trusted(self, now):
        return not self.dropped and self.watched and now - self.resolved_at < RESOLVE_TTL

class Residency:
    __slots__ = ("until",)
    def __init__(self, until): self.until = until

class Cache:
    def __init__(self): self.trust = {}
    def trusted(self, entry, now):
        t = self.trust.get(entry)
        return t is not None and not entry.retired and t.watched and now - t.resolved_at < RESOLVE_TTL

now = time.monotonic()
e = Entry((2049, 123456789, 1024, 1733150000123456789), resolved_at=now + 1000, resident_until=now + 1000)
t = Trust(); t.resolved_at = now + 1000; e.trust = t
e.residency = Residency(now + 1000)
cache = Cache(); cache.trust[e] = t
resident = {e.key: now + 1000}
known = (None, e, "-")
known_t = (None, t, "-")
'''

CASES = {
    "trust: entry.trusted(now) [before: fields on the entry]": "reply, entry, user = known; entry.trusted(now)",
    "trust: the answer keeps the cache's Trust, trust.trusted(now) [chosen]":
        "reply, trust, user = known_t; trust.trusted(now)",
    "trust: entry.trust.trusted(now) [sub-object, reached through the entry]":
        "reply, entry, user = known; entry.trust.trusted(now)",
    "trust: cache.trusted(entry, now) [side dict keyed by the entry]":
        "reply, entry, user = known; cache.trusted(entry, now)",
    "residency: entry.resident_until > now [before]": "entry = e; entry is not None and entry.resident_until > now",
    "residency: (m := entry.residency) is not None and m.until > now [sub-object, None until known]":
        "entry = e; entry is not None and (m := entry.residency) is not None and m.until > now",
    "residency: entry.residency.until > now [chosen: sub-object, a shared NOT_KNOWN until known]":
        "entry = e; entry is not None and entry.residency.until > now",
    "residency: resident.get(entry.key, 0.0) > now [side dict keyed by the file's key]":
        "entry = e; entry is not None and resident.get(entry.key, 0.0) > now",
}


def _count(stmt: str, n: int) -> int:
    # In a function, its names local (as in the server's methods): a module-level loop would
    # store to a dict at each assignment and weigh every name it binds.
    prog = (SETUP + "\ndef run(n, e=e, t=t, cache=cache, resident=resident, known=known, known_t=known_t, now=now):\n"
            f"    for _ in range(n):\n        " + stmt.replace("; ", "\n        ") + f"\nrun({n})\n")
    out = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, "-c", prog],
                         capture_output=True, text=True, env=dict(os.environ, PYTHONHASHSEED="0")).stderr
    return int(re.search(r"Collected : (\d+)", out).group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timeit", action="store_true")
    parser.add_argument("-n", type=int, default=200_000)
    args = parser.parse_args()
    if args.timeit:
        env: dict = {}
        exec(SETUP, env)
        for name, stmt in CASES.items():
            best = min(timeit.repeat(stmt, globals=env, number=1_000_000, repeat=7))
            print(f"{best * 1000:6.1f} ns  {name}")
        return
    n = args.n
    base = _count("pass", 2 * n) - _count("pass", n)
    for name, stmt in CASES.items():
        print(f"{(_count(stmt, 2 * n) - _count(stmt, n) - base) / n:7.1f} instructions  {name}", flush=True)


if __name__ == "__main__":
    main()
