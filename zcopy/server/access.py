"""Who is asking, and may they: one place for every method and path.

``Access.identify(authorization, now)`` turns the Authorization header into an ``Identity``, or into a
``Check`` when an account's password must be verified (argon2: slow by design, so the caller runs
``Check.run()`` off the event loop and hands the result to ``Access.settle``). ``Access.allows``
answers whether an identity may apply a method to a path; the method table is
``zcopy.accounts.rules``.

Who is who:

- No Authorization header: the anonymous identity. With a users file, its rules are the ``*``
  account's (none when the file has no ``*`` line). Without one, zcopy behaves as before accounts:
  reads are open unless a read token is set, writes need ``--allow-write`` (and the token if set).
- ``Bearer T``, or Basic with a user name that is not an account and T as the password: the write
  token gives every right, the read token gives ``r`` everywhere (as before accounts).
- Basic with an account's name: that account's password is checked (a token does not open a named
  account), then its rules apply.

A verified credential is remembered (``CREDENTIAL_TTL`` seconds, keyed by an HMAC of the header under
a per-process random key, so the cache holds no password and its lookups leak no timing about one), and
the generation of the users file is part of every remembered answer: a reload (SIGHUP, or the file
changed) forgets them all, so a revoked user or a changed rule holds from the next request on.

Repeated failures from one address are throttled: after ``FAILURES_ALLOWED`` failures within
``FAILURE_WINDOW`` seconds, that address gets 429 with Retry-After until the window ends. The counts
live in a ``Throttle``; the worker's is shared by every worker (see its docstring).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from dataclasses import dataclass

from zcopy.accounts import passwords
from zcopy.accounts.rules import Rules, destination_needs, parse_rule, required, segments
from zcopy.accounts.users import ANONYMOUS, Account

CREDENTIAL_TTL = 60.0
FAILURES_ALLOWED = 10
FAILURE_WINDOW = 60.0
_ALL = Rules([parse_rule("/:rwd")])
_READ = Rules([parse_rule("/:r")])


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a request is from. ``name`` is what the access log shows (``-`` for anonymous)."""

    name: str
    rules: Rules | None          # None: the rules before accounts (no users file), see ``Access.allows``
    kind: str                    # "anonymous" | "user" | "token" | "read-token"


ANONYMOUS_LEGACY = Identity("-", None, "anonymous")


@dataclass(slots=True)
class Check:
    """A password to verify off the loop. ``run()`` is the slow part and touches nothing shared."""

    account: Account
    password: bytes
    key: bytes                   # the credential's cache key
    generation: int
    ok: bool | None = None

    def run(self) -> "Check":
        self.ok = passwords.check(self.account.hash, self.password)
        self.password = b""
        return self


class Denied(Exception):
    """401 (no or wrong credentials) or 429 (throttled: ``retry_after`` seconds)."""

    def __init__(self, status: int, message: str, retry_after: int = 0) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class Throttle:
    """Failure counts per client address. This one is per process; ``zcopy.server.state`` may back it
    with the shared state database so that the limit holds across workers."""

    def __init__(self, allowed: int = FAILURES_ALLOWED, window: float = FAILURE_WINDOW) -> None:
        self.allowed = allowed
        self.window = window
        self._fails: dict[str, tuple[int, float]] = {}     # addr -> (failures, window start)

    def blocked_for(self, addr: str, now: float) -> float:
        count, since = self._fails.get(addr, (0, now))
        if count >= self.allowed and now - since < self.window:
            return self.window - (now - since)
        return 0.0

    def failed(self, addr: str, now: float) -> None:
        count, since = self._fails.get(addr, (0, now))
        if now - since >= self.window:
            count, since = 0, now
        self._fails[addr] = (count + 1, since)
        if len(self._fails) > 65536:            # bounded: forget windows that ended
            self._fails = {a: v for a, v in self._fails.items() if now - v[1] < self.window}

    def succeeded(self, addr: str) -> None:
        self._fails.pop(addr, None)


class Access:
    def __init__(self, *, accounts: dict[str, Account] | None = None, token: str | None = None,
                 read_token: str | None = None, allow_write: bool = False,
                 throttle: Throttle | None = None) -> None:
        self.token = token.encode() if token else None
        self.read_token = read_token.encode() if read_token else None
        self.allow_write = allow_write
        self.throttle = throttle or Throttle()
        self._key = os.urandom(32)
        self._verified: dict[bytes, tuple[Identity, float, int]] = {}
        self.generation = 0
        self.accounts: dict[str, Account] | None = None
        self.anonymous = ANONYMOUS_LEGACY
        self.load(accounts)

    def load(self, accounts: dict[str, Account] | None) -> None:
        """Take a new set of accounts (a reload): every remembered verification is forgotten."""
        self.accounts = accounts
        self.generation += 1
        self._verified.clear()
        if accounts is None:
            self.anonymous = ANONYMOUS_LEGACY
        else:
            anon = accounts.get(ANONYMOUS)
            self.anonymous = Identity("-", anon.rules if anon else Rules(), "anonymous")

    # -- who ------------------------------------------------------------------

    def identify(self, authorization: str | None, addr: str, now: float) -> Identity | Check:
        """The identity the header proves, or a Check to run off the loop. Raises Denied."""
        if not authorization:
            return self.anonymous
        wait = self.throttle.blocked_for(addr, now)
        if wait:
            raise Denied(429, "too many failed sign-ins from this address", retry_after=int(wait) + 1)
        scheme, _, value = authorization.strip().partition(" ")
        scheme = scheme.lower()
        value = value.strip()
        if scheme == "bearer":
            return self._token(value.encode(), "-", addr, now)
        if scheme != "basic":
            raise Denied(401, f"unsupported authorization scheme {scheme!r}")
        try:
            decoded = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise Denied(401, "malformed Basic credentials") from None
        user, sep, password = decoded.partition(b":")
        if not sep:
            raise Denied(401, "malformed Basic credentials")
        name = user.decode("utf-8", "replace")
        account = self.accounts.get(name) if self.accounts is not None else None
        if account is None or account.anonymous:
            return self._token(password, name or "-", addr, now)
        if not account.can_sign_in:
            self._fail(addr, now)
            raise Denied(401, "wrong user name or password")
        key = hmac.new(self._key, decoded, hashlib.sha256).digest()
        known = self._verified.get(key)
        if known is not None:
            identity, until, generation = known
            if until > now and generation == self.generation:
                return identity
            del self._verified[key]
        return Check(account, password, key, self.generation)

    def settle(self, check: Check, addr: str, now: float) -> Identity:
        """The identity a finished Check proves (on the loop). Raises Denied."""
        if not check.ok:
            self._fail(addr, now)
            raise Denied(401, "wrong user name or password")
        if check.generation != self.generation:
            # The file was reloaded while the password was being checked: the account may be gone.
            account = (self.accounts or {}).get(check.account.name)
            if account is None or account.hash != check.account.hash:
                raise Denied(401, "wrong user name or password")
            check.account = account
        self.throttle.succeeded(addr)
        identity = Identity(check.account.name, check.account.rules, "user")
        if len(self._verified) > 4096:
            self._verified.clear()
        self._verified[check.key] = (identity, now + CREDENTIAL_TTL, self.generation)
        return identity

    def _token(self, given: bytes, name: str, addr: str, now: float) -> Identity:
        write = bool(self.token) and hmac.compare_digest(given, self.token)
        read = bool(self.read_token) and hmac.compare_digest(given, self.read_token)
        if write:
            return Identity(name, None if self.accounts is None else _ALL, "token")
        if read:
            return Identity(name, None if self.accounts is None else _READ, "read-token")
        self._fail(addr, now)
        raise Denied(401, "wrong token" if self.accounts is None else "wrong user name, password or token")

    def _fail(self, addr: str, now: float) -> None:
        self.throttle.failed(addr, now)

    # -- may they -------------------------------------------------------------

    def allows(self, identity: Identity, method: str, path: str, exists: bool) -> bool:
        """Whether ``identity`` may apply ``method`` to the decoded ``path``. For MOVE and COPY this is
        the source; ``allows_destination`` the Destination."""
        letters = required(method, exists)
        if letters is None:
            return False
        if identity.rules is None:
            return self._legacy(identity, letters)
        return identity.rules.allows(segments(path), letters)

    def allows_destination(self, identity: Identity, method: str, path: str, exists: bool) -> bool:
        letters = destination_needs(method, exists)
        if identity.rules is None:
            return self._legacy(identity, letters)
        return identity.rules.allows(segments(path), letters)

    def _legacy(self, identity: Identity, letters: str) -> bool:
        """Without a users file: reads need the read token when one is set (the write token opens them
        too); anything else needs --allow-write and, when set, the write token."""
        if not letters:
            return True
        if letters == "r":
            return not self.read_token or identity.kind in ("token", "read-token")
        return self.allow_write and (not self.token or identity.kind == "token")

    def may_list(self, identity: Identity, folder: str, name: str) -> bool:
        """Whether a listing of ``folder`` shown to ``identity`` includes ``name``."""
        if identity.rules is None:
            return True
        return identity.rules.may_see(segments(folder) + (name,))
