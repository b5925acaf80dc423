"""Download a file: progress bar, resume of an interrupted download (Range +
If-Range, so a changed file is fetched again whole), length check, and
FILE.part renamed to FILE only when complete; an existing FILE is replaced
only with --force. The default FILE is the URL's last segment, and only if it
is a plain file name (no "/", "..", control characters once decoded). With --decrypt the age file is
decrypted while it streams.

examples:
  zcopy get http://127.0.0.1:8000/iso/big.iso
  zcopy get http://host:8000/a.bin -o /tmp/a.bin
  zcopy get http://host:8000/secret.tar.age --decrypt -i key.txt -o secret.tar
"""

from __future__ import annotations

HELP = "download a file (resumable, optionally decrypting)"


def configure(p) -> None:
    from zcopy.client.options import add_auth_args, add_quiet_arg

    p.add_argument("url", help="http(s)://HOST:PORT/PATH")
    p.add_argument("-o", "--output", metavar="FILE", help="where to save (default: the URL's file name; "
                                                          "an existing folder: into it, under that name)")
    p.add_argument("-f", "--force", action="store_true",
                   help="replace an existing FILE (a FILE.part is always resumed)")
    p.add_argument("--decrypt", action="store_true", help="decrypt an age file while downloading")
    p.add_argument("-i", "--identity", metavar="KEYFILE", action="append", default=[],
                   help="age or OpenSSH private key file for --decrypt (repeatable)")
    p.add_argument("--passphrase", action="store_true",
                   help="decrypt with a passphrase ($ZCOPY_PASSPHRASE or asked on the terminal)")
    add_auth_args(p)
    add_quiet_arg(p)


def run(args) -> int:
    from zcopy.client.options import run_reporting

    from zcopy.client import tls

    tls.configure(args, "get")      # --cacert / --insecure, for https:// URLs
    return run_reporting("get", lambda: _get(args))


def _get(args) -> int:
    import os
    import sys

    from zcopy.client.crypto import load_identities, read_passphrase
    from zcopy.client.download import download
    from zcopy.client.errors import ClientError, UsageError
    from zcopy.client.names import plain_file_name, shown
    from zcopy.client.options import resolve_token
    from zcopy.client.url import parse_url
    from zcopy.units import format_size

    remote = parse_url(args.url)
    decrypt = None
    if (args.identity or args.passphrase) and not args.decrypt:
        raise UsageError("--identity and --passphrase need --decrypt")
    if args.decrypt:
        if args.passphrase == bool(args.identity):
            raise UsageError("--decrypt needs either --identity KEYFILE or --passphrase")
        decrypt = ({"passphrase": read_passphrase(confirm=False)} if args.passphrase
                   else {"identities": load_identities(args.identity)})
    out = args.output
    if not out or os.path.isdir(out):          # -o FOLDER: into it, under the remote name
        name = remote.file_name
        if args.decrypt and name.endswith(".age"):
            name = name[:-4]
        if not name or remote.path.endswith("/"):
            raise ClientError(f"{remote.shown} names a folder; use `zcopy ls`, or give -o FILE")
        out = os.path.join(out or "", plain_file_name(name))
    done = download(remote, out, token=resolve_token(args), decrypt=decrypt, quiet=args.quiet,
                    force=args.force)
    resumed = f", resumed at {format_size(done.resumed_at)}" if done.resumed_at else ""
    if not args.quiet:
        sys.stderr.write(f"saved {shown(done.path)} ({format_size(done.size)}{resumed})\n")
    return 0
