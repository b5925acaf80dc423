"""Flags the client commands share, and where their values come from.

The token is looked up in the order a user expects to override things:
``--token`` on the command line, then ``--token-file``, then the
``ZCOPY_TOKEN`` environment variable (the same names ``zcopy serve`` reads,
so one exported variable serves both ends in a script).

``--user NAME`` signs in as an account of the server's users file instead (HTTP Basic). The
password never comes from the command line (other users see it in ``ps``): it is the first line of
standard input with ``--password-stdin``, else ``$ZCOPY_PASSWORD``, else asked on the terminal
without echo. Like a token, it is sent only to the origin named on the command line, never to
another one a redirect points at (``Remote.same_origin``).
"""

from __future__ import annotations

import os

from zcopy.client.errors import ClientError, UsageError


PASSWORD_ENV = "ZCOPY_PASSWORD"


class Credentials:
    """An account's name and password (``--user``); what ``auth_headers`` turns into Basic. Its repr
    never shows the password."""

    __slots__ = ("user", "password")

    def __init__(self, user: str, password: str) -> None:
        self.user = user
        self.password = password

    def __repr__(self) -> str:
        return f"Credentials({self.user!r}, ***)"

    def header(self) -> str:
        import base64

        return "Basic " + base64.b64encode(f"{self.user}:{self.password}".encode("utf-8")).decode("ascii")


def add_auth_args(p) -> None:
    token = p.add_mutually_exclusive_group()
    token.add_argument("--token", help="bearer token for the server (default: $ZCOPY_TOKEN)")
    token.add_argument("--token-file", metavar="FILE", help="read the token from FILE (first line)")
    token.add_argument("--user", metavar="NAME",
                       help=f"sign in as this account (HTTP Basic); the password is asked without echo, "
                            f"or read from ${PASSWORD_ENV} or --password-stdin")
    p.add_argument("--password-stdin", action="store_true",
                   help="with --user: read the password from the first line of standard input")


def add_quiet_arg(p) -> None:
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def resolve_token(args) -> "str | Credentials | None":
    """The token, or the account's Credentials with ``--user``. Raises UsageError/ClientError."""
    if getattr(args, "user", None):
        return Credentials(_user_name(args.user), _password(args))
    if getattr(args, "password_stdin", False):
        raise UsageError("--password-stdin goes with --user")
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


def _user_name(name: str) -> str:
    if ":" in name or not name.isprintable() or name != name.strip():
        raise UsageError(f"--user {name!r}: a user name has no ':', spaces at its ends or control characters")
    return name


def _password(args) -> str:
    import sys

    if args.password_stdin:
        line = sys.stdin.readline()
        if not line:
            raise UsageError("--password-stdin: standard input is empty")
        return line.rstrip("\r\n")
    env = os.environ.get(PASSWORD_ENV)
    if env:
        return env
    if not sys.stdin.isatty():
        raise UsageError(f"--user {args.user}: no terminal to ask the password on; use --password-stdin "
                         f"or ${PASSWORD_ENV}")
    import getpass

    try:
        return getpass.getpass(f"password for {args.user}: ")
    except (EOFError, KeyboardInterrupt):
        raise ClientError("no password given") from None


def auth_headers(token) -> dict[str, str]:
    """The Authorization header for a token or Credentials (none for None)."""
    if isinstance(token, Credentials):
        return {"Authorization": token.header()}
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
