"""The WebDAV If header (RFC 4918 10.4), parsed.

::

    If = ( 1*No-tag-list ) | ( 1*Tagged-list )
    No-tag-list = List
    Tagged-list = Resource-Tag 1*List
    List = "(" 1*Condition ")"
    Condition = ["Not"] (State-token | "[" entity-tag "]")
    State-token = Coded-URL  (  "<" absolute-URI ">"  )

A header is a list of ``Clause`` (the resource it is about, ``None`` for the request's own resource,
and its alternative condition lists: the header holds when, for each resource tagged, any one of its
lists holds entirely). Evaluation needs the resource's current lock tokens and ETag, so it is the
lock manager's job; this module only reads the syntax. A header that does not parse is an
``IfHeaderError`` (400).
"""

from __future__ import annotations

from dataclasses import dataclass


class IfHeaderError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Condition:
    negated: bool
    token: str | None = None      # a state token (lock token URI), or
    etag: str | None = None       # an entity tag, with its quotes (and W/ if weak)


@dataclass(frozen=True, slots=True)
class Clause:
    resource: str | None          # the tagged resource's URL, or None for the request URL
    lists: tuple[tuple[Condition, ...], ...]


def parse(value: str) -> list[Clause]:
    s = value
    i, n = 0, len(s)
    clauses: list[Clause] = []
    tagged: bool | None = None

    def skip(j: int) -> int:
        while j < n and s[j] in " \t":
            j += 1
        return j

    def upto(j: int, end: str) -> tuple[str, int]:
        k = s.find(end, j)
        if k < 0:
            raise IfHeaderError(f"unterminated {end!r} in If header")
        return s[j:k], k + 1

    i = skip(i)
    if i >= n:
        raise IfHeaderError("empty If header")
    while i < n:
        resource = None
        if s[i] == "<":
            if tagged is False:
                raise IfHeaderError("If header mixes tagged and untagged lists")
            tagged = True
            resource, i = upto(i + 1, ">")
            i = skip(i)
        else:
            if tagged is True:
                raise IfHeaderError("If header mixes tagged and untagged lists")
            tagged = False
        lists = []
        while i < n and s[i] == "(":
            i = skip(i + 1)
            conds = []
            while i < n and s[i] != ")":
                negated = False
                if s.startswith("Not", i) and (i + 3 < n) and s[i + 3] in " \t<[":
                    negated = True
                    i = skip(i + 3)
                if i < n and s[i] == "<":
                    token, i = upto(i + 1, ">")
                    if not token or " " in token:
                        raise IfHeaderError("bad state token in If header")
                    conds.append(Condition(negated, token=token))
                elif i < n and s[i] == "[":
                    etag, i = upto(i + 1, "]")
                    etag = etag.strip()
                    if not (etag.endswith('"') and (etag.startswith('"') or etag.startswith('W/"'))) or len(etag) < 2:
                        raise IfHeaderError("bad entity tag in If header")
                    conds.append(Condition(negated, etag=etag))
                else:
                    raise IfHeaderError("expected a state token or an entity tag in If header")
                i = skip(i)
            if i >= n:
                raise IfHeaderError("unterminated list in If header")
            if not conds:
                raise IfHeaderError("empty list in If header")
            lists.append(tuple(conds))
            i = skip(i + 1)
        if not lists:
            raise IfHeaderError("If header has a resource without a list")
        clauses.append(Clause(resource, tuple(lists)))
        i = skip(i)
    return clauses


def tokens(clauses: list[Clause]) -> set[str]:
    """Every state token the header names (whatever its list): the tokens the client submits."""
    return {c.token for cl in clauses for lst in cl.lists for c in lst if c.token and not c.negated}
