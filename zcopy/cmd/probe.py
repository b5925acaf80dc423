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
         "filesystem": "filesystem", "nic": "NICs"}


def configure(p) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    p.add_argument("--path", default=".", help="test sendfile/splice from this path's filesystem (default: .)")
    p.add_argument("--to", metavar="ADDRESS", help="also report the egress NIC the route picks for ADDRESS")
    p.add_argument("--save", action="store_true", help="cache the result for `serve --auto`")
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
    saved = profile.save(report) if args.save else None
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        render(report)
    if saved:
        sys.stderr.write(f"saved to {saved}\n")
    return 0


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
    for area, findings in groups.items():
        table = Table(title=AREAS.get(area, area), title_justify="left", expand=True)
        table.add_column("id", no_wrap=True)
        table.add_column("status", no_wrap=True)
        table.add_column("detail")
        for f in findings:
            st = f["status"]
            table.add_row(f["id"], f"[{STYLE.get(st, '')}]{st}[/]", f["detail"])
        console.print(table)
    rec = report["recommendation"]
    lines = []
    for key in ("download_engine", "upload_engine", "pipe_size", "chunk_size", "workers", "prefetch"):
        lines.append(f"[bold]{key}[/] = [cyan]{rec[key]}[/]\n    {rec['reasons'].get(key, '')}")
    console.print(Panel("\n".join(lines), title="Recommendation", subtitle=rec.get("source", "")))
