"""Password hashes: argon2id, memory-hard, through argon2-cffi.

Why argon2id and not the standard library's scrypt: argon2id is the current recommendation
(RFC 9106, OWASP), and argon2-cffi stores each hash as one PHC string that carries its own salt and
cost (``$argon2id$v=19$m=65536,t=3,p=1$salt$hash``), so the users file needs no salt column, a cost
can be raised for new hashes while old ones still verify, and the comparison inside ``verify`` is the
library's constant-time one. docs/dependencies.md says it too.

Cost: ``DEFAULT_TIME`` passes over ``DEFAULT_MEMORY_KIB`` KiB, one lane: about 0.1-0.2 s per check on
the project's 2-core machine (measured; docs/accounts.md has the figure). Checking is slow by design,
so the server does it off its event loop.
"""

from __future__ import annotations

DEFAULT_TIME = 3
DEFAULT_MEMORY_KIB = 64 * 1024
PARALLELISM = 1
#: Bounds on what ``zcopy user add`` accepts: below them a hash is too cheap to be worth storing,
#: above them one check would stall a server for seconds.
MIN_TIME, MAX_TIME = 1, 20
MIN_MEMORY_KIB, MAX_MEMORY_KIB = 8 * 1024, 1024 * 1024
PREFIX = "$argon2id$"


def _hasher(time_cost: int = DEFAULT_TIME, memory_kib: int = DEFAULT_MEMORY_KIB):
    from argon2 import PasswordHasher

    return PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=PARALLELISM)


def make(password: str, *, time_cost: int = DEFAULT_TIME, memory_kib: int = DEFAULT_MEMORY_KIB) -> str:
    """A new argon2id hash (PHC string) of ``password`` with a fresh random salt."""
    if not MIN_TIME <= time_cost <= MAX_TIME:
        raise ValueError(f"time cost must be {MIN_TIME}-{MAX_TIME}")
    if not MIN_MEMORY_KIB <= memory_kib <= MAX_MEMORY_KIB:
        raise ValueError(f"memory cost must be {MIN_MEMORY_KIB}-{MAX_MEMORY_KIB} KiB")
    return _hasher(time_cost, memory_kib).hash(password)


def check(encoded: str, password: str | bytes) -> bool:
    """Whether ``password`` matches ``encoded``. Slow (the hash's cost); never raises for a wrong
    password or a damaged hash, it answers False."""
    from argon2 import PasswordHasher
    from argon2.exceptions import Argon2Error, InvalidHashError

    try:
        return PasswordHasher().verify(encoded, password)
    except (Argon2Error, InvalidHashError, ValueError):
        return False


def well_formed(encoded: str) -> bool:
    """Whether ``encoded`` reads as an argon2id PHC string (without checking any password)."""
    from argon2 import extract_parameters
    from argon2.exceptions import InvalidHashError

    if not encoded.startswith(PREFIX):
        return False
    try:
        extract_parameters(encoded)
    except (InvalidHashError, ValueError):
        return False
    return True
