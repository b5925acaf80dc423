"""Bearer/Basic token checks, compared in constant time.

A write needs the write token; a read needs the read token when one is set
(the write token also opens reads: whoever may change a file may read it).
Basic auth carries the token as the password; the user name is ignored, so
`curl -u any:TOKEN` works.
"""

from __future__ import annotations

import hmac

from zcopy.tokens import presented_token, read_token_file  # noqa: F401 (read_token_file: serve reads it here)

CHALLENGE = ("WWW-Authenticate", 'Bearer realm="zcopy", Basic realm="zcopy", charset="UTF-8"')


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
