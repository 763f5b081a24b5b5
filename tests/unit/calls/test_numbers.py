import pytest

from bridge.calls.numbers import InvalidNumber, check_extension, check_phone, normalise, parse_phone, pretty


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


# -- what may reach the PBX -------------------------------------------------------------------

DEFAULT_EXTENSIONS = r"^[1-9][0-9]{1,3}$"  # asterisk.internal_extensions' default


@pytest.mark.parametrize("ext", ["101", "1999", "20"])
def test_extensions_accepted(ext: str) -> None:
    assert check_extension(ext, DEFAULT_EXTENSIONS) == ext


@pytest.mark.parametrize(
    "ext",
    [
        "101\n",  # re.match with "$" accepts it: the whole value must match
        "101\r\nAction: Originate",
        "١٠١",  # Arabic-Indic digits: "١٠١".isdigit() is True
        "１０１",  # fullwidth
        "10²",
        "101 ",
        "101@evil.example",
        "sip:101@evil.example",
        "1",
        "12345",
        "",
    ],
)
def test_extensions_refused(ext: str) -> None:
    with pytest.raises(InvalidNumber) as err:
        check_extension(ext, DEFAULT_EXTENSIONS)
    assert "\n" not in str(err.value) and "\r" not in str(err.value)  # the value is shown escaped


def test_an_admin_pattern_with_backslash_d_still_takes_ascii_only() -> None:
    assert check_extension("10101", r"\d{5}") == "10101"
    with pytest.raises(InvalidNumber):
        check_extension("١٠١٠١", r"\d{5}")
    with pytest.raises(InvalidNumber):
        check_extension("1" * 11, r"\d+")  # too long for an extension whatever the pattern


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("8 (900) 123-45-67", "79001234567"),
        ("+7 900 123 45 67", "79001234567"),
        ("+7 (900) 123-45-67", "79001234567"),
        ("89001234567", "79001234567"),
        ("+79001234567", "79001234567"),
        ("112", "112"),
    ],
)
def test_typed_phone_numbers_are_normalised(raw: str, expected: str) -> None:
    assert parse_phone(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "79001234567\r\nAction: Originate",
        "7900\r\n1234567",  # not "fixed" into a dialable number: refused whole
        "79001234567\n",
        "sip:79001234567@evil.example",
        "79001234567@1.2.3.4",
        "Local/79001234567@outgoing",
        "٧٩٠٠١٢٣٤٥٦٧",
        "7900123456７",
        "7" * 16,
        "12",
        "",
    ],
)
def test_hostile_or_wrong_phone_numbers_are_refused(raw: str) -> None:
    with pytest.raises(InvalidNumber):
        parse_phone(raw)


def test_check_phone_takes_digits_only() -> None:
    assert check_phone("79001234567") == "79001234567"
    for bad in ("+79001234567", "7900 123", "٧٩٠٠", "7" * 16):
        with pytest.raises(InvalidNumber):
            check_phone(bad)
