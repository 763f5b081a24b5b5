"""Transfers and call pickups on real calls, as handsets do them: the transfers by SIP REFER from
the phone (blind; attended with Replaces after a consultation call), the pickups by the feature
codes. Each test asserts the exact records the daemon produced; only the lab's DIDs, extensions
and feature codes are used, so the tests hold on every lab profile."""

from __future__ import annotations

import pytest

from bridge.app import App
from bridge.calls.records import CallRecord
from bridge.pbx.ami import AmiConnection
from tests.helpers import MemorySink
from tests.integration.test_calls import CALLER_NORM, shape
from tests.lab import lab as L
from tests.lab.calls import attended_transfer, blind_transfer, call_in, call_out, consult, handset_105_call

pytestmark = [pytest.mark.lab, pytest.mark.profiles(*L.PROFILES)]

TALK = 8  # seconds the caller talks from the first answer: the transfer completes well within
# The picking phone's talk: its own answer comes ~0.5 s before the pickup's (Asterisk's ast_answer
# waits up to 500 ms for the phone's media before Pickup() swaps it in), so 2.4 s on the handset is
# 1.5-2.4 s from the pickup's ANSWER: a duration of 2 s, away from a rounding boundary.
PICKUP_TALK = 2.4


def end(records: list[CallRecord], did: str, duration: int) -> dict[str, str]:
    rec = records[-1].fields["call_id_with_rec"]
    assert rec
    return {
        "event": "NOTIFY_END",
        "caller_id": CALLER_NORM,
        "called_did": did,
        "internal": "101",
        "duration": str(duration),
        "disposition": "answered",
        "status_code": "16",
        "is_recorded": "1",
        "call_id_with_rec": rec,
    }


def transferred(records: list[CallRecord]) -> list[dict[str, str]]:
    """105 answered, 101 took the call over and had it when the caller hung up."""
    call = {"caller_id": CALLER_NORM, "called_did": L.DID_TRANSFER}
    return [
        {"event": "NOTIFY_START", **call},
        {"event": "NOTIFY_INTERNAL", **call, "internal": "105"},
        {"event": "NOTIFY_ANSWER", "caller_id": CALLER_NORM, "destination": "105", "internal": "105"},
        {"event": "NOTIFY_INTERNAL", **call, "internal": "101"},
        {"event": "NOTIFY_ANSWER", "caller_id": CALLER_NORM, "destination": "101", "internal": "101"},
        end(records, L.DID_TRANSFER, TALK),
        {"event": "NOTIFY_RECORD", "call_id_with_rec": records[-1].fields["call_id_with_rec"]},
    ]


async def test_blind_transfer_after_an_answer(
    daemon: tuple[App, MemorySink], provider: AmiConnection, phones: AmiConnection
) -> None:
    _, sink = daemon
    await call_in(provider, L.DID_TRANSFER, talk=TALK)
    await blind_transfer(phones, await handset_105_call(phones), "101")
    records = await sink.wait_events("NOTIFY_END", "NOTIFY_RECORD", timeout=TALK + 20)
    assert shape(records, "in_") == transferred(records)


async def test_attended_transfer_after_an_answer(
    daemon: tuple[App, MemorySink], provider: AmiConnection, phones: AmiConnection
) -> None:
    """The consultation call 105 -> 101 is internal: no record of its own, no second END."""
    _, sink = daemon
    await call_in(provider, L.DID_TRANSFER, talk=TALK)
    first = await handset_105_call(phones)
    await attended_transfer(phones, first, await consult(phones, "101"), "101")
    records = await sink.wait_events("NOTIFY_END", "NOTIFY_RECORD", timeout=TALK + 20)
    assert shape(records, "in_") == transferred(records)


@pytest.mark.parametrize("code", [L.PICKUP_DIRECTED + "103", L.PICKUP_GROUP], ids=["directed", "group"])
async def test_pickup_credits_the_phone_that_picked_up(
    daemon: tuple[App, MemorySink], provider: AmiConnection, phones: AmiConnection, code: str
) -> None:
    """103 rings on DID_LONG; 101 dials the pickup code, talks ~2 s and hangs up: answered by 101."""
    _, sink = daemon
    await call_in(provider, L.DID_LONG, talk=60)
    await sink.wait_events("NOTIFY_INTERNAL", timeout=20)  # 103 rings
    await call_out(phones, "101", code, talk=PICKUP_TALK)
    records = await sink.wait_events("NOTIFY_END", "NOTIFY_RECORD", timeout=20)
    call = {"caller_id": CALLER_NORM, "called_did": L.DID_LONG}
    assert shape(records, "in_") == [
        {"event": "NOTIFY_START", **call},
        {"event": "NOTIFY_INTERNAL", **call, "internal": "103"},
        {"event": "NOTIFY_ANSWER", "caller_id": CALLER_NORM, "destination": "101", "internal": "101"},
        end(records, L.DID_LONG, 2),
        {"event": "NOTIFY_RECORD", "call_id_with_rec": records[-1].fields["call_id_with_rec"]},
    ]
