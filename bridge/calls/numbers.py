"""Phone numbers and extensions: normalisation to Novofon's format (digits only, country code
first) and the checks every number and extension passes before it may reach the PBX.

Every entrance (the CLI, Bitrix24 users and click-to-call, the Telegram «Перезвонить» button,
config.yaml) checks with ``check_extension`` / ``check_phone``: ASCII digits only (``str.isdigit``
also accepts '١' or '²'), sensible lengths, the whole value (``re.fullmatch``: ``$`` alone lets
"101\\n" through). Pure functions; nothing here does I/O.
"""

from __future__ import annotations

import re

PHONE_MIN, PHONE_MAX = 3, 15  # E.164: at most 15 digits; short service numbers have 3
EXTENSION_MAX = 10
_TYPED_PHONE = re.compile(r"\+?[0-9 ()-]{3,40}")


class InvalidNumber(ValueError):
    """A phone number or extension we refuse to dial; the message is for people (Russian)."""


def is_ascii_digits(value: str) -> bool:
    """Only 0-9: no Unicode digits, signs, spaces, letters or control characters."""
    return value.isascii() and value.isdigit()


def check_phone(number: str, what: str = "номер") -> str:
    """``number`` itself if it is a dialable phone number (3-15 ASCII digits), else InvalidNumber.

    Normalise first (``normalise``): this check takes digits only, no "+", spaces or SIP URIs.
    """
    if not is_ascii_digits(number) or not PHONE_MIN <= len(number) <= PHONE_MAX:
        raise InvalidNumber(
            f"{what} {_shown(number)} не похож на телефонный номер: "
            f"нужны только цифры 0-9, от {PHONE_MIN} до {PHONE_MAX}, например 79001234567"
        )
    return number


def parse_phone(raw: str, country_code: str = "7", what: str = "номер") -> str:
    """A number typed by a person or sent by an outside system, normalised and checked.

    Only what people write in a phone number is accepted: ASCII digits, spaces, "+", "(", ")"
    and "-". Anything else (CR/LF, letters, "@", "/", "sip:", Unicode digits) is refused, never
    stripped into something dialable.
    """
    if not _TYPED_PHONE.fullmatch(raw.strip(" ")):
        raise InvalidNumber(
            f"{what} {_shown(raw)} не похож на телефонный номер: допустимы цифры 0-9, пробел, "
            "+ ( ) -, например 79001234567"
        )
    return check_phone(normalise(raw, country_code), what)


def check_extension(extension: str, pattern: str | re.Pattern[str], what: str = "внутренний номер") -> str:
    """``extension`` itself if it is ASCII digits (1-10) matching ``asterisk.internal_extensions``
    as a whole, else InvalidNumber."""
    rx = re.compile(pattern) if isinstance(pattern, str) else pattern
    if not is_ascii_digits(extension) or len(extension) > EXTENSION_MAX or rx.fullmatch(extension) is None:
        raise InvalidNumber(
            f"{what} {_shown(extension)} не подходит: нужны только цифры 0-9 "
            f"по шаблону asterisk.internal_extensions ({rx.pattern}), например 101"
        )
    return extension


def _shown(value: str) -> str:
    """The refused value for an error message: quoted, escaped (no raw CR/LF), cut short."""
    return ascii(value[:40]) + ("…" if len(value) > 40 else "")


def normalise(number: str, country_code: str = "7") -> str:
    """8XXXXXXXXXX, +7 (XXX) XXX-XX-XX and XXXXXXXXXX become 7XXXXXXXXXX (for country 7).

    Short internal numbers stay as they are; alphanumeric senders ("OZON.ru", "anonymous") and
    Asterisk's "<unknown>" are kept verbatim (minus the angle brackets) rather than mangled, and
    For input from people and outside systems use ``parse_phone``, which refuses instead.
    """
    raw = number.strip()
    if not raw or raw == "<unknown>":
        return ""
    digits = "".join(ch for ch in raw if ch.isdigit())
    if not digits or any(ch.isalpha() for ch in raw):
        return raw.strip("<>")
    if raw.startswith("00"):
        digits = digits[2:]
    elif country_code == "7" and len(digits) == 11 and digits[0] == "8" and not raw.startswith("+"):
        digits = "7" + digits[1:]
    elif len(digits) == 10 and not raw.startswith("+") and country_code:
        digits = country_code + digits
    return digits


def pretty(number: str) -> str:
    """7XXXXXXXXXX as +7 XXX XXX-XX-XX for people; anything else unchanged."""
    if len(number) == 11 and number.isdigit() and number[0] == "7":
        return f"+7 {number[1:4]} {number[4:7]}-{number[7:9]}-{number[9:]}"
    return number
