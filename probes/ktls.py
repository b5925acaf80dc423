"""kTLS: can the kernel do TLS record encryption, so sendfile works under TLS?

``ktls.ulp``: tries setsockopt(TCP_ULP, "tls") on an established loopback TCP socket, then
installs a TLS 1.2 AES-GCM-128 transmit key (SOL_TLS/TLS_TX, a dummy key: the
bytes never leave the host) and sends one record. Without CAP_NET_ADMIN the
kernel will not load the tls module on demand, so ENOENT unprivileged means
"needs root (or the module loaded)", not "unsupported".

``ktls.openssl``: where the ULP attaches, real TLS handshakes on loopback (this Python's
OpenSSL, ``SSL_OP_ENABLE_KTLS``, a throwaway self-signed certificate) with TLS 1.3 and with
each TLS 1.2 AEAD cipher zcopy offers, then ``getsockopt(SOL_TLS, TLS_TX/TLS_RX)`` on the
server's socket: did OpenSSL put the keys in the kernel, for which ciphers. This is what
``zcopy serve --tls-cert`` will see per connection (it asks every socket again).
"""

from __future__ import annotations

import socket
import ssl
import struct
import tempfile
import threading
from typing import Iterator

from probes.finding import Finding, Status
from probes.kernel import errname, is_root
from probes.resources import Resources

TCP_ULP = 31
SOL_TLS = 282
TLS_TX = 1
TLS_1_2_VERSION = 0x0303
TLS_CIPHER_AES_GCM_128 = 51
# struct tls12_crypto_info_aes_gcm_128: version, cipher, iv[8], key[16], salt[4], rec_seq[8]
CRYPTO_INFO = struct.pack("=HH8s16s4s8s", TLS_1_2_VERSION, TLS_CIPHER_AES_GCM_128,
                          b"\1" * 8, b"\2" * 16, b"\3" * 4, b"\0" * 8)


def probe(ctx) -> Iterator[Finding]:
    fid = "ktls.ulp"
    value = {"ulp": False, "tls_tx": False}
    with Resources() as res:
        client, server = res.tcp_pair()
        try:
            client.setsockopt(socket.IPPROTO_TCP, TCP_ULP, b"tls")
        except OSError as exc:
            if errname(exc) == "ENOENT" and not is_root():
                yield Finding(fid, Status.SKIPPED, value, "TCP_ULP \"tls\" is not loaded and loading it needs "
                              "root (CAP_NET_ADMIN); run the probe as root or `modprobe tls`")
            else:
                why = " (no tls module in this kernel)" if errname(exc) == "ENOENT" else ""
                yield Finding(fid, Status.UNSUPPORTED, value,
                              f"setsockopt(TCP_ULP, \"tls\") failed: {errname(exc)}{why}")
            return
        value["ulp"] = True
        try:
            client.setsockopt(SOL_TLS, TLS_TX, CRYPTO_INFO)
            client.send(b"ktls probe record")
            value["tls_tx"] = True
        except OSError as exc:
            yield Finding(fid, Status.DEGRADED, value, f"TCP_ULP \"tls\" attached but installing an AES-GCM-128 "
                          f"TX key failed: {errname(exc)}")
            return
    yield Finding(fid, Status.OK, value, "TCP_ULP \"tls\" attached and a TLS 1.2 AES-GCM-128 record was sent "
                  "by the kernel: sendfile can work under TLS")
    yield from _openssl()


OP_ENABLE_KTLS = getattr(ssl, "OP_ENABLE_KTLS", 0x8)
TLS_RX = 2
#: (label, TLS version, TLS 1.2 cipher or None for TLS 1.3's default choice)
CASES = [("TLSv1.3", ssl.TLSVersion.TLSv1_3, None),
         ("TLSv1.2 ECDHE-ECDSA-AES128-GCM-SHA256", ssl.TLSVersion.TLSv1_2, "ECDHE-ECDSA-AES128-GCM-SHA256"),
         ("TLSv1.2 ECDHE-ECDSA-AES256-GCM-SHA384", ssl.TLSVersion.TLSv1_2, "ECDHE-ECDSA-AES256-GCM-SHA384"),
         ("TLSv1.2 ECDHE-ECDSA-CHACHA20-POLY1305", ssl.TLSVersion.TLSv1_2, "ECDHE-ECDSA-CHACHA20-POLY1305")]


def _openssl() -> Iterator[Finding]:
    """Only called once the ULP attached: which handshakes end with keys in the kernel."""
    fid = "ktls.openssl"
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="zcopy-ktls-probe-") as folder:
        cert, key = _self_signed(folder)
        for label, version, cipher in CASES:
            try:
                results[label] = _handshake(cert, key, version, cipher)
            except (OSError, ssl.SSLError) as exc:
                results[label] = {"tx": False, "rx": False, "cipher": None, "error": str(exc)}
    value = {"openssl": ssl.OPENSSL_VERSION, "cases": results}
    tx = [label for label, r in results.items() if r["tx"]]
    if not tx:
        yield Finding(fid, Status.UNSUPPORTED, value, f"{ssl.OPENSSL_VERSION} put no TLS keys in the kernel after "
                      f"a handshake (built without kTLS, or refused it for every cipher tried): HTTPS bodies are "
                      f"encrypted in user space")
        return
    off = [f"{label} ({results[label]['cipher']})" for label in results if not results[label]["tx"]]
    detail = f"{ssl.OPENSSL_VERSION} put the TX keys in the kernel for: " + ", ".join(
        f"{label} ({results[label]['cipher']})" for label in tx)
    if off:
        yield Finding(fid, Status.DEGRADED, value, detail + "; not offloaded: " + ", ".join(off))
    else:
        yield Finding(fid, Status.OK, value, detail)


def _self_signed(folder: str) -> tuple[str, str]:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "zcopy-ktls-probe")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(hours=1)).sign(key, hashes.SHA256()))
    cert_path, key_path = f"{folder}/cert.pem", f"{folder}/key.pem"
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return cert_path, key_path


def _handshake(cert: str, key: str, version, cipher: str | None) -> dict:
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    server_ctx.options |= OP_ENABLE_KTLS
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.check_hostname = False
    client_ctx.verify_mode = ssl.CERT_NONE
    for ctx in (server_ctx, client_ctx):
        ctx.minimum_version = ctx.maximum_version = version
    if cipher:
        server_ctx.set_ciphers(cipher)
        client_ctx.set_ciphers(cipher)
    out: dict = {}
    with Resources() as res:
        client, server = res.tcp_pair()
        server.settimeout(5)

        def serve() -> None:
            try:
                s = server_ctx.wrap_socket(server, server_side=True)
                out["cipher"] = (s.cipher() or ("?",))[0]
                out["tx"], out["rx"] = _keys_in_kernel(s, TLS_TX), _keys_in_kernel(s, TLS_RX)
                s.sendall(b"x")
            except (OSError, ssl.SSLError) as exc:
                out["error"] = str(exc)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            with client_ctx.wrap_socket(client) as c:
                c.recv(1)
        finally:
            thread.join(5)
    return {"tx": out.get("tx", False), "rx": out.get("rx", False), "cipher": out.get("cipher"),
            **({"error": out["error"]} if "error" in out else {})}


def _keys_in_kernel(sock, direction: int) -> bool:
    try:
        sock.getsockopt(SOL_TLS, direction, 64)
        return True
    except OSError:
        return False
