"""Flags the client commands share, and where their values come from.

The token is looked up in the order a user expects to override things:
``--token`` on the command line, then ``--token-file``, then the
``ZCOPY_TOKEN`` environment variable (the same names ``zcopy serve`` reads,
so one exported variable serves both ends in a script).
"""

from __future__ import annotations

import os

from zcopy.client.errors import ClientError, UsageError


def add_auth_args(p) -> None:
    """The flags of every command that talks to a server: the token, and for https:// URLs
    --cacert/--insecure (``zcopy.client.tls``)."""
    from zcopy.client.tls import add_tls_args

    token = p.add_mutually_exclusive_group()
    token.add_argument("--token", help="bearer token for the server (default: $ZCOPY_TOKEN)")
    token.add_argument("--token-file", metavar="FILE", help="read the token from FILE (first line)")
    add_tls_args(p)


def add_quiet_arg(p) -> None:
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def resolve_token(args) -> str | None:
    if args.token:
        return args.token
    if args.token_file:
        from zcopy.tokens import read_token_file

        try:
            return read_token_file(args.token_file)
        except OSError as exc:
            raise ClientError(f"cannot read --token-file {args.token_file}: {exc.strerror}") from None
        except ValueError:
            raise ClientError(f"--token-file {args.token_file} is empty") from None
    return os.environ.get("ZCOPY_TOKEN") or None


def auth_headers(token: str | None) -> dict[str, str]:
    from zcopy.tokens import bearer

    return {"Authorization": bearer(token)} if token else {}


def run_reporting(command: str, action) -> int:
    """Run ``action()``; a ClientError becomes one line on stderr and exit 1
    (a UsageError: exit 2, worded as the parser words its errors). Control
    characters in a message are escaped: part of it may be a server's text."""
    import sys

    from zcopy.client.names import shown

    try:
        return int(action() or 0)
    except UsageError as exc:
        sys.stderr.write(f"zcopy {command}: error: {exc} (see 'zcopy {command} --help')\n")
        return 2
    except ClientError as exc:      # may quote the server (reason, detail, Location): shown as text
        sys.stderr.write(f"zcopy {command}: {shown(str(exc))}\n")
        return 1
    except OSError as exc:      # a local file: cannot create FILE.part, disk full, FILE is a folder...
        where = f": {shown(exc.filename)}" if exc.filename else ""
        sys.stderr.write(f"zcopy {command}: {exc.strerror or exc}{where}\n")
        return 1
