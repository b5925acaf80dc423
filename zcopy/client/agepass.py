"""Streaming passphrase (scrypt) encryption for age files.

Why this module exists: pyrage streams (``encrypt_io`` / ``decrypt_io``)
only for key recipients; its passphrase functions take and return whole
buffers, which would put a multi-GiB file in memory. But an age file is a
header that wraps a 16-byte *file key* for each recipient, then a payload
encrypted under that file key alone (age-encryption.org/v1). The payload
does not depend on how the key was wrapped, so the header can be swapped:

- encrypt: stream with pyrage to a one-time X25519 key made here, unwrap the
  file key from pyrage's header, and write an ``scrypt`` stanza wrapping the
  same file key under the passphrase instead (new header MAC);
- decrypt: unwrap the file key from the ``scrypt`` stanza, rewrap it for a
  one-time X25519 key, and hand pyrage that header followed by the
  untouched payload.

The bulk (ChaCha20-Poly1305 STREAM over the payload) stays in pyrage's Rust
code; the small primitives here run a handful of times per file on 16-byte
keys: X25519 (RFC 7748), ChaCha20-Poly1305 (RFC 8439), HKDF-SHA256 (RFC 5869)
and bech32 encoding (BIP 173, for age's key strings). They are not constant
time; the only secret they touch besides the file key is the one-time X25519
key, which never leaves this process. scrypt comes from hashlib (OpenSSL).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import struct

import pyrage
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
    secret = os.urandom(32)
    public = x25519(secret, _BASE_POINT)
    recipient = age_x25519.Recipient.from_str(bech32_encode("age", public))
    swap = _HeaderSwap(writer, lambda header: _rewrap_to_scrypt(header, secret, public, passphrase, log_n))
    pyrage.encrypt_io(reader, swap, [recipient])
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
    file_key = aead_open(_scrypt(passphrase, salt, log_n), body)
    if file_key is None or len(file_key) != 16:
        raise ClientError("wrong passphrase")
    if not hmac.compare_digest(mac, _header_mac(file_key, header[:header.rindex(b"\n---") + 4])):
        raise ClientError("the age header is corrupted (bad MAC)")
    secret = os.urandom(32)
    new_header = _x25519_header(file_key, x25519(secret, _BASE_POINT))
    identity = age_x25519.Identity.from_str(bech32_encode("age-secret-key-", secret).upper())
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


def _rewrap_to_scrypt(header: bytes, secret: bytes, public: bytes, passphrase: str, log_n: int) -> bytes:
    stanzas, _ = parse_header(header)
    for args, body in stanzas:
        if args[0] == b"X25519":
            share = _b64decode(args[1])
            wrap_key = hkdf(x25519(secret, share), share + public, X25519_INFO)
            file_key = aead_open(wrap_key, body)
            if file_key is not None:
                break
    else:
        raise ClientError("could not find the file key in pyrage's header")
    salt = os.urandom(16)
    body = aead_seal(_scrypt(passphrase, salt, log_n), file_key)
    return _finish_header([b"scrypt " + _b64encode(salt) + b" %d" % log_n], [body], file_key)


def _x25519_header(file_key: bytes, public: bytes) -> bytes:
    ephemeral = os.urandom(32)
    share = x25519(ephemeral, _BASE_POINT)
    wrap_key = hkdf(x25519(ephemeral, public), share + public, X25519_INFO)
    return _finish_header([b"X25519 " + _b64encode(share)], [aead_seal(wrap_key, file_key)], file_key)


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
    return hmac.digest(hkdf(file_key, b"", b"header"), header_through_dashes, "sha256")


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


# ---- primitives ------------------------------------------------------------------------------

def hkdf(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    """HKDF-SHA256 with a 32-byte output (RFC 5869)."""
    prk = hmac.digest(salt or bytes(32), ikm, "sha256")
    return hmac.digest(prk, info + b"\x01", "sha256")


_P = 2**255 - 19
_BASE_POINT = (9).to_bytes(32, "little")


def x25519(scalar: bytes, u: bytes) -> bytes:
    """X25519 (RFC 7748 section 5), Montgomery ladder."""
    k = bytearray(scalar)
    k[0] &= 248
    k[31] = (k[31] & 127) | 64
    n = int.from_bytes(k, "little")
    x1 = int.from_bytes(u, "little") & ((1 << 255) - 1)
    x2, z2, x3, z3, swap = 1, 0, x1, 1, 0
    for t in range(254, -1, -1):
        bit = (n >> t) & 1
        if swap ^ bit:
            x2, x3, z2, z3 = x3, x2, z3, z2
        swap = bit
        a, b, c, d = x2 + z2, x2 - z2, x3 + z3, x3 - z3
        aa, bb, da, cb = a * a % _P, b * b % _P, d * a % _P, c * b % _P
        e = aa - bb
        x3, z3 = (da + cb) ** 2 % _P, x1 * (da - cb) ** 2 % _P
        x2, z2 = aa * bb % _P, e * (aa + 121665 * e) % _P
    if swap:
        x2, z2 = x3, z3
    return (x2 * pow(z2, _P - 2, _P) % _P).to_bytes(32, "little")


_MASK = 0xFFFFFFFF


def _chacha20_block(key: bytes, counter: int, nonce: bytes) -> bytes:
    state = [0x61707865, 0x3320646E, 0x79622D32, 0x6B206574, *struct.unpack("<8I", key), counter,
             *struct.unpack("<3I", nonce)]
    w = list(state)

    def quarter(a, b, c, d):
        w[a] = (w[a] + w[b]) & _MASK; w[d] ^= w[a]; w[d] = ((w[d] << 16) | (w[d] >> 16)) & _MASK  # noqa: E702
        w[c] = (w[c] + w[d]) & _MASK; w[b] ^= w[c]; w[b] = ((w[b] << 12) | (w[b] >> 20)) & _MASK  # noqa: E702
        w[a] = (w[a] + w[b]) & _MASK; w[d] ^= w[a]; w[d] = ((w[d] << 8) | (w[d] >> 24)) & _MASK  # noqa: E702
        w[c] = (w[c] + w[d]) & _MASK; w[b] ^= w[c]; w[b] = ((w[b] << 7) | (w[b] >> 25)) & _MASK  # noqa: E702

    for _ in range(10):
        quarter(0, 4, 8, 12); quarter(1, 5, 9, 13); quarter(2, 6, 10, 14); quarter(3, 7, 11, 15)  # noqa: E702
        quarter(0, 5, 10, 15); quarter(1, 6, 11, 12); quarter(2, 7, 8, 13); quarter(3, 4, 9, 14)  # noqa: E702
    return struct.pack("<16I", *((x + y) & _MASK for x, y in zip(w, state)))


def _chacha20(key: bytes, counter: int, nonce: bytes, data: bytes) -> bytes:
    out = bytearray()
    for i in range(0, len(data), 64):
        stream = _chacha20_block(key, counter + i // 64, nonce)
        out += bytes(x ^ y for x, y in zip(data[i:i + 64], stream))
    return bytes(out)


def _poly1305(key: bytes, msg: bytes) -> bytes:
    r = int.from_bytes(key[:16], "little") & 0x0FFFFFFC0FFFFFFC0FFFFFFC0FFFFFFF
    s = int.from_bytes(key[16:], "little")
    acc, p = 0, (1 << 130) - 5
    for i in range(0, len(msg), 16):
        acc = (acc + int.from_bytes(msg[i:i + 16] + b"\x01", "little")) * r % p
    return ((acc + s) & ((1 << 128) - 1)).to_bytes(16, "little")


def _aead_tag(key: bytes, nonce: bytes, aad: bytes, ciphertext: bytes) -> bytes:
    def pad(b: bytes) -> bytes:
        return b"\x00" * (-len(b) % 16)
    data = aad + pad(aad) + ciphertext + pad(ciphertext) + struct.pack("<QQ", len(aad), len(ciphertext))
    return _poly1305(_chacha20_block(key, 0, nonce)[:32], data)


def aead_seal(key: bytes, plaintext: bytes, nonce: bytes = bytes(12), aad: bytes = b"") -> bytes:
    """ChaCha20-Poly1305 (RFC 8439 section 2.8): ciphertext || tag."""
    ciphertext = _chacha20(key, 1, nonce, plaintext)
    return ciphertext + _aead_tag(key, nonce, aad, ciphertext)


def aead_open(key: bytes, sealed: bytes, nonce: bytes = bytes(12), aad: bytes = b"") -> bytes | None:
    """The plaintext, or None when the tag does not match."""
    ciphertext, tag = sealed[:-16], sealed[-16:]
    if len(sealed) < 16 or not hmac.compare_digest(tag, _aead_tag(key, nonce, aad, ciphertext)):
        return None
    return _chacha20(key, 1, nonce, ciphertext)


_BECH32 = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"


def bech32_encode(hrp: str, data: bytes) -> str:
    """BIP 173 bech32 (age's key strings: ``age1...``, ``AGE-SECRET-KEY-1...``)."""
    acc, bits, five = 0, 0, []
    for byte in data:
        acc, bits = (acc << 8) | byte, bits + 8
        while bits >= 5:
            bits -= 5
            five.append((acc >> bits) & 31)
    if bits:
        five.append((acc << (5 - bits)) & 31)
    values = [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp] + five + [0] * 6
    check = 1
    for v in values:
        top = check >> 25
        check = ((check & 0x1FFFFFF) << 5) ^ v
        for i, gen in enumerate((0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)):
            if (top >> i) & 1:
                check ^= gen
    check ^= 1
    return hrp + "1" + "".join(_BECH32[d] for d in five + [(check >> 5 * (5 - i)) & 31 for i in range(6)])
