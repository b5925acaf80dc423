"""The three ways to look: full-screen Live dashboard, one frame, one JSON.

The dashboard loop is: read the published snapshots (unless paused), draw a
frame, wait for a key or the next refresh. Rich re-measures the terminal on
every draw, so a resize simply shows at the next refresh.
"""

from __future__ import annotations

import json
import sys
import time

from rich.console import Console
from rich.live import Live

from zcopy.top.follow import Follow, Several
from zcopy.top.keys import Keys
from zcopy.top.model import SORTS, History
from zcopy.top.nics import NicRates
from zcopy.top.view import frame, uptime


def title(snap: dict | None, follow: Follow) -> str:
    clock = time.strftime("%H:%M:%S")
    if snap is None:
        return f"zcopy top · {clock}"
    server = snap.get("server") or {}
    where = server.get("address") or snap.get("upstream") or ""
    return (f"zcopy top · {snap.get('kind', '?')} pid {snap.get('pid')} {where} · "
            f"{workers(snap)} · up {uptime(snap.get('started', time.time()))} · {clock}")


def workers(snap: dict) -> str:
    n = len(snap.get("workers") or [])
    return f"{n} worker{'' if n == 1 else 's'}"


def json_snapshot(snap: dict) -> dict:
    """The published aggregate plus the derived ``bytes_by_engine`` (and, for
    a relay, which has no requests of its own, ``requests``: the connections
    relayed to their end)."""
    out = dict(snap)
    out.setdefault("requests", (snap.get("connections") or {}).get("closed", 0))
    out["bytes_by_engine"] = {name: {"sent": e.get("bytes_sent", 0), "received": e.get("bytes_received", 0)}
                              for name, e in (snap.get("engines") or {}).items()}
    return out


def list_servers(targets, out=sys.stderr) -> None:
    from zcopy.stats import read_all

    print(f"zcopy top: {len(targets)} zcopy servers are running; choose one with --pid:", file=out)
    for t in targets:
        snap = read_all(t) or {}
        server = snap.get("server") or {}
        print(f"  --pid {t.pid}  {t.kind}  {server.get('address') or snap.get('upstream') or ''}  "
              f"{workers(snap)}", file=out)


def once(follow: Follow, as_json: bool, interval: float) -> int:
    """One snapshot (JSON) or one frame; rates need a second snapshot, so a
    frame waits for the next publication (about a second)."""
    snap, notice = follow.read()
    if snap is None:
        print(f"zcopy top: {follow.absent()}", file=sys.stderr)
        return 1
    if as_json:
        json.dump(json_snapshot(snap), sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
        return 0
    history, nics = History(), NicRates()
    history.add(snap)
    nics.read()
    deadline = time.monotonic() + max(interval, 1.0) + 1.5
    while time.monotonic() < deadline and len(history.samples) < 2:
        time.sleep(0.2)
        later, _ = follow.read()
        if later is not None:
            history.add(later)
    console = Console()
    try:
        console.print(frame(history.latest, history, nics.read(), title=title(history.latest, follow),
                            width=console.size.width))
    finally:
        nics.close()
    return 0


def dashboard(follow: Follow, interval: float) -> int:
    console = Console()
    history, nics = History(), NicRates()
    sort, paused, generation = 0, False, follow.generation
    snap, notice, nic_list = None, "", []
    try:
        with Keys() as keys, Live(console=console, screen=True, auto_refresh=False,
                                  redirect_stdout=False, redirect_stderr=False) as live:
            while True:
                if not paused:
                    snap, notice = follow.read()
                    if follow.generation != generation:
                        generation = follow.generation
                        history.reset()
                    if snap is not None:
                        history.add(snap)
                    nic_list = nics.read()
                size = console.size       # measured again at every frame: a resize shows at once
                live.update(frame(snap if not notice else history.latest if paused else None, history, nic_list,
                                  title=title(snap, follow), notice=notice, sort=SORTS[sort], paused=paused,
                                  width=size.width, height=size.height), refresh=True)
                for ch in keys.wait(interval):
                    if ch in "qQ":
                        return 0
                    if ch in "pP":
                        paused = not paused
                    elif ch in "sS":
                        sort = (sort + 1) % len(SORTS)
    except KeyboardInterrupt:
        return 0
    finally:
        nics.close()


def run(pid: int | None, path: str | None, interval: float, one: bool, as_json: bool) -> int:
    follow = Follow(pid=pid, path=path)
    if not (one or as_json) and not sys.stdout.isatty():
        # a full-screen view written to a pipe or file would show nothing at all
        print("zcopy top: error: the live view needs a terminal; use --once or --json for a pipe or file",
              file=sys.stderr)
        return 2
    try:
        if one or as_json:
            return once(follow, as_json, interval)
        return dashboard(follow, interval)
    except Several as exc:
        list_servers(exc.targets)
        return 1
