"""Manage the accounts of a users file (for 'zcopy serve --users FILE').

The users file holds one account a line: its name, an argon2id hash of its password, and its rules
(PATH:PERMS, with PERMS letters r read, w write, d delete/move away, or - for none; the longest
matching PATH wins; no matching rule means no access). The name '*' is the anonymous account: the
rules for requests without credentials. The format is in docs/accounts.md.

examples:
  zcopy user add users.txt alice --rule /:r --rule /inbox:rw      (asks the password twice)
  printf '%s\\n' "$PW" | zcopy user add users.txt bob --password-stdin --rule /drop:w
  zcopy user add users.txt '*' --rule /pub:r                      (anonymous: read /pub)
  zcopy user rules users.txt alice --rule /:r --rule /private:-
  zcopy user passwd users.txt alice
  zcopy user list users.txt
  zcopy user del users.txt bob
"""

from __future__ import annotations

HELP = "manage the accounts of a users file (serve --users)"


def configure(p) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    def common(q, *, rules: bool = False, password: bool = False):
        q.add_argument("file", metavar="FILE", help="the users file")
        q.add_argument("name", metavar="NAME", help="user name ('*' is the anonymous account)")
        if rules:
            q.add_argument("--rule", action="append", default=[], metavar="PATH:PERMS",
                           help="a rule, e.g. /inbox:rw (repeatable; PERMS from r w d, or -)")
        if password:
            q.add_argument("--password-stdin", action="store_true",
                           help="read the password from the first line of standard input")
            q.add_argument("--time-cost", type=int, default=None, metavar="N",
                           help="argon2id passes (default 3)")
            q.add_argument("--memory-cost", type=int, default=None, metavar="KIB",
                           help="argon2id memory in KiB (default 65536)")
        return q

    common(sub.add_parser("add", help="add an account (the file is created if missing)",
                          description="Add an account; asks its password twice without echo."),
           rules=True, password=True)
    common(sub.add_parser("passwd", help="set an account's password"), password=True)
    common(sub.add_parser("rules", help="replace an account's rules"), rules=True)
    common(sub.add_parser("del", help="remove an account"))
    q = sub.add_parser("list", help="list accounts and their rules (never the hashes)")
    q.add_argument("file", metavar="FILE", help="the users file")


def run(args) -> int:
    import sys

    from zcopy.accounts.rules import RuleError
    from zcopy.accounts.users import UsersFileError

    try:
        return _ACTIONS[args.action](args)
    except _Usage as exc:
        sys.stderr.write(f"zcopy user {args.action}: error: {exc} (see 'zcopy user {args.action} --help')\n")
        return 2
    except (UsersFileError, RuleError, _Refused) as exc:
        sys.stderr.write(f"zcopy user {args.action}: {exc}\n")
        return 1


class _Usage(Exception):
    """A bad argument: exit 2."""


class _Refused(Exception):
    """The file is fine but the change cannot be made (no such user, already there): exit 1."""


def _rules(texts):
    from zcopy.accounts.rules import RuleError, Rules, parse_rule

    try:
        return Rules(parse_rule(t) for t in texts)
    except RuleError as exc:
        raise _Usage(str(exc)) from None


def _name(text: str) -> str:
    from zcopy.accounts.users import check_name

    try:
        return check_name(text)
    except ValueError as exc:
        raise _Usage(str(exc)) from None


def _password(args) -> str:
    """The new password: stdin's first line, or asked twice without echo."""
    import getpass
    import sys

    if args.password_stdin:
        line = sys.stdin.readline()
        password = line[:-1] if line.endswith("\n") else line
        if password.endswith("\r"):
            password = password[:-1]
    else:
        if not sys.stdin.isatty():
            raise _Usage("no terminal to ask the password on: use --password-stdin")
        password = getpass.getpass(f"password for {args.name}: ")
        if getpass.getpass("again: ") != password:
            raise _Refused("the two passwords differ; nothing changed")
    if not password:
        raise _Refused("empty password; nothing changed")
    return password


def _hash(args) -> str:
    from zcopy.accounts import passwords

    time_cost = passwords.DEFAULT_TIME if args.time_cost is None else args.time_cost
    memory = passwords.DEFAULT_MEMORY_KIB if args.memory_cost is None else args.memory_cost
    try:
        # Check the cost before asking for a password that could not be used.
        if not passwords.MIN_TIME <= time_cost <= passwords.MAX_TIME:
            raise ValueError(f"--time-cost must be {passwords.MIN_TIME}-{passwords.MAX_TIME}")
        if not passwords.MIN_MEMORY_KIB <= memory <= passwords.MAX_MEMORY_KIB:
            raise ValueError(f"--memory-cost must be {passwords.MIN_MEMORY_KIB}-{passwords.MAX_MEMORY_KIB} KiB")
    except ValueError as exc:
        raise _Usage(str(exc)) from None
    return passwords.make(_password(args), time_cost=time_cost, memory_kib=memory)


def _add(args) -> int:
    import sys

    from zcopy.accounts.users import ANONYMOUS, NO_PASSWORD, Account, edit

    name = _name(args.name)
    rules = _rules(args.rule)
    if name == ANONYMOUS:
        if args.password_stdin:
            raise _Usage("the anonymous account '*' has no password")
        hashed = NO_PASSWORD
    else:
        hashed = _hash(args)

    def change(accounts):
        if name in accounts:
            raise _Refused(f"user {name!r} exists already (use 'zcopy user passwd' or 'zcopy user rules')")
        accounts[name] = Account(name, hashed, rules)

    edit(args.file, change, create=True)
    sys.stderr.write(f"added {name}" + (f" with {len(rules)} rule(s)" if len(rules) else " (no rules yet: no access)") + "\n")
    return 0


def _passwd(args) -> int:
    from zcopy.accounts.users import ANONYMOUS

    name = _name(args.name)
    if name == ANONYMOUS:
        raise _Usage("the anonymous account '*' has no password")
    _exists(args.file, name)
    hashed = _hash(args)
    return _change(args.file, name, lambda accounts: setattr(accounts[name], "hash", hashed),
                   f"password of {name} changed")


def _set_rules(args) -> int:
    name = _name(args.name)
    rules = _rules(args.rule)
    return _change(args.file, name, lambda accounts: setattr(accounts[name], "rules", rules),
                   f"rules of {name}: {' '.join(map(str, rules)) or '(none: no access)'}")


def _del(args) -> int:
    name = _name(args.name)
    return _change(args.file, name, lambda accounts: accounts.pop(name), f"removed {name}")


def _change(path: str, name: str, mutate, done: str) -> int:
    """Edit an existing account of the users file (``mutate(accounts)``), then say ``done``."""
    import sys

    from zcopy.accounts.users import edit

    def change(accounts):
        if name not in accounts:
            raise _Refused(f"no user {name!r} in {path}")
        mutate(accounts)

    edit(path, change)
    sys.stderr.write(done + "\n")
    return 0


def _list(args) -> int:
    from zcopy.accounts.users import load

    for account in load(args.file).values():
        state = "" if account.can_sign_in or account.anonymous else "  (cannot sign in)"
        rules = " ".join(map(str, account.rules)) or "(no rules: no access)"
        print(f"{account.name}\t{rules}{state}")
    return 0


def _exists(path: str, name: str) -> None:
    """Fail before asking a password for a user that is not there."""
    from zcopy.accounts.users import load

    if name not in load(path):
        raise _Refused(f"no user {name!r} in {path}")


_ACTIONS = {"add": _add, "passwd": _passwd, "rules": _set_rules, "del": _del, "list": _list}
