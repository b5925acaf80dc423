"""Upload a file with PUT: progress bar, sendfile(2) from disk (the file is
never read into memory). With --encrypt-to/-R/--passphrase the file is
encrypted to the age format while it streams, and only ciphertext reaches
the server. A URL ending in "/" gets the file's name appended.

examples:
  zcopy put big.iso http://127.0.0.1:8000/iso/ --token "$TOKEN"
  zcopy put notes.txt http://host:8000/notes.txt.age -r age1...
  ZCOPY_PASSPHRASE=... zcopy put a.tar http://host:8000/a.tar.age --passphrase
"""

from __future__ import annotations

HELP = "upload a file (optionally encrypted to age recipients)"


def configure(p) -> None:
    from zcopy.client.crypto import add_encrypt_args
    from zcopy.client.options import add_auth_args, add_quiet_arg

    p.add_argument("file", help="local file to upload")
    p.add_argument("url", help="http://HOST:PORT/PATH (ending in / to keep the file's name)")
    add_encrypt_args(p)
    add_auth_args(p)
    add_quiet_arg(p)
    p.add_argument("--retries", type=_retries, default=0, metavar="N",
                   help="after a cut, try again up to N times with backoff (resumable servers continue "
                        "from their offset; default 0: the same command later continues)")
    p.add_argument("--no-resume", action="store_true",
                   help="plain PUT even when the server takes resumable (tus) uploads")


def _retries(text: str) -> int:
    import argparse

    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"not a number of retries: {text!r}")
    return int(text)


def run(args) -> int:
    from zcopy.client.options import run_reporting

    return run_reporting("put", lambda: _put(args))


def _put(args) -> int:
    import sys

    from zcopy.client.crypto import encryption_from_args
    from zcopy.client.options import resolve_token
    from zcopy.client.upload import upload
    from zcopy.client.url import parse_url
    from zcopy.units import format_size

    remote = parse_url(args.url)
    encrypt = encryption_from_args(args)
    done = upload(args.file, remote, token=resolve_token(args), encrypt=encrypt, quiet=args.quiet,
                  retries=args.retries, resume=not args.no_resume)
    if not args.quiet:
        verb = "created" if done.status == 201 else "replaced"
        sealed = ", age-encrypted" if encrypt else ""
        resumed = f", resumed: sent {format_size(done.sent)}" if done.sent is not None and done.sent < done.size else ""
        sys.stderr.write(f"{verb} {done.remote.shown} ({format_size(done.size)}{sealed}{resumed})\n")
    return 0
