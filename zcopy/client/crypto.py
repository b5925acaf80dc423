"""age encryption for the client, streamed through pyrage.

Files are standard age v1 (age-encryption.org/v1): any age tool decrypts what
zcopy encrypts and the other way round. pyrage's ``encrypt_io`` /
``decrypt_io`` read and write 64 KiB STREAM chunks through Python file
objects, so memory stays flat whatever the file size. pyrage only streams
for key recipients, not passphrases; passphrase files go through
``zcopy.client.agepass``, which swaps the header around the same streaming
payload.

Recipients: ``age1...`` X25519 keys and ``ssh-ed25519`` / ``ssh-rsa`` public
keys, given on the command line or in a recipients file (one per line, ``#``
comments, like ``age -R``). Identities: age key files (``AGE-SECRET-KEY-1``
lines, as age-keygen writes them) and unencrypted OpenSSH private keys.
"""

from __future__ import annotations

import getpass
import os
import sys

import pyrage
from pyrage import ssh, x25519

from zcopy.client.errors import ClientError, UsageError

_CRYPTO_ERRORS = (pyrage.RecipientError, pyrage.IdentityError, pyrage.EncryptError, pyrage.DecryptError)


def parse_recipient(text: str):
    text = text.strip()
    try:
        if text.startswith("age1"):
            return x25519.Recipient.from_str(text)
        if text.startswith("ssh-"):
            return ssh.Recipient.from_str(text)
    except pyrage.RecipientError as exc:
        raise ClientError(f"bad recipient {text[:40]!r}: {exc}") from None
    raise ClientError(f"unsupported recipient {text[:40]!r} (use an age1... key or an ssh public key)")


def load_recipients(keys: list[str], files: list[str]) -> list:
    """Recipients from ``--encrypt-to`` values and ``-R`` files, in order."""
    out = [parse_recipient(k) for k in keys]
    for path in files:
        for line in _lines(path, "recipients file"):
            out.append(parse_recipient(line))
    if files and len(out) == len(keys):
        raise ClientError(f"no recipients in {', '.join(files)}")
    return out


def load_identities(paths: list[str]) -> list:
    """Identities from age key files or OpenSSH private key files."""
    out = []
    for path in paths:
        data = _read(path, "identity file")
        try:
            if b"-----BEGIN OPENSSH PRIVATE KEY-----" in data:
                out.append(ssh.Identity.from_buffer(data))
                continue
            keys = [line for line in data.decode("utf-8").splitlines() if line.startswith("AGE-SECRET-KEY-1")]
            if not keys:
                raise ClientError(f"no AGE-SECRET-KEY-1 line or OpenSSH key in {path}")
            out += [x25519.Identity.from_str(k.strip()) for k in keys]
        except (pyrage.IdentityError, UnicodeDecodeError) as exc:
            raise ClientError(f"bad identity file {path}: {exc}") from None
    return out


def read_passphrase(*, confirm: bool) -> str:
    """``ZCOPY_PASSPHRASE`` if set, else asked on the terminal (twice when
    encrypting, because a typo would make the file unreadable)."""
    value = os.environ.get("ZCOPY_PASSPHRASE")
    if value:
        return value
    if not sys.stdin.isatty():
        raise ClientError("no terminal to ask for the passphrase: set ZCOPY_PASSPHRASE")
    value = getpass.getpass("passphrase: ")
    if not value:
        raise ClientError("empty passphrase")
    if confirm and getpass.getpass("passphrase (again): ") != value:
        raise ClientError("the passphrases do not match")
    return value


def encrypt_stream(reader, writer, *, recipients: list | None = None, passphrase: str | None = None) -> None:
    """Read plaintext from ``reader``, write one age file to ``writer``."""
    try:
        if passphrase is not None:
            from zcopy.client import agepass

            agepass.encrypt_io(reader, writer, passphrase)
        else:
            pyrage.encrypt_io(reader, writer, recipients)
    except _CRYPTO_ERRORS as exc:
        raise ClientError(f"encryption failed: {exc}") from None


def decrypt_stream(reader, writer, *, identities: list | None = None, passphrase: str | None = None) -> None:
    """Read an age file from ``reader``, write the plaintext to ``writer``.
    A wrong key, a truncated or a tampered file is a ClientError."""
    try:
        if passphrase is not None:
            from zcopy.client import agepass

            agepass.decrypt_io(reader, writer, passphrase)
        else:
            pyrage.decrypt_io(reader, writer, identities)
    except _CRYPTO_ERRORS as exc:
        raise ClientError(f"decryption failed: {exc}") from None
    except OSError as exc:
        if exc.errno is not None:  # the writer's (or reader's) own error, e.g. ENOSPC
            raise
        # pyrage reports a payload that fails authentication as an errno-less OSError.
        raise ClientError(f"decryption failed: {exc} (truncated or tampered file?)") from None


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(1 << 20)
    except OSError as exc:
        raise ClientError(f"cannot read {what} {path}: {exc.strerror}") from None


def _lines(path: str, what: str) -> list[str]:
    text = _read(path, what).decode("utf-8", "replace")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def add_encrypt_args(p) -> None:
    p.add_argument("-r", "--encrypt-to", metavar="RECIPIENT", action="append", default=[],
                   help="encrypt to this age1... or ssh public key (repeatable)")
    p.add_argument("-R", "--recipients-file", metavar="FILE", action="append", default=[],
                   help="encrypt to every recipient in FILE (repeatable)")
    p.add_argument("--passphrase", action="store_true",
                   help="encrypt with a passphrase ($ZCOPY_PASSPHRASE or asked on the terminal)")


def encryption_from_args(args) -> dict | None:
    """kwargs for encrypt_stream, or None when no encryption was asked for."""
    if args.passphrase and (args.encrypt_to or args.recipients_file):
        raise UsageError("--passphrase cannot be combined with recipients")
    if args.passphrase:
        return {"passphrase": read_passphrase(confirm=True)}
    if args.encrypt_to or args.recipients_file:
        return {"recipients": load_recipients(args.encrypt_to, args.recipients_file)}
    return None
