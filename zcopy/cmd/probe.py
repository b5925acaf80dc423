"""Ask the running kernel what it really does: sendfile, splice, pipes,
copy_file_range, MSG_ZEROCOPY, kTLS, io_uring and NIC offloads, then
recommend engines and sizes. Every finding comes from a real syscall.

Statuses: ok (works as the man page says), unsupported (the kernel refused),
degraded (works, but worse than it could), error (the probe could not
tell), skipped (not attempted). See docs/probe.md for every finding id.

examples:
  zcopy probe                      tables and a recommendation
  zcopy probe --quick --json       one JSON object, no throughput measurement
  zcopy probe --path /srv --to 192.0.2.10 --save
"""

from __future__ import annotations

import json
import os
import sys

HELP = "measure what the kernel and NICs do, and recommend engines"

STYLE = {"ok": "green", "unsupported": "red", "degraded": "yellow", "error": "bold red", "skipped": "dim"}
AREAS = {"sendfile": "sendfile(2)", "splice": "splice(2)", "pipe": "pipes", "copy_file_range": "copy_file_range(2)",
         "ktls": "kTLS", "io_uring": "io_uring", "msg_zerocopy": "MSG_ZEROCOPY", "tcp_cork": "TCP_CORK / MSG_MORE",
         "small_reply": "small replies: one copying send or head + sendfile",
         "filesystem": "filesystem", "nic": "NICs"}


def configure(p) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    p.add_argument("--path", default=".", help="test sendfile/splice from this path's filesystem (default: .)")
    p.add_argument("--to", metavar="ADDRESS", help="also report the egress NIC the route picks for ADDRESS")
    p.add_argument("--save", action="store_true", help="cache the result for `serve --auto` (in $XDG_CACHE_HOME/zcopy, "
                   "one file per kernel release, boot and NIC set)")
    p.add_argument("--quick", action="store_true", help="skip the slow throughput measurements")


def run(args) -> int:
    from probes import Context
    from zcopy import profile

    if not os.path.exists(args.path):
        sys.stderr.write(f"zcopy probe: error: --path {args.path!r} does not exist\n")
        return 2
    ctx = Context(path=args.path, to=args.to, quick=args.quick)
    if args.json:
        report = profile.build_report(ctx)
    else:
        from rich.console import Console

        with Console(stderr=True).status("probing...") as status:
            report = profile.build_report(ctx, on_progress=lambda name: status.update(f"probing {name}..."))
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        render(report)
    if args.save:
        try:
            saved = profile.save(report)
        except OSError as exc:   # the report is printed anyway; only the cache is missing
            sys.stdout.flush()
            sys.stderr.write(f"zcopy probe: error: cannot save the report under {profile.cache_dir()}: "
                             f"{exc.strerror or exc}\n")
            return 1
        sys.stderr.write(f"saved to {saved}\n")
    return 0


STATUS_WIDTH = max(len(s) for s in STYLE)


def render(report: dict) -> None:
    """Tables grouped by area (the part of the id before the first dot), then the recommendation."""
    from rich.console import Console
    from rich.panel import Panel
    from rich.table import Table

    console = Console()
    k = report["kernel"]
    console.print(f"[bold]Linux {k['release']}[/] ({k['machine']}), boot {k.get('boot_id') or '?'}")
    groups: dict[str, list[dict]] = {}
    for f in report["findings"]:
        groups.setdefault(f["id"].split(".")[0], []).append(f)
    id_width = max((len(f["id"]) for f in report["findings"]), default=2)
    for area, findings in groups.items():
        console.print(_findings_table(AREAS.get(area, area), findings, id_width))
    rec = report["recommendation"]
    grid = Table.grid(padding=(0, 2))
    grid.add_column(no_wrap=True)
    grid.add_column(no_wrap=True)
    grid.add_column(ratio=1)   # the reason wraps in its own column
    for key in ("download_engine", "upload_engine", "relay_engine", "pipe_size", "chunk_size", "workers", "prefetch",
                "small_reply_max", "https"):
        if key in rec:          # (a cached report from before a field existed lacks it)
            grid.add_row(f"[bold]{key}[/]", f"[cyan]{_shown(key, rec[key])}[/]", rec["reasons"].get(key, ""))
    console.print(Panel(grid, title="Recommendation", subtitle=rec.get("source", "")))


def _findings_table(title: str, findings: list[dict], id_width: int):
    from rich.table import Table

    table = Table(title=title, title_justify="left", expand=True)
    # Fixed widths (only detail stretches), so the columns line up from one area's table to the next.
    table.add_column("id", no_wrap=True, width=id_width)
    table.add_column("status", no_wrap=True, width=STATUS_WIDTH)
    table.add_column("detail", ratio=1)
    for f in findings:
        table.add_row(f["id"], f"[{STYLE.get(f['status'], '')}]{f['status']}[/]", f["detail"])
    return table


def _shown(key: str, value) -> str:
    """Sizes in bytes and in words, so 524288 reads as 512 KiB."""
    if key in ("pipe_size", "chunk_size", "small_reply_max") and isinstance(value, int):
        from zcopy.units import format_size

        return f"{value} ({format_size(value)})"
    return str(value)
