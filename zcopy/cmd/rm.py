"""Delete a remote file, or a folder (empty, unless --recursive).

examples:
  zcopy rm http://127.0.0.1:8000/old.iso --token "$TOKEN"
  zcopy rm -r http://host:8000/build/
"""

from __future__ import annotations

HELP = "delete a remote file or folder"


def configure(p) -> None:
    from zcopy.client.options import add_auth_args

    p.add_argument("url", help="http(s)://HOST:PORT/PATH")
    p.add_argument("-r", "--recursive", action="store_true", help="delete a folder and all it holds")
    add_auth_args(p)


def run(args) -> int:
    from zcopy.client.options import run_reporting

    from zcopy.client import tls

    tls.configure(args, "rm")      # --cacert / --insecure, for https:// URLs
    return run_reporting("rm", lambda: _rm(args))


def _rm(args) -> int:
    import sys

    from zcopy.client.options import resolve_token
    from zcopy.client.remote import remove
    from zcopy.client.url import parse_url

    remote = parse_url(args.url)
    remove(remote, token=resolve_token(args), recursive=args.recursive)
    sys.stderr.write(f"removed {remote.shown}\n")
    return 0
