"""One dashboard frame as rich renderables; pure function of the data.

``frame(...)`` is all the Live loop and ``--once`` call: no I/O here, so a
frame is the same whether it goes to a full-screen Live view or to stdout.

The frame fits the terminal it is given: figures are never cut (columns
that matter less go first on a narrow screen, the sparklines take what
width is left and still span the last minute), and the transfer table gets
the rows left below the other panels.
"""

from __future__ import annotations

import time

from rich.console import Group
from rich.measure import Measurement
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from zcopy.top.model import HISTORY_SECONDS, History, percentile, sort_transfers, sparkline, zero_copy_share
from zcopy.units import format_size

KEYS_HELP = "q quit · p pause · s sort"
#: Transfers listed when the height is not known (``--once`` to a pipe).
TRANSFERS_SHOWN = 10
#: Below this width the throughput table drops its syscalls and zero-copy
#: columns and the transfer table its size column (figures stay whole).
WIDE = 110


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


class Spark:
    """A sparkline of the last minute as wide as the table lets it be."""

    def __init__(self, values: list[float], style: str) -> None:
        self.values, self.style = values, style

    def __rich_measure__(self, console, options) -> Measurement:
        return Measurement(8, min(HISTORY_SECONDS, options.max_width))

    def __rich_console__(self, console, options):
        yield Text(sparkline(self.values, options.max_width), style=self.style, no_wrap=True)


def frame(snap: dict | None, history: History, nics: list[dict], *, title: str, notice: str = "",
          sort: str = "rate", paused: bool = False, width: int = 120, height: int | None = None):
    """The whole screen. ``snap`` None: only the title and the notice."""
    head = Table.grid(expand=True)
    head.add_column(ratio=1, no_wrap=True, overflow="ellipsis")
    head.add_column(justify="right", no_wrap=True)
    if len(title) > width and title.startswith("zcopy top · "):
        title = title[len("zcopy top · "):]
    head.add_row(Text(title, style="bold"), Text("PAUSED", style="bold yellow") if paused else "")
    parts = [head]
    if notice:
        parts.append(Text(notice, style="bold red"))
    if snap is None:
        return Group(*parts)
    wide = width >= WIDE
    throughput, t_rows = _throughput(snap, history, nics, wide)
    requests, r_rows = _requests(snap, history)
    shown = TRANSFERS_SHOWN
    if height is not None:   # the panels' borders and table heads: 3 + 2 + 3 lines
        shown = max(height - len(parts) - t_rows - r_rows - 3 - 2 - 3, 1)
    return Group(*parts, throughput, requests, _transfers(snap, sort, wide, shown))


def _throughput(snap: dict, h: History, nics: list[dict], wide: bool) -> tuple[Panel, int]:
    t = Table(box=None, padding=(0, 1), expand=True)
    columns = ["", "out now", "in now", "out", "in"] + (["syscalls", "zero-copy"] if wide else [])
    for name in columns:
        t.add_column(name, justify="left" if name in ("", "zero-copy") else "right", no_wrap=True)
    t.add_column("last minute", ratio=1, no_wrap=True)

    def row(name, out_rate, in_rate, out, in_, extra, spark) -> None:
        t.add_row(name, rate(out_rate), rate(in_rate), format_size(out), format_size(in_),
                  *(extra if wide else ()), spark)

    row(Text("all", style="bold"), h.rate("sent"), h.rate("received"), snap.get("bytes_sent", 0),
        snap.get("bytes_received", 0), ("", ""),
        Spark([a + b for a, b in zip(h.series("sent"), h.series("received"))], "green"))
    engines = sorted((n, e) for n, e in (snap.get("engines") or {}).items()
                     if e.get("bytes_sent") or e.get("bytes_received") or e.get("syscalls"))
    for name, e in engines:
        series = [a + b for a, b in zip(h.series(f"sent:{name}"), h.series(f"received:{name}"))]
        row(name + ("" if wide or not e.get("zero_copy") else " ⚡"), h.rate(f"sent:{name}"),
            h.rate(f"received:{name}"), e.get("bytes_sent", 0), e.get("bytes_received", 0),
            (str(e.get("syscalls", "-")), "yes" if e.get("zero_copy") else "no"), Spark(series, "cyan"))
    if nics:
        t.add_section()
        for n in nics:   # the wire's view: what the kernel counted on each link
            row(Text(f"{n['name']} (nic)", style="magenta"), n["tx_rate"], n["rx_rate"], n["tx_bytes"],
                n["rx_bytes"], ("", ""), "")
    share = zero_copy_share(snap)
    title = "throughput" + ("" if share is None else f" · {share:.1%} of bytes sent zero-copy"
                            + ("" if wide else " (⚡)"))
    return Panel(t, title=title, title_align="left"), 1 + len(engines) + len(nics)


def _requests(snap: dict, h: History) -> tuple[Panel, int]:
    """Requests, latency and errors for a server of requests (serve);
    connections, errors and workers for any kind (a relay has no requests)."""
    g = Table.grid(padding=(0, 2))
    g.add_column(style="bold", no_wrap=True)
    g.add_column()
    if "requests" in snap:
        status = snap.get("status") or {}
        by_status = "  ".join(f"{cls} {h.rate('status:' + cls):.0f}/s ({n})"
                              for cls, n in sorted(status.items()) if n)
        g.add_row("requests", f"{h.rate('requests'):.0f}/s  total {snap.get('requests', 0)}   {by_status}")
    c = snap.get("connections") or {}
    g.add_row("connections", f"active {c.get('active', 0)}  accepted {c.get('accepted', 0)}  "
                             f"closed {c.get('closed', 0)}")
    lat = snap.get("latency")
    if lat:
        bounds = lat.get("bounds") or []
        for key, label in (("ttfb", "first byte"), ("ttlb", "last byte")):
            counts = lat.get(key) or []
            g.add_row(label, "  ".join(f"p{int(q * 100)} {seconds(percentile(bounds, counts, q))}"
                                       for q in (0.5, 0.9, 0.99)))
    pf = snap.get("prefetch")
    if pf:   # cold-cache readahead (docs/cold-cache.md): absent with --prefetch off
        g.add_row("prefetch", f"read ahead {pf.get('windows_prefetched', 0)}  "
                              f"parked {pf.get('parks', 0)} ({pf.get('parked_seconds', 0.0):.2f} s)  "
                              f"pool {pf.get('pool_size', 0)} (peak {pf.get('pool_peak', 0)})"
                              + (f"  failed {pf['failed']}" if pf.get("failed") else ""))
    auth = snap.get("auth")
    if auth and any(auth.values()):   # sign-ins refused (docs/serve.md, "Accounts")
        g.add_row("sign-ins", f"failed {auth.get('failures', 0)}  throttled {auth.get('throttled', 0)}  "
                              f"busy {auth.get('busy', 0)}")
    users = snap.get("users")
    if users:                         # requests by signed-in user, busiest first (docs/top.md)
        top = sorted(users.items(), key=lambda kv: (-kv[1], kv[0]))
        g.add_row("by user", Text("  ".join(f"{name} {n}" for name, n in top[:8])
                                  + (f"  (+{len(top) - 8} more)" if len(top) > 8 else "")))
    errors = snap.get("errors") or {}
    g.add_row("errors", ", ".join(f"{k} {v}" for k, v in sorted(errors.items(), key=lambda kv: -kv[1]))
              or Text("none", style="dim"))
    workers = snap.get("workers") or []
    unit = "req" if "requests" in snap else "sent"
    g.add_row("workers", "  ".join(
        f"#{w['slot']} {w['pid']}: " + (f"{w['requests']} req" if unit == "req" else format_size(w["bytes_sent"]))
        + f", {w['active']} conn" for w in workers))
    return Panel(g, title="requests" if "requests" in snap else "connections", title_align="left"), g.row_count


def _transfers(snap: dict, sort: str, wide: bool, shown: int) -> Panel:
    transfers = sort_transfers(snap.get("inflight") or [], sort)
    t = Table(box=None, padding=(0, 1), expand=True)
    t.add_column("client", no_wrap=True)
    t.add_column("", no_wrap=True)
    t.add_column("path", no_wrap=True, overflow="ellipsis", min_width=8, max_width=48)
    t.add_column("progress", ratio=1, no_wrap=True, min_width=6)
    t.add_column("done", justify="right", no_wrap=True)
    if wide:
        t.add_column("size", justify="right", no_wrap=True)
    t.add_column("rate", justify="right", no_wrap=True)
    arrows = {"down": "↓", "up": "↑", "both": "⇅"}
    for x in transfers[:shown]:
        total = x.get("total") or 0
        bar = ProgressBar(total=total, completed=x["done"]) if total else Text("")
        size = [format_size(total) if total else "?"] if wide else []
        t.add_row(x["client"], arrows.get(x.get("direction"), ""), x["path"], bar, format_size(x["done"]),
                  *size, rate(x.get("rate", 0)))
    count = snap.get("inflight_count", len(transfers))   # each worker lists its busiest 64
    title = f"transfers in flight: {count}"
    if count > min(shown, len(transfers)):
        title += f" (top {min(shown, len(transfers))} by {sort})"
    return Panel(t if transfers else Text("none", style="dim"), title=title, title_align="left",
                 subtitle=f"sort: {sort} · {KEYS_HELP}", subtitle_align="right")
