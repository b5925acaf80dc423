"""Encrypt a folder's files in place to the age format, for publishing:
each file NAME becomes NAME.age atomically (temp file, fsync, link, then the
original is removed). Files already ending in .age are skipped, so running
it again only seals what is new.

examples:
  zcopy seal ./public --encrypt-to age1...
  zcopy seal ./public -R team.txt
"""

from __future__ import annotations

HELP = "encrypt a folder's files in place (NAME -> NAME.age)"


def configure(p) -> None:
    from zcopy.client.crypto import add_encrypt_args
    from zcopy.client.options import add_quiet_arg

    p.add_argument("folder", help="folder whose files to seal (recursively)")
    add_encrypt_args(p)
    add_quiet_arg(p)


def run(args) -> int:
    from zcopy.client.options import run_reporting

    return run_reporting("seal", lambda: _seal(args))


def _seal(args) -> int:
    import sys

    from zcopy.client.crypto import encryption_from_args
    from zcopy.client.errors import UsageError
    from zcopy.client.names import shown
    from zcopy.client.seal import seal_tree
    from zcopy.units import format_size

    encrypt = encryption_from_args(args)
    if encrypt is None:
        raise UsageError("give --encrypt-to RECIPIENT, -R FILE or --passphrase")
    say = (lambda path: None) if args.quiet else (lambda path: sys.stderr.write(f"sealing {shown(path)}\n"))
    report = seal_tree(args.folder, encrypt, on_file=say)
    for path, why in report.failed:
        sys.stderr.write(f"zcopy seal: {shown(path)}: {why}\n")
    skipped = {}
    for _, why in report.skipped:
        skipped[why] = skipped.get(why, 0) + 1
    detail = ", ".join(f"{n} {why}" for why, n in sorted(skipped.items()))
    sys.stderr.write(f"sealed {len(report.sealed)} file(s) ({format_size(report.bytes_in)}), "
                     f"skipped {len(report.skipped)}{f' ({detail})' if detail else ''}, "
                     f"failed {len(report.failed)}\n")
    return 1 if report.failed else 0
