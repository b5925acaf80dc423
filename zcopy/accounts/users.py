"""The users file: one account a line, plain text, safe to edit by hand.

Format (docs/accounts.md has it with examples)::

    # comments and blank lines are ignored
    NAME  HASH  [RULE]...

Fields are separated by spaces or tabs.

- NAME: the user name a client sends with HTTP Basic: printable, no whitespace, no ``:`` (Basic
  cannot carry one), not starting with ``#``. ``*`` is reserved for the anonymous account: the rules
  of requests that carry no credentials (its HASH must be ``-``).
- HASH: an argon2id PHC string (``$argon2id$v=19$m=...,t=...,p=...$salt$hash``), or ``-`` for an
  account that cannot sign in (kept, for example, while it is disabled).
- RULE: ``PATH:PERMS`` (see ``zcopy.accounts.rules``). PATH is the decoded URL path, written with
  ``%`` escapes for the characters that would break the line: ``%`` as ``%25``, a space as ``%20``, a
  tab as ``%09``, and any control character as ``%XX``. A ``:`` in PATH needs no escape (the rule is
  split at its last colon) but ``%3A`` is read too. Any other ``%XX`` is decoded as UTF-8.

Writes are atomic (a temp file in the same folder, fsync'ed, renamed over), with mode 0600, under an
flock that is re-taken if another writer replaced the file meanwhile.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
from dataclasses import dataclass, field
from urllib.parse import unquote

from zcopy.accounts import passwords
from zcopy.accounts.rules import Rule, RuleError, Rules, format_perms, parse_rule

ANONYMOUS = "*"
NO_PASSWORD = "-"
HEADER = (
    "# zcopy users file: NAME HASH [PATH:PERMS]...   (docs/accounts.md)\n"
    "# PERMS: r read, w write, d delete/move away, - none; the longest matching PATH wins.\n"
)
_NAME_BAD = re.compile(r"[\s:\x00-\x1f\x7f]")
_ESCAPE = re.compile(r"[%\s\x00-\x1f\x7f]")


class UsersFileError(ValueError):
    """A users file that cannot be read: ``str()`` is one line naming the file and line."""

    def __init__(self, path: str, line: int | None, message: str) -> None:
        where = f"{path}:{line}" if line else path
        super().__init__(f"{where}: {message}")
        self.line = line


def check_name(name: str) -> str:
    if name == ANONYMOUS:
        return name
    if not name or name.startswith("#") or _NAME_BAD.search(name):
        raise ValueError(f"invalid user name {name!r} (printable, no spaces, no ':', not starting with '#')")
    return name


@dataclass
class Account:
    name: str
    hash: str = NO_PASSWORD
    rules: Rules = field(default_factory=Rules)

    @property
    def anonymous(self) -> bool:
        return self.name == ANONYMOUS

    @property
    def can_sign_in(self) -> bool:
        return self.hash != NO_PASSWORD

    def line(self) -> str:
        return " ".join([self.name, self.hash, *(format_rule(r) for r in self.rules)])


def format_rule(rule: Rule) -> str:
    path = _ESCAPE.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode()), rule.text_path)
    return f"{path}:{format_perms(rule.perms)}"


def _read_rule(token: str) -> Rule:
    path, sep, perms = token.rpartition(":")
    if not sep:
        raise RuleError(f"rule {token!r} is not PATH:PERMS")
    try:
        decoded = unquote(path, errors="strict")
    except UnicodeDecodeError:
        raise RuleError(f"rule {token!r}: the %-escapes are not UTF-8") from None
    return parse_rule(f"{decoded}:{perms}")


def parse(text: str, path: str = "users file") -> dict[str, Account]:
    """Accounts by name, in file order. Raises UsersFileError naming the first bad line."""
    accounts: dict[str, Account] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) < 2:
            raise UsersFileError(path, number, "expected NAME HASH [PATH:PERMS]...")
        name, hashed, *rule_tokens = fields
        try:
            check_name(name)
        except ValueError as exc:
            raise UsersFileError(path, number, str(exc)) from None
        if name in accounts:
            raise UsersFileError(path, number, f"user {name!r} appears twice")
        if hashed != NO_PASSWORD:
            if name == ANONYMOUS:
                raise UsersFileError(path, number, "the anonymous account '*' has no password: write '-'")
            if not passwords.well_formed(hashed):
                raise UsersFileError(path, number, f"user {name!r}: the password field is not an argon2id hash")
        try:
            rules = Rules(_read_rule(t) for t in rule_tokens)
        except RuleError as exc:
            raise UsersFileError(path, number, f"user {name!r}: {exc}") from None
        accounts[name] = Account(name, hashed, rules)
    return accounts


def format_file(accounts: dict[str, Account]) -> str:
    return HEADER + "".join(a.line() + "\n" for a in accounts.values())


def load(path: str) -> dict[str, Account]:
    """Read and parse the users file at ``path``; any failure is a UsersFileError (one line)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise UsersFileError(path, None, exc.strerror or str(exc)) from None
    except UnicodeDecodeError:
        raise UsersFileError(path, None, "not UTF-8 text") from None
    return parse(text, path)


def edit(path: str, change, *, create: bool = False) -> dict[str, Account]:
    """Read-modify-write the users file under an exclusive lock: ``change(accounts)`` edits the dict
    in place (raising to abort); the result is written atomically with mode 0600 and returned.

    The lock is taken on the file itself; since a writer replaces the file by rename, a lock won on
    a name that was replaced meanwhile is dropped and taken again on the new file.
    """
    folder = os.path.dirname(os.path.abspath(path))
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW | (os.O_CREAT if create else 0), 0o600)
        except FileNotFoundError:
            raise UsersFileError(path, None, "no such file (create it with 'zcopy user add')") from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UsersFileError(path, None, "is a symbolic link; name the file itself") from None
            raise UsersFileError(path, None, exc.strerror or str(exc)) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = os.stat(path, follow_symlinks=False)
            except FileNotFoundError:
                same = None
            mine = os.fstat(fd)
            if same is None or (same.st_dev, same.st_ino) != (mine.st_dev, mine.st_ino):
                continue            # replaced while we waited: lock the new one
            with open(fd, encoding="utf-8", closefd=False) as f:
                text = f.read()
            accounts = parse(text, path)
            change(accounts)
            _write(folder, path, format_file(accounts))
            return accounts
        finally:
            os.close(fd)


def _write(folder: str, path: str, text: str) -> None:
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)            # whatever the umask
        os.write(fd, text.encode("utf-8"))
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
