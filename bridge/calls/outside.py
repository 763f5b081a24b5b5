"""Numbers outside the office on a call: the caller ID an outbound call presents, and the number an
inbound call was forwarded to (follow-me to a mobile). Pure; shared by the tracker and the CDR
backfill so that both decide the same way."""

from __future__ import annotations

import re

from bridge.calls.numbers import is_ascii_digits, normalise


def outbound_caller_id(
    presented: str, destination: str, default_did: str, internal: re.Pattern[str], country_code: str
) -> str:
    """The number the called party of an outbound call sees, never an extension.

    ``presented`` is what the trunk leg presents (its connected line: the dialplan's CALLERID(num)
    before Dial; in the CDR the caller's ``src``). When that is no phone number (NOVOFON_CALLERID
    left empty: the leg presents the extension, and Novofon puts the account's number on the call)
    it is ``pbx.default_did``, else empty.
    """
    number = normalise(presented, country_code)
    if is_ascii_digits(number) and not internal.match(number) and number != destination:
        return number
    return normalise(default_did, country_code)


def dial_target(dial_string: str) -> str:
    """The number a Dial string (DialBegin's DialString: what follows ``PJSIP/``) asks the trunk for,
    as written: ``79004440004@novofon`` (number@endpoint, the lab's and FreePBX's custom trunk),
    ``novofon/sip:+79004440004@sip.novofon.ru:5060;transport=udp`` (endpoint/URI, as hand-written
    dialplans and PJSIP_DIAL_CONTACTS write it); "" for a bare endpoint (``novofon``)."""
    endpoint, slash, uri = dial_string.partition("/")
    if slash:
        scheme, colon, rest = uri.partition(":")
        user = rest if colon and scheme.lower() in ("sip", "sips", "tel") else uri
        return user.partition("@")[0].partition(";")[0]
    return endpoint.partition("@")[0] if "@" in endpoint else ""


def dialled_number(dial_string: str, caller_num: str, country_code: str) -> str:
    """The outside number a trunk leg dials: from its Dial string (``dial_target``), else its
    caller number (an outgoing channel's CallerIDNum is the number dialled); "" when neither is one."""
    for raw in (dial_target(dial_string), caller_num):
        number = normalise(raw, country_code)
        if is_ascii_digits(number):
            return number
    return ""
