"""Share links and session cookies: minted, opened, refused when tampered, expired or of the other kind."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zcopy.server.signed import BadToken, Session, Share, Signer, fingerprint, share_covers

KEY = bytes(range(32))


def test_share_round_trip_and_expiry():
    s = Signer(KEY)
    token = s.share(Share("/docs/a b.pdf", 2000, "r", "alice"))
    assert s.open_share(token, 1999.0) == Share("/docs/a b.pdf", 2000, "r", "alice")
    with pytest.raises(BadToken, match="expired"):
        s.open_share(token, 2000.0)


def test_other_secret_or_kind_is_refused():
    token = Signer(KEY).share(Share("/x", 2000, "r", "a"))
    with pytest.raises(BadToken, match="signature"):
        Signer(b"\1" * 32).open_share(token, 0)                # rotated secret voids every link
    cookie = Signer(KEY).session(Session("alice", 2000, "f"))
    with pytest.raises(BadToken):
        Signer(KEY).open_share(cookie, 0)                      # a session is not a share ...
    with pytest.raises(BadToken):
        Signer(KEY).open_session(token, 0)                     # ... nor the other way round


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0), st.integers(min_value=0, max_value=255))
def test_any_flipped_bit_is_refused(position, flip):
    token = Signer(KEY).share(Share("/pub/file", 10**10, "r", "alice"))
    i = position % len(token)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."
    changed = token[:i] + alphabet[(alphabet.index(token[i]) + 1 + flip % 60) % len(alphabet)] + token[i + 1:]
    if changed == token:
        return
    with pytest.raises(BadToken):
        Signer(KEY).open_share(changed, 0)


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", "!!.!!", "x" * 5000, "e30.AAAA"])
def test_malformed_tokens(token):
    with pytest.raises(BadToken):
        Signer(KEY).open_share(token, 0)


def test_session_fingerprint_changes_with_password():
    assert fingerprint("$argon2id$a") != fingerprint("$argon2id$b")
    s = Signer(KEY)
    assert s.open_session(s.session(Session("bob", 99, fingerprint("h"))), 0).fingerprint == fingerprint("h")


@pytest.mark.parametrize("shared, path, ok", [
    ("/docs", "/docs", True), ("/docs", "/docs/a", True), ("/docs", "/docs2", False),
    ("/docs/", "/docs/a/b", True), ("/", "/anything", True), ("/f.txt", "/f.txt/x", True),
    ("/f.txt", "/f.txt2", False),
])
def test_share_covers_whole_segments(shared, path, ok):
    assert share_covers(Share(shared, 1, "r", "a"), path) is ok


def test_short_secret_refused():
    with pytest.raises(ValueError):
        Signer(b"short")
