"""Phone number normalisation to Novofon's format: digits only, country code first."""

from __future__ import annotations


def normalise(number: str, country_code: str = "7") -> str:
    """8XXXXXXXXXX, +7 (XXX) XXX-XX-XX and XXXXXXXXXX become 7XXXXXXXXXX (for country 7).

    Short internal numbers stay as they are; alphanumeric senders ("OZON.ru", "anonymous") and
    Asterisk's "<unknown>" are kept verbatim (minus the angle brackets) rather than mangled.
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
