"""Make a share link to a remote file: anyone with the link downloads that file, without
credentials, until it expires; or, with --drop, a drop box link to a folder: anyone with it uploads
new files there (docs/accounts.md, "Share links").

examples:
  zcopy share http://host:8000/iso/big.iso --expires 7d --user alice
  printf '%s\\n' "$PW" | zcopy share http://host:8000/report.pdf --expires 2h --user alice --password-stdin
  zcopy share http://host:8000/notes.txt --token-file ~/.zcopy-token --json
  zcopy share http://host:8000/inbox/ --drop --expires 2d --user bob   # then: curl -T f 'LINK'
  zcopy share --revoke-all --state-dir /var/lib/zcopy    # void every link (and session) at once
"""

from __future__ import annotations

HELP = "make an expiring link to a remote file (or revoke them all)"
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def duration(text: str) -> int:
    """argparse type: ``90``, ``90s``, ``30m``, ``12h``, ``7d``, ``2w`` -> seconds (1 s to 365 days)."""
    import argparse

    from zcopy.server.share import MAX_TTL

    unit = text[-1:].lower()
    number = text[:-1] if unit in _UNITS else text
    try:
        seconds = int(number) * _UNITS.get(unit, 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration (like 90s, 30m, 12h, 7d): {text!r}") from None
    if not 1 <= seconds <= MAX_TTL:
        raise argparse.ArgumentTypeError(f"must be from 1 second to 365 days: {text!r}")
    return seconds


def configure(p) -> None:
    from zcopy.client.options import add_auth_args

    p.add_argument("url", nargs="?", help="http://HOST:PORT/PATH of the file to share")
    p.add_argument("--expires", type=duration, default=None, metavar="DURATION",
                   help="how long the link works: 90s, 30m, 12h, 7d, 2w (default 1d, at most 365d)")
    p.add_argument("--drop", action="store_true",
                   help="URL is a folder: make a drop box link (anyone with it may upload new files there, "
                        "and nothing else)")
    p.add_argument("--json", action="store_true", help="print the server's answer as JSON (url, path, expires)")
    p.add_argument("--revoke-all", action="store_true",
                   help="instead: give the server's state folder a new secret, voiding every share link and "
                        "browser session it ever signed (then SIGHUP or restart the server)")
    p.add_argument("--state-dir", metavar="DIR", help="with --revoke-all: the server's --state-dir "
                   "(default: the XDG state folder, as zcopy serve)")
    add_auth_args(p)


def run(args) -> int:
    from zcopy.client.options import run_reporting

    return run_reporting("share", lambda: _share(args))


def _share(args) -> int:
    import sys

    from zcopy.client.errors import ClientError, UsageError

    if args.revoke_all:
        if args.url:
            raise UsageError("--revoke-all takes no URL")
        from zcopy.server import state

        folder = args.state_dir or state.default_dir()
        try:
            state.rotate_secret(folder)
        except state.StateError as exc:
            raise ClientError(str(exc)) from None
        sys.stderr.write(f"new secret in {folder}: every share link and session signed before is void once "
                         "the server re-reads it (SIGHUP or restart)\n")
        return 0
    if not args.url:
        raise UsageError("say which file: zcopy share URL")
    if args.state_dir:
        raise UsageError("--state-dir goes with --revoke-all")
    import json
    import time
    from urllib.parse import unquote, urlencode

    from zcopy.client.connection import Connection, check
    from zcopy.client.options import auth_headers, resolve_token
    from zcopy.client.url import Remote, parse_url
    from zcopy.server.share import DEFAULT_TTL, SHARE_ROUTE

    remote = parse_url(args.url)
    creds = resolve_token(args)
    path = unquote(remote.path, errors="surrogateescape")
    fields = {"path": path, "expires": args.expires or DEFAULT_TTL}
    if args.drop:
        fields["rights"] = "w"
    query = urlencode(fields, errors="surrogateescape")
    ask = Remote(remote.host, remote.port, SHARE_ROUTE, query)
    with Connection(ask, 60.0) as conn:
        conn.send_head("POST", ask.target, auth_headers(creds) | {"Content-Length": "0"})
        resp = conn.read_head()
        body = conn.body(resp)
        check(resp, remote.shown, body)
        if resp.status != 201:
            raise ClientError(f"unexpected {resp.status} {resp.reason}: {remote.shown}")
        try:
            doc = json.loads(body.drain(1 << 16))
            link, expires = doc["url"], int(doc["expires"])
        except (ValueError, KeyError, TypeError):
            raise ClientError("the server's answer is not a share link") from None
    if not isinstance(link, str) or not link.startswith("/") or not link.isprintable():
        raise ClientError("the server's answer is not a share link")
    url = f"http://{remote.netloc}{link}"
    if args.json:
        sys.stdout.write(json.dumps({"url": url, "path": doc.get("path"), "expires": expires,
                                     "rights": doc.get("rights")}) + "\n")
    else:
        sys.stdout.write(url + "\n")
        sys.stderr.write(f"works until {time.strftime('%Y-%m-%d %H:%M:%S %Z', time.localtime(expires))}\n")
    return 0
