from hypothesis import given, strategies as st

from zcopy.http.natural import key


def test_natural_order():
    names = ["file_10", "File_2", "file_1", "a01", "a1", "B", "a", "z", "file_2", "10", "9", "é", "E"]
    assert sorted(names, key=key) == ["9", "10", "a", "a1", "a01", "B", "E", "file_1", "File_2",
                                      "file_2", "file_10", "z", "é"]


def test_folders_first_and_total_order():
    entries = [("b", False), ("a", True), ("A", False), ("a", False), ("c", True)]
    assert sorted(entries, key=lambda e: key(*e)) == [("a", True), ("c", True), ("A", False), ("a", False),
                                                      ("b", False)]


def _reference(name: str, is_dir: bool = False) -> tuple:
    """The rule written as tuples, the readable form of what ``key`` packs into one string."""
    import re
    parts = []
    for i, piece in enumerate(re.split(r"([0-9]+)", name)):
        if i % 2:
            parts.append((1, int(piece), len(piece), ""))
        elif piece:
            parts.append((2, 0, 0, piece.lower()))
    return (0 if is_dir else 1, parts, name)


_NAMES = st.text(alphabet=st.sampled_from(list("0123456789aAbBzZ_-.éß\x01\x02 ") + ["\U0001f600"]),
                 min_size=1, max_size=12)


@given(st.lists(st.tuples(_NAMES, st.booleans()), max_size=40))
def test_string_key_orders_as_the_tuple_rule(entries):
    assert sorted(entries, key=lambda e: key(*e)) == sorted(entries, key=lambda e: _reference(*e))


@given(_NAMES, _NAMES)
def test_string_key_compares_as_the_tuple_rule(a, b):
    assert (key(a) < key(b)) == (_reference(a) < _reference(b))
    assert (key(a) == key(b)) == (a == b)

