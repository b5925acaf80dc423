"""Bearer/Basic token checks, compared in constant time.

A write needs the write token; a read needs the read token when one is set
(the write token also opens reads: whoever may change a file may read it).
Basic auth carries the token as the password; the user name is ignored, so
`curl -u any:TOKEN` works.
"""

from __future__ import annotations

import base64
import binascii
import hmac

def read_token_file(path: str) -> str:
    """The token in a file: its first line, without surrounding whitespace
    (what ``echo T > f`` or a secrets manager writes). Raises OSError, or
    ValueError when the line is empty. Server and client read files alike."""
    with open(path, encoding="utf-8") as f:
        token = f.readline().strip()
    if not token:
        raise ValueError(f"{path} is empty")
    return token


CHALLENGE = ("WWW-Authenticate", 'Bearer realm="zcopy", Basic realm="zcopy", charset="UTF-8"')


def presented_token(authorization: str | None) -> bytes | None:
    """The token a client sent, from ``Bearer T`` or ``Basic base64(user:T)``."""
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    scheme = scheme.lower()
    value = value.strip()
    if scheme == "bearer":
        return value.encode()
    if scheme == "basic":
        try:
            decoded = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return None
        _, sep, password = decoded.partition(b":")
        return password if sep else None
    return None


def token_ok(authorization: str | None, *tokens: str | None) -> bool:
    """True when the request carries one of ``tokens`` (all are compared, so the
    time taken does not tell which one, or how much of it, matched)."""
    given = presented_token(authorization)
    if given is None:
        return False
    ok = False
    for token in tokens:
        if token:
            ok |= hmac.compare_digest(given, token.encode())
    return ok
