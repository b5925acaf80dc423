"""The TLS context (real handshakes on loopback with a certificate made here), its one-line errors, and
the kTLS checks asked of real sockets (this kernel has no tls module: they must say so, not guess)."""

from __future__ import annotations

import datetime
import socket
import ssl
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from zcopy import tls


def make_cert(folder, name="localhost"):
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name), x509.IPAddress(
                __import__("ipaddress").ip_address("127.0.0.1"))]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return str(cert_path), str(key_path)


def handshake(ctx, cafile, *, client_max=None):
    listener = socket.create_server(("127.0.0.1", 0))
    result = {}

    def serve():
        conn, _ = listener.accept()
        with ctx.wrap_socket(conn, server_side=True) as s:
            result["version"] = s.version()
            result["alpn"] = s.selected_alpn_protocol()
            result["ktls"] = tls.ktls_state(s)
            s.sendall(b"ok")
    t = threading.Thread(target=serve)
    t.start()
    cctx = ssl.create_default_context(cafile=cafile)
    cctx.set_alpn_protocols(["http/1.1"])
    if client_max:
        cctx.maximum_version = client_max
    with socket.create_connection(listener.getsockname()) as raw, \
            cctx.wrap_socket(raw, server_hostname="localhost") as c:
        assert c.recv(2) == b"ok"
    t.join(10)
    listener.close()
    return result


def test_tls13_and_tls12_with_alpn(tmp_path):
    cert, key = make_cert(tmp_path)
    ctx = tls.make_context(cert, key)
    r = handshake(ctx, cert)
    assert r["version"] == "TLSv1.3" and r["alpn"] == "http/1.1"
    r = handshake(ctx, cert, client_max=ssl.TLSVersion.TLSv1_2)
    assert r["version"] == "TLSv1.2"


def test_old_protocols_refused(tmp_path):
    cert, key = make_cert(tmp_path)
    ctx = tls.make_context(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    refused = []

    def serve():
        conn, _ = listener.accept()
        try:
            ctx.wrap_socket(conn, server_side=True)
        except ssl.SSLError as exc:
            refused.append(exc.reason)
        conn.close()
    t = threading.Thread(target=serve)
    t.start()
    cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    cctx.check_hostname = False
    cctx.verify_mode = ssl.CERT_NONE
    with pytest.warns(DeprecationWarning):
        cctx.minimum_version = ssl.TLSVersion.TLSv1
        cctx.maximum_version = ssl.TLSVersion.TLSv1_1
    cctx.set_ciphers("ALL:@SECLEVEL=0")
    with socket.create_connection(listener.getsockname()) as raw, pytest.raises(ssl.SSLError):
        cctx.wrap_socket(raw)
    t.join(10)
    listener.close()
    assert refused, "the server accepted TLS 1.1"


def test_ktls_state_is_asked_of_the_socket(tmp_path):
    cert, key = make_cert(tmp_path)
    r = handshake(tls.make_context(cert, key), cert)
    available, why = tls.ulp_available()
    if not available:
        assert r["ktls"] == tls.KtlsState(False, False, r["ktls"].reason) and "not attached" in r["ktls"].reason
        assert "tls module" in why
    else:                       # a kTLS kernel: OpenSSL 3 with the option attaches it for AES-GCM
        assert r["ktls"].tx, r["ktls"].reason


@pytest.mark.parametrize("case, words", [
    ("missing-cert", "cannot read the TLS certificate"),
    ("not-pem", "is not PEM"),
    ("mismatch", "does not belong to the certificate"),
])
def test_bad_files_are_one_line(tmp_path, case, words):
    cert, key = make_cert(tmp_path)
    if case == "missing-cert":
        cert = str(tmp_path / "nope.pem")
    elif case == "not-pem":
        (tmp_path / "junk.pem").write_bytes(b"junk")
        key = str(tmp_path / "junk.pem")
    else:
        other = tmp_path / "other"
        other.mkdir()
        _, key = make_cert(other)
    with pytest.raises(tls.TlsConfigError) as exc:
        tls.make_context(cert, key)
    assert words in str(exc.value) and "\n" not in str(exc.value)
