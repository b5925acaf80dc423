"""Rename or move a remote file or folder on the same server.

NEWPATH is an absolute path (/a/b), a path relative to the source's folder
(b.txt), or a URL on the same server; a trailing "/" moves into that folder.

examples:
  zcopy mv http://127.0.0.1:8000/a.txt b.txt
  zcopy mv http://host:8000/a.txt /archive/ --no-clobber
"""

from __future__ import annotations

HELP = "rename or move a remote file or folder"


def configure(p) -> None:
    from zcopy.client.options import add_auth_args

    p.add_argument("url", help="http(s)://HOST:PORT/PATH")
    p.add_argument("newpath", help="new path, relative path or same-server URL")
    p.add_argument("-n", "--no-clobber", action="store_true",
                   help="fail (412) instead of replacing an existing target")
    add_auth_args(p)


def run(args) -> int:
    from zcopy.client.options import run_reporting

    from zcopy.client import tls

    tls.configure(args, "mv")      # --cacert / --insecure, for https:// URLs
    return run_reporting("mv", lambda: _mv(args))


def _mv(args) -> int:
    import sys

    from zcopy.client.options import resolve_token
    from zcopy.client.remote import move
    from zcopy.client.url import parse_url

    remote = parse_url(args.url)
    status, dest = move(remote, args.newpath, token=resolve_token(args), overwrite=not args.no_clobber)
    verb = "replaced" if status == 204 else "moved"
    sys.stderr.write(f"{verb}: {remote.shown} -> {dest}\n")
    return 0
