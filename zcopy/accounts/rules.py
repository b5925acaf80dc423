"""Access rules: which permission letters an account has at a path, and which a method needs.

A rule is ``PATH:PERMS``. PATH is a decoded URL path (``/inbox``); it covers itself and everything
beneath it, matched on whole segments, so ``/inbox`` covers ``/inbox`` and ``/inbox/a`` but not
``/inbox2``. Of the rules that cover a path, the one with the longest PATH (the most segments) wins,
so a narrower rule can both widen and narrow what a wider one gives (``/:r`` with ``/private:-``).
No covering rule means no access.

PERMS is a set of letters, or ``-`` for none:

- ``r``: read: GET, HEAD, listings, PROPFIND;
- ``w``: write: create a file or folder (PUT of a new name, MKCOL), change properties, take locks;
- ``d``: delete, and move away (DELETE, the source of MOVE).

Replacing an existing file needs ``w`` and ``d``, so an account without ``d`` cannot destroy content
by overwriting it; MOVE needs ``d`` on the source and ``w`` on the destination (and ``d`` there too
when it replaces something); COPY needs ``r`` on the source and ``w`` on the destination (and ``d``
when it replaces something). ``required`` says it for every method, in one table.
"""

from __future__ import annotations

from dataclasses import dataclass

LETTERS = "rwd"
NONE = frozenset()


class RuleError(ValueError):
    """A rule that cannot be read; its message says why, in words."""


def segments(path: str) -> tuple[str, ...]:
    """The whole segments of a decoded path: ``/a//b/`` -> ``("a", "b")``.

    ``.`` and ``..`` are refused, not resolved: a rule or a request path that names one is a mistake
    (request paths reach the rules already normalised by the server).
    """
    parts = tuple(s for s in path.split("/") if s)
    for s in parts:
        if s in (".", ".."):
            raise RuleError(f"path {path!r} has a {s!r} segment")
        if "\x00" in s:
            raise RuleError(f"path {path!r} has a NUL character")
    return parts


def parse_perms(text: str) -> frozenset:
    """``"rw"`` -> {"r", "w"}; ``"-"`` -> none. Unknown or repeated letters are an error."""
    if text == "-":
        return NONE
    if not text:
        raise RuleError("empty permissions (write '-' for none)")
    bad = [c for c in text if c not in LETTERS]
    if bad:
        raise RuleError(f"unknown permission letter {bad[0]!r} in {text!r} (letters: r w d, or - for none)")
    if len(set(text)) != len(text):
        raise RuleError(f"repeated permission letter in {text!r}")
    return frozenset(text)


def format_perms(perms: frozenset) -> str:
    return "".join(c for c in LETTERS if c in perms) or "-"


@dataclass(frozen=True, slots=True)
class Rule:
    path: tuple[str, ...]      # segments
    perms: frozenset

    @property
    def text_path(self) -> str:
        return "/" + "/".join(self.path)

    def __str__(self) -> str:
        return f"{self.text_path}:{format_perms(self.perms)}"


def parse_rule(text: str) -> Rule:
    """``PATH:PERMS``, split at the last colon (PERMS has none, so PATH may hold colons)."""
    path, sep, perms = text.rpartition(":")
    if not sep:
        raise RuleError(f"rule {text!r} is not PATH:PERMS")
    if not path.startswith("/"):
        raise RuleError(f"rule {text!r}: PATH must start with '/'")
    return Rule(segments(path), parse_perms(perms))


class Rules:
    """An account's rules, ready to answer ``perms(path)`` in one pass over them.

    Rules are kept longest first, so the first that covers a path is the one that wins. Two rules for
    the same PATH are an error (which one meant what?).
    """

    __slots__ = ("_rules",)

    def __init__(self, rules=()) -> None:
        seen = {}
        for rule in rules:
            if rule.path in seen:
                raise RuleError(f"two rules for {rule.text_path}: {seen[rule.path]} and {rule}")
            seen[rule.path] = rule
        self._rules = tuple(sorted(seen.values(), key=lambda r: -len(r.path)))

    def __iter__(self):
        return iter(sorted(self._rules, key=lambda r: r.path))

    def __len__(self) -> int:
        return len(self._rules)

    def __eq__(self, other) -> bool:
        return isinstance(other, Rules) and set(self._rules) == set(other._rules)

    def perms(self, path: tuple[str, ...]) -> frozenset:
        """The letters at ``path`` (segments): the longest covering rule's, or none."""
        for rule in self._rules:
            n = len(rule.path)
            if path[:n] == rule.path:
                return rule.perms
        return NONE

    def allows(self, path: tuple[str, ...], letters: str) -> bool:
        have = self.perms(path)
        return all(c in have for c in letters)

    def may_see(self, path: tuple[str, ...]) -> bool:
        """Whether a listing of the folder above ``path`` may show it: readable there, or some rule
        beneath it gives read (a folder that leads to a readable subtree is shown, its other entries
        are not)."""
        if "r" in self.perms(path):
            return True
        n = len(path)
        return any(len(r.path) > n and r.path[:n] == path and "r" in r.perms for r in self._rules)


#: What each method needs, as (letters on the request path, letters when the path exists already).
#: MOVE and COPY add what their Destination needs (``destination_needs``).
_NEEDS = {
    "GET": ("r", "r"),
    "HEAD": ("r", "r"),
    "PROPFIND": ("r", "r"),
    "OPTIONS": ("", ""),
    "PUT": ("w", "wd"),
    "PATCH": ("w", "w"),          # appending to an upload this account created
    "POST": ("w", "w"),           # creating an upload resource in a folder
    "MKCOL": ("w", "w"),          # on an existing path MKCOL fails (405) whatever the rights
    "PROPPATCH": ("w", "w"),
    "LOCK": ("w", "w"),
    "UNLOCK": ("w", "w"),
    "DELETE": ("d", "d"),
    "MOVE": ("d", "d"),           # on the source
    "COPY": ("r", "r"),           # on the source
}


def required(method: str, exists: bool) -> str | None:
    """The letters ``method`` needs on its request path; None for a method no rule covers
    (it is refused before rights matter)."""
    needs = _NEEDS.get(method)
    if needs is None:
        return None
    return needs[1] if exists else needs[0]


def destination_needs(method: str, dest_exists: bool) -> str:
    """What MOVE and COPY need on their Destination: ``w``, and ``d`` when they replace something."""
    assert method in ("MOVE", "COPY")
    return "wd" if dest_exists else "w"


def table() -> list[tuple[str, str, str]]:
    """(method, letters for a new path, letters for an existing one): for docs and tests."""
    return [(m, a or "-", b or "-") for m, (a, b) in _NEEDS.items()]
