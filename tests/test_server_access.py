"""zcopy.server.access by table: who a header proves, what each identity may do, the verification cache
(and its reset on reload), and the failure throttle. The argon2 checks are real."""

from __future__ import annotations

import base64

import pytest

from zcopy.accounts import passwords, users
from zcopy.server.access import CREDENTIAL_TTL, Access, Check, Denied, Identity, Throttle

FAST = dict(time_cost=1, memory_kib=passwords.MIN_MEMORY_KIB)
ALICE = passwords.make("alice-pw", **FAST)
BOB = passwords.make("bob-pw", **FAST)
USERS = users.parse(
    f"alice {ALICE} /:r /home/alice:rwd\n"
    f"bob {BOB} /inbox:w\n"
    f"guest - /:r\n"
    "* - /pub:r\n")


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def who(access: Access, header, addr="10.0.0.1", now=1000.0) -> Identity:
    got = access.identify(header, addr, now)
    if isinstance(got, Check):
        got = access.settle(got.run(), addr, now)
    return got


def test_accounts_identities():
    a = Access(accounts=USERS, token="T", read_token="R")
    assert who(a, None).rules.perms(("pub", "x")) == frozenset("r")         # the '*' account
    assert who(a, basic("alice", "alice-pw")).name == "alice"
    assert who(a, "Bearer T").kind == "token"
    assert who(a, basic("anyone", "T")).kind == "token"                       # tokens keep working as Basic
    assert who(a, basic("anyone", "R")).kind == "read-token"
    for header in (basic("alice", "wrong"), basic("alice", "T"),               # a token never opens an account
                   basic("guest", ""), basic("nobody", "x"), "Bearer nope", "Basic !!!", "Digest x"):
        with pytest.raises(Denied) as exc:
            who(a, header)
        assert exc.value.status == 401


@pytest.mark.parametrize("header, method, path, exists, ok", [
    (None, "GET", "/pub/a", True, True),
    (None, "GET", "/other", True, False),                   # anonymous: only what '*' gives
    (None, "PUT", "/pub/new", False, False),                # writes are never anonymous unless a rule says so
    (basic("alice", "alice-pw"), "GET", "/anything", True, True),
    (basic("alice", "alice-pw"), "PUT", "/x", False, False),   # read-only outside her home
    (basic("alice", "alice-pw"), "PUT", "/home/alice/x", True, True),
    (basic("alice", "alice-pw"), "DELETE", "/home/alice/x", True, True),
    (basic("bob", "bob-pw"), "PUT", "/inbox/new", False, True),     # a drop box ...
    (basic("bob", "bob-pw"), "PUT", "/inbox/old", True, False),     # ... where nothing can be replaced,
    (basic("bob", "bob-pw"), "GET", "/inbox/new", True, False),     # read,
    (basic("bob", "bob-pw"), "PROPFIND", "/inbox", True, False),    # listed,
    (basic("bob", "bob-pw"), "DELETE", "/inbox/new", True, False),  # or deleted
    (basic("bob", "bob-pw"), "PUT", "/inbox2/x", False, False),     # whole segments
    (basic("bob", "bob-pw"), "MKCOL", "/inbox/sub", False, True),
    ("Bearer T", "DELETE", "/anything", True, True),
    ("Bearer R", "GET", "/anything", True, True),
    ("Bearer R", "PUT", "/anything", False, False),
    (basic("alice", "alice-pw"), "BREW", "/", True, False),
])
def test_allows(header, method, path, exists, ok):
    a = Access(accounts=USERS, token="T", read_token="R")
    assert a.allows(who(a, header), method, path, exists) is ok


def test_move_and_copy_destinations():
    a = Access(accounts=USERS)
    alice = who(a, basic("alice", "alice-pw"))
    assert a.allows(alice, "MOVE", "/home/alice/a", True)
    assert a.allows_destination(alice, "MOVE", "/home/alice/b", False)
    assert not a.allows_destination(alice, "MOVE", "/elsewhere", False)
    assert a.allows(alice, "COPY", "/elsewhere/a", True)                 # r on the source is enough
    assert a.allows_destination(alice, "COPY", "/home/alice/a", True)    # replacing: w and d, she has both
    bob = who(a, basic("bob", "bob-pw"))
    assert not a.allows_destination(bob, "COPY", "/inbox/exists", True)  # no d: cannot replace


@pytest.mark.parametrize("kw, header, method, ok", [
    # Without a users file: the rules before accounts, unchanged.
    (dict(), None, "GET", True),
    (dict(), None, "PUT", False),                                        # read-only server
    (dict(allow_write=True), None, "PUT", True),                         # --allow-write without a token
    (dict(allow_write=True, token="T"), None, "PUT", False),
    (dict(allow_write=True, token="T"), "Bearer T", "PUT", True),
    (dict(allow_write=True, token="T"), None, "GET", True),
    (dict(token="T", read_token="R"), None, "GET", False),
    (dict(token="T", read_token="R"), "Bearer R", "GET", True),
    (dict(token="T", read_token="R"), "Bearer T", "GET", True),
    (dict(allow_write=True, token="T", read_token="R"), "Bearer R", "PUT", False),
])
def test_without_users_file(kw, header, method, ok):
    a = Access(**kw)
    assert a.allows(who(a, header), method, "/f", method != "PUT") is ok


def test_verified_credentials_are_remembered_until_ttl_or_reload():
    a = Access(accounts=USERS)
    header = basic("alice", "alice-pw")
    assert isinstance(a.identify(header, "a", 0.0), Check)
    who(a, header, now=0.0)
    assert isinstance(a.identify(header, "a", 1.0), Identity)             # no second argon2 check
    assert isinstance(a.identify(header, "a", CREDENTIAL_TTL + 1), Check)  # expired
    who(a, header, now=0.0)
    a.load(users.parse(f"alice {ALICE} /:r\n"))                            # reload: forgotten
    assert isinstance(a.identify(header, "a", 1.0), Check)
    a.load(users.parse(""))                                                # alice revoked
    with pytest.raises(Denied):
        who(a, header, now=1.0)


def test_a_reload_during_the_check_is_honoured():
    a = Access(accounts=USERS)
    check = a.identify(basic("alice", "alice-pw"), "a", 0.0)
    a.load(users.parse(f"bob {BOB} /:r\n"))           # alice removed while her password was being checked
    with pytest.raises(Denied):
        a.settle(check.run(), "a", 0.0)


def test_failures_are_throttled_per_address_then_released():
    a = Access(accounts=USERS, throttle=Throttle(allowed=3, window=60))
    for _ in range(3):
        with pytest.raises(Denied) as exc:
            who(a, basic("alice", "nope"), addr="1.2.3.4", now=100.0)
        assert exc.value.status == 401
    with pytest.raises(Denied) as exc:                          # even the right password waits now
        who(a, basic("alice", "alice-pw"), addr="1.2.3.4", now=110.0)
    assert exc.value.status == 429 and exc.value.retry_after == 51
    assert who(a, basic("alice", "alice-pw"), addr="5.6.7.8", now=110.0).name == "alice"   # others are not held
    assert who(a, None, addr="1.2.3.4", now=110.0).kind == "anonymous"                     # nor anonymous reads
    assert who(a, basic("alice", "alice-pw"), addr="1.2.3.4", now=161.0).name == "alice"   # window over


def test_listing_filter():
    a = Access(accounts=users.parse(f"alice {ALICE} /pub:r /drop:w /a/b:r\n"))
    alice = who(a, basic("alice", "alice-pw"))
    assert [n for n in ("pub", "drop", "a", "secret") if a.may_list(alice, "/", n)] == ["pub", "a"]
    assert a.may_list(alice, "/a", "b") and not a.may_list(alice, "/a", "c")
