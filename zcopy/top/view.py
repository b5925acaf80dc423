"""One dashboard frame as rich renderables; pure function of the data.

``frame(...)`` is all the Live loop and ``--once`` call: no I/O here, so a
frame is the same whether it goes to a full-screen Live view or to stdout.
"""

from __future__ import annotations

import time

from rich.console import Group
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from zcopy.top.model import History, percentile, sort_transfers, sparkline, zero_copy_share
from zcopy.units import format_size

KEYS_HELP = "q quit  p pause  s sort"
TRANSFERS_SHOWN = 10


def rate(n: float) -> str:
    return f"{format_size(n)}/s"


def seconds(s: float | None) -> str:
    if s is None:
        return "-"
    if s == float("inf"):
        return "> 60 s"
    return f"≤{s * 1000:g} ms" if s < 1 else f"≤{s:g} s"


def uptime(started: float) -> str:
    s = max(int(time.time() - started), 0)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def frame(snap: dict | None, history: History, nics: list[dict], *, title: str, notice: str = "",
          sort: str = "rate", paused: bool = False, spark_width: int = 40):
    """The whole screen. ``snap`` None: only the title and the notice."""
    head = Text(title, style="bold", no_wrap=True, overflow="ellipsis")
    head.append(f"   sort: {sort}   {KEYS_HELP}", style="dim")
    if paused:
        head.append("   PAUSED", style="bold yellow")
    parts = [head]
    if notice:
        parts.append(Text(notice, style="bold red"))
    if snap is None:
        return Group(*parts)
    parts += [_throughput(snap, history, spark_width), _requests(snap, history), _transfers(snap, sort)]
    if nics:
        parts.append(_nics(nics))
    return Group(*parts)


def _throughput(snap: dict, h: History, width: int) -> Panel:
    t = Table(box=None, padding=(0, 1), expand=False)
    for name in ("engine", "now", "sent", "received", "syscalls", "zero-copy", f"last {width} s"):
        t.add_column(name, justify="left" if name in ("engine", "zero-copy") or name.startswith("last")
                     else "right", no_wrap=True)
    t.add_row(Text("all", style="bold"), Text(rate(h.rate("sent") + h.rate("received")), style="bold"),
              format_size(snap.get("bytes_sent", 0)), format_size(snap.get("bytes_received", 0)), "", "",
              Text(sparkline([a + b for a, b in zip(h.series("sent"), h.series("received"))], width),
                   style="green"))
    for name, e in sorted((snap.get("engines") or {}).items()):
        key = f"engine:{name}"
        t.add_row(name, rate(h.rate(key)), format_size(e.get("bytes_sent", 0)),
                  format_size(e.get("bytes_received", 0)), str(e.get("syscalls", 0)),
                  "yes" if e.get("zero_copy") else "no", Text(sparkline(h.series(key), width), style="cyan"))
    share = zero_copy_share(snap)
    title = "throughput" + ("" if share is None else f" · {share:.1%} of bytes sent zero-copy")
    return Panel(t, title=title, title_align="left")


def _requests(snap: dict, h: History) -> Panel:
    g = Table.grid(padding=(0, 2))
    g.add_column(style="bold")
    g.add_column()
    status = snap.get("status") or {}
    by_status = "  ".join(f"{cls} {h.rate('status:' + cls):.0f}/s ({n})" for cls, n in sorted(status.items()) if n)
    g.add_row("requests", f"{h.rate('requests'):.0f}/s  total {snap.get('requests', 0)}   {by_status}")
    c = snap.get("connections") or {}
    g.add_row("connections", f"active {c.get('active', 0)}  accepted {c.get('accepted', 0)}  "
                             f"closed {c.get('closed', 0)}")
    lat = snap.get("latency") or {}
    bounds = lat.get("bounds") or []
    for key, label in (("ttfb", "first byte"), ("ttlb", "last byte")):
        counts = lat.get(key) or []
        g.add_row(label, "  ".join(f"p{int(q * 100)} {seconds(percentile(bounds, counts, q))}"
                                   for q in (0.5, 0.9, 0.99)))
    pf = snap.get("prefetch")
    if pf:   # cold-cache readahead (docs/cold-cache.md): absent with --prefetch off
        g.add_row("prefetch", f"windows read ahead {pf.get('windows_prefetched', 0)}  "
                              f"parked {pf.get('parks', 0)} times, {pf.get('parked_seconds', 0.0):.2f} s  "
                              f"pool {pf.get('pool_size', 0)} threads (peak {pf.get('pool_peak', 0)})")
    errors = snap.get("errors") or {}
    g.add_row("errors", ", ".join(f"{k} {v}" for k, v in sorted(errors.items(), key=lambda kv: -kv[1]))
              or Text("none", style="dim"))
    workers = snap.get("workers") or []
    g.add_row("workers", "  ".join(f"#{w['slot']} pid {w['pid']}: {w['requests']} req, "
                                   f"{w['active']} conn" for w in workers))
    return Panel(g, title="requests", title_align="left")


def _transfers(snap: dict, sort: str) -> Panel:
    transfers = sort_transfers(snap.get("inflight") or [], sort)
    t = Table(box=None, padding=(0, 1), expand=False)
    for name, justify in (("client", "left"), ("", "left"), ("path", "left"), ("progress", "left"),
                          ("done", "right"), ("size", "right"), ("rate", "right")):
        t.add_column(name, justify=justify, no_wrap=True, overflow="ellipsis",
                     max_width=40 if name == "path" else None)
    for x in transfers[:TRANSFERS_SHOWN]:
        total = x.get("total") or 0
        bar = ProgressBar(total=total or None, completed=x["done"], width=24)
        t.add_row(x["client"], "↓" if x.get("direction") == "down" else "↑", x["path"], bar,
                  format_size(x["done"]), format_size(total) if total else "?", rate(x.get("rate", 0)))
    title = f"transfers in flight: {len(transfers)}"
    if len(transfers) > TRANSFERS_SHOWN:
        title += f" (busiest {TRANSFERS_SHOWN} by {sort})"
    return Panel(t if transfers else Text("none", style="dim"), title=title, title_align="left")


def _nics(nics: list[dict]) -> Panel:
    t = Table(box=None, padding=(0, 1))
    for name in ("nic", "state", "rx now", "tx now", "rx total", "tx total"):
        t.add_column(name, justify="left" if name in ("nic", "state") else "right")
    for n in nics:
        t.add_row(n["name"], n["state"], rate(n["rx_rate"]), rate(n["tx_rate"]), format_size(n["rx_bytes"]),
                  format_size(n["tx_bytes"]))
    return Panel(t, title="NICs (kernel link statistics)", title_align="left")
