"""Serve a folder over HTTP/1.1 with zero-copy sends: GET/HEAD, ranges,
conditionals, listings, precompressed siblings, keep-alive and pipelining,
on one epoll loop per worker (SO_REUSEPORT).

Engines. Without --auto: downloads use sendfile, uploads (--allow-write) use
recv_into + pwrite, one worker; no pipes. With --auto the kernel probe's
cached recommendation (or a quick probe) decides: downloads use sendfile where
it works from ROOT's filesystem, else splice (file -> pipe -> socket), else
mmap, else read + send; uploads use splice (socket -> pipe -> file) where both
splices work, else recv_into + pwrite; plus the pipe size (used only by an
engine that splices) and the worker count. --engine, --upload-engine,
--pipe-size and --workers each override their one choice. The start-up panel
shows what is in effect and why.

SIGTERM/SIGINT drain in-flight transfers and exit 0; a second signal exits at
once."""

from __future__ import annotations

import argparse
import os
import sys

from zcopy.cli import pipe_size_arg, positive_int, positive_size_arg, seconds_arg, size_arg, timeout_arg
from zcopy.server.supervisor import StartupError

HELP = "serve a folder over HTTP with zero-copy sends"

#: --engine spelling -> engine registry name
ENGINES = {"sendfile": "sendfile", "splice": "splice", "mmap": "mmap_send", "readwrite": "read_send"}


#: More worker processes than this is a typo: each holds its own loop, caches and fds.
MAX_WORKERS = 1024


def workers_arg(text: str) -> int | str:
    if text == "auto":
        return "auto"
    value = positive_int(text)
    if value > MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"at most {MAX_WORKERS} workers: {text!r}")
    return value


def port_arg(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range: {port}")
    return port


def count_arg(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"cannot be negative: {n}")
    return n


def worker_timeout_arg(text: str) -> float:
    """An idle loop turns once a second (its tick): a timeout under two
    seconds would replace healthy idle workers."""
    value = timeout_arg(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"must be at least 2 seconds: {text!r}")
    return value


def metrics_arg(text: str) -> tuple[str, int]:
    from zcopy.stats.metrics import parse_hostport

    try:
        return parse_hostport(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def configure(p) -> None:
    p.add_argument("root", nargs="?", default=".", help="folder to serve (default: .)")
    p.add_argument("--bind", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=port_arg, default=8000, help="TCP port, 0 for any free one (default: 8000)")
    p.add_argument("--auto", action="store_true", help="apply the kernel probe's recommendation")
    p.add_argument("--workers", type=workers_arg, default=None, help="worker processes, or 'auto' (one per CPU)")
    p.add_argument("--engine", choices=["auto", *ENGINES], default="auto",
                   help="how file bytes are sent (default: sendfile; with --auto, the probe's choice)")
    p.add_argument("--pipe-size", type=pipe_size_arg, default=None,
                   help="pipe size, used only when an engine in use splices (default: 1 MiB)")
    p.add_argument("--small-reply-max", type=size_arg, default=None, metavar="SIZE",
                   help="bodies up to SIZE leave with their head in one send from memory, 0 for never "
                        "(default: 8KiB; with --auto, the probe's crossover)")
    p.add_argument("--notsent-lowat", type=size_arg, default=None, metavar="SIZE",
                   help="at most SIZE bytes a connection's socket holds unsent (TCP_NOTSENT_LOWAT), 0 for the "
                        "kernel's default (default: 0; with --auto, the probe's choice: docs/serve.md)")
    p.add_argument("--digest-max", type=size_arg, default=8 << 30, metavar="SIZE",
                   help="files up to SIZE get a content ETag that every node agrees on (hashed off the loop "
                        "once); larger ones keep this node's, 0 for none (default: 8GiB; docs/http.md)")
    p.add_argument("--access-log", metavar="PATH|-", help="combined-format access log (- for stdout)")
    p.add_argument("--follow-symlinks", action="store_true", help="serve symlinks that stay inside ROOT")
    p.add_argument("--symlink-target", action="append", default=[], metavar="DIR",
                   help="with --follow-symlinks, links may also lead into DIR (repeatable)")
    p.add_argument("--show-hidden", action="store_true", help="serve and list dotfiles")
    p.add_argument("--allow-mac-files", action="store_true",
                   help="let macOS Finder write and read its ._* and .DS_Store files (never listed: docs/webdav.md)")
    p.add_argument("--max-connections", type=positive_int, default=10000, help="per worker (default: 10000)")
    p.add_argument("--header-timeout", type=timeout_arg, default=10.0, help="seconds to receive a request head")
    p.add_argument("--idle-timeout", type=timeout_arg, default=60.0, help="keep-alive idle seconds")
    p.add_argument("--send-timeout", type=timeout_arg, default=60.0,
                   help="close a client that accepts no byte for this long")
    p.add_argument("--drain-timeout", type=timeout_arg, default=30.0,
                   help="on SIGTERM, seconds allowed to finish in-flight transfers")
    p.add_argument("--drain-delay", type=seconds_arg, default=0.0, metavar="S",
                   help="on SIGTERM, /readyz turns 503 and the listeners keep accepting this long "
                        "before the drain starts (default: 0)")
    p.add_argument("--worker-timeout", type=worker_timeout_arg, default=30.0, metavar="S",
                   help="replace a worker whose loop makes no progress this long, >= 2 (default: 30)")
    p.add_argument("--metrics", metavar="HOST:PORT", type=metrics_arg,
                   help="also serve the live stats in Prometheus text format, /healthz and /readyz "
                        "on this address")
    p.add_argument("--state-dir", metavar="DIR",
                   help="the server's own state: an sqlite database and the share secret; on a local "
                        "filesystem (default: $XDG_STATE_HOME/zcopy or ~/.local/state/zcopy)")
    p.add_argument("--prefetch", choices=["auto", "on", "off"], default="auto",
                   help="read file windows missing from the page cache in a thread pool, off the event loop "
                        "(auto: on unless ROOT is on tmpfs/ramfs)")
    p.add_argument("--users", metavar="FILE",
                   help="named accounts with per-folder rights, signed in with HTTP Basic (docs/accounts.md; "
                        "made with `zcopy user`); their rules also decide writes")
    p.add_argument("--trusted-proxy", metavar="ADDR",
                   help="a reverse proxy at this address: the client address (for sign-in throttling and the "
                        "log) comes from its X-Forwarded-For")
    t = p.add_argument_group("HTTPS (docs/tls.md)")
    t.add_argument("--tls-cert", metavar="FILE", help="serve HTTPS with this PEM certificate (chain after it)")
    t.add_argument("--tls-key", metavar="FILE", help="the PEM private key of --tls-cert")
    t.add_argument("--tls-redirect", metavar="PORT", type=port_arg,
                   help="also answer plain HTTP on this port with a redirect to https://")
    t.add_argument("--no-ktls", action="store_true",
                   help="never hand TLS keys to the kernel: encrypt every byte in user space")
    w = p.add_argument_group("writes (uploads, delete, rename)")
    w.add_argument("--allow-write", action="store_true", help="accept PUT, DELETE, MOVE and MKCOL")
    w.add_argument("--upload-engine", choices=["auto", "splice", "recv"], default="auto",
                   help="how upload bytes reach the file (splice: socket->pipe->file; recv: recv_into+pwrite; "
                        "default: recv; with --auto, splice where the probe finds both splices work)")
    token = w.add_mutually_exclusive_group()
    token.add_argument("--token", help="token writes need (also from $ZCOPY_TOKEN); opens reads too; "
                                       "needs --allow-write")
    token.add_argument("--token-file", metavar="PATH", help="read the write token from this file (first line)")
    read_token = w.add_mutually_exclusive_group()
    read_token.add_argument("--read-token", help="token reads need (default: reads are open); "
                                                 "with --allow-write, a write token is needed too")
    read_token.add_argument("--read-token-file", metavar="PATH",
                            help="read the read token from this file (first line), out of sight of ps")
    w.add_argument("--max-upload", type=positive_size_arg, default=None, help="largest accepted upload, e.g. 10GiB")
    w.add_argument("--no-fsync", action="store_true", help="do not fsync uploads before renaming them into place")
    w.add_argument("--upload-expiry", type=timeout_arg, default=24 * 3600.0, metavar="SECONDS",
                   help="remove a resumable upload (tus, IETF draft) idle this long (default: 86400)")
    w.add_argument("--max-pending-uploads", type=count_arg, default=100, metavar="N",
                   help="unfinished resumable uploads one account or token may hold at once (default: 100; "
                        "0: no limit)")
    w.add_argument("--make-parents", action="store_true",
                   help="PUT and MOVE create missing parent folders (the old behaviour; default: 409 as WebDAV says)")


def build_config(args):
    """Flags + (with --auto) the probe's profile -> ServeConfig, with reasons."""
    from zcopy.server.config import ServeConfig

    root = os.path.realpath(args.root)
    if not os.path.isdir(root):
        raise StartupError(f"root {args.root!r} is not a folder", code=2)
    targets = []
    for folder in args.symlink_target:
        real = os.path.realpath(folder)
        if not os.path.isdir(real):
            raise StartupError(f"--symlink-target {folder!r} is not a folder", code=2)
        targets.append(real)
    if targets and not args.follow_symlinks:
        raise StartupError("--symlink-target needs --follow-symlinks", code=2)
    if args.notsent_lowat is not None and args.notsent_lowat >= 1 << 31:
        raise StartupError(f"--notsent-lowat must be below 2 GiB: {args.notsent_lowat} bytes", code=2)
    if args.access_log and args.access_log != "-":
        _check_access_log(args.access_log)
    token, read_token = _tokens(args)
    accounts = _accounts(args.users)
    state_dir = _state_dir(args, root, targets)
    cfg = ServeConfig(root=root, bind=args.bind, port=args.port, access_log=args.access_log,
                      follow_symlinks=args.follow_symlinks, symlink_targets=tuple(targets),
                      show_hidden=args.show_hidden, mac_files=args.allow_mac_files,
                      max_connections=args.max_connections, header_timeout=args.header_timeout,
                      idle_timeout=args.idle_timeout, send_timeout=args.send_timeout,
                      drain_timeout=args.drain_timeout, drain_delay=args.drain_delay,
                      worker_timeout=args.worker_timeout, allow_write=args.allow_write,
                      token=token, read_token=read_token, max_upload=args.max_upload,
                      fsync=not args.no_fsync, state_dir=state_dir, users=args.users, accounts=accounts,
                      trusted_proxy=args.trusted_proxy, make_parents=args.make_parents,
                      upload_expiry=args.upload_expiry, max_pending_uploads=args.max_pending_uploads,
                      digest_max=args.digest_max)
    reasons = cfg.reasons
    cfg.tls = _tls(args, reasons)
    reasons["state_dir"] = "--state-dir flag" if args.state_dir else "default: the XDG state folder"
    profile = None
    if args.auto:
        from zcopy.profile import load_or_probe

        profile = load_or_probe(root, quick=True)
        cfg.engine = profile.download_engine
        cfg.upload_engine = profile.upload_engine
        cfg.pipe_size = profile.pipe_size
        cfg.workers = profile.workers
        for key in ("download_engine", "upload_engine", "pipe_size", "workers"):
            reasons[key] = f"probe ({profile.source}): {profile.reasons.get(key, '')}"
    else:
        reasons["download_engine"] = "default: sendfile (use --auto to apply the probe's choice)"
        reasons["workers"] = "default: one worker (use --workers auto for one per CPU)"
        reasons["pipe_size"] = "default: 1 MiB"
        reasons["upload_engine"] = "default: recv_into + pwrite (use --auto to apply the probe's choice)"
    if args.prefetch != "auto":
        cfg.prefetch = args.prefetch == "on"
        reasons["prefetch"] = "--prefetch flag"
    elif profile is not None:
        cfg.prefetch = profile.prefetch
        reasons["prefetch"] = f"probe ({profile.source}): {profile.reasons.get('prefetch', '')}"
    else:
        from zcopy.server.prefetch import decide

        cfg.prefetch, reasons["prefetch"] = decide(root)
    if args.engine != "auto":
        cfg.engine = ENGINES[args.engine]
        reasons["download_engine"] = "--engine flag"
    if args.upload_engine != "auto":
        cfg.upload_engine = {"splice": "splice", "recv": "recv_pwrite"}[args.upload_engine]
        reasons["upload_engine"] = "--upload-engine flag"
    _flag_or_probe(cfg, args.small_reply_max, profile, "small_reply_max", "--small-reply-max",
                   "default: 8 KiB (below the crossover measured so far; --auto measures it)")
    _flag_or_probe(cfg, args.notsent_lowat, profile, "notsent_lowat", "--notsent-lowat",
                   "default: the kernel's (net.ipv4.tcp_notsent_lowat; --auto measures it)")
    if args.pipe_size is not None:
        cfg.pipe_size = args.pipe_size
        reasons["pipe_size"] = "--pipe-size flag"
    from zcopy.profile import lone_step_for, step_for     # (the engine and pipe as chosen above, flags included)

    cfg.budget, reasons["chunk_size"] = step_for(cfg.engine, cfg.pipe_size)
    cfg.lone_budget = lone_step_for(cfg.engine, cfg.budget)
    if args.workers == "auto":
        cfg.workers = len(os.sched_getaffinity(0))
        reasons["workers"] = f"--workers auto: {cfg.workers} usable CPU(s)"
    elif args.workers is not None:
        cfg.workers = args.workers
        reasons["workers"] = "--workers flag"
    return cfg


def _flag_or_probe(cfg, flag_value, profile, name: str, flag: str, default_why: str) -> None:
    """``cfg.<name>`` and its reason: the flag's value if given, else the profile's (with --auto), else
    the config's default (``default_why`` says what it is)."""
    if flag_value is not None:
        setattr(cfg, name, flag_value)
        cfg.reasons[name] = f"{flag} flag"
    elif profile is not None:
        setattr(cfg, name, getattr(profile, name))
        cfg.reasons[name] = f"probe ({profile.source}): {profile.reasons.get(name, '')}"
    else:
        cfg.reasons[name] = default_why


def _steps(cfg) -> str:
    """The bytes one connection may move per loop turn: the send engine's (and its longer step while the
    connection is alone on its worker), and the copying engines' where they differ (an upload engine
    apart from the send one, TLS in user space)."""
    from zcopy.units import format_size

    send = f"{format_size(cfg.budget)} a turn"
    if cfg.lone_budget:
        send += f" ({format_size(cfg.lone_budget)} alone)"
    copies = cfg.allow_write and cfg.upload_engine != cfg.engine or cfg.tls is not None
    return f"{send}, {format_size(cfg.copy_budget)} for copies" if copies and cfg.copy_budget != cfg.budget else send


def _tls(args, reasons):
    """--tls-cert/--tls-key -> TlsSettings (the context is made here, once, before any fork), or
    None for plain HTTP. A file that cannot be used is one line, exit 2."""
    if not (args.tls_cert or args.tls_key):
        if args.tls_redirect is not None:
            raise StartupError("--tls-redirect needs --tls-cert and --tls-key", code=2)
        return None
    if not (args.tls_cert and args.tls_key):
        raise StartupError("--tls-cert and --tls-key go together", code=2)
    from zcopy.server.tlsaccept import TlsSettings
    from zcopy.tls import TlsConfigError, make_context, pem_stamp, ulp_available

    try:
        context = make_context(args.tls_cert, args.tls_key, ktls=not args.no_ktls)
        stamp = pem_stamp(args.tls_cert, args.tls_key)
    except TlsConfigError as exc:
        raise StartupError(str(exc), code=2) from None
    ulp = False
    if args.no_ktls:
        reasons["ktls"] = "--no-ktls: every byte is encrypted in user space"
    else:
        ok, why = ulp_available()
        ulp = ok
        reasons["ktls"] = (f"{why}: kTLS is tried per connection (getsockopt SOL_TLS checked)" if ok
                           else f"{why}: bodies are encrypted in user space")
    redirect = None
    if args.tls_redirect is not None:
        if args.tls_redirect == args.port and args.port != 0:
            raise StartupError("--tls-redirect must be another port than --port", code=2)
        from zcopy.stats.metrics import bind

        try:
            redirect = bind(args.bind, args.tls_redirect)
        except OSError as exc:
            raise StartupError(f"cannot listen on --tls-redirect {args.bind}:{args.tls_redirect}: "
                               f"{exc.strerror}") from None
    return TlsSettings(os.path.abspath(args.tls_cert), os.path.abspath(args.tls_key), context, stamp,
                       ktls=not args.no_ktls, redirect=redirect,
                       redirect_port=redirect.getsockname()[1] if redirect is not None else None, ulp=ulp)


def _accounts(path: str | None):
    """The users file, read once here (each worker gets the accounts with the config): a malformed
    one is one line naming the file and line, exit 2."""
    if path is None:
        return None
    from zcopy.accounts.users import UsersFileError, load

    try:
        return load(path)
    except UsersFileError as exc:
        raise StartupError(f"--users {exc}", code=2) from None
    except OSError as exc:
        raise StartupError(f"cannot read --users {path}: {exc.strerror}", code=2) from None


def _check_access_log(path: str) -> None:
    """Open the log once here, as each worker will: a path that cannot be
    written is one startup line, not every worker dying at its first breath."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644))
    except OSError as exc:
        raise StartupError(f"cannot open --access-log {path}: {exc.strerror}") from None


def _state_dir(args, root: str, targets: list[str]) -> str:
    """The prepared state folder (zcopy.server.state): made before any worker
    forks. A folder named by the flag that cannot serve is a bad flag (exit 2).

    The folder holds the share secret and the database: it must never be
    reachable through the server. Inside ROOT (or a --symlink-target) it is
    refused unless a dot segment hides it and neither --show-hidden nor
    --follow-symlinks could lead there (so `zcopy serve ~` with the default
    ~/.local/state/zcopy works); ROOT inside it is refused always."""
    from zcopy.server import state

    code = 2 if args.state_dir else 1
    hint = "" if args.state_dir else " (choose another folder with --state-dir)"
    path = os.path.realpath(args.state_dir or state.default_dir())
    for base in (root, *targets):
        if path == base or path.startswith(base.rstrip("/") + "/"):
            inside = path[len(base.rstrip("/")) + 1:].split("/")
            hidden = any(seg.startswith(".") for seg in inside)
            if not hidden or args.show_hidden or args.follow_symlinks:
                raise StartupError(f"the state folder {path} is inside the served folder {base}, where a client "
                                   f"could reach it; choose one outside with --state-dir", code=code)
        if base.startswith(path.rstrip("/") + "/"):
            raise StartupError(f"the served folder {base} is inside the state folder {path}; choose another "
                               f"with --state-dir", code=code)
    try:
        return state.prepare(path)
    except state.StateError as exc:
        hint = "" if "--state-dir" in str(exc) else hint
        raise StartupError(f"{exc}{hint}", code=code) from None


def _tokens(args) -> tuple[str | None, str | None]:
    """(write token, read token). Writes are never anonymous where reads need
    a token; a write token given to a read-only server is a mistake, said so
    (``$ZCOPY_TOKEN``, which the client reads too, is ignored there instead)."""
    writes = args.allow_write or bool(args.users)        # with a users file, its rules decide writes
    if not writes and (args.token is not None or args.token_file):
        flag = "--token" if args.token is not None else "--token-file"
        raise StartupError(f"{flag} guards writes, but this server is read-only: add --allow-write, "
                           "or use --read-token to guard reads", code=2)
    for flag, value in (("--token", args.token), ("--read-token", args.read_token)):
        if value == "":
            raise StartupError(f"{flag} is empty", code=2)
    token = _token(args.token, args.token_file, "--token-file", env="ZCOPY_TOKEN") if writes else None
    read_token = _token(args.read_token, args.read_token_file, "--read-token-file")
    if args.allow_write and not args.users and read_token and not token:
        raise StartupError("--allow-write with a read token needs a write token (--token, --token-file or "
                           "$ZCOPY_TOKEN): without one, anyone could write where only token holders may read",
                           code=2)
    return token, read_token


def _token(value: str | None, path: str | None, flag: str, env: str | None = None) -> str | None:
    """A token from its flag, its file flag (the two exclude each other) or the environment."""
    if path:
        from zcopy.server.auth import read_token_file

        try:
            return read_token_file(path)
        except OSError as exc:
            raise StartupError(f"cannot read {flag} {path}: {exc.strerror}", code=2) from None
        except ValueError:
            raise StartupError(f"{flag} {path} is empty", code=2) from None
    return value or (os.environ.get(env) if env else None) or None


def panel_rows(cfg) -> list[tuple[str, str, str]]:
    """(setting, value, why) for what is in effect, and only that: no upload
    engine on a read-only server, no pipe size unless an engine in use splices."""
    from zcopy.units import format_size

    host = f"[{cfg.bind}]" if ":" in cfg.bind else cfg.bind
    why = cfg.reasons.get
    scheme = "https" if cfg.tls is not None else "http"
    rows = [("address", f"{scheme}://{host}:{cfg.port}/", ""), ("root", cfg.root, ""),
            ("workers", str(cfg.workers), why("workers", "")),
            ("send engine", cfg.engine, why("download_engine", "")),
            ("step", _steps(cfg), why("chunk_size", ""))]
    if cfg.allow_write:
        rows.append(("upload engine", cfg.upload_engine, why("upload_engine", "")))
    if "splice" in (cfg.engine, cfg.upload_engine if cfg.allow_write else None):
        rows.append(("pipe size", format_size(cfg.pipe_size), why("pipe_size", "")))
    rows.append(("prefetch", "on" if cfg.prefetch else "off", why("prefetch", "")))
    rows.append(("small replies", f"up to {format_size(cfg.small_reply_max)} in one send" if cfg.small_reply_max
                 else "head + sendfile", why("small_reply_max", "")))
    rows.append(("unsent cap", f"{format_size(cfg.notsent_lowat)} (TCP_NOTSENT_LOWAT)" if cfg.notsent_lowat
                 else "the kernel's default", why("notsent_lowat", "")))
    if cfg.tls is not None:
        rows.append(("tls", "TLS 1.2/1.3, ALPN http/1.1", cfg.tls.cert))
        ktls = "off" if not cfg.tls.ktls else "tried per connection" if cfg.tls.ulp else "unavailable"
        rows.append(("ktls", ktls, why("ktls", "")))
        if cfg.tls.redirect_port is not None:
            rows.append(("redirect", f"http://{host}:{cfg.tls.redirect_port}/ -> https", ""))
    if cfg.accounts is not None:
        rows.append(("accounts", f"{len(cfg.accounts)} from {cfg.users}", "their rules decide reads and writes"))
    else:
        rows.append(("reads", "token required" if cfg.read_token else "open (no token)", ""))
    if cfg.accounts is not None:
        writes = "as the rules say" + (" (and the token)" if cfg.token else "")
    elif not cfg.allow_write:
        writes = "off (read-only)"
    elif cfg.token:
        writes = "on, token required"
    else:
        writes = "on, NO TOKEN: anyone who can connect may write"
    rows.append(("writes", writes, ""))
    rows.append(("state", cfg.state_dir or "", why("state_dir", "")))
    from zcopy import hotpath
    rows.append(("hot path", hotpath.summary(), "docs/hotpath.md"))
    return rows


def print_panel(cfg) -> None:
    from rich.console import Console
    from rich.panel import Panel
    from rich.table import Table

    t = Table.grid(padding=(0, 2))
    t.add_column(style="bold")
    t.add_column()
    t.add_column(style="dim")
    for row in panel_rows(cfg):
        t.add_row(*row)
    Console(stderr=True).print(Panel(t, title="zcopy serve", expand=False))


def run(args) -> int:
    from zcopy.server.supervisor import Supervisor, start

    try:
        cfg, listeners = start(build_config, args)
    except StartupError as exc:
        print(f"zcopy serve: error: {exc}", file=sys.stderr)
        return exc.code
    metrics = None
    if args.metrics is not None:
        from zcopy.stats.metrics import bind

        try:
            metrics = bind(*args.metrics)
        except OSError as exc:
            for s in listeners:
                s.close()
            print(f"zcopy serve: error: cannot serve --metrics on {args.metrics[0]}:{args.metrics[1]}: "
                  f"{exc.strerror}", file=sys.stderr)
            return 1
    # Built before the address is printed: from then on a signal is the supervisor's to handle.
    supervisor = Supervisor(cfg, listeners, metrics=metrics, reloader=reloader(args))
    print_panel(cfg)
    if metrics is not None:
        host, port = metrics.getsockname()[:2]
        print(f"zcopy serve: metrics on http://{host}:{port}/metrics (and /healthz, /readyz)", file=sys.stderr)
    return supervisor.run()


def reloader(args):
    """What SIGHUP re-reads: the token files and the users file given (zcopy.server.reload)."""
    from zcopy.server.reload import Reloader, token_file_hook, users_file_hook

    hooks = Reloader()
    if args.token_file:
        hooks.register("--token-file", token_file_hook(args.token_file, "token"))
    if args.read_token_file:
        hooks.register("--read-token-file", token_file_hook(args.read_token_file, "read_token"))
    if args.users:
        hooks.register("--users", users_file_hook(args.users))
    if args.tls_cert:
        from zcopy.server.reload import tls_hook

        hooks.register("--tls-cert/--tls-key", tls_hook())
    return hooks
