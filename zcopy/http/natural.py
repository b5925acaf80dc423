"""The one sort order of listings, written once here and once in the page's script (zcopy/ui), the
same rule in both so a first load and a click agree:

1. folders before files;
2. names compared piece by piece, a piece being a run of ASCII digits or a run of anything else;
   digit runs compare as numbers (``file_2`` before ``file_10``; at equal value the shorter run, so
   ``a01`` after ``a1``) and before any other run; other runs compare lower-cased by code point
   (Python's ``str.lower`` and JavaScript's ``toLowerCase`` both apply Unicode's default lower-case
   mapping, so they agree; ``casefold`` would not: it turns ``ß`` into ``ss``), but each with the
   Unicode version it was built with (Python 3.11: 14.0; a browser of 2026: 17), so for a name not
   ASCII the page is given the server's lower-cased text (``fold``) and never lower-cases it itself.
   No locale: ``é`` sorts after ``z``, the same on every machine;
3. ties (names equal under 2) by code points, so the order is total and stable.
"""

from __future__ import annotations

import re

_PIECES = re.compile(r"([0-9]+)")    # ASCII digits only, as in the page's script (\d is wider)


def key(name: str, is_dir: bool = False) -> str:
    """The rule above as one string, compared by code points: sorting by it takes one C string
    comparison per step. (A key of nested tuples made the sort of a 50,000-entry folder hold
    the GIL for most of a second in one C call, stalling the loop.)

    ``"0"`` for a folder or ``"1"`` for a file, then each piece, then ``"\\0"`` and the name:
    a digit run is ``"\\1"``, the length of its value's digits (leading zeros dropped) as one
    character, those digits, and the run's own length as one character (value first, then the
    shorter run); any other run is ``"\\2"``, its lower-cased text and ``"\\0"`` (a name never holds
    NUL, so a shorter piece sorts first, as in a tuple). The markers make a digit run sort before
    other text, and the ``"\\0"`` after the pieces makes fewer pieces sort first."""
    out = ["0" if is_dir else "1"]
    for i, piece in enumerate(_PIECES.split(name)):
        if i % 2:                                   # a digit run
            value = piece.lstrip("0")
            out.append(f"\1{chr(len(value))}{value}{chr(len(piece))}")
        elif piece:
            out.append(f"\2{piece.lower()}\0")
    out.append("\0")
    out.append(name)
    return "".join(out)


def fold(name: str) -> str:
    """``name`` as the rule compares it: its runs that are not ASCII digits lower-cased (this
    Python's Unicode), its digit runs as they are. The folder page gives it to its script for
    every name not ASCII (``data-fold``, the JSON listing's ``fold``)."""
    return "".join(piece if i % 2 else piece.lower() for i, piece in enumerate(_PIECES.split(name)))
