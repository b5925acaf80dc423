"""Ask the running kernel what it really does: sendfile, splice, pipes,
copy_file_range, MSG_ZEROCOPY, kTLS, io_uring and NIC offloads, then
recommend engines and sizes. Every finding comes from a real syscall."""

from __future__ import annotations

import json
import sys

HELP = "measure what the kernel and NICs do, and recommend engines"


def configure(p) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    p.add_argument("--path", default=".", help="test sendfile/splice from this path's filesystem (default: .)")
    p.add_argument("--to", metavar="ADDRESS", help="also report the egress NIC the route picks for ADDRESS")
    p.add_argument("--save", action="store_true", help="cache the result for `serve --auto`")
    p.add_argument("--quick", action="store_true", help="skip the slow throughput measurements")


def run(args) -> int:
    from probes import Context, run_all

    findings = run_all(Context(path=args.path, to=args.to, quick=args.quick))
    json.dump({"findings": [f.to_json() for f in findings]}, sys.stdout, indent=2)
    print()
    return 0
