"""Relay TCP connections from --listen to --upstream, socket -> pipe ->
socket with splice(2) (or recv_into/send with --engine copy), on one epoll
loop per worker (SO_REUSEPORT).

Half-closes travel through, resets close both sides, a refused or timed-out
upstream closes the client cleanly. Every connection is logged on one line
(bytes each way, duration, how it ended) to stderr or --log. --rate limits
the whole relay and --conn-rate each connection (bytes/s, both directions
together) with token buckets. With --engine auto the kernel probe decides
whether splice works between sockets, and its pipe size is used.
SIGTERM/SIGINT: stop accepting, let open connections finish within
--drain-timeout, exit 0; a second signal exits at once."""

from __future__ import annotations

import argparse
import socket
import sys

from zcopy.cli import pipe_size_arg, positive_float, positive_int, size_arg
from zcopy.server.supervisor import StartupError

HELP = "relay TCP connections to an upstream with splice (a zero-copy TCP proxy)"

#: Pipe size when the probe cannot be asked.
FALLBACK_PIPE_SIZE = 1 << 20


def address_arg(text: str) -> tuple[str, int]:
    """HOST:PORT or [V6]:PORT."""
    host, sep, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host:
        raise argparse.ArgumentTypeError(f"not HOST:PORT: {text!r}")
    try:
        value = int(port)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number in {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range in {text!r}")
    return host, value


def rate_arg(text: str) -> int:
    value = size_arg(text.removesuffix("/s"))
    if value <= 0:
        raise argparse.ArgumentTypeError(f"rate must be positive: {text!r}")
    return value


def configure(p) -> None:
    p.add_argument("--listen", type=address_arg, required=True, metavar="HOST:PORT",
                   help="address to accept clients on (port 0: any free port)")
    p.add_argument("--upstream", type=address_arg, required=True, metavar="HOST:PORT",
                   help="address every connection is relayed to")
    p.add_argument("--engine", choices=["auto", "splice", "copy"], default="auto",
                   help="splice (zero-copy), copy (recv_into/send), or auto: as the probe says")
    p.add_argument("--pipe-size", type=pipe_size_arg, default=None, metavar="BYTES",
                   help="pipe size per busy direction (copy: buffer size); default from the probe")
    p.add_argument("--rate", type=rate_arg, default=None, metavar="BYTES/s",
                   help="limit for the whole relay, both directions together (e.g. 10MiB)")
    p.add_argument("--conn-rate", type=rate_arg, default=None, metavar="BYTES/s",
                   help="limit per connection, both directions together")
    p.add_argument("--max-connections", type=positive_int, default=10000, help="per worker (default: 10000)")
    p.add_argument("--idle-timeout", type=positive_float, default=300.0,
                   help="close a connection with no traffic either way for this long (default: 300 s)")
    p.add_argument("--connect-timeout", type=positive_float, default=10.0,
                   help="seconds allowed to connect to the upstream (default: 10)")
    p.add_argument("--workers", type=positive_int, default=1, help="worker processes (default: 1)")
    p.add_argument("--drain-timeout", type=positive_float, default=30.0,
                   help="on SIGTERM, seconds open connections may take to finish")
    p.add_argument("--log", metavar="PATH|-", default=None,
                   help="per-connection log file (default: stderr)")


def resolve(host: str, port: int) -> list[tuple[int, tuple]]:
    """(family, sockaddr) of every TCP address of host:port, in the resolver's order."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise StartupError(f"cannot resolve {host!r}: {exc.strerror}", code=2) from None
    return list(dict.fromkeys((family, sockaddr) for family, _, _, _, sockaddr in infos))


def choose(engine: str, want_pipe_size: bool) -> tuple[str, int, dict[str, str]]:
    """(engine, pipe size, reasons). With ``auto`` the engine, and unless
    --pipe-size is given the pipe size, are the probe profile's decisions
    (``zcopy.profile``: ``relay_engine``, ``pipe_size``, each with its reason)."""
    reasons = {"engine": "--engine flag", "pipe_size": "--pipe-size flag"}
    if engine != "auto" and not want_pipe_size:
        return engine, FALLBACK_PIPE_SIZE, reasons
    try:
        from zcopy.profile import load_or_probe

        profile = load_or_probe(".", quick=True)
    except Exception as exc:   # the probe must never stop the relay from starting
        why = f"probe unavailable ({type(exc).__name__}: {exc})"
        if want_pipe_size:
            reasons["pipe_size"] = f"{why}; 1 MiB"
        if engine == "auto":
            engine, reasons["engine"] = "splice", f"{why}; splice, the Linux default"
        return engine, FALLBACK_PIPE_SIZE, reasons
    pipe_size = FALLBACK_PIPE_SIZE
    if want_pipe_size:
        pipe_size = profile.pipe_size
        reasons["pipe_size"] = f"probe ({profile.source}): {profile.reasons.get('pipe_size', '')}"
    if engine == "auto":
        engine = profile.relay_engine
        reasons["engine"] = f"probe ({profile.source}): {profile.reasons['relay_engine']}"
    return engine, pipe_size, reasons


def build_config(args):
    from zcopy.relay.config import RelayConfig
    from zcopy.relay.stats import address

    (family, sockaddr), *more = resolve(*args.upstream)
    cfg = RelayConfig(upstream=sockaddr, upstream_family=family, more_upstreams=more,
                      upstream_name=address(*args.upstream),
                      bind=args.listen[0], port=args.listen[1], workers=args.workers,
                      rate=args.rate, conn_rate=args.conn_rate, max_connections=args.max_connections,
                      idle_timeout=args.idle_timeout, connect_timeout=args.connect_timeout,
                      drain_timeout=args.drain_timeout, log=args.log)
    cfg.engine, cfg.pipe_size, cfg.reasons = choose(args.engine, args.pipe_size is None)
    if args.pipe_size is not None:
        cfg.pipe_size = args.pipe_size
    return cfg


def run(args) -> int:
    from zcopy.relay.stats import address
    from zcopy.relay.worker import worker_main
    from zcopy.server.supervisor import Supervisor, start
    from zcopy.units import format_size

    try:
        cfg, listeners = start(build_config, args)
    except StartupError as exc:
        print(f"zcopy relay: error: {exc}", file=sys.stderr)
        return exc.code
    limits = ", ".join(f"{name} {format_size(v)}/s" for name, v in
                       (("rate", cfg.rate), ("conn-rate", cfg.conn_rate)) if v) or "no rate limit"
    print(f"zcopy relay: listening on {address(cfg.bind, cfg.port)} -> {cfg.upstream_name}, "
          f"{cfg.workers} worker(s), engine {cfg.engine} ({cfg.reasons['engine']}), pipe {format_size(cfg.pipe_size)} "
          f"({cfg.reasons['pipe_size']}), {limits}", file=sys.stderr, flush=True)
    return Supervisor(cfg, listeners, worker_main, stats_kind="relay").run()
