from zcopy.http.natural import key


def test_natural_order():
    names = ["file_10", "File_2", "file_1", "a01", "a1", "B", "a", "z", "file_2", "10", "9", "é", "E"]
    assert sorted(names, key=key) == ["9", "10", "a", "a1", "a01", "B", "E", "file_1", "File_2",
                                      "file_2", "file_10", "z", "é"]


def test_folders_first_and_total_order():
    entries = [("b", False), ("a", True), ("A", False), ("a", False), ("c", True)]
    assert sorted(entries, key=lambda e: key(*e)) == [("a", True), ("c", True), ("A", False), ("a", False),
                                                      ("b", False)]
