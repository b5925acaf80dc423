"""HTTPS for the client commands (``zcopy get/put/ls/rm/mv https://...``).

Certificates are verified against the system store (``ssl.create_default_context``: the chain and
the host name), or against ``--cacert FILE`` (a private CA or a self-signed server certificate)
instead. ``--insecure`` turns verification off and says so on stderr every time: the connection is
then encrypted but the server is not known to be the one named in the URL.

Over TLS the client's bytes pass through OpenSSL, so a download is ``recv_into`` + ``pwrite``
through one buffer and an upload ``pread`` + ``sendall`` (``zcopy.client.pump``), where plain HTTP
uses splice and sendfile. Resuming and ``--decrypt`` work the same over both.
"""

from __future__ import annotations

import socket
import ssl
import sys

from zcopy.client.errors import ClientError

_options = {"cacert": None, "insecure": False, "command": "zcopy"}
_context: ssl.SSLContext | None = None


def add_tls_args(p) -> None:
    p.add_argument("--cacert", metavar="FILE",
                   help="for https://: trust the certificates in FILE (PEM) instead of the system store")
    p.add_argument("--insecure", action="store_true",
                   help="for https://: do not verify the server's certificate (a warning is printed)")


def configure(args, command: str) -> None:
    """Take ``--cacert``/``--insecure`` from the parsed flags (before any connection)."""
    global _context
    _options.update(cacert=getattr(args, "cacert", None), insecure=getattr(args, "insecure", False),
                    command=f"zcopy {command}")
    _context = None


def context() -> ssl.SSLContext:
    global _context
    if _context is None:
        if _options["insecure"]:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        else:
            try:
                ctx = ssl.create_default_context(cafile=_options["cacert"])
            except (OSError, ssl.SSLError) as exc:
                why = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or str(exc)
                raise ClientError(f"cannot use --cacert {_options['cacert']}: {why}") from None
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_alpn_protocols(["http/1.1"])
        _context = ctx
    return _context


def wrap(sock: socket.socket, host: str, netloc: str) -> ssl.SSLSocket:
    """The handshake on a connected socket; a certificate that does not verify is one clear line."""
    ctx = context()
    if _options["insecure"]:
        sys.stderr.write(f"{_options['command']}: warning: --insecure: the certificate of {netloc} is NOT "
                         f"verified; anyone on the path could be answering\n")
    try:
        return ctx.wrap_socket(sock, server_hostname=host)
    except ssl.SSLCertVerificationError as exc:
        sock.close()
        hint = "" if _options["cacert"] else " (a private CA or self-signed certificate: --cacert FILE)"
        raise ClientError(f"cannot verify the certificate of {netloc}: {exc.verify_message}{hint}") from None
    except (ssl.SSLError, OSError) as exc:
        sock.close()
        raise ClientError(f"TLS handshake with {netloc} failed: {getattr(exc, 'reason', None) or exc}") from None
