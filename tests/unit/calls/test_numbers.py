import pytest

from bridge.calls.numbers import normalise, pretty


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("89581114585", "79581114585"),
        ("+7 (958) 111-45-85", "79581114585"),
        ("8 958 111 45 85", "79581114585"),
        ("9581114585", "79581114585"),
        ("79581114585", "79581114585"),
        ("0079581114585", "79581114585"),
        ("+380441234567", "380441234567"),
        ("101", "101"),
        ("OZON.ru", "OZON.ru"),
        ("<unknown>", ""),
        ("anonymous", "anonymous"),
        ("", ""),
    ],
)
def test_normalise(raw: str, expected: str) -> None:
    assert normalise(raw) == expected


def test_pretty() -> None:
    assert pretty("79581114585") == "+7 958 111-45-85"
    assert pretty("101") == "101"
