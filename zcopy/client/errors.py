"""Client failures as one-line messages.

Every command prints ``zcopy CMD: <message>`` and exits non-zero on these;
nothing here should ever surface as a traceback. A failed HTTP request says
its status first because that is what a user (or a script grepping stderr)
needs: ``404 Not Found: /x``.
"""

from __future__ import annotations


class ClientError(Exception):
    """A failure worth one line: connection refused, short body, bad key."""


class UsageError(ClientError):
    """Flags that do not go together (found after parsing): exit 2, like
    every other usage error."""


class StatusError(ClientError):
    """The server answered with an error status."""

    def __init__(self, status: int, reason: str, target: str, detail: str = "") -> None:
        self.status = status
        self.reason = reason
        self.target = target
        self.detail = detail
        text = f"{status} {reason}: {target}"
        super().__init__(f"{text} ({detail})" if detail else text)
