import pytest
from hypothesis import given, strategies as st

from zcopy.units import format_size, parse_size


@pytest.mark.parametrize("text,expected", [
    ("0", 0), ("4096", 4096), ("64KiB", 65536), ("64k", 64000), ("1GiB", 1 << 30),
    ("1.5MiB", 1572864), (" 2 MB ", 2_000_000), ("1mib", 1 << 20),
])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "abc", "1XB", "-1", "1.3", "1e3"])
def test_parse_size_rejects(text):
    with pytest.raises(ValueError):
        parse_size(text)


@given(st.integers(min_value=0, max_value=1 << 50))
def test_parse_plain_integers_roundtrip(n):
    assert parse_size(str(n)) == n


def test_format_size():
    assert format_size(0) == "0 B"
    assert format_size(1536) == "1.5 KiB"
    assert format_size(1 << 30) == "1.0 GiB"
