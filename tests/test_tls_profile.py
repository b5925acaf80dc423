"""Which path HTTPS takes and why: the decision over kTLS findings (a table, since this machine's
kernel has no tls module and cannot show the other rows), and the kTLS probe run for real here."""

from __future__ import annotations

import tempfile

import pytest

import probes.ktls as ktls_probe
from probes import Context
from zcopy.profile import https_path
from zcopy.tls import ulp_available


def _cases(**tx):
    labels = [label for label, _, _ in ktls_probe.CASES]
    ciphers = ["TLS_AES_256_GCM_SHA384", "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
               "ECDHE-ECDSA-CHACHA20-POLY1305"]
    keys = ["v13", "aes128", "aes256", "chacha"]
    return {label: {"tx": tx.get(k, False), "rx": False, "cipher": c} for label, c, k in zip(labels, ciphers, keys)}


def _openssl(status, **tx):
    return {"id": "ktls.openssl", "status": status, "value": {"openssl": "OpenSSL 3.0.x", "cases": _cases(**tx)}}


ULP_OK = {"id": "ktls.ulp", "status": "ok", "detail": "attached"}


@pytest.mark.parametrize("findings, path, words", [
    ([{"id": "ktls.ulp", "status": "unsupported",
       "detail": 'setsockopt(TCP_ULP, "tls") failed: ENOENT (no tls module in this kernel)'}],
     "user-space TLS", "no tls module"),
    ([{"id": "ktls.ulp", "status": "skipped", "detail": "needs root"}], "user-space TLS", "needs root"),
    ([ULP_OK, _openssl("unsupported")], "user-space TLS", "put no keys in it (built without kTLS?)"),
    ([ULP_OK, _openssl("degraded", aes128=True)], "user-space TLS", "TLS 1.3 (TLS_AES_256_GCM_SHA384) is not offloaded"),
    ([ULP_OK, _openssl("ok", v13=True, aes128=True, aes256=True, chacha=True)], "kTLS", "leave with sendfile"),
    ([ULP_OK, _openssl("degraded", v13=True, aes128=True, aes256=True)], "kTLS",
     "cipher not offloadable here, so user-space TLS for clients that pick it: TLSv1.2 ECDHE-ECDSA-CHACHA20"),
])
def test_https_path_and_its_reason(findings, path, words):
    chosen, why = https_path({f["id"]: f for f in findings})
    assert chosen == path
    assert words in why, why


def test_the_ktls_probe_agrees_with_the_kernel():
    ok, why = ulp_available()
    found = {f.id: f for f in ktls_probe.probe(Context())}
    assert found["ktls.ulp"].value["ulp"] == ok
    chosen, reason = https_path({k: f.to_json() for k, f in found.items()})
    if not ok:
        assert "ktls.openssl" not in found           # nothing to ask OpenSSL without the ULP
        assert chosen == "user-space TLS"
    else:
        assert "ktls.openssl" in found and reason


def test_the_probe_handshakes_negotiate_each_cipher_and_ask_the_socket():
    """The handshakes ``ktls.openssl`` makes are real: each case negotiates the cipher it names,
    and the socket is asked (here, without a tls module, the keys cannot be in the kernel)."""
    ok, _ = ulp_available()
    with tempfile.TemporaryDirectory() as folder:
        cert, key = ktls_probe._self_signed(folder)
        for label, version, cipher in ktls_probe.CASES:
            result = ktls_probe._handshake(cert, key, version, cipher)
            assert "error" not in result, (label, result)
            if cipher:
                assert result["cipher"] == cipher
            if not ok:
                assert result["tx"] is False and result["rx"] is False
