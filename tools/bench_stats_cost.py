#!/usr/bin/env python3
"""What live stats cost the hot path: the same `zcopy serve` with stats
publishing on and off (ZCOPY_STATS=off), driven by wrk with small files
(the request-rate-bound case, where per-request bookkeeping shows most),
in interleaved rounds; prints the medians and the on/off ratio.

The counters themselves are always bumped (they are plain int adds in the
loop); "off" removes the once-a-second snapshot + publish. With
``--baseline REV`` a third server runs the code of git revision REV
(e.g. the commit before the stats work), which measures the counters too.

    python tools/bench_stats_cost.py --rounds 5 --duration 5
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def start(root: str, port: int, env: dict, pythonpath: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "zcopy", "serve", root, "--port", str(port), "--workers", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=pythonpath,
                            env={**os.environ, "PYTHONPATH": pythonpath, **env})
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if subprocess.run(["curl", "-s", "-o", "/dev/null", f"http://127.0.0.1:{port}/1k"]).returncode == 0:
            return proc
        time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"server on port {port} did not start")


def _fill_missing(dst: str, src: str) -> None:
    """Modules the old revision's CLI names but that were not committed yet
    (other work in progress) come from the working tree, so it starts."""
    import shutil

    for sub in ("cmd", ""):
        for name in os.listdir(os.path.join(src, sub)):
            if name.endswith(".py") and not os.path.exists(os.path.join(dst, sub, name)):
                shutil.copy(os.path.join(src, sub, name), os.path.join(dst, sub, name))


def wrk(port: int, path: str, duration: int, conns: int) -> float:
    out = subprocess.run(["wrk", "-t1", f"-c{conns}", f"-d{duration}s", f"http://127.0.0.1:{port}{path}"],
                         capture_output=True, text=True, check=True).stdout
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--baseline", metavar="REV", help="also run the server code of this git revision")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="zcopy-statcost-") as tmp:
        root = os.path.join(tmp, "www")
        os.mkdir(root)
        with open(os.path.join(root, "1k"), "wb") as f:
            f.write(os.urandom(1024))
        runtime = os.path.join(tmp, "run")
        os.mkdir(runtime, 0o700)
        variants = {"stats on": ({"XDG_RUNTIME_DIR": runtime}, REPO),
                    "stats off": ({"XDG_RUNTIME_DIR": runtime, "ZCOPY_STATS": "off"}, REPO)}
        if args.baseline:
            base = os.path.join(tmp, "base")
            os.mkdir(base)
            archive = subprocess.run(["git", "-C", REPO, "archive", args.baseline, "zcopy", "probes"],
                                     capture_output=True, check=True).stdout
            subprocess.run(["tar", "-x", "-C", base], input=archive, check=True)
            _fill_missing(os.path.join(base, "zcopy"), os.path.join(REPO, "zcopy"))
            variants[f"baseline {args.baseline}"] = ({}, base)
        procs, ports = {}, {}
        try:
            for i, (name, (env, path)) in enumerate(variants.items()):
                ports[name] = 18900 + i
                procs[name] = start(root, ports[name], env, path)
            results: dict[str, list[float]] = {name: [] for name in variants}
            for r in range(args.rounds):
                for name in (list(variants) if r % 2 == 0 else list(reversed(variants))):
                    results[name].append(wrk(ports[name], "/1k", args.duration, args.connections))
            med = {name: statistics.median(v) for name, v in results.items()}
            for name, v in results.items():
                print(f"{name:>20}: median {med[name]:9.0f} req/s  rounds {[round(x) for x in v]}")
            for name in med:
                if name != "stats on":
                    print(f"stats on / {name}: {med['stats on'] / med[name]:.3f}")
        finally:
            for proc in procs.values():
                proc.send_signal(signal.SIGTERM)
            for proc in procs.values():
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
