"""Tokens as both ends handle them: read from a file, carried in an
``Authorization`` header. The server checks them (``zcopy.server.auth``),
the client sends them (``zcopy.client.options``); neither imports the other.
"""

from __future__ import annotations

import base64
import binascii


def read_token_file(path: str) -> str:
    """The token in a file: its first line, without surrounding whitespace
    (what ``echo T > f`` or a secrets manager writes). Raises OSError, or
    ValueError when the line is empty. Server and client read files alike."""
    with open(path, encoding="utf-8") as f:
        token = f.readline().strip()
    if not token:
        raise ValueError(f"{path} is empty")
    return token


def bearer(token: str) -> str:
    """The ``Authorization`` value that carries ``token``."""
    return f"Bearer {token}"


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
