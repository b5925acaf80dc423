"""The one sort order of listings, written once here and once in the page's script (zcopy/ui), the
same rule in both so a first load and a click agree:

1. folders before files;
2. names compared piece by piece, a piece being a run of ASCII digits or a run of anything else;
   digit runs compare as numbers (``file_2`` before ``file_10``; at equal value the shorter run, so
   ``a01`` after ``a1``) and before any other run; other runs compare lower-cased by code point
   (Python's ``str.lower`` and JavaScript's ``toLowerCase`` both apply Unicode's default lower-case
   mapping, so they agree; ``casefold`` would not: it turns ``ß`` into ``ss``). No locale: ``é``
   sorts after ``z``, the same on every machine;
3. ties (names equal under 2) by code points, so the order is total and stable.
"""

from __future__ import annotations

import re

_PIECES = re.compile(r"([0-9]+)")    # ASCII digits only, as in the page's script (\d is wider)


def key(name: str, is_dir: bool = False) -> tuple:
    parts = []
    for i, piece in enumerate(_PIECES.split(name)):
        if i % 2:                                   # a digit run
            parts.append((1, int(piece), len(piece), ""))
        elif piece:
            parts.append((2, 0, 0, piece.lower()))
    return (0 if is_dir else 1, parts, name)
