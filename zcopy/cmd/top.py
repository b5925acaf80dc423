"""Watch a running zcopy server live, like htop: throughput now and over the
last minute (total and per engine), the share of bytes sent zero-copy,
requests/s by status, connections, the busiest transfers in flight, errors,
latency percentiles, and the NICs' own rx/tx rates.

With no target it attaches to the only running zcopy server of this user
(waiting for one to start), or lists them if several run. Keys: q quits,
p pauses, s cycles the transfer sort. --once prints one frame, --json one
aggregated snapshot (both exit 1 when no server runs)."""

from __future__ import annotations

from zcopy.cli import positive_float, positive_int

HELP = "live dashboard of a running zcopy server"


def configure(p) -> None:
    target = p.add_mutually_exclusive_group()
    target.add_argument("--pid", type=positive_int, help="the server's (supervisor's) pid")
    target.add_argument("--socket", metavar="PATH",
                        help="the server's stats folder, e.g. $XDG_RUNTIME_DIR/zcopy/serve-4711")
    p.add_argument("--interval", type=positive_float, default=1.0, help="seconds between refreshes (default: 1)")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--once", action="store_true", help="print one frame and exit")
    out.add_argument("--json", action="store_true", help="print one snapshot as JSON and exit")


def run(args) -> int:
    from zcopy.stats import target_from_path
    from zcopy.top.app import run as run_top

    if args.socket is not None and target_from_path(args.socket) is None:
        import sys

        print(f"zcopy top: error: {args.socket!r} is not a zcopy stats folder (name like serve-<pid>) "
              "(see 'zcopy top --help')", file=sys.stderr)
        return 2
    return run_top(args.pid, args.socket, args.interval, args.once, args.json)
