"""Streaming passphrase (scrypt) encryption for age files.

Why this module exists: pyrage streams (``encrypt_io`` / ``decrypt_io``)
only for key recipients; its passphrase functions take and return whole
buffers, which would put a multi-GiB file in memory. But an age file is a
header that wraps a 16-byte *file key* for each recipient, then a payload
encrypted under that file key alone (age-encryption.org/v1). The payload
does not depend on how the key was wrapped, so the header can be swapped:

- encrypt: stream with pyrage to a one-time X25519 key pyrage makes, unwrap the
  file key from pyrage's header, and write an ``scrypt`` stanza wrapping the
  same file key under the passphrase instead (new header MAC);
- decrypt: unwrap the file key from the ``scrypt`` stanza, rewrap it for a
  one-time X25519 key, and hand pyrage that header followed by the
  untouched payload.

The bulk (ChaCha20-Poly1305 STREAM over the payload) stays in pyrage's Rust
code. The header work runs a handful of times per file on 16-byte keys, with
PyCA ``cryptography`` (OpenSSL) for X25519, ChaCha20-Poly1305 and HKDF, and
the stdlib for scrypt (hashlib, also OpenSSL) and the header MAC (hmac). The
one-time X25519 identity is made by pyrage; its secret scalar is read back
from the key string, the only encoding code here.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

import pyrage
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pyrage import x25519 as age_x25519

from zcopy.client.errors import ClientError

VERSION_LINE = b"age-encryption.org/v1"
SCRYPT_LABEL = b"age-encryption.org/v1/scrypt"
X25519_INFO = b"age-encryption.org/v1/X25519"
LOG_N = 18          # scrypt work factor age itself uses as its minimum (256 MiB, ~1 s)
MAX_LOG_N = 22      # refuse files that would make us spend minutes and GiBs
MAX_HEADER = 64 * 1024


# ---- the public entry points ----------------------------------------------------------------

def encrypt_io(reader, writer, passphrase: str, *, log_n: int = LOG_N) -> None:
    """Encrypt ``reader`` to ``writer`` as an age file with one scrypt stanza."""
    identity = age_x25519.Identity.generate()
    secret = _secret_key(identity)
    swap = _HeaderSwap(writer, lambda header: _rewrap_to_scrypt(header, secret, passphrase, log_n))
    pyrage.encrypt_io(reader, swap, [identity.to_public()])
    if not swap.swapped:
        raise ClientError("pyrage wrote no age header")


def decrypt_io(reader, writer, passphrase: str) -> None:
    """Decrypt a passphrase-encrypted age file from ``reader`` to ``writer``."""
    header, rest = _read_header(reader)
    stanzas, mac = parse_header(header)
    if len(stanzas) != 1 or stanzas[0][0][0] != b"scrypt":
        raise ClientError("this age file is not passphrase-encrypted (use --identity)")
    args, body = stanzas[0]
    if len(args) != 3 or not args[2].isdigit():
        raise ClientError("malformed scrypt stanza")
    salt, log_n = _b64decode(args[1]), int(args[2])
    if len(salt) != 16 or not 1 <= log_n <= MAX_LOG_N:
        raise ClientError(f"scrypt stanza out of bounds (work factor {log_n}, max {MAX_LOG_N})")
    file_key = _aead_open(_scrypt(passphrase, salt, log_n), body)
    if file_key is None or len(file_key) != 16:
        raise ClientError("wrong passphrase")
    if not hmac.compare_digest(mac, _header_mac(file_key, header[:header.rindex(b"\n---") + 4])):
        raise ClientError("the age header is corrupted (bad MAC)")
    identity = age_x25519.Identity.generate()
    new_header = _x25519_header(file_key, _secret_key(identity).public_key())
    pyrage.decrypt_io(_Prefixed(new_header + rest, reader), writer, [identity])


# ---- header handling -------------------------------------------------------------------------

def parse_header(header: bytes) -> tuple[list[tuple[list[bytes], bytes]], bytes]:
    """``([(stanza args, stanza body)], mac)`` from a binary age header."""
    lines = header.split(b"\n")
    if lines[0] != VERSION_LINE:
        raise ClientError("not an age v1 file")
    stanzas, i = [], 1
    try:
        while not lines[i].startswith(b"---"):
            if not lines[i].startswith(b"-> "):
                raise ClientError("malformed age header")
            args, body, i = lines[i][3:].split(b" "), [], i + 1
            while True:
                body.append(lines[i])
                i += 1
                if len(body[-1]) < 64:
                    break
            stanzas.append((args, _b64decode(b"".join(body))))
        mac = _b64decode(lines[i][4:])
    except (IndexError, ValueError):
        raise ClientError("malformed age header") from None
    return stanzas, mac


def _rewrap_to_scrypt(header: bytes, secret: X25519PrivateKey, passphrase: str, log_n: int) -> bytes:
    stanzas, _ = parse_header(header)
    for args, body in stanzas:
        if args[0] == b"X25519" and len(args) == 2:
            file_key = _x25519_unwrap(secret, _b64decode(args[1]), body)
            if file_key is not None:
                break
    else:
        raise ClientError("could not find the file key in pyrage's header")
    salt = os.urandom(16)
    body = _aead_seal(_scrypt(passphrase, salt, log_n), file_key)
    return _finish_header([b"scrypt " + _b64encode(salt) + b" %d" % log_n], [body], file_key)


def _x25519_header(file_key: bytes, recipient: X25519PublicKey) -> bytes:
    """An age header wrapping ``file_key`` for ``recipient`` (age's X25519 recipient type)."""
    ephemeral = X25519PrivateKey.generate()
    share = ephemeral.public_key().public_bytes_raw()
    public = recipient.public_bytes_raw()
    wrap_key = _hkdf(ephemeral.exchange(recipient), share + public, X25519_INFO)
    return _finish_header([b"X25519 " + _b64encode(share)], [_aead_seal(wrap_key, file_key)], file_key)


def _x25519_unwrap(secret: X25519PrivateKey, share: bytes, body: bytes) -> bytes | None:
    """The file key of an X25519 stanza, or None when it is not for ``secret``."""
    try:
        shared = secret.exchange(X25519PublicKey.from_public_bytes(share))
    except ValueError:  # not 32 bytes, or a low-order point (all-zero shared secret)
        return None
    public = secret.public_key().public_bytes_raw()
    return _aead_open(_hkdf(shared, share + public, X25519_INFO), body)


def _finish_header(stanza_args: list[bytes], bodies: list[bytes], file_key: bytes) -> bytes:
    out = [VERSION_LINE]
    for args, body in zip(stanza_args, bodies):
        text = _b64encode(body)
        out.append(b"-> " + args)
        out += [text[i:i + 64] for i in range(0, len(text), 64)]
        if len(text) % 64 == 0:
            out.append(b"")  # the body's last line must be shorter than 64 columns
    head = b"\n".join(out) + b"\n---"
    return head + b" " + _b64encode(_header_mac(file_key, head)) + b"\n"


def _header_mac(file_key: bytes, header_through_dashes: bytes) -> bytes:
    return hmac.digest(_hkdf(file_key, b"", b"header"), header_through_dashes, "sha256")


def _read_header(reader) -> tuple[bytes, bytes]:
    """(the header through its MAC line, bytes read past it)."""
    buf = b""
    while True:
        end = buf.find(b"\n---")
        if end >= 0:
            nl = buf.find(b"\n", end + 4)
            if nl >= 0:
                return buf[:nl + 1], buf[nl + 1:]
        if len(buf) > MAX_HEADER:
            raise ClientError("age header too large (or not an age file)")
        chunk = reader.read(4096)
        if not chunk:
            raise ClientError("the file ended inside the age header")
        buf += chunk


class _HeaderSwap:
    """Writer that holds bytes back until the header is complete, writes
    ``transform(header)`` instead, then passes everything through."""

    def __init__(self, writer, transform) -> None:
        self._writer = writer
        self._transform = transform
        self._held = b""
        self.swapped = False

    def write(self, data) -> int:
        if self.swapped:
            self._writer.write(data)
            return len(data)
        self._held += bytes(data)
        end = self._held.find(b"\n---")
        nl = self._held.find(b"\n", end + 4) if end >= 0 else -1
        if nl >= 0:
            header, rest = self._held[:nl + 1], self._held[nl + 1:]
            self._writer.write(self._transform(header) + rest)
            self._held, self.swapped = b"", True
        return len(data)

    def flush(self) -> None:
        if hasattr(self._writer, "flush"):
            self._writer.flush()


class _Prefixed:
    """Reader giving ``prefix`` first, then the rest of ``reader``."""

    def __init__(self, prefix: bytes, reader) -> None:
        self._prefix = prefix
        self._reader = reader

    def read(self, n: int = -1) -> bytes:
        if self._prefix:
            take = len(self._prefix) if n is None or n < 0 else n
            out, self._prefix = self._prefix[:take], self._prefix[take:]
            return out
        return self._reader.read(n)


def _scrypt(passphrase: str, salt: bytes, log_n: int) -> bytes:
    n = 1 << log_n
    return hashlib.scrypt(passphrase.encode("utf-8"), salt=SCRYPT_LABEL + salt, n=n, r=8, p=1,
                          maxmem=129 * 8 * n + (1 << 20), dklen=32)


def _b64encode(data: bytes) -> bytes:
    return base64.b64encode(data).rstrip(b"=")


def _b64decode(text: bytes) -> bytes:
    if b"=" in text:
        raise ValueError("padded base64 in an age header")
    return base64.b64decode(text + b"=" * (-len(text) % 4), validate=True)


# ---- primitives (PyCA cryptography) ---------------------------------------------------------

def _hkdf(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    """HKDF-SHA256 with a 32-byte output (RFC 5869); age's empty salt is HKDF's default."""
    return HKDF(algorithm=SHA256(), length=32, salt=salt or None, info=info).derive(ikm)


_NONCE = bytes(12)  # age wraps each file key under a fresh key, so a zero nonce is safe


def _aead_seal(key: bytes, plaintext: bytes) -> bytes:
    """ChaCha20-Poly1305 (RFC 8439) with age's zero nonce: ciphertext || tag."""
    return ChaCha20Poly1305(key).encrypt(_NONCE, plaintext, None)


def _aead_open(key: bytes, sealed: bytes) -> bytes | None:
    """The plaintext, or None when the tag does not match."""
    try:
        return ChaCha20Poly1305(key).decrypt(_NONCE, sealed, None)
    except InvalidTag:
        return None


_BECH32 = {c: i for i, c in enumerate("qpzry9x8gf2tvdw0s3jn54khce6mua7l")}


def _secret_key(identity) -> X25519PrivateKey:
    """The scalar inside a pyrage identity (``AGE-SECRET-KEY-1`` + bech32, BIP 173).

    pyrage exposes no raw bytes, only the key string. The string is pyrage's
    own output in this process, so its checksum (the last six characters) is
    dropped, not checked; a wrong scalar could only make the swap fail.
    """
    text = str(identity).lower()
    acc, bits, out = 0, 0, bytearray()
    for char in text[text.rindex("1") + 1:-6]:
        acc, bits = (acc << 5) | _BECH32[char], bits + 5
        if bits >= 8:
            bits -= 8
            out.append((acc >> bits) & 0xFF)
    if len(out) != 32:
        raise ClientError("unexpected age identity format from pyrage")
    return X25519PrivateKey.from_private_bytes(bytes(out))
