"""Signed, expiring tokens: share links and session cookies.

A token is ``base64url(payload).base64url(HMAC-SHA256(secret, kind + payload))``, the payload a
compact JSON object. The server secret is 32 random bytes made at first start and kept in the state
folder with mode 0600 (``zcopy.server.state``); rotating it voids every token at once. Nothing in a
token is secret (the payload is readable): the MAC makes it unforgeable, the expiry bounds it, and the
kind is part of what is signed, so a session cookie can never be replayed as a share link or the other
way round.

- A **share** names one path (a file, or a folder and what is beneath it), an expiry, and the rights it
  gives: ``r`` (download the file, or list and download the folder) or ``w`` (a drop box: upload new
  files into the folder, nothing else). It also names who minted it, for the log.
- A **session** (the web UI's cookie after a Basic sign-in) names the account, an expiry, and a
  fingerprint of the account's password hash, so that a changed password or a removed account ends
  every session made before.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass

SHARE, SESSION = "share", "session"
MAX_TOKEN = 4096


class BadToken(ValueError):
    """Tampered, malformed, of the wrong kind, or expired: the caller answers 403 (share) or treats the
    request as anonymous (session)."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class Share:
    path: str          # decoded URL path, normalised ("/a/b" or "/" for the root)
    expires: int       # Unix time, seconds
    rights: str        # "r" or "w"
    by: str            # the account (or "token") that minted it


@dataclass(frozen=True, slots=True)
class Session:
    user: str
    expires: int
    fingerprint: str   # of the account's password hash when the session began


def fingerprint(password_hash: str) -> str:
    return _b64(hashlib.sha256(password_hash.encode()).digest()[:12])


class Signer:
    def __init__(self, secret: bytes) -> None:
        if len(secret) < 32:
            raise ValueError("the signing secret must be at least 32 bytes")
        self._secret = secret

    def _mac(self, kind: str, payload: bytes) -> bytes:
        return hmac.new(self._secret, kind.encode() + b"\0" + payload, hashlib.sha256).digest()

    def _mint(self, kind: str, fields: dict) -> str:
        payload = json.dumps(fields, separators=(",", ":"), ensure_ascii=False).encode()
        return f"{_b64(payload)}.{_b64(self._mac(kind, payload))}"

    def _open(self, kind: str, token: str, now: float) -> dict:
        if not token or len(token) > MAX_TOKEN or token.count(".") != 1:
            raise BadToken("malformed token")
        body, mac = token.split(".")
        try:
            payload, given = _unb64(body), _unb64(mac)
        except (binascii.Error, ValueError):
            raise BadToken("malformed token") from None
        if _b64(payload) != body or _b64(given) != mac:
            raise BadToken("malformed token")       # one spelling per token: unused base64 bits must be zero
        if not hmac.compare_digest(given, self._mac(kind, payload)):
            raise BadToken("the token's signature does not match (tampered, or signed with another secret)")
        try:
            fields = json.loads(payload)
        except ValueError:
            raise BadToken("malformed token") from None
        expires = fields.get("e") if isinstance(fields, dict) else None
        if not isinstance(expires, int):
            raise BadToken("malformed token")
        if now >= expires:
            raise BadToken("the token has expired")
        return fields

    def tag(self, kind: str, data: str) -> str:
        """A MAC of ``data`` for ``kind`` (e.g. the CSRF token of a session), base64url."""
        return _b64(self._mac(kind, data.encode("utf-8", "surrogateescape")))

    def share(self, share: Share) -> str:
        if share.rights not in ("r", "w"):
            raise ValueError("a share gives 'r' or 'w'")
        return self._mint(SHARE, {"p": share.path, "e": share.expires, "r": share.rights, "b": share.by})

    def open_share(self, token: str, now: float) -> Share:
        f = self._open(SHARE, token, now)
        try:
            share = Share(str(f["p"]), f["e"], str(f["r"]), str(f["b"]))
        except KeyError:
            raise BadToken("malformed token") from None
        if share.rights not in ("r", "w") or not share.path.startswith("/"):
            raise BadToken("malformed token")
        return share

    def session(self, session: Session) -> str:
        return self._mint(SESSION, {"u": session.user, "e": session.expires, "f": session.fingerprint})

    def open_session(self, token: str, now: float) -> Session:
        f = self._open(SESSION, token, now)
        try:
            return Session(str(f["u"]), f["e"], str(f["f"]))
        except KeyError:
            raise BadToken("malformed token") from None


def share_covers(share: Share, path: str) -> bool:
    """Whether ``share`` reaches ``path`` (decoded, normalised): the path itself, or beneath it on
    whole segments when it names a folder."""
    if path == share.path:
        return True
    base = share.path.rstrip("/") + "/"
    return path.startswith(base)
