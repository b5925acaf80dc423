#!/usr/bin/env python3
"""What signing in costs a keep-alive request: CPU per 1 KiB GET with HTTP Basic vs without.

One `zcopy serve --users FILE --workers 1`, its worker pinned to one CPU (taskset), wrk pinned to
another, keep-alive connections. Three cases, in interleaved rounds:

- ``anon``:  no Authorization (the ``*`` account reads ``/``), the same server;
- ``basic``: ``Authorization: Basic`` of an account (the password checked once per connection, then
  the connection's remembered sign-in and the answer memo, whose key holds the rules generation);
- ``plain``: a server without ``--users`` (the path before accounts).

The figure is the worker's CPU time (utime + stime from /proc) per request, which a loaded machine
disturbs less than the request rate; the rate is printed too. A warm-up run per case comes first
(the first sign-ins cost one argon2 check per connection, which is the point of checking once). The bar (issue 16): basic / anon
<= 1.1.

    python tools/bench_auth.py --rounds 5 --duration 5
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
TICKS = os.sysconf("SC_CLK_TCK")


def start(root: str, port: int, args: list[str], cpu: int) -> tuple[subprocess.Popen, int]:
    if subprocess.run(["curl", "-s", "-o", "/dev/null", f"http://127.0.0.1:{port}/"]).returncode == 0:
        raise SystemExit(f"port {port} is taken (another server?): choose --port")
    proc = subprocess.Popen(["taskset", "-c", str(cpu), sys.executable, "-m", "zcopy", "serve", root,
                             "--port", str(port), "--workers", "1", "--state-dir", os.path.join(root, "..", f"state{port}"),
                             *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONPATH": REPO})
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if subprocess.run(["curl", "-s", "-o", "/dev/null", f"http://127.0.0.1:{port}/1k"]).returncode == 0:
            children = open(f"/proc/{proc.pid}/task/{proc.pid}/children").read().split()
            worker = [int(c) for c in children if open(f"/proc/{c}/comm").read().strip() != "zcopy-metrics"]
            if worker:
                return proc, worker[0]
        time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"server on port {port} did not start")


def stop(servers: dict) -> None:
    for proc, _ in servers.values():
        proc.terminate()
        proc.wait(30)


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def run_wrk(port: int, header: str | None, duration: int, conns: int, cpu: int) -> tuple[float, int]:
    cmd = ["taskset", "-c", str(cpu), "wrk", "-t1", f"-c{conns}", f"-d{duration}s"]
    if header:
        cmd += ["-H", header]
    out = subprocess.run(cmd + [f"http://127.0.0.1:{port}/1k"], capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    if "Non-2xx" in out:
        raise SystemExit(f"wrk saw errors:\n{out}")
    return rate, total


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--duration", type=int, default=5)
    p.add_argument("--connections", type=int, default=8)
    p.add_argument("--port", type=int, default=18701, help="the servers listen on PORT and PORT + 1")
    p.add_argument("--server-cpu", type=int, default=0)
    p.add_argument("--client-cpu", type=int, default=1)
    a = p.parse_args()
    sys.path.insert(0, REPO)
    from zcopy.accounts import passwords

    with tempfile.TemporaryDirectory() as tmp:
        root = os.path.join(tmp, "root")
        os.mkdir(root)
        with open(os.path.join(root, "1k"), "wb") as f:
            f.write(os.urandom(1024))
        users = os.path.join(tmp, "users.txt")
        with open(users, "w") as f:
            f.write(f"alice {passwords.make('alice-pw')} /:r\n* - /:r\n")
        basic = "Authorization: Basic " + base64.b64encode(b"alice:alice-pw").decode()
        servers = {}
        try:
            servers["accounts"] = start(root, a.port, ["--users", users], a.server_cpu)
            servers["plain"] = start(root, a.port + 1, [], a.server_cpu)
        except BaseException:
            stop(servers)
            raise
        cases = {"anon": ("accounts", a.port, None), "basic": ("accounts", a.port, basic),
                 "plain": ("plain", a.port + 1, None)}
        per_req = {c: [] for c in cases}
        rates = {c: [] for c in cases}
        try:
            # Warm-up, not counted: the first sign-ins (one argon2 check per connection that arrives
            # before the first finished; 60 s remembered after that), the open-file cache.
            # One request first: its argon2 check (0.1-0.2 s on the server's CPU) must be over, and
            # the credential remembered, before anything is measured.
            subprocess.run(["curl", "-sf", "-o", "/dev/null", "-H", basic, f"http://127.0.0.1:{a.port}/1k"], check=True)
            for server, port, header in cases.values():
                run_wrk(port, header, 1, a.connections, a.client_cpu)
            for _ in range(a.rounds):
                for case, (server, port, header) in cases.items():
                    worker = servers[server][1]
                    before = cpu_seconds(worker)
                    rate, total = run_wrk(port, header, a.duration, a.connections, a.client_cpu)
                    per_req[case].append((cpu_seconds(worker) - before) / total * 1e6)
                    rates[case].append(rate)
        finally:
            stop(servers)
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs "
          f"(other work running makes the figures noisy)")
    for case in cases:
        print(f"{case:6} CPU/request median {statistics.median(per_req[case]):6.1f} us "
              f"(rounds: {', '.join(f'{x:.1f}' for x in per_req[case])})  "
              f"rate median {statistics.median(rates[case]):8.0f}/s")
    print(f"basic / anon  CPU per request, best rounds: {min(per_req['basic']) / min(per_req['anon']):.3f}x "
          f"(the least disturbed by other work)")
    ratio = statistics.median(per_req["basic"]) / statistics.median(per_req["anon"])
    ratio_plain = statistics.median(per_req["basic"]) / statistics.median(per_req["plain"])
    print(f"basic / anon  CPU per request: {ratio:.3f}x (bar: <= 1.1x)")
    print(f"basic / plain CPU per request: {ratio_plain:.3f}x (plain: no --users)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
