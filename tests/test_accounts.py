"""Accounts: rules (table), the users file (format, errors, round trip) and `zcopy user` (real CLI, a real
terminal for the password prompt, concurrent writers)."""

from __future__ import annotations

import os
import pty
import select
import stat
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zcopy.accounts import passwords, users
from zcopy.accounts.rules import (NONE, Rule, RuleError, Rules, destination_needs, parse_perms, parse_rule,
                                  required, segments, table)

# Cheapest allowed cost: the tests check the format and the flow, not the cost.
FAST = ["--time-cost", "1", "--memory-cost", str(passwords.MIN_MEMORY_KIB)]


def R(*texts):
    return Rules(parse_rule(t) for t in texts)


# -- rules ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("rules, path, perms", [
    (("/inbox:w",), "/inbox", "w"),
    (("/inbox:w",), "/inbox/a/b", "w"),
    (("/inbox:w",), "/inbox2", ""),            # whole segments, not prefixes
    (("/inbox:w",), "/", ""),                  # no rule covers the root: no access
    (("/:r", "/inbox:rw"), "/inbox/x", "rw"),  # the longest match wins ...
    (("/:r", "/inbox:rw"), "/other", "r"),
    (("/:rwd", "/private:-"), "/private/x", ""),   # ... narrowing too
    (("/:rwd", "/private:-"), "/privateer", "rwd"),
    (("/a/b:d", "/a:r"), "/a/b/c", "d"),       # order in the file does not matter
    ((), "/anything", ""),
])
def test_rules_longest_whole_segment_match(rules, path, perms):
    assert R(*rules).perms(segments(path)) == frozenset(perms)


def test_rules_paths_with_colons_and_spaces():
    rule = parse_rule("/a:b/my docs:rw")
    assert rule.path == ("a:b", "my docs") and rule.perms == frozenset("rw")


@pytest.mark.parametrize("text", ["/x", "x:r", "/x:rr", "/x:q", "/x:", "/../x:r", "/a/./b:r"])
def test_bad_rules_are_refused(text):
    with pytest.raises(RuleError):
        parse_rule(text)


def test_two_rules_for_one_path_are_refused():
    with pytest.raises(RuleError, match="two rules"):
        R("/a:r", "/a/:w")


def test_may_see_folders_that_lead_to_readable_subtrees():
    rules = R("/pub:r", "/drop:w", "/x/y/z:r")
    assert rules.may_see(("pub",)) and rules.may_see(("x",)) and rules.may_see(("x", "y"))
    assert not rules.may_see(("drop",)) and not rules.may_see(("other",))


def test_method_table():
    assert required("GET", True) == "r" and required("PROPFIND", True) == "r"
    assert required("PUT", False) == "w"
    assert required("PUT", True) == "wd"          # replacing destroys content: needs delete too
    assert required("MKCOL", False) == "w"
    assert required("DELETE", True) == "d"
    assert required("MOVE", True) == "d" and destination_needs("MOVE", False) == "w"
    assert destination_needs("MOVE", True) == "wd"
    assert required("COPY", True) == "r" and destination_needs("COPY", False) == "w"
    assert required("BREW", False) is None
    assert {m for m, _, _ in table()} >= {"GET", "HEAD", "PUT", "DELETE", "MOVE", "COPY", "MKCOL",
                                           "PROPFIND", "PROPPATCH", "LOCK", "UNLOCK", "PATCH", "POST"}


def test_perms_none():
    assert parse_perms("-") == NONE


# -- users file -------------------------------------------------------------------------------------------

HASH = passwords.make("secret", time_cost=1, memory_kib=passwords.MIN_MEMORY_KIB)


def test_parse_and_format_round_trip_with_escapes():
    text = (f"# comment\n\nalice {HASH} /:r /my%20docs:rw /a:b:d /100%25:r\n"
            "*\t-\t/pub:r\n"
            "carol - /x%3Ay:r\n")
    accounts = users.parse(text)
    assert list(accounts) == ["alice", "*", "carol"]
    alice = accounts["alice"]
    assert alice.rules.perms(("my docs", "f")) == frozenset("rw")
    assert alice.rules.perms(("a:b",)) == frozenset("d")
    assert alice.rules.perms(("100%",)) == frozenset("r")
    assert accounts["*"].anonymous and not accounts["carol"].can_sign_in
    assert accounts["carol"].rules.perms(("x:y",)) == frozenset("r")
    again = users.parse(users.format_file(accounts))
    assert {n: (a.hash, a.rules) for n, a in again.items()} == {n: (a.hash, a.rules) for n, a in accounts.items()}


@pytest.mark.parametrize("text, line, words", [
    ("alice\n", 1, "expected NAME HASH"),
    (f"# x\nalice {HASH}\nalice {HASH}\n", 3, "twice"),
    ("alice secret /:r\n", 1, "not an argon2id hash"),       # a clear password is refused
    (f"* {HASH} /:r\n", 1, "anonymous"),
    (f"alice {HASH} /:rx\n", 1, "unknown permission"),
    (f"al:ice {HASH}\n", 1, "invalid user name"),
    (f"alice {HASH} /%FF:r\n", 1, "UTF-8"),
])
def test_parse_errors_name_the_line(text, line, words):
    with pytest.raises(users.UsersFileError) as exc:
        users.parse(text, "u.txt")
    assert exc.value.line == line
    assert str(exc.value).startswith(f"u.txt:{line}: ") and words in str(exc.value)
    assert "\n" not in str(exc.value)


path_segment = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00"),
                       min_size=1, max_size=8).filter(lambda s: s not in (".", ".."))


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.lists(path_segment, max_size=4).map(tuple),
                       st.sets(st.sampled_from("rwd")).map(frozenset), max_size=6))
def test_any_rules_survive_the_file(rule_map):
    rules = Rules(Rule(p, perms) for p, perms in rule_map.items())
    account = users.Account("bob", HASH, rules)
    back = users.parse(users.format_file({"bob": account}))["bob"]
    assert back.rules == rules


def test_password_hashes_check():
    assert passwords.check(HASH, "secret")
    assert not passwords.check(HASH, "Secret")
    assert not passwords.check("garbage", "secret")


# -- zcopy user (the real command) ------------------------------------------------------------------------

def zcopy(*args, input=None, cwd=None):
    return subprocess.run([sys.executable, "-m", "zcopy", "user", *args], input=input, capture_output=True,
                          text=True, cwd=cwd, timeout=60)


def test_user_add_list_rules_passwd_del(tmp_path):
    f = str(tmp_path / "users.txt")
    r = zcopy("add", f, "alice", "--password-stdin", "--rule", "/:r", "--rule", "/inbox:rw", *FAST,
              input="s3cret pass\n")
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(os.stat(f).st_mode) == 0o600
    text = open(f).read()
    assert "s3cret" not in text and "$argon2id$" in text
    assert passwords.check(users.load(f)["alice"].hash, "s3cret pass")

    assert zcopy("add", f, "*", "--rule", "/pub:r").returncode == 0
    r = zcopy("list", f)
    assert r.returncode == 0 and "argon2" not in r.stdout
    assert "alice\t/:r /inbox:rw" in r.stdout and "*\t/pub:r" in r.stdout

    r = zcopy("add", f, "alice", "--password-stdin", *FAST, input="x\n")
    assert r.returncode == 1 and "exists already" in r.stderr

    assert zcopy("rules", f, "alice", "--rule", "/:rwd", "--rule", "/private:-").returncode == 0
    assert users.load(f)["alice"].rules == R("/:rwd", "/private:-")

    assert zcopy("passwd", f, "alice", "--password-stdin", *FAST, input="new\n").returncode == 0
    assert passwords.check(users.load(f)["alice"].hash, "new")

    assert zcopy("del", f, "alice").returncode == 0
    assert list(users.load(f)) == ["*"]
    r = zcopy("del", f, "alice")
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "no user 'alice'" in r.stderr


@pytest.mark.parametrize("args, words", [
    (["add", "F", "bob", "--rule", "/x:q"], "unknown permission letter"),
    (["add", "F", "bob", "--rule", "x:r"], "must start with '/'"),
    (["add", "F", "bo:b", "--password-stdin"], "invalid user name"),
    (["add", "F", "*", "--password-stdin"], "has no password"),
    (["add", "F", "bob", "--password-stdin", "--time-cost", "0"], "--time-cost"),
    (["add", "F", "bob", "--password-stdin", "--memory-cost", "1"], "--memory-cost"),
    (["frob", "F"], "invalid choice"),
])
def test_user_bad_arguments_are_one_line_exit_2(tmp_path, args, words):
    args = [str(tmp_path / "u.txt") if a == "F" else a for a in args]
    r = zcopy(*args, input="pw\n")
    assert r.returncode == 2, r
    assert words in r.stderr and r.stderr.count("\n") == 1
    assert not (tmp_path / "u.txt").exists()


def test_user_malformed_file_is_one_line_with_its_line_number(tmp_path):
    f = tmp_path / "u.txt"
    f.write_text(f"alice {HASH} /:r\nbob plaintext /:r\n")
    r = zcopy("list", str(f))
    assert r.returncode == 1 and r.stderr == f"zcopy user list: {f}:2: user 'bob': the password field is not an argon2id hash\n"
    r = zcopy("add", str(f), "carol", "--password-stdin", *FAST, input="pw\n")
    assert r.returncode == 1 and ":2:" in r.stderr
    assert f.read_text().count("\n") == 2          # untouched


def test_password_is_asked_twice_without_echo_on_a_terminal(tmp_path):
    """A real pseudo-terminal: the prompts appear, what is typed is not echoed, both must agree."""
    f = str(tmp_path / "u.txt")

    def run(first: bytes, second: bytes) -> tuple[int, bytes]:
        pid, fd = pty.fork()
        if pid == 0:
            os.execv(sys.executable, [sys.executable, "-m", "zcopy", "user", "add", f, "dave", *FAST])
        seen = b""
        try:
            for answer in (first, second):
                while not seen.rstrip().endswith(b":"):
                    r, _, _ = select.select([fd], [], [], 30)
                    assert r, f"no prompt: {seen!r}"
                    seen += os.read(fd, 1024)
                os.write(fd, answer + b"\n")
                seen += b"|"
            while True:
                r, _, _ = select.select([fd], [], [], 30)
                if not r:
                    break
                try:
                    chunk = os.read(fd, 1024)
                except OSError:
                    break
                if not chunk:
                    break
                seen += chunk
        finally:
            _, status = os.waitpid(pid, 0)
            os.close(fd)
        return os.waitstatus_to_exitcode(status), seen

    code, screen = run(b"hunter2", b"hunter3")
    assert code == 1 and b"differ" in screen and b"hunter" not in screen
    assert not os.path.exists(f) or "dave" not in open(f).read()
    code, screen = run(b"hunter2", b"hunter2")
    assert code == 0, screen
    assert b"password for dave:" in screen and b"again:" in screen and b"hunter2" not in screen
    assert passwords.check(users.load(f)["dave"].hash, "hunter2")


def test_concurrent_adds_all_land(tmp_path):
    """Writers replace the file by rename; the lock follows the file, so no add is lost."""
    f = str(tmp_path / "u.txt")
    procs = [subprocess.Popen([sys.executable, "-m", "zcopy", "user", "add", f, f"u{i}", "--rule", "/:r",
                               "--password-stdin", *FAST], stdin=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for i in range(8)]
    for p in procs:
        p.communicate("pw\n", timeout=120)
        assert p.returncode == 0
    assert sorted(users.load(f)) == sorted(f"u{i}" for i in range(8))
    assert sorted(os.listdir(tmp_path)) == ["u.txt"]        # no temp file left


def test_symlinked_users_file_is_refused(tmp_path):
    real = tmp_path / "real.txt"
    real.write_text(users.HEADER)
    (tmp_path / "link.txt").symlink_to(real)
    r = zcopy("add", str(tmp_path / "link.txt"), "*", "--rule", "/:r")
    assert r.returncode == 1 and "symbolic link" in r.stderr
