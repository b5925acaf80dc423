"""kTLS: can the kernel do TLS record encryption, so sendfile works under TLS?

Tries setsockopt(TCP_ULP, "tls") on an established loopback TCP socket, then
installs a TLS 1.2 AES-GCM-128 transmit key (SOL_TLS/TLS_TX, a dummy key: the
bytes never leave the host) and sends one record. Without CAP_NET_ADMIN the
kernel will not load the tls module on demand, so ENOENT unprivileged means
"needs root (or the module loaded)", not "unsupported".
"""

from __future__ import annotations

import socket
import struct
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
