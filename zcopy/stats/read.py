"""Reading: find running servers, read their workers' snapshots, sum them.

Readers never talk to a server; they read the files publishers keep fresh
(see ``zcopy.stats.location``). A server is live when its supervisor pid is;
a folder of a dead supervisor is stale and removed on sight. Within a live
server, a worker file whose pid is gone (a worker killed, its replacement not
yet published) is skipped, so a restart shows as counters starting again,
never as a double count.
"""

from __future__ import annotations

import json
import os
import shutil

from zcopy.stats.location import Target, alive, parse_group, runtime_dir

#: Keys whose value is the same for every worker: taken once, never summed.
CONSTANT = frozenset({"kind", "bounds", "server", "upstream", "zero_copy", "group"})
#: Keys that identify one worker: kept in the per-worker list only.
PER_WORKER = frozenset({"pid", "slot", "worker", "published", "started"})


def discover(kind: str | None = None, *, clean: bool = True) -> list[Target]:
    """Live servers of this user, oldest pid first. Stale folders (their
    supervisor is gone) are removed when ``clean``."""
    root = runtime_dir()
    try:
        names = os.listdir(root)
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        target = parse_group(os.path.join(root, name))
        if target is None or (kind is not None and target.kind != kind):
            continue
        if alive(target.pid):
            found.append(target)
        elif clean:
            shutil.rmtree(target.path, ignore_errors=True)
    return sorted(found, key=lambda t: t.pid)


def target_from_path(path: str) -> Target | None:
    """A server folder given by path (``zcopy top --socket PATH``)."""
    return parse_group(os.path.abspath(path))


def read_snapshots(target: Target) -> list[dict]:
    """The current snapshot of each live worker of ``target``, by slot."""
    snaps = []
    try:
        names = sorted(os.listdir(target.path))
    except FileNotFoundError:
        return []
    for name in names:
        if not (name.startswith("worker-") and name.endswith(".json")):
            continue
        try:
            with open(os.path.join(target.path, name), "rb") as f:
                snap = json.loads(f.read())
        except (OSError, ValueError):
            continue   # removed between listdir and open
        if isinstance(snap, dict) and alive(int(snap.get("pid", 0))):
            snaps.append(snap)
    return sorted(snaps, key=lambda s: s.get("slot", 0))


def read_all(target: Target) -> dict | None:
    """One aggregated snapshot of every worker of ``target``, or None when
    the server is gone (or has not published yet)."""
    if not alive(target.pid):
        return None
    snaps = read_snapshots(target)
    if not snaps:
        return None
    return aggregate(snaps, target)


def aggregate(snaps: list[dict], target: Target | None = None) -> dict:
    """Sum worker snapshots into one: numbers add up, histograms add up
    bucket by bucket, lists of records (in-flight transfers) concatenate;
    per-worker identity goes to ``workers``."""
    total: dict = {}
    for snap in snaps:
        _merge(total, {k: v for k, v in snap.items() if k not in PER_WORKER})
    total["workers"] = [_worker_summary(s) for s in snaps]
    total["started"] = min(s.get("started", 0) for s in snaps)
    total["published"] = max(s.get("published", 0) for s in snaps)
    if target is not None:
        total["kind"], total["pid"] = target.kind, target.pid
    if isinstance(total.get("inflight"), list):
        total["inflight"].sort(key=lambda t: t.get("rate", 0), reverse=True)
    return total


def _merge(into: dict, snap: dict) -> None:
    for key, value in snap.items():
        have = into.get(key)
        if key not in into:
            into[key] = _copy(value)
        elif key in CONSTANT or value is None:
            continue
        elif isinstance(value, dict) and isinstance(have, dict):
            _merge(have, value)
        elif isinstance(value, bool) or isinstance(have, bool):
            continue
        elif isinstance(value, (int, float)) and isinstance(have, (int, float)):
            into[key] = have + value
        elif isinstance(value, list) and isinstance(have, list):
            if len(value) == len(have) and all(isinstance(x, (int, float)) for x in value + have):
                into[key] = [a + b for a, b in zip(have, value)]
            else:
                have.extend(_copy(value))


def _copy(value):
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _worker_summary(snap: dict) -> dict:
    conns = snap.get("connections") or {}
    return {"slot": snap.get("slot"), "pid": snap.get("pid"), "started": snap.get("started"),
            "published": snap.get("published"), "requests": snap.get("requests", 0),
            "bytes_sent": snap.get("bytes_sent", 0), "active": conns.get("active", 0)}
