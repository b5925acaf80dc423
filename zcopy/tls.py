"""TLS settings for ``zcopy serve --tls-cert/--tls-key`` and the kTLS decision, apart from any socket
loop (the TLS transport uses what this module decides).

The context: TLS 1.2 and 1.3 only; for 1.2, ECDHE with AES-GCM or ChaCha20-Poly1305 (the AEAD ciphers
the kernel can also offload); ALPN ``http/1.1``; SNI accepted (one certificate answers every name). A
certificate or key that cannot be used is a ``TlsConfigError``: one line saying which file and why.

kTLS. Where the kernel has the TLS upper-layer protocol (the ``tls`` module), OpenSSL 3 can hand the
session keys to the kernel after the handshake (``SSL_OP_ENABLE_KTLS``, 0x8; Python 3.11 has no name
for it, 3.12 calls it ``ssl.OP_ENABLE_KTLS``), and file bodies can then leave with sendfile/splice: the
kernel encrypts the pages. This needs an ``SSLSocket`` on the real socket (OpenSSL installs the keys on
that fd; an SSLObject over memory BIOs never can) and a cipher the kernel offloads. Whether it
happened is never assumed: ``ktls_state(sock)`` asks the socket (getsockopt SOL_TLS/TLS_TX and
TLS_RX), and only a socket whose TX side is in the kernel may be given to sendfile, or plaintext would
go into the TLS stream. ``ulp_available()`` says whether the kernel has the ULP at all (the reason
``zcopy probe`` gives when it does not).
"""

from __future__ import annotations

import errno
import socket
import ssl
from dataclasses import dataclass

OP_ENABLE_KTLS = getattr(ssl, "OP_ENABLE_KTLS", 0x8)
SOL_TLS = 282
TLS_TX, TLS_RX = 1, 2
TCP_ULP = 31
CIPHERS_TLS12 = "ECDHE+AESGCM:ECDHE+CHACHA20"
ALPN = ["http/1.1"]


class TlsConfigError(Exception):
    """A certificate or key that cannot be used: one line."""


def make_context(cert: str, key: str, *, ktls: bool = True) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(CIPHERS_TLS12)
    ctx.set_alpn_protocols(ALPN)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_RENEGOTIATION
    if ktls:
        ctx.options |= OP_ENABLE_KTLS
    load(ctx, cert, key)
    return ctx


def load(ctx: ssl.SSLContext, cert: str, key: str) -> None:
    """Load (or reload, on SIGHUP) the certificate chain and key into ``ctx``. Connections already open
    keep the certificate they were made with; new handshakes use the new one."""
    for what, path in (("certificate", cert), ("key", key)):
        try:
            with open(path, "rb") as f:
                head = f.read(64 * 1024)
        except OSError as exc:
            raise TlsConfigError(f"cannot read the TLS {what} {path}: {exc.strerror}") from None
        if b"-----BEGIN " not in head:
            raise TlsConfigError(f"the TLS {what} {path} is not PEM")
    try:
        ctx.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        reason = exc.reason or str(exc)
        if "KEY_VALUES_MISMATCH" in reason.upper():
            raise TlsConfigError(f"the TLS key {key} does not belong to the certificate {cert}") from None
        raise TlsConfigError(f"cannot use the TLS certificate {cert} with the key {key}: {reason}") from None
    except OSError as exc:
        raise TlsConfigError(f"cannot load the TLS certificate {cert}: {exc.strerror or exc}") from None


def pem_stamp(cert: str, key: str) -> bytes:
    """A digest of the certificate and key files' bytes: what a SIGHUP compares to know whether
    they changed (the key's bytes never leave this function)."""
    import hashlib

    h = hashlib.sha256()
    for what, path in (("certificate", cert), ("key", key)):
        try:
            with open(path, "rb") as f:
                h.update(hashlib.sha256(f.read()).digest())
        except OSError as exc:
            raise TlsConfigError(f"cannot read the TLS {what} {path}: {exc.strerror}") from None
    return h.digest()


@dataclass(frozen=True, slots=True)
class KtlsState:
    tx: bool              # the kernel encrypts what we send: sendfile/splice allowed
    rx: bool              # the kernel decrypts what we receive: splice from the socket allowed
    reason: str           # why not, in words (empty when both are on)


def ktls_state(sock: socket.socket) -> KtlsState:
    """Ask the socket (after the handshake) whether its keys are in the kernel."""
    def on(direction: int) -> bool:
        try:
            sock.getsockopt(SOL_TLS, direction, 64)
            return True
        except OSError as exc:
            if exc.errno in (errno.ENOPROTOOPT, errno.EINVAL, errno.EOPNOTSUPP, errno.EBUSY):
                return False
            raise
    try:
        ulp = sock.getsockopt(socket.IPPROTO_TCP, TCP_ULP, 16).rstrip(b"\0")
    except OSError:
        ulp = b""
    if ulp != b"tls":
        return KtlsState(False, False, "the TLS upper-layer protocol is not attached to this socket "
                                       "(no kernel tls module, or OpenSSL did not enable kTLS)")
    tx, rx = on(TLS_TX), on(TLS_RX)
    reason = "" if tx and rx else ("the kernel does not offload this cipher "
                                   f"({'TX' if not tx else ''}{' and ' if not tx and not rx else ''}{'RX' if not rx else ''} in user space)")
    return KtlsState(tx, rx, reason)


def ulp_available() -> tuple[bool, str]:
    """Whether this kernel can attach the TLS ULP to a TCP socket (tried on a connected loopback pair;
    the ULP needs an established socket)."""
    listener = socket.socket()
    client = socket.socket()
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        client.connect(listener.getsockname())
        server, _ = listener.accept()
        try:
            server.setsockopt(socket.IPPROTO_TCP, TCP_ULP, b"tls")
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return False, "the kernel has no tls module (setsockopt TCP_ULP 'tls': ENOENT)"
            return False, f"setsockopt TCP_ULP 'tls' failed: {exc.strerror}"
        finally:
            server.close()
        return True, "the kernel attaches the TLS ULP"
    finally:
        client.close()
        listener.close()
