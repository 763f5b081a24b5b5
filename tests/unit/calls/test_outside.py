"""The outbound caller ID and the forwarded-to number, as the tracker and the CDR backfill decide."""

from __future__ import annotations

import re

import pytest

from bridge.calls.outside import dial_target, dialled_number, outbound_caller_id

INTERNAL = re.compile(r"^[1-9][0-9]{1,3}$")


@pytest.mark.parametrize(
    ("presented", "default_did", "expected"),
    [
        ("74950000100", "", "74950000100"),  # NOVOFON_CALLERID as the dialplan set it
        ("+7 (495) 000-01-00", "", "74950000100"),
        ("84950000100", "74951111111", "74950000100"),  # the trunk's own wins over the fallback
        ("101", "84951111111", "74951111111"),  # NOVOFON_CALLERID empty: the extension is presented
        ("101", "", ""),  # ... and nothing to fall back on: empty, never the extension
        ("<unknown>", "74951111111", "74951111111"),
        ("Employee", "74951111111", "74951111111"),
        ("79001110001", "74951111111", "74951111111"),  # the client's own number (a callback's CLI)
    ],
)
def test_outbound_caller_id(presented: str, default_did: str, expected: str) -> None:
    assert outbound_caller_id(presented, "79001110001", default_did, INTERNAL, "7") == expected


@pytest.mark.parametrize(
    ("dial_string", "caller_num", "expected"),
    [
        ("79004440004@novofon", "79004440004", "79004440004"),
        ("89004440004@novofon", "", "79004440004"),
        ("novofon/sip:79004440004@sip.novofon.ru", "79004440004", "79004440004"),
        ("novofon/sip:89004440004@sip.novofon.ru", "", "79004440004"),  # the URI's number, not the caller's
        ("", "+7 900 444-00-04", "79004440004"),
        ("", "<unknown>", ""),
    ],
)
def test_dialled_number(dial_string: str, caller_num: str, expected: str) -> None:
    assert dialled_number(dial_string, caller_num, "7") == expected


@pytest.mark.parametrize(
    ("dial_string", "expected"),
    [
        ("79004440004@novofon", "79004440004"),  # PJSIP/number@endpoint (a FreePBX custom trunk)
        ("novofon/sip:89004440004@sip.novofon.ru", "89004440004"),  # PJSIP/endpoint/URI
        ("novofon/sip:+79004440004@10.0.0.1:5060;transport=udp", "+79004440004"),
        ("novofon/SIPS:79004440004@sip.novofon.ru", "79004440004"),
        ("novofon/tel:+79004440004", "+79004440004"),
        ("101/sip:101@127.0.0.1:5060;ob", "101"),  # PJSIP_DIAL_CONTACTS of a phone
        ("novofon", ""),  # a bare endpoint: the number is elsewhere (the channel's extension)
        ("", ""),
    ],
)
def test_dial_target(dial_string: str, expected: str) -> None:
    assert dial_target(dial_string) == expected
